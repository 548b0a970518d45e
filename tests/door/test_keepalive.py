"""Keep-alive at the front door: one connection carries any sequence of requests, /sse included
(SPEC, Connections: a browser reuses the connection of its /login for its stream; no redirect,
no forced close), plain HTTP and TLS alike.

  * POST /login then GET /sse with that JWT on the same socket: 200 text/event-stream (no 307),
    and an event inserted from another connection arrives on it;
  * GET /verify, POST /insert, GET /healthz: three answers, in order, on one socket
    (/verify is a GET in docs/API.md);
  * pipelined: GET /healthz + POST /login + GET /sse in one write: three answers in order on the
    socket, and the stream then carries a new event.
"""

import uuid

from conftest import (Conn, SSEReader, assert_ok_json, json_request, request_bytes)


def insert_elsewhere(door, jwt, event, data):
    """POST /insert on a connection of its own (requests); returns the event id."""
    r = door.post("/insert", {"event": event, "data": data},
                  headers={"Authorization": "Bearer " + jwt})
    assert r.status_code == 200, "insert from another connection: %s %r" % (r.status_code, r.text)
    return r.json()["id"]


def expect_stream(r, what):
    assert r.status == 200, "%s: expected 200 text/event-stream, got %s" % (what, r.describe())
    assert r.is_stream(), "%s: not an event stream: %s" % (what, r.describe())


def expect_event(reader, door, jwt, what):
    name, data = "ka_" + uuid.uuid4().hex[:8], {"n": uuid.uuid4().hex}
    first = reader.next_item()
    assert first == ("retry", "3000"), "%s: stream did not start with retry: 3000 but %r" % (what, first)
    ev_id = insert_elsewhere(door, jwt, name, data)
    for _ in range(50):  # bounded: the tenant is new, so the event is among the first few
        ev = reader.next_event()
        if ev.event == name:
            assert ev.id == ev_id, "%s: event id %r, insert answered %r" % (what, ev.id, ev_id)
            assert ev.data == '{"n":"%s"}' % data["n"], "%s: data %r" % (what, ev.data)
            return
    raise AssertionError("%s: the inserted event never came" % what)


def not_closing(r, what):
    assert not r.says_close(), "%s: answered with Connection: close on a keep-alive connection: %s" \
        % (what, r.describe())


def test_login_then_sse_on_one_connection(door):
    u = door.create_user()
    with Conn(door) as c:
        r = c.exchange(json_request("POST", "/login", {"username": u.username, "password": u.password}))
        jwt = assert_ok_json(r)["jwt"]
        not_closing(r, "POST /login")
        c.send(request_bytes("GET", "/sse", [("Authorization", "Bearer " + jwt),
                                             ("Accept", "text/event-stream")]))
        r = c.read_response()
        expect_stream(r, "GET /sse after POST /login on the same connection (%s)" % door.mode)
        expect_event(SSEReader(c, r), door, jwt, "stream after login (%s)" % door.mode)


def test_verify_insert_healthz_on_one_connection(door):
    u = door.create_user()
    jwt = door.login(u.username, u.password)
    auth = [("Authorization", "Bearer " + jwt)]
    with Conn(door) as c:
        r = c.exchange(request_bytes("GET", "/verify", auth))
        body = assert_ok_json(r)
        assert body.get("username") == u.username and body.get("tenant_name") == u.tenant_name, body
        not_closing(r, "GET /verify")
        r = c.exchange(json_request("POST", "/insert", {"event": "ka", "data": [1, 2]}, auth))
        body = assert_ok_json(r)
        assert isinstance(body.get("id"), str) and body["id"].isdigit(), body
        not_closing(r, "POST /insert after GET /verify")
        r = c.exchange(request_bytes("GET", "/healthz"))
        assert assert_ok_json(r).get("status") == "ok", r.describe()


def test_pipelined_healthz_login_sse(door):
    u = door.create_user()
    jwt = door.login(u.username, u.password)  # the /sse in the pipeline needs a JWT beforehand
    batch = (request_bytes("GET", "/healthz")
             + json_request("POST", "/login", {"username": u.username, "password": u.password})
             + request_bytes("GET", "/sse", [("Authorization", "Bearer " + jwt),
                                             ("Accept", "text/event-stream")]))
    with Conn(door) as c:
        c.send(batch)  # one write
        r1 = c.read_response()
        assert assert_ok_json(r1).get("status") == "ok", "1st pipelined answer: %s" % r1.describe()
        not_closing(r1, "pipelined GET /healthz")
        r2 = c.read_response()
        body = assert_ok_json(r2)
        assert isinstance(body.get("jwt"), str) and body["jwt"], "2nd pipelined answer: %s" % r2.describe()
        not_closing(r2, "pipelined POST /login")
        r3 = c.read_response()
        expect_stream(r3, "3rd pipelined answer, GET /sse (%s)" % door.mode)
        expect_event(SSEReader(c, r3), door, jwt, "pipelined stream (%s)" % door.mode)

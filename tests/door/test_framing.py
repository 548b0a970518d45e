"""Request framing at the front door (RFC 9112, 6.1-6.3), plain HTTP and TLS.

Every ambiguous body length is refused before anything else happens: 400 with a JSON
{"error", "request_id"} body and `Connection: close`, and then the server closes the connection
(recv returns b"" within a few seconds). The same on POST /login, POST /insert (with a valid
Bearer JWT, so that only the framing is wrong) and GET /healthz.

Refused:
  * two Content-Length header lines, different or even identical (the contract's simple rule);
  * a Content-Length that is not 1*DIGIT: "1, 2", "abc", "-1", "+2";
  * Content-Length together with Transfer-Encoding;
  * a Transfer-Encoding whose codings are not exactly one final `chunked`: gzip, identity,
    "chunked, gzip", "chunked, chunked" and two `Transfer-Encoding: chunked` lines (a list:
    chunked applied twice).
Accepted: one Content-Length, or `Transfer-Encoding: chunked` alone; the connection stays usable.
A smuggling attempt (Content-Length and chunked, a second request hidden in the body) never
yields two answers. Whitespace around a framing value ("chunked ", "39 ") is not part of it: the
trimmed value is used, or the front door refuses with its own JSON 400; never a hang or a 502.
"""

import json

import pytest

from conftest import (CLOSE_WAIT, Conn, assert_json_error, assert_ok_json, chunked, json_request,
                      request_bytes)

LOGIN_JUNK = b'{"username":"nobody","password":"nothing-at-all"}'
INSERT_BODY = b'{"event":"framing","data":1}'

# id -> (framing headers, body as sent)
AMBIGUOUS = {
    "cl_two_values": ([("Content-Length", "2"), ("Content-Length", "3")], b"{}"),
    "cl_same_value_twice": ([("Content-Length", "2"), ("Content-Length", "2")], b"{}"),
    "cl_list": ([("Content-Length", "1, 2")], b"{}"),
    "cl_abc": ([("Content-Length", "abc")], b"{}"),
    "cl_negative": ([("Content-Length", "-1")], b"{}"),
    "cl_plus_sign": ([("Content-Length", "+2")], b"{}"),
    "cl_with_te_chunked": ([("Content-Length", "7"), ("Transfer-Encoding", "chunked")],
                           b"2\r\n{}\r\n0\r\n\r\n"),
    "te_chunked_with_cl": ([("Transfer-Encoding", "chunked"), ("Content-Length", "7")],
                           b"2\r\n{}\r\n0\r\n\r\n"),
    "te_gzip": ([("Transfer-Encoding", "gzip")], b"{}"),
    "te_identity": ([("Transfer-Encoding", "identity")], b"{}"),
    "te_chunked_gzip": ([("Transfer-Encoding", "chunked, gzip")], b"2\r\n{}\r\n0\r\n\r\n"),
    "te_chunked_chunked": ([("Transfer-Encoding", "chunked, chunked")], b"2\r\n{}\r\n0\r\n\r\n"),
    "te_chunked_twice": ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
                         b"2\r\n{}\r\n0\r\n\r\n"),
}

TARGETS = ["POST /login", "POST /insert", "GET /healthz"]


def target_headers(target, user):
    hdrs = [("Content-Type", "application/json")]
    if target == "POST /insert":
        hdrs.append(("Authorization", "Bearer " + user.jwt))
    return hdrs


def expect_refused_then_closed(conn, what):
    """Exactly one answer: 400 JSON with Connection: close; then the server closes."""
    r = conn.read_response()
    body = assert_json_error(r, 400)
    assert r.says_close(), "%s: 400 without `Connection: close`: %s" % (what, r.describe())
    closed = conn.wait_closed(CLOSE_WAIT)
    assert closed, "%s: the server did not close within %.0f s after its 400" % (what, CLOSE_WAIT)
    assert conn.buf == b"", "%s: bytes after the 400 (a second answer?): %r" % (what, conn.buf[:400])
    return body


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_ambiguous_framing_is_refused_and_closed(door, door_user, case, target):
    framing, body = AMBIGUOUS[case]
    method, path = target.split(" ")
    raw = request_bytes(method, path, target_headers(target, door_user) + framing, body)
    with Conn(door) as c:
        c.send(raw)
        expect_refused_then_closed(c, "%s %s over %s" % (case, target, door.mode))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("variant", ["cl0_te_chunked", "te_chunked_cl_short"])
def test_smuggling_never_yields_two_answers(door, door_user, variant, target):
    """A second request hidden in the body of an ambiguous one must never be answered."""
    method, path = target.split(" ")
    hidden = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if variant == "cl0_te_chunked":
        framing = [("Content-Length", "0"), ("Transfer-Encoding", "chunked")]
        body = b"0\r\n\r\n" + hidden
    else:  # chunked says the body is the whole chunk; Content-Length says 4 bytes
        chunk = b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        framing = [("Transfer-Encoding", "chunked"), ("Content-Length", "4")]
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk) + hidden
    raw = request_bytes(method, path, target_headers(target, door_user) + framing, body)
    with Conn(door) as c:
        c.send(raw)
        answers = []
        for _ in range(4):  # bounded: at most 4 answers are read
            try:
                answers.append(c.read_response(timeout=CLOSE_WAIT))
            except AssertionError:  # closed (or nothing more within the wait): done
                break
        assert answers, "no answer at all to the smuggling attempt (closed: %r)" % c.eof
        assert len(answers) == 1, "%d answers to one smuggling request: %r" % (len(answers), answers)
        assert_json_error(answers[0], 400)
        assert answers[0].says_close(), answers[0].describe()
        assert c.eof or c.wait_closed(CLOSE_WAIT), "not closed after the 400"


# Whitespace around a field value is not part of it (RFC 9110, 5.5): "chunked " is chunked and
# "39 " is 39. The front door and the request/response server behind it must agree on that: the
# answer is either the one to the trimmed value, or the front door's own 400 (JSON, close); never
# a hang, a 5xx, or another server's non-JSON error.
OWS_CASES = {
    "te_trailing_space": ("Transfer-Encoding", "chunked "),
    "te_trailing_tab": ("Transfer-Encoding", "chunked\t"),
    "te_leading_space": ("Transfer-Encoding", " chunked"),
    "cl_trailing_space": ("Content-Length", "{n} "),
    "cl_trailing_tab": ("Content-Length", "{n}\t"),
    "cl_leading_space": ("Content-Length", " {n}"),
}


@pytest.mark.parametrize("target", ["POST /login", "POST /insert"])
@pytest.mark.parametrize("case", sorted(OWS_CASES))
def test_whitespace_around_framing_values(door, door_user, case, target):
    name, value = OWS_CASES[case]
    method, path = target.split(" ")
    if path == "/login":
        payload, expect = b'{"username":"%s","password":"wrong-password"}' % door_user.username.encode(), 401
    else:
        payload, expect = b'{"event":"ows","data":1}', 200
    if name == "Content-Length":
        framing, body = [(name, value.format(n=len(payload)))], payload
    else:
        framing, body = [(name, value)], chunked(payload, (4,))
    with Conn(door) as c:
        c.send(request_bytes(method, path, target_headers(target, door_user) + framing, body))
        r = c.read_response()
        what = "%s %s (%r) over %s" % (target, name, framing[0][1], door.mode)
        if r.status == 400 and r.header("content-type").lower().startswith("application/json"):
            assert_json_error(r, 400)
            assert r.says_close(), "%s: 400 without Connection: close: %s" % (what, r.describe())
            assert c.wait_closed(CLOSE_WAIT), "%s: not closed after its 400" % what
            return
        assert r.status == expect, ("%s: expected %d (the trimmed value) or the front door's JSON 400: %s"
                                    % (what, expect, r.describe()))
        assert r.header("content-type").lower().startswith("application/json"), r.describe()
        r.json()
        # the body was taken whole: the connection goes on
        assert assert_ok_json(c.exchange(request_bytes("GET", "/healthz")))["status"] == "ok", what


def test_valid_content_length_login(door, door_user):
    with Conn(door) as c:
        good = json_request("POST", "/login", {"username": door_user.username,
                                               "password": door_user.password})
        body = assert_ok_json(c.exchange(good))
        assert isinstance(body.get("jwt"), str) and body["jwt"], body
        bad = json_request("POST", "/login", {"username": door_user.username,
                                              "password": "wrong-" + door_user.password})
        r = c.exchange(bad)
        assert r.status == 401, "wrong password on the same connection: %s" % r.describe()
        # the connection is still usable after both
        assert assert_ok_json(c.exchange(request_bytes("GET", "/healthz")))["status"] == "ok"


@pytest.mark.parametrize("sizes", [(5,), (1, 7, 100)], ids=["chunks_of_5", "mixed_chunks"])
def test_valid_chunked_login(door, door_user, sizes):
    good = json.dumps({"username": door_user.username, "password": door_user.password}).encode()
    bad = json.dumps({"username": door_user.username, "password": "x" + door_user.password}).encode()
    hdrs = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
    with Conn(door) as c:
        r = c.exchange(request_bytes("POST", "/login", hdrs, chunked(good, sizes)))
        body = assert_ok_json(r)
        assert isinstance(body.get("jwt"), str) and body["jwt"], body
        r = c.exchange(request_bytes("POST", "/login", hdrs, chunked(bad, sizes)))
        assert r.status == 401, "chunked login, wrong password: %s" % r.describe()
        # the whole chunked body was taken: the next request on the connection is answered
        assert assert_ok_json(c.exchange(request_bytes("GET", "/healthz")))["status"] == "ok"


def test_valid_chunked_insert(door, door_user):
    hdrs = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"),
            ("Authorization", "Bearer " + door_user.jwt)]
    with Conn(door) as c:
        body = assert_ok_json(c.exchange(request_bytes("POST", "/insert", hdrs,
                                                       chunked(INSERT_BODY, (3,)))))
        assert isinstance(body.get("id"), str) and body["id"].isdigit(), body


@pytest.mark.parametrize("line", [b"GET /\r\n", b"GET /healthz\n", b"PRI * HTTP/2.0\r\n",
                                  b"GET / HTTP/1.x\r\n", b"GET HTTP/1.1\r\n"])
def test_a_request_line_that_cannot_be_http1_gets_400_at_once(door, line):
    """Issue 23: an HTTP/0.9 line (no version) or another version's is refused at its line end,
    not held until the 10 s head deadline."""
    import time
    with Conn(door, timeout=5) as c:
        start = time.monotonic()
        c.send(line)
        r = c.read_response(timeout=2)
        took = time.monotonic() - start
        body = assert_json_error(r, 400)
        assert "request line" in body["error"], body
        assert took < 1.0, "%r over %s answered after %.1f s" % (line, door.mode, took)
        assert c.wait_closed(CLOSE_WAIT), "the server did not close after its 400"

"""HTTP-level rules of docs/API.md: bad input on every POST endpoint, 404/405/413, CORS, health."""

import socket
import time
import urllib.parse

import pytest
import requests

from conftest import (assert_error, assert_json_response, assert_ok, describe, uniq)

POST_ENDPOINTS = ["/create_user", "/login", "/revoke_user", "/unrevoke_user", "/list_users",
                  "/get_user", "/update_user", "/insert"]
GET_ENDPOINTS = ["/verify", "/sse", "/presence", "/healthz", "/readyz", "/metrics", "/", "/console", "/console/",
                 "/console/index.html"]
USERNAME_ENDPOINTS = ["/create_user", "/login", "/revoke_user", "/unrevoke_user", "/get_user",
                      "/update_user"]


@pytest.fixture(scope="module")
def auth(broker):
    """A valid Basic header, sent with every bad body so that /insert reaches its parser."""
    return broker.create_user().basic()


def valid_body(broker, path, username):
    """A body that would be accepted, to embed bad values in."""
    body = {"admin_token": broker.admin_token, "username": username, "password": "password-1"}
    if path == "/create_user":
        body["tenant_name"] = "t"
    if path == "/login":
        del body["admin_token"]
    return body


# ================================================================ malformed bodies

@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("raw", [
    b"", b"{", b"{\"username\": }", b"not json", b"{'username': 'x'}", b"{\"a\":1} trailing",
    b"{\"a\":1,}", b"\xef\xbb", b"nul\x00l", b"{\"a\":1}\x00",
], ids=["empty", "open-brace", "missing-value", "text", "single-quotes", "trailing",
        "trailing-comma", "partial-bom", "raw-nul", "trailing-nul"])
def test_malformed_json(broker, auth, path, raw):
    assert_error(broker.post_raw(path, raw, headers=auth), 400)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("raw", [b"[]", b"[{\"username\":\"x\"}]", b"\"a string\"", b"42",
                                 b"null", b"true"],
                         ids=["array", "array-of-object", "string", "number", "null", "true"])
def test_body_not_an_object(broker, auth, path, raw):
    assert_error(broker.post_raw(path, raw, headers=auth), 400)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("bad", [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"a\x80b",
                                 b"\xf4\x90\x80\x80"],
                         ids=["ff-fe", "overlong", "utf8-surrogate", "lone-continuation",
                              "above-10ffff"])
def test_invalid_utf8(broker, auth, path, bad):
    raw = (b'{"admin_token":"%s","username":"u' % broker.admin_token.encode() + bad +
           b'","password":"password-1","tenant_name":"t","event":"e' + bad + b'","data":1}')
    assert_error(broker.post_raw(path, raw, headers=auth), 400)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_lone_surrogate_escape(broker, auth, path):
    raw = (b'{"admin_token":"%s","username":"a\\ud800b","password":"password-1",'
           b'"tenant_name":"t","event":"e\\ud800","data":1}' % broker.admin_token.encode())
    assert_error(broker.post_raw(path, raw, headers=auth), 400)


@pytest.mark.parametrize("path", USERNAME_ENDPOINTS)
def test_nul_in_username(broker, path):
    body = valid_body(broker, path, "a\u0000b" + uniq())
    assert_error(broker.post(path, body), 400)


@pytest.mark.parametrize("field", ["password", "tenant_name", "email"])
def test_nul_in_other_create_fields(broker, field):
    body = valid_body(broker, "/create_user", uniq())
    body[field] = {"password": "pass\u0000word-1", "tenant_name": "t\u0000t",
                   "email": "a\u0000b@example.com"}[field]
    assert_error(broker.post("/create_user", body), 400)


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("raw", [b"[" * 100000, b'{"a":' * 50000, b'{"data":' + b"[" * 100000],
                         ids=["arrays", "objects", "in-field"])
def test_deeply_nested(broker, auth, path, raw):
    assert_error(broker.post_raw(path, raw, headers=auth), 400)
    assert broker.healthy()


def test_huge_string_field(broker):
    body = valid_body(broker, "/create_user", "x" * 500000)
    assert_error(broker.post("/create_user", body), 400)
    assert broker.healthy()


# ================================================================ paths and methods

@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("POST", "/nope"), ("GET", "/create_user/extra"), ("GET", "/healthz/x"),
    ("POST", "/LOGIN"), ("GET", "/" + "a" * 2000), ("GET", "/sse/"),
])
def test_unknown_path_404(broker, method, path):
    assert_error(broker.request(method, path), 404)


@pytest.mark.parametrize("method,path", [
    ("GET", "/login"), ("POST", "/healthz"), ("GET", "/create_user"), ("GET", "/list_users"),
    ("POST", "/verify"), ("PUT", "/login"), ("DELETE", "/get_user"), ("POST", "/readyz"),
    ("POST", "/sse"), ("GET", "/insert"), ("PATCH", "/update_user"), ("POST", "/metrics"),
    ("POST", "/console/"), ("DELETE", "/console/console.js"),
])
def test_wrong_method_405(broker, method, path):
    assert_error(broker.request(method, path), 405)


# ================================================================ body size

@pytest.fixture(scope="module")
def small_body_broker(broker_factory):
    return broker_factory(["--max_body", "1024"])


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_body_over_max_body_413(small_body_broker, path):
    b = small_body_broker
    raw = b'{"username":"' + b"x" * 2030 + b'"}'
    assert len(raw) > 2000
    assert_error(b.post_raw(path, raw), 413)
    assert b.healthy()


def test_chunked_body_over_max_body_413(small_body_broker):
    b = small_body_broker
    chunks = [b'{"username":"'] + [b"x" * 256] * 8 + [b'"}']
    assert_error(b.post_raw("/create_user", iter(chunks)), 413)
    assert b.healthy()


def test_body_at_max_body_accepted(small_body_broker):
    b = small_body_broker
    name = uniq()
    raw = ('{"admin_token":"%s","username":"%s","password":"password-1","tenant_name":"t",'
           '"data":"' % (b.admin_token, name)).encode()
    raw += b"p" * (1024 - len(raw) - 2) + b'"}'
    assert len(raw) == 1024
    u = assert_ok(b.post_raw("/create_user", raw))
    assert u["username"] == name


def test_default_max_body_is_1mib(broker):
    # 1 MiB + 1 KiB of padding inside an otherwise valid body
    raw = b'{"username":"x","password":"' + b"p" * (1024 * 1024 + 1024) + b'"}'
    assert_error(broker.post_raw("/login", raw), 413)
    assert broker.healthy()


# ================================================================ abusive connections

def status_of(reply):
    """The status code of a raw HTTP reply, or None when it is not one."""
    parts = reply.split(b" ", 2)
    if not reply.startswith(b"HTTP/") or len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def raw_exchange(broker, payload, timeout=5.0):
    """Send raw bytes, return whatever comes back before close/timeout (b"" if reset)."""
    u = urllib.parse.urlsplit(broker.base_url)
    data = b""
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        try:
            s.sendall(payload)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    break
        except (ConnectionResetError, BrokenPipeError, socket.timeout):
            pass
    return data


def test_absurd_header(broker):
    payload = (b"GET /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 200000 +
               b"\r\nConnection: close\r\n\r\n")
    reply = raw_exchange(broker, payload)
    if reply:  # a clear 4xx, or the connection closed without an answer
        status = status_of(reply)
        assert status is not None and 400 <= status < 500, reply[:200]
    assert broker.healthy()


def test_many_header_lines(broker):
    payload = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" +
               b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"Connection: close\r\n\r\n")
    reply = raw_exchange(broker, payload)
    if reply:
        status = status_of(reply)
        assert status is not None and (status == 200 or 400 <= status < 500), reply[:200]
    assert broker.healthy()


def test_garbage_request_line(broker):
    for payload in (b"\x00\x01\x02\x03\r\n\r\n", b"GET\r\n\r\n", b"FOO / HTTP/9.9\r\n\r\n"):
        reply = raw_exchange(broker, payload)
        if reply:
            status = status_of(reply)
            assert status is not None and status >= 400, reply[:200]
    assert broker.healthy()


def test_slow_senders_do_not_block_others(broker):
    u = urllib.parse.urlsplit(broker.base_url)
    socks = []
    try:
        for _ in range(30):
            s = socket.create_connection((u.hostname, u.port), timeout=5)
            s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
            socks.append(s)
        t0 = time.monotonic()
        assert_ok(broker.get("/healthz", timeout=5))
        assert time.monotonic() - t0 < 5
    finally:
        for s in socks:
            s.close()


# ================================================================ CORS

def preflight(broker, path, origin="https://app.example"):
    method = "POST" if path in POST_ENDPOINTS else "GET"
    r = broker.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})
    return r, method


def check_preflight(r, method, want_origin):
    assert 200 <= r.status_code < 300, describe(r)
    assert r.headers.get("Access-Control-Allow-Origin") == want_origin, dict(r.headers)
    methods = r.headers.get("Access-Control-Allow-Methods", "")
    assert method in [m.strip().upper() for m in methods.split(",")] or methods.strip() == "*", \
        "Allow-Methods %r lacks %s" % (methods, method)
    allowed = r.headers.get("Access-Control-Allow-Headers", "").lower()
    assert allowed.strip() == "*" or ("authorization" in allowed and "content-type" in allowed), \
        "Allow-Headers %r" % allowed


@pytest.mark.parametrize("path", POST_ENDPOINTS + GET_ENDPOINTS)
def test_preflight_default_origin(broker, path):
    r, method = preflight(broker, path)
    check_preflight(r, method, broker.origin)


@pytest.mark.parametrize("r_kind", ["200", "400", "401", "404"])
def test_responses_carry_allow_origin(broker, r_kind):
    h = {"Origin": "https://app.example"}
    r = {"200": lambda: broker.get("/healthz", headers=h),
         "400": lambda: broker.post_raw("/login", b"{", headers=h),
         "401": lambda: broker.get("/verify", headers=h),
         "404": lambda: broker.get("/nope", headers=h)}[r_kind]()
    assert r.status_code == int(r_kind), describe(r)
    assert r.headers.get("Access-Control-Allow-Origin") == broker.origin, dict(r.headers)


@pytest.fixture(scope="module")
def origin_broker(broker_factory):
    return broker_factory(["--origin", "https://app.example"], origin="https://app.example")


@pytest.mark.parametrize("path", POST_ENDPOINTS + GET_ENDPOINTS)
def test_preflight_configured_origin(origin_broker, path):
    r, method = preflight(origin_broker, path)
    check_preflight(r, method, "https://app.example")


def test_configured_origin_on_responses(origin_broker):
    b = origin_broker
    h = {"Origin": "https://app.example"}
    u = b.create_user()
    for r in (b.get("/healthz", headers=h), b.post("/login", {"username": u.username,
                                                              "password": u.password}, headers=h),
              b.get("/verify", headers=h)):
        assert r.headers.get("Access-Control-Allow-Origin") == "https://app.example", describe(r)


def test_configured_origin_not_widened(origin_broker):
    r, _ = preflight(origin_broker, "/login", origin="https://evil.example")
    assert r.headers.get("Access-Control-Allow-Origin") not in ("*", "https://evil.example")
    r = origin_broker.get("/healthz", headers={"Origin": "https://evil.example"})
    assert r.headers.get("Access-Control-Allow-Origin") not in ("*", "https://evil.example")


# ================================================================ health

def test_healthz(broker):
    assert assert_ok(broker.get("/healthz"))["status"] == "ok"


def test_readyz(broker):
    r = broker.get("/readyz")
    assert r.status_code == 200, describe(r)
    assert_json_response(r)


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz"])
def test_health_answers_get_and_head(broker, path):
    """The original broker's public health check: load balancers probe GET / or HEAD /. HEAD
    answers the GET's head without its body (here, and through the split and compose gateways)."""
    g = broker.get(path)
    body = assert_ok(g)
    assert body["status"] == ("ready" if path == "/readyz" else "ok"), body
    h = broker.request("HEAD", path)
    assert h.status_code == 200, describe(h)
    assert h.content == b"", "HEAD %s answered a body: %r" % (path, h.content[:200])
    assert h.headers.get("Content-Type", "").startswith("application/json"), h.headers
    if path != "/readyz":  # /readyz's clock may change its length between two answers
        assert int(h.headers.get("Content-Length", "-1")) == len(g.content), (h.headers, len(g.content))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_root_takes_only_get_and_head(broker, method):
    assert_error(broker.request(method, "/"), 405)


def test_zz_server_still_alive(broker):
    assert broker.alive(), "broker process exited"
    assert assert_ok(broker.get("/healthz"))["status"] == "ok"


def test_error_message_quoting_broken_utf8_is_still_a_400(broker):
    """jansson's error text can end inside a UTF-8 sequence of the input; the
    answer must stay a 400 with a valid JSON error (found by fuzz_json_body)."""
    r = requests.post(broker.base_url + "/login", data=b'{"s":"\\u00e\xc7\xa1"}',
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_error_message_cut_inside_a_character_is_still_a_400(broker):
    """An error that quotes a long non-ASCII username is truncated; the cut must
    not leave half a character (which made the reply a 500)."""
    r = requests.post(broker.base_url + "/get_user",
                      json={"admin_token": broker.admin_token, "username": "a" + "é" * 300}, timeout=10)
    assert r.status_code == 400, r.text
    assert "no user" in r.json()["error"]

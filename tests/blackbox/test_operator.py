"""What an operator relies on: --version and the version in /healthz, the start-up line
with the URLs served, request ids (X-Request-Id on every answer, "request_id" in every
error body and in the log lines of the request), --log_format=json, the console's routes,
and the auth-failure and delivery-latency series on /metrics."""

import json
import re
import subprocess
import time

import pytest
import requests

from conftest import (BROKER_BIN, EXTERNAL_URL, assert_error, assert_ok, bearer_header,
                      clean_env, needs_own_server, uniq)
from sse_client import SSEClient

VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+")


def metric(broker, series):
    """The value of one exact series line of /metrics (0 when absent)."""
    text = assert_ok_text(broker.get("/metrics"))
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def assert_ok_text(r):
    assert r.status_code == 200, "%s -> %s %r" % (r.request.url, r.status_code, r.text[:300])
    return r.text


def test_version_flag_and_healthz():
    needs_own_server("runs the binary")
    out = subprocess.run([BROKER_BIN, "--version"], capture_output=True, text=True, timeout=10,
                         env=clean_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out
    name, version = out.stdout.split()
    assert name == "broker" and VERSION_RE.match(version), out.stdout


def test_healthz_names_the_version(broker):
    body = assert_ok(broker.get("/healthz"))
    assert body["status"] == "ok" and VERSION_RE.match(body["version"]), body


def test_request_id_taken_from_the_request(broker):
    r = broker.get("/healthz", headers={"X-Request-Id": "abc-123.x:y_z"})
    assert r.headers.get("X-Request-Id") == "abc-123.x:y_z", r.headers
    r = broker.post("/login", {}, headers={"X-Request-Id": "login-probe-1"})
    body = assert_error(r, 400)
    assert r.headers.get("X-Request-Id") == "login-probe-1" and body["request_id"] == "login-probe-1", body


def test_request_id_made_when_absent_or_unsafe(broker):
    ids = []
    for given in (None, "has space", "x" * 129, "new\tline", ""):
        headers = {} if given is None else {"X-Request-Id": given}
        r = broker.get("/no-such-path", headers=headers)
        body = assert_error(r, 404)
        rid = r.headers.get("X-Request-Id")
        assert rid and rid == body["request_id"] and rid != given, (given, rid, body)
        assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid), rid
        ids.append(rid)
    assert len(set(ids)) == len(ids), "made ids repeat: %r" % ids


def test_every_error_names_its_request(broker):
    u = broker.create_user()
    cases = [
        broker.post("/create_user", {"admin_token": "wrong"}),      # 401
        broker.request("PUT", "/login"),                             # 405
        broker.post("/insert", {"event": "e", "data": 1}, headers=dict(u.basic(), **{"X-Request-Id": "ins-9"})),
        broker.get("/verify", headers={"Authorization": "Bearer nope"}),
        broker.get("/sse"),                                          # the stream's own refusal
    ]
    for r in cases[:2] + cases[3:]:
        body = r.json()
        assert r.status_code >= 400 and body.get("request_id") == r.headers.get("X-Request-Id") and \
            body["request_id"], "%s %s -> %s %r %r" % (r.request.method, r.request.url, r.status_code,
                                                      body, dict(r.headers))
    assert cases[2].status_code == 200 and cases[2].headers.get("X-Request-Id") == "ins-9", cases[2].headers


def test_cors_lets_pages_send_and_read_the_request_id(broker):
    r = broker.request("OPTIONS", "/insert", headers={
        "Origin": "http://page.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-request-id"})
    assert r.status_code == 204, r.status_code
    assert "x-request-id" in r.headers.get("Access-Control-Allow-Headers", "").lower(), r.headers
    r = broker.get("/healthz")
    assert "x-request-id" in r.headers.get("Access-Control-Expose-Headers", "").lower(), r.headers


def test_console_routes(broker):
    r = broker.get("/console", allow_redirects=False)
    assert r.status_code == 308 and r.headers.get("Location") == "/console/", (r.status_code, r.headers)
    for path, ctype in (("/console/", "text/html"), ("/console/console.js", "text/javascript"),
                        ("/console/console.css", "text/css"), ("/console/broker-client.js", "text/javascript")):
        r = broker.get(path)
        assert r.status_code == 200 and r.headers.get("Content-Type", "").startswith(ctype), \
            (path, r.status_code, r.headers)
        assert "default-src 'self'" in r.headers.get("Content-Security-Policy", ""), r.headers
        assert len(r.content) > 100, (path, r.content[:100])
    assert_error(broker.get("/console/../etc/passwd"), 404)
    assert_error(broker.get("/console/nope.js"), 404)


def test_redirects_are_counted_as_3xx(broker_factory):
    needs_own_server("counts exactly, on a server of its own")
    b = broker_factory()
    def classes():  # one read of /metrics: it counts itself once its text is made
        text = assert_ok_text(b.get("/metrics"))
        return {c: float(re.search(r'^broker_http_requests_total\{code="%s"\} (\S+)$' % c, text, re.M).group(1))
                for c in ("2xx", "3xx")}
    before = classes()
    r = b.get("/console", allow_redirects=False)
    assert r.status_code == 308
    after = classes()
    # the 308, and the first /metrics read's own 200
    assert after["3xx"] - before["3xx"] == 1 and after["2xx"] - before["2xx"] == 1, (before, after)


def test_console_off(broker_factory):
    needs_own_server("starts a server with --console=false")
    b = broker_factory(["--console=false"])
    assert_error(b.get("/console/"), 404)
    assert_error(b.get("/console", allow_redirects=False), 404)
    assert_ok(b.get("/healthz"))


def test_auth_failures_counted_by_kind(broker_factory):
    needs_own_server("counts exactly, on a server of its own")
    b = broker_factory()
    u = b.create_user()
    before = {k: metric(b, 'broker_auth_failures_total{kind="%s"}' % k)
              for k in ("password", "jwt", "basic", "missing", "admin_token")}
    assert_error(b.login_raw(u.username, "wrong password"), 401)
    assert_error(b.get("/verify", headers={"Authorization": "Bearer not.a.jwt"}), 401)
    assert_error(b.get("/verify", auth=(u.username, "nope-nope")), 401)
    assert_error(b.get("/verify"), 401)
    assert_error(b.post("/list_users", {"admin_token": "guess"}), 401)
    after = {k: metric(b, 'broker_auth_failures_total{kind="%s"}' % k) for k in before}
    assert {k: after[k] - before[k] for k in before} == \
        {"password": 1, "jwt": 1, "basic": 1, "missing": 1, "admin_token": 1}, (before, after)


def test_delivery_latency_histogram(broker_factory):
    needs_own_server("counts exactly, on a server of its own")
    b = broker_factory()
    u = b.create_user()
    jwt = b.login(u.username, u.password)
    count0 = metric(b, "broker_delivery_latency_seconds_count")
    with SSEClient.open(b.base_url, headers=bearer_header(jwt)) as c:
        for i in range(3):
            assert_ok(b.post("/insert", {"event": "lat", "data": i}, headers=bearer_header(jwt)))
        evs = c.events_until(3, 5)
        assert [e.event for e in evs] == ["lat"] * 3
    text = assert_ok_text(b.get("/metrics"))
    assert "# TYPE broker_delivery_latency_seconds histogram" in text, text
    assert metric(b, "broker_delivery_latency_seconds_count") - count0 == 3
    assert metric(b, 'broker_delivery_latency_seconds_bucket{le="+Inf"}') == \
        metric(b, "broker_delivery_latency_seconds_count")
    buckets = [float(v) for v in re.findall(r'^broker_delivery_latency_seconds_bucket\{le="[^"]+"\} (\S+)$',
                                             text, re.M)]
    assert buckets == sorted(buckets), "buckets are not cumulative: %r" % buckets


def test_json_log_lines_carry_request_ids(broker_factory):
    needs_own_server("reads the log of a server of its own")
    b = broker_factory(["--log_format=json", "--log_level=debug"])
    u = b.create_user()
    assert_error(b.post("/login", {"username": u.username, "password": "not it at all"},
                        headers={"X-Request-Id": "trace-me-1"}), 401)
    deadline = time.monotonic() + 5
    while "trace-me-1" not in b.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [l for l in b.stderr_text().splitlines() if l.strip()]
    assert lines, "no log lines"
    parsed = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail("a log line is not JSON: %r" % line)
        assert isinstance(obj, dict) and {"time", "service", "level", "message"} <= set(obj), obj
        parsed.append(obj)
    scheme = b.base_url.split(":", 1)[0]  # https when the server serves TLS
    assert any(("serving %s://" % scheme) in o["message"] and "/sse" in o["message"] and "/login" in o["message"]
               for o in parsed), "no start-up line with the URLs: %r" % parsed[:8]
    traced = [o for o in parsed if o.get("request_id") == "trace-me-1"]
    assert traced and any("/login 401" in o["message"] for o in traced), parsed[-10:]
    assert u.password not in b.stderr_text()


def test_text_log_start_up_line(broker):
    needs_own_server("reads the log of the server")
    text = broker.stderr_text()
    m = re.search(r"serving (%s://\S+)[^:]*:(.*)" % broker.base_url.split(":", 1)[0], text)
    assert m, text[-2000:]
    assert m.group(1).endswith(":%d" % int(broker.base_url.rsplit(":", 1)[1])), m.group(0)
    for path in ("/sse", "/insert", "/login", "/healthz", "/console/"):
        assert path in m.group(2).split(), m.group(0)

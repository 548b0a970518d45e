"""GET /sse of docs/API.md ("The event stream"): headers, snapshot on connect, framing, keep-alive,
tenant isolation, reconnection with Last-Event-ID, credentials, revocation, slow readers,
many subscribers, bad input.

Talks raw sockets (sse_client.py) so that reading speed, headers and deadlines are ours.
Every wait is bounded.  Choices where the API contract is silent:
  * a GET /sse on a keep-alive connection that already carried another request is a stream
    like any other (the front door keeps every connection);
  * a Last-Event-ID that is not a decimal id is bad input: 400;
  * an over-long request head answers 431 (or 400); a head that does not arrive within ~10 s
    gets its connection closed.
"""

import base64
import http.client
import json
import re
import selectors
import socket
import threading
import time
import urllib.parse

import pytest
import requests

from conftest import (assert_error, assert_json_response, assert_ok, basic_header,
                      bearer_header, describe, needs_own_server, uniq, EXTERNAL_URL)
from sse_client import Closed, SSEClient, Timeout, build_request

HEAD_TIMEOUT = 5.0  # seconds for a stream's response head


# ---------------------------------------------------------------- helpers

def new_user(broker, tenant=None):
    """A user in `tenant` (a fresh one by default) and its JWT."""
    u = broker.create_user(tenant_name=tenant or uniq("t"))
    return u, broker.login(u.username, u.password)


def insert(broker, user, event, data, session=None):
    """Inserts (Basic auth); returns the id string."""
    fn = session.post if session is not None else requests.post
    r = fn(broker.url("/insert"), json={"event": event, "data": data}, headers=user.basic(),
           timeout=10)
    body = assert_ok(r)
    assert isinstance(body.get("id"), str) and body["id"].isdigit(), describe(r)
    return body["id"]


def open_stream(broker, headers=None, path="/sse", **kw):
    """Opens /sse and insists on 200; returns the client (head read)."""
    c = SSEClient.open(broker.base_url, path, headers=headers, **kw)
    status = c.read_head(HEAD_TIMEOUT)
    if status != 200:
        body = c.read_body(2)
        c.close()
        raise AssertionError("GET %s answered %d %r: %r" % (path, status, c.headers, body))
    return c


def first_retry(c, timeout=5.0):
    """The stream must begin with "retry: 3000"; consumes that line."""
    kind, val = c.next_item(timeout)
    assert (kind, val) == ("retry", "3000"), \
        "first item of the stream is %r, expected retry: 3000 (body %r)" % ((kind, val),
                                                                           c.body_raw[:200])


def ids(events):
    return [e.id for e in events]


def metric_value(broker, name):
    """Sum of a Prometheus metric's samples (0 if absent)."""
    r = broker.get("/metrics")
    assert r.status_code == 200, describe(r)
    total = 0.0
    for line in r.text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})?\s+(\S+)" % re.escape(name), line)
        if m:
            total += float(m.group(2))
    return total


def assert_serving(broker):
    """The server still answers HTTP and opens streams."""
    assert broker.alive(), "broker exited: %s" % broker.stderr_tail()
    assert broker.healthy(), "broker stopped answering /healthz"
    u, jwt = new_user(broker)
    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        eid = insert(broker, u, "alive", {"ok": True})
        ev = c.next_event(5)
        assert (ev.id, ev.event, json.loads(ev.data)) == (eid, "alive", {"ok": True})


@pytest.fixture(scope="module")
def tuned(broker_factory):
    """A server with a 1 s keep-alive and a 64 KiB subscriber queue bound."""
    return broker_factory(["--keepalive", "1", "--sse_queue_max", "65536"])


@pytest.fixture(scope="module", autouse=True)
def idle_connection(broker):
    """A connection that never sends a byte, opened when the module starts, so that
    test_zz_idle_connection_closed (the last test) waits only what is left of the ~10 s."""
    parts = urllib.parse.urlsplit(broker.base_url)
    s = socket.create_connection((parts.hostname, parts.port or 80), timeout=5)
    opened = time.monotonic()
    yield s, opened
    s.close()


# ================================================================ headers, snapshot, framing

def test_headers_and_retry(broker):
    _, jwt = new_user(broker)
    with open_stream(broker, bearer_header(jwt)) as c:
        ctype = c.headers.get("content-type", "")
        assert ctype.split(";")[0].strip().lower() == "text/event-stream", c.head_raw
        assert "no-cache" in c.headers.get("cache-control", "").lower(), c.head_raw
        assert c.headers.get("access-control-allow-origin") == broker.origin, c.head_raw
        first_retry(c)
        assert c.body_raw.startswith(b"retry: 3000\n"), c.body_raw[:100]


def test_snapshot_latest_per_name_then_live(broker):
    u, jwt = new_user(broker)
    sent = [("a", {"n": 1}), ("b", {"n": 2}), ("a", {"n": 3}), ("c", {"n": 4})]
    got_ids = [insert(broker, u, name, data) for name, data in sent]
    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        snap = c.events_until(3, 5)
        want = [(got_ids[i], sent[i][0], sent[i][1]) for i in (1, 2, 3)]
        assert [(e.id, e.event, json.loads(e.data)) for e in snap] == want, \
            "snapshot must be the latest event of each name, oldest first"
        # then live events, in id order, and nothing else
        live = [insert(broker, u, n, {"live": i}) for i, n in enumerate(["d", "a", "d"])]
        evs = c.events_until(3, 5)
        assert [(e.id, e.event, json.loads(e.data)) for e in evs] == \
            [(live[0], "d", {"live": 0}), (live[1], "a", {"live": 1}), (live[2], "d", {"live": 2})]
        c.expect_silence(0.3)


def test_frame_bytes_exact(broker):
    u, jwt = new_user(broker)
    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        # Sent with whitespace; single-key objects so that key order is not in question.
        raw = b'{ "event" : "frame.test-1" , "data" : { "a" : [ 1 , 2 , { "b" : null } , "x y" ] } }'
        r = broker.post_raw("/insert", raw, headers=u.basic())
        eid = assert_ok(r)["id"]
        ev = c.next_event(5)
        want = ('id: %s\nevent: frame.test-1\ndata: {"a":[1,2,{"b":null},"x y"]}\n\n'
                % eid).encode()
        assert ev.raw == want, "event bytes %r != %r" % (ev.raw, want)


ROUNDTRIP = [
    {"text": "line1\nline2\r\nline3\rline4\n\n"},
    "\n",
    "caf\u00e9 \u00e9\u00e8\u00ea",
    "\U0001F600\U0001F680 emoji",
    "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4",
    'quote " backslash \\ both \\" end',
    "\t tab \u0001 ctl \u001f \u2028 \u2029 \u007f",
    {"nested": [{"a": "b\nc", "\u00e9\n": ["\\", "\"", None, True, False, 0, -12, 3.5]}]},
    [],
    {},
    None,
    12345678901234567,
    "data: fake\n\nid: 999\nevent: spoof\n",
]


def test_data_roundtrip(broker):
    u, jwt = new_user(broker)
    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        sent_ids = [insert(broker, u, "rt", d) for d in ROUNDTRIP]
        evs = c.events_until(len(ROUNDTRIP), 5)
        assert ids(evs) == sent_ids
        for ev, d in zip(evs, ROUNDTRIP):
            assert ev.event == "rt"
            assert json.loads(ev.data) == d, "data %r came back as %r" % (d, ev.data)
            lines = ev.raw.split(b"\n")
            assert len(lines) == 5 and lines[2].startswith(b"data: ") and b"\r" not in ev.raw, \
                "the event must be exactly 3 lines (data on one line): %r" % ev.raw
    # and the snapshot of a new connection carries the same bytes
    with open_stream(broker, bearer_header(jwt)) as c2:
        first_retry(c2)
        ev = c2.next_event(5)
        assert ev.id == sent_ids[-1] and json.loads(ev.data) == ROUNDTRIP[-1]


def test_unicode_event_name(broker):
    u, jwt = new_user(broker)
    name = "\u00e9v\u00e9nement-\U0001F600-\u4e2d"
    eid = insert(broker, u, name, 1)
    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        ev = c.next_event(5)
        assert (ev.id, ev.event) == (eid, name)


def test_keepalive_comment(tuned):
    _, jwt = new_user(tuned)
    with open_stream(tuned, bearer_header(jwt)) as c:
        t0 = time.monotonic()
        assert c.next_comment(2.5) == "keep-alive", "no keep-alive comment within 2.5 s (--keepalive 1)"
        t1 = time.monotonic()
        assert c.next_comment(2.5) == "keep-alive", "second keep-alive not within 2.5 s"
        assert b"\n: keep-alive\n" in c.body_raw or c.body_raw.startswith(b": keep-alive\n"), \
            c.body_raw[:200]
        assert t1 - t0 <= 2.5


def test_keepalives_spread_over_the_interval(broker_factory):
    # Each stream gets a keep-alive every --keepalive seconds, but not all streams in the same
    # second: a process's tenants are split into --keepalive slices (by hash bucket), one slice
    # a second (10,000 keep-alives written at once held up the live events queued behind them).
    # 16 tenants: all in one slice of two by chance once in 30,000 runs.
    b = broker_factory(["--keepalive", "2"])
    # The users first (Argon2, slow under the sanitizers), then the streams in one go, watched
    # at once: a stream opened long before its reader starts has keep-alives waiting unread.
    jwts = [new_user(b)[1] for _ in range(16)]
    streams = [open_stream(b, bearer_header(jwt)) for jwt in jwts]
    times = [[] for _ in streams]

    def watch(i, c):
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                if c.next_comment(max(0.01, deadline - time.monotonic())) == "keep-alive":
                    times[i].append(time.monotonic())
            except Timeout:
                break

    try:
        threads = [threading.Thread(target=watch, args=(i, c)) for i, c in enumerate(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        for c in streams:
            c.close()
    for i, ts in enumerate(times):
        assert len(ts) >= 2, "stream %d got %d keep-alives in 5 s (--keepalive 2)" % (i, len(ts))
        gaps = [y - x for x, y in zip(ts, ts[1:])]
        assert all(1.0 <= g <= 3.0 for g in gaps), "stream %d: keep-alive gaps %r s" % (i, gaps)
    firsts = sorted(ts[0] for ts in times)
    assert firsts[-1] - firsts[0] >= 0.5, \
        "every stream got its first keep-alive in the same instant (%.3f s apart): not spread" \
        % (firsts[-1] - firsts[0])


# ================================================================ tenants

def test_tenant_isolation_prefix_names(broker):
    p = uniq("t")
    u1, j1 = new_user(broker, p + "_1")
    u10, j10 = new_user(broker, p + "_10")
    s1 = open_stream(broker, bearer_header(j1))
    s10 = open_stream(broker, bearer_header(j10))
    try:
        first_retry(s1)
        first_retry(s10)
        sess = requests.Session()
        for i in range(5):
            insert(broker, u1, "from_1", {"tenant": "1", "i": i}, sess)
            insert(broker, u10, "from_10", {"tenant": "10", "i": i}, sess)
        insert(broker, u10, "shared_name", {"tenant": "10"}, sess)
        insert(broker, u1, "shared_name", {"tenant": "1"}, sess)
        insert(broker, u1, "sentinel", {"tenant": "1"}, sess)
        insert(broker, u10, "sentinel", {"tenant": "10"}, sess)
        for c, t in ((s1, "1"), (s10, "10")):
            evs = []
            while not evs or evs[-1].event != "sentinel":
                evs.append(c.next_event(5))
            tenants = [json.loads(e.data)["tenant"] for e in evs]
            assert tenants == [t] * 7, "tenant %s_%s saw %r" % (p, t, [(e.event, e.data) for e in evs])
            assert [e.event for e in evs] == ["from_" + t] * 5 + ["shared_name", "sentinel"]
    finally:
        s1.close()
        s10.close()
    # the snapshot is per tenant too
    with open_stream(broker, bearer_header(j1)) as c:
        first_retry(c)
        evs = c.events_until(3, 5)
        assert sorted(e.event for e in evs) == ["from_1", "sentinel", "shared_name"]
        assert all(json.loads(e.data)["tenant"] == "1" for e in evs), [e.data for e in evs]
        c.expect_silence(0.3)


# ================================================================ reconnection

@pytest.mark.parametrize("how", ["header", "query"])
def test_last_event_id_replays_missed(broker, how):
    u, jwt = new_user(broker)
    sess = requests.Session()

    def reconnect(last):
        if how == "header":
            return open_stream(broker, dict(bearer_header(jwt), **{"Last-Event-ID": last}))
        return open_stream(broker, bearer_header(jwt), path="/sse?last_event_id=" + last)

    with open_stream(broker, bearer_header(jwt)) as c:
        first_retry(c)
        before = [insert(broker, u, "tick", {"i": i}, sess) for i in range(3)]
        seen = c.events_until(3, 5)
        assert ids(seen) == before
    # all named "tick": a snapshot would give only one, a replay gives every missed one
    missed = [insert(broker, u, "tick", {"i": 3 + i}, sess) for i in range(4)]
    with reconnect(seen[-1].id) as c:
        first_retry(c)
        evs = c.events_until(4, 5)
        assert ids(evs) == missed, "replay after %s: got %r, want %r" % (seen[-1].id, ids(evs), missed)
        assert [json.loads(e.data)["i"] for e in evs] == [3, 4, 5, 6]
        live = [insert(broker, u, "tick", {"i": 7 + i}, sess) for i in range(2)]
        evs = c.events_until(2, 5)
        assert ids(evs) == live, "live after replay: got %r, want %r" % (ids(evs), live)
        c.expect_silence(0.3)
    # from the middle, and from the very last id (nothing to replay, then live)
    with reconnect(before[0]) as c:
        first_retry(c)
        evs = c.events_until(8, 5)
        assert ids(evs) == before[1:] + missed + live
        c.expect_silence(0.3)
    with reconnect(live[-1]) as c:
        first_retry(c)
        c.expect_silence(0.5)
        nxt = insert(broker, u, "tick", {"i": 9}, sess)
        assert c.next_event(5).id == nxt


def test_resume_reads_its_first_page_off_the_engine(broker):
    # What a resuming client missed is read from the store in pages of 32. The first page is
    # read with its credentials, on the worker thread; only a longer replay's later pages are
    # read by the engine thread, counted in broker_sse_replay_pages_total.
    needs_own_server("reads the stream process's own /metrics")
    u, jwt = new_user(broker)
    sess = requests.Session()
    first = insert(broker, u, "tick", {"i": 0}, sess)
    missed = [insert(broker, u, "tick", {"i": 1 + i}, sess) for i in range(100)]
    resume = lambda last: open_stream(broker, dict(bearer_header(jwt), **{"Last-Event-ID": last}))

    pages = metric_value(broker, "broker_sse_replay_pages_total")
    with resume(missed[-11]) as c:  # ten missed: one page, the worker's
        first_retry(c)
        assert ids(c.events_until(10, 5)) == missed[-10:]
        c.expect_silence(0.3)
    assert metric_value(broker, "broker_sse_replay_pages_total") == pages, \
        "a resume that misses 10 events had a page read by the engine thread"

    with resume(first) as c:  # a hundred missed: the worker's 32, then the engine's pages
        first_retry(c)
        evs = c.events_until(100, 10)
        assert ids(evs) == missed
        assert [json.loads(e.data)["i"] for e in evs] == list(range(1, 101))
        live = insert(broker, u, "tick", {"i": 101}, sess)
        assert c.next_event(5).id == live
        c.expect_silence(0.3)
    assert metric_value(broker, "broker_sse_replay_pages_total") - pages >= 2, \
        "the 68 events after the first page were not read in pages by the engine"


def test_last_event_id_not_decimal_400(broker):
    _, jwt = new_user(broker)
    for headers, path in ((dict(bearer_header(jwt), **{"Last-Event-ID": "abc"}), "/sse"),
                          (bearer_header(jwt), "/sse?last_event_id=abc")):
        with SSEClient.open(broker.base_url, path, headers=headers) as c:
            assert c.read_head(HEAD_TIMEOUT) == 400, (path, c.head_raw)
            body = c.json_body(5)
            assert isinstance(body, dict) and body.get("error"), body


# ================================================================ credentials

def test_access_token_query_and_basic(broker):
    u, jwt = new_user(broker)
    with open_stream(broker, None, path="/sse?access_token=" + urllib.parse.quote(jwt)) as c1, \
            open_stream(broker, u.basic()) as c2:
        first_retry(c1)
        first_retry(c2)
        eid = insert(broker, u, "q", {"x": 1})
        assert c1.next_event(5).id == eid
        assert c2.next_event(5).id == eid


@pytest.mark.parametrize("case", ["bad_query_token", "no_credentials", "bad_bearer",
                                  "wrong_password"])
def test_sse_401(broker, case):
    u, jwt = new_user(broker)
    path, headers = "/sse", None
    if case == "bad_query_token":
        path = "/sse?access_token=" + jwt[:-4] + "AAAA"
    elif case == "bad_bearer":
        headers = bearer_header("not.a.jwt")
    elif case == "wrong_password":
        headers = basic_header(u.username, u.password + "x")
    with SSEClient.open(broker.base_url, path, headers=headers) as c:
        assert c.read_head(HEAD_TIMEOUT) == 401, c.head_raw
        assert c.headers.get("content-type", "").lower().startswith("application/json"), c.head_raw
        body = c.json_body(5)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body


def test_wrong_basic_passwords_do_not_hold_up_live_events(broker):
    # Each wrong Basic password costs an Argon2 verification (tens of ms).  New subscribers'
    # credentials are checked off the thread that reads requests and writes the streams, so
    # while 40 such requests are being refused, an insert sent after them is answered and its
    # event reaches a subscriber before the last refusal is out.  Checked on the streams'
    # thread, the insert and the event would wait behind all 40 (anyone who knows a username
    # could stall every stream that way).
    u, jwt = new_user(broker)
    with open_stream(broker, bearer_header(jwt)) as live:
        first_retry(live)
        bad = [SSEClient.open(broker.base_url, "/sse", headers=basic_header(u.username, "wrong%d" % i))
               for i in range(40)]
        try:
            r = requests.post(broker.url("/insert"), json={"event": "during", "data": 1},
                              headers=bearer_header(jwt), timeout=60)
            eid = assert_ok(r)["id"]
            assert live.next_event(60).id == eid
            for c in bad:
                c.recv_nowait()
            refused = sum(1 for c in bad if c.status is not None)
            assert refused < len(bad), ("all %d wrong passwords were refused before the event "
                                        "reached its subscriber" % len(bad))
            for c in bad:
                assert c.read_head(60) == 401, c.head_raw
        finally:
            for c in bad:
                c.close()


# ================================================================ revocation

def test_revocation_closes_only_that_users_streams(broker):
    tenant = uniq("t")
    a, ja = new_user(broker, tenant)
    b, jb = new_user(broker, tenant)
    sa1 = open_stream(broker, bearer_header(ja))
    sa2 = open_stream(broker, a.basic())
    sb = open_stream(broker, bearer_header(jb))
    try:
        for c in (sa1, sa2, sb):
            first_retry(c)
        eid = insert(broker, b, "before", 1)
        for c in (sa1, sa2, sb):
            assert c.next_event(5).id == eid
        assert_ok(broker.admin("/revoke_user", username=a.username))
        t0 = time.monotonic()
        for c in (sa1, sa2):
            assert c.wait_closed(3.0), "revoked user's stream still open 3 s after revoke_user"
        # the other user's stream is untouched and still live
        eid2 = insert(broker, b, "after", 2)
        ev = sb.next_event(5)
        assert ev.id == eid2, "other user's stream got %r" % (ev,)
        assert not sb.eof
        assert time.monotonic() - t0 < 5
    finally:
        for c in (sa1, sa2, sb):
            c.close()


def test_revoked_while_its_credentials_are_checked(broker):
    # A Basic password seen for the first time costs an Argon2 verification, off the engine
    # thread; the user is revoked meanwhile.  The new stream must not outlive the revocation:
    # refused, or closed once started.  (The revocation closes the streams a user has; a
    # check that passed just before it must not start one after it.)
    u, _ = new_user(broker)
    c = SSEClient.open(broker.base_url, "/sse", headers=u.basic())
    try:
        assert_ok(broker.admin("/revoke_user", username=u.username))
        status = c.read_head(10)
        if status == 200:
            assert c.wait_closed(5.0), "the revoked user's new stream is still open 5 s after revoke_user"
        else:
            assert status == 401, c.head_raw
    finally:
        c.close()


def test_revoked_then_unrevoked_can_stream(broker):
    u, jwt = new_user(broker)
    assert_ok(broker.admin("/revoke_user", username=u.username))
    for headers in (bearer_header(jwt), u.basic()):
        with SSEClient.open(broker.base_url, "/sse", headers=headers) as c:
            assert c.read_head(HEAD_TIMEOUT) == 401, "revoked user got a stream: %r" % c.head_raw
    assert_ok(broker.admin("/unrevoke_user", username=u.username))
    jwt2 = broker.login(u.username, u.password)
    with open_stream(broker, bearer_header(jwt2)) as c1, open_stream(broker, u.basic()) as c2:
        first_retry(c1)
        first_retry(c2)
        eid = insert(broker, u, "back", 1)
        assert c1.next_event(5).id == eid and c2.next_event(5).id == eid


# ================================================================ slow reader

def test_slow_reader_dropped_others_unaffected(tuned):
    b = tuned
    u, jwt = new_user(b)
    sess = requests.Session()
    first = insert(b, u, "start", {"i": -1}, sess)  # so the slow one parses at least one id
    slow = open_stream(b, bearer_header(jwt), rcvbuf=1024)  # then never read (until the end)
    normal = open_stream(b, bearer_header(jwt))
    dropped0 = metric_value(b, "broker_sse_slow_dropped_total")
    pad = "x" * 2000
    inserted = []
    result = {}

    def read_normal():
        try:
            first_retry(normal)
            result["snap"] = normal.next_event(10)
            got = []
            last_progress = time.monotonic()
            while not (result.get("done") and len(got) >= len(inserted)):
                try:
                    got.append(normal.next_event(0.5))
                    last_progress = time.monotonic()
                except Timeout:
                    if time.monotonic() - last_progress > 10:
                        raise
            result["events"] = got
        except Exception as e:  # reported by the main thread
            result["error"] = e

    t = threading.Thread(target=read_normal, daemon=True)
    t.start()
    try:
        # The kernel buffers a lot for the slow socket before the server's own queue grows
        # (server send buffer autotuning): insert until the server reports the drop, then
        # some more that the slow reader certainly misses.  At most ~6 MB of events.
        deadline = time.monotonic() + 25
        extra = None
        while len(inserted) < 3000 and time.monotonic() < deadline:
            inserted.append(insert(b, u, "bulk", {"i": len(inserted), "pad": pad}, sess))
            if extra is None and len(inserted) % 25 == 0 and len(inserted) >= 300 and \
                    metric_value(b, "broker_sse_slow_dropped_total") > dropped0:
                extra = 20
            elif extra is not None:
                extra -= 1
                if extra == 0:
                    break
        result["done"] = True
        assert extra == 0, "the slow reader was never disconnected after %d events of ~2 KB " \
            "(--sse_queue_max 65536; broker_sse_slow_dropped_total stayed %s)" % (
                len(inserted), metric_value(b, "broker_sse_slow_dropped_total"))
        t.join(20)
        assert not t.is_alive(), "normal reader still reading"
        assert "error" not in result, "normal reader: %s" % result.get("error")
        assert result["snap"].id == first
        got = ids(result["events"])
        assert got == inserted, "normal reader got %d events, first mismatch at %r" % (
            len(got), next((i for i, (x, y) in enumerate(zip(got, inserted)) if x != y), None))
        assert all(json.loads(e.data)["pad"] == pad for e in result["events"][:5])

        # Drain the slow socket: what it got is an in-order prefix, then EOF/reset.
        assert slow.wait_closed(15), "slow reader's connection was not closed by the server"
        evs = slow.drain_events()
        assert evs and evs[0].id == first, "slow reader's first event %r" % (evs[:1],)
        sid = ids(evs[1:])
        assert sid == inserted[:len(sid)], "slow reader got a gap or reorder: %r..." % sid[:10]
        assert len(sid) < len(inserted), "slow reader received everything: not dropped"
        last = evs[-1].id
    finally:
        result["done"] = True
        slow.close()
        normal.close()
    # Reconnect with the last id it parsed: exactly the rest, nothing missing or repeated.
    rest = inserted[len(sid):]
    c = SSEClient.open(b.base_url, "/sse", headers=dict(bearer_header(jwt), **{"Last-Event-ID": last}))
    with c:
        try:
            status = c.read_head(HEAD_TIMEOUT)
        except Closed:
            raise AssertionError(
                "reconnect with Last-Event-ID %s (backlog %d events, ~%d KB, --sse_queue_max "
                "65536) was closed before any answer: the replay must not count as a slow "
                "reader" % (last, len(rest), len(rest) * 2))
        assert status == 200, c.head_raw
        first_retry(c)
        evs = c.events_until(len(rest), 15)
        assert ids(evs) == rest
        c.expect_silence(0.3)


def test_snapshot_larger_than_queue_bound(tuned):
    """A tenant whose latest-per-name snapshot is bigger than --sse_queue_max (64 KiB here)
    must still be served to a client that reads normally."""
    b = tuned
    u, jwt = new_user(b)
    sess = requests.Session()
    pad = "y" * 2000
    sent = [insert(b, u, "name%03d" % i, {"i": i, "pad": pad}, sess) for i in range(60)]
    c = SSEClient.open(b.base_url, "/sse", headers=bearer_header(jwt))
    with c:
        try:
            status = c.read_head(HEAD_TIMEOUT)
        except Closed:
            raise AssertionError("a new subscriber of a tenant with a ~120 KB snapshot "
                                 "(--sse_queue_max 65536) was closed before any answer")
        assert status == 200, c.head_raw
        first_retry(c)
        evs = c.events_until(len(sent), 10)
        assert ids(evs) == sent


# ================================================================ connection reuse

def test_keepalive_connection_carries_login_then_stream(broker):
    """One keep-alive connection: POST /login, then GET /sse on the same connection gets the
    stream itself (no redirect, no close), and a live event arrives on it."""
    u, _ = new_user(broker)
    parts = urllib.parse.urlsplit(broker.base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
    try:
        conn.request("POST", "/login", body=json.dumps({"username": u.username,
                                                         "password": u.password}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        body = json.loads(r.read())
        assert r.status == 200 and body.get("jwt"), (r.status, body)
        assert not r.will_close, "the server closed the keep-alive connection after /login"
        conn.request("GET", "/sse?access_token=" + body["jwt"], headers={"Accept": "text/event-stream"})
        r2 = conn.getresponse()
        assert r2.status == 200, "GET /sse on a reused connection answered %d %r" % (
            r2.status, r2.getheaders())
        assert (r2.getheader("Content-Type") or "").startswith("text/event-stream"), r2.getheaders()
        # readline() decodes a chunked body too (a gateway in front re-frames the stream).
        assert r2.readline() == b"retry: 3000\n"
        assert r2.readline() == b"\n"
        assert_ok(broker.post("/insert", {"event": "reuse", "data": 7}, headers=bearer_header(body["jwt"])))
        lines = []
        deadline = time.monotonic() + 10
        while b"data: 7\n" not in lines and time.monotonic() < deadline:
            lines.append(r2.readline())
        assert b"event: reuse\n" in lines and b"data: 7\n" in lines, lines
    finally:
        conn.close()


# ================================================================ many subscribers

def test_500_subscribers_100_events_in_order(broker):
    n_subs, n_events = 500, 100
    u, jwt = new_user(broker)
    # The heads get a deadline of their own: the engine reads each subscriber's user and
    # snapshot from the store as it connects, and on the MongoDB fixture, late in the suite,
    # that takes ~40 ms a subscriber (FerretDB scans whole collections).
    deadline = time.monotonic() + 90
    clients = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n_subs):
            c = SSEClient.open(broker.base_url, "/sse", headers=bearer_header(jwt))
            clients.append(c)
            sel.register(c.sock, selectors.EVENT_READ, c)

        def pump(done, what):
            pending = [c for c in clients if not done(c)]
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    c = key.data
                    c.recv_nowait()
                    if c.eof and not done(c):
                        raise AssertionError("a subscriber was closed while waiting for %s: %r"
                                             % (what, c.body_raw[-200:] or c.head_raw))
                pending = [c for c in pending if not done(c)]
            assert not pending, "%d of %d subscribers still waiting for %s" % (
                len(pending), n_subs, what)

        # every subscriber has its 200 and retry line before the first insert
        pump(lambda c: c.status is not None and (c.status != 200 or c.retries), "the head")
        bad = [c.status for c in clients if c.status != 200]
        assert not bad, "%d subscribers refused: %r" % (len(bad), bad[:5])
        deadline = time.monotonic() + 25
        sess = requests.Session()
        inserted = [insert(broker, u, "fan", {"i": i}, sess) for i in range(n_events)]
        got = {id(c): [] for c in clients}

        def all_in(c):
            got[id(c)].extend(e.id for e in c.drain_events())
            return len(got[id(c)]) >= n_events

        pump(all_in, "%d events" % n_events)
        wrong = [g for g in got.values() if g != inserted]
        assert not wrong, "%d subscribers got wrong ids, e.g. %r" % (len(wrong), wrong[0][:20])
        assert time.monotonic() < deadline
    finally:
        sel.close()
        for c in clients:
            c.close()


# ================================================================ bad input on /sse

def test_post_sse_405(broker):
    assert_error(broker.post("/sse", {"x": 1}), 405)


def test_huge_header_line_rejected(broker):
    _, jwt = new_user(broker)
    with SSEClient.open(broker.base_url, "/sse",
                        headers=dict(bearer_header(jwt), **{"X-Huge": "a" * 10240})) as c:
        try:
            status = c.read_head(5)
        except Closed:
            status = None
        assert status in (431, 400), "10 KB header line answered %r %r" % (status, c.head_raw)
    assert_serving(broker)


def test_head_sent_byte_by_byte(broker):
    u, _ = new_user(broker)
    host, port = urllib.parse.urlsplit(broker.base_url).hostname, \
        urllib.parse.urlsplit(broker.base_url).port
    raw = build_request(host, port, "/sse", headers=u.basic())
    c = SSEClient.open_raw(broker.base_url)
    try:
        step = 3.0 / len(raw)  # the whole head over ~3 s, well within 10 s
        for i in range(len(raw)):
            c.sock.sendall(raw[i:i + 1])
            time.sleep(step)
        assert c.read_head(HEAD_TIMEOUT) == 200, c.head_raw
        first_retry(c)
        eid = insert(broker, u, "slowhead", 1)
        assert c.next_event(5).id == eid
    finally:
        c.close()


GARBAGE = {
    "binary": b"\x00\xff\xfe\x01\x02garbage\r\n\r\n",
    "tls_hello": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64 + b"\r\n\r\n",
    "sse_bad_version": b"GET /sse HTTP/9.9\r\n\r\n",
    "sse_nul": b"GET /sse\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "sse_no_colon": b"GET /sse HTTP/1.1\r\nHost x\r\nnonsense\r\n\r\n",
    "sse_bad_utf8": b"GET /sse?access_token=\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3\x28\r\n\r\n",
    "lf_only_no_auth": b"GET /sse HTTP/1.1\nHost: x\n\n",
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_request(broker, name):
    with SSEClient.open_raw(broker.base_url, GARBAGE[name]) as c:
        # A complete (garbage) head: an answer or a close within 10 s.
        try:
            status = c.read_head(10)
        except Closed:
            status = None  # closed without an answer: acceptable
        except Timeout:
            raise AssertionError("garbage %r: no answer and the connection still open after "
                                 "10 s" % GARBAGE[name])
        if status is not None:
            if EXTERNAL_URL and name == "sse_bad_version" and status == 505:
                return  # nginx, the split deployment's gateway, answers this itself
            assert 400 <= status < 500, "garbage %r answered %d %r" % (name, status, c.head_raw)
    assert_serving(broker)


def test_garbage_without_end_of_head_is_400(broker):
    """Bytes that cannot start a request are refused as they arrive (400), not left
    to the head timeout (408): no blank line ever follows them here."""
    needs_own_server("the gateway of the split deployment answers garbage itself")
    with SSEClient.open_raw(broker.base_url, b"\x16\x03\x01\x00\xa5garbage") as c:
        assert c.read_head(8) == 400, c.head_raw
    assert_serving(broker)


def test_zz_idle_connection_closed(broker, idle_connection):
    """A connection that sends nothing is closed by the server (~10 s), bounded at 15 s."""
    s, opened = idle_connection
    deadline = opened + 15
    while True:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = s.recv(65536)
        except socket.timeout:
            assert time.monotonic() < deadline, \
                "an idle connection is still open %.0f s after connect" % (time.monotonic() - opened)
            continue
        except ConnectionResetError:
            break
        if not data:
            break  # EOF (after an optional 408 answer)
    assert broker.healthy()

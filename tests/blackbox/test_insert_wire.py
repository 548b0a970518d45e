"""POST /insert on the wire: keep-alive, pipelining, trickled requests, mixed requests on one
connection, and the same bytes from both HTTP paths of the all-in-one server.

The all-in-one broker's front door owns the port. It answers a plain keep-alive
`POST /insert HTTP/1.1` with Content-Length and a Bearer JWT itself (the "fast path"); every
other request (errors, Basic, chunked bodies, Connection: close...) is relayed to the
request/response server. Clients must not be able to tell the two apart: same status line,
same headers in the same order (only the Date value differs), same body. After a fast-path
answer the connection may carry any further request. GET /metrics counts fast-path answers in
`broker_inserts_fast_total`.

Everything here talks raw sockets (requests/http.client would hide header order, pipelining
and partial writes). Every recv has a timeout and every loop a deadline.

Choices where the API contract is silent:
  * an insert that is refused (400, 401) does not use up an id: the next good insert of the
    tenant gets the next id;
  * after any answer the front door still owns the connection, so a GET /sse on it starts
    the stream at once (see test_stream.py);
  * a request whose Content-Length exceeds --max_body answers 413 at once, from its head (what
    the client still sends of the body is read and dropped before the close).
"""

import collections
import json
import re
import socket
import threading
import time
import urllib.parse

from conftest import EXTERNAL_URL, needs_own_server, uniq
from sse_client import SSEParser

IO_TIMEOUT = 5.0  # seconds for any one answer
ID_BODY = re.compile(rb'^\{"id":"([0-9]+)"\}$')  # the exact bytes of an insert's answer
FAST_METRIC = "broker_inserts_fast_total"
HANDED_OFF_METRIC = "broker_door_relayed_total"


# ---------------------------------------------------------------- raw HTTP helpers

Response = collections.namedtuple("Response", "status reason headers body")
# status: int; reason: str; headers: [(name, value)] in wire order with the wire's case;
# body: bytes (b"" for a stream, whose bytes stay in Conn.buf).


def header(resp, name):
    """First value of header `name` (case-insensitive), or None."""
    for k, v in resp.headers:
        if k.lower() == name.lower():
            return v
    return None


def show(resp):
    return "%d %s %r %r" % (resp.status, resp.reason, resp.headers, resp.body[:300])


def build(method, path, headers=(), body=b""):
    """Raw request bytes; `headers` is a list of (name, value), sent as given (no Host or
    Content-Length is added)."""
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
    return head.encode("latin-1") + body


def event_body(event, data):
    return json.dumps({"event": event, "data": data}, separators=(",", ":")).encode()


def insert_request(host, jwt, event="e", data=None, body=None, extra=(), names=None,
                   content_type=True, request_id=None):
    """A plain fast-path-eligible insert: Host, Bearer JWT, Content-Type, Content-Length.
    `names` renames headers (e.g. {"Authorization": "authorization"}); `extra` appends."""
    body = event_body(event, data) if body is None else body
    names = names or {}
    hdrs = [("Host", host)]
    if jwt is not None:
        hdrs.append(("Authorization", "Bearer " + jwt))
    if content_type:
        hdrs.append(("Content-Type", "application/json"))
    hdrs.append(("Content-Length", str(len(body))))
    if request_id is not None:
        hdrs.append(("X-Request-Id", request_id))
    hdrs = [(names.get(k, k), v) for k, v in hdrs] + list(extra)
    return build("POST", "/insert", hdrs, body)


def chunked_insert_request(host, jwt, event="e", data=None, body=None, request_id=None):
    """The same insert with Transfer-Encoding: chunked (two chunks): never the fast path."""
    body = event_body(event, data) if body is None else body
    half = len(body) // 2
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
    chunked += b"0\r\n\r\n"
    hdrs = [("Host", host), ("Authorization", "Bearer " + jwt),
            ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
    if request_id is not None:
        hdrs.append(("X-Request-Id", request_id))
    return build("POST", "/insert", hdrs, chunked)


class Conn:
    """One raw keep-alive HTTP/1.1 connection. Bytes received beyond the answer being read
    stay in self.buf for the next one (pipelining, or the stream after a head)."""

    def __init__(self, broker, timeout=IO_TIMEOUT, rcvbuf=None):
        u = urllib.parse.urlsplit(broker.base_url)
        self.host = "%s:%d" % (u.hostname, u.port)
        if rcvbuf is None:
            self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        else:  # set before connecting, so that the window offered is small from the start
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((u.hostname, u.port))
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, raw):
        self.sock.sendall(raw)

    def _recv_more(self, deadline):
        """One recv into self.buf with the time left. False at EOF (or reset)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out; received so far %r" % self.buf[:500])
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out; received so far %r" % self.buf[:500])
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_head(self, deadline):
        """Status line and headers of the next answer; removes them from self.buf."""
        while b"\r\n\r\n" not in self.buf:
            if not self._recv_more(deadline):
                raise AssertionError("connection closed before a response head (got %r)"
                                     % self.buf[:500])
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        assert version == "HTTP/1.1" and code.isdigit(), "bad status line %r" % lines[0]
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name and name == name.strip(), "bad header line %r" % line
            headers.append((name, value.strip()))
        return int(code), reason, headers

    def read_response(self, timeout=IO_TIMEOUT, stream=False):
        """The next answer. Its body is read by Content-Length (which must be there, unless
        stream=True: then the body is left in self.buf for the caller)."""
        deadline = time.monotonic() + timeout
        status, reason, headers = self.read_head(deadline)
        resp = Response(status, reason, headers, b"")
        cl = header(resp, "Content-Length")
        if cl is None:
            assert stream, "answer without Content-Length: %s" % show(resp)
            return resp
        n = int(cl)
        while len(self.buf) < n:
            if not self._recv_more(deadline):
                raise AssertionError("closed after %d of %d body bytes: %s"
                                     % (len(self.buf), n, show(resp)))
        body, self.buf = self.buf[:n], self.buf[n:]
        return resp._replace(body=body)

    def roundtrip(self, raw, timeout=IO_TIMEOUT):
        self.send(raw)
        return self.read_response(timeout)

    def wait_eof(self, timeout=IO_TIMEOUT):
        """True if the server closes the connection within `timeout` with nothing more sent."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._recv_more(deadline)
            except AssertionError:
                return False
        return self.buf == b""


def insert_id(resp):
    """Insists on 200 application/json with exactly {"id":"<decimal>"}; returns the id."""
    assert resp.status == 200, "insert answered %s" % show(resp)
    assert (header(resp, "Content-Type") or "").startswith("application/json"), show(resp)
    m = ID_BODY.match(resp.body)
    assert m, "insert body is not {\"id\":\"<decimal>\"}: %s" % show(resp)
    return int(m.group(1))


def assert_json_error(resp, status):
    """SPEC: errors answer {"error": "<words>"} with `status`; returns the message."""
    assert resp.status == status, "expected %d: %s" % (status, show(resp))
    assert (header(resp, "Content-Type") or "").startswith("application/json"), show(resp)
    body = json.loads(resp.body.decode("utf-8"))
    assert isinstance(body, dict) and isinstance(body.get("error"), str) \
        and body["error"].strip(), "error body must be {\"error\": \"...\"}: %s" % show(resp)
    return body["error"]


def stream_events(conn, until, timeout=IO_TIMEOUT):
    """Parses the event stream following a head read with read_response(stream=True); returns
    the events seen once until(events) is true, or when `timeout` passes (or the stream
    ends) without it."""
    deadline = time.monotonic() + timeout
    parser, events = SSEParser(), []
    data, conn.buf = conn.buf, b""
    while True:
        events += [v for k, v in parser.feed(data) if k == "event"]
        if until(events) or time.monotonic() >= deadline:
            return events
        try:
            if not conn._recv_more(deadline):
                return events
        except AssertionError:  # deadline
            return events
        data, conn.buf = conn.buf, b""


def sse_request(host, jwt):
    return build("GET", "/sse", [("Host", host), ("Accept", "text/event-stream"),
                                 ("Authorization", "Bearer " + jwt)])


def metric_in(text, name):
    """A metric in a /metrics page (sum of its samples), None if absent."""
    total = None
    for line in text.splitlines():
        m = re.match(r"^%s(\{[^}]*\})?\s+(\S+)" % re.escape(name), line)
        if m:
            total = (total or 0.0) + float(m.group(2))
    return total


def metric_total(broker, name):
    """A metric from GET /metrics, None if absent."""
    r = broker.get("/metrics")
    assert r.status_code == 200, r.text[:300]
    return metric_in(r.text, name)


def handed_off(conn):
    """broker_door_relayed_total (requests the front door relayed to the request/response
    server) read over `conn` (GET /metrics is the front door's own: reading it relays nothing)."""
    resp = conn.roundtrip(build("GET", "/metrics", [("Host", conn.host)]))
    assert resp.status == 200, show(resp)
    return metric_in(resp.body.decode("utf-8"), HANDED_OFF_METRIC)


def fast_count(broker):
    """broker_inserts_fast_total: inserts stored and answered by the engine."""
    return metric_total(broker, FAST_METRIC)


def new_writer(broker):
    """A user in a tenant of its own, and its JWT."""
    u = broker.create_user(tenant_name=uniq("t"))
    return u, broker.login(u.username, u.password)


# ================================================================ keep-alive and pipelining

def test_30_sequential_inserts_on_one_connection(broker):
    # Two tenants alternate on the one connection: each answer must come from the tenant of
    # its own request's token, whatever the connection carried before.
    writers = [new_writer(broker)[1], new_writer(broker)[1]]
    ids = {0: [], 1: []}
    with Conn(broker) as c:
        for i in range(30):
            resp = c.roundtrip(insert_request(c.host, writers[i % 2], "seq", {"i": i}))
            assert (header(resp, "Connection") or "").lower() != "close", show(resp)
            ids[i % 2].append(insert_id(resp))
    for t, got in ids.items():
        assert got == list(range(got[0], got[0] + 15)), \
            "tenant %d: ids not consecutive on one connection: %r" % (t, got)


def test_pipelined_inserts_answered_in_order(broker):
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        c.send(b"".join(insert_request(c.host, jwt, "pipe", {"i": i}) for i in range(20)))
        # One deadline for all twenty: a request left waiting for the engine's next wake-up
        # (once a second) would still meet a per-answer one.
        deadline = time.monotonic() + IO_TIMEOUT
        got = [insert_id(c.read_response(timeout=deadline - time.monotonic())) for _ in range(20)]
    assert got == list(range(got[0], got[0] + 20)), "pipelined answers: ids %r" % got


# An origin of about 3 KB (--origin takes any string): every answer carries it, so a few
# hundred answers fill a connection's buffers.
LONG_ORIGIN = "https://" + ".".join(["s%02d" % i + "x" * 56 for i in range(50)]) + ".example"


def test_long_origin_on_every_path(broker_factory):
    b = broker_factory(["--origin", LONG_ORIGIN], origin=LONG_ORIGIN)
    _, jwt = new_writer(b)
    with Conn(b) as c:
        fast = c.roundtrip(insert_request(c.host, jwt, "long", {"v": 1}))
    insert_id(fast)
    assert header(fast, "Access-Control-Allow-Origin") == LONG_ORIGIN, show(fast)
    with Conn(b) as c:
        c.send(sse_request(c.host, jwt))
        head = c.read_response(stream=True)
    assert head.status == 200 and header(head, "Access-Control-Allow-Origin") == LONG_ORIGIN, show(head)
    with Conn(b) as c:
        c.send(sse_request(c.host, jwt + "x"))
        refused = c.read_response()
    assert refused.status == 401 and header(refused, "Access-Control-Allow-Origin") == LONG_ORIGIN, show(refused)
    assert header(refused, "Vary") == "Origin", show(refused)


def test_pipelined_burst_is_not_left_waiting(broker):
    # 1,000 inserts pipelined in one send (the gateway of the split deployment, nginx, closes a
    # connection after 1,000 requests): the kernel cuts them into large segments at any
    # byte, and a segment's memory stays charged until all of it is read, so the start of a
    # request at the end of one can fill the connection's receive buffer on its own.  The
    # broker must then still read it (it hands the connection to its other server) rather
    # than wait for bytes the closed window keeps out, until its 20-second head timeout.
    _, jwt = new_writer(broker)
    n = 1000
    with Conn(broker) as c:
        sent = []

        def send_all():
            try:
                c.send(b"".join(insert_request(c.host, jwt, "burst", {"i": i}) for i in range(n)))
                sent.append(True)
            except OSError as exc:
                sent.append(exc)

        c.sock.settimeout(30)
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        deadline = time.monotonic() + 15  # under the head timeout, with room for a slow machine
        got = [insert_id(c.read_response(timeout=deadline - time.monotonic())) for _ in range(n)]
        sender.join(timeout=max(0.0, deadline - time.monotonic()))
    assert sent == [True], "sending the pipelined inserts: %r" % sent
    assert got == list(range(got[0], got[0] + n)), "ids not consecutive: %r" % got[:50]


def test_answers_to_a_sender_that_reads_nothing_for_a_while(broker_factory):
    # A sender sends inserts in small groups, waits for the broker to have answered each
    # group (GET /metrics), and reads nothing: the answers (about 3 KB each, with a long
    # --origin) fill its receive window and then the broker's send buffer, until one is
    # written in part and the broker takes no further request.  Once the sender reads,
    # every answer must arrive whole, once, and in order, and the connection go on.
    b = broker_factory(["--origin", LONG_ORIGIN], origin=LONG_ORIGIN)
    _, jwt = new_writer(b)
    group, most = 20, 4000
    before = fast_count(b) or 0
    with Conn(b) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent, stalled = 0, False
        while sent < most and not stalled:
            for i in range(sent, sent + group):
                c.send(insert_request(c.host, jwt, "unread", {"i": i}))
            sent += group
            deadline = time.monotonic() + 3
            while fast_count(b) - before < sent and time.monotonic() < deadline:
                time.sleep(0.01)
            stalled = fast_count(b) - before < sent
        assert stalled, ("%d answers of about 3 KB, none read, and the broker still took more: "
                         "its buffers never filled, so nothing here was tested" % sent)
        deadline = time.monotonic() + 60
        got = []
        for _ in range(sent):
            resp = c.read_response(timeout=deadline - time.monotonic())
            got.append(insert_id(resp))
            assert header(resp, "Access-Control-Allow-Origin") == LONG_ORIGIN, show(resp)
        assert got == list(range(got[0], got[0] + sent)), "ids not consecutive: %r" % got[:50]
        # the connection is still good for another insert
        assert insert_id(c.roundtrip(insert_request(c.host, jwt, "unread", {"i": -1}))) == got[-1] + 1


def test_next_request_sent_before_the_answer(broker):
    # The second request leaves while the first is being stored (a separate write after a
    # short pause, no wait for the answer): its bytes arrive when nothing reads the socket,
    # and must still be read once the first answer is out.  The pauses vary so that some
    # second requests land while the first is with the store, whatever the disk's speed.
    _, jwt = new_writer(broker)
    got = []
    with Conn(broker) as c:
        for i, pause in enumerate([0, 0.0002, 0.0005, 0.001, 0.002, 0.004] * 4):
            c.send(insert_request(c.host, jwt, "early", {"i": 2 * i}))
            time.sleep(pause)
            c.send(insert_request(c.host, jwt, "early", {"i": 2 * i + 1}))
            got += [insert_id(c.read_response()), insert_id(c.read_response())]
    assert got == list(range(got[0], got[0] + 48)), "ids %r" % got


def test_concurrent_senders_keep_their_tenants(broker):
    # Inserts in flight together are checked and stored together; every one must land in
    # the tenant of its own token, and a bad token among them must be refused alone.
    writers = [new_writer(broker)[1] for _ in range(4)]
    per_conn, conns_per_writer = 5, 5
    conns = [(w, Conn(broker)) for w in range(len(writers)) for _ in range(conns_per_writer)]
    bad = Conn(broker)
    try:
        for k, (w, c) in enumerate(conns):
            c.send(b"".join(insert_request(c.host, writers[w], "w%d-c%d-i%d" % (w, k, i), {"w": w})
                            for i in range(per_conn)))
        forged = writers[0][:-4] + ("AAAA" if not writers[0].endswith("AAAA") else "BBBB")
        bad.send(insert_request(bad.host, forged, "forged", {"w": -1}))
        ids = collections.defaultdict(list)
        for w, c in conns:
            ids[w] += [insert_id(c.read_response()) for _ in range(per_conn)]
        assert_json_error(bad.read_response(), 401)
    finally:
        for _, c in conns:
            c.close()
        bad.close()
    want = per_conn * conns_per_writer
    for w, got in ids.items():
        assert sorted(got) == list(range(1, want + 1)), "tenant %d: ids %r" % (w, sorted(got))
    # Each tenant's snapshot (the latest event of every name) holds its own events only.
    for w, jwt in enumerate(writers):
        with Conn(broker) as c:
            c.send(sse_request(c.host, jwt))
            assert c.read_response(stream=True).status == 200
            events = stream_events(c, lambda evs: len(evs) >= want)
        assert sorted(e.event.split("-")[0] for e in events) == ["w%d" % w] * want, \
            "tenant %d saw %r" % (w, [e.event for e in events])
        assert all(json.loads(e.data) == {"w": w} for e in events), [e.data for e in events]


def test_trickled_request_answered(broker):
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        raw = insert_request(c.host, jwt, "trickle", {"slow": True, "pad": "x" * 100})
        head, body = raw.split(b"\r\n\r\n", 1)
        c.send(head + b"\r\n\r\n")
        time.sleep(0.2)
        c.send(body[:len(body) // 2])
        time.sleep(0.2)
        c.send(body[len(body) // 2:])
        insert_id(c.read_response())


# ================================================================ same bytes from both paths

def masked(resp):
    """Status line and headers in order, the Date value blanked (the one allowed difference)."""
    assert header(resp, "Date"), "answer without Date: %s" % show(resp)
    return (resp.status, resp.reason,
            [(k, "<date>" if k.lower() == "date" else v) for k, v in resp.headers])


def compare_paths(broker):
    """One insert on the fast path (plain keep-alive request) and one forced onto the other
    server (chunked body): same status line, same headers in order except the Date value,
    same body bytes but for the id. Both carry the same X-Request-Id, which both answers
    must echo. Returns the fast one's headers."""
    _, jwt = new_writer(broker)
    for _attempt in range(2):  # ids of different digit counts would change Content-Length
        before = fast_count(broker)
        with Conn(broker) as c:
            fast = c.roundtrip(insert_request(c.host, jwt, "same", {"v": 1}, request_id="cmp-1"))
        mid = fast_count(broker)
        with Conn(broker) as c:
            other = c.roundtrip(chunked_insert_request(c.host, jwt, "same", {"v": 1}, request_id="cmp-1"))
        after = fast_count(broker)
        a, b = insert_id(fast), insert_id(other)
        assert b == a + 1, "ids %d then %d" % (a, b)
        if len(str(a)) == len(str(b)):
            break
    if before is not None:  # once the counter exists: each request really took its path
        assert (mid - before, after - mid) == (1, 0), \
            "%s moved by %r then %r: the requests did not take the paths meant" \
            % (FAST_METRIC, mid - before, after - mid)
    assert masked(fast) == masked(other), \
        "answers differ:\n fast path: %s\n other:     %s" % (show(fast), show(other))
    assert fast.body.replace(b'"%d"' % a, b'"N"') == other.body.replace(b'"%d"' % b, b'"N"')
    return fast.headers


def test_same_headers_on_both_paths(broker):
    headers = compare_paths(broker)
    assert ("Access-Control-Allow-Origin", broker.origin) in headers, headers


def test_same_headers_on_both_paths_with_origin(broker_factory):
    b = broker_factory(["--origin", "https://example.com"], origin="https://example.com")
    headers = compare_paths(b)
    assert ("Access-Control-Allow-Origin", "https://example.com") in headers, headers
    assert ("Vary", "Origin") in headers, "no Vary: Origin with --origin: %r" % headers


def test_refusals_same_on_both_paths(broker):
    # A refused insert on the fast path is answered by the engine (its connection stays there)
    # with what the other server answers the same request: status, headers, body.
    _, jwt = new_writer(broker)
    cases = [("a forged JWT", jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB"), event_body("r", 1)),
             ("not a JWT", "not-a-jwt", event_body("r", 1)),
             ("malformed JSON", jwt, b'{"event":"r","data":'),
             ("no event", jwt, b'{"data":1}'),
             ("a control character in the event", jwt, b'{"event":"a\\u0007b","data":1}'),
             ("no data", jwt, b'{"event":"r"}')]
    with Conn(broker) as m:
        handed_off(m)
        for what, token, body in cases:
            off0 = handed_off(m)
            with Conn(broker) as c:
                fast = c.roundtrip(insert_request(c.host, token, body=body, request_id="refusal-7"))
            off1 = handed_off(m)
            with Conn(broker) as c:
                other = c.roundtrip(chunked_insert_request(c.host, token, body=body, request_id="refusal-7"))
            off2 = handed_off(m)
            assert fast.status in (400, 401), "%s: %s" % (what, show(fast))
            assert_json_error(fast, fast.status)
            assert masked(fast) == masked(other) and fast.body == other.body, \
                "%s answered differently:\n fast path: %s\n other:     %s" % (what, show(fast), show(other))
            assert json.loads(fast.body)["request_id"] == "refusal-7", show(fast)
            if off0 is not None and not EXTERNAL_URL:  # on the broker's own port: each request took the path meant
                assert (off1 - off0, off2 - off1) == (0, 1), \
                    "%s: %s moved by %r then %r" % (what, HANDED_OFF_METRIC, off1 - off0, off2 - off1)


def test_refused_inserts_leave_the_connection_with_the_engine(broker):
    needs_own_server("reads the counters of the process that answers the inserts")
    _, jwt = new_writer(broker)
    with Conn(broker) as m:
        handed_off(m)
        fast0, off0 = fast_count(broker), handed_off(m)
        with Conn(broker) as c:
            first = insert_id(c.roundtrip(insert_request(c.host, jwt, "keep", 1)))
            assert_json_error(c.roundtrip(insert_request(c.host, jwt[:-4] + "AAAA", "keep", 2)), 401)
            assert_json_error(c.roundtrip(insert_request(c.host, jwt, body=b'{"event":"keep"}')), 400)
            second = insert_id(c.roundtrip(insert_request(c.host, jwt, "keep", 3)))
        assert handed_off(m) == off0, "a refused insert was handed off"
    assert second == first + 1, "ids %d, then %d after refused inserts" % (first, second)
    assert fast_count(broker) - fast0 == 2, "the insert after the refusals was not the engine's"


# ================================================================ mixed requests on one connection

def test_bad_json_between_good_inserts(broker):
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        first = insert_id(c.roundtrip(insert_request(c.host, jwt, "mix", 1)))
        msg = assert_json_error(c.roundtrip(insert_request(c.host, jwt,
                                                           body=b'{"event":"mix","data":')), 400)
        assert "json" in msg.lower(), "400 does not name the problem: %r" % msg
        second = insert_id(c.roundtrip(insert_request(c.host, jwt, "mix", 2)))
    assert second == first + 1, "ids %d, then %d after a refused insert" % (first, second)


def test_healthz_between_good_inserts(broker):
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        first = insert_id(c.roundtrip(insert_request(c.host, jwt, "mix", 1)))
        health = c.roundtrip(build("GET", "/healthz", [("Host", c.host)]))
        assert health.status == 200 and json.loads(health.body)["status"] == "ok", \
            show(health)
        second = insert_id(c.roundtrip(insert_request(c.host, jwt, "mix", 2)))
    assert second == first + 1, "ids %d then %d" % (first, second)


def test_sse_after_insert_on_same_connection(broker):
    # Needs the fast path: a connection whose insert the request/response server answered
    # gets 307 "reconnect for the event stream" instead (test_stream.py checks that).
    _, jwt = new_writer(broker)
    name = uniq("ev")
    with Conn(broker) as c:
        eid = insert_id(c.roundtrip(insert_request(c.host, jwt, name, {"snap": 1})))
        c.send(sse_request(c.host, jwt))
        head = c.read_response(stream=True)
        assert head.status == 200, "GET /sse after a fast-path insert: %s" % show(head)
        assert (header(head, "Content-Type") or "").startswith("text/event-stream"), show(head)
        events = stream_events(c, lambda evs: any(e.event == name for e in evs))
    assert [(e.id, e.event, json.loads(e.data)) for e in events if e.event == name] == \
        [(str(eid), name, {"snap": 1})], "snapshot: %r" % [(e.id, e.event) for e in events]


# ================================================================ closing

def test_connection_close_honoured(broker):
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        resp = c.roundtrip(insert_request(c.host, jwt, "bye", 1,
                                          extra=[("Connection", "close")]))
        insert_id(resp)
        assert (header(resp, "Connection") or "").lower() == "close", show(resp)
        assert c.wait_eof(), "server kept the connection open after Connection: close " \
                             "(or sent more: %r)" % c.buf[:200]


def test_client_hangs_up_before_the_answer(broker):
    _, jwt = new_writer(broker)
    name = uniq("ev")
    with Conn(broker) as c:
        c.send(insert_request(c.host, jwt, name, {"orphan": True}))
    # The insert was complete on the wire: it must be stored, and the server must not mind
    # that its answer found nobody.
    assert broker.healthy(), "broker stopped answering after a client hung up"
    deadline = time.monotonic() + 5
    events = []
    while time.monotonic() < deadline:
        with Conn(broker) as s:
            s.send(sse_request(s.host, jwt))
            head = s.read_response(stream=True)
            assert head.status == 200, show(head)
            events = stream_events(s, lambda evs: any(e.event == name for e in evs), 1.0)
        if any(e.event == name for e in events):
            break
    assert [json.loads(e.data) for e in events if e.event == name] == [{"orphan": True}], \
        "the insert of a client that hung up is not in the snapshot: %r" \
        % [(e.id, e.event) for e in events]


# ================================================================ headers and errors

def test_lower_case_header_names(broker):
    _, jwt = new_writer(broker)
    lower = {"Host": "host", "Authorization": "authorization", "Content-Type": "content-type",
             "Content-Length": "content-length"}
    with Conn(broker) as c:
        a = insert_id(c.roundtrip(insert_request(c.host, jwt, "lc", 1, names=lower)))
        b = insert_id(c.roundtrip(insert_request(c.host, jwt, "lc", 2, names=lower)))
    assert b == a + 1


def test_errors_after_a_good_insert(broker_factory):
    b = broker_factory(["--max_body", "256"])
    _, jwt = new_writer(b)
    with Conn(b) as c:
        first = insert_id(c.roundtrip(insert_request(c.host, jwt, "err", 1)))
        assert_json_error(c.roundtrip(insert_request(c.host, jwt[:-4] + "AAAA", "err", 2)), 401)
        assert_json_error(c.roundtrip(insert_request(c.host, "not-a-jwt", "err", 3)), 401)
        assert_json_error(c.roundtrip(insert_request(c.host, None, "err", 4)), 401)
        second = insert_id(c.roundtrip(insert_request(c.host, jwt, "err", 5)))
        assert second == first + 1, "ids %d, then %d after refused inserts" % (first, second)
        # Last on the connection: after a 413 the server may close it.
        big = event_body("err", "x" * 400)
        assert len(big) > 256
        msg = assert_json_error(c.roundtrip(insert_request(c.host, jwt, body=big)), 413)
        assert "256" in msg or "max_body" in msg, "413 does not say the limit: %r" % msg
    assert b.healthy()


# ================================================================ the fast-path counter

def test_fast_path_counter_counts_keepalive_inserts(broker):
    # Behind the split deployment's gateway, GET /metrics is broker-auth's, not the counter
    # of broker-ingest (whose engine answers the inserts there): tests/split checks that one.
    needs_own_server("the counter is read from the process that answers the inserts")
    before = fast_count(broker)
    assert before is not None, "GET /metrics has no %s" % FAST_METRIC
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        for i in range(10):
            insert_id(c.roundtrip(insert_request(c.host, jwt, "count", i)))
    after = fast_count(broker)
    assert after - before >= 10, "%s rose by %r for 10 keep-alive inserts" \
        % (FAST_METRIC, after - before)


# ================================================================ the store-write counters

WRITE_BATCHES_METRIC = "broker_store_write_batches_total"
WRITE_US_METRIC = "broker_store_write_microseconds_total"
INSERTED_METRIC = "broker_events_inserted_total"


def store_counters(broker):
    text = broker.get("/metrics").text
    got = {n: metric_in(text, n) for n in (WRITE_BATCHES_METRIC, WRITE_US_METRIC, INSERTED_METRIC)}
    missing = [n for n, v in got.items() if v is None]
    assert not missing, "GET /metrics has no %s" % ", ".join(missing)
    return got


def test_store_write_counters(broker):
    # One store write per batch of inserts: one for each insert sent after the last one's
    # answer, fewer than one each for inserts that arrive together (group commit). Time spent writing
    # counts in microseconds; mean batch = inserted / batches, mean write = µs / batches.
    needs_own_server("the counters are read from the process that stores the inserts")
    _, jwt = new_writer(broker)
    before = store_counters(broker)
    with Conn(broker) as c:
        for i in range(10):
            insert_id(c.roundtrip(insert_request(c.host, jwt, "one-by-one", i)))
    middle = store_counters(broker)
    batches = middle[WRITE_BATCHES_METRIC] - before[WRITE_BATCHES_METRIC]
    assert middle[INSERTED_METRIC] - before[INSERTED_METRIC] == 10
    assert batches == 10, "10 inserts, each sent after the last answer, made %r store writes" % batches
    assert middle[WRITE_US_METRIC] > before[WRITE_US_METRIC], \
        "%s did not move over 10 store writes" % WRITE_US_METRIC

    # 40 connections opened first, then one request each sent back to back: the first
    # store write is under way (a flush takes hundreds of microseconds) while the others
    # arrive, and they share the writes after it. Pipelined requests on one connection are
    # not used here: the engine takes one request of a connection at a time.
    conns = [Conn(broker) for _ in range(40)]
    try:
        requests_ = [insert_request(c.host, jwt, "burst", {"i": i}) for i, c in enumerate(conns)]
        for c, raw in zip(conns, requests_):
            c.send(raw)
        deadline = time.monotonic() + IO_TIMEOUT
        for c in conns:
            insert_id(c.read_response(timeout=deadline - time.monotonic()))
    finally:
        for c in conns:
            c.close()
    after = store_counters(broker)
    batches = after[WRITE_BATCHES_METRIC] - middle[WRITE_BATCHES_METRIC]
    assert after[INSERTED_METRIC] - middle[INSERTED_METRIC] == 40
    assert 1 <= batches <= 20, "40 concurrent inserts made %r store writes: no group commit" % batches


def test_request_id_on_the_fast_path(broker):
    # The engine's answers carry X-Request-Id like every other answer: the client's own
    # when it is a sane one, else one the server makes (unique per request).
    _, jwt = new_writer(broker)
    with Conn(broker) as c:
        mine = c.roundtrip(insert_request(c.host, jwt, "rid", 1, request_id="client.id:42"))
        made1 = c.roundtrip(insert_request(c.host, jwt, "rid", 2))
        made2 = c.roundtrip(insert_request(c.host, jwt, "rid", 3, request_id="bad id with spaces"))
        refused = c.roundtrip(insert_request(c.host, jwt, body=b'{"event":"rid"}', request_id="x" * 129))
    assert header(mine, "X-Request-Id") == "client.id:42", show(mine)
    ids = [header(r, "X-Request-Id") for r in (made1, made2, refused)]
    assert all(ids) and len(set(ids)) == 3 and "client.id:42" not in ids, ids
    assert "bad id" not in ids[1] and len(ids[2]) < 129, ids
    assert json.loads(refused.body)["request_id"] == ids[2], show(refused)

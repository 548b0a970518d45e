"""A raw-socket Server-Sent Events client for the black-box tests.

requests/http.client hide too much for stream tests: we need to choose every header, read
incrementally with a deadline, see comments and the raw bytes, and sometimes never read at all
(slow reader).  Everything here is bounded in time: no call blocks longer than its timeout.

    c = SSEClient.open(broker.base_url, "/sse", headers=bearer_header(jwt))
    c.read_head(5)            # -> status; c.headers (lower-case names), c.reason
    ev = c.next_event(5)      # -> Event(id, event, data); raises Timeout / Closed
    evs = c.events_until(10, 5)
    c.close()

The parser follows the WHATWG EventSource rules (lines end in \\n, \\r\\n or \\r; "field: value"
with one optional space after the colon; ":" starts a comment; a blank line dispatches).

HTTPS: a base URL starting with https:// gets a TLS connection (handshake done in open()),
verified against TLS_CA_FILE (set by tests/blackbox/conftest.py to the test CA) or, when that is
None, the system's trust store; the IP address 127.0.0.1 is matched against the certificate's
IP subjectAltName. `ssl_context=` overrides the context. Everything else works the same.
"""

import collections
import json
import socket
import ssl
import time
import urllib.parse

# PEM file of the CA that https:// test servers' certificates come from (None: system store).
TLS_CA_FILE = None


def tls_client_context(cafile=None):
    """A client SSLContext trusting `cafile` (default TLS_CA_FILE), hostname checked.
    A close without TLS close_notify reads as a plain EOF (b""), as on a plain socket."""
    ctx = ssl.create_default_context(cafile=cafile or TLS_CA_FILE)
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def wrap_tls(sock, host, context=None):
    """Does the TLS handshake on a connected socket (within the socket's timeout); returns
    the SSLSocket. The socket is closed if the handshake fails."""
    ctx = context or tls_client_context()
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


class Timeout(AssertionError):
    """Nothing (or not enough) arrived before the deadline."""


class Closed(AssertionError):
    """The server closed the connection (EOF or reset) before what was expected arrived."""


Event = collections.namedtuple("Event", "id event data raw")
# id: the id field (str) or None; event: the event field or None; data: the data field (str,
# lines joined with \n) ; raw: the exact bytes of the event block including the blank line.


class SSEParser:
    """Incremental SSE parser: feed() bytes, get items back.

    Items are ("event", Event), ("comment", text) and ("retry", text)."""

    def __init__(self):
        self.buf = b""
        self.block = b""  # raw bytes of the event being assembled
        self.fields = {}
        self.data_lines = []

    def feed(self, chunk):
        self.buf += chunk
        out = []
        while True:
            # Find the first line terminator: \n, \r\n or \r (a \r at the very end may be the
            # first half of \r\n: wait for more).
            i_n = self.buf.find(b"\n")
            i_r = self.buf.find(b"\r")
            if i_r != -1 and (i_n == -1 or i_r < i_n):
                if i_r == len(self.buf) - 1:
                    break
                end = i_r + (2 if self.buf[i_r + 1:i_r + 2] == b"\n" else 1)
                line = self.buf[:i_r]
            elif i_n != -1:
                end = i_n + 1
                line = self.buf[:i_n]
            else:
                break
            raw_line = self.buf[:end]
            self.buf = self.buf[end:]
            item = self._line(line, raw_line)
            if item is not None:
                out.append(item)
        return out

    def _line(self, line, raw_line):
        text = line.decode("utf-8", "replace")
        if text == "":
            if not self.fields and not self.data_lines:
                self.block = b""
                return None
            raw = self.block + raw_line
            ev = Event(self.fields.get("id"), self.fields.get("event"),
                       "\n".join(self.data_lines) if self.data_lines else None, raw)
            self.block, self.fields, self.data_lines = b"", {}, []
            return ("event", ev)
        if text.startswith(":"):
            return ("comment", text[1:].lstrip(" ") if text.startswith(": ") else text[1:])
        name, sep, value = text.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "retry":
            return ("retry", value)
        self.block += raw_line
        if name == "data":
            self.data_lines.append(value)
        elif name in ("id", "event"):
            self.fields[name] = value
        return None


class ChunkedDecoder:
    """Decodes Transfer-Encoding: chunked (in case the server uses it for the stream)."""

    def __init__(self):
        self.buf = b""
        self.data_left = 0  # payload bytes left in the current chunk
        self.crlf_left = 0  # bytes of the CRLF after the payload still to skip
        self.done = False

    def feed(self, chunk):
        self.buf += chunk
        out = b""
        while self.buf and not self.done:
            if self.data_left:
                take = self.buf[:self.data_left]
                self.buf = self.buf[len(take):]
                self.data_left -= len(take)
                out += take
            elif self.crlf_left:
                skip = min(self.crlf_left, len(self.buf))
                self.buf = self.buf[skip:]
                self.crlf_left -= skip
            else:
                i = self.buf.find(b"\r\n")
                if i == -1:
                    break
                size = int(self.buf[:i].split(b";")[0].strip() or b"0", 16)
                self.buf = self.buf[i + 2:]
                if size == 0:
                    self.done = True
                    break
                self.data_left, self.crlf_left = size, 2
        return out


def build_request(host, port, path, method="GET", headers=None, body=b""):
    hdrs = [("Host", "%s:%d" % (host, port)), ("Accept", "text/event-stream")]
    for k, v in (headers or {}).items():
        hdrs = [(hk, hv) for hk, hv in hdrs if hk.lower() != k.lower()]
        if v is not None:
            hdrs.append((k, v))
    if body:
        hdrs.append(("Content-Length", str(len(body))))
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
    return head.encode("latin-1") + body


def split_url(base_url):
    u = urllib.parse.urlsplit(base_url)
    return u.hostname, u.port or (443 if u.scheme == "https" else 80)


def is_https(base_url):
    return urllib.parse.urlsplit(base_url).scheme == "https"


class SSEClient:
    def __init__(self, sock, host, port, path):
        self.sock = sock
        self.host, self.port, self.path = host, port, path
        self.status = None
        self.reason = None
        self.headers = {}
        self.head_raw = b""
        self._inbuf = b""  # bytes received but not yet used (head parsing)
        self.body_raw = b""  # every body byte received so far (after de-chunking)
        self.parser = SSEParser()
        self.chunked = None
        self.items = collections.deque()
        self.comments = []  # (monotonic time, text) of every comment seen
        self.retries = []
        self.eof = False
        self.error = None

    # ------------------------------------------------------------ opening

    @classmethod
    def connect(cls, base_url, rcvbuf=None, timeout=5.0, ssl_context=None):
        """A connected socket (TLS, handshake done, for an https:// base URL)."""
        host, port = split_url(base_url)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # must be set before connect to shrink the window
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        try:
            s.connect((host, port))
        except BaseException:
            s.close()
            raise
        if is_https(base_url):
            s = wrap_tls(s, host, ssl_context)
        return s, host, port

    @classmethod
    def open(cls, base_url, path="/sse", headers=None, method="GET", rcvbuf=None, timeout=5.0,
             body=b"", ssl_context=None):
        """Connect and send the request (does not read anything)."""
        s, host, port = cls.connect(base_url, rcvbuf, timeout, ssl_context)
        c = cls(s, host, port, path)
        s.sendall(build_request(host, port, path, method, headers, body))
        return c

    @classmethod
    def open_raw(cls, base_url, raw=b"", rcvbuf=None, timeout=5.0, ssl_context=None):
        """Connect and send arbitrary bytes (for bad-input tests)."""
        s, host, port = cls.connect(base_url, rcvbuf, timeout, ssl_context)
        c = cls(s, host, port, None)
        if raw:
            s.sendall(raw)
        return c

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ low level

    def _recv(self, deadline, nbytes=65536):
        """One recv with the time left; returns bytes, b"" at EOF; raises Timeout."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("deadline passed")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(nbytes)
        except socket.timeout:
            raise Timeout("no data within the deadline")
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            # ssl.SSLError: the TLS layer failed (bad record, alert): the connection is over.
            self.error = e
            self.eof = True
            return b""
        if not data:
            self.eof = True
        return data

    def recv_nowait(self, nbytes=65536):
        """One non-blocking recv for selector loops: feeds the parser; False at EOF.
        Over TLS it also takes what the TLS layer has already decrypted (pending()), which
        a selector cannot see."""
        self.sock.setblocking(False)
        data = b""
        try:
            while True:
                try:
                    chunk = self.sock.recv(nbytes)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
                    self.error = e
                    self.eof = True
                    break
                if not chunk:
                    self.eof = True
                    break
                data += chunk
                if not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
                    break
        finally:
            if self.sock.fileno() != -1:
                self.sock.setblocking(True)
        if data:
            self._absorb(data)
        return not self.eof

    def _absorb(self, data):
        """Bytes from the socket: into the head until it is complete, then into the body."""
        if self.status is None:
            self._inbuf += data
            i = self._inbuf.find(b"\r\n\r\n")
            if i == -1:
                return
            self._parse_head(self._inbuf[:i + 4])
            data, self._inbuf = self._inbuf[i + 4:], b""
        self._body(data)

    def _parse_head(self, raw):
        self.head_raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise AssertionError("not an HTTP status line: %r" % lines[0])
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.chunked = ChunkedDecoder()

    def _body(self, data):
        if self.chunked is not None:
            data = self.chunked.feed(data)
        if not data:
            return
        self.body_raw += data
        if self.status == 200:
            for kind, val in self.parser.feed(data):
                if kind == "comment":
                    self.comments.append((time.monotonic(), val))
                elif kind == "retry":
                    self.retries.append(val)
                self.items.append((kind, val))

    # ------------------------------------------------------------ reading

    def read_head(self, timeout=5.0):
        """Reads the status line and headers; returns the status."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            data = self._recv(deadline)
            if not data:
                raise Closed("connection closed before a response head (got %r)" % self._inbuf)
            self._absorb(data)
        return self.status

    def read_body(self, timeout=5.0):
        """For a non-stream answer: the body (Content-Length, or until EOF)."""
        self.read_head(timeout)
        deadline = time.monotonic() + timeout
        want = self.headers.get("content-length")
        while True:
            if want is not None and len(self.body_raw) >= int(want):
                return self.body_raw[:int(want)]
            if self.chunked is not None and self.chunked.done:
                return self.body_raw
            if self.eof:
                return self.body_raw
            data = self._recv(deadline)
            if not data:
                return self.body_raw
            self._body(data)

    def json_body(self, timeout=5.0):
        body = self.read_body(timeout)
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            raise AssertionError("body is not JSON: %r (head %r)" % (body, self.head_raw))

    def next_item(self, timeout=5.0):
        """The next ("event"|"comment"|"retry", value)."""
        deadline = time.monotonic() + timeout
        if self.status is None:
            self.read_head(timeout)
        while not self.items:
            if self.eof:
                raise Closed("stream closed (%s)" % (self.error or "EOF"))
            data = self._recv(deadline)
            if not data:
                raise Closed("stream closed (%s)" % (self.error or "EOF"))
            self._body(data)
        return self.items.popleft()

    def next_event(self, timeout=5.0):
        """The next event (comments and retry lines are skipped but recorded)."""
        deadline = time.monotonic() + timeout
        while True:
            kind, val = self.next_item(max(0.0, deadline - time.monotonic()) or 1e-6)
            if kind == "event":
                return val

    def next_comment(self, timeout=5.0):
        """The next comment (events arriving meanwhile are kept for next_event)."""
        deadline = time.monotonic() + timeout
        kept = []
        try:
            while True:
                kind, val = self.next_item(max(0.0, deadline - time.monotonic()) or 1e-6)
                if kind == "comment":
                    return val
                kept.append((kind, val))
        finally:
            self.items.extendleft(reversed(kept))

    def events_until(self, n, timeout=5.0):
        """Exactly the next n events, all within `timeout` seconds in total."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.next_event(max(0.0, deadline - time.monotonic()) or 1e-6))
            except (Timeout, Closed) as e:
                raise type(e)("%s after %d of %d events: %r" % (
                    e, len(got), n, [(g.id, g.event) for g in got][-5:]))
        return got

    def expect_silence(self, seconds):
        """Asserts no event arrives for `seconds` (comments are fine). Returns nothing."""
        try:
            ev = self.next_event(seconds)
        except Timeout:
            return
        raise AssertionError("unexpected event: %r" % (ev,))

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection within `timeout` (data meanwhile is
        parsed and kept); False otherwise."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                data = self._recv(deadline)
            except Timeout:
                return False
            if not data:
                return True
            self._absorb(data)
        return True

    def drain_events(self):
        """Every event already parsed and not yet taken."""
        evs = [v for k, v in self.items if k == "event"]
        self.items.clear()
        return evs

"""Front-door tests (issue 14): raw HTTP/1.1 on plain TCP and on TLS against the real broker.

The server harness is tests/blackbox/conftest.py (start_broker, Broker, create_user, the stderr of
every running server attached to a failing test's report). It is loaded from there through
sys.path under the module name `blackbox_harness`, so that this file can keep the name conftest.

What this file adds:
  * a throwaway self-signed certificate (EC P-256, SAN IP:127.0.0.1 and DNS:localhost) made with
    the openssl command line, once per session;
  * start_door("plain" | "tls", ...): a broker on plain HTTP, or on HTTPS with
    --secure=true --auto_cert=false --key_path --cert_path --http_port=0;
  * Conn: one raw client connection (plain or TLS), requests written byte for byte, answers read
    one by one with a deadline (Content-Length, chunked, or up to the close), the server's close
    seen as recv() == b"" (a reset or a TLS EOF counts as a close too, and is noted);
  * SSEReader: the stream of a GET /sse answered on a Conn, parsed with sse_client.SSEParser.

Every read is bounded in time; every loop is bounded in count and time.
"""

import importlib.util
import inspect
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BLACKBOX = os.path.abspath(os.path.join(HERE, "..", "blackbox"))
if BLACKBOX not in sys.path:
    sys.path.insert(0, BLACKBOX)


def _load_harness():
    if "blackbox_harness" in sys.modules:
        return sys.modules["blackbox_harness"]
    spec = importlib.util.spec_from_file_location("blackbox_harness",
                                                  os.path.join(BLACKBOX, "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["blackbox_harness"] = mod
    spec.loader.exec_module(mod)
    return mod


bb = _load_harness()
from sse_client import ChunkedDecoder, SSEParser  # noqa: E402  (tests/blackbox on sys.path)

# The harness' session clean-up and its failure-report hook, registered here too.
_remove_workdirs = bb._remove_workdirs
pytest_runtest_makereport = bb.pytest_runtest_makereport

start_broker = bb.start_broker
bearer_header = bb.bearer_header
uniq = bb.uniq
HTTP_TIMEOUT = bb.HTTP_TIMEOUT  # 10 s
BROKER_BIN = bb.BROKER_BIN

MODES = ["plain", "tls"]
CLOSE_WAIT = 5.0  # seconds the server has to close after an answer that says Connection: close


class Timeout(AssertionError):
    pass


# ---------------------------------------------------------------- certificate

def make_cert(folder, days=2):
    """A self-signed EC certificate for 127.0.0.1/localhost; returns (key_path, cert_path)."""
    key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", "/CN=localhost",
           "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if r.returncode != 0:
        pytest.fail("openssl could not make a test certificate: %s" % r.stdout.decode(errors="replace"))
    return key, cert


@pytest.fixture(scope="session")
def tls_files():
    folder = tempfile.mkdtemp(prefix="broker-door-cert-")
    try:
        yield make_cert(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the tests check HTTP framing, not the certificate
    return ctx


# ---------------------------------------------------------------- the server

def tls_args(tls_files):
    key, cert = tls_files
    return ["--secure=true", "--auto_cert=false", "--key_path=" + key, "--cert_path=" + cert,
            "--http_port=0"]


def _own_tls_kw():
    """The harness may have a TLS mode of its own (BROKER_TEST_TLS=1): these tests choose plain
    or TLS themselves, with their own certificate, so they turn it off where it exists."""
    try:
        return {"tls": False} if "tls" in inspect.signature(start_broker).parameters else {}
    except (TypeError, ValueError):
        return {}


def start_door(mode, tls_files=None, extra_args=(), tag="door"):
    """A started broker; plain HTTP or HTTPS. Attributes added: mode, tls, host, port.
    For TLS its requests-based helpers (create_user, login, post, get) trust the test certificate."""
    bb.needs_own_server("the front-door tests start their own plain and TLS servers")
    if mode == "plain":
        b = start_broker(list(extra_args), tag=tag, **_own_tls_kw())
        b.mode, b.tls = "plain", False
    else:
        assert tls_files is not None
        last = ""
        b = None
        for _attempt in range(3):  # a probed free port can be taken before the server binds it
            b = start_broker(tls_args(tls_files) + list(extra_args), wait=False, tag=tag,
                             **_own_tls_kw())
            b.base_url = b.base_url.replace("http://", "https://", 1)
            _trust(b, tls_files[1])
            if bb.wait_healthy(b):
                break
            b.stop()
            last = b.stderr_tail()
            if "in use" not in last.lower():
                pytest.fail("TLS broker did not answer GET /healthz over HTTPS within %.0f s "
                            "(exit %r)\nstderr:\n%s" % (bb.STARTUP_TIMEOUT, b.proc.returncode, last))
        else:
            pytest.fail("TLS broker did not start (port in use 3 times)\nstderr:\n%s" % last)
        b.mode, b.tls = "tls", True
    host_port = b.base_url.split("://", 1)[1]
    b.host, b.port = host_port.rsplit(":", 1)[0], int(host_port.rsplit(":", 1)[1])
    return b


def _trust(b, cafile):
    orig = b.request

    def request(method, path, **kw):
        kw.setdefault("verify", cafile)
        return orig(method, path, **kw)

    b.request = request


def stop_door(b):
    """Stops it; fails the test when it had crashed or does not exit cleanly."""
    crashed = not b.alive()
    code = b.stop()
    if crashed:
        pytest.fail("broker exited during the test (exit %r); stderr:\n%s"
                    % (b.proc.returncode, b.stderr_tail()))
    bb.check_clean_exit(b, code)


@pytest.fixture(scope="module", params=MODES)
def door(request, tls_files):
    """One broker per module and mode (plain HTTP, then HTTPS)."""
    b = start_door(request.param, tls_files, tag="door-" + request.param)
    try:
        yield b
    finally:
        stop_door(b)


@pytest.fixture(scope="module")
def door_user(door):
    """A user of the module's broker and a JWT of it."""
    u = door.create_user()
    u.jwt = door.login(u.username, u.password)
    return u


# ---------------------------------------------------------------- raw HTTP

def request_bytes(method, path, headers=(), body=b"", host="127.0.0.1"):
    """The request exactly as given: headers is a list of (name, value); a Host header is added
    first unless one is given. No Content-Length is added: the tests choose the framing."""
    hdrs = list(headers)
    if not any(k.lower() == "host" for k, _ in hdrs):
        hdrs.insert(0, ("Host", host))
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hdrs) + "\r\n"
    return head.encode("latin-1") + body


def json_request(method, path, obj=None, headers=()):
    body = json.dumps(obj).encode() if obj is not None else b""
    hdrs = list(headers)
    if obj is not None:
        hdrs += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return request_bytes(method, path, hdrs, body)


def chunked(body, sizes=(5,)):
    """body in chunks of the given sizes (the last size repeats), then the last chunk."""
    out, i, k = b"", 0, 0
    while i < len(body):
        n = sizes[min(k, len(sizes) - 1)]
        part = body[i:i + n]
        out += b"%x\r\n%s\r\n" % (len(part), part)
        i, k = i + n, k + 1
    return out + b"0\r\n\r\n"


class Response:
    def __init__(self, status, reason, header_list, head_raw):
        self.status = status
        self.reason = reason
        self.header_list = header_list  # [(name, value)] as received
        self.head_raw = head_raw
        self.headers = {}
        for k, v in header_list:
            k = k.lower()
            self.headers[k] = self.headers[k] + ", " + v if k in self.headers else v
        self.body = b""

    def header(self, name, default=""):
        return self.headers.get(name.lower(), default)

    def says_close(self):
        return "close" in [t.strip().lower() for t in self.header("connection").split(",")]

    def is_stream(self):
        return self.header("content-type").lower().startswith("text/event-stream")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise AssertionError("body is not JSON: %s" % self.describe())

    def describe(self):
        return "%r + body %r" % (self.head_raw[:600], self.body[:400])

    def __repr__(self):
        return "<Response %s %s>" % (self.status, self.describe())


class Conn:
    """One client connection, plain or TLS (to door.host:door.port)."""

    def __init__(self, door, timeout=HTTP_TIMEOUT, source=None):
        self.door = door
        self.buf = b""
        self.eof = False
        self.error = None  # the reset or TLS error that ended the connection, if any
        raw = socket.create_connection((door.host, door.port), timeout=timeout,
                                       source_address=(source, 0) if source else None)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the TIME_WAIT this port may leave must not stop a later server's bind on it
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if door.tls:
            try:
                self.sock = client_context().wrap_socket(raw)  # handshake within `timeout`
            except BaseException:
                raw.close()
                raise
        else:
            self.sock = raw

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def _recv(self, deadline):
        """One recv with the time left: bytes, or b"" at EOF / reset / TLS EOF. Raises Timeout."""
        if self.eof:
            return b""
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout("deadline passed")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout("nothing within the deadline")
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            self.error, data = e, b""
        if not data:
            self.eof = True
        return data

    def _fill(self, deadline, what):
        data = self._recv(deadline)
        if not data:
            raise AssertionError("connection closed (%s) %s; bytes so far %r"
                                 % (self.error or "EOF", what, self.buf[:300]))
        self.buf += data

    def read_head(self, timeout=HTTP_TIMEOUT):
        """The next answer's status line and headers (its body stays in the buffer)."""
        deadline = time.monotonic() + timeout
        while getattr(self, "_after_chunked", False) and len(self.buf) < 2:
            self._fill(deadline, "after a chunked body")
        if getattr(self, "_after_chunked", False):
            self._after_chunked = False
            if self.buf.startswith(b"\r\n"):
                self.buf = self.buf[2:]
        while b"\r\n\r\n" not in self.buf:
            try:
                self._fill(deadline, "before a complete answer head")
            except Timeout:
                raise Timeout("no complete answer head within %.1f s; bytes so far %r"
                              % (timeout, self.buf[:300]))
        i = self.buf.index(b"\r\n\r\n")
        raw, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise AssertionError("not an HTTP/1.x status line: %r" % lines[0])
        hl = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                hl.append((k.strip(), v.strip()))
        return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", hl, raw)

    def read_response(self, timeout=HTTP_TIMEOUT, head_method="GET"):
        """The next whole answer. An event stream is returned after its head (read it with
        SSEReader). A body with neither Content-Length nor chunked is read up to the close."""
        deadline = time.monotonic() + timeout
        r = self.read_head(timeout)
        if r.status < 200 or r.status in (204, 304) or head_method == "HEAD" or r.is_stream():
            return r
        te = r.header("transfer-encoding").lower()
        try:
            if "chunked" in te:
                dec, out = ChunkedDecoder(), b""
                out += dec.feed(self.buf)
                self.buf = b""
                while not dec.done:
                    data = self._recv(deadline)
                    if not data:
                        raise AssertionError("connection closed inside a chunked body: %r" % out[:300])
                    out += dec.feed(data)
                # The decoder stops after "0\r\n": the CRLF ending the (empty) trailer section
                # may still be in its buffer or not have arrived yet; read_head drops it.
                r.body, self.buf = out, dec.buf
                self._after_chunked = True
            elif r.header("content-length"):
                n = int(r.header("content-length").split(",")[0])
                while len(self.buf) < n:
                    self._fill(deadline, "inside a body of Content-Length %d" % n)
                r.body, self.buf = self.buf[:n], self.buf[n:]
            else:
                while not self.eof:
                    data = self._recv(deadline)
                    self.buf += data
                r.body, self.buf = self.buf, b""
        except Timeout:
            raise Timeout("answer body not complete within %.1f s: %s" % (timeout, r.describe()))
        return r

    def wait_closed(self, timeout=CLOSE_WAIT):
        """True when the server closes within `timeout` (bytes arriving meanwhile are kept in
        self.buf); False when the connection is still open at the deadline."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self.buf += self._recv(deadline)
            except Timeout:
                return False
        return True

    def exchange(self, data, timeout=HTTP_TIMEOUT):
        self.send(data)
        return self.read_response(timeout)


class SSEReader:
    """The body of a GET /sse answered on a Conn (after conn.read_response returned its head)."""

    def __init__(self, conn, resp):
        self.conn = conn
        self.parser = SSEParser()
        self.dec = ChunkedDecoder() if "chunked" in resp.header("transfer-encoding").lower() else None
        self.items = []
        self.raw = b""
        self._feed(conn.buf)
        conn.buf = b""

    def _feed(self, data):
        if self.dec is not None:
            data = self.dec.feed(data)
        self.raw += data
        self.items.extend(self.parser.feed(data))

    def next_item(self, timeout=HTTP_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not self.items:
            data = self.conn._recv(deadline)
            if not data:
                raise AssertionError("stream closed (%s); stream bytes so far %r"
                                     % (self.conn.error or "EOF", self.raw[-300:]))
            self._feed(data)
        return self.items.pop(0)

    def next_event(self, timeout=HTTP_TIMEOUT):
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            try:
                kind, val = self.next_item(max(0.001, deadline - time.monotonic()))
            except Timeout:
                raise Timeout("no event within %.1f s; stream bytes so far %r"
                              % (timeout, self.raw[-300:]))
            if kind == "event":
                return val
        raise AssertionError("no event among 10000 stream items")


def assert_json_error(r, status):
    """The answer is `status` with a JSON {"error": "<words>", "request_id": "<id>"} body."""
    assert r.status == status, "expected %d: %s" % (status, r.describe())
    ctype = r.header("content-type").lower()
    assert ctype.startswith("application/json"), "Content-Type %r is not JSON: %s" % (ctype, r.describe())
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), \
        "error body must be {\"error\": \"...\"}: %s" % r.describe()
    assert isinstance(body.get("request_id"), str) and body["request_id"], \
        "error body has no request_id: %s" % r.describe()
    return body


def assert_ok_json(r):
    assert r.status == 200, "expected 200: %s" % r.describe()
    assert r.header("content-type").lower().startswith("application/json"), r.describe()
    return r.json()

"""HTTPS on the broker's own port (issue 14): --secure=true --auto_cert=false --key_path --cert_path,
--http_port, certificate reload, start-up refusal, bad TLS input, protocol versions, resumption.

Every server is started here with its own copy of a test CA's certificate (tests/blackbox/conftest.py
makes the CA with the openssl command line); every client verifies against that CA (127.0.0.1 is
in the certificate's IP subjectAltName). Every wait is bounded; only 127.0.0.0/8 is contacted.

Choices where the contract is silent:
  * a reload that is refused may be logged naming either file of the pair when the two do not
    match (cert or key); a certificate file that cannot be parsed must be named itself;
  * garbage instead of a ClientHello may be answered (a TLS alert, a plain 400) before the close;
    only the close is required, within the 10 s head deadline (+2.5 s slack);
  * a redirect from --http_port names the host of the Host header and --port (the TLS port).
"""

import asyncio
import hashlib
import json
import os
import resource
import signal
import socket
import ssl
import threading
import time

import pytest

from conftest import (SSEClient, assert_ok, bearer_header, cert_sha256, copy_pair,
                      free_port, replace_file, served_cert_sha256, start_broker, tls_ca, wait_for)

HEAD_DEADLINE = 10.0  # seconds the server gives a request head (and a handshake), contract
CLOSE_SLACK = 2.5  # scheduling slack on top of it
IO_TIMEOUT = 5.0


# ---------------------------------------------------------------- helpers

def port_of(b):
    return int(b.base_url.rsplit(":", 1)[1])


def client_ctx(min_version=None, max_version=None, seclevel0=False):
    """Verifies against the test CA, checks the name (127.0.0.1); optional version bounds."""
    ctx = ssl.create_default_context(cafile=tls_ca().ca_cert)
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if seclevel0:  # TLS 1.0/1.1 need SHA-1 in the handshake: OpenSSL 3 allows it at level 0 only
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def plain_connect(port, timeout=IO_TIMEOUT):
    """A plain TCP connection (never wrapped, whatever BROKER_TEST_TLS says)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s


def tls_connect(b, ctx=None, timeout=IO_TIMEOUT, session=None):
    s = plain_connect(port_of(b), timeout)
    try:
        return (ctx or client_ctx()).wrap_socket(s, server_hostname="127.0.0.1", session=session)
    except BaseException:
        s.close()
        raise


def recv_or_closed(sock, deadline):
    """One recv with the time left: bytes, b"" when the peer closed (EOF, reset, TLS failure);
    raises socket.timeout at the deadline."""
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    try:
        return sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def wait_closed(sock, timeout):
    """(closed within timeout?, bytes received meanwhile, seconds until the close)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    data = b""
    while True:
        try:
            chunk = recv_or_closed(sock, deadline)
        except socket.timeout:
            return False, data, time.monotonic() - t0
        if not chunk:
            return True, data, time.monotonic() - t0
        data += chunk


def read_response(sock, timeout=IO_TIMEOUT):
    """(status, {lower-case header: value}, body) of one answer (Content-Length or until close)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        try:
            chunk = recv_or_closed(sock, deadline)
        except socket.timeout:
            raise AssertionError("no whole response head within %.0f s: %r" % (timeout, buf[:300]))
        if not chunk:
            raise AssertionError("closed before a whole response head: %r" % buf[:300])
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0].startswith("HTTP/1.") and parts[1].isdigit(), "not a status line: %r" % lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    length = headers.get("content-length")
    while length is None or len(body) < int(length):
        try:
            chunk = recv_or_closed(sock, deadline)
        except socket.timeout:
            if length is None:
                break
            raise AssertionError("body shorter than Content-Length %s: %r" % (length, body[:300]))
        if not chunk:
            break
        body += chunk
    if length is not None:
        body = body[:int(length)]
    return int(parts[1]), headers, body


def get(sock, path, host, extra=b""):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (path.encode(), host.encode(), extra))
    return read_response(sock)


def json_of(status, headers, body):
    assert headers.get("content-type", "").lower().startswith("application/json"), (status, headers, body)
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError("body is not JSON: %d %r %r" % (status, headers, body[:300]))


def fingerprint_or_error(b):
    try:
        return served_cert_sha256(b.base_url, timeout=3)
    except (OSError, ssl.SSLError) as e:
        return "error: %r" % e


def new_stderr(b, mark):
    return b.stderr_text()[mark:]


def names_path(line, path):
    """Whether a log line names `path` (as given, or JSON-escaped with \\/)."""
    return path in line or path.replace("/", "\\/") in line


def stop_and_check(b):
    """SIGTERM now; the exit must be 0 (under ASan: no leak). The fixture then leaves it be."""
    assert b.alive(), "the broker exited before SIGTERM (exit %r); stderr:\n%s" % (
        b.proc.returncode, b.stderr_tail())
    code = b.stop()
    assert code == 0, "exit %r after SIGTERM; stderr:\n%s" % (code, b.stderr_tail())


def user_and_jwt(b):
    u = b.create_user()
    return u, b.login(u.username, u.password)


def insert(b, jwt, event, data):
    return assert_ok(b.post("/insert", {"event": event, "data": data}, headers=bearer_header(jwt)))["id"]


def client_hello_bytes():
    """The bytes of a real ClientHello (what a TLS client sends first), made in memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:20]
    return hello


# ---------------------------------------------------------------- basics

def test_https_serves_the_api_and_streams(tls_server):
    ca = tls_ca()
    b = tls_server()
    assert b.base_url.startswith("https://")
    assert assert_ok(b.get("/healthz"))["status"] == "ok"
    with tls_connect(b) as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3"), s.version()
        assert hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest() == cert_sha256(ca.server_cert)
        sans = s.getpeercert().get("subjectAltName", ())
        assert ("IP Address", "127.0.0.1") in sans, sans
        # keep-alive over TLS: two requests on one connection
        host = "127.0.0.1:%d" % port_of(b)
        assert get(s, "/healthz", host)[0] == 200
        assert get(s, "/healthz", host)[0] == 200
    u, jwt = user_and_jwt(b)
    with SSEClient.open(b.base_url, "/sse", headers=bearer_header(jwt)) as c:
        assert c.read_head(IO_TIMEOUT) == 200, c.head_raw
        ids = [insert(b, jwt, "tls", {"i": i}) for i in range(5)]
        assert [e.id for e in c.events_until(5, IO_TIMEOUT)] == ids
    # a client that does not trust the test CA is refused by its own verification: the server
    # really presents the test CA's certificate, nothing else.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(b, ssl.create_default_context()).close()


# ---------------------------------------------------------------- reload

@pytest.mark.parametrize("how", ["sighup", "file_watch"])
def test_certificate_swap_new_connections_get_it_open_ones_continue(tls_server, how):
    ca = tls_ca()
    b = tls_server()
    old_fp = cert_sha256(ca.server_cert)
    new_cert, new_key = ca.second_pair()
    new_fp = cert_sha256(new_cert)
    assert old_fp != new_fp
    assert served_cert_sha256(b.base_url) == old_fp
    u, jwt = user_and_jwt(b)
    host = "127.0.0.1:%d" % port_of(b)
    stream = SSEClient.open(b.base_url, "/sse", headers=bearer_header(jwt))
    keep = tls_connect(b)  # a keep-alive connection with a request before and after the swap
    try:
        assert stream.read_head(IO_TIMEOUT) == 200, stream.head_raw
        assert get(keep, "/healthz", host)[0] == 200
        before = [insert(b, jwt, "before", i) for i in range(3)]
        assert [e.id for e in stream.events_until(3, IO_TIMEOUT)] == before
        # New files written at least 1.1 s after the first ones (a watcher comparing mtimes in
        # whole seconds sees them), renamed over the old ones.
        time.sleep(max(0.0, 1.1 - (time.time() - os.stat(b.tls_cert).st_mtime)))
        replace_file(b.tls_cert, new_cert)
        replace_file(b.tls_key, new_key)
        swapped = time.monotonic()
        if how == "sighup":
            b.proc.send_signal(signal.SIGHUP)
        fp = wait_for(lambda: fingerprint_or_error(b) == new_fp, 5.0, 0.2)
        assert b.alive(), "the broker exited after the %s (exit %r)" % (how, b.proc.returncode)
        assert fp, "%.1f s after the swap (%s) new connections still get %s (old %s, new %s)" % (
            time.monotonic() - swapped, how, fingerprint_or_error(b)[:16], old_fp[:16], new_fp[:16])
        # The stream opened before the swap goes on, with its old certificate.
        assert hashlib.sha256(stream.sock.getpeercert(binary_form=True)).hexdigest() == old_fp
        after = [insert(b, jwt, "after", i) for i in range(3)]
        assert [e.id for e in stream.events_until(3, IO_TIMEOUT)] == after, \
            "the SSE stream opened before the certificate swap did not get the new events"
        assert get(keep, "/healthz", host)[0] == 200, "the keep-alive connection did not survive"
        # requests, verifying against the CA, talks to the new certificate (same CA) too.
        assert_ok(b.get("/healthz"))
    finally:
        stream.close()
        keep.close()


BAD_PAIRS = {
    # name: (what replaces what, which paths a log line may name)
    "mismatched_key": "key",
    "garbage_cert": "cert",
}


@pytest.mark.parametrize("kind", sorted(BAD_PAIRS))
def test_bad_new_pair_is_refused_and_the_old_one_kept(tls_server, kind):
    ca = tls_ca()
    b = tls_server()
    old_fp = cert_sha256(ca.server_cert)
    time.sleep(max(0.0, 1.1 - (time.time() - os.stat(b.tls_cert).st_mtime)))
    mark = len(b.stderr_text())
    if kind == "mismatched_key":
        replace_file(b.tls_key, ca.mismatched_key())
        named = (b.tls_key, b.tls_cert)
    else:
        replace_file(b.tls_cert, content=b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                                         b"-----END CERTIFICATE-----\n")
        named = (b.tls_cert,)
    b.proc.send_signal(signal.SIGHUP)
    lines = wait_for(lambda: [l for l in new_stderr(b, mark).splitlines()
                              if any(names_path(l, p) for p in named)],
                     5.0, 0.2)
    assert b.alive(), "the broker exited on a bad new pair (exit %r):\n%s" % (
        b.proc.returncode, b.stderr_tail())
    assert lines, "no log line naming %s within 5 s of the bad pair (%s); new stderr:\n%s" % (
        " or ".join(named), kind, new_stderr(b, mark)[-3000:])
    for _ in range(5):  # the old pair stays in use (also after the watcher's next looks)
        assert fingerprint_or_error(b) == old_fp, "after a refused reload the server serves %s" % (
            fingerprint_or_error(b))
        time.sleep(0.3)
    assert_ok(b.get("/healthz"))
    # A good pair later is taken: a refused reload does not stop reloading.
    new_cert, new_key = ca.second_pair()
    replace_file(b.tls_cert, new_cert)
    replace_file(b.tls_key, new_key)
    b.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: fingerprint_or_error(b) == cert_sha256(new_cert), 5.0, 0.2), \
        "a good pair after a refused one was not loaded within 5 s: %s" % fingerprint_or_error(b)


# ---------------------------------------------------------------- start-up refusal

def _refusal_cases():
    cases = ["missing_cert", "missing_key", "cert_is_a_directory", "garbage_cert", "garbage_key",
             "mismatched_key", "expired_cert"]
    if os.geteuid() != 0:  # root reads a chmod 000 file anyway: the directory case stands in
        cases.append("unreadable_cert")
    return cases


@pytest.mark.parametrize("case", _refusal_cases())
def test_start_refused_naming_the_file(tmp_path, case):
    ca = tls_ca()
    cert, key = copy_pair(str(tmp_path), ca.server_cert, ca.server_key)
    named = None
    if case == "missing_cert":
        cert = named = str(tmp_path / "no-such-chain.pem")
    elif case == "missing_key":
        key = named = str(tmp_path / "no-such-key.pem")
    elif case == "cert_is_a_directory":
        # "Unreadable": the tests run as root, who reads any file whatever its mode, so a
        # directory given as the certificate file stands in for a file that cannot be read.
        cert = named = str(tmp_path / "a-directory.pem")
        os.mkdir(cert)
    elif case == "unreadable_cert":
        os.chmod(cert, 0)
        named = cert
    elif case == "garbage_cert":
        with open(cert, "wb") as f:
            f.write(os.urandom(64) + b"\n-----BEGIN CERTIFICATE-----\ngarbage\n")
        named = cert
    elif case == "garbage_key":
        with open(key, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n")
        named = key
    elif case == "mismatched_key":
        shutil_copy(ca.mismatched_key(), key)
        named = (key, cert)  # the pair does not match: either file may be named
    elif case == "expired_cert":
        cert, key = copy_pair(str(tmp_path), *ca.expired_pair(), tag="expired")
        named = cert
    b = start_broker(tls=True, cert=cert, key=key, wait=False, tag="refuse-" + case)
    try:
        try:
            code = b.proc.wait(15)
        except Exception:
            code = None
        healthy = code is None and b.healthy()
        assert code is not None, "still running 15 s after a start with %s (serving: %s)" % (case, healthy)
        err = b.stderr_text()
        assert code > 0, "exit %r (a signal?) with %s; stderr:\n%s" % (code, case, err[-3000:])
        names = named if isinstance(named, tuple) else (named,)
        assert any(names_path(err, n) for n in names), "stderr does not name %s (%s):\n%s" % (
            " or ".join(names), case, err[-3000:])
    finally:
        b.stop()


def shutil_copy(src, dst):
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read())


# ---------------------------------------------------------------- bad TLS input

GARBAGE = {
    "binary": b"\x00\xff\xfe\x01\x02garbage\r\n\r\n" * 8,
    "bad_tls_record": b"\x16\x03\x01\x00\x10" + b"\xff" * 16 + b"\x16\x03\x01\x00\x00",
    "sslv2_hello": bytes.fromhex("802b0103010012000000100000030000010700c0030080010080060040040080020080")
                   + bytes(range(16)),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_instead_of_client_hello_is_closed(tls_server, name):
    b = tls_server()
    with plain_connect(port_of(b)) as s:
        s.sendall(GARBAGE[name])
        closed, data, took = wait_closed(s, HEAD_DEADLINE + CLOSE_SLACK)
    assert closed, "garbage %s: the connection is still open after %.1f s (received %r)" % (
        name, took, data[:200])
    assert not data.startswith(b"HTTP/1.1 2"), data[:200]
    assert_ok(b.get("/healthz"))


def test_stalled_handshakes_are_closed_and_others_served(tls_server):
    b = tls_server()
    hello = client_hello_bytes()
    stalls = {"nothing": b"", "half_client_hello": hello[:len(hello) // 2], "whole_client_hello": hello}
    results = {}

    def watch(name, payload):
        t0 = time.monotonic()
        try:
            with plain_connect(port_of(b)) as s:
                if payload:
                    s.sendall(payload)
                closed, data, took = wait_closed(s, HEAD_DEADLINE + CLOSE_SLACK + 1)
                results[name] = (closed, time.monotonic() - t0, data[:50])
        except Exception as e:  # pragma: no cover - reported below
            results[name] = (False, time.monotonic() - t0, repr(e))

    threads = [threading.Thread(target=watch, args=kv, daemon=True) for kv in stalls.items()]
    for t in threads:
        t.start()
    slow = []
    deadline = time.monotonic() + HEAD_DEADLINE + CLOSE_SLACK + 2
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        t0 = time.monotonic()
        assert_ok(b.get("/healthz", timeout=5))
        took = time.monotonic() - t0
        if took > 2:
            slow.append(round(took, 2))
        time.sleep(0.5)
    for t in threads:
        t.join(2)
    assert not slow, "/healthz took %r s while handshakes were stalled" % slow
    late = {k: v for k, v in results.items() if not v[0] or v[1] > HEAD_DEADLINE + CLOSE_SLACK}
    assert len(results) == len(stalls) and not late, \
        "stalled handshakes not closed within %.1f s: %r (all: %r)" % (HEAD_DEADLINE + CLOSE_SLACK,
                                                                      late, results)
    assert_ok(b.get("/healthz"))


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_plain_http_on_the_tls_port_gets_400_saying_https(tls_server, method):
    b = tls_server()
    port = port_of(b)
    body = b'{"username":"x","password":"y"}' if method == "POST" else b""
    path = "/login" if method == "POST" else "/healthz"
    req = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (method.encode(), path.encode(), port)
    if body:
        req += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    with plain_connect(port) as s:
        s.sendall(req + b"\r\n" + body)
        status, headers, raw = read_response(s)
        closed, extra, _ = wait_closed(s, IO_TIMEOUT)
    assert status == 400, (status, headers, raw)
    doc = json_of(status, headers, raw)
    assert isinstance(doc.get("error"), str) and "https" in doc["error"].lower(), doc
    assert closed, "the connection stayed open after the 400 (then got %r)" % extra[:200]
    assert_ok(b.get("/healthz"))


def test_1000_handshakes_at_once_then_clean_exit(tls_server):
    n = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
    b = tls_server()
    port = port_of(b)
    ctx = client_ctx()
    probe_times, probe_errors = [], []
    stop = threading.Event()

    def probe():  # another client, all along
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                assert_ok(b.get("/healthz", timeout=10))
                probe_times.append(time.monotonic() - t0)
            except Exception as e:
                probe_errors.append(repr(e))
            stop.wait(0.2)

    async def storm():
        async def one():
            try:
                return await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), 60)
            except Exception as e:
                return e
        results = await asyncio.gather(*[one() for _ in range(n)])
        ok = [r for r in results if isinstance(r, tuple)]
        errors = [r for r in results if not isinstance(r, tuple)]
        # all held open (handshake done) while another client asks /healthz
        def timed_healthz():
            t0 = time.monotonic()
            return b.get("/healthz", timeout=10).status_code, time.monotonic() - t0
        held_probe = await asyncio.get_running_loop().run_in_executor(None, timed_healthz)
        for i, (_, w) in enumerate(ok):
            if i % 2:
                w.transport.abort()  # a reset
            else:
                w.close()  # close_notify, then FIN
        await asyncio.sleep(0.5)
        return ok, errors, held_probe

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    try:
        ok, errors, held_probe = asyncio.run(asyncio.wait_for(storm(), 120))
    finally:
        stop.set()
        t.join(15)
    assert b.alive(), "the broker died during 1,000 handshakes (exit %r)" % b.proc.returncode
    assert held_probe[0] == 200 and held_probe[1] < 5, \
        "/healthz with 1,000 TLS connections open: %r" % (held_probe,)
    # During the storm the door does ~1,000 handshakes' worth of crypto: another client may
    # wait its turn (seconds under ASan on 2 CPUs), but must be answered (10 s per request).
    assert not probe_errors and probe_times, \
        "/healthz during the handshakes: errors %r, slowest %.1f s" % (
            probe_errors[:3], max(probe_times or [0]))
    kinds = {}
    for e in errors:
        k = "%s: %s" % (type(e).__name__, str(e)[:80])
        kinds[k] = kinds.get(k, 0) + 1
    assert len(ok) == n, "%d of %d handshakes failed: %r" % (len(errors), n, kinds)
    assert_ok(b.get("/healthz"))
    stop_and_check(b)


# ---------------------------------------------------------------- versions and resumption

def _control_server(version):
    """A Python TLS server speaking only `version` on a free loopback port, for one connection:
    proves this machine's client can offer that version at all. Returns (port, thread, result)."""
    ca = tls_ca()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(ca.server_cert, ca.server_key)
    sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    sctx.minimum_version = sctx.maximum_version = version
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(5)
    result = {}

    def serve():
        try:
            conn, _ = lsock.accept()
            conn.settimeout(5)
            with sctx.wrap_socket(conn, server_side=True) as c:
                result["version"] = c.version()
        except Exception as e:
            result["error"] = repr(e)
        finally:
            lsock.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock.getsockname()[1], t, result


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_refused(tls_server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(v, v, seclevel0=True)
    port, t, result = _control_server(v)
    try:
        with plain_connect(port) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as c:
                control = c.version()
    except (OSError, ssl.SSLError) as e:
        control = "error %r" % e
    t.join(5)
    if result.get("version") is None:
        pytest.skip("this machine's OpenSSL cannot speak %s at all (control server: %r, client: %s): "
                    "a refusal would prove nothing" % (version, result, control))
    b = tls_server()
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as e:
        s = tls_connect(b, ctx)
        got = s.version()
        s.close()
        pytest.fail("%s accepted (negotiated %s)" % (version, got))
    assert "certificate" not in str(e.value).lower(), e.value
    assert_ok(b.get("/healthz"))


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_modern_tls_versions_accepted(tls_server, version):
    v = getattr(ssl.TLSVersion, version)
    b = tls_server()
    with tls_connect(b, client_ctx(v, v)) as s:
        assert s.version() == version.replace("_", "."), s.version()
        assert get(s, "/healthz", "127.0.0.1:%d" % port_of(b))[0] == 200


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_session_resumption(tls_server, version):
    v = getattr(ssl.TLSVersion, version)
    b = tls_server()
    ctx = client_ctx(v, v)
    host = "127.0.0.1:%d" % port_of(b)
    with tls_connect(b, ctx) as s1:
        # a request first: TLS 1.3 tickets come after the handshake, with the first data
        assert get(s1, "/healthz", host)[0] == 200
        session = s1.session
        assert not s1.session_reused
    assert session is not None, "no session after a full handshake"
    if version == "TLSv1_3":
        assert session.has_ticket, "the server sent no TLS 1.3 session ticket"
    reused = []
    for _ in range(2):
        with tls_connect(b, ctx, session=session) as s2:
            assert get(s2, "/healthz", host)[0] == 200
            reused.append(s2.session_reused)
            session = s2.session or session
    assert all(reused), "%s session not resumed (reused per connection: %r)" % (version, reused)


# ---------------------------------------------------------------- --http_port

def test_http_port_redirects_to_https_and_answers_acme_404(tls_server):
    http_port = free_port()
    b = tls_server(http_port=http_port)
    port = port_of(b)
    cases = [
        ("127.0.0.1:%d" % http_port, "GET", "/x?y=1", "https://127.0.0.1:%d/x?y=1" % port),
        ("127.0.0.1", "GET", "/x?y=1", "https://127.0.0.1:%d/x?y=1" % port),
        ("localhost:%d" % http_port, "GET", "/a/b?c=d&e=%2F", "https://localhost:%d/a/b?c=d&e=%%2F" % port),
        ("127.0.0.1:%d" % http_port, "GET", "/healthz", "https://127.0.0.1:%d/healthz" % port),
        ("127.0.0.1:%d" % http_port, "POST", "/insert", "https://127.0.0.1:%d/insert" % port),
    ]
    for host, method, path, want in cases:
        with plain_connect(http_port) as s:
            body = b'{"event":"e","data":1}' if method == "POST" else b""
            s.sendall(b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n%s" % (
                method.encode(), path.encode(), host.encode(),
                b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) if body else b"",
                body))
            status, headers, raw = read_response(s)
        assert status == 308, "%s %s (Host %s) on --http_port answered %d %r %r" % (
            method, path, host, status, headers, raw[:200])
        assert headers.get("location") == want, "%s %s (Host %s): Location %r, want %r" % (
            method, path, host, headers.get("location"), want)
    # the place it points to is served
    with tls_connect(b) as s:
        assert get(s, "/healthz", "127.0.0.1:%d" % port)[0] == 200
    with plain_connect(http_port) as s:
        status, headers, raw = get(s, "/.well-known/acme-challenge/unknown-token-" + os.urandom(4).hex(),
                                   "127.0.0.1:%d" % http_port)
    assert status == 404, (status, headers, raw[:200])
    doc = json_of(status, headers, raw)
    assert isinstance(doc.get("error"), str) and doc["error"].strip(), doc


def test_1000_pipelined_inserts_over_tls(tls_server):
    """1,000 inserts sent back to back on one TLS connection while their answers are read, in
    one thread (a TLS socket must not be written and read from two threads at once): every
    insert is answered 200, in order, with consecutive ids."""
    import selectors
    b = tls_server()
    _, jwt = user_and_jwt(b)
    n = 1000
    out = b"".join(
        b"POST /insert HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (jwt.encode(), len(body), body)
        for body in (json.dumps({"event": "burst", "data": {"i": i}}).encode() for i in range(n)))
    s = tls_connect(b)
    buf = b""
    try:
        s.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
        deadline = time.monotonic() + 30
        while buf.count(b"HTTP/1.1 ") < n and time.monotonic() < deadline:
            for _key, ev in sel.select(0.5):
                if ev & selectors.EVENT_WRITE and out:
                    try:
                        out = out[s.send(out[:65536]):]
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        pass
                    if not out:
                        sel.modify(s, selectors.EVENT_READ)
                if ev & selectors.EVENT_READ:
                    try:
                        while True:
                            data = s.recv(65536)
                            assert data, "the server closed the connection after %d answers" % buf.count(b"HTTP/1.1 ")
                            buf += data
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
    finally:
        s.close()
    heads = buf.count(b"HTTP/1.1 ")
    assert heads == n, "%d answers of %d; %d bytes left to send" % (heads, n, len(out))
    assert buf.count(b"HTTP/1.1 200 ") == n, buf[:300]
    ids = [int(x) for x in __import__("re").findall(rb'\{"id":"(\d+)"\}', buf)]
    assert ids == list(range(ids[0], ids[0] + n)), ids[:20]

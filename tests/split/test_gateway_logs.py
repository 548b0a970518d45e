"""The gateway's nginx never writes a credential into its error log.

nginx logs the client's request line with every error (here: a stream service that is
down), so a JWT sent as ?access_token= (EventSource's only way) would land in the log.
This starts the gateway of deploy/gateway.conf.in on its own, with every service down,
and checks that:
  * a stream with the token in the URL gets its 502 and leaves no trace of the token;
  * a stream with the token in a header still gets its error logged (operators keep them);
  * the token-in-URL route still reaches the stream service (with its query) when it is up.
Needs only nginx; the split services are not involved."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2ctcHJvYmUifQ.c2VjcmV0LXNpZ25hdHVyZS12YWx1ZQ"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(threading.Thread):
    """A one-shot HTTP server that records the request line it gets."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.request_line = None

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.request_line = data.split(b"\r\n", 1)[0].decode("latin-1")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 13\r\n"
                         b"Connection: close\r\n\r\nretry: 3000\n\n")


@pytest.fixture
def gateway():
    if not os.access(NGINX, os.X_OK):
        pytest.fail("nginx is not installed (scripts/deps.sh split installs it)")
    run = tempfile.mkdtemp(prefix="broker-gw-")
    upstream = Upstream()
    dead = free_port()  # nothing listens there
    listen = free_port()
    with open(os.path.join(ROOT, "deploy", "gateway.conf.in")) as f:
        conf = f.read()
    conf = (conf.replace("@PREFIX@", run).replace("@LISTEN@", "127.0.0.1:%d" % listen)
            .replace("@AUTH@", "127.0.0.1:%d" % dead).replace("@INGEST@", "127.0.0.1:%d" % dead)
            .replace("@STREAMS@", "server 127.0.0.1:%d;" % dead).replace("@CERTD@", "127.0.0.1:%d" % dead))
    path = os.path.join(run, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(run, d), exist_ok=True)
    proc = subprocess.Popen([NGINX, "-q", "-p", run, "-c", path, "-g", "user %s;" % (os.environ.get("USER") or "root")],
                            stderr=subprocess.PIPE)
    base = "http://127.0.0.1:%d" % listen
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("nginx did not start: %s" % proc.stderr.read().decode(errors="replace"))
            time.sleep(0.05)
    try:
        yield base, os.path.join(run, "error.log"), path, run
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(run, ignore_errors=True)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_token_in_url_never_reaches_the_error_log(gateway):
    base, log, _, _ = gateway
    r = requests.get(base + "/sse?access_token=" + TOKEN + "&last_event_id=3", timeout=10)
    assert r.status_code == 502, r.status_code
    r = requests.get(base + "/sse", headers={"Authorization": "Bearer " + TOKEN + "-header"}, timeout=10)
    assert r.status_code == 502, r.status_code
    time.sleep(0.2)  # nginx writes its log line as it answers; give the write a moment
    text = read(log)
    assert 'request: "GET /sse HTTP/1.1"' in text, \
        "the header-token stream's error was not logged:\n" + text
    assert TOKEN not in text, "a token is in the gateway's error log:\n" + text


def test_token_in_url_still_reaches_the_stream(gateway):
    base, _, conf_path, run = gateway
    up = Upstream()
    up.start()
    with open(conf_path) as f:
        conf = f.read()
    conf = re.sub(r"upstream stream \{[^}]*\}", "upstream stream { server 127.0.0.1:%d; }" % up.port, conf)
    with open(conf_path, "w") as f:
        f.write(conf)
    subprocess.run([NGINX, "-q", "-p", run, "-c", conf_path, "-s", "reload"], check=True, timeout=10)
    deadline = time.monotonic() + 10
    r = None
    while time.monotonic() < deadline:
        r = requests.get(base + "/sse?access_token=" + TOKEN + "&last_event_id=3", timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.2)  # the reload's new workers take over
    assert r is not None and r.status_code == 200, r.status_code if r is not None else None
    up.join(10)
    assert up.request_line == "GET /sse?access_token=%s&last_event_id=3 HTTP/1.1" % TOKEN, up.request_line

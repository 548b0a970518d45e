"""Shared harness of the JS client suites (test_jsclient_node.py, test_jsclient_browser.py).

A real broker on a free 127.0.0.1 port with a temp db, which a test can stop with SIGTERM and
start again on the same port and db (the restart scenarios); users created through the admin
endpoint; HS256 tokens signed here; a line reader with bounded waits for driven subprocesses;
and a parser of the node test runner's TAP output, so that each node test is counted by pytest.

Environment: BROKER_BIN, the broker binary (default <repo>/build/broker). It is copied into the
test's temp dir first, so a rebuild during the run cannot swap it between a stop and a start.
"""
import base64
import hashlib
import hmac
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLIENT_JS = os.path.join(REPO, "clients", "js", "broker-client.js")
BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))
HTTP_TIMEOUT = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One broker process at a time on a fixed port and db: start(), stop(), restart()."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.binary = os.path.join(workdir, "broker")
        if not os.access(BROKER_BIN, os.X_OK):
            raise AssertionError("broker binary not found or not executable: %s (set BROKER_BIN)" % BROKER_BIN)
        shutil.copy2(BROKER_BIN, self.binary)
        self.db = os.path.join(workdir, "db")
        self.admin_token = "adm-" + uuid.uuid4().hex
        self.jwt_secret = "jwt-" + uuid.uuid4().hex
        self.port = None
        self.proc = None
        self.starts = 0

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        # A fresh port on the first start (retried: it can be taken between probe and bind);
        # the same port on a restart, as a real deployment would.
        first = self.port is None
        for _attempt in range(3):
            if first:
                self.port = free_port()
            log = open(os.path.join(self.workdir, "broker-%d.log" % self.starts), "wb")
            env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
            self.proc = subprocess.Popen(
                [self.binary, "--port=%d" % self.port, "--bind=127.0.0.1", "--db=" + self.db,
                 "--admin_token=" + self.admin_token, "--jwt_secret=" + self.jwt_secret, "--keepalive=2"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=self.workdir)
            log.close()
            self.starts += 1
            if self._wait_healthy(10):
                return
            self.stop()
        raise AssertionError("the broker did not start:\n" + self.log_tail())

    def _wait_healthy(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        return False

    def stop(self):
        """SIGTERM, SIGKILL after 5 s; returns the exit code (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def restart(self):
        self.stop()
        self.start()

    def log_tail(self, limit=4000):
        out = []
        for i in range(self.starts):
            path = os.path.join(self.workdir, "broker-%d.log" % i)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    out.append("--- broker run %d\n%s" % (i, f.read()[-limit:].decode("utf-8", "replace")))
        return "\n".join(out)

    # -- the API
    def create_user(self, username, password, tenant):
        r = requests.post(self.base + "/create_user", json={
            "username": username, "password": password, "admin_token": self.admin_token,
            "tenant_name": tenant}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, "create_user %s: %s %s" % (username, r.status_code, r.text)
        return {"username": username, "password": password, "tenant": tenant}

    def login(self, user):
        r = requests.post(self.base + "/login", json={"username": user["username"], "password": user["password"]},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, "login: %s %s" % (r.status_code, r.text)
        return r.json()["jwt"]

    def insert(self, jwt, event, data):
        r = requests.post(self.base + "/insert", json={"event": event, "data": data},
                          headers={"Authorization": "Bearer " + jwt}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, "insert: %s %s" % (r.status_code, r.text)
        return r.json()["id"]


def open_stream(broker, user):
    """An open GET /sse of `user` (Basic credentials) on a plain socket, its answer's head
    read; close() it to end the stream."""
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=HTTP_TIMEOUT)
    cred = base64.b64encode(("%s:%s" % (user["username"], user["password"])).encode()).decode()
    sock.sendall(("GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic %s\r\n"
                  "Accept: text/event-stream\r\n\r\n" % cred).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        sock.close()
        raise AssertionError("GET /sse as %s: %r" % (user["username"], head[:300]))
    return sock


def new_workdir():
    return tempfile.mkdtemp(prefix="broker-jsclient-")


# ---------------------------------------------------------------- JWT


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwt_claims(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def sign_hs256(claims, secret):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), (head + "." + body).encode("ascii"), hashlib.sha256).digest()
    return head + "." + body + "." + b64url(sig)


def expired_token(broker, user):
    """A correctly signed token for an existing user, expired an hour ago by the broker's own
    clock (taken from a token it issued: its clock may not be the host's)."""
    iat = jwt_claims(broker.login(user))["iat"]
    return sign_hs256({"sub": user["username"], "tenant": user["tenant"], "iss": "broker",
                       "iat": iat - 7200, "exp": iat - 3600}, broker.jwt_secret)


# ---------------------------------------------------------------- driven subprocesses


class LineReader:
    """Reads a subprocess's stdout lines on a thread; expect() waits, bounded, for a line."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []  # every line seen, for failure messages
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, what, pred, timeout=10):
        """The first JSON line (in order, from here on) for which pred is true."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %s; lines so far:\n%s" % (what, "\n".join(self.lines[-40:])))
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError("the process ended while waiting for %s; lines:\n%s" % (what, "\n".join(self.lines[-40:])))
            self.lines.append(line)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if pred(msg):
                return msg

    def messages(self):
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out


# ---------------------------------------------------------------- node --test TAP output

TAP_RESULT = re.compile(r"^(not ok|ok) \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?$")
TAP_COUNT = re.compile(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$")


def parse_tap(text):
    """Top-level results of `node --test --test-reporter=tap` for one file:
    ({name: (ok, directive, detail block)}, {"tests": n, "pass": n, ...})."""
    results = {}
    counts = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = TAP_RESULT.match(line)
        c = TAP_COUNT.match(line)
        if c:
            counts[c.group(1)] = int(c.group(2))
        if not m:
            i += 1
            continue
        block = []
        i += 1
        while i < len(lines) and (lines[i].startswith("  ") or lines[i] == ""):
            block.append(lines[i])
            i += 1
        name = m.group(2).replace("\\#", "#").replace("\\\\", "\\")
        results[name] = (m.group(1) == "ok", m.group(3), "\n".join(block))
    return results, counts


def declared_node_tests(path):
    """The names of the top-level test("...") calls of a node test file, read from its source
    (so that pytest can list them before node runs)."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    names = re.findall(r'^test\("((?:[^"\\]|\\.)*)"', src, re.M)
    return [json.loads('"%s"' % n) for n in names]


def run_node_tests(path, env, timeout=60):
    """Runs one node test file with the TAP reporter; (returncode, stdout, stderr)."""
    try:
        p = subprocess.run(["node", "--test", "--test-reporter=tap", path], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        return None, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
            "node --test did not finish within %d s" % timeout

#!/usr/bin/env python3
"""make soak: ten minutes of mixed, steady load on one all-in-one Broker, looking for what short
tests cannot see: memory or open files that creep up, events lost or repeated across reconnects,
a slow reader the server keeps buffering for.

    python3 bench/soak.py                 # the full soak: --minutes 10, 19,000 subscribers
    python3 bench/soak.py --quick         # 2 minutes, 2,000 subscribers: to develop with
    python3 bench/soak.py --help

It starts its own broker (a copy of build/broker in a temporary folder, so a rebuild meanwhile
does not change it; its own store, admin token, JWT secret, 127.0.0.1 and a free port,
--keepalive=5, a small --sse_queue_max) and, at the same time for the whole run:
  - subscribers held open by bench/sseload.c (compiled into the temporary folder), one sseload
    per tenant over 4 source addresses, half with a JWT in the URL, half with Basic;
  - inserts at a steady rate spread over the tenants, every answer's id recorded;
  - resumers: a few hundred connections of this script that hang up at random (FIN or RST) and
    come back with Last-Event-ID (header or query); each must end with every event of its tenant
    since it first connected, once each, in order;
  - one slow reader (tiny SO_RCVBUF, never reads) on a tenant fed with large events: the server
    must drop it, and its memory must not grow for it; an honest reader of that tenant must not
    be dropped;
  - wrong-password logins at a bounded rate, and an honest login every few seconds (latency
    reported, never asserted);
  - every 10 s: the server's VmRSS, open files (/proc/<pid>/fd) and CPU.
At the end: a table, the server's /metrics, and PASS or FAIL with the reasons (exit 1 on FAIL).
bench/soak.md says how to read it.  Python 3 standard library only.  Every wait is bounded, and
every process started here is stopped at the end, also on Ctrl-C or an error.
"""
import argparse
import base64
import errno
import http.client
import json
import os
import random
import resource
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")
NAMES = ["e0", "e1", "e2", "e3"]  # event names of every tenant; all seeded, so a snapshot has 4
SAMPLE_S = 10
# The embedded store's open files at most: its -shm, and the database and its -wal for the write
# connection and for each of the idle read connections SQLite keeps (READER_IDLE_MAX, 8, in
# lib/store/store_sqlite.c).
STORE_IDLE_READERS = 8
STORE_FILES_MAX = 1 + 2 * (1 + STORE_IDLE_READERS)
PASSWORD = "soak-password-1"


def log(*a):
    print("[soak %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def sizes(args):
    """The run's sizes: the flags win over the profile (--quick or full)."""
    if args.quick:
        s = dict(minutes=2, subscribers=2000, tenants=50, rate=200, resumers=100, warmup_s=20, slow_at_s=25,
                 life=(1.0, 8.0))
    else:
        s = dict(minutes=10, subscribers=19000, tenants=50, rate=200, resumers=300, warmup_s=60, slow_at_s=75,
                 life=(1.0, 20.0))
    for k in ("minutes", "subscribers", "tenants", "rate", "resumers"):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    return s


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs) + 0.5)) - 1))]


# ---------------------------------------------------------------- /proc and HTTP helpers
def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid):
    """What the process's open files are, counted by kind (socket, pipe, anon_inode:[eventfd], a
    path): the difference between two of these says what was left open."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[", 1)[0] if target.startswith(("socket:", "pipe:")) else target
        out[kind] = out.get(kind, 0) + 1
    return out


def kinds_diff(before, after):
    keys = sorted(set(before) | set(after))
    return ", ".join(f"{k} {before.get(k, 0)}->{after.get(k, 0)}" for k in keys if before.get(k, 0) != after.get(k, 0))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, headers=None, timeout=30, source=None):
    """One request on its own connection (closed after, so no idle keep-alive connection stays
    on the server's open files), from 127.0.0.1 or `source`. Returns (status, parsed JSON or
    raw bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                   source_address=(source, 0) if source else None)
    try:
        h = {"Connection": "close"}
        h.update(headers or {})
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw
    finally:
        c.close()


def metrics(port):
    st, raw = request(port, "GET", "/metrics", timeout=10)
    if st != 200:
        raise RuntimeError(f"/metrics answered {st}")
    out = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            try:
                out[name] = float(val)
            except ValueError:
                pass
    return out


# ---------------------------------------------------------------- the server
class Server:
    def __init__(self, tmp, binary, queue_max):
        self.tmp = tmp
        self.port = free_port()
        self.admin = "soak-admin-" + secrets.token_hex(12)
        self.secret = secrets.token_hex(32)
        self.queue_max = queue_max
        self.logpath = os.path.join(tmp, "broker.log")
        cmd = [binary, f"--port={self.port}", "--bind=127.0.0.1", f"--db={tmp}/db",
               f"--admin_token={self.admin}", f"--jwt_secret={self.secret}", "--keepalive=5",
               f"--sse_queue_max={queue_max}", "--ntp_servers=127.0.0.1:9", "--log_level=info"]
        self.cmd = cmd
        self.logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited at start ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if request(self.port, "GET", "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("broker not healthy after 30 s:\n" + self.log_tail())
            time.sleep(0.1)

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=30):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.logf.close()
        return self.proc.returncode


class Tenant:
    """One tenant: its user, credentials, and every event stored in it as (id, name), in the
    order the answers came (sorted before any check)."""

    def __init__(self, k, name, user):
        self.k, self.name, self.user = k, name, user
        self.jwt = None
        self.basic = "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
        self.events = []
        self.lock = threading.Lock()

    def record(self, eid, name):
        with self.lock:
            self.events.append((eid, name))

    def max_id(self):
        with self.lock:
            return max((e for e, _ in self.events), default=0)


def make_tenant(srv, k, name):
    user = f"soak-{name}"
    st, body = request(srv.port, "POST", "/create_user", {"username": user, "password": PASSWORD,
                                                           "admin_token": srv.admin, "tenant_name": name},
                       timeout=120)
    if st != 200:
        raise RuntimeError(f"create_user {user}: {st} {body}")
    t = Tenant(k, name, user)
    st, body = request(srv.port, "POST", "/login", {"username": user, "password": PASSWORD}, timeout=120)
    if st != 200:
        raise RuntimeError(f"login {user}: {st} {body}")
    t.jwt = body["jwt"]
    return t


def insert_body(t, name, pad, n):
    return {"event": name, "data": {"t": time.time_ns() // 1000, "k": t.k, "n": n, "p": "x" * pad}}


# ---------------------------------------------------------------- inserts
class Inserter:
    """Inserts at `rate` per second over the tenants, insert i due at start + i/rate, on
    `workers` keep-alive connections (a durable insert waits for the disk's flush, so one
    connection alone could not keep the pace). Late inserts go at once and are counted."""

    def __init__(self, port, tenants, rate, workers=16, pad=64):
        self.port, self.tenants, self.rate, self.workers, self.pad = port, tenants, rate, workers, pad
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.errors = self.late = 0
        self.error_kinds = {}
        self.lat_ms = []
        self.threads = []
        self.t0 = None
        self.t_end = None

    def start(self):
        self.t0 = time.monotonic()
        for w in range(self.workers):
            th = threading.Thread(target=self._run, args=(w,), daemon=True)
            th.start()
            self.threads.append(th)

    def _run(self, w):
        conn = None
        i = w
        while not self.stop_ev.is_set():
            due = self.t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                if self.stop_ev.wait(delay):
                    break
            elif delay < -0.1:
                with self.lock:
                    self.late += 1
            t = self.tenants[i % len(self.tenants)]
            name = NAMES[(i // len(self.tenants)) % len(NAMES)]
            body = json.dumps(insert_body(t, name, self.pad, i)).encode()
            t_send = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", "/insert", body=body, headers={"Authorization": "Bearer " + t.jwt,
                                                                    "Content-Type": "application/json"})
                r = conn.getresponse()
                raw = r.read()
                if r.status != 200:
                    raise RuntimeError(f"status {r.status}")
                t.record(int(json.loads(raw)["id"]), name)
                with self.lock:
                    self.ok += 1
                    self.lat_ms.append((time.monotonic() - t_send) * 1000)
            except (OSError, http.client.HTTPException, RuntimeError, ValueError, KeyError) as e:
                # the insert may or may not be stored: its id is unknown, and the checks will
                # show it as an event nobody expected; the run fails on any error anyway
                with self.lock:
                    self.errors += 1
                    kind = type(e).__name__ + (f" {e}" if isinstance(e, RuntimeError) else "")
                    self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
                if conn is not None:
                    conn.close()
                conn = None
                self.stop_ev.wait(0.2)
            i += self.workers
        if conn is not None:
            conn.close()

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(timeout=40)
        if self.t_end is None:
            self.t_end = time.monotonic()

    def achieved_rate(self):
        end = self.t_end or time.monotonic()
        return self.ok / max(1e-9, end - self.t0)


# ---------------------------------------------------------------- resumers
IDLE, CONNECTING, HEAD, STREAM = range(4)


class Resumer:
    __slots__ = ("idx", "t", "auth", "steady", "sock", "state", "buf", "snap", "start", "last_id",
                 "seen", "dup", "ooo", "foreign", "events", "keepalives", "connects", "closes", "rsts",
                 "non200", "server_closed", "conn_fail", "due", "close_at", "ev_id", "ev_name", "ev_data",
                 "bad_lines")

    def __init__(self, idx, tenant, auth, steady=False):
        self.idx, self.t, self.auth, self.steady = idx, tenant, auth, steady
        self.sock = None
        self.state = IDLE
        self.buf = b""
        self.snap = []          # the first connection's snapshot: (id, name), one per event name
        self.start = None       # the snapshot's newest id: every later event must arrive
        self.last_id = None     # the last id received: what a reconnect sends as Last-Event-ID
        self.seen = set()
        self.dup = self.ooo = self.foreign = self.events = self.keepalives = 0
        self.connects = self.closes = self.rsts = self.non200 = self.server_closed = self.conn_fail = 0
        self.bad_lines = 0
        self.due = None
        self.close_at = None
        self.ev_id = self.ev_name = None
        self.ev_data = None


class Resumers:
    """Connections that hang up at random intervals (FIN or RST, sometimes before the answer's
    head) and reconnect with Last-Event-ID, as a browser's EventSource does; one selector
    thread. `steady` ones never hang up (the slow tenant's honest reader)."""

    def __init__(self, port, life, seed):
        self.port, self.life = port, life
        self.rng = random.Random(seed)
        self.all = []
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.draining = False
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.loop_error = None

    def add(self, tenant, auth, when, steady=False):
        r = Resumer(len(self.all), tenant, auth, steady)
        r.due = when
        with self.lock:
            self.all.append(r)
        return r

    def start(self):
        self.th.start()

    # -- connection life
    def _request(self, r):
        t = r.t
        params, headers = [], ["Accept: text/event-stream", "Cache-Control: no-cache"]
        if r.auth == "query":
            params.append("access_token=" + t.jwt)
        elif r.auth == "bearer":
            headers.append("Authorization: Bearer " + t.jwt)
        else:
            headers.append("Authorization: " + t.basic)
        if r.last_id is not None:
            if self.rng.random() < 0.3:
                params.append(f"last_event_id={r.last_id}")
            else:
                headers.append(f"Last-Event-ID: {r.last_id}")
        path = "/sse" + ("?" + "&".join(params) if params else "")
        return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n" + "\r\n".join(headers) +
                "\r\n\r\n").encode()

    def _connect(self, r, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            r.conn_fail += 1
            r.due = now + 1.0
            return
        r.sock, r.state, r.buf = s, CONNECTING, b""
        r.ev_id = r.ev_name = r.ev_data = None
        r.connects += 1
        r.due = now + 10.0  # connect + head timeout
        r.close_at = None
        # a reconnect sometimes hangs up almost at once: before its head, or mid replay
        if not r.steady and r.start is not None and not self.draining and self.rng.random() < 0.1:
            r.close_at = now + self.rng.uniform(0.0, 0.05)
        self.sel.register(s, selectors.EVENT_WRITE, r)

    def _hang_up(self, r, now, by_us=True, rst=None):
        if r.sock is not None:
            try:
                self.sel.unregister(r.sock)
            except (KeyError, ValueError):
                pass
            if rst is None:
                rst = self.rng.random() < 0.5
            if rst:
                r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                r.rsts += 1
            r.sock.close()
            r.sock = None
        if by_us:
            r.closes += 1
        if r.start is None:  # the first snapshot was cut short: start over as a first connection
            r.snap, r.last_id = [], None
        r.state = IDLE
        r.close_at = None
        r.due = now + (0.0 if self.draining else self.rng.uniform(0.0, 2.0))

    def _on_writable(self, r, now):
        err = r.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            r.conn_fail += 1
            self._hang_up(r, now, by_us=False, rst=False)
            r.due = now + 1.0
            return
        req = self._request(r)
        try:
            sent = r.sock.send(req)
        except OSError:
            sent = -1
        if sent != len(req):  # a fresh socket takes a request this small whole
            r.conn_fail += 1
            self._hang_up(r, now, by_us=False, rst=True)
            return
        r.state = HEAD
        self.sel.modify(r.sock, selectors.EVENT_READ, r)

    def _on_readable(self, r, now):
        try:
            data = r.sock.recv(262144)
        except OSError:
            data = b""
        if not data:
            if not self.stop_ev.is_set():
                r.server_closed += 1  # the server never ends a stream of a client that keeps up
            self._hang_up(r, now, by_us=False, rst=False)
            return
        r.buf += data
        if r.state == HEAD:
            i = r.buf.find(b"\r\n\r\n")
            if i < 0:
                if len(r.buf) > 16384:
                    r.non200 += 1
                    self._hang_up(r, now, by_us=False)
                return
            head, r.buf = r.buf[:i], r.buf[i + 4:]
            try:
                status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                status = 0
            if status != 200:
                r.non200 += 1
                self._hang_up(r, now, by_us=False)
                r.due = now + 1.0
                return
            r.state = STREAM
            r.due = None
            if not r.steady and r.close_at is None:
                r.close_at = now + self.rng.uniform(*self.life)
        lines = r.buf.split(b"\n")
        r.buf = lines.pop()
        for line in lines:
            self._line(r, line[:-1] if line.endswith(b"\r") else line)

    def _line(self, r, line):
        if not line:
            if r.ev_data is not None:
                self._event(r, r.ev_id, r.ev_name, r.ev_data)
            r.ev_id = r.ev_name = r.ev_data = None
            return
        if line[:1] == b":":
            r.keepalives += 1
            return
        field, _, val = line.partition(b":")
        if val[:1] == b" ":
            val = val[1:]
        if field == b"id":
            r.ev_id = val
        elif field == b"event":
            r.ev_name = val
        elif field == b"data":
            r.ev_data = val if r.ev_data is None else r.ev_data + b"\n" + val
        elif field != b"retry":
            r.bad_lines += 1

    def _event(self, r, id_b, name_b, data_b):
        r.events += 1
        try:
            eid = int(id_b)
            k = json.loads(data_b)["k"]
        except (TypeError, ValueError, KeyError):
            r.bad_lines += 1
            return
        if k != r.t.k:
            r.foreign += 1
        if r.start is None:
            # first connection: the snapshot, the latest event of each name, oldest first
            r.snap.append((eid, (name_b or b"").decode()))
            if len(r.snap) == len(NAMES):
                r.start = max(e for e, _ in r.snap)
        elif eid in r.seen:
            r.dup += 1
        else:
            if eid <= r.last_id:
                r.ooo += 1
            r.seen.add(eid)
        r.last_id = eid

    def _run(self):
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - reported as a failure by the main thread
            self.loop_error = repr(e)
            raise

    def _loop(self):
        next_timers = 0.0
        while not self.stop_ev.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                r = key.data
                now = time.monotonic()
                if r.state == CONNECTING:
                    self._on_writable(r, now)
                elif r.sock is not None:
                    self._on_readable(r, now)
            now = time.monotonic()
            if now < next_timers:
                continue
            next_timers = now + 0.05
            with self.lock:
                rs = list(self.all)
            for r in rs:
                if r.state == IDLE:
                    if r.due is not None and now >= r.due:
                        self._connect(r, now)
                elif r.state in (CONNECTING, HEAD) and r.due is not None and now >= r.due:
                    r.conn_fail += 1  # no head in 10 s
                    self._hang_up(r, now, by_us=False, rst=True)
                if r.close_at is not None and now >= r.close_at and r.sock is not None:
                    if r.start is not None and not self.draining:  # the first snapshot is whole
                        self._hang_up(r, now)
                    elif self.draining:
                        r.close_at = None

    def drain(self):
        """No more hang-ups; whoever is away comes back at once."""
        self.draining = True

    def caught_up(self, r):
        return r.state == STREAM and r.start is not None and r.last_id is not None and r.last_id >= r.t.max_id()

    def stop(self):
        self.stop_ev.set()
        self.th.join(timeout=10)
        for r in self.all:
            if r.sock is not None:
                try:
                    r.sock.close()
                except OSError:
                    pass
                r.sock = None

    def check(self, r):
        """(missing, unexpected, snapshot_wrong) of one resumer against the recorded inserts."""
        with r.t.lock:
            events = sorted(r.t.events)
        ids = {e for e, _ in events}
        if r.start is None:
            return None, None, 1
        expected = {e for e in ids if e > r.start}
        missing = len(expected - r.seen)
        unexpected = len(r.seen - ids)
        latest = {}
        for e, n in events:
            if e <= r.start:
                latest[n] = e
        snap_wrong = int(sorted(r.snap) != sorted((e, n) for n, e in latest.items()))
        return missing, unexpected, snap_wrong


# ---------------------------------------------------------------- subscribers (sseload)
class Subscribers:
    """One sseload per tenant (sseload takes one path), each over 4 source addresses; half the
    tenants authenticate with a JWT in the URL, half with Basic."""

    def __init__(self, sseload, port, tenants, total, tmp, timeout, max_ids):
        self.procs = []
        n_each = [total // len(tenants) + (1 if i < total % len(tenants) else 0) for i in range(len(tenants))]
        for t, n in zip(tenants, n_each):
            if n == 0:
                continue
            cmd = [sseload, "--port", str(port), "-n", str(n), "--procs", "1", "--sources", "4",
                   "--connect-rate", "150", "--timeout", str(int(timeout)), "--progress", "2", "-q",
                   "--max-ids", str(max_ids), "--detail", "0"]
            if t.k % 2 == 0:
                cmd += ["--path", "/sse?access_token=" + t.jwt]
            else:
                cmd += ["--path", "/sse", "--header", "Authorization: " + t.basic]
            out = os.path.join(tmp, f"sseload-{t.k}.out")
            err = os.path.join(tmp, f"sseload-{t.k}.err")
            with open(out, "w") as fo, open(err, "w") as fe:
                p = subprocess.Popen(cmd, stdout=fo, stderr=fe, start_new_session=True)
            self.procs.append({"t": t, "n": n, "p": p, "out": out, "err": err, "result": None})

    def pids(self):
        return [s["p"].pid for s in self.procs]

    def connected(self):
        """Streams open once every sseload has resolved all its connections, else None."""
        total = 0
        for s in self.procs:
            with open(s["out"]) as f:
                line = next((l for l in f if l.startswith("CONNECTED")), None)
            if line is None:
                if s["p"].poll() is not None:
                    raise RuntimeError(f"sseload for {s['t'].name} exited: {self.err_tail(s)}")
                return None
            total += int(line.split()[1])
        return total

    @staticmethod
    def err_tail(s):
        with open(s["err"], errors="replace") as f:
            return " | ".join(l.strip() for l in f.readlines()[-3:])

    def progress(self):
        """Per sseload (open now, counted events) from its latest progress line."""
        out = []
        for s in self.procs:
            with open(s["err"], errors="replace") as f:
                lines = [l for l in f.readlines()[-3:] if " open " in l and " events " in l]
            if not lines:
                out.append((0, 0))
                continue
            w = lines[-1].split()
            out.append((int(w[w.index("open") + 1]), int(w[w.index("events") + 1])))
        return out

    def stop(self):
        for s in self.procs:
            if s["p"].poll() is None:
                try:
                    os.killpg(s["p"].pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 40
        for s in self.procs:
            try:
                s["p"].wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(s["p"].pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                s["p"].wait(timeout=10)
            with open(s["out"]) as f:
                line = next((l for l in f if l.startswith("RESULT ")), None)
            s["result"] = json.loads(line[7:]) if line else None


# ---------------------------------------------------------------- logins
class Logins:
    """Wrong passwords at `bad_rate` per second, paced, each on its own connection, and one
    honest login from 127.0.0.1 every `every_s` seconds, timed.

    The server limits failed logins per client address and per username (429 past the limit,
    without running Argon2). To keep Argon2 busy at the full rate, as a password-guessing
    client spread over many addresses would, the wrong ones come from `sources` addresses
    (127.0.0.16 on) and mostly name unknown users (verified against a dummy hash all the same);
    one in 50 names a real user. A 429 is a right answer to a wrong password too, and counted."""

    def __init__(self, port, victim, honest, bad_rate=5.0, every_s=3.0, sources=16):
        self.port, self.victim, self.honest, self.bad_rate, self.every_s = port, victim, honest, bad_rate, every_s
        self.sources = sources
        self.stop_ev = threading.Event()
        self.bad_status, self.good_status = {}, {}
        self.good_ms = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._bad, daemon=True),
                        threading.Thread(target=self._good, daemon=True)]

    def start(self):
        for th in self.threads:
            th.start()

    def _count(self, d, key):
        with self.lock:
            d[key] = d.get(key, 0) + 1

    def _bad(self):
        t0, i = time.monotonic(), 0
        while not self.stop_ev.is_set():
            delay = t0 + i / self.bad_rate - time.monotonic()
            if delay > 0 and self.stop_ev.wait(delay):
                break
            user = self.victim if i % 50 == 0 else f"soak-nobody-{i}"
            src = f"127.0.0.{16 + i % self.sources}"
            try:
                st, _ = request(self.port, "POST", "/login", {"username": user, "password": f"wrong-{i:08d}"},
                                source=src)
            except (OSError, http.client.HTTPException) as e:
                st = type(e).__name__
            self._count(self.bad_status, st)
            i += 1

    def _good(self):
        while not self.stop_ev.wait(self.every_s):
            t = time.monotonic()
            try:
                st, body = request(self.port, "POST", "/login", {"username": self.honest, "password": PASSWORD})
                if st == 200 and not (isinstance(body, dict) and body.get("jwt")):
                    st = "200 without jwt"
            except (OSError, http.client.HTTPException) as e:
                st = type(e).__name__
            if st == 200:
                with self.lock:
                    self.good_ms.append((time.monotonic() - t) * 1000)
            self._count(self.good_status, st)

    def stop(self):
        self.stop_ev.set()
        for th in self.threads:
            th.join(timeout=40)


# ---------------------------------------------------------------- samples every 10 s
class Sampler:
    def __init__(self, srv, t0, extra):
        self.srv, self.t0, self.extra = srv, t0, extra
        self.rows = []
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._run, daemon=True)
        self.prev = None

    def start(self):
        self.th.start()

    def sample(self, phase):
        now = time.monotonic()
        try:
            cpu = cpu_s(self.srv.pid)
            row = {"t": round(now - self.t0), "phase": phase, "rss_mb": rss_kb(self.srv.pid) / 1024,
                   "fds": fd_count(self.srv.pid)}
        except OSError:
            return None
        row["cpu_pct"] = (100 * (cpu - self.prev[1]) / (now - self.prev[0])) if self.prev else None
        self.prev = (now, cpu)
        try:
            m = metrics(self.srv.port)
            row["streams"] = int(m.get("broker_sse_subscribers", -1))
        except (OSError, RuntimeError, http.client.HTTPException):
            row["streams"] = None
        row.update(self.extra())
        with open("/proc/loadavg") as f:
            row["load"] = f.read().split()[0]
        self.rows.append(row)
        log("t=%4ds %-6s rss %.1f MB  fds %d  cpu %s%%  streams %s  inserts %d  reconnects %d  bad logins %d" % (
            row["t"], phase, row["rss_mb"], row["fds"], "-" if row["cpu_pct"] is None else f"{row['cpu_pct']:.0f}",
            row["streams"], row["inserts"], row["reconnects"], row["bad_logins"]))
        return row

    def _run(self):
        k = 0
        while True:
            if self.stop_ev.wait(max(0.0, self.t0 + k * SAMPLE_S - time.monotonic())):
                return
            self.sample("soak")
            k += 1

    def stop(self):
        self.stop_ev.set()
        self.th.join(timeout=30)


# ---------------------------------------------------------------- the slow reader
def slow_reader(port, t, rcvbuf=2048):
    """A subscriber that never reads, with a receive buffer the kernel keeps tiny."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
              f"Authorization: Bearer {t.jwt}\r\n\r\n".encode())
    return s


# ---------------------------------------------------------------- main
class Run:
    def __init__(self, args):
        self.args = args
        self.S = sizes(args)
        self.tmp = None
        self.srv = None
        self.subs = None
        self.inserter = self.feeder = None
        self.resumers = None
        self.honest = None  # the slow tenant's honest reader: its own thread, so it reads at once
        self.logins = None
        self.sampler = None
        self.slow_sock = None
        self.fail = []
        self.warn = []
        self.info = {}

    # everything this run started, stopped in reverse order; each step on its own
    def cleanup(self):
        for what, fn in (("sampler", lambda: self.sampler and self.sampler.stop()),
                         ("inserter", lambda: self.inserter and self.inserter.stop()),
                         ("feeder", lambda: self.feeder and self.feeder.stop()),
                         ("logins", lambda: self.logins and self.logins.stop()),
                         ("resumers", lambda: self.resumers and self.resumers.stop()),
                         ("honest reader", lambda: self.honest and self.honest.stop()),
                         ("slow reader", lambda: self.slow_sock and self.slow_sock.close()),
                         ("sseload", lambda: self.subs and self.subs.stop()),
                         ("broker", lambda: self.srv and self.srv.stop())):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - go on stopping the rest
                log(f"stopping the {what}: {e!r}")
        if self.tmp and not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            log(f"kept {self.tmp}")

    def check(self, ok, why):
        if not ok:
            self.fail.append(why)
        return ok

    def setup(self):
        S, a = self.S, self.args
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the server and sseload
        self.info["fd_limit"] = hard
        if S["subscribers"] + S["resumers"] + 200 > hard:
            raise SystemExit(f"{S['subscribers']} subscribers + {S['resumers']} resumers do not fit under the "
                             f"server's {hard} open files")
        self.tmp = tempfile.mkdtemp(prefix="broker-soak-")
        binary = os.path.join(self.tmp, "broker")
        shutil.copy2(a.broker, binary)
        sseload = os.path.join(self.tmp, "sseload")
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", sseload,
                        os.path.join(ROOT, "bench", "sseload.c")], check=True)
        self.info["version"] = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                              timeout=10).stdout.strip()
        self.srv = Server(self.tmp, binary, a.sse_queue_max)
        log(f"broker pid {self.srv.pid} on 127.0.0.1:{self.srv.port}, store {self.tmp}/db")
        t = time.monotonic()
        names = [f"t{k:03d}" for k in range(S["tenants"])] + ["slow", "probe"]
        self.tenants = [make_tenant(self.srv, k, n) for k, n in enumerate(names)]
        self.slow_t, self.probe = self.tenants[-2], self.tenants[-1]
        self.tenants = self.tenants[:-2]
        st, _ = request(self.srv.port, "POST", "/create_user",
                        {"username": "soak-victim", "password": PASSWORD, "admin_token": self.srv.admin,
                         "tenant_name": "victim"})
        if st != 200:
            raise RuntimeError(f"create_user soak-victim: {st}")
        # seed every name in every tenant: each snapshot then has one event per name
        for tn in self.tenants + [self.slow_t]:
            for name in NAMES:
                st, body = request(self.srv.port, "POST", "/insert", insert_body(tn, name, 16, -1),
                                   {"Authorization": "Bearer " + tn.jwt})
                if st != 200:
                    raise RuntimeError(f"seed insert: {st} {body}")
                tn.record(int(body["id"]), name)
        log(f"{len(names) + 1} users, {len(self.tenants) + 1} tenants seeded in {time.monotonic() - t:.1f} s")
        time.sleep(1)  # let the server close the setup's connections
        self.base_fds = fd_count(self.srv.pid)
        self.base_kinds = fd_kinds(self.srv.pid)
        self.base_rss = rss_kb(self.srv.pid) / 1024
        log(f"before subscribers: rss {self.base_rss:.1f} MB, open files {self.base_fds}")

        t = time.monotonic()
        per_tenant = S["rate"] / S["tenants"] * S["minutes"] * 60
        max_ids = int(per_tenant * 1.5 + 1000)
        timeout = S["minutes"] * 60 + 600
        self.subs = Subscribers(sseload, self.srv.port, self.tenants, S["subscribers"], self.tmp, timeout, max_ids)
        deadline = time.monotonic() + 300
        while (n := self.subs.connected()) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the subscribers did not all connect in 300 s")
            if not self.srv.alive():
                raise RuntimeError("broker died while the subscribers connected:\n" + self.srv.log_tail())
            time.sleep(0.5)
        self.info["connect_s"] = time.monotonic() - t
        self.info["subs_connected"] = n
        log(f"{n} of {S['subscribers']} subscribers connected in {self.info['connect_s']:.1f} s; "
            f"rss {rss_kb(self.srv.pid) / 1024:.1f} MB, open files {fd_count(self.srv.pid)}")
        self.check(n == S["subscribers"], f"subscribers: {n} of {S['subscribers']} connected")

    def soak(self):
        S, a = self.S, self.args
        self.t0 = time.monotonic()
        self.t_end = self.t0 + S["minutes"] * 60
        self.info["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.resumers = Resumers(self.srv.port, S["life"], a.seed)
        auths = ["bearer", "basic", "query"]
        for i in range(S["resumers"]):
            self.resumers.add(self.tenants[i % len(self.tenants)], auths[i % 3],
                              self.t0 + self.resumers.rng.uniform(0, 20))
        self.inserter = Inserter(self.srv.port, self.tenants, S["rate"])
        self.logins = Logins(self.srv.port, "soak-victim", self.probe.user, bad_rate=a.bad_logins_per_s)

        def extra():
            rs = self.resumers.all
            with self.logins.lock:
                bad = sum(self.logins.bad_status.values())
            return {"inserts": self.inserter.ok, "reconnects": sum(r.connects for r in rs), "bad_logins": bad}
        self.sampler = Sampler(self.srv, self.t0, extra)
        self.inserter.start()
        self.resumers.start()
        self.logins.start()
        self.sampler.start()

        slow = {"state": "waiting"}
        while True:
            now = time.monotonic()
            if now >= self.t_end:
                break
            if not self.srv.alive():
                raise RuntimeError(f"broker exited during the soak ({self.srv.proc.returncode}):\n"
                                   + self.srv.log_tail())
            if self.resumers.loop_error:
                raise RuntimeError("resumer loop failed: " + self.resumers.loop_error)
            self.slow_step(slow, now)
            time.sleep(0.5)
        self.slow_step(slow, time.monotonic(), final=True)
        self.slow = slow

    def slow_step(self, slow, now, final=False):
        """The slow reader's timeline: connect at slow_at_s (with an honest reader of the same
        tenant), feed the tenant large events until the drop shows on /metrics, then stop."""
        S = self.S
        if slow["state"] == "waiting" and now >= self.t0 + S["slow_at_s"] and not final:
            slow["rss_before"] = rss_kb(self.srv.pid) / 1024
            slow["fds_before"] = fd_count(self.srv.pid)
            slow["dropped_before"] = metrics(self.srv.port).get("broker_sse_slow_dropped_total", 0)
            self.slow_sock = slow_reader(self.srv.port, self.slow_t)
            self.honest = Resumers(self.srv.port, S["life"], self.args.seed + 1)
            slow["honest"] = self.honest.add(self.slow_t, "bearer", now, steady=True)
            self.honest.start()
            # 64 KiB/s: a reader that keeps up has 4 s of slack under a 256 KiB --sse_queue_max
            # (plus the sockets' buffers), one that never reads is over it within seconds
            self.feeder = Inserter(self.srv.port, [self.slow_t], rate=4, workers=2, pad=16384)
            self.feeder.start()
            slow.update(state="feeding", t_start=now, rss_max=slow["rss_before"])
            log(f"slow reader connected; feeding its tenant 16 KiB events at 4/s (rss {slow['rss_before']:.1f} MB)")
        elif slow["state"] == "feeding":
            slow["rss_max"] = max(slow["rss_max"], rss_kb(self.srv.pid) / 1024)
            d = metrics(self.srv.port).get("broker_sse_slow_dropped_total", 0) - slow["dropped_before"]
            if d > 0 and "t_drop" not in slow:
                slow["t_drop"] = now
                slow["rss_at_drop"] = rss_kb(self.srv.pid) / 1024
                log(f"slow reader dropped after {now - slow['t_start']:.1f} s, "
                    f"{self.feeder.ok} large events (rss {slow['rss_at_drop']:.1f} MB)")
            if ("t_drop" in slow and now >= slow["t_drop"] + 10) or now >= slow["t_start"] + 120 or final:
                self.feeder.stop()
                slow["rss_after"] = rss_kb(self.srv.pid) / 1024
                slow["fds_after"] = fd_count(self.srv.pid)
                slow["state"] = "done"
                self.slow_sock.close()
                self.slow_sock = None

    def drain(self):
        """Inserts stop; every subscriber and resumer must then catch up (bounded)."""
        self.inserter.stop()
        self.logins.stop()
        self.resumers.drain()
        t = time.monotonic()
        want = {s["t"].k: len(s["t"].events) - len(NAMES) for s in self.subs.procs}  # seeds are the snapshot
        deadline = t + 90
        while time.monotonic() < deadline:
            prog = self.subs.progress()
            subs_ok = all(ev >= s["n"] * want[s["t"].k] for s, (_, ev) in zip(self.subs.procs, prog))
            res_ok = all(self.resumers.caught_up(r) for r in self.resumers.all) and (
                self.honest is None or all(self.honest.caught_up(r) for r in self.honest.all))
            if subs_ok and res_ok:
                break
            time.sleep(1)
        self.info["drain_s"] = time.monotonic() - t
        self.sampler.stop()
        self.sampler.sample("end")
        with open(os.path.join(self.tmp, "inserts.csv"), "w") as f:  # with --keep, every id answered
            f.write("tenant,id,event\n")
            for t in self.tenants + [self.slow_t]:
                f.writelines(f"{t.name},{e},{n}\n" for e, n in sorted(t.events))
        self.info["metrics"] = metrics(self.srv.port)
        self.info["fds_loaded"] = fd_count(self.srv.pid)

        self.resumers.stop()
        if self.honest:
            self.honest.stop()
        self.subs.stop()
        # the server closes its side of every stream; open files must come back to the start
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and fd_count(self.srv.pid) > self.base_fds:
            time.sleep(0.5)
        self.info["fds_after"] = fd_count(self.srv.pid)
        end_kinds = fd_kinds(self.srv.pid)
        # Expected: every socket, pipe, event fd and file as before the first subscriber, except
        # the store's: SQLite opens a read connection (the database and its -wal) whenever its
        # idle pool is empty and keeps up to STORE_IDLE_READERS of them, so those may stay above
        # the start, within that bound. A stream left open shows as a socket.
        db = self.srv.tmp + "/db/"
        expected = {k: v for k, v in self.base_kinds.items() if not k.startswith(db)}
        got_other = {k: v for k, v in end_kinds.items() if not k.startswith(db)}
        self.info["fds_store_base"] = sum(v for k, v in self.base_kinds.items() if k.startswith(db))
        self.info["fds_store_end"] = sum(v for k, v in end_kinds.items() if k.startswith(db))
        self.info["fds_store_max"] = STORE_FILES_MAX
        self.info["fds_expected"] = sum(expected.values())
        self.info["fds_other_end"] = sum(got_other.values())
        self.info["fds_diff"] = kinds_diff(expected, got_other)
        self.info["rss_after"] = rss_kb(self.srv.pid) / 1024
        self.info["metrics_after"] = metrics(self.srv.port)

    # ------------------------------------------------------------ verdict
    def judge(self):
        S, m = self.S, self.info["metrics"]
        ins, res, lg = self.inserter, self.resumers, self.logins
        self.check(ins.errors == 0, f"inserts: {ins.errors} failed ({ins.error_kinds})")
        self.check(self.feeder is None or self.feeder.errors == 0, "slow tenant's inserts failed")

        # subscribers: every one got every event of its tenant, once, in order, and stayed
        per = {"disconnected": 0, "out_of_order": 0, "below": 0, "above": 0, "ids_incomplete": 0,
               "events": 0, "expected": 0, "stale_wrong": 0, "lat": [], "no_result": 0}
        for s in self.subs.procs:
            r = s["result"]
            if r is None:
                per["no_result"] += 1
                continue
            want = len(s["t"].events) - len(NAMES)
            per["disconnected"] += r["disconnected"]
            per["out_of_order"] += r["out_of_order"]
            per["ids_incomplete"] += r["ids_incomplete"]
            per["events"] += r["events_total"]
            per["expected"] += s["n"] * want
            per["below"] += r["events_per_conn_min"] < want
            per["above"] += r["events_per_conn_max"] > want
            per["stale_wrong"] += r["stale_total"] != s["n"] * len(NAMES)
            if r.get("latency_p99_ms") is not None:
                per["lat"].append((r["latency_p50_ms"], r["latency_p99_ms"], r["latency_max_ms"]))
        self.per = per
        self.check(per["no_result"] == 0, f"subscribers: {per['no_result']} sseload runs gave no result")
        self.check(per["disconnected"] == 0, f"subscribers: {per['disconnected']} streams ended by the server")
        self.check(per["events"] == per["expected"] and per["below"] == 0 and per["above"] == 0
                   and per["ids_incomplete"] == 0,
                   f"subscribers: {per['events']:,} events counted, {per['expected']:,} expected "
                   f"({per['below']} tenants short, {per['above']} over, {per['ids_incomplete']} ids not everywhere)")
        self.check(per["out_of_order"] == 0, f"subscribers: {per['out_of_order']} events repeated or out of order")
        self.check(per["stale_wrong"] == 0, f"subscribers: {per['stale_wrong']} tenants' connect snapshots "
                                            f"were not one event per name")

        # resumers
        tot = {"missing": 0, "unexpected": 0, "snap_wrong": 0, "dup": 0, "ooo": 0, "foreign": 0, "non200": 0,
               "server_closed": 0, "conn_fail": 0, "not_caught_up": 0, "connects": 0, "closes": 0, "rsts": 0,
               "events": 0, "bad_lines": 0}
        for r in res.all:
            missing, unexpected, snap_wrong = res.check(r)
            if missing is None:
                tot["not_caught_up"] += 1
                continue
            tot["missing"] += missing
            tot["unexpected"] += unexpected
            tot["snap_wrong"] += snap_wrong
            for k in ("dup", "ooo", "foreign", "non200", "server_closed", "conn_fail", "connects", "closes",
                      "rsts", "events", "bad_lines"):
                tot[k] += getattr(r, k)
        tot["not_caught_up"] += sum(1 for r in res.all if r.start is not None and not (
            r.last_id is not None and r.last_id >= r.t.max_id()))
        self.tot = tot
        self.check(tot["missing"] == 0 and tot["dup"] == 0 and tot["ooo"] == 0 and tot["unexpected"] == 0
                   and tot["foreign"] == 0 and tot["snap_wrong"] == 0 and tot["bad_lines"] == 0,
                   f"resumers: missing {tot['missing']}, duplicate {tot['dup']}, out of order {tot['ooo']}, "
                   f"unexpected {tot['unexpected']}, other tenant's {tot['foreign']}, wrong snapshots "
                   f"{tot['snap_wrong']}, unparsed {tot['bad_lines']}")
        self.check(tot["not_caught_up"] == 0, f"resumers: {tot['not_caught_up']} did not catch up "
                                              f"within {self.info['drain_s']:.0f} s")
        self.check(tot["non200"] == 0 and tot["server_closed"] == 0,
                   f"resumers: {tot['non200']} answers not 200, {tot['server_closed']} streams ended by the server")
        if tot["conn_fail"]:
            self.warn.append(f"resumers: {tot['conn_fail']} connection attempts failed or timed out (retried)")

        # the slow reader
        sl = self.slow
        d = m.get("broker_sse_slow_dropped_total", 0) - sl.get("dropped_before", 0)
        self.check("t_drop" in sl, "slow reader: not dropped within 120 s")
        self.check(d == 1, f"slow reader: {d:.0f} slow-reader drops on /metrics, 1 expected "
                           f"(more: a healthy client was dropped)")
        growth = sl.get("rss_max", 0) - sl.get("rss_before", 0)
        bound = 4 * self.args.sse_queue_max / 2**20 + 8
        self.check(growth <= bound, f"slow reader: server RSS grew {growth:.1f} MB while it was connected "
                                    f"(bound {bound:.0f} MB)")
        for r in (self.honest.all if self.honest else []):
            missing, unexpected, snap_wrong = self.honest.check(r)
            self.check(missing == 0 and not unexpected and not snap_wrong and r.dup == 0 and r.ooo == 0
                       and r.server_closed == 0 and r.non200 == 0,
                       f"slow tenant's honest reader: missing {missing}, duplicate {r.dup}, out of order {r.ooo}, "
                       f"ended by the server {r.server_closed} (dropped as slow itself?)")

        # logins
        bad_other = {k: v for k, v in lg.bad_status.items() if k not in (401, 429)}
        self.check(not bad_other and lg.bad_status.get(401, 0) > 0,
                   f"wrong-password logins: answers other than 401 or 429: {bad_other}")
        good_other = {k: v for k, v in lg.good_status.items() if k != 200}
        self.check(not good_other and lg.good_status.get(200, 0) > 0, f"honest logins failed: {good_other}")

        # the server's own counts
        stored = sum(len(t.events) for t in self.tenants) + len(self.slow_t.events)
        got = m.get("broker_events_inserted_total")
        self.check(got == stored, f"/metrics broker_events_inserted_total {got} != {stored} inserts answered")
        self.check(m.get('broker_http_requests_total{code="5xx"}', 0) == 0, "the server answered 5xx")

        # memory and open files
        rows = [r for r in self.sampler.rows if r["phase"] == "soak" and r["t"] >= S["warmup_s"]]
        third = len(rows) // 3
        if third < 1:
            self.fail.append(f"memory: only {len(rows)} samples after the warm-up, too few to judge")
            self.flat = None
        else:
            first = statistics.mean(r["rss_mb"] for r in rows[:third])
            last = statistics.mean(r["rss_mb"] for r in rows[-third:])
            g = last - first
            self.flat = (first, last, g, third)
            self.check(g <= 0.10 * first and g <= 20,
                       f"memory not flat: last third's mean RSS {last:.1f} MB against the first third's "
                       f"{first:.1f} MB (+{g:.1f} MB; limit +10% and +20 MB)")
        self.check(not self.info["fds_diff"],
                   f"open files: {self.info['fds_other_end']} besides the store's once every client left, "
                   f"{self.info['fds_expected']} before any came ({self.info['fds_diff']})")
        self.check(self.info["fds_store_end"] <= STORE_FILES_MAX,
                   f"open files: the store holds {self.info['fds_store_end']} files, more than its pool's "
                   f"{STORE_FILES_MAX}")
        if ins.achieved_rate() < 0.9 * S["rate"]:
            self.warn.append(f"inserts: {ins.achieved_rate():.0f}/s achieved of {S['rate']}/s "
                             f"(the machine's CPUs are shared)")
        return not self.fail

    # ------------------------------------------------------------ report
    def report(self):
        S, a, m = self.S, self.args, self.info["metrics"]
        ins, lg, per, tot, sl = self.inserter, self.logins, self.per, self.tot, self.slow
        with open("/proc/loadavg") as f:
            load_end = " ".join(f.read().split()[:3])
        out = []
        p = out.append
        p(f"## Soak: {'PASS' if not self.fail else 'FAIL'}")
        p("")
        p(f"- Started {self.info['started']}, soak {S['minutes']} min (+ {self.info['connect_s']:.0f} s to connect, "
          f"{self.info['drain_s']:.0f} s to drain), {self.info['version']}, "
          f"commit {self.info.get('commit', '?')}; load average at the end {load_end}")
        p(f"- {S['subscribers']:,} subscribers (sseload, {len(self.subs.procs)} processes, 4 source addresses) over "
          f"{S['tenants']} tenants, {S['resumers']} resumers, inserts at {S['rate']}/s, wrong-password logins at "
          f"{a.bad_logins_per_s}/s, --keepalive=5, --sse_queue_max={a.sse_queue_max}")
        p("")
        p("| t s | RSS MB | open files | server CPU % | streams | inserts | resumer connects | wrong logins | load |")
        p("|---|---|---|---|---|---|---|---|---|")
        for r in self.sampler.rows:
            cpu = "–" if r["cpu_pct"] is None else f"{r['cpu_pct']:.0f}"
            p(f"| {r['t']}{' (end)' if r['phase'] == 'end' else ''} | {r['rss_mb']:.1f} | {r['fds']:,} | {cpu} | "
              f"{'?' if r['streams'] is None else format(r['streams'], ',')} | {r['inserts']:,} | {r['reconnects']:,} | "
              f"{r['bad_logins']:,} | {r['load']} |")
        p("")
        lat = per["lat"]
        il = ins.lat_ms
        rows = [
            ("server RSS", f"{self.base_rss:.1f} MB before subscribers; "
             + (f"mean {self.flat[0]:.1f} MB over the first third after the {S['warmup_s']} s warm-up, "
                f"{self.flat[1]:.1f} MB over the last ({self.flat[2]:+.1f} MB, {self.flat[3]} samples each); "
                if self.flat else "")
             + f"{self.info['rss_after']:.1f} MB after every client left"),
            ("open files", f"{self.base_fds} before subscribers ({self.info['fds_store_base']} of them the store's), "
             f"{self.info['fds_loaded']:,} loaded at the end, {self.info['fds_after']} after every client left: "
             f"{self.info['fds_other_end']} besides the store's ({self.info['fds_expected']} expected), the store's "
             f"{self.info['fds_store_end']} (at most {STORE_FILES_MAX})"),
            ("inserts", f"{ins.ok:,} answered ({ins.achieved_rate():.1f}/s of {S['rate']}/s), {ins.errors} failed, "
             f"{ins.late} late by >100 ms; answer p50 {pct(il, .5) or 0:.1f} ms, p99 {pct(il, .99) or 0:.1f} ms"),
            ("subscribers", f"{self.info['subs_connected']:,} connected in {self.info['connect_s']:.1f} s; "
             f"{per['events']:,} events of {per['expected']:,} expected, ended by the server {per['disconnected']}, "
             f"out of order {per['out_of_order']}"
             + (f"; delivery latency p50 {statistics.median(x[0] for x in lat):.1f} ms (median over tenants), "
                f"p99 {max(x[1] for x in lat):.1f} ms (worst tenant), max {max(x[2] for x in lat):.0f} ms"
                if lat else "")),
            ("resumers", f"{S['resumers']} over {S['tenants']} tenants: {tot['connects']:,} connections, "
             f"{tot['closes']:,} hang-ups ({tot['rsts']:,} RST), {tot['events']:,} events; missing {tot['missing']}, "
             f"duplicate {tot['dup']}, out of order {tot['ooo']}, unexpected {tot['unexpected']}, wrong snapshot "
             f"{tot['snap_wrong']}, not caught up {tot['not_caught_up']}, non-200 {tot['non200']}, ended by the "
             f"server {tot['server_closed']}, failed attempts {tot['conn_fail']}"),
            ("slow reader", (f"dropped {sl['t_drop'] - sl['t_start']:.1f} s after it connected "
                             f"({self.feeder.ok if self.feeder else 0} events of 16 KiB fed in all, "
                             f"{sum(r.events for r in self.honest.all) if self.honest else 0} received by the "
                             f"tenant's honest reader); server RSS {sl['rss_before']:.1f} MB before, "
                             f"max {sl['rss_max']:.1f} while connected, {sl.get('rss_after', 0):.1f} after"
                             if "t_drop" in sl else "NOT dropped")),
            ("logins", f"wrong password: {sum(lg.bad_status.values()):,} ({lg.bad_status}); honest: "
             f"{sum(lg.good_status.values())} ({lg.good_status}), latency p50 "
             f"{pct(lg.good_ms, .5) or 0:.0f} ms, p99 {pct(lg.good_ms, .99) or 0:.0f} ms (reported, not asserted)"),
        ]
        p("| what | figures |")
        p("|---|---|")
        for k, v in rows:
            p(f"| {k} | {v} |")
        p("")
        keys = ["broker_sse_slow_dropped_total", "broker_events_inserted_total",
                'broker_http_requests_total{code="2xx"}', 'broker_http_requests_total{code="4xx"}',
                'broker_http_requests_total{code="5xx"}', 'broker_auth_failures_total{kind="password"}',
                "broker_password_verifications_total", "broker_sse_subscribers", "broker_sse_rejected_total",
                "broker_sse_replay_pages_total", "broker_store_write_batches_total"]
        keys += sorted(k for k in m if k.startswith("broker_rate_limited_total"))
        p("/metrics at the end (subscribers still connected): " + ", ".join(
            f"`{k}` {m.get(k, float('nan')):,.0f}" for k in keys))
        p("")
        p(f"Verdict: **{'PASS' if not self.fail else 'FAIL'}**")
        for why in self.fail:
            p(f"- FAIL: {why}")
        for why in self.warn:
            p(f"- note: {why}")
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description="make soak: ~10 minutes of steady mixed load on one all-in-one "
                                             "Broker; PASS/FAIL (bench/soak.md)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 minutes, 2,000 subscribers, 100 resumers")
    ap.add_argument("--minutes", type=float, help="length of the soak (default 10; 2 with --quick)")
    ap.add_argument("--subscribers", type=int, help="sseload subscribers (default 19,000; 2,000 with --quick)")
    ap.add_argument("--tenants", type=int, help="tenants (default 50)")
    ap.add_argument("--rate", type=float, help="inserts per second over all tenants (default 200)")
    ap.add_argument("--resumers", type=int, help="connections that hang up and resume (default 300; 100 quick)")
    ap.add_argument("--bad-logins-per-s", type=float, default=5.0, help="wrong-password logins per second")
    ap.add_argument("--sse-queue-max", type=int, default=262144, help="the server's --sse_queue_max")
    ap.add_argument("--broker", default=os.path.join(ROOT, "build", "broker"),
                    help="the binary to copy and run (default build/broker)")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the resumers' hang-ups")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (store, logs)")
    args = ap.parse_args()
    S = sizes(args)
    if S["minutes"] * 60 < max(S["warmup_s"], S["slow_at_s"]) + 90:
        ap.error(f"--minutes must leave 90 s after the warm-up and the slow reader's start "
                 f"(at least {(max(S['warmup_s'], S['slow_at_s']) + 90) / 60:.2f} here)")
    if not os.access(args.broker, os.X_OK):
        raise SystemExit(f"{args.broker} not found: build it first (make build)")

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    # also when started in the background, where a shell may leave SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = Run(args)
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    run.info["commit"] = commit or "?"
    code = 1
    try:
        run.setup()
        run.soak()
        run.drain()
        ok = run.judge()
        md = run.report()
        print(md, flush=True)
        if args.out:
            with open(args.out, "w") as f:
                f.write(md + "\n")
        if not ok:
            log("server log, last lines:\n" + run.srv.log_tail())
        code = 0 if ok else 1
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        code = 130
    except Exception as e:  # noqa: BLE001 - a run that cannot finish is a FAIL, with the reason
        log(f"FAIL: {e!r}")
        code = 1
    finally:
        # a second Ctrl-C must not cut the cleanup short and leave the broker running
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.cleanup()
    return code


if __name__ == "__main__":
    sys.exit(main())

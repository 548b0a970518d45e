#!/usr/bin/env python3
"""Broker against Nchan and Mercure on this machine, under the same load generator.

    bench/run.sh                                   # every workload, every system (make bench)
    bench/run.sh --quick                           # smoke run, small sizes (~3 min)
    bench/run.sh --workloads W1,W2c --systems broker,nchan

Systems, started one after the other, each on a fresh instance for every workload, loopback only:
  broker   build/broker (all-in-one, embedded store in a temporary folder)
  broker-tmpfs  the same with its store on /dev/shm: W3, W4 and W5 only, a diagnostic row that
           shows what the disk's flush costs (nothing is durable there), not a competitor
  nchan    nginx + Debian's libnginx-mod-nchan (bench/peers/nchan.conf.in), memory store
  mercure  Caddy + the Mercure module (bench/peers/mercure, built with Go into
           ${BROKER_CACHE:-~/.cache/broker}/mercure-caddy), local (in-memory) transport

Workloads:
  W1   idle capacity: N idle subscribers; server memory per connection (RSS delta / conns)
       and server CPU while idle (keep-alives every 15 s on all three)
  W1x  W1 at 100,000: past one process's 20,000 files, so several server processes (Broker's
       split services with --stream_workers, Nchan with several nginx workers; Mercure's free
       hub runs on one node only and is reported as not run); then one event that must reach
       every subscriber
  W2a  paced fan-out: N subscribers of one topic; events one at a time at a rate raised step
       by step until the deliveries stop growing; deliveries/s and server CPU us/delivery
  W2b  burst: N subscribers; 100 events back to back; time until everyone has all 100
  W2c  latency: N subscribers; 5 events/s for 10 s; publish-to-delivery p50/p99
  W3   ingest: wrk, 50 keep-alive connections, 2 threads, 10 s, POST; inserts/s and p99
  W4   many tenants: T tenants (topics/channels) x 10 subscribers; events spread round
       robin over the tenants at a fixed rate; delivery completeness and latency
  W5   rooms: one tenant, R rooms x P subscribers (Broker: events=room.<k>.* per subscriber;
       Nchan: a channel per room; Mercure: a topic per room); events round robin over the
       rooms at a few paced rates, then back to back; deliveries/s and latency per step
  W1f  W1 with events=room.<k>.* on every subscriber (100 prefixes): Broker only
  W1-TLS   W1 over HTTPS: 10,000 idle TLS subscribers (a full handshake each); server memory
           per connection, as W1
  W2b-TLS  W2b over HTTPS: the same burst, subscribers and publisher over TLS
  (--tls runs only these two.)  Every system gets the same throwaway chain, made with the
  openssl CLI in the run's folder: a root, an intermediate and a leaf for localhost and
  127.0.0.1 (ECDSA P-256); servers get leaf + intermediate and the key, clients verify against
  the root.  Broker: --secure=true --auto_cert=false --key_path --cert_path --http_port=0;
  Nchan: listen ... ssl, TLSv1.2 TLSv1.3, ssl_session_cache shared:SSL:10m; Mercure: Caddy's
  `tls cert key`.

Load generators: build/sseload (bench/sseload.c) for subscribers, build/pubload
(bench/pubload.c) for paced publishing, wrk (bench/wrk/post.lua) for W3; for the TLS rows
the same two sources built with -DWITH_TLS (OpenSSL) as build/sseload-tls, build/pubload-tls.
(BENCH_TOOLS=DIR puts the load generators somewhere else than the broker's build folder.)  Server RSS and
CPU are read from /proc for the server's whole process tree; the load generators' own CPU is
reported separately.  Results: Markdown on stdout and in bench/results/latest.md, JSON in
bench/results/latest.json.
"""
import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import platform
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BUILD = os.environ.get("BROKER_BUILD", os.path.join(ROOT, "build"))
CACHE = os.environ.get("BROKER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "broker"))
GO = os.environ.get("GO", "/usr/local/go/bin/go")
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
TOOLS = os.environ.get("BENCH_TOOLS", BUILD)
SSELOAD = os.path.join(TOOLS, "sseload")
PUBLOAD = os.path.join(TOOLS, "pubload")
WRITEFLOOR = os.path.join(TOOLS, "writefloor")
SSELOAD_TLS = os.path.join(TOOLS, "sseload-tls")
PUBLOAD_TLS = os.path.join(TOOLS, "pubload-tls")
MERCURE_BIN = os.path.join(CACHE, "mercure-caddy")
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
KEEPALIVE_S = 15
ALL_SYSTEMS = ["broker", "broker-tmpfs", "nchan", "mercure"]
ALL_WORKLOADS = ["W1", "W1f", "W1x", "W2a", "W2b", "W2c", "W3", "W4", "W5", "W1-TLS", "W2b-TLS"]
TLS_WORKLOADS = ["W1-TLS", "W2b-TLS"]
TLS_SNI = "localhost"  # the name in the throwaway leaf (with IP 127.0.0.1), sent and verified by the clients
TLS = None             # the run's throwaway chain: make_tls_files()


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- sizes
def sizes(quick):
    if quick:
        return dict(w1_conns=[1000], w1_idle_s=4, w1x_conns=3000, w1x_procs=2, w2_conns=1000, w2a_rates=[10, 50, 200, 800, 3200],
                    w2a_step_s=3.0, w2b_events=100, w2c_rate=5, w2c_events=25, w3_duration=3,
                    w3_conns=50, w3_runs=1, w4_runs=1, w4_tenants=100, w4_sample=20, w4_subs=10, w4_events=5, w4_rate=100,
                    w1_tls_conns=[1000], w5_rooms=10, w5_per_room=100, w5_rates=[100, 400], w5_step_s=3.0,
                    w5_unpaced_events=500)
    return dict(w1_conns=[10000, 19000], w1_idle_s=20, w1x_conns=100000, w1x_procs=7, w2_conns=10000,
                w2a_rates=[2, 5, 10, 20, 50, 100, 200, 400, 800, 1600], w2a_step_s=5.0, w2b_events=100,
                w2c_rate=5, w2c_events=50, w3_duration=10, w3_conns=50, w3_runs=3, w4_runs=3,
                w4_tenants=1000, w4_sample=100, w4_subs=10, w4_events=10, w4_rate=500, w1_tls_conns=[10000],
                w5_rooms=100, w5_per_room=100, w5_rates=[100, 400, 1600], w5_step_s=5.0, w5_unpaced_events=4000)


# ---------------------------------------------------------------- /proc helpers
def proc_tree(root):
    """root and all its descendants."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in parents or p == root:
            out.append(p)
            todo.extend(c for c, pp in parents.items() if pp == p)
    return out


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / HZ
        except (OSError, IndexError):
            pass
    return total


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def pss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {"nproc": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1), "kernel": platform.release(),
            "cpu": model, "fd_hard_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}


def free_port(start):
    for p in range(start, start + 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    raise SystemExit("no free port")


def http(method, url, body=None, headers=None, timeout=30, raw=False):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout, context=tls_context(url)) as r:
        out = r.read()
        return out if raw else json.loads(out or b"null")


def wait_http(url, timeout=30, ok=(200,)):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url)
            with urllib.request.urlopen(req, timeout=2, context=tls_context(url)) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e
        except Exception as e:  # noqa: BLE001 - still starting
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


# ---------------------------------------------------------------- TLS
def tls_context(url):
    """The client context for an https:// URL (verifies the run's throwaway chain), else None."""
    if not url.startswith("https://"):
        return None
    if TLS is None:
        raise RuntimeError("https URL without the run's certificates")
    return TLS["ctx"]


def make_tls_files(parent=None):
    """A throwaway chain made with the openssl CLI: root CA -> intermediate -> leaf for
    localhost and 127.0.0.1, ECDSA P-256, valid 2 days. The servers get the leaf + the
    intermediate (as a certificate authority's "fullchain") and the key; clients verify against
    the root. Returns the file names and a Python client context."""
    import ssl
    d = tempfile.mkdtemp(prefix="bench-tls-", dir=parent)
    os.chmod(d, 0o755)  # nginx workers may run as another user
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def ossl(*a):
        r = subprocess.run(["openssl", *a], cwd=d, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl " + " ".join(a[:2]) + ": " + r.stderr[-500:])
    with open(os.path.join(d, "int.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n")
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{TLS_SNI},IP:127.0.0.1\n")
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench throwaway root",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", *ec, "-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=bench throwaway intermediate")
    ossl("x509", "-req", "-in", "int.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "int.pem",
         "-days", "2", "-extfile", "int.ext")
    ossl("req", *ec, "-keyout", "key.pem", "-out", "leaf.csr", "-subj", f"/CN={TLS_SNI}")
    ossl("x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial", "-out",
         "leaf.pem", "-days", "2", "-extfile", "leaf.ext")
    with open(os.path.join(d, "fullchain.pem"), "w") as out:
        for name in ("leaf.pem", "int.pem"):
            with open(os.path.join(d, name)) as f:
                out.write(f.read())
    ossl("verify", "-CAfile", "ca.pem", "-untrusted", "int.pem", "leaf.pem")
    for name in ("key.pem", "fullchain.pem", "ca.pem"):
        os.chmod(os.path.join(d, name), 0o644)  # a throwaway key; nginx's workers read nothing, the master does
    ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
    return {"dir": d, "key": os.path.join(d, "key.pem"), "chain": os.path.join(d, "fullchain.pem"),
            "ca": os.path.join(d, "ca.pem"), "ctx": ctx}


def tls_probe(port):
    """One handshake as the load generators make it (SNI localhost, chain verified):
    the protocol, cipher and the server's chain length."""
    import ssl
    ctx = ssl.create_default_context(cafile=TLS["ca"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=TLS_SNI) as s:
            out = {"version": s.version(), "cipher": s.cipher()[0]}
            try:
                out["chain_len"] = len(s.get_unverified_chain())
            except AttributeError:
                pass
            return out


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256_jwt(claims, key):
    h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    s = b64url(hmac.new(key.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{s}"


# ---------------------------------------------------------------- builds
def run_checked(cmd, **kw):
    log("$", " ".join(shlex.quote(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def build_tools(tls=False):
    tools = [("sseload.c", SSELOAD, []), ("pubload.c", PUBLOAD, []), ("writefloor.c", WRITEFLOOR, [])]
    if tls:  # the same sources with OpenSSL: --tls (the plain tools stay free of it)
        tools += [("sseload.c", SSELOAD_TLS, ["-DWITH_TLS"]), ("pubload.c", PUBLOAD_TLS, ["-DWITH_TLS"])]
    for src, out, flags in tools:
        src = os.path.join(BENCH, src)
        if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            libs = ["-lssl", "-lcrypto"] if flags else []
            run_checked(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-o", out, src, *libs])


def build_broker():
    for attempt in range(3):
        r = subprocess.run(["cmake", "--build", BUILD, "-j2"], cwd=ROOT, capture_output=True, text=True)
        if r.returncode == 0:
            return
        log(f"broker build failed (attempt {attempt + 1}), retrying in 60 s:\n" + r.stdout[-1500:] + r.stderr[-1500:])
        time.sleep(60)
    raise SystemExit("cannot build the broker (cmake --build build)")


def ensure_packages(systems):
    need = []
    if "nchan" in systems and not os.path.exists(NCHAN_MODULE):
        need.append("nchan")
    if not shutil.which("wrk"):
        need.append("wrk")
    if "nchan" in systems and not shutil.which("nginx"):
        need.append("nginx")
    if need:
        log("missing", need, "-> scripts/deps.sh bench")
        run_checked([os.path.join(ROOT, "scripts", "deps.sh"), "bench"])


def build_mercure():
    src = os.path.join(BENCH, "peers", "mercure")
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        with open(os.path.join(src, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    go_version = subprocess.run([GO, "version"], capture_output=True, text=True, check=True).stdout.strip()
    h.update(go_version.encode())
    stamp = h.hexdigest()
    stamp_file = MERCURE_BIN + ".stamp"
    try:
        with open(stamp_file) as f:
            if f.read().strip() == stamp and os.access(MERCURE_BIN, os.X_OK):
                return None
    except OSError:
        pass
    os.makedirs(CACHE, exist_ok=True)
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod",
               # the proxy's checksum database does not answer for this module; go.sum pins it
               GONOSUMDB="github.com/dunglas/mercure")
    log("building the Mercure Caddy binary (first time: a few minutes)")
    t0 = time.time()
    tmp = MERCURE_BIN + ".tmp"
    run_checked([GO, "build", "-trimpath", "-o", tmp, "."], cwd=src, env=env)
    os.replace(tmp, MERCURE_BIN)
    with open(stamp_file, "w") as f:
        f.write(stamp + "\n")
    took = time.time() - t0
    log(f"Mercure built in {took:.0f} s")
    return took


def versions(systems):
    v = {}
    src = ROOT  # the broker's sources: those its build folder was configured from (BROKER_BUILD may be another tree's)
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_HOME_DIRECTORY:"):
                    src = line.split("=", 1)[1].strip() or ROOT
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=src, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=src,
                               capture_output=True, text=True).stdout.strip()
        v["broker"] = f"git {rev}{' (uncommitted changes)' if dirty else ''}"
    except OSError:
        v["broker"] = "?"
    if "nchan" in systems:
        ng = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().replace("nginx version: ", "")
        nc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"], capture_output=True, text=True).stdout
        v["nchan"] = f"{ng}, libnginx-mod-nchan {nc}"
    if "mercure" in systems:
        mods = {}
        with open(os.path.join(BENCH, "peers", "mercure", "go.mod")) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] in ("github.com/dunglas/mercure/caddy", "github.com/caddyserver/caddy/v2",
                                                    "github.com/dunglas/mercure"):
                    mods[parts[0]] = parts[1]
        v["mercure"] = (f"mercure {mods.get('github.com/dunglas/mercure', mods.get('github.com/dunglas/mercure/caddy', '?'))}"
                        f", caddy {mods.get('github.com/caddyserver/caddy/v2', '?')}")
    return v


# ---------------------------------------------------------------- systems
class System:
    name = "?"
    port = 0
    workloads = None  # None: every workload; else the only ones this system runs
    tls = None        # the run's chain (make_tls_files()) when the system serves HTTPS
    tls_info = None   # what a probe handshake negotiated

    def url(self, port=None, path=""):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port or self.port}{path}"

    def probe_tls(self):
        if self.tls:
            self.tls_info = tls_probe(self.port)

    def store_counters(self):
        """(inserts stored, store writes, µs spent writing) so far, or None: Broker's
        /metrics; the peers keep nothing."""
        return None

    def __init__(self, args):
        self.args = args
        self.proc = None
        self.dir = None
        self.logf = None

    def pids(self):
        return proc_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for pid in reversed(proc_tree(self.proc.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait(timeout=10)
        self.proc = None
        if self.logf:
            self.logf.close()
            self.logf = None
        if self.dir and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "server.log"), errors="replace") as f:
                return f.read()[-2000:]
        except (OSError, TypeError):
            return ""

    def _spawn(self, cmd, env=None):
        self.logf = open(os.path.join(self.dir, "server.log"), "a")
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.dir, start_new_session=True)

    def clean_baseline(self):
        """Before a memory baseline: nothing to do for most servers."""

    def scaled_out(self, procs):
        """(a system like this one spread over `procs` server processes, None) or (None, why not)."""
        return None, "runs as one process only"

    # per-tenant subscriber path + headers for sseload; publish spec for pubload
    def tenants(self, n):
        raise NotImplementedError


class Broker(System):
    name = "broker"
    db_parent = None  # the folder of the store's temporary folder (None: the usual temp dir)
    db_dir = None     # a folder kept from an earlier run (its store and users), instead of a new one

    def start(self):
        self.dir = self.db_dir or tempfile.mkdtemp(prefix="bench-broker-", dir=self.db_parent)
        self.port = free_port(27180)
        self.admin, self.secret = "bench-admin-token", "bench-jwt-secret-0123456789"
        cmd = [os.path.join(BUILD, "broker"), f"--port={self.port}", "--bind=127.0.0.1", f"--db={self.dir}/db",
               f"--admin_token={self.admin}", f"--jwt_secret={self.secret}", "--log_level=warning",
               f"--keepalive={KEEPALIVE_S}", "--ntp_servers=127.0.0.1:9"]
        if self.tls:  # HTTPS on --port, no plain-HTTP listener
            cmd += ["--secure=true", "--auto_cert=false", f"--key_path={self.tls['key']}",
                    f"--cert_path={self.tls['chain']}", "--http_port=0"]
        self.cmd = cmd
        self.api_port = self.pub_port = self.port
        self._spawn(cmd)
        self._wait_ready()
        self.probe_tls()

    def _wait_ready(self, timeout=30):
        """/readyz, or the process's own exit (a refused flag or certificate) said at once."""
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with status {self.proc.returncode}: {self.log_tail()[-600:]}")
            try:
                wait_http(self.url(self.port, "/readyz"), timeout=min(2, max(0.2, deadline - time.time())))
                return
            except RuntimeError:
                if time.time() >= deadline:
                    raise

    def scaled_out(self, procs):
        return BrokerSplit(self.args, procs), None

    def store_counters(self):
        try:
            url = self.url(self.port, "/metrics")
            with urllib.request.urlopen(url, timeout=10, context=tls_context(url)) as r:
                text = r.read().decode()
        except OSError:
            return None
        got = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("broker_events_inserted_total", "broker_store_write_batches_total",
                                                "broker_store_write_microseconds_total"):
                got[parts[0]] = float(parts[1])
        if len(got) != 3:
            return None
        return (got["broker_events_inserted_total"], got["broker_store_write_batches_total"],
                got["broker_store_write_microseconds_total"])

    def clean_baseline(self):
        """Restart on the same store: create_user/login ran Argon2 (tens of MiB), and glibc keeps
        that heap for later allocations, which would hide the subscribers' memory. The JWTs
        stay valid (same secret, users in the store)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.logf.close()
        self._spawn(self.cmd)
        self._wait_ready()

    def _user(self, i):
        u, t = f"bench{i}", f"tenant{i}"
        base = self.url(self.api_port)
        http("POST", base + "/create_user", {"username": u, "password": "benchpass1", "admin_token": self.admin,
                                             "tenant_name": t}, timeout=120)
        return u, t

    def _login(self, u):
        return http("POST", self.url(self.api_port, "/login"), {"username": u, "password": "benchpass1"},
                    timeout=120)["jwt"]

    def tenants(self, n):
        """n users, one per tenant; returns their JWTs (login for the first, the rest
        minted with the same claims when the server accepts a minted one, else /login)."""
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            users = list(ex.map(self._user, range(n)))
        jwt0 = self._login(users[0][0])
        jwts = [jwt0]
        if n > 1:
            claims0 = json.loads(base64.urlsafe_b64decode(jwt0.split(".")[1] + "=="))

            def mint(u, t):
                c = dict(claims0)
                c["sub"], c["tenant"] = u, t
                return hs256_jwt(c, self.secret)
            try:
                ok = http("GET", self.url(self.api_port, "/verify"),
                          headers={"Authorization": "Bearer " + mint(*users[1])})["username"] == users[1][0]
            except Exception:  # noqa: BLE001
                ok = False
            if ok:
                jwts += [mint(u, t) for u, t in users[1:]]
            else:
                with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
                    jwts += list(ex.map(self._login, [u for u, _ in users[1:]]))
        if n > 10:
            log(f"broker: {n} users/tenants ready in {time.time() - t0:.1f} s")
        return [{"sub_path": f"/sse?access_token={j}", "sub_headers": [], "var": j} for j in jwts]

    def pub_spec(self, var=None):
        return {"path": "/insert",
                "headers": [f"Authorization: Bearer {var if var else '{V}'}", "Content-Type: application/json"],
                "body": '{"event":"e","data":{"t":{T},"n":{N}}}'}

    def wrk_env(self, tenant):
        return {"WRK_PATH": "/insert", "WRK_AUTH": f"Bearer {tenant['var']}", "WRK_CTYPE": "application/json",
                "WRK_BODY": '{"event":"e","data":{"t":0,"n":1,"s":"ingest"}}'}

    def rooms(self):
        """W5 and W1f: one user and tenant; a subscriber of room k asks for `room.<k>.*`
        (sseload's {R}), event N is named `room.<N mod rooms>.msg` (pubload's {V})."""
        t = self.tenants(1)[0]
        spec = dict(self.pub_spec(t["var"]), body='{"event":"room.{V}.msg","data":{"t":{T},"n":{N}}}')
        return {"sub_path": t["sub_path"] + "&events=room.{R}.*", "spec": spec}


class BrokerTmpfs(Broker):
    """Diagnostic, not a competitor: the same all-in-one with its store on tmpfs (/dev/shm),
    where a flush costs nothing, so that durability is not kept. Run beside Broker in the
    workloads that wait for the store (W3, W4, W5): the difference between the two rows is what
    the disk's flush costs on this machine, in the same run as the peers."""
    name = "broker-tmpfs"
    workloads = ("W3", "W4", "W5")

    db_parent = "/dev/shm"

    def start(self):
        if not os.path.isdir(self.db_parent):
            raise RuntimeError(f"{self.db_parent} is missing")
        fs = os.statvfs(self.db_parent)
        if fs.f_bavail * fs.f_frsize < 1 << 30:
            raise RuntimeError(f"{self.db_parent} has under 1 GiB free")
        super().start()


class BrokerSplit(Broker):
    """The split services on one embedded store, as in docker-compose.yml: broker-auth,
    broker-ingest, and broker-stream with --stream_workers N (N processes on one port,
    SO_REUSEPORT), joined by the ZeroMQ bus over loopback TCP."""
    name = "broker"

    def __init__(self, args, workers):
        super().__init__(args)
        self.workers = workers
        self.procs = []

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-broker-split-")
        self.admin, self.secret = "bench-admin-token", "bench-jwt-secret-0123456789"
        self.api_port = free_port(27180)
        self.pub_port = free_port(self.api_port + 1)
        self.port = free_port(self.pub_port + 1)
        bus_ingest, bus_auth = free_port(self.port + 1), free_port(self.port + 2)
        if bus_auth == bus_ingest:
            bus_auth = free_port(bus_ingest + 1)
        common = [f"--db={self.dir}/db", "--bind=127.0.0.1", f"--admin_token={self.admin}",
                  f"--jwt_secret={self.secret}", "--log_level=warning", f"--keepalive={KEEPALIVE_S}",
                  "--ntp_servers=127.0.0.1:9"]
        self.logf = open(os.path.join(self.dir, "server.log"), "a")
        for cmd in ([os.path.join(BUILD, "broker-auth"), *common, f"--port={self.api_port}",
                     f"--bus_publish=tcp://127.0.0.1:{bus_auth}"],
                    [os.path.join(BUILD, "broker-ingest"), *common, f"--port={self.pub_port}",
                     f"--bus_publish=tcp://127.0.0.1:{bus_ingest}"],
                    [os.path.join(BUILD, "broker-stream"), *common, f"--port={self.port}",
                     f"--stream_workers={self.workers}",
                     f"--bus_subscribe=tcp://127.0.0.1:{bus_ingest},tcp://127.0.0.1:{bus_auth}"]):
            self.procs.append(subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                               start_new_session=True))
        self.proc = self.procs[-1]
        for port in (self.api_port, self.pub_port, self.port):
            wait_http(self.url(port, "/readyz"))
        deadline = time.time() + 10  # the stream workers, each subscribed to the bus
        while len(self.pids()) < 2 + 1 + self.workers and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)

    def pids(self):
        return [p for pr in self.procs if pr.poll() is None for p in proc_tree(pr.pid)]

    def alive(self):
        return bool(self.procs) and all(pr.poll() is None for pr in self.procs)

    def stop(self):
        procs, self.procs = self.procs, []
        for pr in reversed(procs):  # the stream processes first, then ingest and auth
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in reversed(procs):
            try:
                pr.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for pid in reversed(proc_tree(pr.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                pr.wait(timeout=10)
        self.proc = None
        super().stop()  # closes the log and removes the folder

    def clean_baseline(self):
        """Nothing: create_user/login ran in broker-auth, not in the stream processes."""


class Nchan(System):
    name = "nchan"

    def __init__(self, args, workers=None):
        super().__init__(args)
        self.workers = workers or args.nchan_workers

    def scaled_out(self, procs):
        return Nchan(self.args, procs), None

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-nchan-")
        os.chmod(self.dir, 0o755)
        self.port = free_port(27280)
        with open(os.path.join(BENCH, "peers", "nchan.conf.in")) as f:
            conf = f.read()
        subs = {"@PREFIX@": self.dir, "@NCHAN_MODULE@": NCHAN_MODULE,
                "@USER_LINE@": "user root root;" if os.geteuid() == 0 else "",
                "@WORKERS@": str(self.workers), "@SHM@": "512M", "@BUFFER@": "100",
                # several workers: let the kernel spread the connections (one accept queue each),
                # or one worker takes them until its 20,000 files run out
                "@LISTEN_OPTS@": (" reuseport" if self.workers > 1 else "") + (" ssl" if self.tls else ""),
                # HTTPS as a user would set it up: the chain and key, TLS 1.2 and 1.3, a shared
                # session cache (nginx's own default ciphers, session tickets on)
                "@TLS@": ("" if not self.tls else
                          f"ssl_certificate {self.tls['chain']};\n        ssl_certificate_key {self.tls['key']};\n"
                          "        ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:SSL:10m;\n"
                          "        ssl_session_timeout 10m;"),
                "@MSG_TIMEOUT@": "60s", "@PORT@": str(self.port), "@PING@": str(KEEPALIVE_S)}
        for k, v in subs.items():
            conf = conf.replace(k, v)
        conf_path = os.path.join(self.dir, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self._spawn(["nginx", "-p", self.dir, "-c", conf_path, "-e", os.path.join(self.dir, "error.log"),
                     "-g", "daemon off;"])
        wait_http(self.url(self.port, "/nope"), ok=(404,))
        # wait for the workers
        deadline = time.time() + 10
        while len(self.pids()) < 1 + self.workers and time.time() < deadline:
            time.sleep(0.1)
        self.probe_tls()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful stop of nginx
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        super().stop()

    def tenants(self, n):
        return [{"sub_path": f"/sub/ch{i}", "sub_headers": [], "var": f"ch{i}"} for i in range(n)]

    def pub_spec(self, var=None):
        return {"path": f"/pub/{var if var else '{V}'}", "headers": ["Content-Type: application/json"],
                "body": '{"t":{T},"n":{N}}'}

    def wrk_env(self, tenant):
        return {"WRK_PATH": f"/pub/{tenant['var']}", "WRK_AUTH": "", "WRK_CTYPE": "application/json",
                "WRK_BODY": '{"t":0,"n":1,"s":"ingest"}'}

    def rooms(self):
        """W5: a channel per room."""
        return {"sub_path": "/sub/room{R}", "spec": self.pub_spec("room{V}")}


class Mercure(System):
    name = "mercure"

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-mercure-")
        self.port = free_port(27380)
        self.pub_key = "bench-mercure-publisher-key-0123456789"
        self.sub_key = "bench-mercure-subscriber-key-0123456789"
        self.pub_jwt = hs256_jwt({"mercure": {"publish": ["*"]}}, self.pub_key)
        transport = self.args.mercure_transport
        if transport == "bolt":
            transport = f"bolt {{\n\t\t\t\tpath {self.dir}/mercure.db\n\t\t\t}}"
        with open(os.path.join(BENCH, "peers", "Caddyfile.in")) as f:
            conf = f.read()
        for k, v in {"@PREFIX@": self.dir, "@PORT@": str(self.port), "@TRANSPORT@": transport,
                     "@PUB_KEY@": self.pub_key, "@SUB_KEY@": self.sub_key, "@PING@": str(KEEPALIVE_S),
                     "@SCHEME@": "https" if self.tls else "http",
                     # the same chain and key as the others, loaded from files (no ACME)
                     "@TLS@": f"tls {self.tls['chain']} {self.tls['key']}" if self.tls else ""}.items():
            conf = conf.replace(k, v)
        path = os.path.join(self.dir, "Caddyfile")
        with open(path, "w") as f:
            f.write(conf)
        env = dict(os.environ, HOME=self.dir, XDG_DATA_HOME=self.dir, XDG_CONFIG_HOME=self.dir)
        self._spawn([MERCURE_BIN, "run", "--config", path, "--adapter", "caddyfile"], env=env)
        wait_http(self.url(self.port, "/nope"), ok=(404,))
        self.probe_tls()

    def scaled_out(self, procs):
        return None, ("not run: the free Mercure hub runs on one node only (its `local` and `bolt` transports; "
                      "several nodes need the paid High Availability version, mercure.rocks/docs/hub/cluster), "
                      "and one process may open at most 20,000 files here")

    def tenants(self, n):
        return [{"sub_path": f"/.well-known/mercure?topic=ch{i}", "sub_headers": [], "var": f"ch{i}"} for i in range(n)]

    def pub_spec(self, var=None):
        return {"path": "/.well-known/mercure",
                "headers": [f"Authorization: Bearer {self.pub_jwt}", "Content-Type: application/x-www-form-urlencoded"],
                "body": f"topic={var if var else '{V}'}&data=%7B%22t%22%3A{{T}}%2C%22n%22%3A{{N}}%7D"}

    def rooms(self):
        """W5: a topic per room."""
        return {"sub_path": "/.well-known/mercure?topic=room{R}", "spec": self.pub_spec("room{V}")}

    def wrk_env(self, tenant):
        return {"WRK_PATH": "/.well-known/mercure", "WRK_AUTH": f"Bearer {self.pub_jwt}",
                "WRK_CTYPE": "application/x-www-form-urlencoded",
                "WRK_BODY": f"topic={tenant['var']}&data=%7B%22t%22%3A0%2C%22n%22%3A1%2C%22s%22%3A%22ingest%22%7D"}


SYSTEMS = {"broker": Broker, "broker-tmpfs": BrokerTmpfs, "nchan": Nchan, "mercure": Mercure}


# ---------------------------------------------------------------- load generators
class SSELoad:
    """One sseload run; reads CONNECTED/RESULT from stdout and progress lines from stderr."""

    def __init__(self, port, path, n, extra, headers=(), progress=0.25, tls=None, rooms=0):
        cmd = [SSELOAD_TLS if tls else SSELOAD, "--port", str(port), "--path", path, "-n", str(n), "-q",
               "--progress", str(progress)]
        if rooms:  # connection g asks for the path with {R} = g mod rooms
            cmd += ["--rooms", str(rooms)]
        if tls:
            cmd += ["--tls", "--tls-ca", tls["ca"], "--sni", TLS_SNI]
        for h in headers:
            cmd += ["--header", h]
        cmd += [str(x) for x in extra]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.connected = None
        self.connected_at = None
        self.result = None
        self.events = 0          # latest progress count
        self.samples = []        # (monotonic, events)
        self.err_tail = []
        self._cv = threading.Condition()
        self._t_out = threading.Thread(target=self._read_out, daemon=True)
        self._t_err = threading.Thread(target=self._read_err, daemon=True)
        self._t_out.start()
        self._t_err.start()

    def _read_out(self):
        for line in self.proc.stdout:
            if line.startswith("CONNECTED"):
                with self._cv:
                    self.connected = int(line.split()[1])
                    self.connected_at = time.monotonic()
                    self._cv.notify_all()
            elif line.startswith("RESULT "):
                self.result = json.loads(line[7:])

    def _read_err(self):
        for line in self.proc.stderr:
            if " events " in line:
                try:
                    ev = int(line.split(" events ")[1].split()[0])
                    self.events = ev
                    self.samples.append((time.monotonic(), ev))
                except (IndexError, ValueError):
                    pass
            else:
                self.err_tail = (self.err_tail + [line.rstrip()])[-10:]

    def wait_connected(self, timeout):
        with self._cv:
            self._cv.wait_for(lambda: self.connected is not None or self.proc.poll() is not None, timeout)
        if self.connected is None:
            raise RuntimeError("sseload did not connect: " + " | ".join(self.err_tail))
        return self.connected

    def pids(self):
        return proc_tree(self.proc.pid) if self.proc.poll() is None else []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._t_out.join(timeout=10)
        self._t_err.join(timeout=10)
        if self.result is None:
            raise RuntimeError("sseload gave no RESULT: " + " | ".join(self.err_tail))
        return self.result


def pubload(port, spec, rate, count=0, duration=0, conns=1, vars_file=None, timeout=120, tls=None):
    cmd = [PUBLOAD_TLS if tls else PUBLOAD, "--port", str(port), "--path", spec["path"], "--body", spec["body"],
           "--rate", str(rate), "--count", str(count), "--conns", str(conns), "--timeout", str(timeout)]
    if tls:
        cmd += ["--tls", "--tls-ca", tls["ca"], "--sni", TLS_SNI]
    if duration:
        cmd += ["--duration", str(duration)]
    for h in spec["headers"]:
        cmd += ["--header", h]
    if vars_file:
        cmd += ["--vars", vars_file]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"pubload failed: {r.stderr.strip()[-500:]}")
    return json.loads(lines[-1][7:])


class Sampler:
    """Samples CPU seconds of the server and of the load generators every `period` s."""

    def __init__(self, server, loads, period=0.25):
        self.server, self.loads, self.period = server, loads, period
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.now())
            self._stop.wait(self.period)

    def now(self):
        lp = [p for l in self.loads for p in l.pids()]
        return (time.monotonic(), cpu_seconds(self.server.pids()), cpu_seconds(lp),
                max((l.events for l in self.loads), default=0))

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)


def interp(samples, t, idx):
    """Value idx of samples at monotonic time t, linear between the two nearest samples."""
    prev = None
    for s in samples:
        if s[0] >= t:
            if prev is None or s[0] == prev[0]:
                return s[idx]
            f = (t - prev[0]) / (s[0] - prev[0])
            return prev[idx] + f * (s[idx] - prev[idx])
        prev = s
    return samples[-1][idx] if samples else 0


def ms(x):
    return None if x is None else round(x, 3)


# ---------------------------------------------------------------- workloads
def hold_idle(sysobj, S, n, one_event=False, sseload_args=(), rooms=0):
    """Starts sysobj, opens n idle subscribers of one tenant, and measures the server's memory
    with them and its CPU while they idle; with one_event, then publishes one event that every
    subscriber must receive. With rooms, subscriber g asks for room g mod rooms (sysobj.rooms():
    Broker's events=room.<k>.*). Returns the row."""
    sysobj.start()
    try:
        if rooms:
            tenant = {"sub_path": sysobj.rooms()["sub_path"]}
        else:
            tenant = sysobj.tenants(1)[0]
        sysobj.clean_baseline()
        time.sleep(1.0)
        pids = sysobj.pids()
        rss0, pss0 = rss_bytes(pids), pss_bytes(pids)
        hold = 30 + S["w1_idle_s"] + 30
        if one_event:
            until = ["--until-events", 1, "--expect", 1, "--timeout", hold + 240]
        else:
            until = ["--hold", hold, "--timeout", hold + 120]
        load = SSELoad(sysobj.port, tenant["sub_path"], n, until + ["--connect-rate", 4000, *sseload_args], progress=1,
                       tls=sysobj.tls, rooms=rooms)
        t0 = time.monotonic()
        connected = load.wait_connected(240)
        connect_s = time.monotonic() - t0
        time.sleep(3)
        pids = sysobj.pids()
        rss1, pss1 = rss_bytes(pids), pss_bytes(pids)
        fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids if os.path.exists(f"/proc/{p}/fd"))
        c0, l0 = cpu_seconds(pids), cpu_seconds(load.pids())
        time.sleep(S["w1_idle_s"])
        pids = sysobj.pids()
        c1, l1 = cpu_seconds(pids), cpu_seconds(load.pids())
        rss2 = rss_bytes(pids)
        if one_event:
            pr = pubload(getattr(sysobj, "pub_port", sysobj.port), sysobj.pub_spec(tenant["var"]), 1, count=1,
                         timeout=30, tls=sysobj.tls)
            res = load.finish(90)
        else:
            load.stop()
            res = load.finish(60)
        alive = sysobj.alive()
    finally:
        sysobj.stop()
    opened = max(1, connected)
    row = {"conns": n, "rooms": rooms, "open": res["connections_open"], "open_at_end": res["connections_open_at_end"],
           "connect_errors": res["connect_errors"], "non200": res["non200"],
           "errors": {k: res[k] for k in ("err_addrnotavail", "err_refused", "err_timeout", "err_reset",
                                          "err_other", "connect_retries")},
           "connect_s": round(connect_s, 2), "server_procs": len(pids),
           "rss_before_mb": round(rss0 / 2**20, 1), "rss_with_mb": round(rss1 / 2**20, 1),
           "rss_after_idle_mb": round(rss2 / 2**20, 1),
           "rss_per_conn_b": round((rss1 - rss0) / opened), "pss_per_conn_b": round((pss1 - pss0) / opened),
           "idle_cpu_pct": round(100 * (c1 - c0) / S["w1_idle_s"], 2), "idle_s": S["w1_idle_s"], "server_fds": fds,
           "sseload_cpu_pct": round(100 * (l1 - l0) / S["w1_idle_s"], 2),
           "keepalives": res["keepalives_total"], "server_alive": alive}
    if sysobj.tls:
        row.update({"err_tls": res.get("err_tls"), "tls": sysobj.tls_info})
    if one_event:
        row.update({"pub_ok": pr["ok"], "deliveries": res["events_total"],
                    "expected": pr["ok"] * res["connections_open"], "conns_below_expect": res["conns_below_expect"],
                    "reach_all_ms": res["reach_all_max_ms"], "stop_reason": res["stop_reason"]})
    log(f"  {sysobj.name} {n}: {row}")
    return row


def w1(sysobj, S, args):
    return {"rows": [hold_idle(sysobj, S, n) for n in S["w1_conns"]]}


def w1f(sysobj, S, args):
    """W1 with an events filter on every subscriber: `events=room.<k>.*`, k = g mod 100, so the
    tenant's index holds 100 prefixes of 100 subscribers each. Broker only."""
    if not isinstance(sysobj, Broker) or isinstance(sysobj, BrokerSplit):
        return {"not_run": "Broker only: a Nchan channel or Mercure topic per subscriber group is W1 itself"}
    return {"rows": [hold_idle(sysobj, S, n, rooms=100) for n in S["w1_conns"]]}


def w1x(sysobj, S, args):
    """W1 at S["w1x_conns"] subscribers over S["w1x_procs"] server processes."""
    big, why = sysobj.scaled_out(S["w1x_procs"])
    if big is None:
        return {"not_run": why}
    # 16 source addresses, not sseload's default of one per 25,000: with each address's port range
    # nearly full, the kernel's search for a free port in connect() slowed the whole run's
    # connecting to ~1,100/s (100,000 in 86-93 s on both Broker and Nchan)
    return hold_idle(big, S, S["w1x_conns"], one_event=True, sseload_args=["--sources", 16])


def w2a(sysobj, S, args):
    n = S["w2_conns"]
    step_s = S["w2a_step_s"]
    sysobj.start()
    steps = []
    try:
        tenant = sysobj.tenants(1)[0]
        spec = sysobj.pub_spec(tenant["var"])
        total_t = len(S["w2a_rates"]) * (step_s + 6) + 60
        load = SSELoad(sysobj.port, tenant["sub_path"], n, ["--timeout", int(total_t), "--max-ids", 100,
                                                             "--connect-rate", 4000, "--procs", 2], progress=0.25)
        connected = load.wait_connected(120)
        time.sleep(1.5)
        sampler = Sampler(sysobj, [load])
        best = 0
        for rate in S["w2a_rates"]:
            t_start = time.monotonic()
            pr = pubload(sysobj.port, spec, rate, count=0, duration=step_s, conns=args.pub_conns, timeout=step_s + 60)
            t_end = time.monotonic()
            # settle: wait (bounded) until the deliveries stop moving for 0.6 s
            settle_deadline = t_end + 15
            last, last_change = load.events, time.monotonic()
            while time.monotonic() < settle_deadline and time.monotonic() - last_change < 0.6:
                time.sleep(0.1)
                if load.events != last:
                    last, last_change = load.events, time.monotonic()
            final = load.events
            smp = list(sampler.samples)
            ev0 = interp(smp, t_start, 3)
            delivered = final - ev0
            # first and last delivery of the step's events, both as seen through sseload's
            # progress lines (the same reporting lag at both ends)
            t_first = next((x[0] for x in smp if x[0] >= t_start and x[3] > ev0), t_start)
            t_last = next((x[0] for x in smp if x[0] >= t_start and x[3] >= final), t_end)
            span = max(t_last - t_first, 0.05) + 1.0 / max(pr["achieved_rate"], 1e-3)
            srv = interp(smp, t_last, 1) - interp(smp, t_first, 1)
            gen = interp(smp, t_last, 2) - interp(smp, t_first, 2)
            cpu_span = max(t_last - t_first, 0.05)
            expected = pr["ok"] * connected
            lag = t_last - (t_start + step_s)   # after the step's sending time
            step = {"rate_target": rate, "pub_rate": round(pr["achieved_rate"], 1), "pub_ok": pr["ok"],
                    "pub_non2xx": pr["non2xx"], "pub_errors": pr["errors"], "pub_p99_ms": pr["resp_p99_ms"],
                    "pub_cpu_s": pr["cpu_s"],
                    # deliveries of this step's events over the time from the first of them to the
                    # last (+ one publish interval): the offered rate while the server keeps up,
                    # its capacity when it falls behind
                    "deliveries_per_s": round(delivered / span),
                    "offered_deliveries_per_s": round(pr["achieved_rate"] * connected),
                    "delivered": round(delivered), "expected": expected, "tail_s": round(lag, 2),
                    "server_cpu_pct": round(100 * srv / cpu_span, 1),
                    "server_cpu_us_per_delivery": round(1e6 * srv / delivered, 3) if delivered > 0 else None,
                    "sseload_cpu_pct": round(100 * gen / cpu_span, 1)}
            # kept up: every delivery done, the last one within a short tail after the step's
            # sending time (measured from the step's start: publish answers may lag behind)
            keeps_up = (delivered >= 0.99 * expected and lag <= max(0.75, 0.15 * step_s)
                        and delivered / span >= 0.85 * pr["achieved_rate"] * connected)
            step["kept_up"] = keeps_up
            steps.append(step)
            log(f"  W2a {sysobj.name} rate {rate}: {step}")
            dps = step["deliveries_per_s"]
            growth = dps / best if best else 99
            best = max(best, dps)
            if not sysobj.alive():
                break
            if not keeps_up or growth < 1.05 or pr["achieved_rate"] < 0.8 * rate:
                break
        sampler.stop()
        load.stop()
        res = load.finish(60)
    finally:
        sysobj.stop()
    peak = max(steps, key=lambda s: s["deliveries_per_s"]) if steps else {}
    return {"conns": n, "open": res["connections_open"], "open_at_end": res["connections_open_at_end"],
            "disconnected": res["disconnected"], "steps": steps,
            "peak_deliveries_per_s": peak.get("deliveries_per_s"), "peak_pub_rate": peak.get("pub_rate"),
            "peak_server_cpu_pct": peak.get("server_cpu_pct"), "peak_sseload_cpu_pct": peak.get("sseload_cpu_pct"),
            "us_per_delivery_at_peak": peak.get("server_cpu_us_per_delivery"),
            "us_per_delivery_low_rate": steps[0]["server_cpu_us_per_delivery"] if steps else None}


def fanout_once(sysobj, S, n, events, rate, conns=1):
    """n subscribers, `events` events at `rate` (0 = back to back); sseload waits for all."""
    sysobj.start()
    try:
        tenant = sysobj.tenants(1)[0]
        spec = sysobj.pub_spec(tenant["var"])
        # bounds: 10,000 TLS handshakes take ~20-30 s here (OpenSSL 3.0 on both sides, ~1 ms of
        # client CPU each), and a peer's burst over TLS up to ~50 s: give TLS runs more room
        tmo = 300 if sysobj.tls else 90
        load = SSELoad(sysobj.port, tenant["sub_path"], n, ["--until-events", events, "--expect", events,
                                                             "--timeout", tmo, "--connect-rate", 4000, "--procs", 2],
                       progress=0.5, tls=sysobj.tls)
        connected = load.wait_connected(240 if sysobj.tls else 120)
        time.sleep(1.5)
        c0, l0 = cpu_seconds(sysobj.pids()), cpu_seconds(load.pids())
        pr = pubload(sysobj.port, spec, rate, count=events, conns=conns, timeout=tmo - 10, tls=sysobj.tls)
        res = load.finish(tmo + 5)
        c1 = cpu_seconds(sysobj.pids())
        alive = sysobj.alive()
    finally:
        sysobj.stop()
    return connected, pr, res, c1 - c0, alive


def w2b(sysobj, S, args):
    n, e = S["w2_conns"], S["w2b_events"]
    connected, pr, res, cpu, alive = fanout_once(sysobj, S, n, e, 0)
    return {"conns": n, "open": res["connections_open"], "events": e, "pub_ok": pr["ok"],
            "pub_elapsed_ms": round(pr["elapsed_s"] * 1000, 1), "burst_ms": res["burst_ms"],
            "reach_all_p50_ms": res["reach_all_p50_ms"], "reach_all_max_ms": res["reach_all_max_ms"],
            "latency_p50_ms": res["latency_p50_ms"], "latency_p99_ms": res["latency_p99_ms"],
            "deliveries": res["events_total"], "expected": e * res["connections_open"],
            "conns_below_expect": res["conns_below_expect"], "ids_incomplete": res["ids_incomplete"],
            "disconnected": res["disconnected"], "stop_reason": res["stop_reason"],
            "server_cpu_s": round(cpu, 3),
            "server_cpu_us_per_delivery": round(1e6 * cpu / res["events_total"], 3) if res["events_total"] else None,
            "server_alive": alive}


def w1_tls(sysobj, S, args):
    """W1 with every subscriber over HTTPS (a full handshake each, then idle)."""
    sysobj.tls = TLS
    return {"rows": [hold_idle(sysobj, S, n) for n in S["w1_tls_conns"]]}


def w2b_tls(sysobj, S, args):
    """W2b with the subscribers and the publisher over HTTPS."""
    sysobj.tls = TLS
    r = w2b(sysobj, S, args)
    r["tls"] = sysobj.tls_info
    return r


def w2c(sysobj, S, args):
    n, e, rate = S["w2_conns"], S["w2c_events"], S["w2c_rate"]
    connected, pr, res, cpu, alive = fanout_once(sysobj, S, n, e, rate)
    return {"conns": n, "open": res["connections_open"], "events": e, "rate": rate,
            "pub_rate": round(pr["achieved_rate"], 2), "pub_ok": pr["ok"], "pub_p99_ms": pr["resp_p99_ms"],
            "latency_p50_ms": res["latency_p50_ms"], "latency_p90_ms": res["latency_p90_ms"],
            "latency_p99_ms": res["latency_p99_ms"], "latency_max_ms": res["latency_max_ms"],
            "reach_all_p50_ms": res["reach_all_p50_ms"], "reach_all_p99_ms": res["reach_all_p99_ms"],
            "deliveries": res["events_total"], "expected": e * res["connections_open"],
            "conns_below_expect": res["conns_below_expect"], "stop_reason": res["stop_reason"],
            "server_cpu_s": round(cpu, 3), "server_alive": alive}


def write_floor(conns):
    """The kernel's cost of one write() per subscriber (bench/writefloor.c): the floor under
    any fan-out server's delivery cost, and under W2c's one-event-at-a-time latency."""
    out = []
    for reader in ("idle", "epoll"):
        r = subprocess.run([WRITEFLOOR, "--conns", str(min(conns, 19000)), "--reader", reader],
                           capture_output=True, text=True, timeout=180)
        line = [l for l in r.stdout.splitlines() if l.startswith("WRITEFLOOR ")]
        out.append(json.loads(line[-1][11:]) if line else {"reader": reader, "error": r.stderr[-300:]})
        log(f"write floor ({reader} reader): {out[-1]}")
    return out


def w3_round(sysobj, S, env):
    """One wrk run against the started system."""
    cmd = ["wrk", "-t2", f"-c{S['w3_conns']}", f"-d{S['w3_duration']}s", "--latency", "--timeout", "10s",
           "-s", os.path.join(BENCH, "wrk", "post.lua"), f"http://127.0.0.1:{sysobj.port}"]
    s0 = sysobj.store_counters()
    c0 = cpu_seconds(sysobj.pids())
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=S["w3_duration"] + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - t0
    c1 = cpu_seconds(sysobj.pids())
    s1 = sysobj.store_counters()
    lines = [l for l in r.stdout.splitlines() if l.startswith("WRKJSON ")]
    if not lines:
        raise RuntimeError("wrk failed: " + r.stdout[-500:] + r.stderr[-500:])
    w = json.loads(lines[-1][8:])
    errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"conns": S["w3_conns"], "duration_s": w["duration_s"], "requests": w["requests"],
            "inserts_per_s": round((w["requests"] - w["err_status"]) / w["duration_s"], 1),
            "lat_p50_ms": w["lat_p50_ms"], "lat_p99_ms": w["lat_p99_ms"], "lat_max_ms": w["lat_max_ms"],
            "non2xx": w["err_status"], "errors": errors, "server_cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "server_cpu_us_per_insert": round(1e6 * (c1 - c0) / max(1, w["requests"]), 2),
            "wrk_cpu_pct": round(100 * wrk_cpu / wall, 1), **store_figures(s0, s1, wall)}


def store_figures(s0, s1, wall):
    """What the store did between two store_counters() readings: inserts per write (the
    group commit's batch), the mean write (SQL and flush) and the share of the wall time
    spent writing. Empty for systems without a store."""
    if s0 is None or s1 is None or s1[1] <= s0[1]:
        return {}
    writes = s1[1] - s0[1]
    return {"store_batch": round((s1[0] - s0[0]) / writes, 1), "store_write_us": round((s1[2] - s0[2]) / writes),
            "store_busy_pct": round(100 * (s1[2] - s0[2]) / 1e6 / wall, 1)}


def w3(sysobj, S, args):
    """S["w3_runs"] wrk runs one after the other on one instance; the figures are the median
    run's (by inserts/s), with the range over the runs: on this VM a durable insert's fsync
    varies by a factor of two from minute to minute, and one run can land on a slow one."""
    sysobj.start()
    try:
        tenant = sysobj.tenants(1)[0]
        env = dict(os.environ, **sysobj.wrk_env(tenant))
        rounds = [w3_round(sysobj, S, env) for _ in range(S["w3_runs"])]
        alive = sysobj.alive()
    finally:
        sysobj.stop()
    by_rate = sorted(rounds, key=lambda x: x["inserts_per_s"])
    res = dict(by_rate[len(by_rate) // 2])
    res.update({"runs": len(rounds), "inserts_per_s_min": by_rate[0]["inserts_per_s"],
                "inserts_per_s_max": by_rate[-1]["inserts_per_s"],
                "non2xx": sum(x["non2xx"] for x in rounds), "errors": sum(x["errors"] for x in rounds),
                "rounds": rounds, "server_alive": alive})
    return res


def w4(sysobj, S, args):
    """S["w4_runs"] runs, each on a fresh instance; the figures are the median run's (by
    reach-all p99), with the range: that tail follows whatever else the two CPUs run at the
    moment (one full run measured Broker 9.6 and Nchan 11.9 ms, the next 25.8 and 15.1)."""
    runs = [w4_once(sysobj, S, args) for _ in range(S["w4_runs"])]
    by_tail = sorted(runs, key=lambda r: (r["reach_all_p99_ms"] is None, r["reach_all_p99_ms"] or 0))
    res = dict(by_tail[len(by_tail) // 2])
    tails = [r["reach_all_p99_ms"] for r in by_tail if r["reach_all_p99_ms"] is not None]
    res.update({"runs": len(runs), "reach_all_p99_ms_min": tails[0] if tails else None,
                "reach_all_p99_ms_max": tails[-1] if tails else None,
                "conns_below_expect": max(r["conns_below_expect"] for r in runs),
                "server_alive": all(r["server_alive"] for r in runs), "each_run": runs})
    return res


def w4_once(sysobj, S, args):
    """T tenants x `subs` subscribers. Latency is measured by sseload on a sample of K tenants
    spread over the range; the other tenants' subscribers are held by bench/sseholder.py (one
    process) which counts their deliveries. ~1,000 sseload instances would cost more than a CPU
    in wake-ups alone on this machine."""
    T, subs, E, rate = S["w4_tenants"], S["w4_subs"], S["w4_events"], S["w4_rate"]
    K = min(T, S["w4_sample"])
    sampled = sorted({round(i * T / K) for i in range(K)})
    sysobj.start()
    loads, holder = [], None
    reach, results, hres = [], [], None
    try:
        tenants = sysobj.tenants(T)
        vars_file = os.path.join(sysobj.dir, "w4-vars.txt")
        with open(vars_file, "w") as f:
            f.write("\n".join(t["var"] for t in tenants) + "\n")
        csv_dir = os.path.join(sysobj.dir, "w4-csv")
        os.makedirs(csv_dir)
        timeout = int(60 + T * E / rate + 30)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        others = [t for i, t in enumerate(tenants) if i not in set(sampled)]
        if others:
            paths_file = os.path.join(sysobj.dir, "w4-paths.txt")
            with open(paths_file, "w") as f:
                f.write("\n".join(t["sub_path"] for t in others) + "\n")
            holder = subprocess.Popen([sys.executable, os.path.join(BENCH, "sseholder.py"), "--port", str(sysobj.port),
                                       "--paths", paths_file, "-n", str(subs), "--until-events", str(E),
                                       "--expect", str(E), "--timeout", str(timeout + 60)],
                                      stdout=subprocess.PIPE, text=True, start_new_session=True)
            line = holder.stdout.readline()
            if not line.startswith("CONNECTED"):
                raise RuntimeError("sseholder did not connect: " + line)
        for i in sampled:
            loads.append(SSELoad(sysobj.port, tenants[i]["sub_path"], subs,
                                 ["--until-events", E, "--expect", E, "--timeout", timeout, "--procs", 1,
                                  "--max-ids", E + 20, "--detail", 0, "--ids-csv", os.path.join(csv_dir, f"{i}.csv"),
                                  "--connect-rate", 2000], progress=0))
        for l in loads:
            l.wait_connected(max(5, 120 - (time.monotonic() - t0)))
        connect_s = time.monotonic() - t0
        time.sleep(1.5)
        gen_pids = [p for l in loads for p in l.pids()] + (proc_tree(holder.pid) if holder else [])
        g0 = cpu_seconds(gen_pids)
        c0 = cpu_seconds(sysobj.pids())
        s0 = sysobj.store_counters()
        t_pub = time.monotonic()
        spec = sysobj.pub_spec(None)
        pr = pubload(sysobj.port, spec, rate, count=T * E, conns=args.pub_conns, vars_file=vars_file,
                     timeout=int(T * E / rate) + 60)
        # wait (bounded) for every subscriber to have all its events
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (any(l.proc.poll() is None for l in loads) or
                                               (holder and holder.poll() is None)):
            time.sleep(0.1)
        t_end = time.monotonic()
        c1 = cpu_seconds(sysobj.pids())
        s1 = sysobj.store_counters()
        results = [l.finish(30) for l in loads]
        if holder:
            if holder.poll() is None:
                holder.send_signal(signal.SIGINT)
            out = holder.communicate(timeout=30)[0]
            hres = json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:])
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        gen_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime) - g0
        alive = sysobj.alive()
        for i in sampled:
            p = os.path.join(csv_dir, f"{i}.csv")
            if os.path.exists(p):
                with open(p) as f:
                    next(f, None)
                    for line in f:
                        parts = line.strip().split(",")
                        if len(parts) >= 7 and parts[6] not in ("", "nan"):
                            reach.append(float(parts[6]))
    finally:
        for l in loads:
            if l.proc.poll() is None:
                l.proc.kill()
        if holder and holder.poll() is None:
            holder.kill()
        sysobj.stop()
    wall = t_end - t_pub
    delivered = sum(r["events_total"] for r in results) + (hres["events_total"] if hres else 0)
    opened = sum(r["connections_open"] for r in results) + (hres["connections_open"] if hres else 0)
    below = sum(r["conns_below_expect"] for r in results) + (hres["conns_below_expect"] if hres else 0)
    lat_sum = sum(r["latency_mean_ms"] * r["latency_samples"] for r in results if r["latency_samples"])
    lat_n = sum(r["latency_samples"] for r in results)
    p99s = sorted(r["latency_p99_ms"] for r in results if r["latency_samples"])
    reach.sort()

    def q(v, p):
        return round(v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))], 3) if v else None
    return {"tenants": T, "subs_per_tenant": subs, "events_per_tenant": E, "rate": rate, "sampled_tenants": len(sampled),
            "open": opened, "connect_s": round(connect_s, 1),
            "pub_rate": round(pr["achieved_rate"], 1), "pub_ok": pr["ok"], "pub_p99_ms": pr["resp_p99_ms"],
            "deliveries": delivered, "expected": pr["ok"] * subs, "conns_below_expect": below,
            "latency_mean_ms": round(lat_sum / lat_n, 3) if lat_n else None,
            "latency_p99_median_tenant_ms": q(p99s, 0.5), "latency_p99_worst_tenant_ms": q(p99s, 1.0),
            "reach_all_p50_ms": q(reach, 0.5), "reach_all_p99_ms": q(reach, 0.99), "events_tracked": len(reach),
            "server_cpu_s": round(c1 - c0, 3), "server_cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "server_cpu_us_per_delivery": round(1e6 * (c1 - c0) / delivered, 2) if delivered else None,
            "loadgen_cpu_pct": round(100 * gen_cpu / wall, 1), "holder": hres, "server_alive": alive,
            **store_figures(s0, s1, wall)}


def w5(sysobj, S, args):
    """Rooms: one tenant, R rooms of P subscribers (Broker: `events=room.<k>.*` per subscriber;
    Nchan: a channel per room; Mercure: a topic per room); events round robin over the rooms at
    each paced rate for w5_step_s, then w5_unpaced_events back to back. Every step has fresh
    subscribers (one sseload, `--rooms R`) that wait for all of their room's events, so each
    step has its own latency figures; the step after the first paced one that falls behind is
    skipped (the unpaced one is always run)."""
    R, P = S["w5_rooms"], S["w5_per_room"]
    n = R * P
    sysobj.start()
    steps = []
    try:
        spec = sysobj.rooms()
        vars_file = os.path.join(sysobj.dir, "w5-rooms.txt")
        with open(vars_file, "w") as f:
            f.write("\n".join(str(k) for k in range(R)) + "\n")
        behind = False
        for rate in S["w5_rates"] + [0]:
            if rate and behind:
                steps.append({"rate_target": rate, "skipped": "the previous rate fell behind"})
                continue
            events = (int(rate * S["w5_step_s"]) if rate else S["w5_unpaced_events"]) // R * R
            per_sub = events // R
            tmo = int((events / rate if rate else 0) + 60)
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            load = SSELoad(sysobj.port, spec["sub_path"], n,
                           ["--until-events", per_sub, "--expect", per_sub, "--timeout", tmo, "--connect-rate", 4000,
                            "--procs", 2, "--max-ids", events + 100, "--detail", 0], progress=0, rooms=R)
            connected = load.wait_connected(120)
            time.sleep(1.0)
            c0, l0 = cpu_seconds(sysobj.pids()), cpu_seconds(load.pids())
            s0 = sysobj.store_counters()
            t0 = time.monotonic()
            pr = pubload(sysobj.port, spec["spec"], rate, count=events, conns=args.pub_conns, vars_file=vars_file,
                         timeout=tmo)
            res = load.finish(tmo + 5)
            wall = time.monotonic() - t0
            c1 = cpu_seconds(sysobj.pids())
            s1 = sysobj.store_counters()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # sseload and pubload, from t0 on (sseload's connecting before it left out)
            gen = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime) - l0
            delivered = res["events_total"]
            span_s = res["burst_ms"] / 1000 if res["burst_ms"] else None
            expected = pr["ok"] * P
            step = {"rate_target": rate, "events": events, "per_subscriber": per_sub, "connected": connected,
                    "open_at_end": res["connections_open_at_end"], "pub_ok": pr["ok"], "pub_non2xx": pr["non2xx"],
                    "pub_errors": pr["errors"], "pub_rate": round(pr["achieved_rate"], 1),
                    "pub_elapsed_ms": round(pr["elapsed_s"] * 1000, 1), "pub_p99_ms": pr["resp_p99_ms"],
                    "deliveries": delivered, "expected": expected, "conns_below_expect": res["conns_below_expect"],
                    "ids_incomplete": res["ids_incomplete"], "stale": res["stale_total"],
                    "out_of_order": res["out_of_order"], "disconnected": res["disconnected"],
                    "stop_reason": res["stop_reason"],
                    # deliveries over the time from the first event's send to the last receipt
                    "deliveries_per_s": round(delivered / span_s) if span_s else None,
                    "offered_deliveries_per_s": round(pr["achieved_rate"] * P) if rate else None,
                    "tail_ms": round(res["burst_ms"] - pr["elapsed_s"] * 1000, 1) if res["burst_ms"] else None,
                    "latency_p50_ms": res["latency_p50_ms"], "latency_p99_ms": res["latency_p99_ms"],
                    "latency_max_ms": res["latency_max_ms"], "reach_all_p99_ms": res["reach_all_p99_ms"],
                    "server_cpu_s": round(c1 - c0, 3),
                    "server_cpu_pct": round(100 * (c1 - c0) / wall, 1),
                    "server_cpu_us_per_delivery": round(1e6 * (c1 - c0) / delivered, 3) if delivered else None,
                    "loadgen_cpu_pct": round(100 * gen / wall, 1),
                    "wall_s": round(wall, 2), **store_figures(s0, s1, wall)}
            if rate:
                # kept up: the publisher got its rate (answers that lag hold it back), every delivery
                # done, the last one within a short tail after the publishing time
                step["kept_up"] = (pr["achieved_rate"] >= 0.9 * rate and delivered >= 0.99 * expected
                                   and step["tail_ms"] is not None
                                   and step["tail_ms"] <= max(750, 0.15 * S["w5_step_s"] * 1000))
                behind = not step["kept_up"]
            steps.append(step)
            log(f"  W5 {sysobj.name} rate {rate or 'unpaced'}: {step}")
            if not sysobj.alive():
                break
        alive = sysobj.alive()
    finally:
        sysobj.stop()
    ran = [st for st in steps if "deliveries_per_s" in st and st["deliveries_per_s"]]
    peak = max(ran, key=lambda st: st["deliveries_per_s"]) if ran else {}
    unpaced = next((st for st in steps if st["rate_target"] == 0 and "deliveries" in st), {})
    return {"rooms": R, "per_room": P, "conns": n, "steps": steps, "server_alive": alive,
            "peak_deliveries_per_s": peak.get("deliveries_per_s"),
            "unpaced_deliveries_per_s": unpaced.get("deliveries_per_s"),
            "unpaced_latency_p99_ms": unpaced.get("latency_p99_ms")}


WORKLOADS = {"W1": w1, "W1f": w1f, "W1x": w1x, "W2a": w2a, "W2b": w2b, "W2c": w2c, "W3": w3, "W4": w4, "W5": w5,
             "W1-TLS": w1_tls, "W2b-TLS": w2b_tls}


# ---------------------------------------------------------------- report
def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}"
    return str(v)


def ratio(b, o, higher_better):
    """How many times better Broker is than the other (>1 = Broker better)."""
    if b in (None, 0) or o in (None, 0):
        return "–"
    r = b / o if higher_better else o / b
    return f"{r:.2f}×"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(out)


HEADLINE = {  # workload -> (key, higher is better, label)
    "W1": ("rss_per_conn_b", False, "RSS/conn"),
    "W1x": ("rss_per_conn_b", False, "RSS/conn"),
    "W2a": ("peak_deliveries_per_s", True, "peak deliveries/s"),
    "W2b": ("burst_ms", False, "burst time"),
    "W2c": ("latency_p99_ms", False, "p99 latency"),
    "W3": ("inserts_per_s", True, "inserts/s"),
    "W4": ("reach_all_p99_ms", False, "reach-all p99"),
    "W5": ("unpaced_deliveries_per_s", True, "unpaced deliveries/s"),
    "W1f": ("rss_per_conn_b", False, "RSS/conn"),
    "W1-TLS": ("rss_per_conn_b", False, "RSS/conn"),
    "W2b-TLS": ("burst_ms", False, "burst time"),
}
TLS_TARGETS = {  # issue 14, reported (never asserted): Broker's advantage over Nchan, both over TLS
    "W1-TLS": (3.0, "an idle TLS subscriber costs Broker at most 1/3 of Nchan's memory"),
    "W2b-TLS": (5.0, "the W2b burst over TLS is at least 5× faster on Broker than on Nchan"),
}


def ratio_cell(results, wl, sysname, pick=lambda r: r):
    key, hb, _ = HEADLINE[wl]
    b = results.get("broker", {}).get(wl)
    o = results.get(sysname, {}).get(wl)
    if not isinstance(b, dict) or not isinstance(o, dict) or any(k in r for r in (b, o) for k in ("error", "not_run")):
        return "–"
    return ratio(pick(b).get(key), pick(o).get(key), hb)


def report(results, S, meta):
    md = [f"## Broker vs Nchan vs Mercure ({'quick' if meta['quick'] else 'default'} sizes)", "",
          f"- Machine: {meta['machine']['nproc']} CPUs ({meta['machine']['cpu']}), {meta['machine']['mem_gib']} GiB, "
          f"Linux {meta['machine']['kernel']}, fd hard limit {meta['machine']['fd_hard_limit']}; "
          "servers and load generators share the CPUs; loopback only.",
          f"- Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()),
          "- Settings: Broker all-in-one with its embedded store (every insert stored before it is answered); "
          f"Nchan memory store, {meta['nchan_workers']} nginx worker(s), message buffer 100; Mercure "
          f"`{meta['mercure_transport']}` transport; keep-alive/heartbeat every {KEEPALIVE_S} s on all three.",
          "- `broker-tmpfs` (W3, W4 and W5 only) is a diagnostic row, not a competitor: the same Broker with its "
          "store on tmpfs, where the flush costs nothing and nothing is durable. Beside the `broker` row it shows "
          "what the disk's flush costs; `inserts per store write` and `store write µs` come from Broker's "
          "`/metrics` (`broker_store_write_*`).",
          f"- Command: `{meta['command']}` (started {meta['started']}, took {meta['took_s']:.0f} s, "
          f"load average at start {meta['loadavg']})", ""]
    sysnames = [s for s in meta["systems"]]

    def rows_for(wl, cols, pick=lambda r: r):
        rows = []
        for s in sysnames:
            r = results.get(s, {}).get(wl)
            if r is None:
                continue
            if "error" in r or "not_run" in r:
                why = f"error: {r['error'][:120]}" if "error" in r else r["not_run"]
                rows.append([s, why] + ["–"] * (len(cols) - 1) + ["–"])
                continue
            rr = pick(r)
            rows.append([s] + [rr.get(c) for c, _ in cols] +
                        [ratio_cell(results, wl, s, pick) if s != "broker" else "1.00×"])
        return rows

    ratio_hdr = "Broker advantage ({}; >1 = Broker better)"
    if "W1" in meta["workloads"]:
        md.append("### W1 idle capacity")
        md.append("")
        cols = [("open", "open conns"), ("connect_s", "connect s"), ("rss_before_mb", "RSS before MB"),
                ("rss_with_mb", "RSS with MB"), ("rss_per_conn_b", "RSS/conn B"), ("pss_per_conn_b", "PSS/conn B"),
                ("idle_cpu_pct", "idle CPU %"), ("server_procs", "procs"), ("server_fds", "server fds")]
        for i, n in enumerate(S["w1_conns"]):
            def pick(r, i=i):
                return r["rows"][i] if len(r.get("rows", [])) > i else {}
            md.append(f"{n:,} idle subscribers, idle CPU over {S['w1_idle_s']} s:")
            md.append("")
            md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("RSS/conn")],
                            rows_for("W1", cols, pick)))
            md.append("")
    if "W1f" in meta["workloads"]:
        md.append("### W1f: W1 with an events filter on every subscriber (Broker only)")
        md.append("")
        md.append("Every subscriber asks for `/sse?access_token=JWT&events=room.<k>.*`, k = its number mod 100: the "
                  "tenant's filter index holds 100 prefixes (`room.<k>.`, 7 or 8 bytes), each with 1% of the subscribers. Nchan and "
                  "Mercure have no per-subscriber filter (a channel or topic per group of subscribers is W1 itself). "
                  f"Idle CPU over {S['w1_idle_s']} s; the unfiltered row is W1's, from the same run when it ran.")
        md.append("")
        cols = [("open", "open conns"), ("connect_s", "connect s"), ("rss_before_mb", "RSS before MB"),
                ("rss_with_mb", "RSS with MB"), ("rss_per_conn_b", "RSS/conn B"), ("pss_per_conn_b", "PSS/conn B"),
                ("idle_cpu_pct", "idle CPU %"), ("server_fds", "server fds")]
        rows = []
        for i, n in enumerate(S["w1_conns"]):
            for wl, label in (("W1", "none (W1)"), ("W1f", "events=room.<k>.*")):
                r = results.get("broker", {}).get(wl)
                if not r or "rows" not in r or len(r["rows"]) <= i:
                    if r and "error" in r:
                        rows.append([f"{n:,}", label, f"error: {r['error'][:120]}"] + ["–"] * (len(cols) - 1))
                    continue
                row = r["rows"][i]
                rows.append([f"{n:,}", label] + [row.get(c) for c, _ in cols])
        md.append(table(["subscribers", "filter"] + [h for _, h in cols], rows))
        md.append("")
    if "W1x" in meta["workloads"]:
        md.append(f"### W1 at {S['w1x_conns']:,}: several server processes ({S['w1x_procs']} stream workers / nginx "
                  f"workers), idle CPU over {S['w1_idle_s']} s, then one event to every subscriber")
        md.append("")
        cols = [("open", "open conns"), ("connect_s", "connect s"), ("rss_before_mb", "RSS before MB"),
                ("rss_with_mb", "RSS with MB"), ("rss_per_conn_b", "RSS/conn B"), ("pss_per_conn_b", "PSS/conn B"),
                ("idle_cpu_pct", "idle CPU %"), ("server_procs", "procs"), ("server_fds", "server fds"),
                ("deliveries", "event deliveries"), ("expected", "expected"), ("reach_all_ms", "reach-all ms")]
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("RSS/conn")], rows_for("W1x", cols)))
        md.append("")
        md.append("Broker runs here as its split services (broker-auth, broker-ingest, broker-stream "
                  f"--stream_workers={S['w1x_procs']}) on one embedded store, the way a deployment past one "
                  "process's files runs; procs counts every server process.")
        md.append("")
    if "W2a" in meta["workloads"]:
        md.append(f"### W2a paced fan-out ({S['w2_conns']:,} subscribers, one topic; rates "
                  f"{', '.join(map(str, S['w2a_rates']))} ev/s, {S['w2a_step_s']:.0f} s per step, stop at the "
                  "first step whose deliveries fall behind or stop growing)")
        md.append("")
        cols = [("peak_deliveries_per_s", "peak deliveries/s"), ("peak_pub_rate", "at events/s"),
                ("peak_server_cpu_pct", "server CPU %"), ("us_per_delivery_at_peak", "server µs/delivery at peak"),
                ("us_per_delivery_low_rate", "µs/delivery at lowest rate"), ("peak_sseload_cpu_pct", "sseload CPU %"),
                ("disconnected", "disconnected")]
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("peak deliveries/s")], rows_for("W2a", cols)))
        md.append("")
        md.append("Steps (target ev/s → published ev/s: deliveries/s, server CPU %, server µs/delivery, sseload CPU %, "
                  "tail after the step's sending time s; * = fell behind). Deliveries/s = deliveries of the step's events / "
                  "(time from the first of them to the last):")
        md.append("")
        for s in sysnames:
            r = results.get(s, {}).get("W2a")
            if r and "steps" in r:
                md.append(f"- {s}: " + "; ".join(
                    f"{st['rate_target']}→{st['pub_rate']}: {fmt(st['deliveries_per_s'])}/s, {st['server_cpu_pct']}%, "
                    f"{st['server_cpu_us_per_delivery']} µs, {st['sseload_cpu_pct']}%, {st['tail_s']} s"
                    f"{'' if st['kept_up'] else '*'}" for st in r["steps"]))
        md.append("")
    if meta.get("floor"):
        md.append("### Kernel floor of one delivery (`build/writefloor`: one write() of an SSE-sized frame per "
                  "loopback connection, back to back, no server in the way)")
        md.append("")
        md.append(table(["reader", "connections", "bytes", "one round (all connections) p50 ms", "wall µs/write",
                         "CPU µs/write"],
                        [[f.get("reader"), fmt(f.get("conns")), f.get("bytes"), f.get("round_ms_p50"),
                          f.get("wall_us_per_write"), f.get("cpu_us_per_write")] for f in meta["floor"]]))
        md.append("")
    if "W2b" in meta["workloads"]:
        md.append(f"### W2b burst ({S['w2_conns']:,} subscribers, {S['w2b_events']} events back to back on one connection)")
        md.append("")
        cols = [("open", "open"), ("pub_elapsed_ms", "publish ms"), ("burst_ms", "all have all, ms"),
                ("reach_all_p50_ms", "reach-all p50 ms"), ("latency_p99_ms", "latency p99 ms"),
                ("deliveries", "deliveries"), ("expected", "expected"), ("server_cpu_us_per_delivery", "server µs/delivery")]
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("burst time")], rows_for("W2b", cols)))
        md.append("")
    tls_wls = [w for w in TLS_WORKLOADS if w in meta["workloads"]]
    if tls_wls:
        md.append("### Over TLS (W1-TLS, W2b-TLS)")
        md.append("")
        md.append("Every system serves HTTPS with the same throwaway chain (made with the openssl CLI for this run: root → "
                  "intermediate → leaf for localhost and 127.0.0.1, ECDSA P-256; the servers send leaf + intermediate). "
                  "Broker: `--secure=true --auto_cert=false --key_path --cert_path --http_port=0`; Nchan: "
                  "`listen … ssl`, `ssl_protocols TLSv1.2 TLSv1.3`, `ssl_session_cache shared:SSL:10m`; Mercure: Caddy "
                  "`tls <chain> <key>`. The clients are sseload and pubload built with OpenSSL (`-DWITH_TLS`): SNI "
                  "`localhost`, chain and name verified, one full handshake per connection (no resumption), TLS 1.2 or "
                  "1.3 as the server picks; `TLS` shows what a probe handshake negotiated.")
        md.append("")

        def tls_name(r):
            t = r.get("tls") or {}
            return f"{t.get('version', '?')} {t.get('cipher', '')}".strip() if t else None
        if "W1-TLS" in tls_wls:
            cols = [("open", "open conns"), ("connect_s", "connect s"), ("rss_before_mb", "RSS before MB"),
                    ("rss_with_mb", "RSS with MB"), ("rss_per_conn_b", "RSS/conn B"), ("pss_per_conn_b", "PSS/conn B"),
                    ("plain_rss_per_conn_b", "plain W1 RSS/conn B"), ("tls_extra_b", "TLS extra B/conn"),
                    ("idle_cpu_pct", "idle CPU %"), ("server_fds", "server fds"), ("err_tls", "TLS errors"),
                    ("tls_name", "TLS")]
            for i, n in enumerate(S["w1_tls_conns"]):
                def pick(r, i=i, n=n):
                    row = dict(r["rows"][i]) if len(r.get("rows", [])) > i else {}
                    return row
                rows = []
                for s_ in sysnames:
                    r = results.get(s_, {}).get("W1-TLS")
                    if r is None:
                        continue
                    if "error" in r or "not_run" in r:
                        why = f"error: {r['error'][:160]}" if "error" in r else r["not_run"]
                        rows.append([s_, why] + ["–"] * len(cols))
                        continue
                    row = pick(r)
                    plain = next((x for x in (results.get(s_, {}).get("W1") or {}).get("rows", [])
                                  if x.get("conns") == n and "rss_per_conn_b" in x), None)
                    if plain:
                        row["plain_rss_per_conn_b"] = plain["rss_per_conn_b"]
                        if row.get("rss_per_conn_b") is not None:
                            row["tls_extra_b"] = row["rss_per_conn_b"] - plain["rss_per_conn_b"]
                    row["tls_name"] = tls_name(row)
                    rows.append([s_] + [row.get(c) for c, _ in cols] +
                                [ratio_cell(results, "W1-TLS", s_, pick) if s_ != "broker" else "1.00×"])
                md.append(f"W1-TLS: {n:,} idle TLS subscribers, idle CPU over {S['w1_idle_s']} s:")
                md.append("")
                md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("RSS/conn")], rows))
                md.append("")
        if "W2b-TLS" in tls_wls:
            cols = [("open", "open"), ("pub_elapsed_ms", "publish ms"), ("burst_ms", "all have all, ms"),
                    ("plain_burst_ms", "plain W2b ms"), ("reach_all_p50_ms", "reach-all p50 ms"),
                    ("latency_p99_ms", "latency p99 ms"), ("deliveries", "deliveries"), ("expected", "expected"),
                    ("server_cpu_us_per_delivery", "server µs/delivery"), ("tls_name", "TLS")]

            def pick2(r):
                return r
            rows = []
            for s_ in sysnames:
                r = results.get(s_, {}).get("W2b-TLS")
                if r is None:
                    continue
                if "error" in r or "not_run" in r:
                    why = f"error: {r['error'][:160]}" if "error" in r else r["not_run"]
                    rows.append([s_, why] + ["–"] * len(cols))
                    continue
                row = dict(r)
                plain = results.get(s_, {}).get("W2b") or {}
                row["plain_burst_ms"] = plain.get("burst_ms")
                row["tls_name"] = tls_name(row)
                rows.append([s_] + [row.get(c) for c, _ in cols] +
                            [ratio_cell(results, "W2b-TLS", s_, pick2) if s_ != "broker" else "1.00×"])
            md.append(f"W2b-TLS: {S['w2_conns']:,} TLS subscribers, {S['w2b_events']} events back to back on one TLS "
                      "connection:")
            md.append("")
            md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("burst time")], rows))
            md.append("")
        for wl in tls_wls:
            want, what = TLS_TARGETS[wl]
            got = ratio_cell(results, wl, "nchan", (lambda r: r["rows"][0] if r.get("rows") else {})
                             if wl == "W1-TLS" else (lambda r: r))
            verdict = "not measured" if got == "–" else ("met" if float(got.rstrip("×")) >= want else "NOT met")
            md.append(f"- Target of issue 14 ({what}): Broker advantage over Nchan {got}, needs ≥ {want:g}× → {verdict}.")
        md.append("")
    if "W2c" in meta["workloads"]:
        md.append(f"### W2c latency ({S['w2_conns']:,} subscribers, {S['w2c_rate']} events/s, {S['w2c_events']} events)")
        md.append("")
        cols = [("open", "open"), ("latency_p50_ms", "p50 ms"), ("latency_p90_ms", "p90 ms"), ("latency_p99_ms", "p99 ms"),
                ("latency_max_ms", "max ms"), ("reach_all_p99_ms", "reach-all p99 ms"), ("deliveries", "deliveries"),
                ("expected", "expected"), ("server_cpu_s", "server CPU s")]
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("p99 latency")], rows_for("W2c", cols)))
        md.append("")
    if "W3" in meta["workloads"]:
        runs = S.get("w3_runs", 1)
        md.append(f"### W3 ingest (wrk, {S['w3_conns']} keep-alive connections, 2 threads, {S['w3_duration']} s, "
                  f"no subscribers; {runs} run(s) per system, the median run shown)")
        md.append("")
        cols = [("inserts_per_s", "inserts/s"), ("w3_range", "range over runs"),
                ("lat_p50_ms", "p50 ms"), ("lat_p99_ms", "p99 ms"),
                ("non2xx", "non-2xx"), ("errors", "errors"), ("server_cpu_pct", "server CPU %"),
                ("server_cpu_us_per_insert", "server µs/insert"), ("wrk_cpu_pct", "wrk CPU %"),
                ("store_batch", "inserts per store write"), ("store_write_us", "store write µs"),
                ("store_busy_pct", "store busy %")]
        def w3_pick(r):
            lo, hi = r.get("inserts_per_s_min"), r.get("inserts_per_s_max")
            return dict(r, w3_range=f"{lo:,.0f}-{hi:,.0f}" if lo is not None else None)
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("inserts/s")],
                        rows_for("W3", cols, w3_pick)))
        md.append("")
    if "W4" in meta["workloads"]:
        md.append(f"### W4 many tenants ({S['w4_tenants']:,} tenants/channels/topics × {S['w4_subs']} subscribers, "
                  f"{S['w4_events']} events each, round robin at {S['w4_rate']} events/s; latency from sseload on "
                  f"{S['w4_sample']} sampled tenants, the others' subscribers held and counted by bench/sseholder.py; "
                  f"{S.get('w4_runs', 1)} run(s) per system, the median run by reach-all p99 shown)")
        md.append("")
        cols = [("open", "open"), ("pub_rate", "events/s"), ("deliveries", "deliveries"), ("expected", "expected"),
                ("conns_below_expect", "conns missing events"),
                ("latency_mean_ms", "mean latency ms"), ("latency_p99_median_tenant_ms", "p99 (median tenant) ms"),
                ("reach_all_p50_ms", "reach-all p50 ms"), ("reach_all_p99_ms", "reach-all p99 ms"),
                ("w4_range", "p99 range over runs"),
                ("server_cpu_us_per_delivery", "server µs/delivery"), ("loadgen_cpu_pct", "load gen CPU %"),
                ("store_batch", "inserts per store write"), ("store_write_us", "store write µs")]

        def w4_pick(r):
            lo, hi = r.get("reach_all_p99_ms_min"), r.get("reach_all_p99_ms_max")
            return dict(r, w4_range=f"{lo:g}-{hi:g}" if lo is not None else None)
        md.append(table(["system"] + [h for _, h in cols] + [ratio_hdr.format("reach-all p99")],
                        rows_for("W4", cols, w4_pick)))
        md.append("")
    if "W5" in meta["workloads"]:
        R, P = S["w5_rooms"], S["w5_per_room"]
        md.append(f"### W5 rooms ({R * P:,} subscribers of one tenant in {R} rooms of {P}; events round robin over "
                  f"the rooms at {', '.join(map(str, S['w5_rates']))} ev/s for {S['w5_step_s']:.0f} s each, then "
                  f"{S['w5_unpaced_events']:,} back to back; each event reaches {P} subscribers)")
        md.append("")
        md.append("Broker: one user, every subscriber `/sse?access_token=JWT&events=room.<k>.*`, events named "
                  "`room.<k>.msg`; Nchan: a channel per room (`/sub/room<k>`); Mercure: a topic per room. Every step "
                  "has fresh subscribers (one sseload, `--rooms`), which wait for all of their room's events. "
                  "Deliveries/s = deliveries / (the last receipt − the first event's `t`); tail = that span − the "
                  "publishing time; µs/delivery is the server's CPU (inserts included) per delivery; load gen CPU is "
                  "sseload's and pubload's. A paced step that falls behind (* below) ends the paced steps.")
        md.append("")
        cols = [("pub_rate", "events/s sent"), ("deliveries", "deliveries"), ("expected", "expected"),
                ("deliveries_per_s", "deliveries/s"), ("offered_deliveries_per_s", "offered/s"),
                ("latency_p50_ms", "p50 ms"), ("latency_p99_ms", "p99 ms"), ("reach_all_p99_ms", "room reach-all p99 ms"),
                ("tail_ms", "tail ms"), ("server_cpu_pct", "server CPU %"),
                ("server_cpu_us_per_delivery", "server µs/delivery"), ("loadgen_cpu_pct", "load gen CPU %"),
                ("pub_p99_ms", "insert answer p99 ms"), ("store_batch", "inserts per store write"),
                ("store_write_us", "store write µs")]
        rows = []
        for rate in S["w5_rates"] + [0]:
            for s_ in sysnames:
                r = results.get(s_, {}).get("W5")
                if r is None:
                    continue
                label = f"{rate}/s" if rate else "unpaced"
                if "error" in r or "not_run" in r:
                    rows.append([label, s_, (f"error: {r['error'][:120]}" if "error" in r else r["not_run"])]
                                + ["–"] * (len(cols) - 1))
                    continue
                st = next((x for x in r["steps"] if x["rate_target"] == rate), None)
                if st is None or "skipped" in st:
                    rows.append([label, s_, "not run: " + (st["skipped"] if st else "stopped")] + ["–"] * (len(cols) - 1))
                    continue
                mark = "" if st.get("kept_up", True) else " *"
                rows.append([label + mark, s_] + [st.get(c) for c, _ in cols])
        md.append(table(["step", "system"] + [h for _, h in cols], rows))
        md.append("")
        for s_ in sysnames:
            if not s_.startswith("broker") and results.get(s_, {}).get("W5") is not None:
                md.append(f"- Broker advantage over {s_}, unpaced deliveries/s (>1 = Broker better): "
                          f"{ratio_cell(results, 'W5', s_)}")
        md.append("")
    md.append("Notes: RSS/PSS per connection = (server RSS or PSS with the subscribers − before) / open "
              "connections, summed over the server's processes (user space only; kernel socket buffers are "
              "not included). Server CPU comes from /proc/<pid>/stat of the server's process tree; the load "
              "generators (sseload, pubload, wrk) run on the same 2 CPUs and their CPU is shown separately. "
              "Latency = receive time − the `t` (µs) the publisher wrote into the event; reach-all = last receipt "
              "of an event − its `t`.")
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------- main
RESULTS_BEGIN = "<!-- make bench: the latest complete run, written by bench/run.py; do not edit -->"
RESULTS_END = "<!-- make bench: end of the latest complete run -->"


def update_results_md(md):
    """Puts a complete run's report into bench/RESULTS.md between the markers (made under the
    title the first time); the rest of the file, the analysis, is written by hand."""
    path = os.path.join(BENCH, "RESULTS.md")
    with open(path) as f:
        text = f.read()
    block = RESULTS_BEGIN + "\n\n" + md.replace("## Broker vs Nchan vs Mercure",
                                                  "## The latest `make bench`: Broker vs Nchan vs Mercure", 1) \
        .rstrip() + "\n\n" + RESULTS_END
    if RESULTS_BEGIN in text and RESULTS_END in text:
        head, rest = text.split(RESULTS_BEGIN, 1)
        text = head + block + rest.split(RESULTS_END, 1)[1]
    else:
        cut = text.find("\n## ")
        cut = len(text) if cut < 0 else cut + 1
        text = text[:cut] + block + "\n\n" + text[cut:]
    with open(path, "w") as f:
        f.write(text)
    log(f"wrote the run into {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=",".join(ALL_WORKLOADS))
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run of a few minutes")
    ap.add_argument("--nchan-workers", type=int, default=1, help="nginx worker_processes (default 1)")
    ap.add_argument("--mercure-transport", choices=["local", "bolt"], default="local")
    ap.add_argument("--w1-conns", help="comma-separated subscriber counts for W1 (overrides the size)")
    ap.add_argument("--pub-conns", type=int, default=32,
                    help="publisher keep-alive connections for the paced workloads W2a/W4 (default 32)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"), help="folder for latest.md / latest.json")
    ap.add_argument("--no-build", action="store_true", help="do not rebuild the broker")
    ap.add_argument("--keep", action="store_true", help="keep the servers' temporary folders")
    ap.add_argument("--tls", action="store_true", help="only the TLS rows: --workloads " + ",".join(TLS_WORKLOADS))
    args = ap.parse_args()
    if args.tls:
        args.workloads = ",".join(TLS_WORKLOADS)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w} (choose from {', '.join(ALL_WORKLOADS)})")
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s} (choose from {', '.join(ALL_SYSTEMS)})")
    S = sizes(args.quick)
    if args.w1_conns:
        S["w1_conns"] = [int(x) for x in args.w1_conns.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t_all = time.time()
    meta = {"quick": args.quick, "systems": systems, "workloads": workloads, "machine": machine(),
            "loadavg": loadavg(), "started": started, "nchan_workers": args.nchan_workers,
            "mercure_transport": args.mercure_transport,
            "command": ("make bench" if os.environ.get("MAKELEVEL") and len(sys.argv) == 1 else None)
            or os.environ.get("BENCH_COMMAND") or "bench/run.sh " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
    ensure_packages(systems)
    tls_wanted = any(w in TLS_WORKLOADS for w in workloads)
    build_tools(tls=tls_wanted)
    global TLS
    if tls_wanted:
        TLS = make_tls_files()
        log(f"throwaway TLS chain in {TLS['dir']}")
    if any(s.startswith("broker") for s in systems) and not args.no_build:
        build_broker()
    skip = {}
    if "mercure" in systems:
        try:
            if not os.access(GO, os.X_OK):
                raise RuntimeError(f"Go not found at {GO} (set GO=/path/to/go)")
            took = build_mercure()
            if took is not None:
                meta["mercure_build_s"] = round(took)
        except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
            log(f"cannot build the Mercure peer: {e}")
            skip["mercure"] = f"build failed: {e}"
    meta["versions"] = versions(systems)
    meta["sizes"] = S
    if any(w in workloads for w in ("W2a", "W2c")):
        meta["floor"] = write_floor(S["w2_conns"])

    results = {}
    for sname in systems:
        results[sname] = {}
        if sname in skip:
            results[sname] = {wl: {"error": skip[sname]} for wl in workloads}
            continue
        for wl in workloads:
            if SYSTEMS[sname].workloads is not None and wl not in SYSTEMS[sname].workloads:
                continue
            sysobj = SYSTEMS[sname](args)
            log(f"{sname} {wl} ...")
            t0 = time.time()
            la = loadavg()
            try:
                results[sname][wl] = WORKLOADS[wl](sysobj, S, args)
            except Exception as e:  # noqa: BLE001 - report and go on with the next one
                log(f"{sname} {wl} failed: {e!r}\n{sysobj.log_tail()}")
                results[sname][wl] = {"error": repr(e)}
                sysobj.stop()
            results[sname][wl]["_took_s"] = round(time.time() - t0, 1)
            results[sname][wl]["_loadavg_before"] = la
            log(f"{sname} {wl} done in {time.time() - t0:.0f} s")
    meta["took_s"] = time.time() - t_all
    if TLS and not args.keep:
        shutil.rmtree(TLS["dir"], ignore_errors=True)
    md = report(results, S, meta)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    complete = (not args.quick and set(workloads) == set(ALL_WORKLOADS) and set(systems) == set(ALL_SYSTEMS)
                and os.path.abspath(args.out) == os.path.abspath(os.path.join(BENCH, "results")))
    if complete:
        update_results_md(md)
    else:
        log("partial run (sizes, workloads, systems or --out differ from `make bench`): "
            "bench/RESULTS.md left as it is")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

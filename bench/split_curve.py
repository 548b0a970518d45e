#!/usr/bin/env python3
"""What CURVE on the split deployment's bus costs end to end: paired runs of the split
deployment, its bus in the clear and with CURVE, under the same fan-out.

    bench/split_curve.py                     # 10,000 subscribers, 2 pairs (~5 min)
    bench/split_curve.py --quick             # 300 subscribers, short steps (~1 min)
    bench/split_curve.py --subscribers 5000 --pairs 3

Each run is a fresh deployment on loopback, one embedded store in a temporary folder: two
forwarders (broker-bus), broker-certd, broker-auth, broker-ingest and three broker-stream
replicas, every service with --bus_forwarders naming both forwarders, as docker-compose.yml
runs them (tests/split/split_deployment.py on loopback).  The runs alternate, pair by pair:
  clear  no keys: on loopback the services run the bus in the clear without a flag
         (--bus_insecure only matters off loopback), as scripts/run-split.sh with BUS_CURVE=0;
  curve  a key pair per process (build/broker-keygen), every public key in the forwarders'
         --bus_trusted_keys, the forwarders' and certd's public keys pinned by everyone
         (--bus_server_key, --bus_certd_key): README, "Security of the split deployment".
Before the load, each side of both forwarders is asked for its ZMTP greeting: NULL in a clear
run, CURVE in a CURVE run, or the run stops (a CURVE forwarder counts these two links in
broker_bus_refused_total: the report gives the refusals after them).

Workload per run, in steps: N subscribers of one tenant, spread evenly over the three stream
replicas (one build/sseload per replica, --hist), then inserts POSTed to broker-ingest by
build/pubload, each carrying "t" (µs, CLOCK_REALTIME) in its data: paced steps (50, 200 and
800 inserts/s, 4 s each), then one unpaced burst (2,000 inserts on 32 connections).  Every step
opens its subscribers afresh, so it has latency figures of its own, and sseload waits until
every subscriber has every insert of the step (bounded).  Per step:
  - inserts/s achieved (pubload) and deliveries/s (the step's deliveries over the time from its
    first receipt to its last, plus one insert interval), beside the offered deliveries/s;
  - delivery latency p50/p99 (insert's "t" to receipt), the three sseload histograms merged,
    and reach-all p99 (an insert's "t" to its last receipt on any replica, from the three
    sseload --ids-csv tables);
  - connections that missed inserts, and the tail (last receipt after pubload's last answer);
  - CPU % of one CPU of each process group over the step (streams, forwarders, ingest, auth,
    certd), the forwarders' CPU per insert (the streams' own side of the bus is inside their
    CPU), and the load generators' own CPU.
A warm-up before the steps (a probe tenant of its own, one subscriber per replica) checks that
every replica gets inserts and both forwarders carry them.

Markdown on stdout, JSON in bench/results/split_curve.json (--out).  Loopback only; every wait
is bounded; every process and temporary folder of a run is removed when it ends, fails or is
interrupted.  The machine has 2 CPUs shared by the servers and the load generators: compare the
two modes of the same pair, not the absolute figures with other machines.
"""
import argparse
import csv
import json
import os
import resource
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
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import run  # noqa: E402  bench/run.py: sseload, pubload, /proc helpers, builds

BUILD = run.BUILD
ADMIN = "bench-admin-token"
SECRET = "bench-jwt-secret-0123456789"
KEEPALIVE_S = run.KEEPALIVE_S
REPLICAS = 3
FORWARDERS = 2
GROUPS = ("stream", "bus", "ingest", "auth", "certd")
STOP_TIMEOUT = 20
FD_PER_REPLICA = 19000  # one process may open at most 20,000 files here


def log(*a):
    print("[split_curve %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def sizes(quick):
    if quick:
        return dict(subscribers=300, rates=[50, 200, 800], step_s=2.0, burst=500, settle_s=0.5, idle_s=2.0)
    return dict(subscribers=10000, rates=[50, 200, 800], step_s=4.0, burst=2000, settle_s=1.0, idle_s=4.0)


# ---------------------------------------------------------------- ports, metrics
class Ports:
    """Distinct free loopback ports below the ephemeral range (sseload's source ports)."""

    def __init__(self, start):
        self.next = start
        self.taken = set()

    def _free(self, p):
        if p in self.taken or p > 32000:
            return False
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return True
            except OSError:
                return False

    def one(self):
        for _ in range(2000):
            p, self.next = self.next, self.next + 1
            if self._free(p):
                self.taken.add(p)
                return p
        raise RuntimeError("no free port")

    def pair(self):
        """p with p + 1 free too: a forwarder's two sides."""
        for _ in range(2000):
            p, self.next = self.next, self.next + 1
            if self._free(p) and self._free(p + 1):
                self.taken.update((p, p + 1))
                self.next = p + 2
                return p
        raise RuntimeError("no two consecutive free ports")


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def metric(port, name, default=0.0):
    try:
        return metrics(port).get(name, default)
    except OSError:
        return default


def bus_mechanism(port):
    """The security mechanism a ZeroMQ socket at 127.0.0.1:port announces in its ZMTP 3 greeting
    (NULL: the clear bus; CURVE). Only the greeting's first 11 bytes are sent (signature, major
    version 3): the socket answers with its whole greeting and waits for the rest, so no
    mechanism is offered, nothing is refused, and the link is closed before any handshake."""
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03")
        deadline = time.monotonic() + 5
        while len(buf) < 64 and time.monotonic() < deadline:
            try:
                chunk = s.recv(64 - len(buf))
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf[12:32].rstrip(b"\0").decode(errors="replace") if len(buf) >= 32 else None


# ---------------------------------------------------------------- the deployment
class Deployment:
    """The split deployment of one run: 2 forwarders, certd, auth, ingest, 3 stream replicas."""

    def __init__(self, curve, keep=False):
        self.curve = curve
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix=f"bench-split-curve-{'curve' if curve else 'clear'}-")
        self.procs = {}  # tag -> (group, Popen, http port)
        self.logs = []

    def _keys(self, names):
        keys, trusted = os.path.join(self.dir, "keys"), os.path.join(self.dir, "keys", "trusted")
        os.makedirs(trusted)
        for name in names:
            r = subprocess.run([os.path.join(BUILD, "broker-keygen"), os.path.join(keys, name)],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"broker-keygen {name}: {r.stderr.strip()}")
            shutil.copy(os.path.join(keys, name + ".pub"), os.path.join(trusted, name + ".pub"))
        return keys, trusted

    def start(self, ports):
        bus_ports = [ports.pair() for _ in range(FORWARDERS)]
        self.bus_ports = bus_ports
        common = [f"--db={self.dir}/db", "--bind=127.0.0.1", "--ntp_servers=",
                  "--bus_forwarders=" + ",".join(f"127.0.0.1:{p}" for p in bus_ports),
                  f"--admin_token={ADMIN}", f"--jwt_secret={SECRET}", "--log_level=warning",
                  f"--keepalive={KEEPALIVE_S}", "--console=false"]
        names = ([f"bus{i}" for i in range(FORWARDERS)] + ["certd", "auth", "ingest"]
                 + [f"stream{i}" for i in range(REPLICAS)])
        key_of = lambda name: []  # noqa: E731
        if self.curve:
            keys, trusted = self._keys(names)
            common += [f"--bus_trusted_keys={trusted}", f"--bus_certd_key={trusted}/certd.pub",
                       "--bus_server_key=" + ",".join(f"{trusted}/bus{i}.pub" for i in range(FORWARDERS))]
            key_of = lambda name: [f"--bus_key_file={keys}/{name}"]  # noqa: E731
        plan = [(f"bus{i}", "bus", "broker-bus", [f"--bus_forwarder_port={p}"]) for i, p in enumerate(bus_ports)]
        plan += [("certd", "certd", "broker-certd", ["--secure=false"]),
                 ("auth", "auth", "broker-auth", []), ("ingest", "ingest", "broker-ingest", [])]
        plan += [(f"stream{i}", "stream", "broker-stream", []) for i in range(REPLICAS)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        for tag, group, binary, extra in plan:
            port = ports.one()
            logf = open(os.path.join(self.dir, tag + ".log"), "ab")
            self.logs.append(logf)
            cmd = [os.path.join(BUILD, binary), *common, *key_of(tag), f"--port={port}", *extra]
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                 cwd=self.dir, start_new_session=True)
            self.procs[tag] = (group, p, port)
            if group == "bus" and tag == f"bus{FORWARDERS - 1}":
                for t in [f"bus{i}" for i in range(FORWARDERS)]:
                    self._wait_ready(t)  # the forwarders first: the others connect to them
        for tag in self.procs:
            self._wait_ready(tag)
        # both sides of each forwarder speak the mode's mechanism, or the comparison is void
        want = "CURVE" if self.curve else "NULL"
        self.mechanisms = [bus_mechanism(p + side) for p in bus_ports for side in (0, 1)]
        if any(m != want for m in self.mechanisms):
            raise RuntimeError(f"the forwarders announce {self.mechanisms}, not {want}")
        # a CURVE forwarder counts those two links as refused handshakes: the run's own start here
        time.sleep(1.2)  # the counters move once a second
        self.refused0 = [metric(p, "broker_bus_refused_total") for p in self.bus_http_ports()]

    def _wait_ready(self, tag, timeout=30):
        group, p, port = self.procs[tag]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"{tag} exited with status {p.returncode}: {self.tail(tag)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{tag} not ready after {timeout} s: {self.tail(tag)}")

    def port(self, tag):
        return self.procs[tag][2]

    def stream_ports(self):
        return [self.port(f"stream{i}") for i in range(REPLICAS)]

    def bus_http_ports(self):
        return [self.port(f"bus{i}") for i in range(FORWARDERS)]

    def group_pids(self):
        out = {g: [] for g in GROUPS}
        for group, p, _ in self.procs.values():
            if p.poll() is None:
                out[group] += run.proc_tree(p.pid)
        return out

    def alive(self):
        return all(p.poll() is None for _, p, _ in self.procs.values())

    def dead(self):
        return [t for t, (_, p, _) in self.procs.items() if p.poll() is not None]

    def tail(self, tag, n=600):
        try:
            with open(os.path.join(self.dir, tag + ".log"), errors="replace") as f:
                return f.read()[-n:].strip()
        except OSError:
            return ""

    def stop(self):
        """The streams first, then ingest, auth and certd, the forwarders last; SIGKILL after
        STOP_TIMEOUT s; then the folder (store, keys, logs) goes."""
        procs = list(self.procs.items())
        statuses = {}
        for tag, (_, p, _) in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for tag, (_, p, _) in reversed(procs):
            try:
                statuses[tag] = p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                for pid in reversed(run.proc_tree(p.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                statuses[tag] = "killed"
        self.procs = {}
        for f in self.logs:
            f.close()
        self.logs = []
        if self.keep:
            log("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return statuses

    # -- API
    def user(self, name, tenant):
        auth = f"http://127.0.0.1:{self.port('auth')}"
        run.http("POST", auth + "/create_user", {"username": name, "password": "benchpass1", "admin_token": ADMIN,
                                                 "tenant_name": tenant}, timeout=60)
        return run.http("POST", auth + "/login", {"username": name, "password": "benchpass1"}, timeout=60)["jwt"]

    def insert(self, jwt, data):
        return run.http("POST", f"http://127.0.0.1:{self.port('ingest')}/insert", {"event": "probe", "data": data},
                        {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}, timeout=10)


# ---------------------------------------------------------------- CPU sampling
class GroupSampler:
    """CPU seconds of every process group and of the load generators every `period` s."""

    def __init__(self, pids, loads, period=0.2):
        self.pids, self.loads, self.period = pids, loads, period
        self.samples = []
        self.gen = {}  # load generator pid -> its CPU seconds when last seen (they exit at the end)
        self.gen_seen = None  # the last sample that found a load generator running
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def now(self):
        s = {g: run.cpu_seconds(p) for g, p in self.pids.items()}
        t = time.monotonic()
        for p in [p for l in self.loads for p in l.pids()]:
            self.gen[p] = max(run.cpu_seconds([p]), self.gen.get(p, 0.0))  # 0 once it has gone
            self.gen_seen = t
        s["sseload"] = sum(self.gen.values())
        return t, s

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.now())
            self._stop.wait(self.period)

    def at(self, t, key):
        prev = None
        for ts, s in self.samples:
            if ts >= t:
                if prev is None or ts == prev[0]:
                    return s[key]
                f = (t - prev[0]) / (ts - prev[0])
                return prev[1][key] + f * (s[key] - prev[1][key])
            prev = (ts, s)
        return self.samples[-1][1][key] if self.samples else 0.0

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)
        self.samples.append(self.now())


# ---------------------------------------------------------------- subscribers
LOADS = []  # every sseload still running, stopped on the way out


def open_subscribers(dep, jwt, n, until, timeout, extra=(), ids_csv=None):
    """n subscribers spread evenly over the stream replicas, one sseload each; with ids_csv
    (a path prefix), each writes its per-event table to ids_csv + "-<replica>.csv"."""
    loads = []
    ports = dep.stream_ports()
    for i, port in enumerate(ports):
        k = n // len(ports) + (1 if i < n % len(ports) else 0)
        if k == 0:
            continue
        args = ["--until-events", until, "--expect", until, "--timeout", int(timeout), "--connect-rate", 4000,
                "--hist", *extra]
        if ids_csv:
            args += ["--ids-csv", f"{ids_csv}-{i}.csv"]
        load = run.SSELoad(port, f"/sse?access_token={jwt}", k, args, progress=0.5)
        LOADS.append(load)
        loads.append(load)
    return loads


def finish_all(loads, timeout):
    results = []
    deadline = time.monotonic() + timeout
    for load in loads:
        try:
            results.append(load.finish(max(1.0, deadline - time.monotonic())))
        finally:
            if load in LOADS:
                LOADS.remove(load)
    return results


def stop_loads(loads=None):
    """Stops the given sseload runs (default: every one still running), errors ignored."""
    loads = [l for l in (LOADS if loads is None else loads) if l in LOADS]
    for load in loads:
        load.stop()
    for load in loads:
        try:
            load.finish(30)
        except Exception:  # noqa: BLE001 - on the way out
            try:
                load.proc.kill()
            except OSError:
                pass
        LOADS.remove(load)


def merged_pct(results, p):
    """Percentile p of the latency histograms of several sseload runs, as one run would give it
    (the upper edge of the bucket, within the overall min and max), in ms."""
    counts = {}
    for r in results:
        for edge, c in r.get("latency_hist") or []:
            counts[edge] = counts.get(edge, 0) + c
    n = sum(counts.values())
    if not n:
        return None
    lo = min(r["latency_min_ms"] for r in results if r.get("latency_samples"))
    hi = max(r["latency_max_ms"] for r in results if r.get("latency_samples"))
    want = min(max(int(p * n), 1), n)
    c = 0
    for edge in sorted(counts):
        c += counts[edge]
        if c >= want:
            return round(min(max(edge / 1000.0, lo), hi), 3)
    return round(hi, 3)


def merged_reach(paths, opened):
    """Reach-all over every subscriber of the replicas: per event id, its latest receipt in any
    sseload's table (--ids-csv) minus its "t"; p50, p99 and max in ms (sseload's way of taking
    them), and the ids that fewer than `opened` subscribers got."""
    ids = {}
    for path in paths:
        if not os.path.exists(path):  # a replica with no subscriber (fewer than three in all)
            continue
        try:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    t, last, n = int(row["t_us"]), int(row["last_us"]), int(row["n"])
                    got = ids.setdefault(row["id"], [t, last, 0])
                    got[1] = max(got[1], last)
                    got[2] += n
        except (OSError, ValueError, KeyError):
            return None
    reach = sorted(last - t for t, last, _ in ids.values() if t)
    if not reach:
        return None

    def q(p):
        return round(reach[min(int(p * len(reach)), len(reach) - 1)] / 1000.0, 3)
    return {"ids": len(ids), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(reach[-1] / 1000.0, 3),
            "ids_incomplete": sum(1 for *_, n in ids.values() if n < opened)}


# ---------------------------------------------------------------- one run
def warm_up(dep):
    """One subscriber of a probe tenant per replica, probe inserts until each has two, and until
    both forwarders have carried some (their counts move once a second). Bounded: ~25 s."""
    jwt = dep.user("probe", "probe")
    fwd0 = [metric(p, "broker_bus_forwarded_total") for p in dep.bus_http_ports()]
    loads = open_subscribers(dep, jwt, REPLICAS, 2, 30)
    try:
        for load in loads:
            load.wait_connected(30)
        deadline = time.monotonic() + 25
        i = 0
        while time.monotonic() < deadline:
            dep.insert(jwt, {"t": time.time_ns() // 1000, "n": i})
            i += 1
            time.sleep(0.2)
            if all(l.proc.poll() is not None for l in loads):
                fwd = [metric(p, "broker_bus_forwarded_total") for p in dep.bus_http_ports()]
                if all(b - a >= 3 for a, b in zip(fwd0, fwd)):
                    break
        else:
            raise RuntimeError("warm-up: a stream replica or a forwarder carries no inserts after 25 s")
        res = finish_all(loads, 10)
    finally:
        stop_loads(loads)
    return {"probe_inserts": i, "probe_deliveries": sum(r["events_total"] for r in res)}


def one_step(dep, S, args, jwt, pids, rate, count, label):
    """Fresh subscribers, `count` inserts at `rate` (0: unpaced), until everyone has them all."""
    n = S["subscribers"]
    spec = {"path": "/insert", "headers": [f"Authorization: Bearer {jwt}", "Content-Type: application/json"],
            "body": '{"event":"e","data":{"t":{T},"n":{N}}}'}
    send_s = count / rate if rate else 10.0
    pub_timeout = int(send_s + 60)
    drain_s = args.drain
    sse_timeout = 120 + pub_timeout + drain_s
    extra = ["--max-ids", max(count + 100, 1000)]
    if args.sources:
        extra += ["--sources", args.sources]
    ids_csv = os.path.join(dep.dir, "ids-" + label.replace("/", "").replace(" ", "-"))
    loads = open_subscribers(dep, jwt, n, count, sse_timeout, extra, ids_csv)
    try:
        t0 = time.monotonic()
        connected = sum(load.wait_connected(120) for load in loads)
        connect_s = time.monotonic() - t0
        time.sleep(S["settle_s"])
        sampler = GroupSampler(pids, loads)
        try:
            mono_minus_real = time.monotonic() - time.time()
            t_pub = time.monotonic()
            pr = run.pubload(dep.port("ingest"), spec, rate, count=count, conns=args.pub_conns, timeout=pub_timeout)
            t_pub_end = time.monotonic()
            res = finish_all(loads, sse_timeout + 15)
        finally:
            sampler.stop()
    finally:
        stop_loads(loads)
    opened = sum(r["connections_open"] for r in res)
    delivered = sum(r["events_total"] for r in res)
    firsts = [r["first_event_time_us"] for r in res if r["first_event_time_us"]]
    lasts = [r["last_event_time_us"] for r in res if r["last_event_time_us"]]
    # paced: the sending rate pubload held; unpaced: answered inserts over its elapsed time
    achieved = (pr["achieved_rate"] if rate else pr["completion_rate"]) or 0.0
    if firsts and lasts:
        t_first = min(firsts) / 1e6 + mono_minus_real
        t_last = max(lasts) / 1e6 + mono_minus_real
    else:
        t_first, t_last = t_pub, t_pub_end
    span = max(t_last - t_first, 0.001) + (1.0 / achieved if rate and achieved > 0 else 0.0)
    # CPU over the step: from the first insert to the last receipt (or the last answer)
    c_end = max(t_last, t_pub_end)
    window = max(c_end - t_pub, 0.05)
    cpu = {k: sampler.at(c_end, k) - sampler.at(t_pub, k) for k in GROUPS}
    cpu_pct = {k: round(100 * v / window, 1) for k, v in cpu.items()}
    # sseload exits at its last receipt, its last moments unseen: its CPU up to the last sample
    # that saw it, if that leaves half a second
    gen_end = min(c_end, sampler.gen_seen or t_pub)
    cpu_pct["sseload"] = (round(100 * (sampler.at(gen_end, "sseload") - sampler.at(t_pub, "sseload"))
                                / (gen_end - t_pub), 1) if gen_end - t_pub >= 0.5 else None)
    expected = pr["ok"] * opened
    reach = merged_reach([f"{ids_csv}-{i}.csv" for i in range(REPLICAS)], opened)
    step = {
        "step": label, "rate_target": rate, "inserts": count, "subscribers": n, "connected": connected,
        "open": opened, "connect_s": round(connect_s, 2),
        "inserts_ok": pr["ok"], "inserts_non2xx": pr["non2xx"], "insert_errors": pr["errors"],
        "inserts_per_s": round(achieved, 1), "insert_resp_p50_ms": pr.get("resp_p50_ms"),
        "insert_resp_p99_ms": pr.get("resp_p99_ms"), "pub_elapsed_s": pr["elapsed_s"],
        "delivered": delivered, "expected": expected,
        "deliveries_per_s": round(delivered / span),
        "offered_deliveries_per_s": round(achieved * opened) if rate else None,
        "latency_p50_ms": merged_pct(res, 0.50), "latency_p90_ms": merged_pct(res, 0.90),
        "latency_p99_ms": merged_pct(res, 0.99),
        "latency_max_ms": max((r["latency_max_ms"] for r in res if r.get("latency_samples")), default=None),
        "reach_all_p50_ms": reach["p50_ms"] if reach else None,
        "reach_all_p99_ms": reach["p99_ms"] if reach else None,
        "reach_all_max_ms": reach["max_ms"] if reach else None,
        "ids_incomplete": reach["ids_incomplete"] if reach else None,
        "conns_below_expect": sum(r["conns_below_expect"] or 0 for r in res),
        "disconnected": sum(r["disconnected"] for r in res),
        "out_of_order": sum(r["out_of_order"] for r in res),
        "stop_reasons": sorted({r["stop_reason"] for r in res}),
        "tail_s": round(t_last - t_pub_end, 3),
        "cpu_window_s": round(window, 3),
        "cpu_pct": cpu_pct,
        "pubload_cpu_pct": round(100 * pr["cpu_s"] / max(pr["elapsed_s"], 0.05), 1),
        "bus_cpu_us_per_insert": round(1e6 * cpu["bus"] / pr["ok"], 1) if pr["ok"] else None,
        "stream_cpu_us_per_delivery": round(1e6 * cpu["stream"] / delivered, 3) if delivered else None,
        "per_replica": [{"open": r["connections_open"], "events": r["events_total"],
                         "latency_p50_ms": r["latency_p50_ms"], "latency_p99_ms": r["latency_p99_ms"]}
                        for r in res],
    }
    return step


def one_run(mode, pair, S, args, ports):
    dep = Deployment(curve=(mode == "curve"), keep=args.keep)
    out = {"mode": mode, "pair": pair, "steps": []}
    t0 = time.time()
    try:
        dep.start(ports)
        out["bus_mechanisms"] = dep.mechanisms
        jwt = dep.user("bench", "bench")
        out["warm_up"] = warm_up(dep)
        pids = dep.group_pids()
        out["processes"] = {g: len(p) for g, p in pids.items()}
        # what the groups cost with nobody subscribed (keep-alive timers, certd, the bus's own)
        c0, t0i = {g: run.cpu_seconds(p) for g, p in pids.items()}, time.monotonic()
        time.sleep(S["idle_s"])
        c1, t1i = {g: run.cpu_seconds(p) for g, p in pids.items()}, time.monotonic()
        out["idle_cpu_pct"] = {g: round(100 * (c1[g] - c0[g]) / (t1i - t0i), 1) for g in pids}
        plan = [(r, int(round(r * S["step_s"])), f"{r}/s") for r in S["rates"]]
        if S["burst"]:
            plan.append((0, S["burst"], f"burst {S['burst']}"))
        for rate, count, label in plan:
            step = one_step(dep, S, args, jwt, pids, rate, count, label)
            out["steps"].append(step)
            log(f"  {mode} pair {pair} {label}: {compact(step)}")
            if not dep.alive():
                raise RuntimeError(f"stopped during the run: {', '.join(dep.dead())}: "
                                   + " | ".join(dep.tail(t) for t in dep.dead()))
        out["metrics"] = {
            "forwarded": [metric(p, "broker_bus_forwarded_total") for p in dep.bus_http_ports()],
            "refused": [metric(p, "broker_bus_refused_total") - r0
                        for p, r0 in zip(dep.bus_http_ports(), dep.refused0)],
            "gaps_filled": [metric(p, "broker_bus_gaps_filled_total") for p in dep.stream_ports()],
            "malformed": [metric(p, "broker_bus_malformed_total") for p in dep.stream_ports()],
            "slow_dropped": [metric(p, "broker_sse_slow_dropped_total") for p in dep.stream_ports()]}
    except Exception as e:  # noqa: BLE001 - reported, and the next run goes on
        log(f"{mode} pair {pair} failed: {e!r}")
        out["error"] = repr(e)
    finally:
        stop_loads()
        out["exit"] = dep.stop()
        out["took_s"] = round(time.time() - t0, 1)
    return out


def compact(s):
    return (f"inserts {s['inserts_per_s']}/s ({s['inserts_ok']}/{s['inserts']} ok), deliveries {s['deliveries_per_s']:,}/s "
            f"({s['delivered']:,}/{s['expected']:,}), latency p50 {s['latency_p50_ms']} p99 {s['latency_p99_ms']} ms, "
            f"tail {s['tail_s']} s, CPU % " + " ".join(f"{k} {v}" for k, v in s["cpu_pct"].items()))


# ---------------------------------------------------------------- report
def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.{nd}f}"
    return f"{int(v):,}"


def pct(v):
    return "–" if v is None else f"{v:.1f}"


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def report(runs, S, meta):
    out = ["# Split deployment: the bus in the clear and with CURVE", ""]
    out.append(f"{meta['started']}, {meta['command']}; broker {meta['versions'].get('broker', '?')}, "
               f"libzmq {meta.get('libzmq', '?')}; {meta['machine']['nproc']} CPUs ({meta['machine']['cpu']}), "
               f"load average before {meta['loadavg']}; took {meta['took_s']:.0f} s.")
    out.append("")
    out.append(f"{S['subscribers']:,} subscribers of one tenant over {REPLICAS} broker-stream replicas, "
               f"{FORWARDERS} broker-bus forwarders, broker-ingest, broker-auth, broker-certd, one embedded store, "
               f"loopback; steps {', '.join(str(r) for r in S['rates'])} inserts/s for {S['step_s']:g} s each"
               + (f", then {S['burst']:,} inserts unpaced on {meta['pub_conns']} connections" if S["burst"] else "")
               + "; fresh subscribers every step. CPU is % of one CPU over the step (first insert to last receipt).")
    out.append("")
    hdr = ["pair", "mode", "step", "inserts/s", "deliveries/s (offered)", "latency p50 / p99 ms", "reach-all p99 ms",
           "missed conns", "tail s", "CPU % stream / bus / ingest / auth / certd", "bus CPU µs/insert",
           "sseload CPU %"]
    out += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in runs:
        if r.get("error") and not r["steps"]:
            out.append(f"| {r['pair']} | {r['mode']} | error: {r['error'][:200]} |" + " |" * (len(hdr) - 3))
            continue
        for s in r["steps"]:
            c = s["cpu_pct"]
            offered = f" ({fmt(s['offered_deliveries_per_s'])})" if s["offered_deliveries_per_s"] else ""
            out.append("| " + " | ".join([
                str(r["pair"]), r["mode"], s["step"], fmt(s["inserts_per_s"]),
                fmt(s["deliveries_per_s"]) + offered,
                f"{fmt(s['latency_p50_ms'], 2)} / {fmt(s['latency_p99_ms'], 2)}", fmt(s["reach_all_p99_ms"], 2),
                fmt(s["conns_below_expect"]), fmt(s["tail_s"], 2),
                " / ".join(pct(c[g]) for g in GROUPS), fmt(s["bus_cpu_us_per_insert"]), pct(c["sseload"])]) + " |")
        if r.get("error"):
            out.append(f"| {r['pair']} | {r['mode']} | error: {r['error'][:200]} |" + " |" * (len(hdr) - 3))
    out.append("")
    idle = [r for r in runs if r.get("idle_cpu_pct")]
    if idle:
        out.append(f"Idle, before the steps ({S['idle_s']:g} s, nobody subscribed), CPU % stream / bus / ingest / auth "
                   "/ certd: " + "; ".join(f"pair {r['pair']} {r['mode']} "
                                           + " / ".join(pct(r["idle_cpu_pct"][g]) for g in GROUPS) for r in idle)
                   + f". CPU is read from /proc in ticks of {1000 // run.HZ} ms: a short step's small figures are coarse.")
        out.append("")
    done = [r for r in runs if r.get("metrics")]
    if done:
        out.append("Bus and streams over each run (warm-up included): forwarded by each forwarder; gaps the "
                   "streams filled from the store; subscribers dropped as too slow; handshakes refused: "
                   + "; ".join(f"pair {r['pair']} {r['mode']} " + "/".join(fmt(x) for x in r["metrics"]["forwarded"])
                               + f", {fmt(sum(r['metrics']['gaps_filled']))}, {fmt(sum(r['metrics']['slow_dropped']))}"
                               f", {fmt(sum(r['metrics']['refused']))}" for r in done) + ".")
        out.append("")
    # medians over the pairs, clear beside CURVE
    labels = []
    for r in runs:
        for s in r["steps"]:
            if s["step"] not in labels:
                labels.append(s["step"])
    hdr = ["step", "mode", "runs", "inserts/s", "deliveries/s", "latency p50 / p99 ms", "stream CPU %", "bus CPU %",
           "bus CPU µs/insert", "CURVE / clear: deliveries/s, p99, bus µs/insert"]
    out += ["Medians over the pairs:", "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for label in labels:
        med = {}
        for mode in ("clear", "curve"):
            steps = [s for r in runs if r["mode"] == mode for s in r["steps"] if s["step"] == label]
            med[mode] = {"runs": len(steps),
                         **{k: median([s[k] for s in steps]) for k in
                            ("inserts_per_s", "deliveries_per_s", "latency_p50_ms", "latency_p99_ms",
                             "bus_cpu_us_per_insert")},
                         "stream_cpu": median([s["cpu_pct"]["stream"] for s in steps]),
                         "bus_cpu": median([s["cpu_pct"]["bus"] for s in steps])}

        def ratio(k):
            a, b = med["clear"][k], med["curve"][k]
            return f"{b / a:.2f}×" if a and b is not None else "–"
        for mode in ("clear", "curve"):
            m = med[mode]
            for k, nd in (("deliveries_per_s", 0), ("inserts_per_s", 1), ("bus_cpu_us_per_insert", 1)):
                if m[k] is not None:
                    m[k] = round(m[k], nd) if nd else round(m[k])
            out.append("| " + " | ".join([
                label, mode, str(m["runs"]), fmt(m["inserts_per_s"]), fmt(m["deliveries_per_s"]),
                f"{fmt(m['latency_p50_ms'], 2)} / {fmt(m['latency_p99_ms'], 2)}", pct(m["stream_cpu"]),
                pct(m["bus_cpu"]), fmt(m["bus_cpu_us_per_insert"]),
                (f"{ratio('deliveries_per_s')}, {ratio('latency_p99_ms')}, {ratio('bus_cpu_us_per_insert')}"
                 if mode == "curve" else "")]) + " |")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- main
def on_term(signum, frame):
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subscribers", type=int, help="subscribers of the tenant, over the 3 replicas (default 10000)")
    ap.add_argument("--pairs", type=int, default=2, help="clear/curve pairs, run alternately (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: 300 subscribers, 2 s steps, a 500-insert burst")
    ap.add_argument("--rates", help="comma-separated paced insert rates (default 50,200,800)")
    ap.add_argument("--step-s", type=float, help="seconds of each paced step (default 4; 2 with --quick)")
    ap.add_argument("--burst", type=int, help="inserts of the unpaced step, 0 for none (default 2000; 500 with --quick)")
    ap.add_argument("--pub-conns", type=int, default=32, help="pubload keep-alive connections (default 32)")
    ap.add_argument("--sources", type=int, default=0,
                    help="source addresses 127.0.0.1..K per sseload (default: sseload's, one per 25,000)")
    ap.add_argument("--drain", type=float, default=60, help="bound, s, on a step's deliveries after its inserts")
    ap.add_argument("--base-port", type=int, default=27600)
    ap.add_argument("--out", default=os.path.join(BENCH, "results"), help="folder of split_curve.json")
    ap.add_argument("--no-build", action="store_true", help="do not rebuild the broker")
    ap.add_argument("--keep", action="store_true", help="keep each run's folder (store, keys, logs)")
    args = ap.parse_args()
    S = sizes(args.quick)
    if args.subscribers is not None:
        S["subscribers"] = args.subscribers
    if args.rates:
        S["rates"] = [int(x) for x in args.rates.split(",") if x.strip()]
    if args.step_s is not None:
        S["step_s"] = args.step_s
    if args.burst is not None:
        S["burst"] = args.burst
    if not 1 <= S["subscribers"] <= REPLICAS * FD_PER_REPLICA:
        ap.error(f"--subscribers must be 1..{REPLICAS * FD_PER_REPLICA:,} (a process opens at most 20,000 files)")
    if not 1 <= args.pairs <= 20 or any(r <= 0 for r in S["rates"]) or S["step_s"] <= 0 or S["burst"] < 0:
        ap.error("--pairs 1..20, rates > 0, --step-s > 0, --burst >= 0")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    run.build_tools()
    if not args.no_build:
        run.build_broker()
    for b in ("broker-bus", "broker-certd", "broker-auth", "broker-ingest", "broker-stream", "broker-keygen"):
        if not os.access(os.path.join(BUILD, b), os.X_OK):
            raise SystemExit(f"{BUILD}/{b} missing: make build")
    libzmq = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libzmq5"], capture_output=True, text=True).stdout
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": run.machine(), "loadavg": run.loadavg(),
            "versions": run.versions([]), "libzmq": libzmq.strip() or "?", "sizes": S, "pairs": args.pairs,
            "pub_conns": args.pub_conns, "quick": args.quick,
            "command": "bench/split_curve.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
    t_all = time.time()
    runs = []
    ports = Ports(args.base_port)
    try:
        for pair in range(1, args.pairs + 1):
            for mode in ("clear", "curve"):
                log(f"pair {pair}/{args.pairs}, {mode} ...")
                r = one_run(mode, pair, S, args, ports)
                r["loadavg_after"] = run.loadavg()
                runs.append(r)
                log(f"pair {pair} {mode} done in {r['took_s']:.0f} s")
    finally:
        stop_loads()
    meta["took_s"] = time.time() - t_all
    md = report(runs, S, meta)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "split_curve.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    print(md)
    return 1 if any(r.get("error") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())

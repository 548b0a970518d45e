#!/usr/bin/env python3
"""Idle capacity of the stream service: how many SSE subscribers it holds,
what each costs, and how long one event takes to reach all of them.

    bench/capacity.py --conns 19000 --workers 1      # one stream process
    bench/capacity.py --conns 100000 --workers 7     # the machine's stream processes

Starts broker-auth, broker-ingest and broker-stream (--stream_workers N, one
port, SO_REUSEPORT) on a fresh store in a temporary folder, opens the
subscribers with bench/sseload.c (several processes and 127.0.0.x source
addresses), then measures:
  - resident memory of the stream processes before and with the subscribers
    (user space), and the kernel's TCP memory from /proc/net/sockstat;
  - CPU seconds of the stream processes over an idle interval (keep-alives on);
  - for a few events inserted one at a time: time from insert to the last
    subscriber's receipt (sseload's reach_all).
Prints a JSON line "CAPACITY {...}" and a Markdown table row.  Only loopback.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("BROKER_BUILD", os.path.join(ROOT, "build"))
PAGE = os.sysconf("SC_PAGE_SIZE")
HZ = os.sysconf("SC_CLK_TCK")


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_ready(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            http("GET", f"http://127.0.0.1:{port}/readyz")
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not become ready")


def stream_pids(parent):
    """The stream worker processes (children of the supervisor), or the process itself."""
    kids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    kids.append(int(pid))
            except OSError:
                pass
    return kids or [parent]


def rss_bytes(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / HZ
    return total


def slab_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def tcp_mem_bytes():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1]) * PAGE
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=19000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--events", type=int, default=5, help="events inserted one at a time, 1 s apart")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measurement")
    ap.add_argument("--keepalive", type=int, default=15)
    ap.add_argument("--drain", type=float, default=10.0, help="seconds to wait after the last insert")
    ap.add_argument("--base-port", type=int, default=21000)
    args = ap.parse_args()

    sseload = os.path.join(BUILD, "sseload")
    subprocess.check_call(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", sseload,
                           os.path.join(ROOT, "bench", "sseload.c")])
    work = tempfile.mkdtemp(prefix="broker-capacity-")
    p_auth, p_ingest, p_stream = args.base_port, args.base_port + 1, args.base_port + 2
    bus_i, bus_a = args.base_port + 10, args.base_port + 11
    common = [f"--db={work}/db", "--bind=127.0.0.1", "--log_level=warning",
              "--admin_token=bench-admin", "--jwt_secret=bench-secret", f"--keepalive={args.keepalive}"]
    procs = []
    logf = open(os.path.join(work, "services.log"), "w")
    try:
        procs.append(subprocess.Popen([f"{BUILD}/broker-auth", *common, f"--port={p_auth}",
                                       f"--bus_publish=tcp://127.0.0.1:{bus_a}"], stderr=logf))
        procs.append(subprocess.Popen([f"{BUILD}/broker-ingest", *common, f"--port={p_ingest}",
                                       f"--bus_publish=tcp://127.0.0.1:{bus_i}"], stderr=logf))
        stream = subprocess.Popen([f"{BUILD}/broker-stream", *common, f"--port={p_stream}",
                                   f"--stream_workers={args.workers}",
                                   f"--bus_subscribe=tcp://127.0.0.1:{bus_i},tcp://127.0.0.1:{bus_a}"],
                                  stderr=logf)
        procs.append(stream)
        for port in (p_auth, p_ingest, p_stream):
            wait_ready(port)
        time.sleep(0.5 if args.workers == 1 else 2.0)  # every worker subscribed
        http("POST", f"http://127.0.0.1:{p_auth}/create_user",
             {"username": "bench", "password": "benchpass1", "admin_token": "bench-admin", "tenant_name": "bench"})
        jwt = http("POST", f"http://127.0.0.1:{p_auth}/login", {"username": "bench", "password": "benchpass1"})["jwt"]
        auth = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}

        pids = stream_pids(stream.pid)
        rss_before = rss_bytes(pids)
        tcp_before = tcp_mem_bytes()
        slab_before = slab_bytes()
        hold = 60 + args.idle + args.events * 2 + args.drain
        load = subprocess.Popen([sseload, "--port", str(p_stream), "--path", f"/sse?access_token={jwt}",
                                 "-n", str(args.conns), "--hold", str(int(hold)), "--timeout", str(int(hold + 300)),
                                 "--connect-rate", "4000", "-q"], stdout=subprocess.PIPE, text=True)
        connected = None
        t0 = time.time()
        for line in load.stdout:
            if line.startswith("CONNECTED"):
                connected = int(line.split()[1])
                break
        connect_s = time.time() - t0
        time.sleep(2)
        rss_with = rss_bytes(pids)
        tcp_with = tcp_mem_bytes()
        slab_with = slab_bytes()
        cpu0 = cpu_seconds(pids)
        time.sleep(args.idle)
        cpu_idle = cpu_seconds(pids) - cpu0
        for i in range(args.events):
            http("POST", f"http://127.0.0.1:{p_ingest}/insert",
                 {"event": "tick", "data": {"t": time.time_ns() // 1000, "n": i}}, auth)
            time.sleep(1)
        time.sleep(args.drain)  # let the last event reach everyone before stopping the load
        load.send_signal(signal.SIGINT)
        out = load.communicate(timeout=120)[0]
        result = json.loads([l for l in out.splitlines() if l.startswith("RESULT ")][-1][7:])
        per_conn = (rss_with - rss_before) / max(1, connected or 1)
        report = {
            "conns_requested": args.conns, "conns_open": result["connections_open"],
            "connected_line": connected, "stream_processes": len(pids),
            "connect_seconds": round(connect_s, 2),
            "rss_before_mb": round(rss_before / 2**20, 1), "rss_with_mb": round(rss_with / 2**20, 1),
            "rss_per_conn_bytes": round(per_conn),
            "kernel_tcp_mem_per_conn_bytes": round((tcp_with - tcp_before) / max(1, connected or 1)),
            # Both ends of every connection live on this machine: half the slab growth is the server's.
            "kernel_slab_per_conn_bytes": round((slab_with - slab_before) / 2 / max(1, connected or 1)),
            "idle_cpu_seconds": round(cpu_idle, 3), "idle_seconds": args.idle,
            "events_sent": args.events, "events_total": result["events_total"],
            "ids_incomplete": result["ids_incomplete"], "out_of_order": result["out_of_order"],
            "reach_all_p50_ms": result["reach_all_p50_ms"], "reach_all_max_ms": result["reach_all_max_ms"],
            "latency_p99_ms": result["latency_p99_ms"],
        }
        print("CAPACITY " + json.dumps(report))
        print(f"| {args.conns:,} | {report['conns_open']:,} | {len(pids)} | {report['rss_per_conn_bytes']:,} B"
              f" | {report['kernel_slab_per_conn_bytes']:,} B | {report['idle_cpu_seconds']} s / {args.idle:.0f} s"
              f" | {report['reach_all_p50_ms']} / {report['reach_all_max_ms']} ms"
              f" | {report['events_total']:,} of {args.events * report['conns_open']:,} |")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        logf.close()
        if os.environ.get("BENCH_KEEP"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

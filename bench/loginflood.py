#!/usr/bin/env python3
"""What a flood of wrong passwords does to honest logins (bench/RESULTS.md, "Login flood").

Starts one all-in-one broker (--bin, default build/broker) with its default limits, creates a
victim and an honest user, then for --seconds (default 20):
  * --flooders threads (default 32) send wrong passwords for the victim as fast as answers
    come, from 127.0.0.50;
  * one honest user logs in every 200 ms from 127.0.0.51 (another address, as in real life).
Before the flood, the honest user logs in the same way for 5 s: the baseline.
Prints the honest logins' p50/p99 before and during the flood, the flood's answers by status,
and the Argon2id verifications the server ran (broker_password_verifications_total, when the
build has it).  Loopback only; every loop is bounded in time.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port, path, body, source="127.0.0.1", timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def honest_logins(port, user, seconds, out):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        status = post(port, "/login", {"username": user, "password": "honest-password"}, "127.0.0.51")
        out.append(((time.monotonic() - t0) * 1000.0, status))
        time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "broker"))
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--flooders", type=int, default=32)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="broker-loginflood-")
    port = free_port()
    proc = subprocess.Popen([args.bin, "--port=%d" % port, "--bind=127.0.0.1", "--db=" + os.path.join(work, "db"),
                             "--admin_token=flood-admin", "--jwt_secret=flood-secret"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for name in ("victim", "honest"):
            post(port, "/create_user", {"username": name, "password": "honest-password",
                                        "admin_token": "flood-admin", "tenant_name": "flood"})
        before = []
        honest_logins(port, "honest", 5.0, before)
        v0 = metric(port, "broker_password_verifications_total")
        during, codes, lock = [], {}, threading.Lock()
        stop = time.monotonic() + args.seconds

        def flood():
            i = 0
            while time.monotonic() < stop:
                try:
                    status = post(port, "/login", {"username": "victim", "password": "guess-%d" % i}, "127.0.0.50")
                except OSError:
                    status = "error"
                i += 1
                with lock:
                    codes[status] = codes.get(status, 0) + 1

        threads = [threading.Thread(target=flood) for _ in range(args.flooders)]
        for t in threads:
            t.start()
        honest_logins(port, "honest", args.seconds, during)
        for t in threads:
            t.join(60)
        v1 = metric(port, "broker_password_verifications_total")
        b_ms = [m for m, _ in before]
        d_ms = [m for m, _ in during]
        print("binary: %s" % args.bin)
        print("honest logins before the flood: %d, p50 %.1f ms, p99 %.1f ms, statuses %s"
              % (len(b_ms), statistics.median(b_ms), pct(b_ms, 99), sorted({s for _, s in before})))
        print("honest logins during the flood: %d, p50 %.1f ms, p99 %.1f ms, statuses %s"
              % (len(d_ms), statistics.median(d_ms), pct(d_ms, 99), sorted({s for _, s in during})))
        print("flood: %d wrong logins in %.0f s from %d threads: %s"
              % (sum(codes.values()), args.seconds, args.flooders, json.dumps({str(k): v for k, v in codes.items()})))
        if v0 is not None and v1 is not None:
            print("Argon2id verifications during the flood: %d" % (v1 - v0))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Presence connect storm: N users of one tenant open `GET /sse?presence=true` at once.

    bench/presence_storm.py                      # 10,000 users and streams, one run
    bench/presence_storm.py --users 2000 --runs 2
    bench/presence_storm.py --quick              # 500 users

On a fresh all-in-one broker (build/broker, embedded store in a temporary folder): N users of one
tenant are made with the admin API (`POST /create_user`, a few at a time: each costs an Argon2id
hash), one of them logs in, and the others' JWTs are minted with the run's --jwt_secret and the
same claims (the server checks that the user exists). The broker is then restarted on its store,
so that the Argon2 work's heap and CPU are out of the way. Then `--procs` client processes, each
from its own source address (127.0.0.2, .3, ...), open one stream per user, all at once, each
`/sse?access_token=JWT&presence=true` (the tenant has no events: the streams carry only `$presence`
frames and keep-alives).

Each stream counts the `$presence` frames and bytes it gets and keeps how many users its list
holds: the first frame's `{"users":[...]}`, then each `{"join":[..],"leave":[..]}`. A stream has
settled when its list holds every user whose stream opened (all N unless the server refused some); the
run ends when every stream has (or at --timeout).
Every 50th stream also parses each frame in full and checks that its list is a set (no user joins
twice, no one leaves who was not there) and ends as exactly the N users.

Reported: frames per stream (min / median / p99 / max), bytes per stream and in all, the time
from the first connect to the last stream's 200 (connected) and to the last stream settling, the
server's CPU seconds over the storm (from /proc), its RSS before and after, and the broker's
`broker_presence_*` metrics. Markdown on stdout, JSON in bench/results/presence_storm.json
(--out). Loopback only.
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import selectors
import socket
import statistics
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: the Broker system, /proc helpers, JWTs)


def log(*a):
    print("[storm %s]" % time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- client processes
class Stream:
    __slots__ = ("path", "sock", "state", "head", "carry", "frames", "bytes", "count", "settled_at", "leaves",
                 "connected_at", "last_frame_at", "check", "members", "bad", "in_presence")

    def __init__(self, path, check):
        self.path = path
        self.sock = None
        self.state = "new"
        self.head = b""
        self.carry = b""
        self.frames = 0
        self.bytes = 0
        self.count = 0            # users in this stream's list
        self.leaves = 0           # users its frames said left
        self.settled_at = None
        self.connected_at = None
        self.last_frame_at = None
        self.check = check
        self.members = set() if check else None
        self.bad = 0              # set violations (checked streams)
        self.in_presence = False  # the current frame's event: is $presence


def frame_count(data):
    """Users added and removed by one frame's data, without parsing all of it: names are JSON
    strings without quotes inside (bench usernames), so two quotes a name."""
    if data.startswith(b'{"users"'):
        return data.count(b'"username"'), 0, True
    i = data.find(b'"leave"')
    if i < 0:
        return data.count(b'"') // 2 - 1, 0, False
    return data.count(b'"', 0, i) // 2 - 1, data.count(b'"', i + 7) // 2, False


def client(idx, port, src, paths, expect_v, start_at, timeout, check_every, conn_q, settled_q, stop_ev, out_q):
    """expect_v: the users whose streams opened, over every process (0 until the parent knows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    streams = [Stream(p, (k % check_every) == 0) for k, p in enumerate(paths)]
    sel = selectors.DefaultSelector()
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    t0 = time.monotonic()
    failed = non200 = disconnected = 0
    statuses = {}
    expect_users = 0
    connected = 0
    settled = 0
    for s in streams:  # all at once: every connect issued now, non-blocking
        sk = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sk.setblocking(False)
        sk.bind((src, 0))
        try:
            sk.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError:
            sk.close()
            failed += 1
            s.state = "failed"
            continue
        s.sock, s.state = sk, "connecting"
        sel.register(sk, selectors.EVENT_WRITE, s)
    conn_reported = settled_reported = False
    deadline = t0 + timeout
    # every stream stays open until the parent says stop: a stream closed here is a user who leaves
    # everyone else's list
    while time.monotonic() < deadline and not stop_ev.is_set():
        if not expect_users and expect_v.value:  # every stream of every process resolved: the lists' size is known
            expect_users = expect_v.value
            for s in streams:
                if s.connected_at is not None and s.settled_at is None and s.count == expect_users:
                    s.settled_at = time.monotonic() - t0
                    settled += 1
        if not conn_reported and connected + failed + non200 == len(streams):
            conn_q.put((idx, connected, time.monotonic() - t0))
            conn_reported = True
        if (not settled_reported and conn_reported
                and settled + failed + non200 + disconnected >= len(streams)):
            settled_q.put((idx, time.monotonic() - t0))
            settled_reported = True
        for key, _ in sel.select(0.5):
            if stop_ev.is_set():  # the others close their streams now: their leaves are not the storm's
                break
            s = key.data
            sk = s.sock
            if s.state == "connecting":
                if sk.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sel.unregister(sk)
                    sk.close()
                    failed += 1
                    s.state = "failed"
                    continue
                sk.send((f"GET {s.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
                         "Cache-Control: no-cache\r\n\r\n").encode())
                s.state = "head"
                sel.modify(sk, selectors.EVENT_READ, s)
                continue
            try:
                data = sk.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            now = time.monotonic() - t0
            if not data:
                sel.unregister(sk)
                sk.close()
                if s.state == "head":
                    failed += 1
                    s.state = "failed"
                else:
                    disconnected += 1
                    s.state = "closed"
                continue
            s.bytes += len(data)
            if s.state == "head":
                s.head += data
                i = s.head.find(b"\r\n\r\n")
                if i < 0:
                    continue
                status = s.head.split(b" ", 2)[1]
                data = s.head[i + 4:]
                s.head = b""
                if status != b"200":
                    non200 += 1
                    statuses[status.decode()] = statuses.get(status.decode(), 0) + 1
                    s.state = "non200"
                    sel.unregister(sk)
                    sk.close()
                    continue
                s.state = "open"
                s.connected_at = now
                connected += 1
            buf = s.carry + data
            # whole frames only: SSE frames end with a blank line ("\n\n")
            end = buf.rfind(b"\n\n")
            if end < 0:
                s.carry = buf
                continue
            s.carry = buf[end + 2:]
            for fr in buf[:end].split(b"\n\n"):
                if not fr:
                    continue
                ev = None
                body = None
                for line in fr.split(b"\n"):
                    if line.startswith(b"event:"):
                        ev = line[6:].strip()
                    elif line.startswith(b"data:"):
                        body = line[5:].lstrip(b" ")
                if ev != b"$presence" or body is None:
                    continue
                s.frames += 1
                s.last_frame_at = now
                plus, minus, full = frame_count(body)
                s.count = plus if full else s.count + plus - minus
                s.leaves += minus
                if s.check:
                    j = json.loads(body)
                    if "users" in j:
                        s.members = {u["username"] for u in j["users"]}
                        if len(s.members) != len(j["users"]):
                            s.bad += 1
                    else:
                        for u in j.get("join", []):
                            s.bad += u in s.members
                            s.members.add(u)
                        for u in j.get("leave", []):
                            s.bad += u not in s.members
                            s.members.discard(u)
                    if len(s.members) != s.count:
                        s.bad += 1
                if s.settled_at is None and expect_users and s.count == expect_users:
                    s.settled_at = now
                    settled += 1
                elif s.settled_at is not None and s.count != expect_users:
                    s.settled_at = None  # a leave after it had settled: not settled after all
                    settled -= 1
    t_end = time.monotonic() - t0
    for s in streams:
        if s.sock is not None and s.state in ("open", "head", "connecting"):
            s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sock.close()
    opened = [s for s in streams if s.connected_at is not None]
    checked = [s for s in opened if s.check]
    out_q.put({"idx": idx, "streams": len(streams), "failed": failed, "non200": non200, "statuses": statuses,
               "disconnected": disconnected, "connected": len(opened), "settled": settled,
               "frames": [s.frames for s in opened], "bytes": [s.bytes for s in opened],
               "connected_at": [s.connected_at for s in opened],
               "settled_at": [s.settled_at for s in opened if s.settled_at is not None],
               "last_frame_at": [s.last_frame_at for s in opened if s.last_frame_at is not None],
               "final_count": [s.count for s in opened], "leaves": sum(s.leaves for s in opened),
               "checked": len(checked), "checked_bad": sum(s.bad for s in checked),
               "checked_exact": sum(1 for s in checked if len(s.members) == expect_users and not s.bad),
               "settled_reported": settled_reported, "t_end": t_end, "t0_wall": time.time() - (time.monotonic() - t0)})


# ---------------------------------------------------------------- the broker and its users
class Args:
    keep = False


def create_users(b, first, n, threads):
    """Users storm<first>..storm<n-1>: (seconds, each one's seconds)."""
    base = b.url(b.api_port)
    took = []

    def one(i):
        body = {"username": f"storm{i}", "password": "benchpass1", "admin_token": b.admin, "tenant_name": "storm"}
        for attempt in range(20):
            t = time.monotonic()
            try:
                run.http("POST", base + "/create_user", body, timeout=120)
                took.append(time.monotonic() - t)
                return
            except urllib.error.HTTPError as e:
                if e.code == 400 and b"already taken" in e.read():  # made by an earlier, interrupted run
                    return
                if e.code in (429, 503):  # the password pool's backlog: wait as told
                    time.sleep(float(e.headers.get("Retry-After") or 1))
                    continue
                raise
        raise RuntimeError(f"create_user storm{i}: still refused")
    import concurrent.futures
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as ex:
        list(ex.map(one, range(first, n)))
    return time.monotonic() - t0, took


def metrics(b):
    with urllib.request.urlopen(b.url(b.port, "/metrics"), timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and (parts[0].startswith("broker_presence") or parts[0] == "broker_sse_slow_dropped_total"):
            out[parts[0]] = float(parts[1])
    return out


def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else None


def storm(b, jwts, procs, timeout):
    n = len(jwts)
    paths = [f"/sse?access_token={j}&presence=true" for j in jwts]
    pids = b.pids()
    rss0 = run.rss_bytes(pids)
    m0 = metrics(b)
    ctx = mp.get_context("fork")
    conn_q, settled_q, out_q, stop_ev = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
    expect_v = ctx.Value("i", 0)
    start_at = time.time() + 1.0 + 0.2 * procs
    ps = [ctx.Process(target=client, args=(k, b.port, f"127.0.0.{2 + k}", paths[k::procs], expect_v, start_at, timeout, 50,
                                           conn_q, settled_q, stop_ev, out_q)) for k in range(procs)]
    for p in ps:
        p.start()
    while time.time() < start_at:
        time.sleep(0.002)
    c0 = run.cpu_seconds(b.pids())
    samples = []  # (s since start, server CPU s): when the CPU stops moving
    rss_peak = rss0
    settled_procs = 0
    deadline = start_at + timeout
    # every process settled (or the time is up), then a second more: nothing else may come
    conn_reports = []
    while settled_procs < procs and time.time() < deadline:
        while len(conn_reports) < procs and not conn_q.empty():
            conn_reports.append(conn_q.get())
            if len(conn_reports) == procs:
                expect_v.value = sum(c[1] for c in conn_reports)
        try:
            settled_q.get(timeout=0.25)
            settled_procs += 1
        except Exception:  # noqa: BLE001 - queue.Empty
            pass
        samples.append((time.time() - start_at, run.cpu_seconds(b.pids())))
        rss_peak = max(rss_peak, run.rss_bytes(b.pids()))
    t_settled = time.time() - start_at
    quiet_until = time.time() + 1.0
    while time.time() < quiet_until:
        time.sleep(0.25)
        samples.append((time.time() - start_at, run.cpu_seconds(b.pids())))
    c_settled = run.cpu_seconds(b.pids())
    rss_settled = run.rss_bytes(b.pids())
    stop_ev.set()
    outs = []
    while len(outs) < procs:
        outs.append(out_q.get(timeout=60))
    for p in ps:
        p.join(timeout=30)
    c1 = run.cpu_seconds(b.pids())
    rss1 = run.rss_bytes(b.pids())
    m1 = metrics(b)
    frames = [x for o in outs for x in o["frames"]]
    byts = [x for o in outs for x in o["bytes"]]
    settled = [x for o in outs for x in o["settled_at"]]
    connected_at = [x for o in outs for x in o["connected_at"]]
    last_frame = [x for o in outs for x in o["last_frame_at"]]
    # the processes started within a few ms of start_at; their times are from their own start
    res = {"users": n, "procs": procs, "streams": n,
           "connected": sum(o["connected"] for o in outs), "failed": sum(o["failed"] for o in outs),
           "non200": sum(o["non200"] for o in outs), "disconnected": sum(o["disconnected"] for o in outs),
           "statuses": {k: sum(o["statuses"].get(k, 0) for o in outs) for o in outs for k in o["statuses"]},
           "list_size_expected": expect_v.value,
           "settled": len(settled), "all_processes_settled": settled_procs == procs,
           "parent_saw_settled_s": round(t_settled, 2),
           "all_connected_s": round(max(connected_at), 3) if connected_at else None,
           "connected_p50_s": round(q(connected_at, 0.5), 3) if connected_at else None,
           "settled_all_s": round(max(settled), 3) if settled and len(settled) == expect_v.value else None,
           "settled_p50_s": round(q(settled, 0.5), 3) if settled else None,
           "last_frame_s": round(max(last_frame), 3) if last_frame else None,
           "frames_min": min(frames), "frames_median": statistics.median(frames), "frames_p99": q(frames, 0.99),
           "frames_max": max(frames), "frames_total": sum(frames),
           "bytes_min": min(byts), "bytes_median": statistics.median(byts), "bytes_max": max(byts),
           "bytes_total": sum(byts),
           "checked_streams": sum(o["checked"] for o in outs),
           "checked_exact": sum(o["checked_exact"] for o in outs),
           "checked_violations": sum(o["checked_bad"] for o in outs),
           "server_cpu_s": round(c_settled - c0, 2), "server_cpu_with_leaves_s": round(c1 - c0, 2),
           "rss_before_mb": round(rss0 / 2**20, 1), "rss_peak_mb": round(rss_peak / 2**20, 1),
           "rss_settled_mb": round(rss_settled / 2**20, 1), "rss_after_mb": round(rss1 / 2**20, 1),
           "presence_frames_metric": m1.get("broker_presence_frames_total", 0) - m0.get("broker_presence_frames_total", 0),
           "presence_users_online": m1.get("broker_presence_users_online"),
           "slow_dropped": m1.get("broker_sse_slow_dropped_total", 0) - m0.get("broker_sse_slow_dropped_total", 0),
           "leaves_seen": sum(o["leaves"] for o in outs),
           "final_count_min": min(x for o in outs for x in o["final_count"]),
           "final_count_max": max(x for o in outs for x in o["final_count"]),
           "cpu_samples": [(round(t, 2), round(c - c0, 2)) for t, c in samples[::4]]}
    # when the server's CPU stopped growing (within 0.05 s over a second): its work for the storm done
    busy_until = None
    for i, (t, c) in enumerate(samples):
        later = [cc for tt, cc in samples[i:] if tt <= t + 1.0]
        if len(later) >= 3 and later[-1] - c < 0.05 and c - c0 > 0.9 * (c_settled - c0):
            busy_until = t
            break
    res["server_busy_until_s"] = round(busy_until, 2) if busy_until is not None else None
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=4, help="client processes, one source address each")
    ap.add_argument("--runs", type=int, default=1, help="storms, each on a freshly restarted broker")
    ap.add_argument("--create-threads", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--quick", action="store_true", help="500 users")
    ap.add_argument("--out", default=os.path.join(run.BENCH, "results"))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--store", help="a folder for the broker's store, kept after the run: a later run with the "
                    "same folder reuses its users (making them is the long part) and makes only the missing ones")
    a = ap.parse_args()
    if a.quick:
        a.users = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not a.no_build:
        run.build_broker()
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg": run.loadavg(), "machine": run.machine(),
            "versions": run.versions(["broker"]), "command": "bench/presence_storm.py " + " ".join(sys.argv[1:]),
            "create_threads": a.create_threads}
    args = Args()
    b = run.Broker(args)
    have = 0
    if a.store:
        args.keep = True
        os.makedirs(a.store, exist_ok=True)
        b.db_dir = os.path.abspath(a.store)
        try:
            with open(os.path.join(a.store, "storm-users.txt")) as f:
                have = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            have = 0
    b.start()
    runs = []
    try:
        if have < a.users:
            log(f"creating users storm{have}..storm{a.users - 1} ({a.create_threads} at a time, load {run.loadavg()})")
            took, each = create_users(b, have, a.users, a.create_threads)
            meta["create_users"] = a.users - have
            meta["create_users_s"] = round(took, 1)
            meta["create_user_ms_p50"] = round(1000 * statistics.median(each), 1)
            meta["create_users_loadavg_after"] = run.loadavg()
            log(f"users made in {took:.1f} s (p50 {meta['create_user_ms_p50']} ms each)")
            if a.store:
                with open(os.path.join(a.store, "storm-users.txt"), "w") as f:
                    f.write(f"{a.users}\n")
        else:
            meta["create_users"] = 0
            log(f"{have} users already in {a.store}")
        jwt0 = run.http("POST", b.url(b.api_port, "/login"), {"username": "storm0", "password": "benchpass1"})["jwt"]
        claims0 = json.loads(run.base64.urlsafe_b64decode(jwt0.split(".")[1] + "=="))
        jwts = [jwt0] + [run.hs256_jwt(dict(claims0, sub=f"storm{i}"), b.secret) for i in range(1, a.users)]
        who = run.http("GET", b.url(b.api_port, "/verify"), headers={"Authorization": "Bearer " + jwts[-1]})
        if who.get("username") != f"storm{a.users - 1}":
            raise SystemExit(f"a minted JWT is not accepted: {who}")
        for k in range(a.runs):
            b.clean_baseline()  # a fresh process on the same store: no Argon2 heap, no streams
            time.sleep(1.0)
            meta.setdefault("loadavg_before_runs", []).append(run.loadavg())
            log(f"storm {k + 1}/{a.runs}: {a.users} streams from {a.procs} processes (load {run.loadavg()})")
            r = storm(b, jwts, a.procs, a.timeout)
            r["loadavg_before"] = meta["loadavg_before_runs"][-1]
            log({x: y for x, y in r.items() if x != "cpu_samples"})
            runs.append(r)
    finally:
        b.stop()
    md = report(meta, runs)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "presence_storm.json"), "w") as f:
        json.dump({"meta": meta, "runs": runs}, f, indent=1)
    with open(os.path.join(a.out, "presence_storm.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def report(meta, runs):
    md = ["## Presence connect storm", "",
          f"- Machine: {meta['machine']['nproc']} CPUs ({meta['machine']['cpu']}), Linux {meta['machine']['kernel']}; "
          "server and clients share the CPUs; loopback only.",
          f"- Broker: {meta['versions'].get('broker')}, all-in-one, embedded store, presence on (the default).",
          f"- Command: `{meta['command']}` (started {meta['started']}, load average at start {meta['loadavg']})",
          f"- Users: {runs[0]['users'] if runs else '?'} of one tenant, made with `POST /create_user` "
          + (f"in {meta.get('create_users_s')} s ({meta['create_users']} of them, {meta.get('create_threads')} at a "
             f"time; p50 {meta.get('create_user_ms_p50')} ms each, Argon2id; load average after "
             f"{meta.get('create_users_loadavg_after')})" if meta.get("create_users") else "by an earlier run (`--store`)")
          + "; JWTs minted with the run's secret after one login.", ""]
    for r in runs:
        r["refused"] = ", ".join(f"{v} × {k}" for k, v in sorted(r.get("statuses", {}).items())) or "0"
    cols = [("loadavg_before", "load before"), ("connected", "streams open"), ("refused", "refused"), ("failed", "failed"),
            ("disconnected", "dropped"), ("all_connected_s", "all open s"), ("settled_all_s", "all settled s"),
            ("last_frame_s", "last frame s"), ("frames_min", "frames min"), ("frames_median", "median"),
            ("frames_max", "max"), ("bytes_median", "bytes/stream median"), ("bytes_max", "max"),
            ("bytes_total", "bytes in all"), ("server_cpu_s", "server CPU s"),
            ("server_busy_until_s", "server busy until s"), ("rss_before_mb", "RSS before MB"),
            ("rss_peak_mb", "RSS peak MB"), ("rss_settled_mb", "RSS settled MB"),
            ("checked_exact", "checked lists exact")]
    rows = [[str(k + 1)] + [r.get(c) for c, _ in cols] for k, r in enumerate(runs)]
    md.append(run.table(["run"] + [h for _, h in cols], rows))
    md.append("")
    md.append("Times are from the moment every connect was issued. A stream has settled when its list holds every "
              "user whose stream opened; `refused` counts the streams the server answered with an error status, "
              "by status; `last frame` is the last `$presence` frame any stream got (no stream is closed before every "
              "list has settled and a second has passed); server CPU is from the first connect to that moment, and "
              "`server busy until` is when the server's CPU stopped growing. Every 50th stream parses every frame in full and checks its list "
              f"as a set: {', '.join(str(r['checked_violations']) for r in runs)} violation(s) over "
              f"{', '.join(str(r['checked_streams']) for r in runs)} checked streams.")
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Child process of test_capacity.py: holds N idle keep-alive connections to the broker.

    python3 door_child.py HOST PORT SOURCE_ADDR N TLS(0|1)

Opens N connections from SOURCE_ADDR (a 127.0.0.x address: each one has its own ephemeral ports),
sends GET /healthz on each and reads the answer, and keeps them open. The server closes a
keep-alive connection idle for 20 s: while the opening lasts longer than 10 s (TLS on a small
machine), the connections idle for 13 s ask GET /healthz once more, so that all N are open (and
idle) together at the end. It prints one JSON line
    {"opened": N, "ok": K, "refreshed": R, "errors": {...}, "seconds": S, "oldest_idle": I}
(ok: held connections answered 200 without `Connection: close`), then obeys stdin:
    "check"  -> {"open": K, "closed": C}   (a server close or reset seen as closed)
    "close"  -> closes every connection, prints {"closed_all": true} and exits
End of stdin closes everything too. The process exits by itself after LIFETIME seconds whatever
happens (everything bounded in time), so a crashed test never leaves it behind for long.
"""

import collections
import json
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time

LIFETIME = 600  # seconds: hard end of this process
OPEN_BUDGET = 240  # seconds to open all connections and read their answers
PER_CONN_TIMEOUT = 10.0
THREADS = 16
REFRESH_AGE = 13.0  # seconds: see open_some (the server closes at 20 s)
FINAL_REFRESH_AGE = 5.0


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_answer(sock, deadline):
    """Reads one answer (head + Content-Length body); returns (status, says_close)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer head")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before an answer: %r" % buf[:100])
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip().lower()
    n = int(hdrs.get("content-length", "0") or 0)
    while len(rest) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("body incomplete")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside the body")
        rest += data
    return status, "close" in hdrs.get("connection", "")


def still_open(sock):
    """False when the server closed (EOF or reset); True when nothing is pending.
    (poll, not select: the descriptors here are far above FD_SETSIZE.)"""
    fd = sock.fileno()
    if fd < 0:
        return False
    p = select.poll()
    p.register(fd, select.POLLIN | select.POLLRDHUP)
    if not p.poll(0):
        return True
    try:
        sock.setblocking(False)
        data = sock.recv(4096)
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except (OSError, ssl.SSLError):
        return False
    return bool(data)  # bytes the server sent on an idle connection: still open, but odd


def main():
    host, port, source, n, tls = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
    signal.alarm(LIFETIME)
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    req = b"GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host.encode(), port)
    conns = []  # [socket, monotonic time of its last answer]
    counts = {"ok": 0, "closing": 0, "refreshed": 0}
    errors = {}
    lock = threading.Lock()
    t0 = time.monotonic()
    budget_end = t0 + OPEN_BUDGET

    def note(key):
        with lock:
            errors[key] = errors.get(key, 0) + 1

    def ask(s):
        """GET /healthz on s; True when answered 200 keep-alive."""
        s.settimeout(PER_CONN_TIMEOUT)
        s.sendall(req)
        status, says_close = read_answer(s, time.monotonic() + PER_CONN_TIMEOUT)
        if status == 200 and not says_close:
            return True
        note("closing answer" if says_close else "status %d" % status)
        return False

    def open_some(count):
        mine = collections.deque()  # oldest answer first
        for _ in range(count):
            # The server closes a keep-alive connection idle for 20 s: when opening takes longer
            # than REFRESH_AGE, the oldest connections of this thread ask again (and are idle
            # again right after), so that all are open together at the end.
            for _ in range(len(mine)):  # bounded
                if time.monotonic() - mine[0][1] < REFRESH_AGE:
                    break
                entry = mine.popleft()
                try:
                    if ask(entry[0]):
                        entry[1] = time.monotonic()
                        mine.append(entry)
                        with lock:
                            counts["refreshed"] += 1
                        continue
                except Exception as e:  # noqa: BLE001
                    note("refresh %s: %s" % (type(e).__name__, str(e)[:60]))
                entry[0].close()
                with lock:
                    counts["ok"] -= 1
            if time.monotonic() > budget_end:
                note("open budget of %d s spent" % OPEN_BUDGET)
                continue
            s = None
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # TIME_WAIT left by these ports must not stop a later server's bind on them
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((source, 0))
                s.settimeout(PER_CONN_TIMEOUT)
                s.connect((host, port))
                if ctx is not None:
                    s = ctx.wrap_socket(s)
                if ask(s):
                    mine.append([s, time.monotonic()])
                    with lock:
                        counts["ok"] += 1
                else:
                    s.close()
            except Exception as e:  # noqa: BLE001 - counted and reported to the test
                note("%s: %s" % (type(e).__name__, str(e)[:80]))
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
        with lock:
            conns.extend(mine)

    # THREADS threads open the connections side by side (blocking sockets; the GIL is released
    # in connect, recv and the TLS handshake).
    shares = [n // THREADS + (1 if k < n % THREADS else 0) for k in range(THREADS)]
    threads = [threading.Thread(target=open_some, args=(c,), daemon=True) for c in shares if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join(OPEN_BUDGET + 2 * PER_CONN_TIMEOUT + 5)
    with lock:
        held = list(conns)
    # Threads end at different times: those done early ask once more, so that at the end no
    # connection has been idle for long (bounded: one pass).
    final_cut = time.monotonic() - FINAL_REFRESH_AGE
    kept = []
    for entry in held:
        if entry[1] < final_cut:
            try:
                if ask(entry[0]):
                    entry[1] = time.monotonic()
                    counts["refreshed"] += 1
                    kept.append(entry)
                    continue
            except Exception as e:  # noqa: BLE001
                note("refresh %s: %s" % (type(e).__name__, str(e)[:60]))
            entry[0].close()
            counts["ok"] -= 1
            continue
        kept.append(entry)
    held = kept
    with lock:
        now = time.monotonic()
        out({"opened": len(held), "ok": counts["ok"], "refreshed": counts["refreshed"],
             "errors": dict(errors), "seconds": round(now - t0, 2),
             "oldest_idle": round(max([now - t for _, t in held] or [0]), 2), "pid": os.getpid()})
    socks = [s for s, _ in held]
    for _ in range(100):  # bounded number of commands
        line = sys.stdin.readline()
        cmd = line.strip()
        if cmd == "check":
            alive = sum(1 for s in socks if still_open(s))
            out({"open": alive, "closed": len(socks) - alive})
            continue
        break  # "close", EOF or anything else
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    out({"closed_all": True})


if __name__ == "__main__":
    main()

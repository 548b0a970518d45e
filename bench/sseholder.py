#!/usr/bin/env python3
"""Holds many SSE subscribers over many paths in one process, for W4 in bench/run.py.

sseload (bench/sseload.c) targets one path per run, and on this 2-CPU machine ~1,000 sseload
instances (one per tenant) cost more than a CPU in wake-ups alone.  So W4 measures latency with
sseload on a sample of tenants and opens the other tenants' subscribers with this holder: one
process, one epoll set, no timers; it only counts, per connection, the events (`data:` lines
that start an event) it receives.

    sseholder.py --port P --paths FILE -n 10 [--timeout 300] [--connect-rate 2000] [--expect E]

Prints `CONNECTED n` once every connection is resolved, then runs until SIGINT/SIGTERM or
--timeout, or until every open connection has --until-events events, and prints one line
`RESULT {json}`.  Loopback only.
"""
import argparse
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time

stop = False


def on_sig(*_):
    global stop
    stop = True  # noqa


class Conn:
    __slots__ = ("path", "sock", "state", "buf", "events", "tail", "attempts")

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.state = "new"
        self.buf = b""
        self.events = 0
        self.tail = b""
        self.attempts = 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--paths", required=True, help="file, one request path per line")
    ap.add_argument("-n", type=int, default=10, help="connections per path")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--connect-rate", type=float, default=2000)
    ap.add_argument("--until-events", type=int, default=-1)
    ap.add_argument("--expect", type=int, default=-1)
    ap.add_argument("--retries", type=int, default=5)
    args = ap.parse_args()
    if not args.host.startswith("127."):
        sys.exit("sseholder: loopback addresses only")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGINT, on_sig)
    signal.signal(signal.SIGTERM, on_sig)
    with open(args.paths) as f:
        paths = [l.strip() for l in f if l.strip()]
    conns = [Conn(p) for p in paths for _ in range(args.n)]
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    nxt = 0
    retry = []                # (due, conn)
    stats = {"opened": 0, "non200": 0, "failed": 0, "disconnected": 0, "retries": 0}
    resolved = 0
    connected_printed = False
    open_now = 0
    satisfied = 0             # open connections with --until-events events

    def start(c):
        c.attempts += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((args.host, args.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            fail(c, None)
            return
        c.sock, c.state, c.buf = s, "connecting", b""
        sel.register(s, selectors.EVENT_WRITE, c)

    def fail(c, s):
        nonlocal resolved
        if s is not None:
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        c.sock = None
        if c.attempts <= args.retries and not stop:
            stats["retries"] += 1
            retry.append((time.monotonic() + 0.04 * 2 ** c.attempts, c))
        else:
            stats["failed"] += 1
            c.state = "failed"
            resolved += 1

    def close_open(c):
        nonlocal open_now, satisfied
        if args.until_events >= 0 and c.events >= args.until_events:
            satisfied -= 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.sock.close()
        c.sock = None
        open_now -= 1

    tokens, t_tok = 1.0, time.monotonic()
    stop_reason = "interrupted"
    while True:
        now = time.monotonic()
        if stop:
            break
        if now >= deadline:
            stop_reason = "timeout"
            break
        # start new connections within the rate budget
        tokens = min(tokens + args.connect_rate * (now - t_tok), max(1.0, args.connect_rate * 0.02))
        t_tok = now
        while tokens >= 1 and (retry and retry[0][0] <= now or nxt < len(conns)):
            if retry and retry[0][0] <= now:
                start(retry.pop(0)[1])
            else:
                start(conns[nxt])
                nxt += 1
            tokens -= 1
        pending = nxt < len(conns) or retry
        if resolved == len(conns) and not connected_printed:
            print(f"CONNECTED {open_now}", flush=True)
            connected_printed = True
        if connected_printed and args.until_events >= 0 and satisfied >= open_now:
            stop_reason = "until_events"
            break
        timeout = 0.002 if pending else (0.5 if args.until_events >= 0 else 1.0)
        for key, mask in sel.select(timeout):
            c = key.data
            s = c.sock
            if c.state == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, s)
                    continue
                req = (f"GET {c.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
                       "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").encode()
                try:
                    s.send(req)
                except OSError:
                    fail(c, s)
                    continue
                c.state = "head"
                sel.modify(s, selectors.EVENT_READ, c)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                if c.state == "head":
                    fail(c, s)
                else:
                    stats["disconnected"] += 1
                    c.state = "closed"
                    close_open(c)
                continue
            if c.state == "head":
                c.buf += data
                i = c.buf.find(b"\r\n\r\n")
                if i < 0:
                    continue
                status = c.buf.split(b" ", 2)[1] if b" " in c.buf else b""
                rest = c.buf[i + 4:]
                c.buf = b""
                resolved += 1
                if status != b"200":
                    stats["non200"] += 1
                    c.state = "non200"
                    sel.unregister(s)
                    s.close()
                    c.sock = None
                    continue
                stats["opened"] += 1
                open_now += 1
                c.state = "open"
                if args.until_events == 0:
                    satisfied += 1
                data = rest
            # count lines that start with "data:" and are the first data line of an event
            chunk = c.tail + data
            before = c.events
            c.events += chunk.count(b"\ndata:") - chunk.count(b"\ndata:", 0, len(c.tail))
            if not c.tail and chunk.startswith(b"data:"):
                c.events += 1
            c.tail = chunk[-6:]
            if 0 <= args.until_events and before < args.until_events <= c.events:
                satisfied += 1
    for c in conns:
        if c.sock is not None:
            if c.state == "open":
                close_open(c)
            else:
                c.sock.close()
    opened = [c for c in conns if c.state in ("open", "closed")]
    per = [c.events for c in opened]
    res = dict(stats, connections_requested=len(conns), connections_open=stats["opened"],
               events_total=sum(per), events_per_conn_min=min(per, default=0),
               events_per_conn_max=max(per, default=0),
               conns_below_expect=sum(1 for e in per if e < args.expect) if args.expect >= 0 else None,
               duration_s=round(time.monotonic() - t0, 3), stop_reason=stop_reason)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Chaos for the front door: many connections doing random sequences of what clients do.

Each worker loops until the deadline, opening a connection (plain or TLS, as its target says) and
playing one scenario on it, chosen at random by weight:

  keepalive   1-5 relayed requests on one keep-alive connection (/verify without credentials,
              with a wrong Basic, with a JWT; /login right or wrong; /healthz, /readyz, /metrics)
  insert      1-5 fast inserts on one keep-alive connection
  pipeline    2-4 requests written at once, answers read in order
  sse_read    GET /sse, read the head and the stream for a while, close
  sse_stall   GET /sse, never read, close (sometimes with a reset) after a while
  reset_req   half a request head or body, then a reset
  reset_ans   a whole request, then a reset before its answer is read
  half_head   half a head, then a quiet close
  half_body   a head that promises more body than comes, then a quiet close
  burst       the regression for the parked-pair crash: 300 keep-alive connections at once,
              each relaying GET /verify three times (more than the 256 relay slots)

The rule checked: every request the client sent whole and waited for got exactly one whole
answer (a status line, a head, and the body its framing says), in order; a 5xx other than 503
(busy, with its JSON) counts as a violation too.  A reset or a quiet close ends a connection
on purpose and checks nothing after it.

Usage (the tests import run(); `make chaos` runs this for ten minutes):
  chaos.py --target plain:127.0.0.1:8080 [--target tls:127.0.0.1:8443] --seconds 60
           --jwt TOKEN --basic USER:PASS --workers 400
Every loop is bounded by the deadline; every read by a timeout.
"""

import argparse
import asyncio
import base64
import json
import random
import socket
import ssl
import struct
import sys
import time

ANSWER_TIMEOUT = 60.0  # a queued relayed request may wait 10 s for a slot (then 503), then for Argon2


class Violation(Exception):
    pass


class Stats:
    def __init__(self):
        self.connections = 0
        self.requests = 0
        self.answers = 0
        self.by_scenario = {}
        self.statuses = {}
        self.violations = []
        self.errors = 0  # a connection that could not be opened (accept queue full, handshake)
        self.send_failed = 0  # a request that could not be sent whole

    def violation(self, what):
        if len(self.violations) < 50:
            self.violations.append(what)
        else:
            self.violations[-1] = "(more violations: the list keeps the first 49 and the last)"

    def as_dict(self):
        return {"connections": self.connections, "requests": self.requests, "answers": self.answers,
                "by_scenario": self.by_scenario, "statuses": self.statuses,
                "violations": self.violations, "connect_errors": self.errors, "send_failed": self.send_failed}


def request(method, path, headers=(), body=b""):
    head = "%s %s HTTP/1.1\r\nHost: chaos\r\n" % (method, path)
    hdrs = list(headers)
    if body or method == "POST":
        hdrs.append(("Content-Length", str(len(body))))
    head += "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
    return head.encode("latin-1") + body


class Target:
    def __init__(self, spec):
        kind, host, port = spec.split(":")
        self.tls = kind == "tls"
        self.host, self.port = host, int(port)
        self.ctx = None
        if self.tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE

    def __str__(self):
        return "%s:%s:%d" % ("tls" if self.tls else "plain", self.host, self.port)


class Client:
    """One connection and its answers, read with deadlines."""

    def __init__(self, reader, writer):
        self.r, self.w = reader, writer
        self.buf = b""
        self.said_close = False  # an answer said Connection: close: nothing more is asked

    @classmethod
    async def open(cls, target, timeout=15.0):
        r, w = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, ssl=target.ctx,
                                    server_hostname="" if target.tls else None), timeout)
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(r, w)

    async def send(self, data):
        self.w.write(data)
        await self.w.drain()

    async def _more(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Violation("no whole answer within %.0f s (%s); bytes so far %r"
                            % (ANSWER_TIMEOUT, what, self.buf[:200]))
        try:
            data = await asyncio.wait_for(self.r.read(65536), left)
        except asyncio.TimeoutError:
            raise Violation("no whole answer within %.0f s (%s); bytes so far %r"
                            % (ANSWER_TIMEOUT, what, self.buf[:200]))
        except (ConnectionError, ssl.SSLError) as e:
            raise Violation("connection ended (%s) %s; bytes so far %r" % (e, what, self.buf[:200]))
        if not data:
            raise Violation("connection closed %s; bytes so far %r" % (what, self.buf[:200]))
        self.buf += data

    async def answer(self, method="GET", stream_ok=False):
        """The next whole answer: (status, headers, body). An event stream returns after its head."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while b"\r\n\r\n" not in self.buf:
            await self._more(deadline, "before the head's end")
        i = self.buf.index(b"\r\n\r\n")
        head, self.buf = self.buf[:i].decode("latin-1"), self.buf[i + 4:]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Violation("not a status line: %r" % lines[0][:200])
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "close" in headers.get("connection", "").lower():
            self.said_close = True
        if headers.get("content-type", "").startswith("text/event-stream"):
            if not stream_ok:
                raise Violation("an event stream answered a request that is not /sse")
            return status, headers, b""
        if method == "HEAD" or status in (204, 304) or status < 200:
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    await self._more(deadline, "in a chunk size")
                j = self.buf.index(b"\r\n")
                size = int(self.buf[:j].split(b";")[0], 16)
                while len(self.buf) < j + 2 + size + 2:
                    await self._more(deadline, "in a chunk")
                body += self.buf[j + 2:j + 2 + size]
                self.buf = self.buf[j + 2 + size + 2:]
                if size == 0:
                    return status, headers, body
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                await self._more(deadline, "in a body of %d bytes" % n)
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        while True:  # to the close
            try:
                await self._more(deadline, "")
            except Violation:
                body, self.buf = self.buf, b""
                return status, headers, body

    def reset(self):
        """Closes with a reset (SO_LINGER 0) where the socket allows it."""
        sock = self.w.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.w.transport.abort()

    def close(self):
        self.w.transport.abort() if self.w.transport.is_closing() else self.w.close()


class Chaos:
    def __init__(self, targets, seconds, jwt, basic, workers, seed=None):
        self.targets = [Target(t) for t in targets]
        self.deadline = time.monotonic() + seconds
        self.jwt = jwt
        self.basic = basic
        self.workers = workers
        self.rng = random.Random(seed)
        self.stats = Stats()
        self.bursting = False

    # -- what a request looks like
    def relayed(self):
        rng = self.rng
        choice = rng.random()
        wrong = base64.b64encode(b"chaos-%d:wrong" % rng.randrange(10 ** 9)).decode()
        if choice < 0.30:
            return request("GET", "/verify")
        if choice < 0.45:
            return request("GET", "/verify", [("Authorization", "Basic " + wrong)])
        if choice < 0.60:
            return request("GET", "/verify", [("Authorization", "Bearer " + self.jwt)])
        if choice < 0.70:
            user, pw = self.basic.split(":", 1)
            if rng.random() < 0.5:
                pw = "wrong"
            return request("POST", "/login", [("Content-Type", "application/json")],
                           json.dumps({"username": user, "password": pw}).encode())
        if choice < 0.85:
            return request("GET", "/healthz")
        if choice < 0.95:
            return request("GET", "/readyz")
        return request("GET", "/metrics")

    def insert(self):
        body = json.dumps({"event": "chaos.%d" % self.rng.randrange(8),
                           "data": {"n": self.rng.randrange(10 ** 6)}}).encode()
        return request("POST", "/insert", [("Authorization", "Bearer " + self.jwt),
                                           ("Content-Type", "application/json")], body)

    def sse(self):
        return request("GET", "/sse", [("Authorization", "Bearer " + self.jwt)])

    def count(self, status, body):
        st = self.stats
        st.answers += 1
        st.statuses[str(status)] = st.statuses.get(str(status), 0) + 1
        if status >= 500 and status != 503:
            raise Violation("status %d: %r" % (status, body[:200]))
        if status == 503:
            try:
                json.loads(body)
            except ValueError:
                raise Violation("503 without a JSON error: %r" % body[:200])

    async def ask(self, c, data, method="GET"):
        self.stats.requests += 1
        await c.send(data)
        try:
            status, _h, body = await c.answer(method)
        except Violation as v:
            raise Violation("%s: %s" % (data.split(b"\r\n", 1)[0].decode("latin-1"), v))
        self.count(status, body)
        return status

    # -- scenarios
    async def keepalive(self, c):
        for _ in range(self.rng.randint(1, 5)):
            if c.said_close:
                return
            await self.ask(c, self.relayed())

    async def insert_many(self, c):
        for _ in range(self.rng.randint(1, 5)):
            if c.said_close:
                return
            await self.ask(c, self.insert(), "POST")

    async def pipeline(self, c):
        """Requests after an answer that says Connection: close are not answered, by design."""
        reqs = [self.rng.choice([self.relayed, self.insert])() for _ in range(self.rng.randint(2, 4))]
        await c.send(b"".join(reqs))
        for data in reqs:
            if c.said_close:
                return
            self.stats.requests += 1
            try:
                status, _h, body = await c.answer()
            except Violation as v:
                raise Violation("%s (pipelined): %s" % (data.split(b"\r\n", 1)[0].decode("latin-1"), v))
            self.count(status, body)

    async def sse_read(self, c):
        self.stats.requests += 1
        await c.send(self.sse())
        status, _h, body = await c.answer(stream_ok=True)
        self.count(status, body)
        end = time.monotonic() + self.rng.uniform(0.1, 2.0)
        while time.monotonic() < end:
            try:
                data = await asyncio.wait_for(c.r.read(65536), max(0.01, end - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if not data:
                raise Violation("the stream closed by itself")

    async def sse_stall(self, c):
        self.stats.requests += 1  # whole, but its answer is never read: only counted
        self.stats.answers += 1
        await c.send(self.sse())
        await asyncio.sleep(self.rng.uniform(0.5, 4.0))
        if self.rng.random() < 0.5:
            c.reset()

    async def reset_req(self, c):
        data = self.rng.choice([self.relayed, self.insert])()
        cut = self.rng.randrange(1, len(data))
        await c.send(data[:cut])
        await asyncio.sleep(self.rng.uniform(0, 0.3))
        c.reset()

    async def reset_ans(self, c):
        await c.send(self.rng.choice([self.relayed, self.insert, self.sse])())
        await asyncio.sleep(self.rng.uniform(0, 0.05))
        c.reset()

    async def half_head(self, c):
        data = self.relayed()
        await c.send(data[:self.rng.randrange(1, data.index(b"\r\n\r\n"))])
        await asyncio.sleep(self.rng.uniform(0, 1.0))

    async def half_body(self, c):
        data = self.insert()
        i = data.index(b"\r\n\r\n") + 4
        await c.send(data[:i + self.rng.randrange(0, len(data) - i)])
        await asyncio.sleep(self.rng.uniform(0, 1.0))

    async def burst_one(self, target):
        try:
            c = await Client.open(target)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            self.stats.errors += 1
            return
        self.stats.connections += 1
        try:
            for _ in range(3):
                if c.said_close:
                    break
                await self.ask(c, request("GET", "/verify"))
        except Violation as v:
            self.stats.violation("burst on %s: %s" % (target, v))
        except (ConnectionError, ssl.SSLError):
            self.stats.send_failed += 1  # see worker()
        finally:
            c.close()

    async def burst(self, target, n=300):
        self.bursting = True
        try:
            await asyncio.gather(*(self.burst_one(target) for _ in range(n)))
        finally:
            self.bursting = False

    SCENARIOS = [("keepalive", 30), ("insert", 15), ("pipeline", 10), ("sse_read", 10), ("sse_stall", 6),
                 ("reset_req", 8), ("reset_ans", 8), ("half_head", 5), ("half_body", 5), ("burst", 1)]

    async def worker(self, i):
        names = [n for n, _ in self.SCENARIOS]
        weights = [w for _, w in self.SCENARIOS]
        fns = {"keepalive": self.keepalive, "insert": self.insert_many, "pipeline": self.pipeline,
               "sse_read": self.sse_read, "sse_stall": self.sse_stall, "reset_req": self.reset_req,
               "reset_ans": self.reset_ans, "half_head": self.half_head, "half_body": self.half_body}
        while time.monotonic() < self.deadline:
            target = self.targets[i % len(self.targets)]
            name = self.rng.choices(names, weights)[0]
            self.stats.by_scenario[name] = self.stats.by_scenario.get(name, 0) + 1
            if name == "burst":
                if not self.bursting:
                    await self.burst(target)
                continue
            try:
                c = await Client.open(target)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                self.stats.errors += 1
                await asyncio.sleep(0.2)
                continue
            self.stats.connections += 1
            try:
                await fns[name](c)
            except Violation as v:
                self.stats.violation("%s on %s: %s" % (name, target, v))
            except (ConnectionError, ssl.SSLError):
                # The request did not go out whole (a reset scenario's own doing, or the server's
                # deadline on a request or handshake that a starved client sent too slowly): it
                # is owed no answer.  Counted, so that a run where most fail says so.
                self.stats.send_failed += 1
            finally:
                c.close()

    async def run(self):
        # The burst first, on every target: the crash it finds needs no luck.
        for t in self.targets:
            await self.burst(t)
        await asyncio.gather(*(self.worker(i) for i in range(self.workers)))
        return self.stats


def run(targets, seconds, jwt, basic, workers=400, seed=None):
    """Plays chaos against the targets for `seconds`; returns the Stats."""
    return asyncio.run(Chaos(targets, seconds, jwt, basic, workers, seed).run())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", required=True, help="plain:HOST:PORT or tls:HOST:PORT")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jwt", required=True)
    ap.add_argument("--basic", required=True, help="USER:PASS of an existing user")
    ap.add_argument("--workers", type=int, default=400)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    stats = run(a.target, a.seconds, a.jwt, a.basic, a.workers, a.seed)
    print(json.dumps(stats.as_dict(), indent=1))
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())

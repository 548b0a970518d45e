"""A stream replica drained on SIGTERM (docs/API.md, "Shutdown"), on the loopback.

A split deployment of its own (split_deployment.py: two forwarders, auth, ingest, certd and two
broker-stream with --drain_seconds 10) and an nginx gateway of its own in front of the two stream
replicas, from deploy/gateway.conf.in as scripts/run-split.sh renders it. A thousand subscribers
of ten tenants stream from one replica, directly; inserts flow; the replica gets SIGTERM:

  - /readyz answers 503 at once, and a new stream on it 503 with Retry-After;
  - every stream ends with a retry: of its own within the window, the ends spread over it (no
    one-second bucket holds more than a fifth of them);
  - each client waits what its retry: said, comes back through the gateway (which sends what the
    draining replica refuses to the other one: proxy_next_upstream http_503) with Last-Event-ID,
    and gets every event of its tenant once, in order;
  - the replica exits 0 by the end of the window.

Then broker-stream --stream_workers 2 (the supervisor passes SIGTERM to its workers): draining
after the first SIGTERM, gone at once after the second.
"""
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from split_deployment import REPO, Deployment, Service, free_port, metric, status_of, wait_for

sys.path.insert(0, os.path.join(REPO, "tests", "blackbox"))
from sse_swarm import Subscriber, connect_all, stop_all, wait_until  # noqa: E402

WINDOW = 10  # --drain_seconds of the stream replicas
CLIENTS = 1000
TENANTS = 10
# The drain's retry values (services/stream/stream_engine.c): [1000, 3000) ms.
RETRY_MIN_MS, RETRY_MAX_MS = 1000, 3000


class Gateway:
    """nginx with deploy/gateway.conf.in, rendered as scripts/run-split.sh does."""

    def __init__(self, dep):
        self.dir = os.path.join(dep.workdir, "gateway")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.port = free_port()
        with open(os.path.join(REPO, "deploy", "gateway.conf.in")) as f:
            conf = f.read()
        for name, value in (("PREFIX", self.dir), ("LISTEN", "127.0.0.1:%d" % self.port),
                            ("AUTH", "127.0.0.1:%d" % dep.auth.port), ("INGEST", "127.0.0.1:%d" % dep.ingest.port),
                            ("CERTD", "127.0.0.1:%d" % dep.certd.port),
                            ("STREAMS", " ".join("server 127.0.0.1:%d;" % s.port for s in dep.streams))):
            conf = conf.replace("@%s@" % name, value)
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.stderr = open(os.path.join(self.dir, "nginx.stderr"), "wb")
        self.proc = subprocess.Popen(["nginx", "-q", "-p", self.dir, "-c", path, "-g", "user %s;" % user],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        assert wait_for(lambda: status_of("http://127.0.0.1:%d/healthz" % self.port) == 200, 10), \
            "the gateway did not start: %s" % self.log()

    def log(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.stderr.close()


@pytest.fixture(scope="module")
def dep():
    d = Deployment()
    gw = None
    try:
        # Its two stream replicas, again with a drain window of their own.
        for s in d.streams:
            s.stop()
        d.streams = [Service("broker-stream", d.common + ["--drain_seconds=%d" % WINDOW], d.workdir, "drain%d" % i)
                     for i in range(2)]
        d.wait_ready()
        gw = Gateway(d)
        d.gateway = gw
        yield d
    finally:
        if gw is not None:
            gw.stop()
        for s in d.everyone():
            s.stop()


class Inserter(threading.Thread):
    """Inserts into every tenant in turn, straight to ingest, until stopped; ids per tenant."""

    def __init__(self, dep, users):
        super().__init__(daemon=True)
        self.dep, self.users = dep, users
        self.ids = {tenant: [] for tenant in users}
        self.failures = []
        self.halt = threading.Event()

    def run(self):
        n = 0
        with requests.Session() as session:
            while not self.halt.is_set() and n < 100000:
                for tenant, auth in self.users.items():
                    r = session.post(self.dep.ingest.url("/insert"), json={"event": "e%d" % (n % 7), "data": n},
                                     headers=auth, timeout=10)
                    if r.status_code == 200:
                        self.ids[tenant].append(int(r.json()["id"]))
                    else:
                        self.failures.append((r.status_code, r.text[:200]))
                    n += 1
                time.sleep(0.1)


def test_a_drained_replica_sends_its_clients_elsewhere_spread_over_the_window(dep):
    victim, other = dep.streams
    gateway = ("127.0.0.1", dep.gateway.port)
    users = {}
    for i in range(TENANTS):
        tenant = "drain%d%s" % (i, uuid.uuid4().hex[:6])
        users[tenant] = dep.make_user(tenant)[1]
    tenants = sorted(users)
    subs = [Subscriber(users[tenants[i % TENANTS]], first=("127.0.0.1", victim.port), then=gateway)
            for i in range(CLIENTS)]
    tenant_of = {id(s): tenants[i % TENANTS] for i, s in enumerate(subs)}
    inserter = Inserter(dep, users)
    seen = {}

    async def scenario():
        loop = asyncio.get_running_loop()
        blocking = lambda fn, *a: loop.run_in_executor(None, fn, *a)  # noqa: E731
        try:
            assert await connect_all(subs, 60), "%d of %d streams opened on the replica" % (
                sum(s.connected.is_set() for s in subs), CLIENTS)
            seen["held"] = await blocking(metric, victim, "broker_sse_subscribers")
            inserter.start()
            await asyncio.sleep(1.0)

            victim.proc.send_signal(signal.SIGTERM)
            t0 = seen["t0"] = time.monotonic()
            # The process takes the signal on a thread of its own, a moment after kill()
            # returns: a probe sent at once may come first.  Half a second at most.
            def readyz_after_signal():
                status = status_of(victim.url("/readyz"))
                while status != 503 and time.monotonic() - t0 < 0.5:
                    time.sleep(0.01)
                    status = status_of(victim.url("/readyz"))
                return status
            seen["readyz"] = await blocking(readyz_after_signal)
            refused = await blocking(lambda: requests.get(victim.url("/sse"), headers=users[tenants[0]],
                                                          timeout=5))
            seen["refused"] = (refused.status_code, refused.headers.get("Retry-After"), time.monotonic() - t0)

            # Every stream ends within the window; the replica exits by its end.
            await wait_until(lambda: all(s.ends for s in subs), WINDOW + 2)
            await wait_until(lambda: victim.proc.poll() is not None, WINDOW + 1.5 - (time.monotonic() - t0))
            seen["exit"] = (victim.proc.poll(), time.monotonic() - t0)
            # Each client back on a stream through the gateway.
            await wait_until(lambda: all(len(s.attempts) >= 2 and s.attempts[-1].status == 200 and
                                         s.connected.is_set() for s in subs), 15)
            await asyncio.sleep(1.0)  # inserts while every client is on the other replica
            seen["other_holds"] = await blocking(metric, other, "broker_sse_subscribers")
            inserter.halt.set()
            await blocking(inserter.join, 30)
            want = inserter.ids
            await wait_until(lambda: all(len(s.ids) >= len(want[tenant_of[id(s)]]) for s in subs), 20)
        finally:
            inserter.halt.set()
            await stop_all(subs)

    asyncio.run(scenario())
    t0 = seen["t0"]
    assert seen["held"] == CLIENTS, "the replica held %s streams" % seen["held"]
    assert seen["readyz"] == 503, "/readyz right after SIGTERM: %s" % seen["readyz"]
    status, retry_after, took = seen["refused"]
    assert status == 503 and retry_after is not None and int(retry_after) >= 1, seen["refused"]
    assert took < 1.5, "the refusal came %.2f s after SIGTERM" % took

    ends = [s.ends[0] for s in subs if s.ends]
    assert len(ends) == CLIENTS, "%d of %d streams ended" % (len(ends), CLIENTS)
    offsets = sorted(t - t0 for t, _ in ends)
    assert offsets[0] > 0 and offsets[-1] <= WINDOW, "ends from %.2f s to %.2f s" % (offsets[0], offsets[-1])
    buckets = {}
    for off in offsets:
        buckets[int(off)] = buckets.get(int(off), 0) + 1
    assert max(buckets.values()) <= CLIENTS // 5, "ends by second: %s" % sorted(buckets.items())
    retries = [told for _, told in ends]
    assert all(r is not None and RETRY_MIN_MS <= r < RETRY_MAX_MS for r in retries), sorted(
        set(r for r in retries if r is None or not RETRY_MIN_MS <= r < RETRY_MAX_MS))
    assert len(set(retries)) > CLIENTS // 10, "only %d distinct retry values" % len(set(retries))

    code, exited = seen["exit"]
    assert code == 0, "the drained replica exited with %r after %.1f s:\n%s" % (code, exited, victim.stderr()[-3000:])
    assert exited <= WINDOW + 1.0, "the replica exited %.1f s after SIGTERM" % exited
    assert "drained in" in victim.stderr(), victim.stderr()[-2000:]

    # Back through the gateway, every time with a stream: the draining replica's 503s went to the
    # other one, never to a client; and no client came back before its retry.
    for s in subs:
        later = s.attempts[1:]
        assert later and all(a.addr == gateway for a in later)
        assert all(a.status == 200 for a in later), [(a.addr, a.status) for a in later]
        assert later[0].at >= s.ends[0][0] + s.ends[0][1] / 1000.0 - 0.05
    assert seen["other_holds"] >= CLIENTS, "the other replica holds %s streams" % seen["other_holds"]

    assert not inserter.failures, inserter.failures[:5]
    for tenant, ids in inserter.ids.items():
        assert len(ids) > 20, "inserts did not flow: %d for %s" % (len(ids), tenant)
    for s in subs:
        want = inserter.ids[tenant_of[id(s)]]
        if s.ids != want:
            got = set(s.ids)
            raise AssertionError("a client of %s got %d events for %d inserted (came back %d times): missing %s, "
                                 "repeated %s" % (tenant_of[id(s)], len(s.ids), len(want), len(s.attempts) - 1,
                                                  sorted(set(want) - got)[:10],
                                                  sorted({i for i in s.ids if s.ids.count(i) > 1})[:10]))


def test_stream_workers_drain_on_sigterm_and_stop_at_once_on_a_second(dep):
    """The --stream_workers supervisor passes SIGTERM on: its workers drain (/readyz 503, their
    streams stay open in a long window); a second SIGTERM stops them, and it, at once."""
    svc = Service("broker-stream", dep.common + ["--stream_workers=2", "--drain_seconds=60"], dep.workdir,
                  "stream-workers")
    try:
        assert wait_for(lambda: status_of(svc.url("/readyz")) == 200 or not svc.alive(), 20), svc.stderr()[-2000:]
        _, auth = dep.make_user("workers" + uuid.uuid4().hex[:6])
        # Enough that each worker holds some (the kernel spreads connections over them): a worker
        # without a stream would be drained, and gone, at once.
        streams = [requests.get(svc.url("/sse"), headers=auth, stream=True, timeout=5) for _ in range(20)]
        assert all(r.status_code == 200 for r in streams)
        svc.proc.send_signal(signal.SIGTERM)
        # Both workers drain: whichever answers, /readyz is 503.
        assert wait_for(lambda: all(status_of(svc.url("/readyz")) == 503 for _ in range(6)), 2), \
            "a worker still ready after SIGTERM"
        time.sleep(0.5)
        assert svc.alive(), "the supervisor exited while its workers drain:\n" + svc.stderr()[-2000:]
        svc.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = svc.proc.wait(10)
        assert time.monotonic() - t0 < 3.0, "%.1f s to stop after the second SIGTERM" % (time.monotonic() - t0)
        assert code == 0, "exit %r:\n%s" % (code, svc.stderr()[-2000:])
        log = svc.stderr()
        assert log.count("stopping at once") >= 1 and log.count("stopping at once") + log.count("drained in") == 2, \
            log[-2000:]
        for r in streams:
            r.close()
    finally:
        if svc.alive():
            svc.kill()

"""A rolling update of the stream replicas in the compose deployment (README, "Shutdown and rolling
updates"), on a deployment of its own: docker-compose.yml with deploy/compose.offline.yml, stream
scaled to 3, BROKER_DRAIN_SECONDS as tests/compose/deployment.py sets it (a few seconds), brought
up by this module and taken down after it.

A deployment of its own because of its store: the compose deployment's MongoDB stand-in (FerretDB
on SQLite) scans where MongoDB uses an index, so each stream start or resume costs it time in
proportion to the events stored; after the other compose tests (and the black-box suite through
the gateway) it would carry a thousand resumes only in minutes.  Fresh, it carries them in seconds.

What is proven: with 1,000 subscribers of ten tenants streaming through the gateway and inserts
flowing, each of the three replicas is replaced in turn (a fourth started and ready, the old one
`docker stop`ped with a timeout above its drain window, then removed): every old replica drains
(exits 0 within its window, having ended its streams each with a retry:), every subscriber gets
every event of its tenant once, in order, and every insert is answered 200."""

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "blackbox"))

import sse_swarm  # noqa: E402
from deployment import DRAIN_SECONDS, Deployment, free_port  # noqa: E402

ENV_FILE = os.environ.get("BROKER_COMPOSE_ENV")
pytestmark = pytest.mark.skipif(not ENV_FILE, reason="BROKER_COMPOSE_ENV is not set (tests/run_all.sh sets it)")

CLIENTS = 1000
TENANTS = 10
STOP_TIMEOUT = DRAIN_SECONDS + 10  # docker stop's -t: above the drain window
ROUND_SECONDS = 3.0  # between two rounds of inserts (one per tenant)
BACK_WITHIN = 45  # seconds after the last replica stopped: every subscriber is streaming again


def docker(*args, check=True, timeout=120):
    p = subprocess.run(["docker"] + list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("docker %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


@pytest.fixture(scope="module")
def dep():
    # The same images (and any override of them) as the deployment tests/run_all.sh brought up.
    main = Deployment.load(ENV_FILE)
    d = Deployment("brokerroll" + uuid.uuid4().hex[:8], free_port(), "adm-" + uuid.uuid4().hex,
                   "jwt-" + uuid.uuid4().hex, scale={"stream": 3}, extra_env=main.extra_env)
    try:
        d.make_secrets()
        d.up()
        yield d
    finally:
        d.down()


class Tenant:
    """A user of a fresh tenant, logged in through the gateway."""

    def __init__(self, dep):
        self.base_url = dep.base_url
        self.name = "t" + uuid.uuid4().hex[:10]
        username, password = "u" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex[:12]
        r = requests.post(dep.base_url + "/create_user", json={
            "admin_token": dep.admin_token, "username": username, "password": password, "tenant_name": self.name},
            timeout=30)
        assert r.status_code == 200, r.text
        r = requests.post(dep.base_url + "/login", json={"username": username, "password": password}, timeout=30)
        assert r.status_code == 200, r.text
        self.auth = {"Authorization": "Bearer " + r.json()["jwt"]}


class Inserter(threading.Thread):
    """Inserts through the gateway into every tenant in turn, a round every ROUND_SECONDS, until
    stopped: the ids answered 200 per tenant, and every other answer.  (Slowly: every stored event
    makes the stand-in store's scans, and so each resume, longer.)"""

    def __init__(self, tenants):
        super().__init__(daemon=True)
        self.tenants = tenants
        self.ids = {t.name: [] for t in tenants}
        self.bad = []
        self.halt = threading.Event()

    def run(self):
        n = 0
        with requests.Session() as session:
            while not self.halt.is_set() and n < 100000:
                for t in self.tenants:
                    try:
                        r = session.post(t.base_url + "/insert", json={"event": "r%d" % (n % 5), "data": n},
                                         headers=t.auth, timeout=15)
                        if r.status_code == 200:
                            self.ids[t.name].append(int(r.json()["id"]))
                        else:
                            self.bad.append((r.status_code, r.text[:200]))
                    except requests.RequestException as e:
                        self.bad.append((None, str(e)[:200]))
                    n += 1
                self.halt.wait(ROUND_SECONDS)


def container_state(container):
    """(status, exit code) of a container."""
    status, code = docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", container).split()
    return status, int(code)


def ready(container):
    return subprocess.run(["docker", "exec", container, "curl", "-fsS", "-o", "/dev/null",
                           "http://127.0.0.1:8080/readyz"], capture_output=True, timeout=30).returncode == 0


def replace_stream_replicas(dep, log):
    """The rolling update: for each replica of the start, a new one is started and ready, then the
    old one stopped (SIGTERM: it drains, and exits 0 well before docker's SIGKILL) and removed."""
    old = dep.containers("stream")
    assert len(old) == 3, old
    for victim in old:
        before = set(dep.containers("stream"))
        dep.compose("up", "-d", "--no-deps", "--no-recreate", "--scale", "stream=4", "stream")
        new = set(dep.containers("stream")) - before
        assert len(new) == 1, "scaling to 4 started %s" % sorted(new)
        fresh = new.pop()
        deadline = time.monotonic() + 60
        while not ready(fresh):
            assert time.monotonic() < deadline, "the new replica is not ready: %s" % (container_state(fresh),)
            time.sleep(0.3)
        t0 = time.monotonic()
        docker("stop", "-t", str(STOP_TIMEOUT), victim)
        took = time.monotonic() - t0
        state = container_state(victim)
        logs = subprocess.run(["docker", "logs", victim], capture_output=True, text=True, timeout=60).stderr
        log.append((victim[:12], round(took, 1), state))
        assert state == ("exited", 0), "the replica ended %s after %.1f s" % (state, took)
        assert took < STOP_TIMEOUT - 1, "the replica took %.1f s to stop (docker kills at %d)" % (took, STOP_TIMEOUT)
        assert "drained in" in logs or "drain window" in logs, logs[-2000:]
        docker("rm", victim)


def test_a_rolling_update_of_the_stream_replicas_loses_nothing(dep):
    tenants = [Tenant(dep) for _ in range(TENANTS)]
    gateway = ("127.0.0.1", dep.port)
    subs = [sse_swarm.Subscriber(tenants[i % TENANTS].auth, first=gateway) for i in range(CLIENTS)]
    tenant_of = {id(s): tenants[i % TENANTS].name for i, s in enumerate(subs)}
    inserter = Inserter(tenants)
    replaced = []
    t0 = time.monotonic()
    timeline = []  # shown when the test fails (pytest prints what it captured)

    def mark(what):
        timeline.append((round(time.monotonic() - t0, 1), what))
        print("rolling update: %5.1f s %s" % timeline[-1])

    async def scenario():
        loop = asyncio.get_running_loop()
        try:
            assert await sse_swarm.connect_all(subs, 120), "%d of %d subscribers connected" % (
                sum(s.connected.is_set() for s in subs), CLIENTS)
            mark("%d subscribers streaming" % CLIENTS)
            inserter.start()
            await asyncio.sleep(1.0)
            await loop.run_in_executor(None, replace_stream_replicas, dep, replaced)
            mark("replicas replaced: %s" % replaced)
            # Every subscriber streaming again soon (a connect to a replica that is gone must not
            # hang: the gateway's proxy_connect_timeout), then a little more of the inserts.
            back = await sse_swarm.wait_until(lambda: all(s.attempts[-1].status == 200 for s in subs), BACK_WITHIN)
            waits = sorted(a.answered - a.at for s in subs for a in s.attempts[1:] if a.answered)
            stuck = [(round(time.monotonic() - a.at, 1), a.error) for s in subs for a in s.attempts[1:]
                     if not a.answered]
            mark("every subscriber back: %s; %d reconnects answered in %.1f s (median) to %.1f s; %d unanswered %s" % (
                back, len(waits), waits[len(waits) // 2] if waits else 0, waits[-1] if waits else 0, len(stuck),
                stuck[:5]))
            assert back, "subscribers not streaming %d s after the last replica stopped: %d" % (
                BACK_WITHIN, sum(s.attempts[-1].status != 200 for s in subs))
            await asyncio.sleep(2.0)
            inserter.halt.set()
            await loop.run_in_executor(None, inserter.join, 60)
            want = inserter.ids
            await sse_swarm.wait_until(lambda: all(len(s.ids) >= len(want[tenant_of[id(s)]]) for s in subs), 60)
            mark("inserts stopped (%d), subscribers caught up" % sum(len(v) for v in want.values()))
        finally:
            inserter.halt.set()
            await sse_swarm.stop_all(subs)

    asyncio.run(scenario())
    assert len(replaced) == 3, replaced
    assert not inserter.bad, "inserts not answered 200: %s" % inserter.bad[:5]
    for name, ids in inserter.ids.items():
        assert len(ids) >= 5, "inserts did not flow for %s: %d" % (name, len(ids))
    ends = [e for s in subs for e in s.ends]
    assert len(ends) >= CLIENTS, "only %d streams ended in three drains" % len(ends)
    untold = [e for e in ends if e[1] is None]
    assert not untold, "%d of %d streams ended without a retry: (not drained)" % (len(untold), len(ends))
    for s in subs:
        want = inserter.ids[tenant_of[id(s)]]
        if s.ids != want:
            got = set(s.ids)
            raise AssertionError("a subscriber got %d events for %d inserted (%d streams, statuses %s): missing %s, "
                                 "repeated %s" % (len(s.ids), len(want), len(s.attempts),
                                                  [(a.status, a.error) for a in s.attempts], sorted(set(want) - got)[:10],
                                                  sorted({i for i in s.ids if s.ids.count(i) > 1})[:10]))

"""The compose deployment on the real Docker engine (tests/compose/deployment.py brought it up:
docker-compose.yml + deploy/compose.offline.yml, stream scaled to 3 and ingest to 2). Everything
goes through the gateway's one port on 127.0.0.1; `docker exec` only reads a replica's own
/metrics. Each test leaves the deployment as it found it (every container running and healthy).

What is proven: every service is healthy; subscribers spread over the stream replicas and
inserts over the ingest replicas, and every subscriber gets every event once, in order; a
stream replica killed while events flow costs its clients nothing (they come back through the
gateway with Last-Event-ID); a bus forwarder killed loses nothing; ingest and then the database
restarted while inserts flow lose no insert that was answered 200; a stopped replica gets no
traffic."""

import json
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

from deployment import Deployment  # noqa: E402
from sse_client import Closed, SSEClient, Timeout  # noqa: E402

ENV_FILE = os.environ.get("BROKER_COMPOSE_ENV")
pytestmark = pytest.mark.skipif(not ENV_FILE, reason="BROKER_COMPOSE_ENV is not set (tests/run_all.sh sets it)")


@pytest.fixture(scope="module")
def dep():
    d = Deployment.load(ENV_FILE)
    d.wait_healthy(timeout=60)
    return d


def docker(*args, check=True):
    p = subprocess.run(["docker"] + list(args), capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError("docker %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


def metric(container, name):
    """A value of one replica's own /metrics (summed over its series)."""
    text = docker("exec", container, "curl", "-fsS", "http://127.0.0.1:8080/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class Tenant:
    """A user of a fresh tenant, logged in through the gateway."""

    def __init__(self, dep):
        self.dep = dep
        self.username = "u" + uuid.uuid4().hex[:10]
        self.password = "pw-" + uuid.uuid4().hex[:12]
        r = requests.post(dep.base_url + "/create_user", json={
            "admin_token": dep.admin_token, "username": self.username, "password": self.password,
            "tenant_name": "t" + uuid.uuid4().hex[:10]}, timeout=10)
        assert r.status_code == 200, r.text
        r = requests.post(dep.base_url + "/login", json={"username": self.username, "password": self.password},
                          timeout=10)
        assert r.status_code == 200, r.text
        self.jwt = r.json()["jwt"]
        self.session = requests.Session()

    def insert(self, event, data, timeout=10):
        """The id of the stored event, or None when the insert was not answered 200."""
        try:
            r = self.session.post(self.dep.base_url + "/insert", json={"event": event, "data": data},
                                  headers={"Authorization": "Bearer " + self.jwt}, timeout=timeout)
        except requests.RequestException:
            return None
        return int(r.json()["id"]) if r.status_code == 200 else None


class Subscriber(threading.Thread):
    """An SSE client through the gateway that comes back with Last-Event-ID whenever its stream
    ends, the way EventSource does; `ids` are the event ids it got, in order."""

    def __init__(self, dep, tenant, deadline):
        super().__init__(daemon=True)
        self.dep, self.tenant, self.deadline = dep, tenant, deadline
        self.ids = []
        self.reconnects = 0
        self.connected = threading.Event()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            headers = {"Authorization": "Bearer " + self.tenant.jwt}
            if self.ids:
                headers["Last-Event-ID"] = str(self.ids[-1])
            try:
                c = SSEClient.open(self.dep.base_url, "/sse", headers=headers, timeout=5)
                try:
                    if c.read_head(5) != 200:
                        raise Closed("status %s" % c.status)
                    self.connected.set()
                    while not self.stop.is_set() and time.monotonic() < self.deadline:
                        try:
                            ev = c.next_event(1)
                        except Timeout:
                            continue
                        if ev.id:
                            self.ids.append(int(ev.id))
                finally:
                    c.close()
            except (Closed, OSError, AssertionError):
                pass
            if not self.stop.is_set():
                self.reconnects += 1
                time.sleep(0.3)

    def wait_for(self, n, timeout):
        end = time.monotonic() + timeout
        while len(self.ids) < n and time.monotonic() < end:
            time.sleep(0.1)
        return self.ids


def check_all_once_in_order(subs, ids):
    want = sorted(ids)
    for s in subs:
        got = s.wait_for(len(want), 30)
        assert got == want, "a subscriber got %d events (reconnected %d times); missing %s, repeated %s" % (
            len(got), s.reconnects, sorted(set(want) - set(got))[:10],
            sorted({i for i in got if got.count(i) > 1})[:10])


def stop_all(subs):
    for s in subs:
        s.stop.set()
    for s in subs:
        s.join(10)


def start_subscribers(dep, tenant, n, seconds):
    subs = [Subscriber(dep, tenant, time.monotonic() + seconds) for _ in range(n)]
    for s in subs:
        s.start()
    for s in subs:
        assert s.connected.wait(20), "a subscriber could not connect through the gateway"
    return subs


def insert_for(tenant, seconds, pace=0.02, prefix="e"):
    """Inserts for `seconds` (distinct event names); the ids answered 200 and the failures."""
    ids, failures = [], 0
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        got = tenant.insert("%s%d" % (prefix, i), {"n": i})
        i += 1
        if got is None:
            failures += 1
        else:
            ids.append(got)
        time.sleep(pace)
    return ids, failures


def test_every_service_is_healthy_behind_one_port(dep):
    health = dep.health()
    assert len(health) == 11 and all(v == "healthy" for v in health.values()), health
    r = requests.get(dep.base_url + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    # The gateway publishes one port; nothing else is reachable from the host.
    ports = docker("ps", "--filter", "label=com.docker.compose.project=" + dep.project,
                   "--format", "{{.Names}} {{.Ports}}")
    published = [line for line in ports.splitlines() if "->" in line]
    assert len(published) == 1 and "gateway" in published[0] and "127.0.0.1:%d->8080" % dep.port in published[0], ports
    for c in dep.containers():
        user = docker("exec", c, "id", "-u").strip()
        assert user == "10001", (c, user)


def test_scaled_replicas_share_the_load_and_every_subscriber_gets_every_event_once(dep):
    tenant = Tenant(dep)
    streams, ingests = dep.containers("stream"), dep.containers("ingest")
    assert len(streams) == 3 and len(ingests) == 2
    before = {c: metric(c, "broker_events_inserted_total") for c in ingests}
    subs = start_subscribers(dep, tenant, 30, 60)
    try:
        per_replica = {c: metric(c, "broker_sse_subscribers") for c in streams}
        assert all(v > 0 for v in per_replica.values()), "subscribers per stream replica: %r" % per_replica
        ids = [tenant.insert("ev%d" % i, {"i": i}) for i in range(60)]
        assert None not in ids
        check_all_once_in_order(subs, ids)
    finally:
        stop_all(subs)
    grew = {c: metric(c, "broker_events_inserted_total") - before[c] for c in ingests}
    assert all(v > 0 for v in grew.values()), "inserts per ingest replica: %r" % grew


def kill_while_inserting(dep, tenant, subs, victim, seconds, kill_after):
    """Inserts for `seconds`, kills `victim` `kill_after` seconds in; every insert must be
    answered 200 and every subscriber get every event once, in order. The victim is started
    again and the deployment healthy before it returns, whatever happened."""
    try:
        result = {}
        t = threading.Thread(target=lambda: result.update(zip(("ids", "failures"), insert_for(tenant, seconds))))
        t.start()
        time.sleep(kill_after)
        docker("kill", victim)
        t.join(30)
        assert result["failures"] == 0, result
        check_all_once_in_order(subs, result["ids"])
    finally:
        stop_all(subs)
        docker("start", victim, check=False)
        dep.wait_healthy(timeout=90)


def test_a_stream_replica_killed_while_events_flow_costs_its_clients_nothing(dep):
    tenant = Tenant(dep)
    subs = start_subscribers(dep, tenant, 12, 90)
    held = {c: metric(c, "broker_sse_subscribers") for c in dep.containers("stream")}
    victim = max(held, key=held.get)  # the replica holding the most of them
    kill_while_inserting(dep, tenant, subs, victim, 6, 2)
    assert sum(s.reconnects for s in subs) >= held[victim], (held, [s.reconnects for s in subs])


def test_a_bus_forwarder_killed_loses_nothing(dep):
    # Either will do: they are alike (tests/split/test_forwarders.py kills each in turn).
    tenant = Tenant(dep)
    subs = start_subscribers(dep, tenant, 6, 60)
    kill_while_inserting(dep, tenant, subs, dep.containers("bus")[0], 5, 1.5)


def _snapshot_ids(dep, tenant, want):
    """The event ids of a fresh stream's snapshot (one event per name: the inserts use distinct
    names, so that is all of them), read until every id of `want` came or none came for a while.
    The deadlines are wide: tests assert what arrives, never how fast (the MongoDB-wire fixture
    scans where MongoDB uses an index)."""
    c = SSEClient.open(dep.base_url, "/sse", headers={"Authorization": "Bearer " + tenant.jwt}, timeout=10)
    try:
        assert c.read_head(60) == 200
        ids, missing = [], set(want)
        while missing:
            try:
                ev = c.next_event(15)
            except Timeout:
                break
            ids.append(int(ev.id))
            missing.discard(ids[-1])
        return ids
    finally:
        c.close()


def test_ingest_then_the_database_restarted_while_inserts_flow_lose_no_answered_insert(dep):
    tenant = Tenant(dep)
    result = {}
    t = threading.Thread(target=lambda: result.update(zip(("ids", "failures"), insert_for(tenant, 40, 0.02))))
    t.start()
    try:
        time.sleep(2)
        for c in dep.containers("ingest"):
            docker("restart", "-t", "10", c)
        dep.wait_healthy(timeout=90)
        mongo = dep.containers("mongo")[0]
        docker("restart", "-t", "10", mongo)
        t.join(120)
        dep.wait_healthy(timeout=120)
    finally:
        t.join(120)
    ids = result["ids"]
    # Inserts flowed (their pace is the store's: the fixture slows as it grows) and flow again.
    assert len(ids) > 20, result
    assert tenant.insert("after", {"restarted": True}) is not None
    stored = set(_snapshot_ids(dep, tenant, ids))
    lost = sorted(set(ids) - stored)
    assert not lost, "answered 200 but not in the store: %s (of %d answered, %d failed)" % (
        lost[:20], len(ids), result["failures"])


def test_a_stopped_replica_gets_no_traffic(dep):
    victim = dep.containers("stream")[0]
    docker("stop", "-t", "5", victim)
    try:
        state = docker("inspect", "-f", "{{.State.Status}}", victim).strip()
        assert state == "exited", state
        tenant = Tenant(dep)
        time.sleep(6)  # the gateway's resolver keeps an answer 5 s
        for _ in range(30):
            c = SSEClient.open(dep.base_url, "/sse", headers={"Authorization": "Bearer " + tenant.jwt}, timeout=10)
            try:
                assert c.read_head(10) == 200, (c.status, c.body_raw[:200])
            finally:
                c.close()
    finally:
        docker("start", victim, check=False)
        dep.wait_healthy(timeout=90)


def test_presence_is_the_same_on_every_replica_and_a_killed_replica_leaves(dep):
    # Users of one tenant stream through the gateway (spread over the three replicas); every
    # replica's GET /presence (read inside its container) lists them all, and a watcher's
    # $presence frames announce them. A replica killed with SIGKILL says nothing: its users'
    # streams end, and within 15 s every replica left has them gone.
    tenant_name = "t" + uuid.uuid4().hex[:10]

    def user():
        name, pw = "u" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex[:12]
        r = requests.post(dep.base_url + "/create_user", json={
            "admin_token": dep.admin_token, "username": name, "password": pw, "tenant_name": tenant_name}, timeout=10)
        assert r.status_code == 200, r.text
        r = requests.post(dep.base_url + "/login", json={"username": name, "password": pw}, timeout=10)
        assert r.status_code == 200, r.text
        return name, r.json()["jwt"]

    def listed(container, jwt):
        out = docker("exec", container, "curl", "-fsS", "-H", "Authorization: Bearer " + jwt,
                     "http://127.0.0.1:8080/presence")
        return {u["username"]: u["connections"] for u in json.loads(out)["users"]}

    def stream(jwt, query=""):
        c = SSEClient.open(dep.base_url, "/sse" + query, headers={"Authorization": "Bearer " + jwt}, timeout=10)
        assert c.read_head(10) == 200, (c.status, c.body_raw[:200])
        return c

    watcher, wjwt = user()
    users = [user() for _ in range(8)]
    w = stream(wjwt, "?presence=true&events=none")
    streams = {}
    victim = None
    try:
        joined = set()
        streams = {name: stream(jwt) for name, jwt in users}
        everyone = {watcher} | set(streams)
        deadline = time.monotonic() + 10
        while not everyone <= joined and time.monotonic() < deadline:
            ev = w.next_event(max(0.1, deadline - time.monotonic()))
            assert ev.event == "$presence" and ev.id is None, ev
            joined |= set(json.loads(ev.data).get("join", []))
        assert everyone <= joined, (everyone - joined)
        replicas = dep.containers("stream")
        for c in replicas:
            end = time.monotonic() + 5
            while listed(c, wjwt) != {n: 1 for n in everyone} and time.monotonic() < end:
                time.sleep(0.2)
            assert listed(c, wjwt) == {n: 1 for n in everyone}, (c, listed(c, wjwt))

        held = {c: metric(c, "broker_presence_users_local") for c in replicas}
        victim = max(held, key=held.get)
        docker("kill", victim)
        killed = time.monotonic()
        time.sleep(2)
        gone = {n for n, c in streams.items() if c.wait_closed(0.05)}
        if w.wait_closed(0.05):
            gone.add(watcher)
        assert gone, "no stream ended with the replica that held the most users"
        survivors = [c for c in replicas if c != victim]
        want = {n: 1 for n in everyone - gone}
        while time.monotonic() - killed < 16 and any(listed(c, wjwt) != want for c in survivors):
            time.sleep(0.5)
        took = time.monotonic() - killed
        assert all(listed(c, wjwt) == want for c in survivors), [(c, listed(c, wjwt)) for c in survivors]
        assert took <= 15.5, "the dead replica's users were still listed %.1f s after it died" % took
    finally:
        w.close()
        for c in streams.values():
            c.close()
        if victim is not None:
            docker("start", victim, check=False)
            dep.wait_healthy(timeout=90)

"""The compose deployment's bus with CURVE, attacked from its own network: a container joined to
the deployment's network (the broker image, running build/bus_probe: raw libzmq, none of the
project's code, no key of the deployment's) connects to every bus port of both forwarders.

What is proven: a SUB socket without a key, or with a key nobody trusts (and the forwarders'
real public keys, which are public), reads nothing while events, a revocation and a
reinstatement flow through the gateway, though a probe with a trusted key reads them in the same
window; a PUB socket without a key or with a stranger's key that sends a forged event, a forged
ctl/clock and a forged ctl/user changes nothing: no SSE client (through the gateway) receives the
event, the next real event takes the id the forgery tried, no service's clock moves, the user
still verifies; the forwarders log each refusal (docker logs) and count it
(broker_bus_refused_total, on their own /metrics inside the network).

Run by tests/run_all.sh with tests/compose (BROKER_COMPOSE_ENV: tests/compose/deployment.py's
deployment, whose secrets folder holds the bus keys)."""

import json
import os
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "blackbox"))

from deployment import Deployment  # noqa: E402
from sse_client import SSEClient, Timeout  # noqa: E402

ENV_FILE = os.environ.get("BROKER_COMPOSE_ENV")
pytestmark = pytest.mark.skipif(not ENV_FILE, reason="BROKER_COMPOSE_ENV is not set (tests/run_all.sh sets it)")

PROBE = os.path.join(os.environ.get("BROKER_BUILD", os.path.join(ROOT, "build")), "bus_probe")
IMAGE = os.environ.get("BROKER_IMAGE", "broker:latest")
FORWARDERS = ("bus", "bus2")
PUBLISHERS_SIDE, SUBSCRIBERS_SIDE = 5559, 5560  # a forwarder's XSUB port and the next one (XPUB)
HOURS = 3600 * 1000


@pytest.fixture(scope="module")
def dep():
    d = Deployment.load(ENV_FILE)
    assert d.secrets and os.path.isdir(d.secrets), "the deployment has no secrets folder (deployment.py up makes it)"
    assert os.path.isfile(PROBE), "no %s: make build makes it" % PROBE
    d.wait_healthy(timeout=60)
    return d


def docker(*args, check=True, timeout=120):
    p = subprocess.run(["docker"] + list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("docker %s: %s" % (" ".join(args), p.stderr))
    return p.stdout


def network_of(dep):
    """The deployment's network, as its first forwarder is joined to it."""
    c = dep.containers("bus")[0]
    nets = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", c))
    assert len(nets) == 1, nets
    return list(nets)[0]


def metric(container, name):
    text = docker("exec", container, "curl", "-fsS", "http://127.0.0.1:8080/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def refused(dep):
    return sum(metric(c, "broker_bus_refused_total") for f in FORWARDERS for c in dep.containers(f))


class Probe:
    """bus_probe in a container of its own on the deployment's network, started now; its lines
    (`key ...`, `connected N`, `topic T` per message read, `sent N`) are collected as they come:
    a container takes seconds to start on a busy machine, so the test waits for them rather
    than for a fixed time."""

    def __init__(self, dep, args, mounts=()):
        self.name = "brokerprobe" + uuid.uuid4().hex[:8]
        cmd = ["docker", "run", "--rm", "--name", self.name, "--network", network_of(dep),
               "--label", "com.broker.test=bus-probe",
               "-v", "%s:/usr/local/bin/bus_probe:ro" % PROBE, "--entrypoint", "/usr/local/bin/bus_probe"]
        for host, inside in mounts:
            cmd += ["-v", "%s:%s:ro" % (host, inside)]
        self.lines = []
        self.proc = subprocess.Popen(cmd + [IMAGE] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, prefix, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(line.startswith(prefix) for line in list(self.lines)):
                return True
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.2)
        return any(line.startswith(prefix) for line in list(self.lines))

    def value(self, name):
        return [line.split(" ", 1)[1] for line in self.lines if line.startswith(name + " ")]

    def topics(self):
        return self.value("topic")

    def output(self):
        return "\n".join(self.lines[:40]) + ("\n..." if len(self.lines) > 40 else "")

    def wait(self, timeout=60):
        """Until the probe ends by itself; its exit code must be 0."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        self.reader.join(10)
        err = self.proc.stderr.read()
        assert self.proc.returncode == 0, "bus_probe failed (%s):\n%s\n%s" % (self.proc.returncode, self.output(), err)

    def stop(self):
        if self.proc.poll() is None:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)
            self.proc.wait(30)
        self.reader.join(10)


def endpoints(dep, ports, with_key):
    """ENDPOINT[,SERVERKEY] of both forwarders at `ports` (their real public keys with a key)."""
    out = []
    for f in FORWARDERS:
        for p in ports:
            out.append("tcp://%s:%d" % (f, p) + ("," + dep.bus_key(f) if with_key else ""))
    return out


def hex_frame(b):
    return "x:" + b.hex()


def forged_event(tenant, seq):
    return ["--", "ev/%s/" % tenant, hex_frame(struct.pack(">QQ", seq, int(time.time() * 1000))), "forged",
            '{"forged":true}']


def forged_clock(offset_ms):
    return ["--", "ctl/clock/", hex_frame(struct.pack(">q", offset_ms)), "N", "forged"]


def forged_user(name):
    return ["--", "ctl/user/", name, "1"]


class Tenant:
    """A user of a fresh tenant, through the gateway."""

    def __init__(self, dep):
        self.dep = dep
        self.name = "t" + uuid.uuid4().hex[:10]
        self.username = "u" + uuid.uuid4().hex[:10]
        password = "pw-" + uuid.uuid4().hex[:12]
        self.admin({"username": self.username, "password": password, "tenant_name": self.name}, "/create_user")
        r = requests.post(dep.base_url + "/login", json={"username": self.username, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        self.headers = {"Authorization": "Bearer " + r.json()["jwt"]}

    def admin(self, body, path):
        r = requests.post(self.dep.base_url + path, json=dict(body, admin_token=self.dep.admin_token), timeout=10)
        assert r.status_code == 200, r.text

    def insert(self, event, data):
        r = requests.post(self.dep.base_url + "/insert", json={"event": event, "data": data}, headers=self.headers,
                          timeout=10)
        assert r.status_code == 200, r.text
        return int(r.json()["id"])

    def verify_status(self):
        return requests.get(self.dep.base_url + "/verify", headers=self.headers, timeout=10).status_code

    def stream(self):
        c = SSEClient.open(self.dep.base_url, "/sse", headers=self.headers, timeout=5)
        assert c.read_head(5) == 200
        return c


def clock_offsets(dep):
    """{container: its corrected clock's offset} of every service that reads the bus's clock."""
    out = {}
    for svc in ("auth", "ingest", "stream"):
        for c in dep.containers(svc):
            body = json.loads(docker("exec", c, "curl", "-sS", "http://127.0.0.1:8080/readyz"))
            out[c] = body["clock"]["offset_ms"]
    return out


def logs_since(dep, since):
    """The forwarders' logs since `since` (the services log to stderr)."""
    text = ""
    for f in FORWARDERS:
        for c in dep.containers(f):
            p = subprocess.run(["docker", "logs", "--since", since, c], capture_output=True, text=True, timeout=60)
            text += p.stdout + p.stderr
    return text


def test_an_outsider_on_the_network_reads_nothing(dep):
    since = str(int(time.time()) - 1)
    before = refused(dep)
    tenant = Tenant(dep)
    every_port = (PUBLISHERS_SIDE, SUBSCRIBERS_SIDE)
    # The control: a trusted key (stream's) on the subscribers' side, in the same window, so that
    # nothing read below is a refusal, not a probe that cannot read or a window with no traffic.
    control = Probe(dep, ["sub", "120", "--key-file", "/keys/stream"] + endpoints(dep, [SUBSCRIBERS_SIDE], True),
                    mounts=[(os.path.join(dep.secrets, "bus", "stream"), "/keys/stream")])
    no_key = Probe(dep, ["sub", "120"] + endpoints(dep, every_port, False))
    stranger = Probe(dep, ["sub", "120", "--stranger"] + endpoints(dep, every_port, True))
    probes = [control, no_key, stranger]
    try:
        for p in probes:
            assert p.wait_line("connected", 60), "a probe did not start:\n" + p.output()
        # Events until the control reads one of this tenant's (its handshake and subscription
        # are through), then more, and control messages: a revocation and a reinstatement.
        topic = "topic ev/%s/" % tenant.name
        end = time.monotonic() + 60
        while not control.wait_line(topic, 0.5) and time.monotonic() < end:
            tenant.insert("secret", {"n": -1})
        assert control.wait_line(topic, 1), "the trusted probe never read an event:\n" + control.output()
        for i in range(20):
            tenant.insert("secret", {"n": i})
        tenant.admin({"username": tenant.username}, "/revoke_user")
        tenant.admin({"username": tenant.username}, "/unrevoke_user")
        assert control.wait_line("topic ctl/user/", 20), "the trusted probe read no revocation:\n" + control.output()
        time.sleep(1)
        read = {"without a key": no_key.topics(), "with an untrusted key": stranger.topics()}
        # Each of the outsider's sockets (4 of each kind) refused at least once, and counted.
        assert wait_for(lambda: refused(dep) >= before + 8, 30), \
            "refusals counted: %d more, expected at least 8" % (refused(dep) - before)
    finally:
        for p in probes:
            p.stop()
    assert len([t for t in control.topics() if t.startswith("ev/%s/" % tenant.name)]) >= 21, control.output()
    for how, topics in read.items():
        assert not topics, "a socket %s read the bus: %s" % (how, topics[:10])
    logs = logs_since(dep, since)
    assert "with the key %s" % stranger.value("key")[0] in logs, "the stranger's key is in no refusal line"
    assert "refused a peer on tcp://" in logs, "no refusal line for the sockets without a key"


def wait_for(check, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(1)
    return check()


def test_an_outsider_on_the_network_injects_nothing(dep):
    tenant = Tenant(dep)
    # One client per stream replica, as the gateway spreads them; the forgery would reach all.
    streams = [tenant.stream() for _ in dep.containers("stream")]
    clocks = clock_offsets(dep)
    try:
        last = tenant.insert("real", {"n": 0})
        for s in streams:
            assert int(s.next_event(10).id) == last
        forgeries = forged_event(tenant.name, last + 1) + forged_clock(-36 * HOURS) + forged_user(tenant.username)
        no_key = Probe(dep, ["pub", "5"] + endpoints(dep, [PUBLISHERS_SIDE], False) + forgeries)
        stranger = Probe(dep, ["pub", "5", "--stranger"] + endpoints(dep, [PUBLISHERS_SIDE], True) + forgeries)
        for p in (no_key, stranger):
            p.wait()
            assert int(p.value("sent")[0]) > 0, "the probe sent nothing:\n" + p.output()
        for s in streams:
            try:
                ev = s.next_event(1)
            except Timeout:
                continue
            raise AssertionError("a forged event reached a stream: %r" % (ev,))
        # The user was not revoked and the forgery took no id: the next real event is last + 1,
        # on every stream, which is still open.
        nxt = tenant.insert("real", {"n": 1})
        assert nxt == last + 1
        for s in streams:
            ev = s.next_event(10)
            assert (int(ev.id), ev.event, json.loads(ev.data)) == (nxt, "real", {"n": 1})
        assert tenant.verify_status() == 200
        after = clock_offsets(dep)
        moved = {c: (clocks[c], after.get(c)) for c in clocks if abs(after.get(c, 0) - clocks[c]) >= 60000}
        assert not moved, "a forged clock moved: %s" % moved
    finally:
        for s in streams:
            s.close()

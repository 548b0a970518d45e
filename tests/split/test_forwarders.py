"""Two bus forwarders (broker-bus) between the split services: losing one loses nothing.

Starts its own deployment on the loopback, all processes sharing one embedded store: two
broker-bus, broker-auth, broker-ingest, broker-certd and two broker-stream, each of the others
with --bus_forwarders naming both forwarders. Every publisher sends to both forwarders and every
subscriber hears both, so each event reaches a stream process twice while both are up; the
per-tenant sequence must drop the copy (SSE ids go up by one, never repeat, and no gap is
"filled" because of a copy). A forwarder killed with SIGKILL while inserts flow costs nothing;
restarted, it carries the bus again once the other one is gone.

Binaries: BROKER_BIN's folder (default <repo>/build/broker), which holds the split ones too.
Every process stopped with SIGTERM must exit 0 (built with -DBROKER_SANITIZE=ON and run with
ASAN_OPTIONS=detect_leaks=1: no leak either).
"""
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

from split_stream import Stream

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.path.dirname(os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker")))
ADMIN = "forwarders-admin"
STOP_TIMEOUT = 15  # SIGTERM to exit (ASan's leak check at exit takes a moment)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair():
    """A port p with p + 1 free too: a forwarder's two sides."""
    for _ in range(100):
        p = free_port()
        if p >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
                return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}


class Service:
    """One split-service process on the loopback, its stderr in the deployment's folder."""

    def __init__(self, name, args, workdir, tag=None):
        self.name = name
        self.tag = tag or name
        self.port = free_port()
        self.args = list(args)
        self.workdir = workdir
        self.stderr_path = os.path.join(workdir, self.tag + ".stderr")
        binary = os.path.join(BIN_DIR, name)
        if not os.access(binary, os.X_OK):
            pytest.fail("%s not found or not executable (build it, or set BROKER_BIN)" % binary)
        self.binary = binary
        self.start()

    def start(self):
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([self.binary, "--bind=127.0.0.1", "--port=%d" % self.port] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=clean_env(), cwd=self.workdir)

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def kill(self):
        self.proc.kill()
        self.proc.wait(5)

    def stop(self):
        """SIGTERM; the exit code, or a text when it had to be killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "killed after %d s (SIGTERM ignored)" % STOP_TIMEOUT


def wait_for(predicate, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def status_of(url):
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:
        return None


def metric(service, name):
    r = requests.get(service.url("/metrics"), timeout=5)
    assert r.status_code == 200, r.text[:300]
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s's /metrics has no %s" % (service.name, name))


def connected_to(service, port):
    """Whether `service` holds an established TCP connection to 127.0.0.1:`port`."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % service.proc.pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/%d/net/tcp" % service.proc.pid) as f:
        next(f)
        for line in f:
            cols = line.split()
            remote, state, inode = cols[2], cols[3], cols[9]
            if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                return True
    return False


class Deployment:
    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="broker-forwarders-")
        self.bus_ports = [free_port_pair(), free_port_pair()]
        while self.bus_ports[1] in (self.bus_ports[0] - 1, self.bus_ports[0], self.bus_ports[0] + 1):
            self.bus_ports[1] = free_port_pair()
        forwarders = ",".join("127.0.0.1:%d" % p for p in self.bus_ports)
        common = ["--db=%s" % os.path.join(self.workdir, "db"), "--ntp_servers=", "--bus_forwarders=" + forwarders,
                  "--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0", "--admin_token=" + ADMIN,
                  "--jwt_secret=forwarders-test-secret", "--console=false"]
        self.common = common
        self.buses = [Service("broker-bus", common + ["--bus_forwarder_port=%d" % p], self.workdir, "bus%d" % i)
                      for i, p in enumerate(self.bus_ports)]
        self.auth = Service("broker-auth", common, self.workdir)
        self.ingest = Service("broker-ingest", common, self.workdir)
        self.certd = Service("broker-certd", common + ["--secure=false"], self.workdir)
        self.streams = [Service("broker-stream", common, self.workdir, "stream%d" % i) for i in range(2)]
        self.dead = []  # killed on purpose: no exit status to check

    def everyone(self):
        return self.buses + [self.auth, self.ingest, self.certd] + self.streams

    def wired(self, bus_index):
        """Every publisher and every stream process holds a connection to that forwarder."""
        port = self.bus_ports[bus_index]
        return (all(connected_to(s, port) for s in (self.auth, self.ingest, self.certd)) and
                all(connected_to(s, port + 1) for s in self.streams))

    def wait_ready(self):
        for s in self.everyone():
            assert wait_for(lambda: status_of(s.url("/readyz")) == 200 or not s.alive(), 20), \
                "%s not ready:\n%s" % (s.name, s.stderr()[-2000:])
            assert s.alive(), "%s ended:\n%s" % (s.name, s.stderr()[-2000:])

    def make_user(self, tenant):
        name = "u-" + uuid.uuid4().hex[:10]
        r = requests.post(self.auth.url("/create_user"), json={"username": name, "password": "password123",
                                                               "admin_token": ADMIN, "tenant_name": tenant},
                          timeout=10)
        assert r.status_code == 200, r.text
        r = requests.post(self.auth.url("/login"), json={"username": name, "password": "password123"}, timeout=10)
        assert r.status_code == 200, r.text
        return name, {"Authorization": "Bearer " + r.json()["jwt"]}

    def insert(self, session, auth, event, data):
        r = session.post(self.ingest.url("/insert"), json={"event": event, "data": data}, headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        return int(r.json()["id"])

    def wait_carrying(self, index):
        """Until the forwarder passes events on (the subscriptions went up through it to ingest):
        probes of a tenant of its own, while its count (read once a second) stays put."""
        _, probe = self.make_user("probe" + uuid.uuid4().hex[:8])
        before = metric(self.buses[index], "broker_bus_forwarded_total")
        with requests.Session() as session:
            def moved():
                self.insert(session, probe, "probe", 0)
                # More than certd's clock messages alone would make in the time.
                return metric(self.buses[index], "broker_bus_forwarded_total") >= before + 3
            assert wait_for(moved, 10, 0.2), "forwarder %d forwards nothing" % index
        time.sleep(0.3)  # the other subscribers' subscriptions, a moment behind the first

    def gaps(self):
        return [metric(s, "broker_bus_gaps_filled_total") for s in self.streams]

    def restart_bus(self, index):
        self.buses[index].start()
        assert wait_for(lambda: status_of(self.buses[index].url("/readyz")) == 200, 20), self.buses[index].stderr()


@pytest.fixture(scope="module")
def dep():
    d = Deployment()
    try:
        d.wait_ready()
        assert wait_for(lambda: d.wired(0) and d.wired(1), 20), "the services did not connect to both forwarders"
        yield d
    finally:
        for s in d.everyone():
            s.stop()


def assert_once_in_order(got, ids, values):
    assert [g[0] for g in got] == ids, "ids differ: %s" % [g[0] for g in got][:50]
    assert all(b == a + 1 for a, b in zip(ids, ids[1:])), "ids of one tenant must go up by one"
    assert [g[2]["n"] for g in got] == values


def cpu_seconds(service):
    """The user and system time the process has used so far."""
    with open("/proc/%d/stat" % service.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_processes_sleep(dep):
    """With nothing to do, no process spins: all together use a small part of one CPU.  (A timed wait
    that measured a monotonic deadline against the wall clock once woke at once, forever, and
    every process checked its store without pause.)"""
    window = 3.0
    before = {s.tag: cpu_seconds(s) for s in dep.everyone()}
    time.sleep(window)
    used = {s.tag: cpu_seconds(s) - before[s.tag] for s in dep.everyone()}
    # Summed, since processes that spin share the CPUs: on two, seven spinning get under a third each.
    total = sum(used.values()) / window
    assert total < 0.5, "busy while idle: %.2f CPUs in all; by process: %s" % (
        total, {name: round(t / window, 2) for name, t in used.items()})


def test_every_event_once_in_order_with_both_forwarders(dep):
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    streams = [Stream(s.port, auth) for s in dep.streams]
    gaps_before = dep.gaps()
    forwarded_before = [metric(b, "broker_bus_forwarded_total") for b in dep.buses]
    try:
        assert all(s.status == 200 for s in streams)
        with requests.Session() as session:
            ids = [dep.insert(session, auth, "e%d" % (i % 3), {"n": i}) for i in range(300)]
        for s in streams:
            assert_once_in_order(s.events(len(ids)), ids, list(range(300)))
        for s in streams:
            assert s.nothing_more(0.5), "an event came twice"
        # A copy from the other forwarder is a duplicate, not a gap to fill from the store.
        assert dep.gaps() == gaps_before
        # Both forwarders carried the events (their count is read once a second).
        assert wait_for(lambda: all(metric(b, "broker_bus_forwarded_total") >= f + 300
                                    for b, f in zip(dep.buses, forwarded_before)), 5)
    finally:
        for s in streams:
            s.close()


def check_revocation_closes_streams(dep):
    tenant = "t" + uuid.uuid4().hex[:8]
    name, auth = dep.make_user(tenant)
    _, other = dep.make_user(tenant)
    streams = [Stream(s.port, auth) for s in dep.streams]
    bystanders = [Stream(s.port, other) for s in dep.streams]
    try:
        assert all(s.status == 200 for s in streams + bystanders)
        r = requests.post(dep.auth.url("/revoke_user"), json={"admin_token": ADMIN, "username": name}, timeout=10)
        assert r.status_code == 200, r.text
        assert all(s.closed_within(5) for s in streams)
        with requests.Session() as session:
            live = dep.insert(session, other, "still", True)
        for b in bystanders:
            assert b.next_event() == (live, "still", True)
            assert b.nothing_more(0.3), "an event came twice"
    finally:
        for s in streams + bystanders:
            s.close()


def test_revocation_closes_streams_with_both_forwarders_up(dep):
    # The revocation arrives once per forwarder: the second copy finds the streams closing or gone.
    assert dep.buses[0].alive() and dep.buses[1].alive()
    check_revocation_closes_streams(dep)


def test_killing_a_forwarder_loses_nothing(dep):
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    streams = [Stream(s.port, auth) for s in dep.streams]
    ids, values, errors, not_ready = [], [], [], []

    def insert_for(seconds):
        try:
            with requests.Session() as session:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    values.append(len(values))
                    ids.append(dep.insert(session, auth, "k", {"n": values[-1]}))
                    time.sleep(0.005)
        except Exception as e:  # reported by the test below
            errors.append(e)

    try:
        assert all(s.status == 200 for s in streams)
        gaps_before = dep.gaps()
        writer = threading.Thread(target=insert_for, args=(3,))
        writer.start()
        time.sleep(1)
        dep.buses[0].kill()
        dep.dead.append(dep.buses[0])
        while writer.is_alive():
            not_ready += [s.name for s in dep.streams if status_of(s.url("/readyz")) != 200]
            time.sleep(0.2)
        writer.join()
        assert not errors, errors
        assert not not_ready, "a stream process stopped being ready: %s" % not_ready
        assert len(ids) > 50
        for s in streams:
            assert_once_in_order(s.events(len(ids)), ids, values)
        for s in streams:
            assert s.nothing_more(0.5), "an event came twice"
        # The other forwarder had every event: nothing was missing, so nothing was read back.
        assert dep.gaps() == gaps_before

        # Back on the same ports, it is joined again: after the other one dies, it carries it all.
        dep.restart_bus(0)
        assert wait_for(lambda: dep.wired(0), 20), "the services did not connect to the restarted forwarder"
        dep.wait_carrying(0)
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
        with requests.Session() as session:
            more = [dep.insert(session, auth, "k", {"n": len(values) + i}) for i in range(50)]
        for s in streams:
            assert_once_in_order(s.events(len(more)), more, list(range(len(values), len(values) + 50)))
        assert all(status_of(s.url("/readyz")) == 200 for s in dep.streams)
    finally:
        for s in streams:
            s.close()


def test_revocation_closes_streams_with_one_forwarder_down(dep):
    if dep.buses[0].alive() and dep.buses[1].alive():
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
    check_revocation_closes_streams(dep)


def test_a_stream_started_with_one_forwarder_down_is_ready(dep):
    # Forwarders are redundant: one connected is enough, where distinct publishers need them all.
    if dep.buses[0].alive() and dep.buses[1].alive():
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
    late = Service("broker-stream", dep.common, dep.workdir, "stream-late")
    dep.streams.append(late)
    assert wait_for(lambda: status_of(late.url("/readyz")) == 200 or not late.alive(), 20), late.stderr()[-2000:]
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    s = Stream(late.port, auth)
    try:
        assert s.status == 200
        # Its subscription reaches the publishers through the forwarder a moment after it connects.
        with requests.Session() as session:
            first = dep.insert(session, auth, "probe", {"n": 0})
            got = None
            for i in range(1, 50):
                try:
                    got = s.next_event(0.2)
                    break
                except (TimeoutError, socket.timeout):
                    first = dep.insert(session, auth, "probe", {"n": i})
            assert got is not None and got[0] <= first
            ids = [dep.insert(session, auth, "after", {"n": i}) for i in range(20)]
        rest = [e for e in s.events(first - got[0] + len(ids)) if e[1] == "after"]
        assert [e[0] for e in rest] == ids
    finally:
        s.close()


def test_control_messages_travel_through_the_forwarders(dep):
    # certd (no network time configured) says so on the bus; the others learn it through a forwarder.
    def clock_warning():
        r = requests.get(dep.auth.url("/readyz"), timeout=5)
        return r.status_code == 200 and "--ntp_servers is empty" in r.json()["clock"].get("warning", "")
    assert wait_for(clock_warning, 15), requests.get(dep.auth.url("/readyz"), timeout=5).text


def test_every_process_stops_cleanly(dep):
    # A restarted forwarder is stopped too; both were killed once, so restart the second for the check.
    if not dep.buses[1].alive():
        dep.restart_bus(1)
    logs = {}
    for s in dep.everyone():
        assert s.alive(), "%s ended early:\n%s" % (s.name, s.stderr()[-2000:])
    for s in dep.everyone():
        rc = s.stop()
        logs[s.stderr_path] = s.stderr()
        assert rc == 0, "%s exited %r:\n%s" % (s.name, rc, s.stderr()[-3000:])
    for path, text in logs.items():
        bad = [line for line in text.splitlines() if " ERROR: " in line or "fill a gap" in line or "ERROR: AddressSanitizer" in line]
        assert not bad, "%s:\n%s" % (path, "\n".join(bad[:20]))

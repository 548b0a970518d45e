"""A split deployment of its own on the loopback, for the tests that start and kill processes
(test_forwarders.py, test_bus_curve.py, test_presence.py): two bus forwarders (broker-bus),
broker-auth, broker-ingest, broker-certd and two broker-stream (or as many as asked), all sharing one embedded store, each of the
others with --bus_forwarders naming both forwarders.

With curve=True every process has a key pair of its own (broker-keygen) in the deployment's
keys/ folder, every public key is in keys/trusted/ (--bus_trusted_keys of the forwarders), and
every process pins the forwarders' keys (--bus_server_key) and certd's (--bus_certd_key).

Binaries: BROKER_BIN's folder (default <repo>/build/broker), which holds the split ones too.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

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


def keygen(path):
    """A new key pair at `path` (and path.pub); its public key."""
    out = subprocess.run([os.path.join(BIN_DIR, "broker-keygen"), path], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def read_keys(path):
    """{"public-key": ..., "secret-key": ...} of a key file broker-keygen wrote."""
    keys = {}
    with open(path) as f:
        for line in f:
            if "=" in line and not line.startswith("#"):
                name, _, value = line.partition("=")
                keys[name.strip()] = value.strip().strip('"')
    return keys


def deployment_fixture(**kw):
    """For a module's fixture (`yield from`): a Deployment(**kw) ready and wired to both
    forwarders; every process stopped at the end."""
    d = Deployment(**kw)
    try:
        d.wait_ready()
        assert wait_for(lambda: d.wired(0) and d.wired(1), 20), "the services did not connect to both forwarders"
        yield d
    finally:
        for s in d.everyone():
            s.stop()


class Deployment:
    def __init__(self, curve=False, streams=2):
        self.workdir = tempfile.mkdtemp(prefix="broker-forwarders-")
        self.curve = curve
        self.keys = os.path.join(self.workdir, "keys")
        self.trusted = os.path.join(self.keys, "trusted")
        self.bus_ports = [free_port_pair(), free_port_pair()]
        while self.bus_ports[1] in (self.bus_ports[0] - 1, self.bus_ports[0], self.bus_ports[0] + 1):
            self.bus_ports[1] = free_port_pair()
        forwarders = ",".join("127.0.0.1:%d" % p for p in self.bus_ports)
        common = ["--db=%s" % os.path.join(self.workdir, "db"), "--ntp_servers=", "--bus_forwarders=" + forwarders,
                  "--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0", "--admin_token=" + ADMIN,
                  "--jwt_secret=forwarders-test-secret", "--console=false"]
        if curve:
            os.makedirs(self.trusted)
            for name in ("bus0", "bus1", "auth", "ingest", "certd") + tuple("stream%d" % i for i in range(streams)):
                self.add_key(name)
            common += ["--bus_trusted_keys=" + self.trusted, "--bus_certd_key=" + self.public_key_file("certd"),
                       "--bus_server_key=%s,%s" % (self.public_key_file("bus0"), self.public_key_file("bus1"))]
        self.common = common
        self.buses = [Service("broker-bus", common + self.key_flag("bus%d" % i) + ["--bus_forwarder_port=%d" % p],
                              self.workdir, "bus%d" % i)
                      for i, p in enumerate(self.bus_ports)]
        self.auth = Service("broker-auth", common + self.key_flag("auth"), self.workdir)
        self.ingest = Service("broker-ingest", common + self.key_flag("ingest"), self.workdir)
        self.certd = Service("broker-certd", common + self.key_flag("certd") + ["--secure=false"], self.workdir)
        self.streams = [Service("broker-stream", common + self.key_flag("stream%d" % i), self.workdir, "stream%d" % i)
                        for i in range(streams)]
        self.dead = []  # killed on purpose: no exit status to check

    def add_key(self, name):
        """A key pair for `name` whose public key the forwarders trust; the public key."""
        public = keygen(os.path.join(self.keys, name))
        shutil.copy(os.path.join(self.keys, name + ".pub"), self.public_key_file(name))
        return public

    def public_key_file(self, name):
        return os.path.join(self.trusted, name + ".pub")

    def key_flag(self, name):
        return ["--bus_key_file=" + os.path.join(self.keys, name)] if self.curve else []

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

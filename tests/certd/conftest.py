"""Harness of the certd tests (network time and ACME): the black-box harness
(tests/blackbox/conftest.py) loaded under a name of its own, plus what these tests share. The
real servers they talk to are Debian's chronyd (ntp_server.py) and Pebble with
pebble-challtestsrv (pebble_server.py), all on loopback."""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BLACKBOX = os.path.abspath(os.path.join(HERE, "..", "blackbox"))
sys.path.insert(0, HERE)


def _load_harness():
    name = "broker_blackbox_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BLACKBOX, "conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


h = _load_harness()

BROKER_BIN = h.BROKER_BIN
assert_ok = h.assert_ok
bearer_header = h.bearer_header
check_clean_exit = h.check_clean_exit
free_port = h.free_port
jwt_parts = h.jwt_parts
start_broker = h.start_broker
spawn = h.spawn
clean_env = h.clean_env
Broker = h.Broker
wait_healthy = h.wait_healthy

import sse_client  # noqa: E402  (on sys.path once the harness is loaded)

SSEClient = sse_client.SSEClient


STOP_TIMEOUT = 15  # SIGTERM to exit (ASan's leak check at exit takes a moment)


def _bin(name):
    return os.path.join(os.path.dirname(BROKER_BIN), name)


class Service:
    """One split-service process (broker-certd, broker-auth, ...) on the loopback: its port, its
    stderr in `workdir` (a new temporary one by default)."""

    def __init__(self, name, args, port=None, workdir=None):
        self.name = name
        self.port = port or free_port()
        self.workdir = workdir or tempfile.mkdtemp(prefix="broker-certd-split-")
        self.stderr_path = os.path.join(self.workdir, name + ".stderr")
        binary = _bin(name)
        if not os.access(binary, os.X_OK):
            pytest.fail("%s not found or not executable (build it, or set BROKER_BIN)" % binary)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([binary, "--bind=127.0.0.1", "--port=%d" % self.port] + list(args),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                         env=clean_env(), cwd=self.workdir)
        self.crashed = None  # the exit code when it ended before stop(), else None

    def alive(self):
        return self.proc.poll() is None

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """SIGTERM; the exit code, or a text when it had to be killed."""
        if self.proc.poll() is not None:
            if self.crashed is None:
                self.crashed = self.proc.returncode
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return "killed after %d s (SIGTERM ignored)" % STOP_TIMEOUT
        return self.proc.returncode


def wait_for(predicate, timeout, step=0.1):
    """Polls `predicate` until it returns a true value or `timeout` seconds pass; returns the
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


def free_udp_port():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readyz_clock(b):
    """The `clock` object of the broker's /readyz (which must be 200 whatever the clock)."""
    r = b.get("/readyz")
    assert r.status_code == 200, "/readyz %d: %s" % (r.status_code, r.text)
    return r.json()["clock"]


@pytest.fixture
def servers():
    """Brokers a test starts (start_broker's arguments); each is stopped at the end, must not
    have crashed, and must exit 0 on SIGTERM (under ASan: no leak)."""
    started = []

    def start(**kw):
        kw.setdefault("tag", "certd%d" % len(started))
        b = start_broker(**kw)
        started.append(b)
        return b

    yield start
    for b in started:
        if b not in h._ACTIVE:
            continue
        crashed = not b.alive()
        code = b.stop()
        if crashed:
            pytest.fail("%s exited during the test (exit %r); stderr:\n%s"
                        % (b.name, code, b.stderr_tail()))
        check_clean_exit(b, code)


@pytest.fixture(scope="session", autouse=True)
def _cleanup():
    yield
    for b in list(h._ACTIVE):
        b.stop()
    if os.environ.get("BROKER_TEST_KEEP") != "1":
        for d in h._WORKDIRS:
            shutil.rmtree(d, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for b in list(h._ACTIVE):
            rep.sections.append(("broker stderr: %s (%s)" % (b.name, b.base_url),
                                 b.stderr_tail() or "(empty)"))


@pytest.fixture(autouse=True)
def _own_servers_only():
    h.needs_own_server("the certd tests start servers with their own time and certificate flags")

"""Shared fixtures of the operator-file tests (tests/ops): the broker binary, its flags, and a
way to start a real broker for a test.

The deploy files (systemd unit, environment example, Grafana dashboard) name flags and metrics
of the binary; these tests hold them to what the binary really accepts and exposes, so they
start the real thing rather than trusting the README.

Environment:
  BROKER_BIN   binary to test against (default: <repo>/build/broker). It is copied to a temp
               folder once per session: build/broker may be rebuilt while the tests run.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(REPO, "deploy")

STARTUP_TIMEOUT = 10.0  # seconds until /healthz must answer
STOP_GRACE = 5.0        # seconds between SIGTERM and SIGKILL
HTTP_TIMEOUT = 10.0     # every request is bounded


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra=None):
    """The caller's environment without BROKER_* (they would silently change the server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(extra or {})
    return env


@pytest.fixture(scope="session")
def broker_bin():
    src = os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))
    assert os.path.isfile(src) and os.access(src, os.X_OK), \
        "no broker binary at %s (build it, or set BROKER_BIN)" % src
    d = tempfile.mkdtemp(prefix="broker-ops-bin-")
    dst = os.path.join(d, "broker")
    shutil.copy2(src, dst)
    yield dst
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def help_flags(broker_bin):
    """Names of the flags `broker --help` lists (without the leading --)."""
    out = subprocess.run([broker_bin, "--help"], env=clean_env(), capture_output=True,
                         text=True, timeout=10)
    text = out.stdout + out.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9_]+)\b", text, re.M))
    # A help text that lost its flag table would make every later check vacuous.
    assert {"port", "db", "jwt_secret", "admin_token"} <= flags, \
        "`broker --help` lists no usable flag table:\n" + text
    return flags


class RunningBroker:
    def __init__(self, proc, base_url, workdir, log_path):
        self.proc = proc
        self.base_url = base_url
        self.workdir = workdir
        self.log_path = log_path

    def url(self, path):
        return self.base_url + path

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def start_broker(binary, args=(), env=None):
    """Start `binary` on a free 127.0.0.1 port with a temp store; returns a RunningBroker
    once /healthz answers 200. `args` come after ours: a flag there would win."""
    workdir = tempfile.mkdtemp(prefix="broker-ops-")
    log_path = os.path.join(workdir, "broker.log")
    port = free_port()
    cmd = [binary, "--port=%d" % port, "--bind=127.0.0.1",
           "--db=%s" % os.path.join(workdir, "db")] + list(args)
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env if env is not None else clean_env(), cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    b = RunningBroker(proc, "http://127.0.0.1:%d" % port, workdir, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(b.url("/healthz"), timeout=1).status_code == 200:
                return b
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_broker(b)
    raise AssertionError("broker did not answer /healthz within %.0f s (exit %s); command %s; log:\n%s"
                         % (STARTUP_TIMEOUT, proc.returncode, cmd, b.log()))


def stop_broker(b):
    if b.proc.poll() is None:
        b.proc.send_signal(signal.SIGTERM)
        try:
            b.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            b.proc.kill()
            b.proc.wait(STOP_GRACE)
    shutil.rmtree(b.workdir, ignore_errors=True)

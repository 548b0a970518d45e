"""Harness of the TLS tests: the black-box harness (tests/blackbox/conftest.py) loaded under a
name of its own (two files named conftest cannot both be "conftest"), plus what the TLS tests
share. Every server here is started by the tests, with its own copy of the certificate files."""

import importlib.util
import os
import shutil
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BLACKBOX = os.path.abspath(os.path.join(HERE, "..", "blackbox"))


def _load_harness():
    name = "broker_blackbox_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BLACKBOX, "conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


h = _load_harness()

# Re-exported for test_tls.py (`from conftest import ...`, as in tests/ops).
BROKER_BIN = h.BROKER_BIN
EXTERNAL_URL = h.EXTERNAL_URL
assert_error = h.assert_error
assert_ok = h.assert_ok
bearer_header = h.bearer_header
cert_sha256 = h.cert_sha256
check_clean_exit = h.check_clean_exit
free_port = h.free_port
open_socket = h.open_socket
served_cert_sha256 = h.served_cert_sha256
start_broker = h.start_broker
tls_ca = h.tls_ca
wait_healthy = h.wait_healthy

import sse_client  # noqa: E402  (on sys.path once the harness is loaded)

SSEClient = sse_client.SSEClient


def copy_pair(dest_dir, cert, key, tag="live"):
    """Copies a pair to dest_dir/<tag>.pem and <tag>.key (fresh mtimes): the files a server
    is given, so that a test may replace them without touching the CA's own."""
    c, k = os.path.join(dest_dir, tag + ".pem"), os.path.join(dest_dir, tag + ".key")
    shutil.copyfile(cert, c)
    shutil.copyfile(key, k)
    return c, k


def replace_file(path, src=None, content=None):
    """Atomically replaces `path` with a copy of `src` (or `content` bytes): written next to it
    under another name, then renamed over it (what certbot-like tools do)."""
    tmp = path + ".new"
    if src is not None:
        shutil.copyfile(src, tmp)
    else:
        with open(tmp, "wb") as f:
            f.write(content)
    os.rename(tmp, path)


def wait_for(predicate, timeout, step=0.1):
    """Polls `predicate` until it returns a true value or `timeout` seconds pass; returns the
    last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


@pytest.fixture
def tls_server(tmp_path):
    """start(**kw) -> a TLS broker serving its own copy of the CA's server pair (b.tls_cert,
    b.tls_key are the paths it was given), --http_port=0 unless given. Every server started
    is stopped (SIGTERM) at the end of the test and must exit 0."""
    started = []

    def start(cert=None, key=None, **kw):
        ca = tls_ca()
        if cert is None and key is None:
            cert, key = copy_pair(str(tmp_path), ca.server_cert, ca.server_key,
                                  tag="live%d" % len(started))
        kw.setdefault("tag", "tls%d" % len(started))
        b = start_broker(tls=True, cert=cert, key=key, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        if b not in h._ACTIVE:
            continue  # the test stopped it and checked the exit itself
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
    h.needs_own_server("the TLS tests start servers with their own certificates")

"""Certificates by ACME (RFC 8555, HTTP-01) against Debian's real Pebble, which validates every
challenge for real: it resolves the test domain through pebble-challtestsrv (127.0.0.1) and
fetches the token from the broker's own --http_port. The broker starts on a temporary
self-signed certificate, gets the real one, switches to it, and renews it on SIGUSR1 or at two
thirds of its lifetime without dropping an open stream. curl, trusting only Pebble's issuing
root, checks what the broker serves."""

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import time

import pytest

from conftest import Broker, check_clean_exit, clean_env, free_port, spawn, wait_for
from pebble_server import Pebble
from tls_client import DOMAIN, TlsStream, cert_text, curl, self_signed, served_cert_der

ISSUE_TIMEOUT = 60  # one order against a local Pebble takes about a second


def curl_verified(port, roots, path="/healthz"):
    """The status of a GET over HTTPS trusting only `roots`; None when it does not verify."""
    return curl(port, roots, path)[0]


def metric(port, name):
    """A value of the broker's /metrics (over TLS, whatever certificate it serves)."""
    p = subprocess.run(["curl", "-sSk", "--max-time", "5", "https://127.0.0.1:%d/metrics" % port],
                       capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in /metrics: %s %s" % (name, p.stdout[-3000:], p.stderr))


class AcmeBroker:
    """The all-in-one with --secure --auto_cert against a Pebble, on its own ports and --certs."""

    def __init__(self, pebble, http_port, workdir, extra=(), directory=None, tag="acme"):
        os.makedirs(workdir, exist_ok=True)
        self.port = free_port()
        self.http_port = http_port
        self.certs = os.path.join(workdir, "certs")
        args = ["--port=%d" % self.port, "--http_port=%d" % http_port, "--bind=127.0.0.1",
                "--db=%s" % os.path.join(workdir, "db"), "--certs=%s" % self.certs,
                "--secure=true", "--auto_cert=true", "--domain=%s" % DOMAIN,
                "--acme_directory=%s" % (directory or pebble.directory_url),
                "--acme_ca_file=%s" % pebble.ca_file, "--ntp_servers=",
                "--admin_token=adm-acme", "--jwt_secret=jwt-acme",
                "--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0"] + list(extra)
        self.proc, self.stderr_path = spawn(args, clean_env(), workdir, tag)
        self.api = Broker("https://127.0.0.1:%d" % self.port, "adm-acme", "jwt-acme", 86400, "*", self.proc,
                          self.stderr_path, workdir, tag)

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def served(self):
        return served_cert_der(self.port)

    def wait_issued(self, roots, previous=None, timeout=ISSUE_TIMEOUT):
        """Waits until the port serves a certificate that verifies with `roots` (and differs
        from `previous`); returns its DER."""
        def ok():
            try:
                der = self.served()
            except OSError:  # not listening yet
                return None
            if der == previous or self_signed(der):
                return None
            return der if curl_verified(self.port, roots) == 200 else None
        der = wait_for(ok, timeout, step=0.25)
        assert der, "no certificate from Pebble in %d s\nbroker stderr:\n%s" % (timeout, self.stderr())
        return der

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def env(tmp_path):
    """Pebble with HTTP-01 on a port the broker will listen on, and a starter for brokers."""
    http_port = free_port()
    pebble = Pebble(http_port=http_port, nonce_reject=20, blocked_domains=["blocked.test"]).start()
    started = []

    def start(**kw):
        b = AcmeBroker(pebble, kw.pop("http_port", http_port), str(tmp_path / ("b%d" % len(started))), **kw)
        started.append(b)
        return b

    class Env:
        pass
    e = Env()
    e.pebble, e.http_port, e.start = pebble, http_port, start
    try:
        yield e
    finally:
        codes = []
        for b in started:
            crashed = b.proc.poll() is not None
            codes.append((b, crashed, b.stop()))
        pebble.cleanup()
        for b, crashed, code in codes:
            if crashed and code != 0 and b.proc.returncode is not None and not getattr(b, "stopped_by_test", False):
                pytest.fail("broker exited during the test (exit %r):\n%s" % (code, b.stderr()))
            check_clean_exit(b.api, code)


def test_starts_self_signed_then_serves_the_certificate_pebble_issued(env):
    b = env.start()
    assert wait_for(lambda: os.path.exists(b.stderr_path) and "temporary self-signed" in b.stderr(), 10), b.stderr()
    roots = env.pebble.issuing_roots_pem()
    der = b.wait_issued(roots)
    text = cert_text(der)
    assert "DNS:%s" % DOMAIN in text, text
    # The files: the account key and the certificate's key private, the chain readable.
    for name, mode in (("account_key.pem", 0o600), ("private_key.pem", 0o600), ("chain.pem", 0o644)):
        st = os.stat(os.path.join(b.certs, name))
        assert stat.S_IMODE(st.st_mode) == mode, (name, oct(st.st_mode))
    # The API works through the new certificate, verified (login and a stream).
    assert curl_verified(b.port, roots, "/readyz") == 200
    # The plain port: challenges only (an unknown token is a 404), everything else 308.
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                        "http://127.0.0.1:%d/.well-known/acme-challenge/nope" % b.http_port],
                       capture_output=True, text=True)
    assert r.stdout == "404"
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                        "-H", "Host: %s" % DOMAIN, "http://127.0.0.1:%d/healthz" % b.http_port],
                       capture_output=True, text=True)
    assert r.stdout.startswith("308 https://%s:%d/healthz" % (DOMAIN, b.port)), r.stdout
    assert "ACME: new certificate for broker.test" in b.stderr()
    assert metric(b.port, 'broker_acme_orders_total{result="ok"}') == 1
    assert metric(b.port, "broker_certificate_expiry_timestamp_seconds") > time.time() + 86400


def _insert(b, roots, token, event, data):
    status, text = curl(b.port, roots, "/insert", body={"event": event, "data": data}, token=token)
    assert status == 200 and '"id"' in text, (status, text)


def _login(b, roots):
    user = "u%d" % int(time.time() * 1000)
    status, text = curl(b.port, roots, "/create_user", body={"admin_token": "adm-acme", "username": user,
                                                            "password": "pw-123456", "tenant_name": "t-" + user})
    assert status == 200, text
    status, text = curl(b.port, roots, "/login", body={"username": user, "password": "pw-123456"})
    assert status == 200, text
    return json.loads(text)["jwt"]


def test_forced_renewal_swaps_the_certificate_under_an_open_stream(env):
    b = env.start()
    roots = env.pebble.issuing_roots_pem()
    first = b.wait_issued(roots)
    with open(os.path.join(b.certs, "account_key.pem"), "rb") as f:
        account = f.read()
    with open(os.path.join(b.certs, "private_key.pem"), "rb") as f:
        key = f.read()
    token = _login(b, roots)
    stream = TlsStream(b.port, roots, token)
    try:
        _insert(b, roots, token, "before", "one")
        assert stream.wait_data('"one"'), stream.buf[-2000:]
        b.proc.send_signal(signal.SIGUSR1)
        second = b.wait_issued(roots, previous=first)
        assert second != first
        # The stream opened on the old certificate goes on and gets what comes next.
        _insert(b, roots, token, "after", "two")
        assert stream.wait_data('"two"'), stream.buf[-2000:]
    finally:
        stream.close()
    with open(os.path.join(b.certs, "account_key.pem"), "rb") as f:
        assert f.read() == account, "the account key must be kept across renewals"
    with open(os.path.join(b.certs, "private_key.pem"), "rb") as f:
        assert f.read() != key, "every order gets a fresh certificate key"
    assert "SIGUSR1: renewing the certificate now" in b.stderr()


def test_renews_by_itself_at_two_thirds_of_the_lifetime(tmp_path):
    http_port = free_port()
    with Pebble(http_port=http_port, validity_s=30) as pebble:
        b = AcmeBroker(pebble, http_port, str(tmp_path))
        try:
            roots = pebble.issuing_roots_pem()
            first = b.wait_issued(roots)
            # Valid 30 s: due after 20 s, and renewed then without being asked.
            second = b.wait_issued(roots, previous=first, timeout=45)
            assert second != first
            assert "the certificate is due for renewal" in b.stderr()
        finally:
            code = b.stop()
        check_clean_exit(b.api, code)


def test_a_restart_reuses_the_certificate_on_disk(env):
    b = env.start()
    roots = env.pebble.issuing_roots_pem()
    der = b.wait_issued(roots)
    assert b.stop() == 0
    again = AcmeBroker(env.pebble, env.http_port, os.path.dirname(b.certs), tag="again")
    try:
        assert wait_healthy_tls(again), again.stderr()
        assert again.served() == der
        assert curl_verified(again.port, roots) == 200
        time.sleep(1)
        assert "ordering a certificate" not in again.stderr()
    finally:
        code = again.stop()
    check_clean_exit(again.api, code)


def wait_healthy_tls(b, timeout=10):
    def up():
        try:
            served_cert_der(b.port, timeout=1)
            return True
        except OSError:
            return b.proc.poll() is None and False
    return wait_for(up, timeout)


def test_a_corrupt_certificate_on_disk_is_replaced(env):
    b = env.start()
    roots = env.pebble.issuing_roots_pem()
    der = b.wait_issued(roots)
    assert b.stop() == 0
    with open(os.path.join(b.certs, "chain.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    again = AcmeBroker(env.pebble, env.http_port, os.path.dirname(b.certs), tag="again")
    try:
        assert wait_healthy_tls(again), again.stderr()
        new = again.wait_issued(roots, previous=der)
        assert new != der
        err = again.stderr()
        assert "chain.pem" in err and "temporary self-signed" in err, err
        assert "is not a PEM certificate" in err, err
    finally:
        code = again.stop()
    check_clean_exit(again.api, code)


# ---------------------------------------------------------------- what goes wrong

def _serves_api_self_signed(b):
    """The broker keeps serving (on its temporary certificate) while ACME fails."""
    assert wait_healthy_tls(b), b.stderr()
    assert self_signed(b.served())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname=DOMAIN) as t:
        t.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert t.recv(100).startswith(b"HTTP/1.1 200")


def _wait_log(b, needle, timeout=ISSUE_TIMEOUT):
    assert wait_for(lambda: needle in b.stderr(), timeout), "%r not in the log:\n%s" % (needle, b.stderr())
    return b.stderr()


def test_an_unreachable_directory_is_a_clear_error_and_the_broker_serves_on(env):
    dead = free_port()
    b = env.start(directory="https://127.0.0.1:%d/dir" % dead)
    err = _wait_log(b, "ACME: could not get a certificate for broker.test")
    assert "127.0.0.1:%d" % dead in err and "trying again in 60 s" in err, err
    assert "temporary self-signed certificate is served meanwhile" in err
    _serves_api_self_signed(b)
    assert metric(b.port, 'broker_acme_orders_total{result="failed"}') >= 1
    assert metric(b.port, "broker_certificate_expiry_timestamp_seconds") == 0


def test_a_refused_order_is_a_clear_error(env):
    port = free_port()
    b = env.start(extra=["--domain=blocked.test"])
    err = _wait_log(b, "ACME: could not get a certificate for blocked.test")
    assert "rejectedIdentifier" in err, err
    _serves_api_self_signed(b)


def test_a_challenge_pebble_cannot_reach_fails_clearly(env):
    # The broker's plain port is not the one Pebble validates on: nobody answers there.
    b = env.start(http_port=free_port())
    err = _wait_log(b, "ACME: could not get a certificate for broker.test")
    assert "challenge" in err and "urn:ietf:params:acme:error:connection" in err, err
    _serves_api_self_signed(b)

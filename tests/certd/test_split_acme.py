"""Certificates by ACME in the split deployment, against Debian's real Pebble (which validates
every HTTP-01 challenge for real, fetching the token from broker-certd's own plain port).

What it proves:
  * broker-auth, broker-ingest and broker-stream, given --secure --auto_cert and the --certs
    directory broker-certd keeps, start HTTPS on a temporary self-signed certificate while there
    is none, and switch to the certificate broker-certd gets from Pebble -- told by certd's
    "ctl/cert/" control message on the bus (--bus_control), each logging the reload;
  * what every service then serves verifies against Pebble's issuing roots alone (curl), and a
    real flow goes through the split services over verified TLS: a user created and logged in on
    auth, a stream on stream, an insert on ingest that arrives on the stream;
  * a renewal (SIGUSR1 to broker-certd) reaches every service: each serves the new certificate,
    and a stream opened on the old one goes on receiving events;
  * every process exits 0 on SIGTERM (under ASan: no leak).

The services are started before broker-certd, so that their temporary certificate is seen for
sure; their bus subscription to certd connects whenever certd comes up (ZeroMQ reconnects).
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import Service, free_port, wait_for
from tls_client import DOMAIN, TlsStream, cert_text, curl, leaf_der_of, self_signed, served_cert_der
from pebble_server import Pebble

ISSUE_TIMEOUT = 60  # one order against a local Pebble takes about a second
START_TIMEOUT = 20  # until a service's TLS port answers (ASan starts slowly)
ADMIN_TOKEN = "adm-split-acme"
JWT_SECRET = "jwt-split-acme"
TLS_SERVICES = ("broker-auth", "broker-ingest", "broker-stream")
RELOADED_BY_BUS = "certd renewed the certificate: reloading it"


# ---------------------------------------------------------------- the split set

class SplitSet:
    """Pebble, broker-certd, and broker-auth, broker-ingest, broker-stream with HTTPS by
    --auto_cert, sharing one --db and one --certs."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.certs = os.path.join(workdir, "certs")
        self.db = os.path.join(workdir, "db")
        self.certd_port = free_port()
        self.certd_bus = free_port()
        self.auth_bus, self.ingest_bus = free_port(), free_port()
        self.pebble = Pebble(http_port=self.certd_port, nonce_reject=20)
        self.services = []
        self.certd = self.auth = self.ingest = self.stream = None
        self.roots = None
        self.first = None  # the first certificate from Pebble (DER)
        self.first_after_s = None
        self.certd_started_at = None

    # -- lifecycle

    def start_tls_services(self):
        common = ["--secure=true", "--auto_cert=true", "--domain=%s" % DOMAIN, "--certs=%s" % self.certs,
                  "--bus_control=tcp://127.0.0.1:%d" % self.certd_bus, "--http_port=0", "--ntp_servers=",
                  "--db=%s" % self.db, "--admin_token=%s" % ADMIN_TOKEN, "--jwt_secret=%s" % JWT_SECRET]
        self.auth = self._start("broker-auth", common + [
            "--bus_publish=tcp://127.0.0.1:%d" % self.auth_bus,
            "--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0"])
        self.ingest = self._start("broker-ingest", common + ["--bus_publish=tcp://127.0.0.1:%d" % self.ingest_bus])
        self.stream = self._start("broker-stream", common + [
            "--bus_subscribe=tcp://127.0.0.1:%d,tcp://127.0.0.1:%d" % (self.ingest_bus, self.auth_bus)])

    def start_certd(self):
        self.pebble.start()
        self.roots = self.pebble.issuing_roots_pem()
        self.certd = self._start("broker-certd", [
            "--bus_publish=tcp://127.0.0.1:%d" % self.certd_bus, "--secure=true", "--auto_cert=true",
            "--domain=%s" % DOMAIN, "--certs=%s" % self.certs, "--acme_directory=%s" % self.pebble.directory_url,
            "--acme_ca_file=%s" % self.pebble.ca_file, "--ntp_servers="], port=self.certd_port)
        self.certd_started_at = time.monotonic()

    def _start(self, name, args, port=None):
        s = Service(name, args, port=port, workdir=self.workdir)
        self.services.append(s)
        return s

    def stop(self):
        """Stops every process (the TLS services first, certd last, then Pebble): a dict
        name -> (exit code, crashed before the stop)."""
        codes = {}
        for s in sorted(self.services, key=lambda s: s is self.certd):
            crashed = not s.alive()
            codes[s.name] = (s.stop(), crashed)
        self.pebble.cleanup()
        return codes

    # -- what tests use

    @property
    def tls_services(self):
        return [self.auth, self.ingest, self.stream]

    def logs(self):
        return "\n".join("==> %s <==\n%s" % (s.name, s.stderr()[-6000:]) for s in self.services)

    def wait_serving_self_signed(self):
        """Every TLS service answers on its temporary self-signed certificate; returns their DERs."""
        ders = {}
        for s in self.tls_services:
            def up(s=s):
                if not s.alive():
                    pytest.fail("%s exited at start (%r):\n%s" % (s.name, s.proc.returncode, s.stderr()))
                try:
                    return served_cert_der(s.port)
                except OSError:
                    return None
            der = wait_for(up, START_TIMEOUT, step=0.1)
            assert der, "%s: no TLS on port %d within %d s\n%s" % (s.name, s.port, START_TIMEOUT, s.stderr())
            ders[s.name] = der
        return ders

    def wait_issued(self, previous=None, timeout=ISSUE_TIMEOUT):
        """Waits until every TLS service serves a certificate that is not self-signed, differs
        from `previous` (a DER), and verifies with Pebble's roots; returns it (the same for all)."""
        deadline = time.monotonic() + timeout
        got = {}
        for s in self.tls_services:
            def ok(s=s):
                try:
                    der = served_cert_der(s.port)
                except OSError:
                    return None
                if der == previous or self_signed(der):
                    return None
                status, _ = curl(s.port, self.roots, "/healthz")
                return der if status == 200 else None
            der = wait_for(ok, max(0.0, deadline - time.monotonic()), step=0.25)
            assert der, ("%s still serves %s after %d s\n%s\n%s"
                         % (s.name, "the old certificate" if previous else "no certificate from Pebble", timeout,
                            self.logs(), self.pebble.logs()[-4000:]))
            got[s.name] = der
        assert len(set(got.values())) == 1, "the services serve different certificates: %r" % (
            {n: cert_text(d) for n, d in got.items()})
        return next(iter(got.values()))

    def wait_log_count(self, service, needle, count, timeout=10):
        ok = wait_for(lambda: service.stderr().count(needle) >= count, timeout)
        assert ok, "%s: %r %d time(s) expected in its log:\n%s" % (service.name, needle, count, service.stderr())

    # -- the API, over verified TLS

    def login(self):
        user = "u%d" % int(time.time() * 1000)
        status, text = curl(self.auth.port, self.roots, "/create_user",
                            {"admin_token": ADMIN_TOKEN, "username": user, "password": "pw-123456",
                             "tenant_name": "t-" + user})
        assert status == 200, (status, text)
        status, text = curl(self.auth.port, self.roots, "/login", {"username": user, "password": "pw-123456"})
        assert status == 200, (status, text)
        return json.loads(text)["jwt"]

    def insert(self, token, event, data):
        status, text = curl(self.ingest.port, self.roots, "/insert", {"event": event, "data": data}, token=token)
        assert status == 200 and '"id"' in text, (status, text)

    def open_stream(self, token):
        st = TlsStream(self.stream.port, self.roots, token)
        assert st.wait_data("\r\n\r\n"), "no answer to GET /sse: %r" % st.buf[-2000:]
        assert st.buf.startswith(b"HTTP/1.1 200"), st.buf[:500]
        return st


@pytest.fixture
def split(tmp_path):
    """A split set whose TLS services serve the first certificate broker-certd got from
    Pebble (having served a temporary self-signed one before). At the end every process is
    stopped; none may have died during the test, and each must exit 0 on SIGTERM."""
    s = SplitSet(str(tmp_path))
    codes = None
    try:
        s.start_tls_services()
        temporary = s.wait_serving_self_signed()
        for svc in s.tls_services:
            assert self_signed(temporary[svc.name]), (svc.name, cert_text(temporary[svc.name]))
            assert "DNS:%s" % DOMAIN in cert_text(temporary[svc.name])
            assert "temporary self-signed certificate for %s" % DOMAIN in svc.stderr(), svc.stderr()
            assert "following certd's control messages on tcp://127.0.0.1:%d" % s.certd_bus in svc.stderr()
        s.start_certd()
        s.first = s.wait_issued()
        s.first_after_s = time.monotonic() - s.certd_started_at
        yield s
    finally:
        codes = s.stop()
    failures = ["%s exited %r%s" % (name, code, " (before the end of the test)" if crashed else "")
                for name, (code, crashed) in codes.items() if crashed or code != 0]
    if failures:
        pytest.fail("%s\n%s" % ("; ".join(failures), s.logs()))


def _reload_lines(svc):
    return re.findall(r"TLS: certificate \S+ reloaded \(([^)]*)\)", svc.stderr())


# ---------------------------------------------------------------- tests

def test_split_services_pick_up_the_certificate_certd_gets(split):
    s = split
    text = cert_text(s.first)
    assert "DNS:%s" % DOMAIN in text, text
    # What they serve is what certd wrote, and certd says where.
    assert leaf_der_of(os.path.join(s.certs, "chain.pem")) == s.first
    s.wait_log_count(s.certd, "ACME: new certificate for %s in %s/chain.pem" % (DOMAIN, s.certs), 1)
    # Each service was told by certd's bus message and reloaded its listener.
    for svc in s.tls_services:
        s.wait_log_count(svc, RELOADED_BY_BUS, 1)
        assert _reload_lines(svc), svc.stderr()
        assert "TLS: not reloaded" not in svc.stderr(), svc.stderr()
    # certd's own port stays plain HTTP: health, and the challenge route (an unknown token: 404).
    for path, want in (("/healthz", "200"), ("/readyz", "200"), ("/.well-known/acme-challenge/nope", "404")):
        r = subprocess.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}",
                            "http://127.0.0.1:%d%s" % (s.certd_port, path)], capture_output=True, text=True)
        assert r.stdout == want, (path, r.stdout, r.stderr)
    # A real flow through the split services, every hop verified against Pebble's roots.
    for svc in s.tls_services:
        assert curl(svc.port, s.roots, "/readyz")[0] == 200, svc.name
    token = s.login()
    stream = s.open_stream(token)
    try:
        assert stream.peer_der == s.first
        s.insert(token, "hello", {"n": 1})
        assert stream.wait_data('"n":1'), stream.buf[-2000:]
        assert b"event: hello" in stream.buf, stream.buf[-2000:]
    finally:
        stream.close()
    print("first certificate served by all three services %.1f s after broker-certd started" % s.first_after_s)


def test_a_renewal_by_certd_reaches_every_service_under_an_open_stream(split):
    s = split
    for svc in s.tls_services:
        s.wait_log_count(svc, RELOADED_BY_BUS, 1)
    token = s.login()
    stream = s.open_stream(token)
    try:
        assert stream.peer_der == s.first
        s.insert(token, "before", "one")
        assert stream.wait_data('"one"'), stream.buf[-2000:]
        with open(os.path.join(s.certs, "private_key.pem"), "rb") as f:
            key = f.read()
        asked = time.monotonic()
        s.certd.proc.send_signal(signal.SIGUSR1)
        second = s.wait_issued(previous=s.first)
        took = time.monotonic() - asked
        assert second != s.first and not self_signed(second)
        assert leaf_der_of(os.path.join(s.certs, "chain.pem")) == second
        with open(os.path.join(s.certs, "private_key.pem"), "rb") as f:
            assert f.read() != key, "every order gets a fresh certificate key"
        s.wait_log_count(s.certd, "SIGUSR1: renewing the certificate now", 1)
        s.wait_log_count(s.certd, "ACME: new certificate for %s" % DOMAIN, 2)
        for svc in s.tls_services:
            s.wait_log_count(svc, RELOADED_BY_BUS, 2)
            assert len(_reload_lines(svc)) >= 2, svc.stderr()
            assert "TLS: not reloaded" not in svc.stderr(), svc.stderr()
        # The stream opened on the old certificate goes on and gets what comes next.
        s.insert(token, "after", "two")
        assert stream.wait_data('"two"'), stream.buf[-2000:]
        # And a new stream, on the new certificate, works too.
        fresh = s.open_stream(token)
        try:
            assert fresh.peer_der == second
            s.insert(token, "again", "three")
            assert fresh.wait_data('"three"'), fresh.buf[-2000:]
            assert stream.wait_data('"three"'), stream.buf[-2000:]
        finally:
            fresh.close()
    finally:
        stream.close()
    print("renewed certificate served by all three services %.1f s after SIGUSR1" % took)

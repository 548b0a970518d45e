"""The compose deployment in HTTPS mode (docker-compose.yml + deploy/compose.offline.yml +
deploy/compose.tls.yml), with a real ACME server: Pebble on the compose network
(tests/compose/compose.pebble.yml), which validates HTTP-01 by fetching the challenge from the
gateway under the name broker.test, as Let's Encrypt fetches it through port 80. A deployment of
its own, unscaled, brought up by this module and taken down after it.

What is proven: the gateway serves, on its published HTTPS port, a certificate for broker.test
that verifies against Pebble's roots only (certd ordered it and the gateway loaded it); the whole
flow (user, login, stream, insert) works over it; the plain port answers the challenge path
through certd (404 for an unknown token) and redirects everything else to https on the published
port; a renewal (SIGUSR1 to certd) reaches the gateway, and a stream opened before it keeps
receiving."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import json
import ssl

import pytest
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "certd"))

from deployment import FILES, ROOT, Deployment, free_port  # noqa: E402
from pebble_server import make_directory_tls  # noqa: E402
from tls_client import DOMAIN, TlsStream, curl, served_cert_der  # noqa: E402

pytestmark = pytest.mark.skipif(not os.environ.get("BROKER_COMPOSE_ENV"),
                                reason="BROKER_COMPOSE_ENV is not set (tests/run_all.sh sets it)")

PEBBLE_IMAGE = "broker-test-pebble:latest"
CERT_TIMEOUT = 90  # certd's first order: Pebble answers in seconds; the rest is headroom


def build_pebble_image():
    """broker-test-pebble from the host's Debian Pebble, on the base `make images` made."""
    pebble = shutil.which("pebble")
    assert pebble, "pebble is not installed (scripts/deps.sh test installs it)"
    ctx = tempfile.mkdtemp(prefix="pebble-image-")
    try:
        shutil.copy(os.path.join(HERE, "pebble", "Dockerfile"), ctx)
        shutil.copy(pebble, os.path.join(ctx, "pebble"))
        p = subprocess.run(["docker", "build", "-q", "-t", PEBBLE_IMAGE, ctx], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, DOCKER_BUILDKIT="0"))
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def pebble_dir(path):
    """Pebble's configuration and its directory's certificate (for the name `pebble`), readable
    by the containers' users."""
    os.makedirs(path, exist_ok=True)
    make_directory_tls(path, san="DNS:pebble,IP:127.0.0.1")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"pebble": {
            "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/pebble/dir.pem", "privateKey": "/pebble/dir.key",
            "httpPort": 8080, "tlsPort": 8443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}, f)
    os.chmod(path, 0o755)
    for name in os.listdir(path):
        os.chmod(os.path.join(path, name), 0o644)  # a throwaway test CA
    return path


class TlsDeployment:
    def __init__(self, workdir):
        self.workdir = workdir
        self.pebble = pebble_dir(os.path.join(workdir, "pebble"))
        self.https_port, self.http_port, self.mgmt_port = free_port(), free_port(), free_port()
        self.dep = Deployment(
            "brokertls" + uuid.uuid4().hex[:8], free_port(), "adm-" + uuid.uuid4().hex, "jwt-" + uuid.uuid4().hex,
            files=FILES + [os.path.join(ROOT, "deploy", "compose.tls.yml"), os.path.join(HERE, "compose.pebble.yml")],
            scale={},
            extra_env={"BROKER_DOMAIN": DOMAIN, "BROKER_HTTPS_PORT": str(self.https_port),
                       "BROKER_HTTP_PORT": str(self.http_port), "BROKER_TEST_PEBBLE_DIR": self.pebble,
                       "BROKER_TEST_PEBBLE_MGMT_PORT": str(self.mgmt_port)})

    def management_get(self, path):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pebble, "dir-ca.pem"))
        with urllib.request.urlopen("https://127.0.0.1:%d%s" % (self.mgmt_port, path), context=ctx,
                                    timeout=10) as r:
            return r.read().decode()

    def roots(self):
        """Pebble's issuing root and intermediate: what a client of the deployment trusts."""
        path = os.path.join(self.workdir, "issuing-roots.pem")
        with open(path, "w") as f:
            f.write(self.management_get("/roots/0").rstrip("\n") + "\n" +
                    self.management_get("/intermediates/0").rstrip("\n") + "\n")
        return path

    def wait_verified(self, roots, other_than=None, timeout=CERT_TIMEOUT):
        """The DER of the certificate the HTTPS port serves once it verifies against `roots`
        (and differs from `other_than`)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, text = curl(self.https_port, roots, "/healthz")
            if status == 200:
                der = served_cert_der(self.https_port)
                if der != other_than:
                    return der
            last = text
            time.sleep(1)
        logs = self.dep.compose("logs", "--tail=30", "certd", "gateway", "pebble", check=False).stdout
        raise AssertionError("no verified certificate on the HTTPS port in %d s (last: %s)\n%s"
                             % (timeout, last, logs[-6000:]))


@pytest.fixture(scope="module")
def tls():
    build_pebble_image()
    workdir = tempfile.mkdtemp(prefix="compose-tls-")
    t = TlsDeployment(workdir)
    try:
        t.dep.make_secrets()
        t.dep.up()
        yield t
    finally:
        t.dep.down()
        shutil.rmtree(workdir, ignore_errors=True)


def test_https_with_a_certificate_from_the_acme_server_and_the_whole_flow_over_it(tls):
    roots = tls.roots()
    tls.wait_verified(roots)
    user, pw = "u" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex[:12]
    status, text = curl(tls.https_port, roots, "/create_user", body={
        "admin_token": tls.dep.admin_token, "username": user, "password": pw, "tenant_name": "t" + user})
    assert status == 200, text
    status, text = curl(tls.https_port, roots, "/login", body={"username": user, "password": pw})
    assert status == 200, text
    jwt = json.loads(text)["jwt"]
    stream = TlsStream(tls.https_port, roots, jwt)
    try:
        assert stream.wait_data("HTTP/1.1 200", 10), stream.buf[:300]
        status, text = curl(tls.https_port, roots, "/insert", body={"event": "over-https", "data": {"n": 1}},
                            token=jwt)
        assert status == 200, text
        assert stream.wait_data("over-https", 10), stream.buf[-500:]
    finally:
        stream.close()


def test_the_plain_port_answers_challenges_and_redirects_the_rest(tls):
    r = requests.get("http://127.0.0.1:%d/healthz?x=1" % tls.http_port, headers={"Host": DOMAIN},
                     allow_redirects=False, timeout=10)
    assert r.status_code == 308, (r.status_code, r.text[:200])
    assert r.headers["Location"] == "https://%s:%d/healthz?x=1" % (DOMAIN, tls.https_port), r.headers
    r = requests.get("http://127.0.0.1:%d/.well-known/acme-challenge/no-such-token" % tls.http_port,
                     headers={"Host": DOMAIN}, allow_redirects=False, timeout=10)
    assert r.status_code == 404, (r.status_code, r.text[:200])


def test_a_renewal_reaches_the_gateway_and_an_open_stream_keeps_receiving(tls):
    roots = tls.roots()
    before = tls.wait_verified(roots)
    user, pw = "u" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex[:12]
    assert curl(tls.https_port, roots, "/create_user", body={
        "admin_token": tls.dep.admin_token, "username": user, "password": pw, "tenant_name": "t" + user})[0] == 200
    status, text = curl(tls.https_port, roots, "/login", body={"username": user, "password": pw})
    jwt = json.loads(text)["jwt"]
    stream = TlsStream(tls.https_port, roots, jwt)
    try:
        assert stream.wait_data("HTTP/1.1 200", 10)
        certd = tls.dep.containers("certd")[0]
        subprocess.run(["docker", "kill", "-s", "USR1", certd], check=True, capture_output=True, timeout=60)
        after = tls.wait_verified(roots, other_than=before)
        assert after != before
        assert stream.peer_der == before  # the stream is still on the connection made before
        status, text = curl(tls.https_port, roots, "/insert", body={"event": "after-renewal", "data": {}}, token=jwt)
        assert status == 200, text
        assert stream.wait_data("after-renewal", 10), stream.buf[-500:]
    finally:
        stream.close()

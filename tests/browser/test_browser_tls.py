"""A real browser (Debian's chromium, headless) against a broker serving HTTPS itself
(--secure=true --auto_cert=false, a certificate of the test CA of tests/blackbox/conftest.py):
the page of test_browser.py (page.html) logs in with fetch, opens an EventSource over https://
and must receive the live insert of another user of its tenant (and not another tenant's).

Trust: chromium is given --ignore-certificate-errors-spki-list=<base64 SHA-256 of the server
certificate's SubjectPublicKeyInfo>. Chosen over an NSS database because it needs no certutil
(libnss3-tools is not among the test dependencies) and no $HOME/.pki/nssdb shared with every
other chromium run on the machine: the trust is scoped to this one process and this one key.
It is still a real check: chromium accepts the certificate only when the server proves it holds
that exact key in the handshake; any other key is refused. The second test shows the refusal:
the same page without the flag gets nothing. Starts its own broker (BROKER_BIN, default
build/broker); needs chromium."""
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BLACKBOX = os.path.abspath(os.path.join(HERE, "..", "blackbox"))
CHROMIUM = shutil.which("chromium")

pytestmark = [pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed")]


def _harness():
    """tests/blackbox/conftest.py under a name of its own (this folder has no conftest)."""
    name = "broker_blackbox_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BLACKBOX, "conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


h = _harness()


@pytest.fixture(scope="module")
def tls_broker():
    b = h.start_broker(tls=True, tag="browser-tls")
    yield b
    crashed = not b.alive()
    code = b.stop()
    assert not crashed, "the broker exited during the browser test (exit %r):\n%s" % (code, b.stderr_tail())
    h.check_clean_exit(b, code)
    if os.environ.get("BROKER_TEST_KEEP") != "1":
        for d in h._WORKDIRS:
            shutil.rmtree(d, ignore_errors=True)


def user(b, tenant):
    return b.create_user(username="b-" + uuid.uuid4().hex[:10], password="browserpass", tenant_name=tenant)


def run_page(b, pin, users):
    (u1, u2, u3) = users
    page = os.path.join(HERE, "page.html")
    query = urllib.parse.urlencode({"base": b.base_url, "user": u1.username, "pass": u1.password,
                                    "user2": u2.username, "pass2": u2.password,
                                    "user3": u3.username, "pass3": u3.password})
    profile = tempfile.mkdtemp(prefix="broker-chromium-tls-")
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--user-data-dir=" + profile, "--virtual-time-budget=15000"]
    if pin:
        args.append("--ignore-certificate-errors-spki-list=" + h.spki_sha256_b64(b.tls_cert))
    try:
        out = subprocess.run(args + ["--dump-dom", "file://" + page + "?" + query],
                             capture_output=True, text=True, timeout=90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    m = re.search(r'<div id="result">(.*?)</div>', out.stdout, re.S)
    assert m, "no result in the page:\n" + out.stdout[-2000:] + out.stderr[-2000:]
    return html.unescape(m.group(1)), out


def test_browser_eventsource_over_https(tls_broker):
    b = tls_broker
    assert b.base_url.startswith("https://")
    tenant = "webtls" + uuid.uuid4().hex[:6]
    users = (user(b, tenant), user(b, tenant), user(b, tenant + "x"))
    # An event before the page opens: it arrives as the snapshot.
    r = b.post("/insert", {"event": "hello", "data": {"n": 1}}, auth=(users[1].username, users[1].password))
    assert r.status_code == 200, r.text
    result, out = run_page(b, True, users)
    assert result.startswith("ok "), "%s\n%s\n%s\nbroker stderr:\n%s" % (
        result, out.stdout[-2000:], out.stderr[-2000:], b.stderr_tail(3000))
    seen = json.loads(result[3:])
    names = [s[0] for s in seen]
    assert names[0] == "hello" and seen[0][2] == {"n": 1}, seen
    assert "secret" not in names, seen
    chat = [s for s in seen if s[0] == "chat"]
    assert chat and chat[0][2] == {"text": "hé from a browser"}, seen
    assert int(chat[0][1]) > int(seen[0][1])


def test_browser_refuses_the_certificate_without_the_pin(tls_broker):
    """Without the flag the test CA is unknown to chromium: nothing works (so the first test's
    success is the pinned key's doing, over real TLS)."""
    b = tls_broker
    tenant = "webtls" + uuid.uuid4().hex[:6]
    users = (user(b, tenant), user(b, tenant), user(b, tenant + "x"))
    result, out = run_page(b, False, users)
    assert not result.startswith("ok "), "chromium accepted the test CA's certificate without the pin: " + result
    assert result.startswith("exception") or result == "pending", result

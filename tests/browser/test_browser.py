"""A real browser (Debian's chromium, headless) against the running broker:
log in with fetch, open an EventSource with ?access_token=, and receive the
live insert of another user of the same tenant, but not another tenant's.

Needs BROKER_BROWSER_BASE (the server's base URL: the all-in-one, or the
split deployment's gateway) and BROKER_BROWSER_ADMIN_TOKEN."""
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid

import pytest
import requests

BASE = os.environ.get("BROKER_BROWSER_BASE")
ADMIN = os.environ.get("BROKER_BROWSER_ADMIN_TOKEN", "letmein")
CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.skipif(not BASE, reason="BROKER_BROWSER_BASE is not set"),
    pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed"),
]


def user(tenant):
    name = "b-" + uuid.uuid4().hex[:10]
    r = requests.post(BASE + "/create_user", json={"username": name, "password": "browserpass",
                                                   "admin_token": ADMIN, "tenant_name": tenant}, timeout=10)
    assert r.status_code == 200, r.text
    return name, "browserpass"


def test_browser_sees_live_inserts_of_its_tenant_only():
    tenant = "web" + uuid.uuid4().hex[:6]
    u1, p1 = user(tenant)
    u2, p2 = user(tenant)
    u3, p3 = user(tenant + "x")  # prefix-named other tenant
    # An event before the page opens: it arrives as the snapshot.
    r = requests.post(BASE + "/insert", json={"event": "hello", "data": {"n": 1}}, auth=(u2, p2), timeout=10)
    assert r.status_code == 200
    page = os.path.join(os.path.dirname(__file__), "page.html")
    query = urllib.parse.urlencode({"base": BASE, "user": u1, "pass": p1, "user2": u2, "pass2": p2,
                                    "user3": u3, "pass3": p3})
    profile = tempfile.mkdtemp(prefix="broker-chromium-")
    try:
        out = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--user-data-dir=" + profile, "--virtual-time-budget=15000",
                              "--dump-dom", "file://" + page + "?" + query],
                             capture_output=True, text=True, timeout=90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    m = re.search(r'<div id="result">(.*?)</div>', out.stdout, re.S)
    assert m, "no result in the page:\n" + out.stdout[-2000:] + out.stderr[-2000:]
    result = html.unescape(m.group(1))
    assert result.startswith("ok "), result + "\n" + out.stdout[-2000:]
    seen = json.loads(result[3:])
    names = [s[0] for s in seen]
    assert names[0] == "hello" and seen[0][2] == {"n": 1}, seen
    assert "secret" not in names, seen
    chat = [s for s in seen if s[0] == "chat"]
    assert chat and chat[0][2] == {"text": "hé from a browser"}, seen
    assert int(chat[0][1]) > int(seen[0][1])

"""The web console (services/auth/console/, served by the broker at /console/) in a real
browser: headless Debian chromium driven by selenium.

Each test starts what it needs: a real broker on a free 127.0.0.1 port with a temporary store
and its own admin token and JWT secret, and a fresh browser. The page is driven as a person
would (typing, clicking), while Python prepares and checks the other side through the HTTP
API: events inserted by another user of the tenant, another tenant's events that must never
show, the users the admin panel changed, a stream of another user held open for the
who-is-online panel. Screenshots (desktop, phone, and the page of any
failed test) are kept in build/test-artifacts/console/.

Environment:
  BROKER_BIN         the broker to start (default: <repo>/build/broker)
  CONSOLE_DEV_PROXY  1: load the console from tests/console/devserver.py, which serves the
                     files of the work tree in front of the same broker, instead of the
                     broker's /console/ (files compiled in at build time). For editing the
                     page without a rebuild; test_console_files_are_served still checks the
                     broker's own serving.
  CHROMIUM, CHROMEDRIVER  browser and driver (default: /usr/bin/chromium, /usr/bin/chromedriver)

Needs the Debian packages chromium, chromium-driver, python3-selenium, python3-requests.
"""
import base64
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed")
from selenium.common.exceptions import (NoSuchElementException,  # noqa: E402
                                        StaleElementReferenceException, TimeoutException)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BROKER_BIN = os.environ.get("BROKER_BIN", str(ROOT / "build" / "broker"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
DEV_PROXY = os.environ.get("CONSOLE_DEV_PROXY") == "1"
ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"

HTTP_TIMEOUT = 10      # every request from Python
START_TIMEOUT = 20     # a broker or the dev proxy must answer within this
WAIT = 20              # what the page must show within this, seconds
PASSWORD = "console-pass-1"

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} not found (Debian package chromium)"),
    pytest.mark.skipif(not os.access(CHROMEDRIVER, os.X_OK),
                       reason=f"{CHROMEDRIVER} not found (Debian package chromium-driver)"),
]


# ---------------------------------------------------------------- servers

def free_port():
    # Below the kernel's ephemeral range, where the outgoing connections of other tests live.
    for _ in range(200):
        port = random.randrange(10000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port found")


def wait_http(url, proc, log_path, what):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{Path(log_path).read_text(errors='replace')[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT} s")


def stop_process(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Broker:
    """A broker of our own: temp store, own admin token and JWT secret, 127.0.0.1."""

    def __init__(self, *flags):
        self.dir = tempfile.mkdtemp(prefix="broker-console-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = "admin-" + secrets.token_hex(8)
        self.log_path = os.path.join(self.dir, "broker.log")
        os.mkdir(os.path.join(self.dir, "db"))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BROKER_BIN, f"--port={self.port}", "--bind=127.0.0.1", f"--db={self.dir}/db",
             f"--admin_token={self.admin}", f"--jwt_secret={secrets.token_hex(32)}", "--keepalive=2",
             *flags],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_http(self.base + "/healthz", self.proc, self.log_path, "the broker")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def post(self, path, body, **kw):
        return requests.post(self.base + path, json=body, timeout=HTTP_TIMEOUT, **kw)

    def admin_post(self, path, **fields):
        return self.post(path, dict(fields, admin_token=self.admin))

    def user(self, tenant, **extra):
        name = "u" + uuid.uuid4().hex[:10]
        r = self.admin_post("/create_user", username=name, password=PASSWORD, tenant_name=tenant, **extra)
        assert r.status_code == 200, r.text
        return name

    def insert(self, username, event, data):
        r = self.post("/insert", {"event": event, "data": data}, auth=(username, PASSWORD))
        assert r.status_code == 200, r.text
        return r.json()["id"]

    def open_stream(self, username):
        """A GET /sse of `username` held open on a plain socket (its answer's head read):
        the user is online until the socket is closed."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=HTTP_TIMEOUT)
        cred = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
        sock.sendall(f"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {cred}\r\n"
                     "Accept: text/event-stream\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            sock.close()
            raise AssertionError(f"GET /sse as {username}: {head[:300]!r}")
        return sock


def tenant():
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def broker():
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail(f"no broker binary at {BROKER_BIN} (set BROKER_BIN)")
    b = Broker()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def console_url(broker):
    """Where the browser loads the console: the broker's /console/, or the dev proxy."""
    if not DEV_PROXY:
        yield broker.base + "/console/"
        return
    port = free_port()
    log_path = os.path.join(broker.dir, "devserver.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("devserver.py")),
                                 "--broker", broker.base, "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/console/"
        wait_http(url, proc, log_path, "the dev proxy")
        yield url
    finally:
        stop_process(proc)


# ---------------------------------------------------------------- browser

@pytest.fixture
def browser(request):
    """open(width, height, mobile) -> a fresh headless chromium showing that viewport.
    Every browser opened is quit at the end, a failed test's page kept as a screenshot."""
    opened = []

    def open_browser(width=1280, height=1000, mobile=False):
        profile = tempfile.mkdtemp(prefix="console-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                    f"--window-size={width},{height}"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        except BaseException:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        opened.append((driver, profile))
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        set_viewport(driver, width, height, mobile)
        return driver

    yield open_browser
    rep = getattr(request.node, "rep_call", None)
    for i, (driver, profile) in enumerate(opened):
        if rep is not None and rep.failed:
            try:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(ARTIFACTS / f"FAILED-{request.node.name}-{i}.png"))
            except Exception:
                pass
        try:
            driver.quit()
        except Exception:
            pass
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver, width, height, mobile=False):
    # The window size of headless chromium includes no browser chrome, but emulating the
    # metrics makes the layout viewport exact and, for a phone, turns on mobile rendering.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def screenshot(driver, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 1000, f"{path} is nearly empty"
    return path


def wait_until(driver, check, what, timeout=WAIT):
    """Polls check(driver) until it returns something truthy; fails naming what was awaited."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(check)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {timeout} s; it shows:\n"
                             + page_state_text(driver)) from None


def page_state_text(driver):
    try:
        return json.dumps(state(driver), indent=1, ensure_ascii=False)[:4000]
    except Exception as e:  # the page may be gone: say so rather than hide the first failure
        return f"(could not read the page: {e})"


# One read of everything the tests look at, in one script: no element goes stale between reads.
STATE_JS = """
const rows = (sel) => [...document.querySelectorAll(sel)].map((r) => ({
  name: r.dataset.eventName, id: r.dataset.eventId,
  data: (r.querySelector("pre.data") || {}).textContent}));
const text = (id) => document.getElementById(id).textContent;
const visible = (id) => { const e = document.getElementById(id); return !!(e && e.offsetParent); };
return {
  ready: document.body.dataset.ready === "true",
  conn: document.getElementById("conn").dataset.state,
  connState: text("conn-state"), connDetail: text("conn-detail"),
  whoami: text("whoami"), loginVisible: visible("login"), appVisible: visible("app"),
  loginError: text("login-error"),
  latest: rows("#latest-body tr"), feed: rows("#feed-list li"),
  feedPaused: visible("feed-paused") ? text("feed-paused") : null,
  insertResult: text("insert-result"),
  insertStatus: document.getElementById("insert-result").dataset.status || "",
  insertId: document.getElementById("insert-result").dataset.id || null,
  jsonError: text("insert-json-error"),
  adminBody: visible("admin-body"), adminError: text("admin-error"),
  adminMessage: text("admin-message"),
  adminStatus: document.getElementById("admin-message").dataset.status || "",
  users: [...document.querySelectorAll("#users-body tr[data-username]")].map((r) => ({
    username: r.dataset.username, revoked: r.dataset.revoked,
    tenant: r.querySelector('[data-test="tenant"]').textContent,
    email: r.querySelector('[data-test="email"]').textContent,
    state: r.querySelector('[data-test="state"]').textContent})),
  jwtStored: sessionStorage.getItem("broker-console.jwt") !== null,
  filterState: text("filter-state"), filterError: text("filter-error"),
  online: [...document.querySelectorAll("#online-list li")].map((r) => ({
    username: r.dataset.username, connections: Number(r.dataset.connections),
    text: r.textContent})),
  onlineEmpty: visible("online-empty") ? text("online-empty") : null,
};
"""


def state(driver):
    return driver.execute_script(STATE_JS)


def parsed(row):
    return json.loads(row["data"])


def by_name(rows, name):
    found = [r for r in rows if r["name"] == name]
    return found[0] if found else None


def type_into(driver, element_id, text):
    e = driver.find_element(By.ID, element_id)
    e.clear()
    e.send_keys(text)


def open_console(driver, url):
    driver.get(url)
    wait_until(driver, lambda d: state(d)["ready"], "the console ready (console.js loaded and run)")


def login(driver, url, username):
    open_console(driver, url)
    login_here(driver, username)


def login_here(driver, username):
    wait_until(driver, lambda d: state(d)["loginVisible"], "the login form")
    type_into(driver, "login-username", username)
    type_into(driver, "login-password", PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(driver, lambda d: state(d)["conn"] == "live", "the stream live after logging in")
    wait_until(driver, lambda d: username in state(d)["whoami"], "who is logged in")


def insert_from_page(driver, name, data_text):
    type_into(driver, "insert-name", name)
    type_into(driver, "insert-data", data_text)
    driver.find_element(By.ID, "insert-submit").click()


def no_horizontal_overflow(driver):
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")


def assert_clean_console_log(driver):
    """No script error and no Content-Security-Policy refusal in the browser's log. Failed
    requests (the 401s the tests provoke on purpose) are logged too and are not errors here."""
    bad = [e["message"] for e in driver.get_log("browser")
           if any(word in e["message"] for word in
                  ("Content Security Policy", "Refused to", "Uncaught", "SyntaxError", "TypeError",
                   "ReferenceError", "is not defined", "Failed to load module"))]
    assert not bad, "the browser logged errors:\n" + "\n".join(bad)


# ---------------------------------------------------------------- tests

def test_console_files_are_served(broker):
    """The broker itself serves the console: redirect, types, CSP, the files of this tree."""
    r = requests.get(broker.base + "/console", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 308, (r.status_code, r.text[:200])
    assert r.headers["Location"].endswith("/console/"), r.headers
    files = {
        "": ("services/auth/console/index.html", "text/html"),
        "console.js": ("services/auth/console/console.js", "text/javascript"),
        "console.css": ("services/auth/console/console.css", "text/css"),
        "broker-client.js": ("clients/js/broker-client.js", "text/javascript"),
    }
    for name, (source, ctype) in files.items():
        r = requests.get(broker.base + "/console/" + name, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        # A module script with any other type is refused by the browser.
        assert r.headers.get("Content-Type", "").split(";")[0].strip() == ctype, (name, r.headers)
        assert r.content == (ROOT / source).read_bytes(), \
            f"/console/{name} differs from {source}: is {BROKER_BIN} built from this tree?"
    csp = requests.get(broker.base + "/console/", timeout=HTTP_TIMEOUT).headers.get("Content-Security-Policy", "")
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"):
        assert directive in csp, (directive, csp)
    assert "unsafe" not in csp, csp
    r = requests.get(broker.base + "/console/no-such-file.js", timeout=HTTP_TIMEOUT)
    assert r.status_code == 404, (r.status_code, r.text[:200])


def test_login_latest_insert_feed_and_tenant_isolation(broker, console_url, browser):
    t = tenant()
    me, other = broker.user(t), broker.user(t)
    stranger = broker.user(t + "x")  # a tenant whose name starts with ours
    # Before the page opens: the table must show the latest of each name (counter: the 2nd).
    greeting_id = broker.insert(other, "greeting", {"text": "<b>hi</b> & bye", "img": "<img src=x>"})
    broker.insert(other, "counter", {"n": 1})
    counter_id = broker.insert(other, "counter", {"n": 2})
    odd_name = "x<i>y</i>"
    odd_id = broker.insert(other, odd_name, None)
    broker.insert(stranger, "secret", {"never": "shown"})

    d = browser()
    login(d, console_url, me)
    s = wait_until(d, lambda d: len(state(d)["latest"]) == 3 and state(d), "the three latest events")
    assert t in s["whoami"], s["whoami"]
    latest = s["latest"]
    assert [r["name"] for r in latest] == sorted([r["name"] for r in latest]), latest
    assert by_name(latest, "counter")["id"] == counter_id and parsed(by_name(latest, "counter")) == {"n": 2}, latest
    greeting = by_name(latest, "greeting")
    assert greeting["id"] == greeting_id and parsed(greeting) == {"text": "<b>hi</b> & bye", "img": "<img src=x>"}
    assert by_name(latest, odd_name)["id"] == odd_id and parsed(by_name(latest, odd_name)) is None
    # The server's text is shown as text: none of it became an element.
    assert d.execute_script("return document.querySelectorAll('main b, main i, main img').length") == 0

    # Insert from the page: the id it shows is the one that arrives, in the feed and the table.
    insert_from_page(d, "from-page", '{"text": "hé from the page", "n": 42}')
    s = wait_until(d, lambda d: state(d)["insertStatus"] == "ok" and state(d), "the inserted id")
    new_id = s["insertId"]
    assert new_id and new_id in s["insertResult"], s
    s = wait_until(d, lambda d: by_name(state(d)["feed"], "from-page") and by_name(state(d)["latest"], "from-page")
                   and state(d), "the page's own event in the feed and the table")
    for rows in (s["feed"], s["latest"]):
        row = by_name(rows, "from-page")
        assert row["id"] == new_id and parsed(row) == {"text": "hé from the page", "n": 42}, row
    assert s["feed"][0]["name"] == "from-page", s["feed"]  # newest first
    ids = [int(r["id"]) for r in s["feed"]]
    assert ids == sorted(ids, reverse=True), ids

    # Bad JSON is caught in the page and not sent; a later good insert proves nothing went out.
    insert_from_page(d, "bad-json", '{"a": ')
    s = wait_until(d, lambda d: "not valid JSON" in state(d)["jsonError"] and state(d), "the JSON error")
    assert s["insertStatus"] != "ok", s
    # The server's refusal is shown as the server worded it (an event name over 256 bytes).
    long_name = "é" * 200
    refusal = broker.post("/insert", {"event": long_name, "data": 1}, auth=(other, PASSWORD))
    assert refusal.status_code == 400, refusal.text
    insert_from_page(d, long_name, "1")
    s = wait_until(d, lambda d: state(d)["insertStatus"] == "error" and state(d), "the server's refusal")
    assert refusal.json()["error"] in s["insertResult"], (refusal.text, s["insertResult"])

    # Another tenant's live event never shows; our tenant's later marker proves it had its chance.
    broker.insert(stranger, "secret-live", {"never": "shown"})
    marker_id = broker.insert(other, "marker", {"after": "secret-live"})
    s = wait_until(d, lambda d: by_name(state(d)["feed"], "marker") and state(d), "the marker event")
    assert by_name(s["feed"], "marker")["id"] == marker_id
    names = {r["name"] for r in s["feed"] + s["latest"]}
    assert not names & {"secret", "secret-live", "bad-json", long_name}, names
    assert "never" not in d.find_element(By.TAG_NAME, "body").text

    # Pause: the table keeps up, the feed holds the event until resumed.
    d.find_element(By.ID, "feed-pause").click()
    paused_id = broker.insert(other, "during-pause", {"p": True})
    s = wait_until(d, lambda d: by_name(state(d)["latest"], "during-pause") and state(d),
                   "the paused event in the table")
    s = wait_until(d, lambda d: "1 new event" in (state(d)["feedPaused"] or "") and state(d), "the paused count")
    assert by_name(s["feed"], "during-pause") is None, s["feed"]
    d.find_element(By.ID, "feed-pause").click()
    s = wait_until(d, lambda d: by_name(state(d)["feed"], "during-pause") and state(d), "the held event after resume")
    assert by_name(s["feed"], "during-pause")["id"] == paused_id and s["feedPaused"] is None

    d.execute_script("window.scrollTo(0, 0)")
    screenshot(d, "desktop.png")
    assert no_horizontal_overflow(d)
    assert_clean_console_log(d)


def test_session_survives_reload_and_logout_clears_it(broker, console_url, browser):
    me = broker.user(tenant())
    d = browser()
    login(d, console_url, me)
    assert state(d)["jwtStored"]
    d.refresh()
    wait_until(d, lambda d: state(d)["ready"] and state(d)["conn"] == "live" and me in state(d)["whoami"],
               "the session back after a reload")
    d.find_element(By.ID, "logout").click()
    s = wait_until(d, lambda d: state(d)["loginVisible"] and state(d), "the login form after logging out")
    assert not s["jwtStored"] and not s["appVisible"] and s["conn"] == "idle", s
    # A wrong password shows the server's refusal.
    refusal = broker.post("/login", {"username": me, "password": "wrong-password"})
    assert refusal.status_code == 401
    type_into(d, "login-username", me)
    type_into(d, "login-password", "wrong-password")
    d.find_element(By.ID, "login-submit").click()
    s = wait_until(d, lambda d: state(d)["loginError"] and state(d), "the login refusal")
    assert refusal.json()["error"] in s["loginError"] and not s["jwtStored"], s
    assert_clean_console_log(d)


def test_admin_panel_lists_creates_updates_and_revoke_stops_the_stream(broker, console_url, browser):
    t = tenant()
    me, other = broker.user(t), broker.user(t, email="other@example.com")
    d = browser()
    login(d, console_url, me)

    # A wrong token: the server's words, and the panel stays shut.
    wrong = broker.post("/list_users", {"admin_token": "not-the-token"})
    assert wrong.status_code == 401
    type_into(d, "admin-token", "not-the-token")
    d.find_element(By.ID, "admin-unlock").click()
    s = wait_until(d, lambda d: state(d)["adminError"] and state(d), "the wrong-token refusal")
    assert s["adminError"] == wrong.json()["error"] and not s["adminBody"], s

    type_into(d, "admin-token", broker.admin)
    d.find_element(By.ID, "admin-unlock").click()
    s = wait_until(d, lambda d: state(d)["adminBody"] and state(d)["users"] and state(d), "the user list")
    listed = broker.admin_post("/list_users").json()
    assert sorted(u["username"] for u in s["users"]) == sorted(u["username"] for u in listed)
    rows = {u["username"]: u for u in s["users"]}
    assert rows[me]["tenant"] == t and rows[other]["email"] == "other@example.com", rows
    assert d.find_element(By.ID, "admin-token").get_attribute("value") == ""  # not left in the form

    # Create, then the same name again: the second answer is the server's refusal, verbatim.
    new = "n" + uuid.uuid4().hex[:10]
    for attempt in range(2):
        type_into(d, "create-username", new)
        type_into(d, "create-password", PASSWORD)
        type_into(d, "create-tenant", t)
        type_into(d, "create-email", "new@example.com")
        type_into(d, "create-data", '{"plan": "pro"}')
        d.find_element(By.ID, "create-submit").click()
        if attempt == 0:
            s = wait_until(d, lambda d: any(u["username"] == new for u in state(d)["users"]) and state(d),
                           "the created user in the list")
            assert s["adminStatus"] == "ok", s
            user = broker.admin_post("/get_user", username=new).json()
            assert user["tenant_name"] == t and user["email"] == "new@example.com" and user["data"] == {"plan": "pro"}
            assert broker.post("/login", {"username": new, "password": PASSWORD}).status_code == 200
    taken = broker.admin_post("/create_user", username=new, password=PASSWORD, tenant_name=t)
    assert taken.status_code == 400
    s = wait_until(d, lambda d: state(d)["adminStatus"] == "error" and state(d), "the duplicate refusal")
    assert s["adminMessage"] == taken.json()["error"], s

    # Update through the row's Edit button: only the filled fields change.
    d.find_element(By.CSS_SELECTOR, f'#users-body tr[data-username="{new}"] button[data-action="edit"]').click()
    assert d.find_element(By.ID, "update-username").get_attribute("value") == new
    type_into(d, "update-email", "changed@example.com")
    type_into(d, "update-data", '{"plan": "free"}')
    d.find_element(By.ID, "update-submit").click()
    wait_until(d, lambda d: any(u["username"] == new and u["email"] == "changed@example.com"
                                for u in state(d)["users"]), "the updated email in the list")
    user = broker.admin_post("/get_user", username=new).json()
    assert user["email"] == "changed@example.com" and user["data"] == {"plan": "free"} and user["tenant_name"] == t

    # Revoke the user this page is logged in as: the broker closes its stream, the reconnect
    # is refused, and the page says the stream stopped.
    d.find_element(By.CSS_SELECTOR, f'#users-body tr[data-username="{me}"] button[data-action="revoke"]').click()
    wait_until(d, lambda d: any(u["username"] == me and u["revoked"] == "true" for u in state(d)["users"]),
               "the user marked revoked")
    assert [u["revoked"] for u in broker.admin_post("/list_users").json() if u["username"] == me] == [True]
    s = wait_until(d, lambda d: state(d)["conn"] == "stopped" and state(d), "the stream stopped", timeout=40)
    assert s["connState"] == "stopped" and s["connDetail"], s
    d.execute_script("window.scrollTo(0, 0)")
    screenshot(d, "revoked-stopped.png")
    # An insert now is refused with the server's reason.
    insert_from_page(d, "after-revoke", "{}")
    s = wait_until(d, lambda d: state(d)["insertStatus"] == "error" and state(d), "the refused insert")
    assert "401" in s["insertResult"], s

    # Unrevoke from the page too.
    d.find_element(By.CSS_SELECTOR, f'#users-body tr[data-username="{me}"] button[data-action="unrevoke"]').click()
    wait_until(d, lambda d: any(u["username"] == me and u["revoked"] == "false" for u in state(d)["users"]),
               "the user active again")
    assert broker.post("/login", {"username": me, "password": PASSWORD}).status_code == 200
    # Log out and in again: a live stream; the admin panel stays open (its token is the page's).
    d.find_element(By.ID, "logout").click()
    login_here(d, me)
    assert state(d)["adminBody"]
    d.find_element(By.ID, "admin").location_once_scrolled_into_view
    screenshot(d, "admin.png")
    assert_clean_console_log(d)


def test_phone_viewport(broker, console_url, browser):
    t = tenant()
    me, other = broker.user(t), broker.user(t)
    broker.insert(other, "settings", {"theme": "dark", "items": list(range(30)), "note": "a long value " * 20})
    d = browser(390, 844, mobile=True)
    open_console(d, console_url)
    assert no_horizontal_overflow(d), "the login page is wider than a phone"
    login(d, console_url, me)
    wait_until(d, lambda d: by_name(state(d)["latest"], "settings"), "the latest event on the phone")
    insert_from_page(d, "from-phone", '{"ok": true}')
    wait_until(d, lambda d: by_name(state(d)["feed"], "from-phone"), "the phone's own event in the feed")
    # Readable: system font at a readable size, nothing wider than the screen.
    size = d.execute_script("return parseFloat(getComputedStyle(document.body).fontSize)")
    assert size >= 14, size
    d.execute_script("window.scrollTo(0, 0)")
    assert no_horizontal_overflow(d), "the logged-in page is wider than a phone"
    screenshot(d, "phone.png")
    type_into(d, "admin-token", broker.admin)
    d.find_element(By.ID, "admin-unlock").click()
    wait_until(d, lambda d: any(u["username"] == me for u in state(d)["users"]), "the user list on the phone")
    for width, height in ((390, 844), (360, 740)):
        set_viewport(d, width, height, mobile=True)
        assert no_horizontal_overflow(d), f"the admin panel is wider than {width} px"
    d.find_element(By.ID, "admin").location_once_scrolled_into_view
    screenshot(d, "phone-admin.png")
    assert_clean_console_log(d)


def test_console_false_answers_404():
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail(f"no broker binary at {BROKER_BIN} (set BROKER_BIN)")
    usage = subprocess.run([BROKER_BIN, "--help"], capture_output=True, text=True, timeout=10)
    if "--console" not in usage.stdout + usage.stderr:
        pytest.skip(f"{BROKER_BIN} has no --console flag yet")
    b = Broker("--console=false")
    try:
        for path in ("/console/", "/console/console.js", "/console/broker-client.js"):
            r = requests.get(b.base + path, timeout=HTTP_TIMEOUT)
            assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert requests.get(b.base + "/healthz", timeout=HTTP_TIMEOUT).status_code == 200
    finally:
        b.stop()


def apply_filter(driver, text):
    """Types the filter into its box and presses Enter, as a person would."""
    type_into(driver, "filter-events", text)
    driver.find_element(By.ID, "filter-events").send_keys(Keys.ENTER)


def test_event_filter_shows_only_matching_events(broker, console_url, browser):
    """A filter typed into the box reconnects the stream with events=: the table (its snapshot)
    and the feed show only those names and prefixes; emptied, every event is back; a name the
    server refuses is shown with the server's reason."""
    t = tenant()
    me, other = broker.user(t), broker.user(t)
    keep_id = broker.insert(other, "keep", {"n": 1})
    room_id = broker.insert(other, "room.1", {"n": 2})
    broker.insert(other, "drop", {"n": 3})
    d = browser()
    login(d, console_url, me)
    wait_until(d, lambda d: len(state(d)["latest"]) == 3, "the three latest events, unfiltered")
    assert state(d)["filterState"] == "Showing every event."

    apply_filter(d, "keep, room.*")
    s = wait_until(d, lambda d: {r["name"] for r in state(d)["latest"]} == {"keep", "room.1"} and state(d),
                   "the filtered snapshot")
    assert [(r["name"], r["id"]) for r in s["latest"]] == [("keep", keep_id), ("room.1", room_id)], s["latest"]
    assert s["filterState"] == "Showing only: keep, room.*.", s
    broker.insert(other, "drop", {"n": 4})
    broker.insert(other, "roomy", {"n": 5})  # "room.*" is the prefix "room.": not this one
    room2 = broker.insert(other, "room.2", {"n": 6})
    marker = broker.insert(other, "keep", {"n": 7})  # the others had their chance before it
    s = wait_until(d, lambda d: any(r["id"] == marker for r in state(d)["feed"]) and state(d), "the marker")
    # The feed, newest first: the live events, then the filtered snapshot it started with.
    assert [(r["name"], r["id"]) for r in s["feed"]] == [("keep", marker), ("room.2", room2), ("room.1", room_id),
                                                         ("keep", keep_id)], s["feed"]
    assert {r["name"] for r in s["latest"]} == {"keep", "room.1", "room.2"}, s["latest"]
    assert s["conn"] == "live", s
    d.execute_script("window.scrollTo(0, 0)")
    screenshot(d, "filter.png")

    # Emptied: every event again, from a fresh snapshot.
    apply_filter(d, "")
    wait_until(d, lambda d: {r["name"] for r in state(d)["latest"]} == {"keep", "room.1", "room.2", "drop", "roomy"},
               "every name back")
    assert state(d)["filterState"] == "Showing every event."

    # A name no event can have: the server's 400, where the filter was typed.
    refusal = requests.get(broker.base + "/sse", params={"events": "$x"}, auth=(me, PASSWORD), timeout=HTTP_TIMEOUT)
    assert refusal.status_code == 400, refusal.text
    apply_filter(d, "$x")
    s = wait_until(d, lambda d: state(d)["filterError"] and state(d), "the refused filter")
    assert refusal.json()["error"] in s["filterError"] and s["conn"] == "stopped", s
    assert_clean_console_log(d)


def test_who_is_online_follows_another_users_stream(broker, console_url, browser):
    """The who-is-online panel lists the page's own user, and another user of the tenant while
    a stream of theirs (opened here, from Python) is open; a user of another tenant never."""
    t = tenant()
    me, other = broker.user(t), broker.user(t)
    stranger = broker.user(t + "x")
    d = browser()
    login(d, console_url, me)
    s = wait_until(d, lambda d: [u["username"] for u in state(d)["online"]] == [me] and state(d), "myself online")
    assert s["online"][0]["connections"] == 1 and "you" in s["online"][0]["text"], s["online"]
    far = broker.open_stream(stranger)
    stream = broker.open_stream(other)
    try:
        s = wait_until(d, lambda d: any(u["username"] == other for u in state(d)["online"]) and state(d),
                       "the other user online", timeout=5)
        assert sorted((u["username"], u["connections"]) for u in s["online"]) == sorted([(me, 1), (other, 1)]), s
        d.find_element(By.ID, "online").location_once_scrolled_into_view
        screenshot(d, "online.png")
    finally:
        stream.close()
    wait_until(d, lambda d: [u["username"] for u in state(d)["online"]] == [me], "the other user gone", timeout=5)
    far.close()
    assert_clean_console_log(d)


def test_presence_turned_off_leaves_the_console_working(browser):
    """With the server's presence off (its stream refuses presence=true with a 400), the
    console streams without it and says so in the panel. From the broker's own /console/,
    also under CONSOLE_DEV_PROXY: this broker is not the one the proxy fronts."""
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail(f"no broker binary at {BROKER_BIN} (set BROKER_BIN)")
    b = Broker("--presence=false")
    try:
        me = b.user(tenant())
        event_id = b.insert(me, "hello", 1)
        d = browser()
        login(d, b.base + "/console/", me)
        s = wait_until(d, lambda d: by_name(state(d)["latest"], "hello") and state(d), "the snapshot")
        assert by_name(s["latest"], "hello")["id"] == event_id
        assert s["onlineEmpty"] == "Presence is turned off on this server." and s["online"] == [], s
        assert_clean_console_log(d)
    finally:
        b.stop()

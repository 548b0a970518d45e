"""The JS client (clients/js/broker-client.js) in a real browser: Debian's chromium, headless,
driven by selenium through chromium-driver, against a real broker.

A tiny http.server on its own 127.0.0.1 port serves the test page (browser/index.html,
browser/harness.mjs) and the client (ES modules do not load from file://); the page talks to the
broker on another port, so every request is cross-origin and goes through the broker's CORS.
Scenarios: log in and stream; the live insert of another user of the tenant arrives, another
tenant's (a name the first is a prefix of) never does; the broker restarted (SIGTERM, same port
and db) mid-stream and the page resumes with no event missed or repeated; an expired token ends
in a visible fatal error with no retry.

Needs: chromium, chromium-driver, python3-selenium, and the broker binary (BROKER_BIN, default
build/broker).
"""
import http.server
import json
import os
import shutil
import tempfile
import threading
import time

import pytest

import jsclient_harness as h

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_FILES = {
    "/": (os.path.join(h.HERE, "browser", "index.html"), "text/html; charset=utf-8"),
    "/harness.mjs": (os.path.join(h.HERE, "browser", "harness.mjs"), "text/javascript; charset=utf-8"),
    "/broker-client.js": (h.CLIENT_JS, "text/javascript; charset=utf-8"),
}
WAIT = 15  # seconds, the bound of every wait on the page


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        entry = PAGE_FILES.get(self.path.split("?")[0])
        if entry is None:
            self.send_error(404)
            return
        with open(entry[0], "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", entry[1])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield "http://127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver  # python3-selenium; imported here so a missing one fails the tests
    from selenium.webdriver.chrome.service import Service
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), "%s is missing (apt-get install chromium chromium-driver)" % path
    # The profile and chromium's scratch files (TMPDIR) in one dir of ours, removed at the end.
    scratch = tempfile.mkdtemp(prefix="broker-jsclient-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-dev-shm-usage", "--disable-extensions",
                "--user-data-dir=" + os.path.join(scratch, "profile")):
        opts.add_argument(arg)
    env = dict(os.environ, TMPDIR=scratch)
    d = None
    try:
        d = webdriver.Chrome(service=Service(CHROMEDRIVER, env=env), options=opts)
        d.set_script_timeout(WAIT)
        d.set_page_load_timeout(WAIT)
        yield d
    finally:
        if d is not None:
            d.quit()
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.fixture
def page(driver, page_server):
    """A freshly loaded test page; its client is closed at the end of the test."""
    driver.get(page_server + "/")
    wait_until(driver, "the module to load", lambda: driver.find_element("id", "ready").text == "ready")
    yield Page(driver)
    try:
        driver.execute_script("if (window.harness) try { harness.close(); } catch (e) {}")
        driver.get("about:blank")
    except Exception:  # the browser may be gone after a failure; the driver fixture quits it
        pass


def wait_until(driver, what, check, timeout=WAIT):
    end = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s; page state: %s" % (what, page_state(driver)))
        time.sleep(0.05)


def page_state(driver):
    try:
        return json.dumps(driver.execute_script("return window.harness ? harness.state : null"))[:3000]
    except Exception as e:  # noqa: BLE001 - only for a failure message
        return "(unreadable: %s)" % e


class Page:
    def __init__(self, driver):
        self.d = driver

    def call(self, expr, *args):
        """Awaits `expr` (a JS expression over args[0..]) in the page; raises with its error."""
        out = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const args = Array.from(arguments).slice(0, -1);"
            "Promise.resolve().then(() => (%s)).then((v) => done({ok: v}),"
            " (e) => done({err: String(e) + ' status=' + (e && e.status)}));" % expr, *args)
        assert "err" not in out, "page: %s -> %s" % (expr, out["err"])
        return out.get("ok")

    def state(self):
        return self.d.execute_script("return harness.state")

    def events(self):
        return [tuple(e) for e in self.state()["events"]]

    def wait_event(self, id_, what):
        wait_until(self.d, what, lambda: any(e[2] == id_ for e in self.events()))


def test_browser_login_stream_live_insert_and_tenant_isolation(page, broker):
    alice = broker.create_user("w-alice", "alice-password", "t1")
    bob = broker.create_user("w-bob", "bob-password", "t1")
    carol = broker.create_user("w-carol", "carol-password", "t10")
    carol_jwt = broker.login(carol)
    bob_jwt = broker.login(bob)
    broker.insert(carol_jwt, "chat", {"from": "carol-before"})
    broker.insert(carol_jwt, "t10only", True)
    before = broker.insert(bob_jwt, "chat", {"from": "bob-before"})

    jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, alice["username"], alice["password"])
    page.call("harness.start(args[0], args[1])", broker.base, jwt)
    page.wait_event(before, "the snapshot")
    assert page.call("harness.verify()") == {"username": "w-alice", "tenant_name": "t1"}
    broker.insert(carol_jwt, "chat", {"from": "carol-live"})
    # bob's live insert, made from the page with bob's own login
    bob_page_jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, bob["username"], bob["password"])
    live = page.call("harness.insertAs(args[0], args[1], 'chat', {from: 'bob-live'})", broker.base, bob_page_jwt)["id"]
    sentinel = broker.insert(bob_jwt, "sentinel", 0)  # a leaked t10 event would come before it
    page.wait_event(sentinel, "the sentinel")
    assert page.events() == [("chat", {"from": "bob-before"}, before), ("chat", {"from": "bob-live"}, live),
                             ("sentinel", 0, sentinel)]
    items = page.d.find_elements("css selector", "#events li")
    assert [i.text for i in items] == ['%s chat {"from":"bob-before"}' % before, '%s chat {"from":"bob-live"}' % live,
                                       "%s sentinel 0" % sentinel]
    assert page.call("harness.latest()") == {
        "chat": {"type": "chat", "data": '{"from":"bob-live"}', "lastEventId": live},
        "sentinel": {"type": "sentinel", "data": "0", "lastEventId": sentinel}}
    assert page.d.find_element("id", "state").text == "OPEN"
    assert page.call("harness.close()") == 2
    assert page.state()["errors"] == []


# The filter of the filtered runs of the restart scenario, and its query as sent.
RESUME_FILTER = ["k*", "x,y"]
RESUME_FILTER_QUERY = "events=k*,x%2Cy"


def resume_across_a_restart(page, broker, prefix, events=None):
    """k1-k3 streamed, the broker restarted, k4-k5 inserted while the page waits to reconnect,
    k6 live after it: every event must arrive once, in order.  With `events` (RESUME_FILTER),
    the client asks for those names only; events of other names are inserted at every step and
    must never arrive, and k5 is named "x,y" (a comma inside a name, through the replay).  The
    page's state, for the transport's own checks, and the (name, data, id) of k1-k6."""
    tenant = prefix + ("frestart" if events else "restart")
    reader = broker.create_user(prefix + "-rita" + ("-f" if events else ""), "rita-password", tenant)
    writer_jwt = broker.login(broker.create_user(prefix + "-sam" + ("-f" if events else ""), "sam-password", tenant))
    expected = []

    def insert(name):
        expected.append((name, {"n": name}, broker.insert(writer_jwt, name, {"n": name})))
        return expected[-1][2]

    def other(name):  # an event the filter leaves out
        if events:
            broker.insert(writer_jwt, name, {"n": name})

    insert("k1")
    other("x")
    jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, reader["username"], reader["password"])
    # maxRetry shortens the wait before the reconnect; the policy is otherwise the default one.
    page.call("harness.start(args[0], args[1], {maxRetry: 1500, events: args[2]})", broker.base, jwt, events)
    page.wait_event(expected[0][2], "k1 from the snapshot")
    insert("k2")
    other("y")
    page.wait_event(insert("k3"), "k3")
    broker.restart()
    # Inserted while the page is (most likely) still waiting to reconnect; each event must
    # arrive once whichever way it comes (the Last-Event-ID replay, or live).
    other("x")
    insert("k4")
    other("j5")
    insert("x,y" if events else "k5")
    wait_until(page.d, "the reconnect", lambda: page.state()["opens"] >= 2)
    page.wait_event(expected[4][2], "k5")
    other("y")
    page.wait_event(insert("k6"), "k6, live")
    assert page.events() == expected
    state = page.state()
    sse = broker.base + "/sse" + ("?" + RESUME_FILTER_QUERY if events else "")
    assert len(state["urls"]) >= 2 and all(u == sse for u in state["urls"]), state["urls"]
    return state, expected


@pytest.mark.parametrize("events", [None, RESUME_FILTER], ids=["all", "filtered"])
def test_browser_resumes_after_broker_restart(page, broker, events):
    state, expected = resume_across_a_restart(page, broker, "w", events)
    assert state["fetches"][0] is None, state
    assert len(state["fetches"]) >= 2 and all(f == expected[2][2] for f in state["fetches"][1:]), state
    assert state["opens"] == 2 and not any(e["fatal"] for e in state["errors"]), state


def test_browser_expired_token_is_a_visible_fatal_error(page, broker):
    frank = broker.create_user("w-frank", "frank-password", "wexp")
    expired = h.expired_token(broker, frank)
    page.call("harness.start(args[0], args[1], {retry: 10, maxRetry: 10})", broker.base, expired)
    text = wait_until(page.d, "the fatal error on the page",
                      lambda: page.d.find_element("id", "error").text)
    assert text.startswith("fatal 401: "), text
    assert page.d.find_element("id", "state").text == "CLOSED"
    time.sleep(0.3)  # a client retrying every 10 ms would have asked again meanwhile
    state = page.state()
    assert state["fetches"] == [None], state
    assert state["opens"] == 0, state
    assert [(e["status"], e["fatal"], e["readyState"]) for e in state["errors"]] == [(401, True, 2)], state
    assert page.call("harness.readyState()") == 2


def test_browser_presence_map_join_and_leave(page, broker):
    """Another user's stream opens (from Python) and closes: the page's client calls onJoin and
    onLeave and its presence map follows; the $presence frames are no events and leave
    lastEventId alone."""
    me = broker.create_user("w-pia", "pia-password", "wpresence")
    other = broker.create_user("w-pete", "pete-password", "wpresence")
    first = broker.insert(broker.login(other), "hello", 1)
    jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, me["username"], me["password"])
    page.call("harness.start(args[0], args[1], {presence: true})", broker.base, jwt)
    page.wait_event(first, "the snapshot")
    wait_until(page.d, "myself online", lambda: (page.state()["presence"] or {}).get("w-pia"))
    stream = h.open_stream(broker, other)
    try:
        wait_until(page.d, "pete's join", lambda: ["w-pete"] in page.state()["joins"], timeout=5)
        assert page.state()["presence"] == {"w-pia": 1, "w-pete": 1}, page.state()
    finally:
        stream.close()
    wait_until(page.d, "pete's leave", lambda: ["w-pete"] in page.state()["leaves"], timeout=5)
    state = page.state()
    assert state["presence"] == {"w-pia": 1}, state
    assert state["events"] == [["hello", 1, first]], state
    assert state["dollarEvents"] == 0 and state["lastEventId"] == first, state
    assert state["urls"] == [broker.base + "/sse?presence=true"], state

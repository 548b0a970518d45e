"""The JS client's XMLHttpRequest transport in headless chromium, against a real broker, on a
page where fetch gives no readable body (browser/xhr.html removes Response.body,
ReadableStream and TextDecoder before the client loads, as in React Native): the client must
pick XHR by itself and stream live events, resume across a broker restart with nothing missed
or repeated, reopen its request past the size bound (xhrReopenAfter, small here) with nothing
missed or repeated, and stop for good on a 401. One more test forces `transport: "xhr"` on a
page where fetch could stream.

The browser, the page server and the page helpers are test_jsclient_browser.py's.
"""
import os
import time

import pytest

import jsclient_harness as h
from test_jsclient_browser import (PAGE_FILES, RESUME_FILTER, Page, driver, page_server,  # noqa: F401 (fixtures)
                                  resume_across_a_restart, wait_until)

PAGE_FILES["/xhr.html"] = (os.path.join(h.HERE, "browser", "xhr.html"), "text/html; charset=utf-8")


def load(driver, url):
    driver.get(url)
    wait_until(driver, "the module to load", lambda: driver.find_element("id", "ready").text == "ready")
    return Page(driver)


@pytest.fixture
def page(driver, page_server):  # noqa: F811
    """The page without fetch streaming; its client is closed at the end of the test."""
    p = load(driver, page_server + "/xhr.html")
    assert driver.execute_script(
        "return !('body' in Response.prototype) && typeof ReadableStream === 'undefined'"
        " && typeof TextDecoder === 'undefined'"), "fetch streaming is still there"
    yield p
    try:
        driver.execute_script("if (window.harness) try { harness.close(); } catch (e) {}")
        driver.get("about:blank")
    except Exception:  # the browser may be gone after a failure; the driver fixture quits it
        pass


def sse_fetches(page):
    return [u for u in page.d.execute_script("return window.pageFetches") if "/sse" in u]


def test_xhr_chosen_and_streams_snapshot_and_live_events(page, broker):
    alice = broker.create_user("x-alice", "alice-password", "x1")
    bob_jwt = broker.login(broker.create_user("x-bob", "bob-password", "x1"))
    other_jwt = broker.login(broker.create_user("x-carol", "carol-password", "x10"))
    before = broker.insert(bob_jwt, "chat", {"from": "bob-before", "text": "h\u00e9llo \u2603 \U0001F600"})

    jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, alice["username"], alice["password"])
    page.call("harness.start(args[0], args[1])", broker.base, jwt)
    page.wait_event(before, "the snapshot")
    assert page.state()["transport"] == "xhr"
    broker.insert(other_jwt, "chat", {"from": "carol"})
    live = broker.insert(bob_jwt, "chat", {"from": "bob-live"})
    page.wait_event(live, "the live insert")
    assert page.events() == [("chat", {"from": "bob-before", "text": "h\u00e9llo \u2603 \U0001F600"}, before),
                             ("chat", {"from": "bob-live"}, live)]
    assert page.call("harness.latest()")["chat"]["lastEventId"] == live
    state = page.state()
    assert state["xhrs"] == [None] and state["opens"] == 1 and state["errors"] == [], state
    assert page.d.find_element("id", "state").text == "OPEN"
    assert sse_fetches(page) == [], "the stream went through fetch"
    assert page.call("harness.close()") == 2


@pytest.mark.parametrize("events", [None, RESUME_FILTER], ids=["all", "filtered"])
def test_xhr_resumes_after_broker_restart(page, broker, events):
    state, expected = resume_across_a_restart(page, broker, "x", events)
    assert state["transport"] == "xhr", state
    assert state["xhrs"][0] is None, state
    assert len(state["xhrs"]) >= 2 and all(x == expected[2][2] for x in state["xhrs"][1:]), state
    assert state["opens"] == 2 and state["errors"] and not any(e["fatal"] for e in state["errors"]), state
    assert sse_fetches(page) == []


def test_xhr_reopens_past_the_size_bound_with_nothing_missed(page, broker):
    reader = broker.create_user("x-ursula", "ursula-password", "xbound")
    writer_jwt = broker.login(broker.create_user("x-victor", "victor-password", "xbound"))
    bound = 2048
    pad = "p" * 300  # each frame is ~350 characters: a reopen every six events or so
    expected = [("e0", {"i": 0, "pad": pad}, broker.insert(writer_jwt, "e0", {"i": 0, "pad": pad}))]
    jwt = page.call("harness.login(args[0], args[1], args[2])", broker.base, reader["username"], reader["password"])
    page.call("harness.start(args[0], args[1], {xhrReopenAfter: args[2]})", broker.base, jwt, bound)
    page.wait_event(expected[0][2], "the snapshot")
    for i in range(1, 40):
        # Several names, so the events cut at a reopen are not all the latest of their name.
        name = "e%d" % (i % 3)
        expected.append((name, {"i": i, "pad": pad}, broker.insert(writer_jwt, name, {"i": i, "pad": pad})))
        if i % 7 == 0:
            time.sleep(0.05)  # some events arrive one by one, some in a burst that crosses the bound
    page.wait_event(expected[-1][2], "the last event")
    time.sleep(0.3)  # a repeat after the last one would show now
    assert page.events() == expected
    state = page.state()
    reopens = state["xhrs"][1:]
    # About 40 * 350 / 2048 reopens; each resumes after the last whole event received.
    print("requests (Last-Event-ID of each):", state["xhrs"])
    assert len(reopens) >= 4, state["xhrs"]
    ids = [e[2] for e in expected]
    assert all(x in ids for x in reopens), (reopens, ids)
    assert reopens == sorted(reopens, key=int), reopens
    assert state["errors"] == [], "a reopen is not an error: %s" % state["errors"]
    assert state["opens"] == len(state["xhrs"]), state
    assert page.call("harness.readyState()") == 1


def test_xhr_401_is_fatal(page, broker):
    frank = broker.create_user("x-frank", "frank-password", "xexp")
    expired = h.expired_token(broker, frank)
    page.call("harness.start(args[0], args[1], {retry: 10, maxRetry: 10})", broker.base, expired)
    text = wait_until(page.d, "the fatal error on the page", lambda: page.d.find_element("id", "error").text)
    assert text.startswith("fatal 401: "), text
    assert page.d.find_element("id", "state").text == "CLOSED"
    time.sleep(0.3)  # a client retrying every 10 ms would have asked again meanwhile
    state = page.state()
    assert state["transport"] == "xhr" and state["xhrs"] == [None] and state["opens"] == 0, state
    assert [(e["status"], e["fatal"], e["readyState"]) for e in state["errors"]] == [(401, True, 2)], state
    assert state["errors"][0]["message"], state  # the broker's words, not just a status


def test_xhr_can_be_forced_where_fetch_streams(driver, page_server, broker):  # noqa: F811
    page = load(driver, page_server + "/")
    try:
        assert driver.execute_script("return 'body' in Response.prototype")
        user = broker.create_user("x-wendy", "wendy-password", "xforced")
        jwt = broker.login(user)
        first = broker.insert(jwt, "hello", 1)
        page.call("harness.start(args[0], args[1], {transport: 'xhr'})", broker.base, jwt)
        page.wait_event(first, "the snapshot")
        page.wait_event(broker.insert(jwt, "hello", 2), "the live insert")
        state = page.state()
        assert state["transport"] == "xhr" and state["xhrs"] == [None] and state["fetches"] == [], state
    finally:
        driver.execute_script("if (window.harness) try { harness.close(); } catch (e) {}")
        driver.get("about:blank")

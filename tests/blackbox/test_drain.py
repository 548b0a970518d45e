"""Shutdown of the all-in-one broker (docs/API.md, "Shutdown"): on SIGTERM it answers /readyz 503
at once, refuses new streams with 503 and Retry-After, ends every open stream with a `retry:` of
its own within --drain_seconds, and exits 0 once its streams are gone; a second SIGTERM, or a
SIGINT, exits at once. The split stream replica's drain, a thousand streams resuming elsewhere
through a gateway, is tests/split/test_replica_drain.py.

Each test starts a server of its own (skipped against BROKER_TEST_BASE_URL)."""

import signal
import time

import pytest

from conftest import bearer_header, check_clean_exit, needs_own_server, start_broker
from sse_client import Closed, SSEClient

# The drain's retry values (services/stream/stream_engine.c): [1000, 3000) ms.
RETRY_MIN_MS, RETRY_MAX_MS = 1000, 3000


def readyz_status(b):
    return b.get("/readyz").status_code


def readyz_after_signal(b, within=0.5):
    """/readyz's status once the signal has been taken: the process takes it on a thread of its
    own, a moment after kill() returns, so a probe sent at once may come first."""
    deadline = time.monotonic() + within
    status = readyz_status(b)
    while status != 503 and time.monotonic() < deadline:
        time.sleep(0.01)
        status = readyz_status(b)
    return status


def open_stream(b, jwt, last_event_id=None):
    headers = bearer_header(jwt)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    c = SSEClient.open(b.base_url, "/sse", headers=headers, timeout=5)
    assert c.read_head(5) == 200, (c.status, c.body_raw[:200])
    return c


def wait_exit(b, timeout):
    """The exit code, or None when the process is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b.proc.poll() is not None:
            return b.proc.returncode
        time.sleep(0.02)
    return b.proc.poll()


@pytest.fixture
def started():
    """start(flags) -> a broker of its own; each is stopped (SIGKILL if it hangs) at the end."""
    needs_own_server("the drain tests send SIGTERM to a server of their own")
    servers = []

    def start(*flags):
        b = start_broker(list(flags), tag="drain%d" % len(servers))
        servers.append(b)
        return b

    yield start
    for b in servers:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(10)


def test_sigterm_ends_each_stream_with_a_retry_of_its_own_and_exits_when_they_are_gone(started):
    window = 4
    b = started("--drain_seconds=%d" % window)
    user = b.create_user()
    jwt = b.login(user.username, user.password)
    first = int(b.post("/insert", {"event": "e", "data": 1}, headers=bearer_header(jwt)).json()["id"])
    streams = [open_stream(b, jwt) for _ in range(6)]
    for c in streams:
        assert int(c.next_event(5).id) == first
    # An idle keep-alive connection does not hold the drain up.
    assert b.get("/healthz").status_code == 200

    b.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    # At once: not ready, and a new stream is refused with Retry-After.
    assert readyz_after_signal(b) == 503
    assert b.get("/readyz").json()["status"] == "unavailable"
    refused = SSEClient.open(b.base_url, "/sse", headers=bearer_header(jwt), timeout=5)
    assert refused.read_head(5) == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers.get("connection") == "close"
    assert "shutting down" in refused.json_body(5)["error"]
    assert time.monotonic() - t0 < 1.0, "/readyz and the refusal took %.2f s" % (time.monotonic() - t0)
    # Requests other than new streams are still served meanwhile.
    assert b.post("/insert", {"event": "e", "data": 2}, headers=bearer_header(jwt)).status_code == 200

    closed_at, retries = [], []
    for c in streams:
        assert c.wait_closed(window + 1), "a stream was still open after the drain window"
        closed_at.append(time.monotonic() - t0)
        # The stream's last frame is a retry: of its own, after the stream's original one.
        assert c.retries[0] == "3000"
        assert len(c.retries) == 2, c.retries
        retries.append(int(c.retries[-1]))
        c.close()
    assert all(RETRY_MIN_MS <= r < RETRY_MAX_MS for r in retries), retries
    assert len(set(retries)) > 1, "every stream was told the same retry: %s" % retries
    assert max(closed_at) <= window + 0.5, closed_at
    code = wait_exit(b, window + 3 - (time.monotonic() - t0))
    assert code is not None, "still running %.1f s after SIGTERM" % (time.monotonic() - t0)
    check_clean_exit(b, code)
    assert "drained in" in b.stderr_text()


def test_sigterm_without_streams_exits_at_once(started):
    b = started()  # the default window, 20 s: nothing to wait for
    assert readyz_status(b) == 200
    b.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = wait_exit(b, 5)
    assert code is not None, "no stream open, yet still running 5 s after SIGTERM"
    check_clean_exit(b, code)
    assert time.monotonic() - t0 < 2.0


def test_a_second_sigterm_or_a_sigint_exits_at_once(started):
    for second in (signal.SIGTERM, signal.SIGINT):
        b = started("--drain_seconds=60")
        user = b.create_user()
        jwt = b.login(user.username, user.password)
        streams = [open_stream(b, jwt) for _ in range(3)]
        b.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert b.proc.poll() is None, "a draining broker with open streams exited before its window"
        assert readyz_status(b) == 503
        b.proc.send_signal(second)
        t0 = time.monotonic()
        code = wait_exit(b, 5)
        assert code is not None, "still draining 5 s after a second signal (%s)" % second.name
        check_clean_exit(b, code)
        assert time.monotonic() - t0 < 3.0
        for c in streams:
            try:
                assert c.wait_closed(2)
            except Closed:
                pass
            c.close()


def test_sigint_exits_at_once_without_draining(started):
    b = started("--drain_seconds=60")
    user = b.create_user()
    jwt = b.login(user.username, user.password)
    c = open_stream(b, jwt)
    b.proc.send_signal(signal.SIGINT)
    code = wait_exit(b, 5)
    assert code is not None, "SIGINT did not stop the broker at once"
    check_clean_exit(b, code)
    assert c.wait_closed(2)
    assert c.retries == ["3000"], "no drain on SIGINT: %r" % c.retries
    c.close()

"""Chaos for the front door (issue 23), on the ASan+UBSan build in `make test`.

  test_parked_pair_burst: the regression for a remote crash: 300 keep-alive connections, each
      relaying GET /verify three times, need more than the 256 relay slots, so parked pairs are
      closed to make room while their events may still wait in the same epoll batch.
  test_chaos: CHAOS_SECONDS (60; `make chaos` sets 600) of random client behaviour (chaos.py)
      against a plain and a TLS broker at once; every whole request got one whole answer, the
      servers' sockets come back to where they started, and each exits clean on SIGTERM (no
      sanitizer report, no leak).
"""

import asyncio
import os
import time

import pytest

import chaos
from conftest import dh

bb = dh.bb
CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
WORKERS = int(os.environ.get("CHAOS_WORKERS", "300"))


def fd_count(b):
    """The server's open sockets: connections, relay pairs and the bus's. Files are left out: the
    embedded store keeps a bounded pool of idle reader connections, which a busy minute grows."""
    folder = "/proc/%d/fd" % b.proc.pid
    n = 0
    for name in os.listdir(folder):
        try:
            n += os.readlink(os.path.join(folder, name)).startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return n


def wait_fds(b, baseline, timeout=60.0):
    """The server's socket count once it is back to `baseline` (parked relay pairs go after 5 s
    idle, lingering closes after 2 s), or the last count seen at the deadline."""
    deadline = time.monotonic() + timeout
    n = fd_count(b)
    while n > baseline and time.monotonic() < deadline:
        time.sleep(0.5)
        n = fd_count(b)
    return n


def prepare(b):
    """A user, its JWT, one insert and one stream opened once: what the chaos uses, and the
    descriptors a warm server holds for good (the store's files) counted in the baseline."""
    u = b.create_user()
    jwt = b.login(u.username, u.password)
    r = b.post("/insert", {"event": "chaos.0", "data": 1}, headers=bb.bearer_header(jwt))
    assert r.status_code == 200, bb.describe(r)
    time.sleep(1.0)
    return u, jwt, fd_count(b)


def target(b):
    return "%s:%s:%d" % ("tls" if b.tls else "plain", b.host, b.port)


def report(name, stats):
    d = stats.as_dict()
    print("%s: %d connections, %d requests, %d answers, connect errors %d, sends cut %d, statuses %s, "
          "scenarios %s" % (name, d["connections"], d["requests"], d["answers"], d["connect_errors"],
                            d["send_failed"], d["statuses"], d["by_scenario"]))
    return d


def finish(b, baseline):
    assert b.alive(), "the server died; stderr:\n%s" % b.stderr_tail()
    n = wait_fds(b, baseline)
    assert n <= baseline, "sockets leaked: %d open after the chaos, %d before" % (n, baseline)
    dh.stop_door(b)


@pytest.mark.parametrize("mode", dh.MODES)
def test_parked_pair_burst(mode, tls_files):
    b = dh.start_door(mode, tls_files, tag="burst-" + mode)
    try:
        _u, jwt, baseline = prepare(b)
        c = chaos.Chaos([target(b)], 0, jwt, "x:y", 0)

        async def bursts():
            for _ in range(3):
                await c.burst(c.targets[0], 300)
        asyncio.run(bursts())
        d = report("burst " + mode, c.stats)
        assert b.alive(), "the server died; stderr:\n%s" % b.stderr_tail()
        assert not d["violations"], d["violations"]
        assert d["answers"] >= 900 * 0.9, "too few answers (connections refused?): %r" % d
    except BaseException:
        b.stop()
        raise
    finish(b, baseline)


def test_chaos(tls_files):
    plain = dh.start_door("plain", tls_files, tag="chaos-plain")
    tls = dh.start_door("tls", tls_files, tag="chaos-tls")
    try:
        u, jwt, base_plain = prepare(plain)
        u2, jwt2, base_tls = prepare(tls)
        # One user per server: each chaos half uses its own server's credentials.
        s1 = chaos.Chaos([target(plain)], CHAOS_SECONDS, jwt, "%s:%s" % (u.username, u.password),
                         WORKERS * 3 // 4)
        s2 = chaos.Chaos([target(tls)], CHAOS_SECONDS, jwt2, "%s:%s" % (u2.username, u2.password),
                         WORKERS // 4)

        async def both():
            return await asyncio.gather(s1.run(), s2.run())
        asyncio.run(both())
        d1, d2 = report("chaos plain", s1.stats), report("chaos tls", s2.stats)
        for b in (plain, tls):
            assert b.alive(), "the %s server died; stderr:\n%s" % (b.mode, b.stderr_tail())
        assert not d1["violations"] and not d2["violations"], d1["violations"] + d2["violations"]
        assert d1["answers"] > 1000 and d2["answers"] > 100, "the chaos barely ran: %r %r" % (d1, d2)
    except BaseException:
        plain.stop()
        tls.stop()
        raise
    finish(plain, base_plain)
    finish(tls, base_tls)

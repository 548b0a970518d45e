"""Two bus forwarders (broker-bus) between the split services: losing one loses nothing.

Starts its own deployment on the loopback, all processes sharing one embedded store: two
broker-bus, broker-auth, broker-ingest, broker-certd and two broker-stream, each of the others
with --bus_forwarders naming both forwarders. Every publisher sends to both forwarders and every
subscriber hears both, so each event reaches a stream process twice while both are up; the
per-tenant sequence must drop the copy (SSE ids go up by one, never repeat, and no gap is
"filled" because of a copy). A forwarder killed with SIGKILL while inserts flow costs nothing;
restarted, it carries the bus again once the other one is gone.  The bus runs with CURVE, every
process with a key pair of its own (split_deployment.py).

The deployment and its helpers are split_deployment.py's.  Every process stopped with SIGTERM must exit 0 (built with -DBROKER_SANITIZE=ON and run with
ASAN_OPTIONS=detect_leaks=1: no leak either).
"""
import os
import socket
import threading
import time
import uuid

import pytest
import requests

from split_deployment import ADMIN, Service, deployment_fixture, metric, status_of, wait_for
from split_stream import Stream

@pytest.fixture(scope="module")
def dep():
    yield from deployment_fixture(curve=True)  # the bus as a deployment should run it


def assert_once_in_order(got, ids, values):
    assert [g[0] for g in got] == ids, "ids differ: %s" % [g[0] for g in got][:50]
    assert all(b == a + 1 for a, b in zip(ids, ids[1:])), "ids of one tenant must go up by one"
    assert [g[2]["n"] for g in got] == values


def cpu_seconds(service):
    """The user and system time the process has used so far."""
    with open("/proc/%d/stat" % service.proc.pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_processes_sleep(dep):
    """With nothing to do, no process spins: all together use a small part of one CPU.  (A timed wait
    that measured a monotonic deadline against the wall clock once woke at once, forever, and
    every process checked its store without pause.)"""
    window = 3.0
    before = {s.tag: cpu_seconds(s) for s in dep.everyone()}
    time.sleep(window)
    used = {s.tag: cpu_seconds(s) - before[s.tag] for s in dep.everyone()}
    # Summed, since processes that spin share the CPUs: on two, seven spinning get under a third each.
    total = sum(used.values()) / window
    assert total < 0.5, "busy while idle: %.2f CPUs in all; by process: %s" % (
        total, {name: round(t / window, 2) for name, t in used.items()})


def test_every_event_once_in_order_with_both_forwarders(dep):
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    streams = [Stream(s.port, auth) for s in dep.streams]
    gaps_before = dep.gaps()
    forwarded_before = [metric(b, "broker_bus_forwarded_total") for b in dep.buses]
    try:
        assert all(s.status == 200 for s in streams)
        with requests.Session() as session:
            ids = [dep.insert(session, auth, "e%d" % (i % 3), {"n": i}) for i in range(300)]
        for s in streams:
            assert_once_in_order(s.events(len(ids)), ids, list(range(300)))
        for s in streams:
            assert s.nothing_more(0.5), "an event came twice"
        # A copy from the other forwarder is a duplicate, not a gap to fill from the store.
        assert dep.gaps() == gaps_before
        # Both forwarders carried the events (their count is read once a second).
        assert wait_for(lambda: all(metric(b, "broker_bus_forwarded_total") >= f + 300
                                    for b, f in zip(dep.buses, forwarded_before)), 5)
    finally:
        for s in streams:
            s.close()


def check_revocation_closes_streams(dep):
    tenant = "t" + uuid.uuid4().hex[:8]
    name, auth = dep.make_user(tenant)
    _, other = dep.make_user(tenant)
    streams = [Stream(s.port, auth) for s in dep.streams]
    bystanders = [Stream(s.port, other) for s in dep.streams]
    try:
        assert all(s.status == 200 for s in streams + bystanders)
        r = requests.post(dep.auth.url("/revoke_user"), json={"admin_token": ADMIN, "username": name}, timeout=10)
        assert r.status_code == 200, r.text
        assert all(s.closed_within(5) for s in streams)
        with requests.Session() as session:
            live = dep.insert(session, other, "still", True)
        for b in bystanders:
            assert b.next_event() == (live, "still", True)
            assert b.nothing_more(0.3), "an event came twice"
    finally:
        for s in streams + bystanders:
            s.close()


def test_revocation_closes_streams_with_both_forwarders_up(dep):
    # The revocation arrives once per forwarder: the second copy finds the streams closing or gone.
    assert dep.buses[0].alive() and dep.buses[1].alive()
    check_revocation_closes_streams(dep)


def test_killing_a_forwarder_loses_nothing(dep):
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    streams = [Stream(s.port, auth) for s in dep.streams]
    ids, values, errors, not_ready = [], [], [], []

    def insert_for(seconds):
        try:
            with requests.Session() as session:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    values.append(len(values))
                    ids.append(dep.insert(session, auth, "k", {"n": values[-1]}))
                    time.sleep(0.005)
        except Exception as e:  # reported by the test below
            errors.append(e)

    try:
        assert all(s.status == 200 for s in streams)
        gaps_before = dep.gaps()
        writer = threading.Thread(target=insert_for, args=(3,))
        writer.start()
        time.sleep(1)
        dep.buses[0].kill()
        dep.dead.append(dep.buses[0])
        while writer.is_alive():
            not_ready += [s.name for s in dep.streams if status_of(s.url("/readyz")) != 200]
            time.sleep(0.2)
        writer.join()
        assert not errors, errors
        assert not not_ready, "a stream process stopped being ready: %s" % not_ready
        assert len(ids) > 50
        for s in streams:
            assert_once_in_order(s.events(len(ids)), ids, values)
        for s in streams:
            assert s.nothing_more(0.5), "an event came twice"
        # The other forwarder had every event: nothing was missing, so nothing was read back.
        assert dep.gaps() == gaps_before

        # Back on the same ports, it is joined again: after the other one dies, it carries it all.
        dep.restart_bus(0)
        assert wait_for(lambda: dep.wired(0), 20), "the services did not connect to the restarted forwarder"
        dep.wait_carrying(0)
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
        with requests.Session() as session:
            more = [dep.insert(session, auth, "k", {"n": len(values) + i}) for i in range(50)]
        for s in streams:
            assert_once_in_order(s.events(len(more)), more, list(range(len(values), len(values) + 50)))
        assert all(status_of(s.url("/readyz")) == 200 for s in dep.streams)
    finally:
        for s in streams:
            s.close()


def test_revocation_closes_streams_with_one_forwarder_down(dep):
    if dep.buses[0].alive() and dep.buses[1].alive():
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
    check_revocation_closes_streams(dep)


def test_a_stream_started_with_one_forwarder_down_is_ready(dep):
    # Forwarders are redundant: one connected is enough, where distinct publishers need them all.
    if dep.buses[0].alive() and dep.buses[1].alive():
        dep.buses[1].kill()
        dep.dead.append(dep.buses[1])
    late = Service("broker-stream", dep.common + dep.key_flag("stream0"), dep.workdir, "stream-late")
    dep.streams.append(late)
    assert wait_for(lambda: status_of(late.url("/readyz")) == 200 or not late.alive(), 20), late.stderr()[-2000:]
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    s = Stream(late.port, auth)
    try:
        assert s.status == 200
        # Its subscription reaches the publishers through the forwarder a moment after it connects.
        with requests.Session() as session:
            first = dep.insert(session, auth, "probe", {"n": 0})
            got = None
            for i in range(1, 50):
                try:
                    got = s.next_event(0.2)
                    break
                except (TimeoutError, socket.timeout):
                    first = dep.insert(session, auth, "probe", {"n": i})
            assert got is not None and got[0] <= first
            ids = [dep.insert(session, auth, "after", {"n": i}) for i in range(20)]
        rest = [e for e in s.events(first - got[0] + len(ids)) if e[1] == "after"]
        assert [e[0] for e in rest] == ids
    finally:
        s.close()


def test_control_messages_travel_through_the_forwarders(dep):
    # certd (no network time configured) says so on the bus; the others learn it through a forwarder.
    def clock_warning():
        r = requests.get(dep.auth.url("/readyz"), timeout=5)
        return r.status_code == 200 and "--ntp_servers is empty" in r.json()["clock"].get("warning", "")
    assert wait_for(clock_warning, 15), requests.get(dep.auth.url("/readyz"), timeout=5).text


def test_every_process_stops_cleanly(dep):
    # A restarted forwarder is stopped too; both were killed once, so restart the second for the check.
    if not dep.buses[1].alive():
        dep.restart_bus(1)
    logs = {}
    for s in dep.everyone():
        assert s.alive(), "%s ended early:\n%s" % (s.name, s.stderr()[-2000:])
    for s in dep.everyone():
        rc = s.stop()
        logs[s.stderr_path] = s.stderr()
        assert rc == 0, "%s exited %r:\n%s" % (s.name, rc, s.stderr()[-3000:])
    for path, text in logs.items():
        bad = [line for line in text.splitlines() if " ERROR: " in line or "fill a gap" in line or "ERROR: AddressSanitizer" in line]
        assert not bad, "%s:\n%s" % (path, "\n".join(bad[:20]))

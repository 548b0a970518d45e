"""Presence across stream replicas: three broker-stream processes behind two bus forwarders
(CURVE), each answering who is online for the whole deployment, and a replica killed with
SIGKILL whose users leave everywhere within 15 s.

The deployment is split_deployment.py's, with three stream processes.
"""
import json
import os
import struct
import time
import uuid

import pytest
import requests
import zmq

from split_deployment import deployment_fixture, metric, read_keys, wait_for
from split_stream import Stream

LEAVE_DEADLINE = 15.0  # a dead replica's users are gone everywhere within this (docs/API.md)


@pytest.fixture(scope="module")
def dep():
    yield from deployment_fixture(curve=True, streams=3)



def listed(service, auth):
    r = requests.get(service.url("/presence"), headers=auth, timeout=5)
    assert r.status_code == 200, r.text
    return {u["username"]: u["connections"] for u in r.json()["users"]}


def joins_and_leaves(stream, until, timeout):
    """Reads $presence frames until until(joined, left) holds; (joined, left, seconds)."""
    joined, left = set(), set()
    start = time.monotonic()
    while not until(joined, left):
        frame = stream.next_presence(max(0.05, timeout - (time.monotonic() - start)))
        joined |= set(frame.get("join", []))
        left |= set(frame.get("leave", []))
    return joined, left, time.monotonic() - start


def test_every_replica_knows_everyone_and_a_killed_replica_leaves(dep):
    tenant = "t" + uuid.uuid4().hex[:8]
    watcher, wauth = dep.make_user(tenant)
    alice, aauth = dep.make_user(tenant)
    bob, bauth = dep.make_user(tenant)
    _, outsider = dep.make_user("other" + uuid.uuid4().hex[:6])
    s0, s1, s2 = dep.streams
    w = Stream(s0.port, wauth, "/sse?presence=true&events=none")
    opened = [w]
    try:
        assert w.status == 200
        assert set(w.next_presence()) == {"users"}
        opened += [Stream(s1.port, aauth), Stream(s2.port, bauth), Stream(s2.port, bauth, "/sse?events=x")]
        assert all(s.status == 200 for s in opened)
        joined, _, _ = joins_and_leaves(w, lambda j, l: {watcher, alice, bob} <= j, 10)
        want = {watcher: 1, alice: 1, bob: 2}
        for s in dep.streams:
            assert wait_for(lambda: listed(s, wauth) == want, 5), "%s lists %r" % (s.tag, listed(s, wauth))
            assert listed(s, outsider) == {}, "another tenant sees names"
        assert wait_for(lambda: metric(s0, "broker_presence_users_online") >= 3, 5)
        assert metric(s2, "broker_presence_users_local") >= 1

        # SIGKILL: nothing is said on the way out; the others notice the silence.
        s2.kill()
        dep.dead.append(s2)
        killed = time.monotonic()
        _, left, _ = joins_and_leaves(w, lambda j, l: bob in l, LEAVE_DEADLINE + 2)
        took = time.monotonic() - killed
        assert took <= LEAVE_DEADLINE, "bob left %.1f s after the replica died" % took
        assert alice not in left and watcher not in left
        for s in (s0, s1):
            assert wait_for(lambda: listed(s, wauth) == {watcher: 1, alice: 1}, 3), listed(s, wauth)
    finally:
        for s in opened:
            s.close()


def test_presence_lists_that_do_not_parse_are_dropped_and_counted(dep):
    # From a trusted key (ingest's): the bus takes the frames, the stream checks what is in them.
    live = [s for s in dep.streams if s not in dep.dead]
    before = sum(metric(s, "broker_presence_dropped_total") for s in live)
    malformed_before = sum(metric(s, "broker_bus_malformed_total") for s in live)
    keys = read_keys(os.path.join(dep.keys, "ingest"))
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.curve_publickey, pub.curve_secretkey = keys["public-key"].encode(), keys["secret-key"].encode()
    pub.curve_serverkey = read_keys(dep.public_key_file("bus0"))["public-key"].encode()
    pub.connect("tcp://127.0.0.1:%d" % dep.bus_ports[0])
    header = lambda seq: struct.pack(">QQ", 0x5eed, seq) + b"F"
    bad_lists = [b"not json", json.dumps({"t": {"u": -1}}).encode(), json.dumps({"t": {"u": 10 ** 7}}).encode(),
                 json.dumps({"": {"u": 1}}).encode(), json.dumps({"t": ["u"]}).encode(), json.dumps([1]).encode()]
    bad_frames = [[b"pr/", b"short", b"{}"], [b"pr/", struct.pack(">QQ", 1, 1) + b"X", b"{}"]]
    try:
        deadline = time.monotonic() + 2
        seq = 0
        while time.monotonic() < deadline:  # the SUB side may take a moment to join
            for body in bad_lists:
                seq += 1
                pub.send_multipart([b"pr/", header(seq), body])
            for frames in bad_frames:
                pub.send_multipart(frames)
            time.sleep(0.1)
        assert wait_for(lambda: sum(metric(s, "broker_presence_dropped_total") for s in live) >=
                        before + len(bad_lists) * len(live), 5)
        assert wait_for(lambda: sum(metric(s, "broker_bus_malformed_total") for s in live) >=
                        malformed_before + len(bad_frames) * len(live), 5)
        assert all(s.alive() for s in live)
        _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
        assert listed(live[0], auth) == {}
    finally:
        pub.close()
        ctx.term()


def test_every_process_stops_cleanly(dep):
    # Last in the module: SIGTERM after everything, each exits 0 (ASan's leak check included).
    for s in dep.everyone():
        if s not in dep.dead:
            code = s.stop()
            assert code == 0, "%s exited %r:\n%s" % (s.tag, code, s.stderr()[-2000:])

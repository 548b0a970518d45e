"""The split deployment (scripts/run-split.sh): auth, ingest and two stream
processes sharing one store, the bus on tcp, an nginx gateway in front.

Run by tests/run_all.sh with the deployment already up; it reads
BROKER_SPLIT_GATEWAY (http://127.0.0.1:PORT), BROKER_SPLIT_STREAMS
(comma-separated ports of the two stream processes) and BROKER_SPLIT_INGEST
(broker-ingest's own port).
"""
import os
import time
import uuid

import pytest
import requests

from split_stream import Stream

GATEWAY = os.environ.get("BROKER_SPLIT_GATEWAY")
STREAMS = [int(p) for p in os.environ.get("BROKER_SPLIT_STREAMS", "").split(",") if p]
INGEST = int(os.environ.get("BROKER_SPLIT_INGEST") or 0)
ADMIN = os.environ.get("BROKER_SPLIT_ADMIN_TOKEN", "letmein")

pytestmark = pytest.mark.skipif(not GATEWAY or len(STREAMS) < 2,
                                reason="no split deployment (BROKER_SPLIT_GATEWAY/BROKER_SPLIT_STREAMS unset)")


def make_user(tenant):
    name = f"u-{uuid.uuid4().hex[:10]}"
    r = requests.post(f"{GATEWAY}/create_user", json={"username": name, "password": "password123",
                                                      "admin_token": ADMIN, "tenant_name": tenant}, timeout=10)
    assert r.status_code == 200, r.text
    jwt = requests.post(f"{GATEWAY}/login", json={"username": name, "password": "password123"}, timeout=10).json()["jwt"]
    return name, {"Authorization": f"Bearer {jwt}"}


def insert(auth, event, data):
    r = requests.post(f"{GATEWAY}/insert", json={"event": event, "data": data}, headers=auth, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def test_both_stream_processes_see_every_event():
    tenant = f"t{uuid.uuid4().hex[:8]}"
    _, auth = make_user(tenant)
    streams = [Stream(port, auth) for port in STREAMS]
    try:
        assert all(s.status == 200 for s in streams)
        ids = [insert(auth, f"e{i % 3}", {"n": i}) for i in range(30)]
        for s in streams:
            got = [s.next_event() for _ in ids]
            assert [g[0] for g in got] == ids
            assert [g[2]["n"] for g in got] == list(range(30))
    finally:
        for s in streams:
            s.close()


def test_gateway_serves_the_stream_and_sync_on_connect():
    tenant = f"t{uuid.uuid4().hex[:8]}"
    _, auth = make_user(tenant)
    insert(auth, "a", 1)
    second = insert(auth, "b", 2)
    third = insert(auth, "a", 3)
    port = int(GATEWAY.rsplit(":", 1)[1])
    s = Stream(port, auth)
    try:
        assert s.status == 200
        assert s.next_event() == (second, "b", 2)
        assert s.next_event() == (third, "a", 3)
        live = insert(auth, "c", {"x": "é"})
        assert s.next_event() == (live, "c", {"x": "é"})
    finally:
        s.close()


def test_resume_on_the_other_process_misses_nothing():
    tenant = f"t{uuid.uuid4().hex[:8]}"
    _, auth = make_user(tenant)
    first = Stream(STREAMS[0], auth)
    ids = [insert(auth, "e", i) for i in range(5)]
    seen = [first.next_event()[0] for _ in range(3)]
    first.close()
    more = [insert(auth, "e", i) for i in range(5, 8)]
    second = Stream(STREAMS[1], dict(auth, **{"Last-Event-ID": str(seen[-1])}))
    try:
        rest = [second.next_event()[0] for _ in range(len(ids) - 3 + len(more))]
        assert rest == ids[3:] + more
    finally:
        second.close()


def test_revocation_through_auth_closes_streams_on_every_process():
    tenant = f"t{uuid.uuid4().hex[:8]}"
    name, auth = make_user(tenant)
    _, other_auth = make_user(tenant)
    streams = [Stream(port, auth) for port in STREAMS]
    bystander = Stream(STREAMS[0], other_auth)
    try:
        r = requests.post(f"{GATEWAY}/revoke_user", json={"admin_token": ADMIN, "username": name}, timeout=10)
        assert r.status_code == 200
        assert all(s.closed_within(5) for s in streams)
        live = insert(other_auth, "still", True)
        assert bystander.next_event() == (live, "still", True)
        r = requests.post(f"{GATEWAY}/insert", json={"event": "x", "data": 1}, headers=auth, timeout=10)
        assert r.status_code == 401
    finally:
        for s in streams + [bystander]:
            s.close()


def test_every_service_reports_ready():
    for port in STREAMS:
        r = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "ready"
    assert requests.get(f"{GATEWAY}/healthz", timeout=5).json()["status"] == "ok"


def fast_inserts():
    """broker-ingest's broker_inserts_fast_total: inserts its engine answered itself."""
    r = requests.get(f"http://127.0.0.1:{INGEST}/metrics", timeout=5)
    assert r.status_code == 200, r.text[:300]
    for line in r.text.splitlines():
        if line.startswith("broker_inserts_fast_total "):
            return float(line.split()[1])
    raise AssertionError("broker-ingest's /metrics has no broker_inserts_fast_total")


def test_ingest_answers_keepalive_inserts_on_its_engine():
    # broker-ingest runs the stream engine without streams: plain keep-alive inserts (what the
    # gateway forwards over its upstream keep-alive) are checked, stored in batches and
    # answered there (refusals of bad credentials or bodies too), everything else by the
    # request/response server. Sent to broker-ingest's own port on a new connection: a pooled
    # gateway connection that once carried another kind of insert (Basic credentials, say)
    # belongs to the request/response server until nginx closes it (README).
    if not INGEST:
        pytest.skip("BROKER_SPLIT_INGEST unset")
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    _, auth = make_user(tenant)
    sub = Stream(STREAMS[0], auth)
    try:
        assert sub.status == 200
        before = fast_inserts()
        with requests.Session() as s:
            ids = []
            for i in range(20):
                r = s.post(f"http://127.0.0.1:{INGEST}/insert", json={"event": "fast", "data": {"n": i}},
                           headers=auth, timeout=10)
                assert r.status_code == 200, r.text
                assert r.headers["Content-Type"].startswith("application/json")
                ids.append(int(r.json()["id"]))
        assert ids == sorted(ids) and len(set(ids)) == 20, ids
        assert fast_inserts() - before >= 20, "broker-ingest's engine answered fewer than the 20 inserts"
        got = [sub.next_event() for _ in range(20)]
        assert [(i, e, d["n"]) for i, e, d in got] == [(ids[n], "fast", n) for n in range(20)]
    finally:
        sub.close()


def test_ingest_hands_everything_else_to_its_request_server():
    if not INGEST:
        pytest.skip("BROKER_SPLIT_INGEST unset")
    base = f"http://127.0.0.1:{INGEST}"
    _, auth = make_user(f"t-{uuid.uuid4().hex[:8]}")
    with requests.Session() as s:
        # refused on the engine's path, answered by the other server on the same connection
        r = s.post(f"{base}/insert", json={"event": "e", "data": 1}, headers={"Authorization": "Bearer nope"},
                   timeout=10)
        assert r.status_code == 401 and "error" in r.json()
        r = s.post(f"{base}/insert", json={"data": 1}, headers=auth, timeout=10)
        assert r.status_code == 400 and "event" in r.json()["error"]
        r = s.post(f"{base}/insert", json={"event": "e", "data": 1}, headers=auth, timeout=10)
        assert r.status_code == 200 and int(r.json()["id"]) > 0
    # no streams here: GET /sse is an unknown route, answered at once, never a stream
    r = requests.get(f"{base}/sse", headers=auth, timeout=5, stream=True)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(f"{base}/readyz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_filtered_clients_resume_through_the_gateway_and_miss_nothing_that_matched():
    # Clients of three rooms (events=room.N.*) and one of two exact names come and go through
    # the gateway, which sends each reconnection to either stream process, while inserts of
    # every room and of other names flow: each gets exactly the events it asked for, each once,
    # in order.
    import threading

    tenant = f"t{uuid.uuid4().hex[:8]}"
    _, auth = make_user(tenant)
    port = int(GATEWAY.rsplit(":", 1)[1])
    filters = {"/sse?events=room.0.*": lambda n: n.startswith("room.0."),
               "/sse?events=room.1.*": lambda n: n.startswith("room.1."),
               "/sse?events=room.2.*,lobby": lambda n: n.startswith("room.2.") or n == "lobby",
               "/sse?events=lobby,%2Cpost": lambda n: n in ("lobby", ",post")}
    names = ["room.0.msg", "room.1.msg", "room.2.typing", "room.3.msg", "lobby", ",post", "other"]
    sent, stop = [], threading.Event()

    def writer():
        with requests.Session() as session:
            for i in range(300):
                if stop.is_set():
                    return
                name = names[i % len(names)]
                r = session.post(f"{GATEWAY}/insert", json={"event": name, "data": i}, headers=auth, timeout=10)
                assert r.status_code == 200, r.text
                sent.append((int(r.json()["id"]), name))

    # A first event so that each client has an id to resume from.
    base = insert(auth, "start", 0)
    got = {path: [] for path in filters}
    last = {path: base for path in filters}
    t = threading.Thread(target=writer)
    t.start()
    try:
        for rnd in range(4):
            streams = {p: Stream(port, dict(auth, **{"Last-Event-ID": str(last[p])}), p) for p in filters}
            try:
                time.sleep(0.3)
                for p, s in streams.items():
                    while True:
                        try:
                            ev = s.next_event(0.05 if rnd < 3 else 0.5)
                        except (TimeoutError, OSError):
                            break
                        got[p].append((ev[0], ev[1]))
                        last[p] = ev[0]
            finally:
                for s in streams.values():
                    s.close()
    finally:
        stop.set()
        t.join(60)
    # What is still to come after the last round: read it with a final resume each.
    for p in filters:
        s = Stream(port, dict(auth, **{"Last-Event-ID": str(last[p])}), p)
        try:
            want = [(i, n) for i, n in sent if filters[p](n)]
            while len(got[p]) < len(want):
                ev = s.next_event(5)
                got[p].append((ev[0], ev[1]))
            assert got[p] == want, "%s: missed %s, extra %s" % (
                p, sorted(set(want) - set(got[p]))[:5], sorted(set(got[p]) - set(want))[:5])
            assert s.nothing_more(0.3)
        finally:
            s.close()

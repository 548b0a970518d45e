"""Channels and presence of docs/API.md: GET /sse?events= (exact names and prefixes, on the
snapshot, live and on a Last-Event-ID replay), ?presence=true ($presence frames without an id),
GET /presence, and the names starting with '$' that belong to the server.

Runs wherever the black-box suite runs: the all-in-one broker (plain, TLS, ASan), and through
the gateway of the split deployment and of the compose deployment, where a stream and the
presence it reports may each be on any stream replica: every wait for a presence change is
bounded by PRESENCE_WAIT, a few times the replicas' quarter-second rounds.
"""
import json
import time
import urllib.parse

import pytest
import requests

from conftest import assert_error, assert_ok, basic_header, bearer_header, needs_own_server, uniq
from sse_client import Closed, SSEClient, Timeout

HEAD_TIMEOUT = 5.0
PRESENCE_WAIT = 6.0


def new_user(broker, tenant=None):
    u = broker.create_user(tenant_name=tenant or uniq("t"))
    return u, broker.login(u.username, u.password)


def insert(broker, user, event, data=None, session=None):
    fn = session.post if session is not None else requests.post
    kw = {"verify": broker.ca_path} if broker.ca_path else {}
    r = fn(broker.url("/insert"), json={"event": event, "data": data if data is not None else event},
           headers=user.basic(), timeout=10, **kw)
    return assert_ok(r)["id"]


def sse_path(events=None, presence=False, last=None):
    q = []
    if events is not None:
        q.append("events=" + events)
    if presence:
        q.append("presence=true")
    if last is not None:
        q.append("last_event_id=" + last)
    return "/sse" + ("?" + "&".join(q) if q else "")


def open_stream(broker, headers, **kw):
    path = sse_path(**kw)
    c = SSEClient.open(broker.base_url, path, headers=headers)
    status = c.read_head(HEAD_TIMEOUT)
    if status != 200:
        body = c.read_body(2)
        c.close()
        raise AssertionError("GET %s answered %d: %r" % (path, status, body))
    kind, val = c.next_item(HEAD_TIMEOUT)
    assert (kind, val) == ("retry", "3000"), (kind, val)
    return c


def names(events):
    return [e.event for e in events]


def presence_frame(c, timeout=PRESENCE_WAIT):
    """The next $presence frame's data; it must carry no id."""
    ev = c.next_event(timeout)
    assert ev.event == "$presence", "expected a $presence frame, got %r" % (ev,)
    assert ev.id is None and b"\nid:" not in b"\n" + ev.raw, "a $presence frame has an id: %r" % ev.raw
    return json.loads(ev.data)


def wait_presence(c, want_join=(), want_leave=(), timeout=PRESENCE_WAIT):
    """Reads $presence change frames until every name of want_join joined and every name of
    want_leave left (in frames, in that order); returns every change frame read."""
    joined, left, frames = set(), set(), []
    deadline = time.monotonic() + timeout
    while not (set(want_join) <= joined and set(want_leave) <= left):
        left_time = deadline - time.monotonic()
        if left_time <= 0:
            raise AssertionError("presence: joined %s, left %s; wanted join %s, leave %s; frames %r"
                                 % (joined, left, want_join, want_leave, frames))
        f = presence_frame(c, left_time)
        assert set(f) == {"join", "leave"}, f
        frames.append(f)
        joined |= set(f["join"])
        left |= set(f["leave"])
    return frames


def presence_list(broker, headers):
    r = broker.get("/presence", headers=headers)
    body = assert_ok(r)
    assert set(body) == {"users"}, body
    return {u["username"]: u["connections"] for u in body["users"]}


# ================================================================ choosing events

def test_snapshot_live_and_replay_take_only_matching_names(broker):
    u, jwt = new_user(broker)
    sess = requests.Session()
    first = {n: insert(broker, u, n, session=sess)
             for n in ("room.1.msg", "room.2.msg", "room.1.typing", "lobby", "room.10.msg")}
    auth = bearer_header(jwt)
    with open_stream(broker, auth, events="room.1.*,lobby") as f, open_stream(broker, auth) as all_:
        snap = f.events_until(3, 5)
        assert names(snap) == ["room.1.msg", "room.1.typing", "lobby"], names(snap)
        assert [e.id for e in snap] == [first["room.1.msg"], first["room.1.typing"], first["lobby"]]
        all_.events_until(5, 5)
        sent = [(n, insert(broker, u, n, session=sess))
                for n in ("room.2.msg", "room.1.msg", "room.10.x", "lobby.x", "lobby", "room.1.")]
        live = f.events_until(3, 5)
        assert [(e.event, e.id) for e in live] == [sent[1], sent[4], sent[5]]
        # The unfiltered stream got everything, in order: the filter costs it nothing.
        assert [(e.event, e.id) for e in all_.events_until(6, 5)] == sent
        f.expect_silence(0.3)
        last = live[-1].id
    # Missed while away: 40 events that do not match (more than a page of the replay's reads)
    # around two that do; the resume replays only those two, with the tenant's ids (a gap is
    # not a loss).
    missed = [insert(broker, u, "room.2.msg", {"i": i}, sess) for i in range(20)]
    want = [insert(broker, u, "room.1.msg", {"k": 1}, sess)]
    missed += [insert(broker, u, "noise", {"i": i}, sess) for i in range(20)]
    want.append(insert(broker, u, "lobby", {"k": 2}, sess))
    with open_stream(broker, dict(auth, **{"Last-Event-ID": last}), events="room.1.*,lobby") as f:
        got = f.events_until(2, 5)
        assert [e.id for e in got] == want
        assert int(got[0].id) > int(last) + 1, "ids keep the tenant's sequence"
        nxt = insert(broker, u, "room.1.end", session=sess)
        insert(broker, u, "other", session=sess)
        assert f.next_event(5).id == nxt
        f.expect_silence(0.3)


@pytest.mark.parametrize("how", ["bearer", "basic", "access_token"])
def test_filter_with_every_credential(broker, how):
    u, jwt = new_user(broker)
    insert(broker, u, "a")
    insert(broker, u, "b")
    if how == "bearer":
        c = open_stream(broker, bearer_header(jwt), events="b")
    elif how == "basic":
        c = open_stream(broker, u.basic(), events="b")
    else:
        c = SSEClient.open(broker.base_url, "/sse?events=b&access_token=" + jwt)
        assert c.read_head(HEAD_TIMEOUT) == 200
    with c:
        assert names(c.events_until(1, 5)) == ["b"]
        insert(broker, u, "a")
        nxt = insert(broker, u, "b")
        assert c.next_event(5).id == nxt


def test_percent_encoded_comma_is_part_of_a_name(broker):
    u, jwt = new_user(broker)
    ids = {n: insert(broker, u, n) for n in ("a,b", "a", "b", "x*", "xy")}
    with open_stream(broker, bearer_header(jwt), events="a%2Cb,x%2A") as c:
        snap = c.events_until(2, 5)
        assert sorted(names(snap)) == ["a,b", "x*"]
        c.expect_silence(0.3)
    with open_stream(broker, bearer_header(jwt), events="a,b") as c:
        assert names(c.events_until(2, 5)) == ["a", "b"]
        c.expect_silence(0.3)
    assert ids


def test_star_alone_is_every_event_byte_for_byte(broker):
    u, jwt = new_user(broker)
    for n in ("one", "two", "three"):
        insert(broker, u, n, {"n": n})
    raws = []
    for kw in ({}, {"events": "*"}, {"events": "one,*"}):
        with open_stream(broker, bearer_header(jwt), **kw) as c:
            raws.append([e.raw for e in c.events_until(3, 5)])
    assert raws[0] == raws[1] == raws[2]


BAD_EVENTS = [
    ("", "item 1"),
    ("a,,b", "item 2"),
    ("a,", "item 2"),
    (",".join(["e%d" % i for i in range(65)]), "65 items"),
    ("%24presence", "reserved"),
    ("%24x*", "reserved"),
    ("bad%01", "control characters"),
    ("a,%zz", "item 2"),
    ("n" * 257, "256 bytes"),
]


@pytest.mark.parametrize("value,says", BAD_EVENTS, ids=["empty", "empty-item", "trailing-comma", "65-items",
                                                       "reserved", "reserved-prefix", "control", "bad-escape",
                                                       "too-long"])
def test_bad_events_value_400_names_the_item(broker, shared_user, value, says):
    # A raw request: an HTTP library would re-encode a bad escape into a good one.
    with SSEClient.open(broker.base_url, "/sse?events=" + value, headers=shared_user.basic()) as c:
        assert c.read_head(HEAD_TIMEOUT) == 400, c.head_raw
        assert c.headers.get("content-type", "").startswith("application/json"), c.head_raw
        body = c.json_body()
    assert says in body["error"], body


def test_events_longer_than_4_kib_400(broker, shared_user):
    value = ",".join(["n%04d" % i for i in range(60)]) + "," + "x" * 4100
    body = assert_error(broker.get("/sse?events=" + value, headers=shared_user.basic()), 400)
    assert "4096" in body["error"], body


def test_inserting_a_reserved_name_400(broker, shared_user):
    for name in ("$presence", "$anything"):
        r = broker.post("/insert", {"event": name, "data": 1}, headers=shared_user.basic())
        body = assert_error(r, 400)
        assert "reserved" in body["error"], body
    # '$' elsewhere in a name is an ordinary character.
    assert_ok(broker.post("/insert", {"event": "price$", "data": 1}, headers=shared_user.basic()))


# ================================================================ presence

def test_presence_join_leave_list_and_no_id(broker):
    tenant = uniq("t")
    watcher, wjwt = new_user(broker, tenant)
    other, ojwt = new_user(broker, tenant)
    u, _ = new_user(broker, tenant)
    insert(broker, u, "hello")
    with open_stream(broker, bearer_header(wjwt), events="hello", presence=True) as w:
        # Before the snapshot: the list; then the snapshot's event.
        first = presence_frame(w)
        assert set(first) == {"users"} and isinstance(first["users"], list), first
        for entry in first["users"]:
            assert set(entry) == {"username", "connections"} and entry["connections"] >= 1, entry
        assert w.next_event(5).event == "hello"
        wait_presence(w, want_join=[watcher.username])
        o1 = open_stream(broker, bearer_header(ojwt))
        o2 = open_stream(broker, other.basic(), events="nothing")
        wait_presence(w, want_join=[other.username])
        deadline = time.monotonic() + PRESENCE_WAIT
        listed = {}
        while time.monotonic() < deadline:
            listed = presence_list(broker, bearer_header(wjwt))
            if listed.get(other.username) == 2:
                break
            time.sleep(0.2)
        assert listed.get(other.username) == 2 and listed.get(watcher.username) == 1, listed
        o1.close()
        o2.close()
        wait_presence(w, want_leave=[other.username])
        # Presence frames never move Last-Event-ID: the next event's id follows the tenant's.
        nxt = insert(broker, u, "hello")
        ev = w.next_event(5)
        while ev.event == "$presence":
            ev = w.next_event(5)
        assert ev.id == nxt
    assert other.username not in presence_list(broker, other.basic())


def test_presence_stays_in_its_tenant(broker):
    a, ajwt = new_user(broker)
    b, bjwt = new_user(broker)
    with open_stream(broker, bearer_header(bjwt), presence=True) as wb:
        presence_frame(wb)
        with open_stream(broker, bearer_header(ajwt), presence=True) as wa:
            first = presence_frame(wa)
            assert b.username not in [x["username"] for x in first["users"]]
            wait_presence(wa, want_join=[a.username])
            # b sees itself join, never a.
            frames = wait_presence(wb, want_join=[b.username])
            time.sleep(0.6)
            try:
                while True:
                    frames.append(presence_frame(wb, 0.2))
            except Timeout:
                pass
            seen = {n for f in frames for n in f["join"] + f["leave"]}
            assert a.username not in seen, frames
            assert a.username not in presence_list(broker, bearer_header(bjwt))
            assert b.username not in presence_list(broker, bearer_header(ajwt))


def test_presence_changes_are_coalesced(broker):
    tenant = uniq("t")
    watcher, wjwt = new_user(broker, tenant)
    crowd = [new_user(broker, tenant)[1] for _ in range(12)]
    with open_stream(broker, bearer_header(wjwt), presence=True) as w:
        presence_frame(w)
        wait_presence(w, want_join=[watcher.username])
        started = time.monotonic()
        streams = [open_stream(broker, bearer_header(j)) for j in crowd]
        frames = []
        deadline = time.monotonic() + PRESENCE_WAIT
        joined = set()
        while len(joined) < len(crowd) and time.monotonic() < deadline:
            f = presence_frame(w, deadline - time.monotonic())
            frames.append(f)
            joined |= set(f["join"])
        elapsed = time.monotonic() - started
        for s in streams:
            s.close()
        assert len(joined) == len(crowd), frames
        # At most 4 frames a second (and one more for the round in progress).
        assert len(frames) <= 4 * elapsed + 2, (len(frames), elapsed, frames)


def test_presence_query_must_be_true_or_false(broker, shared_user):
    body = assert_error(broker.get("/sse?presence=yes", headers=shared_user.basic()), 400)
    assert "presence" in body["error"]


def test_presence_needs_credentials(broker, shared_user):
    assert_error(broker.get("/presence"), 401)
    assert_error(broker.get("/presence", headers=basic_header("nobody-" + uniq(), "wrong-password")), 401)
    assert broker.request("HEAD", "/presence").status_code == 401
    body = assert_error(broker.get("/presence", headers={"Authorization": "Bearer " + "x" * 5000}), 400)
    assert "too long" in body["error"]


def test_presence_head_is_the_head_alone(broker, shared_user):
    r = broker.request("HEAD", "/presence", headers=shared_user.basic())
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.content)
    assert int(r.headers["Content-Length"]) > 0
    assert r.headers["Content-Type"].startswith("application/json")


def test_presence_wrong_passwords_are_limited(broker_factory):
    b = broker_factory(["--login_limit_user=2"])
    u = b.create_user()
    statuses = [b.get("/presence", headers=basic_header(u.username, "wrong-password")).status_code
                for _ in range(3)]
    assert statuses[:2] == [401, 401] and statuses[2] == 429, statuses


def test_presence_off(broker_factory):
    b = broker_factory(["--presence=false"])
    u = b.create_user()
    body = assert_error(b.get("/sse?presence=true", headers=u.basic()), 400)
    assert "--presence=false" in body["error"]
    body = assert_error(b.get("/presence", headers=u.basic()), 404)
    assert "--presence=false" in body["error"]
    # Streams without it work as ever.
    with open_stream(b, u.basic(), events="x") as c:
        c.expect_silence(0.2)

"""The MongoDB backend under faults: the MongoDB-wire server (FerretDB, see
tests/ferretdb) is stopped while inserts flow, then started again.

Expected (issue 4, SPEC "nothing is lost"): while it is down inserts answer
5xx with a JSON error and /readyz answers 503; no insert that was answered
200 is lost; service resumes by itself once the server is back.

Needs BROKER_BIN (the broker binary) and the fixture scripts; started by
tests/run_all.sh, or by hand with FERRETDB_FIXTURE set to a built fixture.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
import requests

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))
FIXTURE = os.path.join(REPO, "tests", "ferretdb")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ferret(cmd, *args):
    return subprocess.run([os.path.join(FIXTURE, cmd), *map(str, args)], capture_output=True, text=True,
                          timeout=180)


@pytest.fixture
def deployment():
    work = tempfile.mkdtemp(prefix="broker-mongo-fault-")
    fport, bport = free_port(), free_port()
    r = ferret("start.sh", fport, os.path.join(work, "fdb"))
    assert r.returncode == 0, r.stderr
    uri = f"mongodb://127.0.0.1:{fport}/fault_{uuid.uuid4().hex[:8]}"
    log = open(os.path.join(work, "broker.log"), "w")
    proc = subprocess.Popen([BROKER_BIN, f"--port={bport}", f"--db={work}/db", f"--store={uri}",
                             "--admin_token=adm", "--jwt_secret=sec"], stderr=log, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{bport}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("broker on MongoDB did not become ready:\n" + open(os.path.join(work, "broker.log")).read())
    yield {"base": base, "work": work, "fport": fport, "fdir": os.path.join(work, "fdb"), "proc": proc}
    proc.terminate()
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "killed"
    ferret("stop.sh", os.path.join(work, "fdb"))
    log.close()
    text = open(os.path.join(work, "broker.log")).read()
    if not os.environ.get("BROKER_TEST_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("KEPT", work)
    assert code == 0, "broker did not exit cleanly (%s):\n%s" % (code, text[-3000:])


def read_replay(base, auth, expected_count, timeout=20):
    """Every event of the tenant, from the store, through /sse with Last-Event-ID: 0."""
    got = []
    with requests.get(base + "/sse", headers={"Last-Event-ID": "0"}, auth=auth, stream=True,
                      timeout=(5, timeout)) as r:
        assert r.status_code == 200
        deadline = time.monotonic() + timeout
        event = {}
        # chunk_size=1: the stream has no Content-Length and no chunked
        # encoding, so a larger chunk blocks until that many bytes arrived; the
        # tail of the replay would then wait for keep-alives to fill it, and be
        # cut off by the deadline below (or hang for minutes).
        for line in r.iter_lines(chunk_size=1, decode_unicode=True):
            if line.startswith("id: "):
                event["id"] = int(line[4:])
            elif line.startswith("data: "):
                event["data"] = json.loads(line[6:])
            elif line == "" and "id" in event:
                got.append(event)
                event = {}
                if len(got) >= expected_count:
                    break
            if time.monotonic() > deadline:
                break
    return got


def test_inserts_fail_cleanly_while_mongodb_is_down_and_nothing_answered_is_lost(deployment):
    base = deployment["base"]
    r = requests.post(base + "/create_user", json={"username": "f", "password": "password1", "admin_token": "adm",
                                                   "tenant_name": "fault"}, timeout=10)
    assert r.status_code == 200, r.text
    auth = ("f", "password1")
    answered, failures, stop = [], [], threading.Event()

    def writer():
        n = 0
        session = requests.Session()
        while not stop.is_set() and n < 5000:
            n += 1
            try:
                r = session.post(base + "/insert", json={"event": "tick", "data": {"n": n}}, auth=auth, timeout=15)
            except requests.RequestException as e:
                failures.append(("exception", str(e)))
                continue
            if r.status_code == 200:
                answered.append((int(r.json()["id"]), n))
            else:
                failures.append((r.status_code, r.json()))
                time.sleep(0.05)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.5)
    before = len(answered)
    assert before > 0, failures[:5]
    r = ferret("stop.sh", deployment["fdir"])
    assert r.returncode == 0, r.stderr
    # An insert under way when the server went waits for the driver's server selection before it
    # fails: wait for the first failure (bounded), then for readiness to say so.
    deadline = time.monotonic() + 20
    while not failures and time.monotonic() < deadline:
        time.sleep(0.2)
    # The store's checker pings every 2 s, and a ping to a server that went away waits for the
    # driver's server selection (5 s): readiness says so within a few seconds, not at once.
    deadline = time.monotonic() + 15
    ready_down = requests.get(base + "/readyz", timeout=15)
    while ready_down.status_code != 503 and time.monotonic() < deadline:
        time.sleep(0.5)
        ready_down = requests.get(base + "/readyz", timeout=15)
    down_failures = len(failures)
    r = ferret("start.sh", deployment["fport"], deployment["fdir"])
    assert r.returncode == 0, r.stderr
    # Service resumes by itself: inserts succeed again within a bounded time.
    deadline = time.monotonic() + 45
    resumed = False
    mark = len(answered)
    while time.monotonic() < deadline:
        if len(answered) > mark + 20:
            resumed = True
            break
        time.sleep(0.2)
    stop.set()
    t.join(30)
    assert ready_down.status_code == 503, ready_down.text
    assert "error" in ready_down.json()
    assert down_failures > 0, "no insert failed while the server was down"
    for status, body in [f for f in failures if f[0] != "exception"]:
        assert 500 <= status < 600, (status, body)
        assert isinstance(body.get("error"), str) and body["error"], body
    assert resumed, "inserts did not resume after the server came back; failures: %r" % failures[-3:]
    assert requests.get(base + "/readyz", timeout=10).status_code == 200
    # Nothing answered 200 is lost: every such id is in the store, with its data.
    ids = sorted(i for i, _ in answered)
    assert len(set(ids)) == len(ids), "an id was answered twice"
    stored = read_replay(base, auth, len(ids) + 50)
    stored_ids = {e["id"]: e["data"]["n"] for e in stored}
    missing = [(i, n) for i, n in answered if stored_ids.get(i) != n]
    around = [(e["id"], e["data"]["n"]) for e in stored if missing and abs(e["id"] - missing[0][0]) < 6]
    assert not missing, "answered inserts missing from the store: %r; the store around them: %r; answered around them: %r; stored %d events up to id %r; answered %d up to id %r" % (
        missing[:10], around, [a for a in answered if missing and abs(a[0] - missing[0][0]) < 6],
        len(stored), max(stored_ids) if stored_ids else None, len(answered), max(ids) if ids else None)
    # Ids stay strictly increasing in the stream.
    assert [e["id"] for e in stored] == sorted(e["id"] for e in stored)

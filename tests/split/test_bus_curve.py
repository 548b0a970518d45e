"""The split deployment's bus with CURVE: a process without the deployment's keys can neither
read nor inject anything, and a peer with a trusted key still cannot say what only certd says.

Starts its own deployment (split_deployment.py, curve=True: two forwarders, every process with a
key pair of its own) and plays the attacker on the loopback with python3-zmq sockets: SUB
sockets on every bus port, without a key and with a key nobody trusts; PUB sockets on the
forwarders' publishers' sides sending a forged event, a forged ctl/clock and a forged ctl/user.
Then a trusted key that is not certd's sends a clock, certd's key an absurd clock, and a trusted
key frames that do not parse.  Last, a key rotation: a stream process restarted with a new key
pair after its public key joined the allowlist rejoins, and its old key is refused once removed.
Without the deployment: no clear bus off loopback unless --bus_insecure=true, and broker-keygen's
files (mode 0600, never overwritten, halves that match).

With BROKER_SPLIT_BUS (the bus ports of scripts/run-split.sh, comma-separated) and
BROKER_SPLIT_KEYS (its BUS_KEYS folder) it also reads nothing from that deployment's publishers.
"""
import os
import signal
import stat
import struct
import subprocess
import time
import uuid

import pytest
import requests

from split_deployment import (BIN_DIR, Deployment, clean_env, free_port, free_port_pair, metric, read_keys, status_of,
                              wait_for)
from split_stream import Stream

zmq = pytest.importorskip("zmq", reason="python3-zmq is needed for the outside sockets (scripts/deps.sh test)")

HOURS = 3600 * 1000


@pytest.fixture(scope="module")
def dep():
    d = Deployment(curve=True)
    try:
        d.wait_ready()
        assert wait_for(lambda: d.wired(0) and d.wired(1), 20), "the services did not connect to both forwarders"
        d.wait_carrying(0)
        d.wait_carrying(1)
        yield d
    finally:
        for s in d.everyone():
            s.stop()


@pytest.fixture()
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def outside(ctx, kind, port, keys=None, server_key=None):
    """A socket of the attacker's connected to 127.0.0.1:port; keys: (public, secret) Z85 or None."""
    s = ctx.socket(kind)
    s.linger = 0
    if keys is not None:
        s.curve_publickey, s.curve_secretkey = keys[0].encode(), keys[1].encode()
        s.curve_serverkey = server_key.encode()
    if kind == zmq.SUB:
        s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect("tcp://127.0.0.1:%d" % port)
    return s


def key_pair(path):
    k = read_keys(path)
    return k["public-key"], k["secret-key"]


def public_key(path):
    return read_keys(path)["public-key"]


def stranger():
    """A key pair nobody trusts."""
    pub, sec = zmq.curve_keypair()
    return pub.decode(), sec.decode()


def drained(sockets):
    n = 0
    for s in sockets:
        while True:
            try:
                s.recv(zmq.NOBLOCK)
                n += 1
            except zmq.Again:
                break
    return n


def clock_offset(service):
    r = requests.get(service.url("/readyz"), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["clock"]["offset_ms"]


def refused(dep):
    return sum(metric(b, "broker_bus_refused_total") for b in dep.buses if b.alive())


def forged_event(tenant, seq):
    return [("ev/%s/" % tenant).encode(), struct.pack(">QQ", seq, int(time.time() * 1000)), b"forged",
            b'{"forged":true}']


def forged_clock(offset_ms):
    return [b"ctl/clock/", struct.pack(">q", offset_ms), b"N", b"forged"]


def forged_user(name):
    return [b"ctl/user/", name.encode(), b"1"]


def send_for(sockets, messages, seconds):
    """Sends every message on every socket, again and again: a PUB sends only once the other side
    has subscribed, which it does right after a handshake."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s in sockets:
            for m in messages:
                s.send_multipart(m)
        time.sleep(0.1)


def bus_ports(dep):
    """Every port of the bus: each forwarder's publishers' side and subscribers' side."""
    return [p for port in dep.bus_ports for p in (port, port + 1)]


def test_an_outsider_reads_nothing(dep, ctx):
    before = refused(dep)
    wrong = stranger()
    server = public_key(dep.public_key_file("bus0"))
    subs = [outside(ctx, zmq.SUB, p) for p in bus_ports(dep)]
    subs += [outside(ctx, zmq.SUB, p, wrong, server) for p in bus_ports(dep)]
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    stream = Stream(dep.streams[0].port, auth)
    try:
        assert stream.status == 200
        time.sleep(1)  # the outsiders' handshakes, refused
        with requests.Session() as session:
            ids = [dep.insert(session, auth, "secret", {"n": i}) for i in range(20)]
        # The events did flow on the bus: the deployment's own subscriber got them.
        assert [e[0] for e in stream.events(len(ids))] == ids
        time.sleep(0.5)
        assert drained(subs) == 0, "a socket without the deployment's keys read the bus"
    finally:
        stream.close()
    assert wait_for(lambda: refused(dep) >= before + len(subs), 5), \
        "refusals counted: %s, expected at least %d more" % (refused(dep) - before, len(subs))
    logs = dep.buses[0].stderr() + dep.buses[1].stderr()
    assert "refused the peer at 127.0.0.1 with the key %s" % wrong[0] in logs
    assert "refused a peer on tcp://127.0.0.1:" in logs  # the ones without a key


def test_an_outsider_injects_nothing(dep, ctx):
    tenant = "t" + uuid.uuid4().hex[:8]
    name, auth = dep.make_user(tenant)
    streams = [Stream(s.port, auth) for s in dep.streams]
    clocks = [clock_offset(s) for s in (dep.auth, dep.ingest) + tuple(dep.streams)]
    try:
        assert all(s.status == 200 for s in streams)
        with requests.Session() as session:
            last = dep.insert(session, auth, "real", {"n": 0})
        for s in streams:
            assert s.next_event()[0] == last
        wrong = stranger()
        pubs = [outside(ctx, zmq.PUB, p) for p in dep.bus_ports]
        pubs += [outside(ctx, zmq.PUB, p, wrong, public_key(dep.public_key_file("bus%d" % i)))
                 for i, p in enumerate(dep.bus_ports)]
        send_for(pubs, [forged_event(tenant, last + 1), forged_clock(-36 * HOURS), forged_user(name)], 2)
        for s in streams:
            assert s.nothing_more(1), "a forged event reached a stream"
        # The user was not revoked: the streams are open, and the next real event (the id the
        # forgery tried to take) comes through.
        with requests.Session() as session:
            nxt = dep.insert(session, auth, "real", {"n": 1})
        assert nxt == last + 1
        for s in streams:
            assert s.next_event() == (nxt, "real", {"n": 1})
        assert requests.get(dep.auth.url("/verify"), headers=auth, timeout=5).status_code == 200
        after = [clock_offset(s) for s in (dep.auth, dep.ingest) + tuple(dep.streams)]
        assert all(abs(a - b) < 60000 for a, b in zip(after, clocks)), "a forged clock moved: %s -> %s" % (clocks, after)
    finally:
        for s in streams:
            s.close()


def test_a_trusted_key_that_is_not_certds_cannot_move_the_clock(dep, ctx):
    before = metric(dep.buses[0], "broker_bus_forged_control_total")
    ingest_keys = key_pair(os.path.join(dep.keys, "ingest"))
    pub = outside(ctx, zmq.PUB, dep.bus_ports[0], ingest_keys, public_key(dep.public_key_file("bus0")))
    send_for([pub], [forged_clock(-36 * HOURS)], 2)
    assert wait_for(lambda: metric(dep.buses[0], "broker_bus_forged_control_total") > before, 5)
    assert abs(clock_offset(dep.auth)) < 60000
    assert "dropped a ctl/clock/ message from %s" % ingest_keys[0] in dep.buses[0].stderr()


def test_certds_key_cannot_set_an_offset_beyond_ntp_max_offset(dep, ctx):
    before = metric(dep.auth, "broker_bus_control_dropped_total")
    certd_keys = key_pair(os.path.join(dep.keys, "certd"))
    pub = outside(ctx, zmq.PUB, dep.bus_ports[0], certd_keys, public_key(dep.public_key_file("bus0")))
    send_for([pub], [forged_clock(72 * HOURS)], 2)
    assert wait_for(lambda: metric(dep.auth, "broker_bus_control_dropped_total") > before, 5)
    assert all(abs(clock_offset(s)) < 60000 for s in (dep.auth, dep.streams[0]))
    assert "beyond --ntp_max_offset" in dep.auth.stderr()


def test_certds_key_cannot_name_a_certificate_outside_certs(dep, ctx):
    before = metric(dep.auth, "broker_bus_control_dropped_total")
    certd_keys = key_pair(os.path.join(dep.keys, "certd"))
    pub = outside(ctx, zmq.PUB, dep.bus_ports[0], certd_keys, public_key(dep.public_key_file("bus0")))
    send_for([pub], [[b"ctl/cert/", b"/tmp/elsewhere/chain.pem"], [b"ctl/cert/", b"certs/../../etc/chain.pem"]], 2)
    assert wait_for(lambda: metric(dep.auth, "broker_bus_control_dropped_total") >= before + 2, 5)
    assert "dropped a certificate renewal naming /tmp/elsewhere/chain.pem" in dep.auth.stderr()
    assert "reloading" not in dep.auth.stderr()


def test_frames_that_do_not_parse_are_dropped_and_counted(dep, ctx):
    before = sum(metric(s, "broker_bus_malformed_total") for s in dep.streams)
    keys = key_pair(os.path.join(dep.keys, "ingest"))
    pub = outside(ctx, zmq.PUB, dep.bus_ports[0], keys, public_key(dep.public_key_file("bus0")))
    bad = [
        [b"ev/t1/", b"short header", b"e", b"{}"],          # a header that is not 16 bytes
        [b"ev/../", struct.pack(">QQ", 1, 0), b"e", b"{}"],  # not a tenant name
        [b"ev/t1/", struct.pack(">QQ", 1, 0), b"", b"{}"],   # no event name
        [b"ctl/user/", b"someone", b"x"],                    # neither revoked nor not
        [b"ctl/user/", b"", b"1"],                           # no username
    ]
    send_for([pub], bad, 1.5)
    assert wait_for(lambda: sum(metric(s, "broker_bus_malformed_total") for s in dep.streams) >= before + 2 * len(bad),
                    5)
    assert "dropped a malformed" in dep.streams[0].stderr()
    assert all(s.alive() for s in dep.everyone())


def test_key_rotation(dep, ctx):
    stream = dep.streams[0]
    old_keys = key_pair(os.path.join(dep.keys, "stream0"))
    # The new public key joins the allowlist first, then the process restarts with its new pair.
    dep.add_key("stream0-new")
    assert stream.stop() == 0
    stream.args = [a for a in stream.args if not a.startswith("--bus_key_file=")] + \
        ["--bus_key_file=" + os.path.join(dep.keys, "stream0-new")]
    stream.start()
    assert wait_for(lambda: status_of(stream.url("/readyz")) == 200, 20), \
        stream.stderr()[-2000:]
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    s = Stream(stream.port, auth)
    try:
        assert s.status == 200
        with requests.Session() as session:
            # Its subscription reaches the publishers through the forwarders a moment after it joins.
            got = None
            for i in range(50):
                first = dep.insert(session, auth, "probe", {"n": i})
                try:
                    got = s.next_event(0.2)
                    break
                except (TimeoutError, OSError):
                    continue
            assert got is not None, "the restarted stream process receives nothing"
    finally:
        s.close()
    # The old key, once removed, is refused (its holder reads nothing).
    os.remove(dep.public_key_file("stream0"))
    before = refused(dep)
    subs = [outside(ctx, zmq.SUB, p + 1, old_keys, public_key(dep.public_key_file("bus%d" % i)))
            for i, p in enumerate(dep.bus_ports)]
    time.sleep(1)
    _, auth = dep.make_user("t" + uuid.uuid4().hex[:8])
    with requests.Session() as session:
        for i in range(10):
            dep.insert(session, auth, "after", {"n": i})
    time.sleep(0.5)
    assert drained(subs) == 0, "the removed key still reads the bus"
    assert wait_for(lambda: refused(dep) > before, 5)
    assert "with the key %s" % old_keys[0] in dep.buses[0].stderr()


def test_every_process_stops_cleanly(dep):
    for s in dep.everyone():
        assert s.alive(), "%s ended early:\n%s" % (s.name, s.stderr()[-2000:])
    for s in dep.everyone():
        rc = s.stop()
        assert rc == 0, "%s exited %r:\n%s" % (s.name, rc, s.stderr()[-3000:])


@pytest.mark.skipif(not os.environ.get("BROKER_SPLIT_BUS") or not os.environ.get("BROKER_SPLIT_GATEWAY"),
                    reason="BROKER_SPLIT_BUS and BROKER_SPLIT_GATEWAY not set: no scripts/run-split.sh deployment to probe")
def test_run_split_publishers_read_nothing_without_keys(ctx):
    ports = [int(p) for p in os.environ["BROKER_SPLIT_BUS"].split(",")]
    keys = os.environ.get("BROKER_SPLIT_KEYS", "")
    wrong = stranger()
    subs = [outside(ctx, zmq.SUB, p) for p in ports]
    if keys:
        for p, name in zip(ports, ("ingest", "auth", "certd")):
            subs.append(outside(ctx, zmq.SUB, p, wrong, public_key(os.path.join(keys, name + ".pub"))))
    gateway = os.environ["BROKER_SPLIT_GATEWAY"]
    admin = os.environ.get("BROKER_SPLIT_ADMIN_TOKEN", "letmein")
    time.sleep(1)
    # Events and a revocation flow on those ports meanwhile.
    name = "probe" + uuid.uuid4().hex[:8]
    r = requests.post(gateway + "/create_user", json={"username": name, "password": "password123",
                                                      "admin_token": admin, "tenant_name": "probe"}, timeout=10)
    assert r.status_code == 200, r.text
    for i in range(5):
        r = requests.post(gateway + "/insert", json={"event": "e", "data": i}, auth=(name, "password123"), timeout=10)
        assert r.status_code == 200, r.text
    r = requests.post(gateway + "/revoke_user", json={"admin_token": admin, "username": name}, timeout=10)
    assert r.status_code == 200, r.text
    time.sleep(0.5)
    assert drained(subs) == 0


def start_briefly(binary, args, workdir, seconds=3):
    """Runs a split binary for at most `seconds`: (exit code or None if still running, stderr)."""
    err_path = os.path.join(workdir, os.path.basename(binary) + ".stderr")
    with open(err_path, "wb") as err:
        p = subprocess.Popen([binary] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                             env=clean_env(), cwd=workdir)
        try:
            rc = p.wait(seconds)
        except subprocess.TimeoutExpired:
            rc = None
            p.send_signal(signal.SIGTERM)
            p.wait(15)
    with open(err_path, "rb") as f:
        return rc, f.read().decode("utf-8", "replace")


def test_no_clear_bus_off_loopback_unless_insecure(tmp_path):
    common = ["--bind=127.0.0.1", "--port=%d" % free_port(), "--db=%s" % (tmp_path / "db"), "--ntp_servers="]
    ingest = os.path.join(BIN_DIR, "broker-ingest")
    bus = os.path.join(BIN_DIR, "broker-bus")
    everywhere = "--bus_publish=tcp://0.0.0.0:%d" % free_port()
    rc, err = start_briefly(ingest, common + [everywhere], str(tmp_path))
    assert rc not in (None, 0), "broker-ingest published in the clear on every interface:\n" + err
    assert "--bus_insecure" in err
    # A forwarder binds --bind: every interface is refused the same way.
    rc, err = start_briefly(bus, common[1:] + ["--bind=0.0.0.0", "--bus_forwarder_port=%d" % free_port_pair()],
                            str(tmp_path))
    assert rc not in (None, 0) and "--bus_insecure" in err, err
    # Said explicitly, it runs.
    rc, err = start_briefly(ingest, common + [everywhere, "--bus_insecure=true"], str(tmp_path))
    assert rc is None, "broker-ingest with --bus_insecure=true did not run:\n" + err
    # Loopback needs nothing.
    rc, err = start_briefly(ingest, common + ["--bus_publish=tcp://127.0.0.1:%d" % free_port()], str(tmp_path))
    assert rc is None, err


def test_keygen_writes_a_private_pair_and_never_overwrites(tmp_path):
    keygen = os.path.join(BIN_DIR, "broker-keygen")
    path = str(tmp_path / "pair")
    out = subprocess.run([keygen, path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    keys = read_keys(path)
    assert out.stdout.strip() == keys["public-key"] == read_keys(path + ".pub")["public-key"]
    assert "secret-key" not in read_keys(path + ".pub")
    assert zmq.curve_public(keys["secret-key"].encode()).decode() == keys["public-key"]
    before = open(path).read()
    again = subprocess.run([keygen, path], capture_output=True, text=True)
    assert again.returncode != 0 and open(path).read() == before
    # A key pair whose halves do not match is refused at start.
    bad = str(tmp_path / "bad")
    with open(bad, "w") as f:
        f.write('public-key = "%s"\nsecret-key = "%s"\n' % (stranger()[0], keys["secret-key"]))
    os.chmod(bad, 0o600)
    rc, err = start_briefly(os.path.join(BIN_DIR, "broker-certd"),
                            ["--bind=127.0.0.1", "--port=%d" % free_port(), "--ntp_servers=", "--bus_key_file=" + bad,
                             "--bus_publish=tcp://127.0.0.1:%d" % free_port()], str(tmp_path))
    assert rc not in (None, 0) and "not the secret key's" in err, err

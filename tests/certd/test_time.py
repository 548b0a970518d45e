"""Network time (certd's SNTP client) against Debian's real chronyd on the loopback, its clock
moved with faketime: the broker tells time by the NTP server, not by the host; it keeps the last
offset when the server goes away; it refuses absurd or forged answers; /readyz stays ready and
says why whenever the clock is not fresh network time. The split services learn the offset
from broker-certd over the bus."""

import time

import pytest

from conftest import (Broker, Service, assert_ok, bearer_header, free_port, free_udp_port, jwt_parts,
                      readyz_clock, wait_for, wait_healthy)
from ntp_server import BogusResponder, Chrony

HOUR_MS = 3600 * 1000
# An SNTP answer over loopback is exact to a few ms; the JWT's iat is whole seconds and the
# test's own reading of the host clock comes a moment later.
OFFSET_SLACK_MS = 2000
IAT_SLACK_S = 10


def fresh_iat(b):
    """The iat of a JWT the broker makes now, and the host's time when it was made."""
    u = b.create_user()
    token = b.login(u.username, u.password)
    host_now = time.time()
    _, payload, _ = jwt_parts(token)
    assert payload["exp"] - payload["iat"] == b.jwt_expiry
    # The broker judges its own token by the same clock: it must accept it.
    assert_ok(b.verify(bearer_header(token)))
    return payload["iat"], host_now


def metric(b, name):
    text = b.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("%s not in /metrics:\n%s" % (name, text))


def wait_source(b, source, timeout=15):
    clock = wait_for(lambda: (lambda c: c if c["source"] == source else None)(readyz_clock(b)), timeout)
    assert clock, "clock never became %r: last %r\nstderr:\n%s" % (source, readyz_clock(b), b.stderr_tail())
    return clock


@pytest.fixture
def chrony():
    started = []

    def start(offset):
        c = Chrony(offset=offset)
        c.start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


def ntp_flags(*servers, interval=1):
    return ["--ntp_servers=" + ",".join(servers), "--ntp_interval=%d" % interval]


def test_a_fresh_jwt_follows_the_ntp_server_not_the_host(servers, chrony):
    c = chrony("+1h")
    b = servers(extra_args=ntp_flags("127.0.0.1:%d" % c.port))
    clock = wait_source(b, "network")
    assert abs(clock["offset_ms"] - HOUR_MS) < OFFSET_SLACK_MS, clock
    assert "warning" not in clock
    iat, host_now = fresh_iat(b)
    assert abs(iat - (host_now + 3600)) < IAT_SLACK_S, "iat %d, host %d" % (iat, host_now)
    assert "the host clock is off by +1 h 0 min" in b.stderr_text()
    shown = metric(b, "broker_clock_offset_milliseconds")
    assert abs(shown - HOUR_MS) < OFFSET_SLACK_MS, shown


def test_with_the_server_gone_the_last_offset_is_kept_and_readyz_says_so(servers, chrony):
    c = chrony("+1h")
    b = servers(extra_args=ntp_flags("127.0.0.1:%d" % c.port))
    wait_source(b, "network")
    c.stop()
    clock = wait_source(b, "network-kept")
    assert abs(clock["offset_ms"] - HOUR_MS) < OFFSET_SLACK_MS, clock
    assert "no NTP server answered" in clock["warning"], clock
    assert "keeping the offset measured at" in clock["warning"], clock
    iat, host_now = fresh_iat(b)
    assert abs(iat - (host_now + 3600)) < IAT_SLACK_S
    assert "network time: no NTP server answered" in b.stderr_text()


def test_no_server_at_all_uses_the_host_clock_and_stays_ready(servers):
    dead = free_udp_port()  # nothing answers there
    b = servers(extra_args=ntp_flags("127.0.0.1:%d" % dead))
    clock = wait_source(b, "host")
    wait_for(lambda: "no NTP server answered" in readyz_clock(b).get("warning", ""), 15)
    clock = readyz_clock(b)
    assert "no NTP server answered" in clock["warning"] and "using the host clock" in clock["warning"], clock
    assert "127.0.0.1:%d" % dead in clock["warning"], clock
    iat, host_now = fresh_iat(b)
    assert abs(iat - host_now) < IAT_SLACK_S


def test_network_time_off_says_so(servers):
    b = servers(extra_args=["--ntp_servers="])
    clock = readyz_clock(b)
    wait_for(lambda: "network time is off" in readyz_clock(b).get("warning", ""), 10)
    clock = readyz_clock(b)
    assert clock["source"] == "host" and "--ntp_servers is empty" in clock["warning"], clock


def test_a_server_ten_years_off_is_refused_as_absurd(servers, chrony):
    c = chrony("+10y")
    b = servers(extra_args=ntp_flags("127.0.0.1:%d" % c.port))
    ok = wait_for(lambda: "absurd" in readyz_clock(b).get("warning", ""), 15)
    assert ok, readyz_clock(b)
    clock = readyz_clock(b)
    assert clock["source"] == "host" and clock["offset_ms"] == 0, clock
    assert "+3650 days" in clock["warning"] and "--ntp_max_offset" in clock["warning"], clock
    iat, host_now = fresh_iat(b)
    assert abs(iat - host_now) < IAT_SLACK_S
    assert "refused an absurd offset of +3650 days" in b.stderr_text()
    assert metric(b, "broker_ntp_failures_total") >= 1
    assert metric(b, "broker_clock_offset_milliseconds") == 0


def test_an_absurd_answer_after_a_good_one_keeps_the_good_one(servers, chrony, tmp_path):
    """The servers' list cannot change under a running broker, so the good server and the
    absurd one share a port: the good one first, then stopped and the absurd one started."""
    good = chrony("+1h")
    b = servers(extra_args=ntp_flags("127.0.0.1:%d" % good.port))
    wait_source(b, "network")
    good.stop()
    wait_source(b, "network-kept")
    bad = Chrony(port=good.port, offset="+10y")
    bad.start()
    try:
        ok = wait_for(lambda: "absurd" in readyz_clock(b).get("warning", ""), 15)
        assert ok, readyz_clock(b)
        clock = readyz_clock(b)
        assert clock["source"] == "network-kept" and abs(clock["offset_ms"] - HOUR_MS) < OFFSET_SLACK_MS, clock
    finally:
        bad.stop()


def test_forged_and_kiss_of_death_answers_are_not_taken(servers, chrony):
    """A reply that does not carry our request's transmit timestamp as its origin is not an
    answer (an off-path forger, a stale packet); a Kiss-o'-Death is a refusal. Alone they leave
    the host clock; beside a real server they change nothing."""
    with BogusResponder(offset_s=5 * 3600, mode="spoof") as spoof, BogusResponder(mode="kiss") as kiss:
        alone = servers(extra_args=ntp_flags("127.0.0.1:%d" % spoof.port, "127.0.0.1:%d" % kiss.port))
        ok = wait_for(lambda: "no NTP server answered" in readyz_clock(alone).get("warning", ""), 15)
        clock = readyz_clock(alone)
        assert ok and clock["source"] == "host" and clock["offset_ms"] == 0, clock
        assert spoof.requests > 0 and kiss.requests > 0
        assert "RATE" in clock["warning"], clock

        c = chrony("+1h")
        mixed = servers(extra_args=ntp_flags("127.0.0.1:%d" % spoof.port, "127.0.0.1:%d" % c.port,
                                             "127.0.0.1:%d" % kiss.port))
        clock = wait_source(mixed, "network")
        assert abs(clock["offset_ms"] - HOUR_MS) < OFFSET_SLACK_MS, clock


# ---------------------------------------------------------------- split: certd -> auth, ingest

def test_split_services_take_the_offset_from_broker_certd(chrony, tmp_path):
    c = chrony("+1h")
    bus = free_port()
    control = "--bus_control=tcp://127.0.0.1:%d" % bus
    db = "--db=%s" % (tmp_path / "db")
    secrets = ["--admin_token=adm-split", "--jwt_secret=jwt-split"]
    certd = Service("broker-certd", ntp_flags("127.0.0.1:%d" % c.port) +
                    ["--bus_publish=tcp://127.0.0.1:%d" % bus])
    auth = Service("broker-auth", [db, control, "--bus_publish=tcp://127.0.0.1:%d" % free_port()] + secrets +
                   ["--login_limit_user=0", "--login_limit_ip=0", "--admin_limit_ip=0"])
    ingest = Service("broker-ingest", [db, control, "--bus_publish=tcp://127.0.0.1:%d" % free_port()] + secrets)
    procs = [certd, auth, ingest]
    try:
        brokers = {}
        for s in procs:
            b = Broker("http://127.0.0.1:%d" % s.port, "adm-split", "jwt-split", 86400, "*", s.proc,
                       s.stderr_path, s.workdir, s.name)
            assert wait_healthy(b), s.stderr()
            brokers[s] = b
        for s in procs:
            clock = wait_source(brokers[s], "network")
            assert abs(clock["offset_ms"] - HOUR_MS) < OFFSET_SLACK_MS, (s.name, clock)
        iat, host_now = fresh_iat(brokers[auth])
        assert abs(iat - (host_now + 3600)) < IAT_SLACK_S
        assert "following certd's control messages" in auth.stderr()
        # certd gone: the services keep the offset they had (certd's last word was "fresh").
        certd.stop()
        iat, host_now = fresh_iat(brokers[auth])
        assert abs(iat - (host_now + 3600)) < IAT_SLACK_S
    finally:
        codes = {s.name: s.stop() for s in procs}
    for name, code in codes.items():
        assert code == 0, "%s exited %r" % (name, code)

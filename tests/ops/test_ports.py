"""The original broker's production command line, with its own flag spellings and a domain,
serves HTTPS on 443 and plain HTTP on 80 (the ACME challenges and a 308 to https); an explicit
--port still wins.

Each run is in a network namespace of its own (`unshare --net`, with --map-root-user when not
root), so the privileged ports never clash with the host's or another test's; the probe that
starts the broker and looks at the ports runs in there too (netns_probe.py).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from conftest import HERE, clean_env

PROBE = os.path.join(HERE, "netns_probe.py")
DOMAIN = "broker.example.com"
# SPEC.md's example of the original's production line, spelled as its README spells it.
PRODUCTION = ["--secure=true", "--admin_token=23ce4234@123$", "--jwt_secret=xTJEX234$##$",
              "--domain=" + DOMAIN]


def in_own_netns(broker_bin, args, ports):
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    ns = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    workdir = tempfile.mkdtemp(prefix="broker-ops-ports-")
    try:
        cmd = ns + [sys.executable, PROBE, workdir, DOMAIN, ",".join(map(str, ports)), "--", broker_bin] + args
        p = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=90)
        assert p.returncode == 0 and p.stdout.strip(), "the probe failed (%s):\n%s\n%s" % (
            p.returncode, p.stdout[-2000:], p.stderr[-4000:])
        return json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_production_line_serves_https_on_443_and_plain_on_80(broker_bin):
    out = in_own_netns(broker_bin, PRODUCTION, [443, 80, 8080])
    ports, log = out["ports"], out["log"]
    assert out["exited"] is None, "the broker stopped:\n" + log
    assert ports["443"] == {"kind": "tls", "healthz": 200, "cert_names_host": True}, (ports, log)
    # 443 is https's own port: the redirect names none.
    assert ports["80"] == {"kind": "plain", "status": 308,
                           "location": "https://%s/healthz?x=1" % DOMAIN}, (ports, log)
    assert ports["8080"] == {"kind": "closed"}, (ports, log)
    assert "serving https://localhost:443 (all interfaces)" in log, log
    assert "plain HTTP on 0.0.0.0:80 redirects to https" in log, log


def test_explicit_port_wins_over_443(broker_bin):
    out = in_own_netns(broker_bin, PRODUCTION + ["--port", "8443"], [8443, 443, 80])
    ports, log = out["ports"], out["log"]
    assert out["exited"] is None, "the broker stopped:\n" + log
    assert ports["8443"]["kind"] == "tls" and ports["8443"]["healthz"] == 200, (ports, log)
    assert ports["443"] == {"kind": "closed"}, (ports, log)
    assert ports["80"] == {"kind": "plain", "status": 308,
                           "location": "https://%s:8443/healthz?x=1" % DOMAIN}, (ports, log)
    assert "serving https://localhost:8443 (all interfaces)" in log, log


def test_environment_port_wins_too(broker_bin):
    """BROKER_PORT is a given port like --port (the systemd unit's env file sets it)."""
    env_args = ["env", "BROKER_PORT=9443", broker_bin]
    out = in_own_netns(env_args[0], env_args[1:] + PRODUCTION + ["--http_port=0"], [9443, 443, 80])
    ports, log = out["ports"], out["log"]
    assert ports["9443"]["kind"] == "tls", (ports, log)
    assert ports["443"] == {"kind": "closed"} and ports["80"] == {"kind": "closed"}, (ports, log)


def test_help_says_443_with_secure(broker_bin):
    p = subprocess.run([broker_bin, "--help"], env=clean_env(), capture_output=True, text=True, timeout=10)
    port_help = [line for line in p.stdout.splitlines() if line.strip().startswith("--port ")]
    assert port_help and "443" in port_help[0] and "--secure" in port_help[0], p.stdout

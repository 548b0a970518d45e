"""deploy/compose.curve.yml with keys from scripts/bus-keys.sh: the compose deployment's bus with
CURVE. Checked offline (`docker-compose config`, no image, no container): every broker service
gets a key pair of its own as a Docker secret, the public keys it needs, the flags that use them
(flags the binary really has), and no clear bus."""

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, clean_env

FILES = [os.path.join(REPO, "docker-compose.yml"), os.path.join(REPO, "deploy", "compose.curve.yml")]


def compose_command():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither docker-compose nor `docker compose` is installed: the compose files cannot be resolved")


@pytest.fixture(scope="module")
def resolved(tmp_path_factory, broker_bin):
    keys = str(tmp_path_factory.mktemp("bus-keys"))
    build = os.path.dirname(os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker")))
    subprocess.run([os.path.join(REPO, "scripts", "bus-keys.sh"), keys], check=True, capture_output=True,
                   env=clean_env({"BROKER_BUILD": build}))
    args = [a for f in FILES for a in ("-f", f)]
    out = subprocess.run(compose_command() + args + ["config"], capture_output=True, text=True, cwd=REPO,
                         env=clean_env({"BROKER_ADMIN_TOKEN": "t", "BROKER_JWT_SECRET": "s", "BROKER_BUS_KEYS": keys}))
    assert out.returncode == 0, out.stderr
    return keys, yaml.safe_load(out.stdout)


def broker_services(cfg):
    return {name: svc for name, svc in cfg["services"].items() if str(svc.get("command", [""])[0]).startswith("broker")}


def test_every_broker_service_has_its_own_key_pair(resolved):
    keys, cfg = resolved
    services = broker_services(cfg)
    assert set(services) >= {"bus", "bus2", "auth", "ingest", "stream", "certd"}
    pairs = {}
    for name, svc in services.items():
        secrets = {s["source"]: s.get("target", s["source"]) for s in svc.get("secrets", [])}
        own = [src for src, target in secrets.items() if target == "bus_key"]
        assert len(own) == 1, "%s has no bus_key secret: %s" % (name, secrets)
        path = cfg["secrets"][own[0]]["file"]
        with open(path) as f:
            text = f.read()
        assert "secret-key" in text and "public-key" in text, "%s's bus_key is not a key pair" % name
        pairs[name] = path
        for needed in ("bus_trusted_keys", "bus_pub", "bus2_pub", "certd_pub"):
            assert needed in secrets, "%s lacks the secret %s" % (name, needed)
    assert len(set(pairs.values())) == len(pairs), "two services share a key pair: %s" % pairs


def test_no_clear_bus_and_real_flags(resolved, help_flags):
    _, cfg = resolved
    for name, svc in broker_services(cfg).items():
        env = svc["environment"]
        assert env.get("BROKER_BUS_INSECURE") == "false", name
        for var in ("BROKER_BUS_KEY_FILE", "BROKER_BUS_TRUSTED_KEYS", "BROKER_BUS_SERVER_KEY", "BROKER_BUS_CERTD_KEY"):
            assert var in env, "%s lacks %s" % (name, var)
            assert var[len("BROKER_"):].lower() in help_flags
            for path in env[var].split(","):
                assert path.startswith("/run/secrets/"), "%s: %s is not a secret's path" % (name, path)
                target = path[len("/run/secrets/"):]
                assert any(s.get("target", s["source"]) == target for s in svc["secrets"]), \
                    "%s: %s names no mounted secret" % (name, path)


def test_the_trusted_file_holds_every_public_key(resolved):
    keys, cfg = resolved
    with open(cfg["secrets"]["bus_trusted_keys"]["file"]) as f:
        trusted = f.read()
    for name in ("bus", "bus2", "auth", "ingest", "stream", "certd"):
        with open(os.path.join(keys, name + ".pub")) as f:
            public = [line for line in f if line.startswith("public-key")][0].strip()
        assert public in trusted, "%s's public key is not trusted" % name

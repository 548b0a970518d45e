"""docker-compose.yml with secrets from scripts/compose-secrets.sh (`make secrets`): the compose
deployment is secure by default. Checked offline (`docker-compose config`, no image, no
container; tests/compose runs it): every broker service gets a key pair of its own as a Docker
secret, the public keys it needs, the flags that use them (flags the binary really has), and no
clear bus; the admin token, the JWT secret and the store URI are secrets too, given only to the
services that use them, and no secret is left in an environment variable."""

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, clean_env

FILES = [os.path.join(REPO, "docker-compose.yml")]
STORE_SERVICES = {"auth", "ingest", "stream"}
API_SECRETS = {"admin_token": "BROKER_ADMIN_TOKEN_FILE", "jwt_secret": "BROKER_JWT_SECRET_FILE",
               "store_uri": "BROKER_STORE_FILE"}


def compose_command():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.skip("neither docker-compose nor `docker compose` is installed: the compose files cannot be resolved")


@pytest.fixture(scope="module")
def resolved(tmp_path_factory, broker_bin):
    secrets = str(tmp_path_factory.mktemp("compose") / "secrets")
    build = os.path.dirname(os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker")))
    subprocess.run([os.path.join(REPO, "scripts", "compose-secrets.sh"), secrets], check=True, capture_output=True,
                   env=clean_env({"BROKER_BUILD": build}))
    args = [a for f in FILES for a in ("-f", f)]
    # No BROKER_* of the caller's: the defaults must be secure on their own.
    out = subprocess.run(compose_command() + args + ["config"], capture_output=True, text=True, cwd=REPO,
                         env=clean_env({"BROKER_SECRETS": secrets}))
    assert out.returncode == 0, out.stderr
    return secrets, yaml.safe_load(out.stdout)


def broker_services(cfg):
    return {name: svc for name, svc in cfg["services"].items() if str(svc.get("command", [""])[0]).startswith("broker")}


def mounted(svc):
    """{secret name: its target under /run/secrets/} of a service."""
    return {s["source"]: s.get("target", s["source"]) for s in svc.get("secrets", [])}


def test_every_broker_service_has_its_own_key_pair(resolved):
    _, cfg = resolved
    services = broker_services(cfg)
    assert set(services) >= {"bus", "bus2", "auth", "ingest", "stream", "certd"}
    pairs = {}
    for name, svc in services.items():
        secrets = mounted(svc)
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
                assert target in mounted(svc).values(), "%s: %s names no mounted secret" % (name, path)


def test_the_trusted_file_holds_every_public_key(resolved):
    secrets, cfg = resolved
    with open(cfg["secrets"]["bus_trusted_keys"]["file"]) as f:
        trusted = f.read()
    for name in ("bus", "bus2", "auth", "ingest", "stream", "certd"):
        with open(os.path.join(secrets, "bus", name + ".pub")) as f:
            public = [line for line in f if line.startswith("public-key")][0].strip()
        assert public in trusted, "%s's public key is not trusted" % name


def test_the_api_secrets_are_files_for_the_services_that_use_them(resolved, help_flags):
    secrets, cfg = resolved
    for name, svc in broker_services(cfg).items():
        env = svc["environment"]
        for var in ("BROKER_ADMIN_TOKEN", "BROKER_JWT_SECRET", "BROKER_STORE", "BROKER_STORE_PASSWORD"):
            assert var not in env, "%s has the secret %s in its environment" % (name, var)
        for secret, var in API_SECRETS.items():
            if name in STORE_SERVICES:
                assert env.get(var) == "/run/secrets/" + secret, "%s: %s is %r" % (name, var, env.get(var))
                assert mounted(svc).get(secret) == secret, "%s lacks the secret %s" % (name, secret)
                assert var[len("BROKER_"):].lower() in help_flags
            else:
                assert var not in env and secret not in mounted(svc), "%s needs no %s" % (name, secret)
    for secret in API_SECRETS:
        path = cfg["secrets"][secret]["file"]
        assert path == os.path.join(secrets, secret), path
        with open(path) as f:
            value = f.read().strip()
        assert value, "%s is empty" % secret
    with open(os.path.join(secrets, "store_uri")) as f:
        assert f.read().strip() == "mongodb://mongo:27017/broker"


def test_made_secrets_are_random_private_and_kept(resolved):
    secrets, _ = resolved
    with open(os.path.join(secrets, "admin_token")) as f:
        admin = f.read().strip()
    with open(os.path.join(secrets, "jwt_secret")) as f:
        jwt = f.read().strip()
    assert len(admin) >= 32 and len(jwt) >= 32 and admin != jwt
    assert admin not in ("letmein", "change-me-admin-token") and jwt != "secret"
    # Only its owner enters the folder: the files may be readable inside it (see the script).
    assert os.stat(secrets).st_mode & 0o077 == 0
    # Run again, it keeps every value (an operator's edits, a deployment's running keys).
    with open(os.path.join(secrets, "bus", "stream")) as f:
        pair = f.read()
    build = os.path.dirname(os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker")))
    subprocess.run([os.path.join(REPO, "scripts", "compose-secrets.sh"), secrets], check=True, capture_output=True,
                   env=clean_env({"BROKER_BUILD": build}))
    with open(os.path.join(secrets, "admin_token")) as f:
        assert f.read().strip() == admin
    with open(os.path.join(secrets, "bus", "stream")) as f:
        assert f.read() == pair

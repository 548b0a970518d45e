"""Command-line flags and environment variables (docs/API.md, "Command-line flags")."""

import os
import re
import subprocess
import tempfile

import pytest
import requests

from conftest import (BROKER_BIN, EXTERNAL_URL, assert_error, assert_ok, clean_env, free_port,
                      hs256_signature_ok, jwt_parts, start_broker)

pytestmark = pytest.mark.skipif(bool(EXTERNAL_URL),
                                reason="BROKER_TEST_BASE_URL is set: CLI tests start the binary")

# flag -> default as the flag table of docs/API.md gives it (None: no default to check)
SPEC_FLAGS = {
    "origin": ["*"], "port": ["8080"], "jwt_expiry": ["86400"], "jwt_secret": ["secret"],
    "secure": ["false"], "auto_cert": ["true"], "key_path": ["certs/private_key.pem"],
    "cert_path": ["certs/chain.pem"], "certs": ["certs"], "db": ["db"], "domain": None,
    "admin_token": ["letmein"],
    # beyond the table, with the documented defaults
    "max_body": ["1048576", "1mib", "1 mib", "1m"], "keepalive": ["15"],
    "store": None, "log_level": None,
}
RUN_TIMEOUT = 10


def run_binary(args, env=None):
    """Run the binary to completion (bounded), in a scratch dir so nothing lands in the repo."""
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail("broker binary not found: %s" % BROKER_BIN)
    with tempfile.TemporaryDirectory(prefix="broker-cli-") as d:
        args = list(args)
        if not any(a.startswith("--db") for a in args) and "--help" not in args:
            args += ["--db", os.path.join(d, "db")]
        try:
            return subprocess.run([BROKER_BIN] + args, env=clean_env(env), cwd=d,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            pytest.fail("broker %r still running after %d s (expected it to exit); stderr:\n%s"
                        % (args, RUN_TIMEOUT, (e.stderr or b"").decode("utf-8", "replace")))


def help_sections(text):
    """{flag: the help text from its line up to the next flag's line}."""
    sections, current = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*(?:-\w,\s*)?--([a-z_]+)", line)
        if m:
            current = m.group(1)
            sections[current] = line
        elif current:
            sections[current] += "\n" + line
    return sections


def test_help_lists_every_flag_with_default():
    p = run_binary(["--help"])
    assert p.returncode == 0, p
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    sections = help_sections(text)
    missing = [f for f in SPEC_FLAGS if f not in sections]
    assert not missing, "--help lacks %s:\n%s" % (missing, text)
    for flag, defaults in SPEC_FLAGS.items():
        if defaults:
            # the flag's own name (and its env variable) must not count as its default
            sec = re.sub(r"(--|broker_)" + flag, " ", sections[flag].lower())
            found = [d for d in defaults
                     if re.search(r"(?<![\w/.-])%s(?![\w/.-])" % re.escape(d.lower()), sec)]
            assert found, "--help does not show --%s's default %s:\n%s" \
                % (flag, defaults[0], sections[flag])


@pytest.mark.parametrize("args,env,flag", [
    (["--port", "abc"], None, "port"),
    (["--port=abc"], None, "port"),
    (["--port", "0"], None, "port"),
    (["--port", "70000"], None, "port"),
    (["--port", "-1"], None, "port"),
    (["--jwt_expiry", "-1"], None, "jwt_expiry"),
    (["--jwt_expiry", "-5"], None, "jwt_expiry"),
    (["--jwt_expiry", "abc"], None, "jwt_expiry"),
    (["--max_body", "0"], None, "max_body"),
    (["--max_body", "lots"], None, "max_body"),
    (["--secure", "maybe"], None, "secure"),
    (["--unknown_flag", "1"], None, "unknown_flag"),
    (["--unknown_flag"], None, "unknown_flag"),
    ([], {"BROKER_PORT": "abc"}, "port"),
    ([], {"BROKER_JWT_EXPIRY": "-1"}, "jwt_expiry"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_flag_value_exits_naming_the_flag(args, env, flag):
    sets_port = any(a.startswith("--port") for a in args) or "BROKER_PORT" in (env or {})
    base = [] if sets_port else ["--port", str(free_port())]
    p = run_binary(base + args + ["--admin_token", "t0k", "--jwt_secret", "s3c"], env)
    stderr = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0, "exit 0 for %r %r" % (args, env)
    assert flag in stderr.lower(), "stderr does not name %r:\n%s" % (flag, stderr)


def test_env_sets_port_and_settings():
    port = free_port()
    b = start_broker(port=port, port_flag=False, secrets_flags=False,
                     env={"BROKER_PORT": str(port), "BROKER_ADMIN_TOKEN": "env-admin",
                          "BROKER_JWT_SECRET": "env-secret", "BROKER_JWT_EXPIRY": "123"},
                     admin_token="env-admin", jwt_secret="env-secret", tag="envport")
    try:
        assert_ok(b.admin("/list_users"))
        assert_error(b.post("/list_users", {"admin_token": "letmein"}), 401)
        u = b.create_user()
        token = b.login(u.username, u.password)
        assert hs256_signature_ok(token, "env-secret")
        claims = jwt_parts(token)[1]
        assert claims["exp"] - claims["iat"] == 123, claims
    finally:
        b.stop()


def test_flag_wins_over_env():
    env_port = free_port()
    b = start_broker(env={"BROKER_PORT": str(env_port), "BROKER_ADMIN_TOKEN": "env-admin",
                          "BROKER_JWT_EXPIRY": "123"},
                     admin_token="flag-admin", jwt_expiry=77, tag="flagwins")
    try:
        assert b.base_url.rsplit(":", 1)[1] != str(env_port)
        with pytest.raises(requests.ConnectionError):
            requests.get("http://127.0.0.1:%d/healthz" % env_port, timeout=2)
        assert_ok(b.admin("/list_users"))
        assert_error(b.post("/list_users", {"admin_token": "env-admin"}), 401)
        u = b.create_user()
        claims = jwt_parts(b.login(u.username, u.password))[1]
        assert claims["exp"] - claims["iat"] == 77, claims
    finally:
        b.stop()


def test_equals_syntax():
    # SPEC's example: --secure=true --admin_token='...' : the --flag=value form works too.
    port = free_port()
    b = start_broker(["--port=%d" % port, "--admin_token=eq-admin", "--jwt_secret=eq-secret",
                      "--jwt_expiry=99", "--secure=false"],
                     port=port, port_flag=False, secrets_flags=False, admin_token="eq-admin",
                     jwt_secret="eq-secret", tag="equals")
    try:
        assert_ok(b.admin("/list_users"))
        u = b.create_user()
        token = b.login(u.username, u.password)
        assert hs256_signature_ok(token, "eq-secret")
        claims = jwt_parts(token)[1]
        assert claims["exp"] - claims["iat"] == 99, claims
    finally:
        b.stop()


def warning_lines(text):
    return [l for l in text.splitlines() if "warn" in l.lower()]


def test_default_secrets_warn():
    b = start_broker(secrets_flags=False, admin_token="letmein", jwt_secret="secret",
                     tag="defaults")
    try:
        assert_ok(b.admin("/list_users"))  # the documented default admin token works
    finally:
        b.stop()
    lines = warning_lines(b.stderr_text())
    text = "\n".join(lines).lower()
    assert "admin_token" in text and "jwt_secret" in text, \
        "no warning naming admin_token and jwt_secret in stderr:\n%s" % b.stderr_text()


def test_custom_secrets_do_not_warn():
    b = start_broker(tag="custom")
    b.stop()
    bad = [l for l in warning_lines(b.stderr_text())
           if "admin_token" in l.lower() or "jwt_secret" in l.lower()]
    assert not bad, "warning about secrets although both were set:\n%s" % "\n".join(bad)


def test_secure_refuses_to_start_rather_than_serve_plain_http(tmp_path):
    """HTTPS asked for but impossible (no certificate files here): the start must stop with
    a message naming the flag, never fall back to plain HTTP."""
    r = subprocess.run([BROKER_BIN, "--secure=true", "--auto_cert=false", "--port", "1",
                        "--db", str(tmp_path / "db")], capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "--secure" in r.stderr, r.stderr

"""The compose deployment under test: docker-compose.yml with deploy/compose.offline.yml, under a
project name of its own, its one published port on 127.0.0.1, every service healthy, its secrets
(the admin token, the JWT secret, the store URI and the bus's CURVE keys) in a folder of its own
made by scripts/compose-secrets.sh, as an operator's `make secrets` makes deploy/secrets/.

    python3 tests/compose/deployment.py up ENV_FILE     brings it up scaled (stream=3, ingest=2),
                                                       waits until every service is healthy, and
                                                       writes what the tests need to ENV_FILE
    python3 tests/compose/deployment.py down ENV_FILE   docker-compose down -v (always safe)

tests/run_all.sh calls `up`, runs the black-box suite through the gateway and tests/compose, and
`down` on any exit. Works with docker-compose 1.29 (v1) and Compose v2 (`docker compose`);
COMPOSE overrides the command."""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FILES = [os.path.join(ROOT, "docker-compose.yml"), os.path.join(ROOT, "deploy", "compose.offline.yml")]
SCALE = {"stream": 3, "ingest": 2}
UP_TIMEOUT = 180  # every service healthy (the images exist: `make images` comes first)
# The stream replicas' drain window (BROKER_DRAIN_SECONDS; 20 s in production): short, so that
# the rolling update of test_compose.py takes seconds per replica.
DRAIN_SECONDS = 4


def compose_command():
    if os.environ.get("COMPOSE"):
        return shlex.split(os.environ["COMPOSE"])
    if subprocess.run(["docker-compose", "version"], capture_output=True).returncode == 0:
        return ["docker-compose"]
    return ["docker", "compose"]


class Deployment:
    """One project: its name, the environment its compose commands get, its public URL."""

    def __init__(self, project, port, admin_token, jwt_secret, files=None, scale=None, extra_env=None,
                 secrets=None):
        self.project = project
        self.port = int(port)
        self.admin_token = admin_token
        self.jwt_secret = jwt_secret
        self.files = list(files or FILES)
        self.scale = dict(SCALE if scale is None else scale)
        self.extra_env = dict(extra_env or {})  # on top of env(): an override file's variables
        self.base_url = "http://127.0.0.1:%d" % self.port
        self.secrets = secrets  # the folder docker-compose.yml's secrets come from (BROKER_SECRETS)

    @classmethod
    def load(cls, env_file):
        with open(env_file) as f:
            d = json.load(f)
        return cls(d["project"], d["port"], d["admin_token"], d["jwt_secret"], d.get("files"), d.get("scale"),
                   d.get("extra_env"), d.get("secrets"))

    def save(self, env_file):
        with open(env_file, "w") as f:
            json.dump({"project": self.project, "port": self.port, "admin_token": self.admin_token,
                       "jwt_secret": self.jwt_secret, "base_url": self.base_url, "files": self.files,
                       "scale": self.scale, "extra_env": self.extra_env, "secrets": self.secrets}, f)

    def make_secrets(self):
        """The deployment's secrets folder: the test's admin token and JWT secret (the helper keeps
        files that exist), the rest made by scripts/compose-secrets.sh as for an operator."""
        self.secrets = tempfile.mkdtemp(prefix="broker-compose-secrets.")
        for name, value in (("admin_token", self.admin_token), ("jwt_secret", self.jwt_secret)):
            with open(os.path.join(self.secrets, name), "w") as f:
                f.write(value + "\n")
        env = {k: v for k, v in os.environ.items() if k != "SECRETS_OWNER"}
        p = subprocess.run([os.path.join(ROOT, "scripts", "compose-secrets.sh"), self.secrets], env=env,
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError("scripts/compose-secrets.sh failed:\n" + p.stderr)

    def bus_key(self, name):
        """The Z85 public key in the deployment's bus/NAME.pub."""
        with open(os.path.join(self.secrets, "bus", name + ".pub")) as f:
            for line in f:
                if line.startswith("public-key"):
                    return line.split("=", 1)[1].strip().strip('"')
        raise RuntimeError("no public key in bus/%s.pub" % name)

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        env.update({
            "BROKER_SECRETS": self.secrets or "",
            "BROKER_PUBLIC_BIND": "127.0.0.1",
            "BROKER_PUBLIC_PORT": str(self.port),
            # Hermetic: no query leaves the machine (network time is tested by tests/certd).
            "BROKER_NTP_SERVERS": "",
            # The black-box suite fails logins and admin tokens on purpose, hundreds a minute.
            "BROKER_LOGIN_LIMIT_USER": "0",
            "BROKER_LOGIN_LIMIT_IP": "0",
            "BROKER_ADMIN_LIMIT_IP": "0",
            "BROKER_DRAIN_SECONDS": str(DRAIN_SECONDS),
        })
        env.update(self.extra_env)
        return env

    def compose(self, *args, check=True, timeout=300):
        cmd = compose_command() + ["-p", self.project]
        for f in self.files:
            cmd += ["-f", f]
        p = subprocess.run(cmd + list(args), env=self.env(), cwd=ROOT, capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s\n%s" % (" ".join(cmd + list(args)), p.returncode,
                                                            p.stdout[-4000:], p.stderr[-4000:]))
        return p

    def containers(self, service=None):
        """Ids of the project's containers (of `service`), running or not."""
        args = ["ps", "-q"] + ([service] if service else [])
        out = self.compose(*args).stdout.split()
        return out

    def health(self):
        """{container name: health or state} of every container of the project."""
        ids = self.containers()
        if not ids:
            return {}
        p = subprocess.run(["docker", "inspect", "-f",
                            "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"]
                           + ids, capture_output=True, text=True)
        return dict(line.lstrip("/").split(" ", 1) for line in p.stdout.splitlines() if " " in line)

    def wait_healthy(self, timeout=UP_TIMEOUT, expect=None):
        """Until every container is healthy (and there are `expect` of them, when given)."""
        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            last = self.health()
            if last and all(v == "healthy" for v in last.values()) and (expect is None or len(last) == expect):
                return last
            time.sleep(1)
        raise RuntimeError("not every service became healthy in %d s: %r\n%s" % (
            timeout, last, self.compose("logs", "--tail=30", check=False).stdout[-8000:]))

    def up(self):
        scale = []
        for svc, n in self.scale.items():
            scale += ["--scale", "%s=%d" % (svc, n)]
        self.compose("up", "-d", *scale, timeout=600)
        services = self.compose("config", "--services").stdout.split()
        self.wait_healthy(expect=len(services) + sum(n - 1 for n in self.scale.values()))

    def down(self):
        p = self.compose("down", "-v", "--remove-orphans", check=False, timeout=300)
        if self.secrets and os.path.basename(self.secrets).startswith("broker-compose-secrets."):
            shutil.rmtree(self.secrets, ignore_errors=True)
        return p


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv):
    if len(argv) != 3 or argv[1] not in ("up", "down"):
        print(__doc__, file=sys.stderr)
        return 2
    env_file = argv[2]
    if argv[1] == "up":
        d = Deployment("brokertest" + uuid.uuid4().hex[:8], free_port(), "adm-" + uuid.uuid4().hex,
                       "jwt-" + uuid.uuid4().hex)
        d.save(env_file)  # first, so that `down` finds the project whatever happens next
        d.make_secrets()
        d.save(env_file)  # and its secrets folder, which `down` removes
        t0 = time.monotonic()
        d.up()
        print("compose: %s up and healthy in %.0f s on %s" % (d.project, time.monotonic() - t0, d.base_url))
        return 0
    if not os.path.exists(env_file):
        return 0
    d = Deployment.load(env_file)
    p = d.down()
    print("compose: %s down (%d)" % (d.project, p.returncode))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

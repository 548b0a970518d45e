"""Shared pieces of the Helm chart's tests (tests/helm): the tools, a render, its decoding.

No Kubernetes cluster runs here. What is checked instead, offline: `helm lint --strict` and
`helm template` of deploy/helm/broker with the values files of tests/helm/values/ (Helm built
from the Go module proxy, the version pinned in checker/go.mod); every rendered document decoded
strictly into the Kubernetes API's own Go types by chartcheck (checker/main.go: no unknown field,
no wrong type, plus what an API server would refuse, such as a selector that misses its own
pods); then the policy checks of policy.py over the decoded objects.

Environment: BROKER_CACHE (where tests/helm/build.sh keeps helm and chartcheck).
"""

import copy
import json
import os
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CHART = os.path.join(REPO, "deploy", "helm", "broker")
VALUES = os.path.join(HERE, "values")
RELEASE = "prod"
NAMESPACE = "broker"
NO_CLUSTER = ("helm chart: no Kubernetes cluster runs here. Checked instead: helm lint --strict and "
              "helm template with each values file of tests/helm/values; every rendered document decoded "
              "strictly into the Kubernetes API's Go types (k8s.io/api) by chartcheck; policy checks over "
              "the decoded objects (probes, resources, security contexts, NetworkPolicies, the stream's "
              "rollout and grace, the forwarders' names, Secrets as files); and each check shown to fail "
              "on a broken render.")


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(NO_CLUSTER)


@pytest.fixture(scope="session")
def tools():
    """{"helm": path, "chartcheck": path}, built (or found up to date) by tests/helm/build.sh. A
    failed build fails every test that needs them: it is never a skip."""
    p = subprocess.run([os.path.join(HERE, "build.sh")], capture_output=True, text=True, timeout=1800)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        pytest.fail("tests/helm/build.sh failed (status %d):\n%s" % (p.returncode, p.stderr[-4000:]), pytrace=False)
    d = lines[-1]
    out = {name: os.path.join(d, name) for name in ("helm", "chartcheck")}
    for path in out.values():
        assert os.access(path, os.X_OK), path
    return out


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory):
    """Helm's own folders in a temp dir: the tests neither read nor write the user's."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    env.pop("KUBECONFIG", None)
    return env


@pytest.fixture(scope="session")
def bus_pairs(tmp_path_factory):
    """Bus key pair files as broker-keygen writes them (libzmq's CURVE keys, through pyzmq), for
    the quick start's --set-file."""
    import zmq
    d = tmp_path_factory.mktemp("bus-keys")
    files = {}
    for name in ("bus", "certd", "auth", "ingest", "stream"):
        public, secret = zmq.curve_keypair()
        path = d / name
        path.write_text("# a broker bus key pair: keep this file secret (--bus_key_file)\n"
                        'public-key = "%s"\nsecret-key = "%s"\n' % (public.decode(), secret.decode()))
        files[name] = str(path)
    return files


def values_args(files, sets=(), set_json=(), pairs=None):
    args = []
    for f in files:
        args += ["-f", os.path.join(VALUES, f)]
    for s in sets:
        args += ["--set", s]
    for s in set_json:
        args += ["--set-json", s]
    for name, path in (pairs or {}).items():
        args += ["--set-file", "secrets.bus.pairs.%s=%s" % (name, path)]
    return args


def merge(base, over):
    """Helm's merge of a values file over others: maps merge, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def effective_values(files, overrides=None):
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    for name in files:
        with open(os.path.join(VALUES, name)) as f:
            values = merge(values, yaml.safe_load(f) or {})
    return merge(values, overrides or {})


def helm(tools, env, *args):
    return subprocess.run([tools["helm"]] + list(args), capture_output=True, text=True, env=env, timeout=120)


def template(tools, env, args, release=RELEASE):
    """The manifests `helm template` renders (asserting it succeeds)."""
    p = helm(tools, env, "template", release, CHART, "--namespace", NAMESPACE, *args)
    assert p.returncode == 0, "helm template %s failed:\n%s" % (" ".join(args), p.stderr)
    return p.stdout


def decode(tools, manifests):
    """(status, objects or None, stderr) of chartcheck over a manifest stream."""
    p = subprocess.run([tools["chartcheck"]], input=manifests, capture_output=True, text=True, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.returncode == 0 else None), p.stderr

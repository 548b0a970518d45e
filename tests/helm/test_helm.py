"""The Helm chart (deploy/helm/broker), offline: no Kubernetes cluster runs here.

Checked instead: `helm lint --strict` and `helm template` with every values file of
tests/helm/values/; each rendered document decoded strictly into the Kubernetes API's own Go
types by chartcheck (unknown fields, wrong types and what an API server would refuse are
errors); the policy checks of policy.py over the decoded objects; what each values file is for;
the settings the chart refuses; and, for every check, a broken render it rejects, so that no
check passes because it looks at nothing.
"""

import base64
import copy
import json
import os
import re

import pytest

import policy
from conftest import CHART, NAMESPACE, RELEASE, decode, effective_values, helm, template, values_args

CASES = {
    "defaults": ["defaults.yaml"],
    "hpa": ["hpa.yaml"],
    "ingress-cert-manager": ["ingress-cert-manager.yaml"],
    "certd-tls": ["certd-tls.yaml"],
    "quickstart": ["quickstart.yaml"],
}
FULL = "%s-broker" % RELEASE


def case_args(case, bus_pairs):
    return values_args(CASES[case], pairs=bus_pairs if case == "quickstart" else None)


@pytest.fixture(scope="module")
def renders(tools, helm_env, bus_pairs):
    """{case: policy.Rendered}, each rendered and decoded once."""
    out = {}

    def get(case):
        if case not in out:
            manifests = template(tools, helm_env, case_args(case, bus_pairs))
            status, objects, err = decode(tools, manifests)
            assert status == 0, "chartcheck refused the %s render:\n%s" % (case, err)
            out[case] = policy.Rendered(objects, RELEASE, NAMESPACE, effective_values(CASES[case]))
        return out[case]
    return get


def render_with(tools, helm_env, files, sets=(), set_json=(), overrides=None):
    """A render with extra settings, decoded (asserting chartcheck takes it)."""
    manifests = template(tools, helm_env, values_args(files, sets, set_json))
    status, objects, err = decode(tools, manifests)
    assert status == 0, err
    return policy.Rendered(objects, RELEASE, NAMESPACE, effective_values(files, overrides))


# ---- the tools ---------------------------------------------------------------------------------


def test_helm_is_the_pinned_version(tools, helm_env):
    with open(os.path.join(os.path.dirname(__file__), "checker", "go.mod")) as f:
        pinned = re.search(r"helm\.sh/helm/v4 (v[0-9.]+)", f.read()).group(1)
    p = helm(tools, helm_env, "version", "--short")
    assert p.returncode == 0 and p.stdout.strip().startswith(pinned), (p.stdout, p.stderr)


# ---- lint, render, strict decoding -------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_lint_strict(tools, helm_env, bus_pairs, case):
    p = helm(tools, helm_env, "lint", "--strict", CHART, "--namespace", NAMESPACE, *case_args(case, bus_pairs))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout, p.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_decodes_strictly(renders, case):
    r = renders(case)
    kinds = {o["kind"] for o in r.objects}
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "PodDisruptionBudget"} <= kinds, kinds
    components = {policy.pod_labels(w)[policy.COMPONENT] for w in r.workloads()}
    assert {"auth", "ingest", "stream", "certd", "bus"} <= components, components


@pytest.mark.parametrize("check", policy.ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", sorted(CASES))
def test_policy(renders, case, check):
    problems = check(renders(case))
    assert not problems, "\n".join(problems)


# ---- what each values file is for --------------------------------------------------------------


def test_defaults(renders):
    r = renders("defaults")
    assert not r.of_kind("Ingress") and not r.of_kind("Secret") and not r.of_kind("HorizontalPodAutoscaler")
    assert r.by_component("stream")["spec"]["replicas"] == 2
    assert r.by_component("certd")["spec"]["replicas"] == 1
    assert r.by_component("certd")["spec"]["strategy"]["type"] == "Recreate"
    gateway = r.named("Service", FULL + "-gateway")
    assert gateway["spec"]["type"] == "ClusterIP" and [p["port"] for p in gateway["spec"]["ports"]] == [80]
    stream = [c for c in policy.containers(r.by_component("stream")) if policy.is_broker(c)][0]
    assert policy.flags(stream)["drain_seconds"] == "20"
    assert policy.pod_spec(r.by_component("stream"))["terminationGracePeriodSeconds"] == 35
    # The images of the compose deployment.
    images = {c["image"] for w in r.workloads() for c in policy.containers(w)}
    assert images == {"broker:0.9.0", "broker-gateway:0.9.0"}, images
    # The forwarders' names, as every peer lists them.
    assert policy.flags(stream)["bus_forwarders"] == (
        "prod-broker-bus-0.prod-broker-bus.broker.svc.cluster.local:5559,"
        "prod-broker-bus-1.prod-broker-bus.broker.svc.cluster.local:5559")


def test_a_numeric_image_tag(tools, helm_env):
    """`--set image.tag=2` gives a number, which must still make the image's name."""
    r = render_with(tools, helm_env, ["defaults.yaml"], sets=["image.tag=2", "gatewayImage.tag=3"])
    images = {c["image"] for w in r.workloads() for c in policy.containers(w)}
    assert images == {"broker:2", "broker-gateway:3"}, images


def test_hpa_and_ingress_in_front_of_the_gateway(renders):
    r = renders("hpa")
    hpa = r.named("HorizontalPodAutoscaler", FULL + "-stream")
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] == 12
    assert sorted(m["resource"]["name"] for m in hpa["spec"]["metrics"]) == ["cpu", "memory"]
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    assert "replicas" not in r.by_component("stream")["spec"]
    assert r.by_component("bus")["spec"]["replicas"] == 3
    ingress = r.named("Ingress", FULL)
    paths = [(p["path"], p["backend"]["service"]["name"]) for p in ingress["spec"]["rules"][0]["http"]["paths"]]
    assert paths == [("/", FULL + "-gateway")]
    gateway_np = r.named("NetworkPolicy", FULL + "-gateway")
    assert [peer for rule in gateway_np["spec"]["ingress"] for peer in rule["from"]] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}]


def test_ingress_without_gateway_and_cert_manager(renders):
    r = renders("ingress-cert-manager")
    assert r.by_component("gateway") is None and r.named("Service", FULL + "-gateway") is None
    ingress = r.named("Ingress", FULL)
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt-prod"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "broker-tls", "hosts": ["broker.example.com", "events.example.com"]}]
    for rule in ingress["spec"]["rules"]:
        paths = {p["path"]: (p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]}
        assert paths == {"/sse": ("Exact", FULL + "-stream"), "/presence": ("Exact", FULL + "-stream"),
                         "/insert": ("Exact", FULL + "-ingest"), "/": ("Prefix", FULL + "-auth")}
    # The controller reaches the services; nobody reaches certd (no gateway sends it challenges).
    auth_np = r.named("NetworkPolicy", FULL + "-auth")
    assert "namespaceSelector" in auth_np["spec"]["ingress"][0]["from"][0]
    assert r.named("NetworkPolicy", FULL + "-certd")["spec"].get("ingress", []) == []
    stream = r.by_component("stream")
    assert policy.pod_spec(stream)["terminationGracePeriodSeconds"] == 60
    auth = policy.containers(r.by_component("auth"))[0]
    assert policy.flags(auth)["store_password_file"] == "/etc/broker/store/store_password"
    store = [v for v in policy.pod_spec(r.by_component("auth"))["volumes"] if v["name"] == "store"][0]
    assert {"key": "mongo_password", "path": "store_password"} in store["secret"]["items"]


def test_certd_tls_through_the_gateway(renders):
    r = renders("certd-tls")
    certd = policy.containers(r.by_component("certd"))[0]
    f = policy.flags(certd)
    assert f["secure"] == "true" and f["domain"] == "broker.example.com" and f["acme_email"] == "ops@example.com"
    assert f["certs"] == "/var/lib/broker/certs"
    pvc = r.named("PersistentVolumeClaim", FULL + "-certs")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["storageClassName"] == "nfs-client"
    gateway = r.by_component("gateway")
    g = policy.containers(gateway)[0]
    env = {e["name"]: e["value"] for e in g["env"]}
    assert env["BROKER_GATEWAY_TLS"] == "on" and env["BROKER_DOMAIN"] == "broker.example.com"
    assert env["BROKER_GATEWAY_CERTS"] == "/certs"
    mount = [m for m in g["volumeMounts"] if m["mountPath"] == "/certs"][0]
    assert mount["readOnly"] is True
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for w in (gateway, r.by_component("certd"))
              for v in policy.pod_spec(w)["volumes"] if "persistentVolumeClaim" in v}
    assert set(claims.values()) == {FULL + "-certs"}
    svc = r.named("Service", FULL + "-gateway")
    assert svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["externalTrafficPolicy"] == "Local"
    assert {(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {(80, "http"), (443, "https")}
    gateway_np = r.named("NetworkPolicy", FULL + "-gateway")
    assert gateway_np["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"},
                                                        {"port": "https", "protocol": "TCP"}]}]


def test_quickstart_secrets_made_from_values(renders, bus_pairs):
    r = renders("quickstart")
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
               for s in r.of_kind("Secret")}
    assert set(secrets) == {FULL + "-api", FULL + "-store", FULL + "-bus-keys"}
    assert secrets[FULL + "-api"] == {"admin_token": "test-admin-token-0f3a9c", "jwt_secret": "test-jwt-secret-7d21be"}
    assert secrets[FULL + "-store"]["store_password"] == "test-store-password-5e8d40"
    keys = secrets[FULL + "-bus-keys"]
    publics = {}
    for name, path in bus_pairs.items():
        with open(path) as f:
            pair = f.read()
        assert keys[name] == pair
        publics[name] = re.search(r'public-key = "[^"]+"', pair).group(0)
    assert keys["bus.pub"].strip() == publics["bus"] and keys["certd.pub"].strip() == publics["certd"]
    assert sorted(keys["trusted.keys"].split()) == sorted(" ".join(publics.values()).split())
    assert "secret-key" not in keys["bus.pub"] + keys["certd.pub"] + keys["trusted.keys"]


# ---- settings the chart refuses ---------------------------------------------------------------


@pytest.mark.parametrize("args,message", [
    ([], "secrets.api.existingSecret"),
    (["-f", "defaults.yaml", "--set", "stream.terminationGracePeriodSeconds=25"], "must exceed"),
    (["-f", "defaults.yaml", "--set", "stream.drainSeconds=40", "--set", "stream.terminationGracePeriodSeconds=44"],
     "must exceed"),
    (["-f", "defaults.yaml", "--set", "gateway.enabled=false"], "nothing would route"),
    (["-f", "defaults.yaml", "--set", "certd.tls.enabled=true"], "certd.tls.domain"),
    (["-f", "certd-tls.yaml", "--set", "ingress.enabled=true"], "terminate TLS at the Ingress"),
    (["-f", "defaults.yaml", "--set", "auth.resources=null"], "resources"),
    (["-f", "defaults.yaml", "--set", "stream.drainSecond=30"], "drainSecond"),
    (["-f", "quickstart.yaml", "--set", "secrets.bus.pairs.bus=public-key"], "secrets.bus.pairs.bus"),
], ids=["no-secrets", "grace-below-drain", "grace-at-drain", "no-route", "tls-no-domain", "tls-and-ingress",
        "no-resources", "unknown-key", "bad-pair"])
def test_the_chart_refuses(tools, helm_env, bus_pairs, args, message):
    args = [os.path.join(os.path.dirname(__file__), "values", a) if a.endswith(".yaml") else a for a in args]
    if any(a.endswith("quickstart.yaml") for a in args):
        args += [a for name, path in bus_pairs.items() if name != "bus"
                 for a in ("--set-file", "secrets.bus.pairs.%s=%s" % (name, path))]
    p = helm(tools, helm_env, "template", RELEASE, CHART, "--namespace", NAMESPACE, *args)
    assert p.returncode != 0, "rendered:\n" + p.stdout[:2000]
    assert message in p.stderr, p.stderr


# ---- every check can fail ----------------------------------------------------------------------


def test_checks_reject_a_stream_rollout_that_lowers_capacity(tools, helm_env):
    r = render_with(tools, helm_env, ["defaults.yaml"], sets=["stream.rollingUpdate.maxUnavailable=1"])
    assert any("maxUnavailable 0" in p for p in policy.check_stream_rollout(r))


def test_checks_reject_containers_without_limits(tools, helm_env):
    r = render_with(tools, helm_env, ["defaults.yaml"], sets=["ingest.resources.limits.memory=null"])
    problems = policy.check_resources(r)
    assert problems == ["Deployment/%s-ingest[ingest]: no limits.memory" % FULL], problems


def test_checks_reject_a_network_policy_open_to_an_address_block(tools, helm_env):
    peers = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
    sets = ["networkPolicy.metricsFrom=" + json.dumps(peers)]
    r = render_with(tools, helm_env, ["defaults.yaml"], set_json=sets, overrides={"networkPolicy": {"metricsFrom": peers}})
    assert any("ipBlock" in p for p in policy.check_network_policies(r))


def test_metrics_scrapers_by_namespace_pass(tools, helm_env):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    sets = ["networkPolicy.metricsFrom=" + json.dumps(peers)]
    r = render_with(tools, helm_env, ["defaults.yaml"], set_json=sets, overrides={"networkPolicy": {"metricsFrom": peers}})
    assert not policy.check_network_policies(r)
    bus = r.named("NetworkPolicy", FULL + "-bus")
    assert {"ports": [{"port": "http", "protocol": "TCP"}], "from": peers} in bus["spec"]["ingress"]


def broken(r, mutate):
    """A deep copy of a render, changed by mutate(objects)."""
    objects = copy.deepcopy(r.objects)
    mutate(objects)
    return policy.Rendered(objects, r.release, r.namespace, copy.deepcopy(r.values))


def find(objects, kind, suffix):
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == FULL + suffix][0]


def first_container(objects, suffix):
    kind = "StatefulSet" if suffix == "-bus" else "Deployment"
    return find(objects, kind, suffix)["spec"]["template"]["spec"]["containers"][0]


def short_grace(objects):
    find(objects, "Deployment", "-stream")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 25


def drop_forwarder(objects):
    c = first_container(objects, "-ingest")
    c["args"] = [re.sub(r",[^,]*bus-1[^,]*", "", a) for a in c["args"]]


def secret_in_env(objects):
    first_container(objects, "-auth").setdefault("env", []).append(
        {"name": "BROKER_JWT_SECRET", "valueFrom": {"secretKeyRef": {"name": "broker-api", "key": "jwt_secret"}}})


def token_in_args(objects):
    first_container(objects, "-ingest")["args"].append("--origin=test-admin-token-0f3a9c")


def admin_token_flag(objects):
    first_container(objects, "-stream")["args"].append("--admin_token=letmein-again")


def writable_root(objects):
    first_container(objects, "-bus")["securityContext"]["readOnlyRootFilesystem"] = False


def run_as_root(objects):
    first_container(objects, "-certd")["securityContext"]["runAsUser"] = 0


def no_tmp(objects):
    c = first_container(objects, "-auth")
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]


def no_readiness(objects):
    del first_container(objects, "-stream")["readinessProbe"]


def liveness_on_readyz(objects):
    first_container(objects, "-ingest")["livenessProbe"]["httpGet"]["path"] = "/readyz"


def policy_on_wrong_pods(objects):
    find(objects, "NetworkPolicy", "-auth")["spec"]["podSelector"]["matchLabels"][policy.COMPONENT] = "ingest"


def bus_open_to_all(objects):
    find(objects, "NetworkPolicy", "-bus")["spec"]["ingress"][0]["from"] = []


def gateway_on_bus(objects):
    peer = find(objects, "NetworkPolicy", "-bus")["spec"]["ingress"][0]["from"][0]["podSelector"]
    peer["matchExpressions"][0]["values"].append("gateway")


def service_misses(objects):
    find(objects, "Service", "-stream")["spec"]["selector"][policy.COMPONENT] = "streams"


def no_pdb(objects):
    objects.remove(find(objects, "PodDisruptionBudget", "-ingest"))


def buffered_ingress(objects):
    del find(objects, "Ingress", "")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"]


def short_ingress_timeout(objects):
    find(objects, "Ingress", "")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "60"


def wrong_bus_key(objects):
    volumes = find(objects, "Deployment", "-stream")["spec"]["template"]["spec"]["volumes"]
    keys = [v for v in volumes if v["name"] == "bus-keys"][0]
    keys["secret"]["items"][0]["key"] = "ingest"


def store_to_certd(objects):
    first_container(objects, "-certd")["args"].append("--store_file=/etc/broker/store/store_uri")


@pytest.mark.parametrize("case,mutate,check,expect", [
    ("defaults", short_grace, policy.check_stream_rollout, "does not exceed"),
    ("defaults", drop_forwarder, policy.check_forwarders, "--bus_forwarders="),
    ("quickstart", secret_in_env, policy.check_secrets_as_files, "comes from a Secret"),
    ("quickstart", token_in_args, policy.check_secrets_as_files, "a Secret's value"),
    ("defaults", admin_token_flag, policy.check_secrets_as_files, "--admin_token="),
    ("defaults", wrong_bus_key, policy.check_secrets_as_files, "its bus key"),
    ("defaults", store_to_certd, policy.check_secrets_as_files, "without the store"),
    ("defaults", writable_root, policy.check_security, "readOnlyRootFilesystem"),
    ("defaults", run_as_root, policy.check_security, "not 10001"),
    ("defaults", no_tmp, policy.check_writable_paths, "/tmp"),
    ("defaults", no_readiness, policy.check_probes, "no liveness or no readiness"),
    ("defaults", liveness_on_readyz, policy.check_probes, "/healthz"),
    ("defaults", policy_on_wrong_pods, policy.check_network_policies, "selects"),
    ("defaults", bus_open_to_all, policy.check_network_policies, "takes anyone"),
    ("defaults", gateway_on_bus, policy.check_network_policies, "the bus takes"),
    ("defaults", service_misses, policy.check_routing, "selects 0 workloads"),
    ("defaults", no_pdb, policy.check_routing, "no PodDisruptionBudget"),
    ("hpa", buffered_ingress, policy.check_ingress_sse, "proxy-buffering"),
    ("ingress-cert-manager", short_ingress_timeout, policy.check_ingress_sse, "proxy-read-timeout"),
], ids=lambda v: getattr(v, "__name__", None) if callable(v) else None)
def test_each_check_rejects_a_broken_render(renders, case, mutate, check, expect):
    r = renders(case)
    assert not check(r), "the unbroken %s render must pass %s first" % (case, check.__name__)
    problems = check(broken(r, mutate))
    assert any(expect in p for p in problems), problems


# ---- the decoder itself ------------------------------------------------------------------------


GOOD_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 1
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      containers:
        - name: c
          image: broker:0.9.0
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
"""


@pytest.mark.parametrize("change,message", [
    (("replicas: 1", "replica: 1"), 'unknown field "spec.replica"'),
    (("replicas: 1", "replicas: two"), "replicas"),
    (("containerPort: 8080", "containerPort: 8080, hostPorts: 80"), "unknown field"),
    (("kind: Deployment", "kind: Deployement"), "Deployement"),
    (("labels: {app: d}", "labels: {app: e}"), "does not match template"),
    (("mountPath: /tmp}", "mountPath: /tmp}, {name: scratch, mountPath: /scratch}"), "scratch"),
    (("port: http}", "port: web}"), "web"),
    (("metadata: {name: d}", "metadata: {name: D_1}"), "metadata.name"),
    (("replicas: 1", "replicas: 1\n  replicas: 2"), "replicas"),
    (("containerPort: 8080", "ContainerPort: 8080"), 'unknown field "spec.template.spec.containers[0].ports[0].ContainerPort"'),
], ids=["unknown-field", "wrong-type", "unknown-nested-field", "unknown-kind", "selector-misses-pods",
        "mount-of-no-volume", "probe-on-no-port", "bad-name", "duplicate-key", "field-in-wrong-case"])
def test_chartcheck_refuses(tools, change, message):
    status, _, err = decode(tools, GOOD_DEPLOYMENT)
    assert status == 0, err
    old, new = change
    assert old in GOOD_DEPLOYMENT
    status, objects, err = decode(tools, "---\n# Source: x\n" + GOOD_DEPLOYMENT.replace(old, new, 1))
    assert status == 1 and objects is None
    assert message in err and "Deploy" in err, err

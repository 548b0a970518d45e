"""Policy checks over the chart's rendered objects (as chartcheck decoded them: the Kubernetes
API's own types, re-encoded as JSON).

Each check takes a Rendered and returns a list of problems, one string each; an empty list
passes. They are plain functions so that the tests can also feed them broken objects and see
each one fail.
"""

import base64
import re

BROKER_COMPONENTS = ("auth", "ingest", "stream", "certd", "bus")
API_COMPONENTS = ("auth", "ingest", "stream")
# The flags whose value would be a secret itself; the chart must use their _file forms.
SECRET_FLAGS = ("admin_token", "jwt_secret", "store", "store_password")
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"
NAME = "app.kubernetes.io/name"


class Rendered:
    """The objects of one render, and what the checks need to know about it."""

    def __init__(self, objects, release, namespace, values):
        self.objects = objects
        self.release = release
        self.namespace = namespace
        self.values = values

    def of_kind(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind, name):
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None

    def workloads(self):
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]

    def by_component(self, component):
        found = [w for w in self.workloads() if pod_labels(w).get(COMPONENT) == component]
        return found[0] if found else None


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def containers(workload):
    spec = pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


def where(workload, container=None):
    w = "%s/%s" % (workload["kind"], workload["metadata"]["name"])
    return w + ("[%s]" % container["name"] if container else "")


def is_broker(container):
    """A container of the broker image (its command is one of the broker-* binaries)."""
    return bool(container.get("command")) and container["command"][0].startswith("broker-")


def flags(container):
    """{flag: value} of a container's --flag=value arguments."""
    out = {}
    for arg in container.get("command", [])[1:] + container.get("args", []):
        m = re.match(r"^--([a-z0-9_]+)=(.*)$", arg, re.S)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def selects(selector, labels):
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selected_workloads(r, selector):
    return [w for w in r.workloads() if selects(selector, pod_labels(w))]


def container_ports(workload):
    return {p.get("name"): p["containerPort"] for c in containers(workload) for p in c.get("ports", [])}


# ---- the checks --------------------------------------------------------------------------------


def check_probes(r):
    """Every broker service answers /healthz (liveness) and /readyz (readiness) on its HTTP port;
    the gateway, whose /healthz and /readyz are auth's, checks its own health inside the pod."""
    problems = []
    for w in r.workloads():
        for c in containers(w):
            live, ready = c.get("livenessProbe"), c.get("readinessProbe")
            if not live or not ready:
                problems.append("%s: no liveness or no readiness probe" % where(w, c))
                continue
            if is_broker(c):
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
                for probe, path in ((live, "/healthz"), (ready, "/readyz")):
                    get = probe.get("httpGet")
                    if not get or get.get("path") != path:
                        problems.append("%s: a probe is not an HTTP GET of %s" % (where(w, c), path))
                        continue
                    port = ports.get(get["port"], get["port"])
                    if port != 8080:
                        problems.append("%s: the %s probe asks port %s, not the service's 8080" % (where(w, c), path, get["port"]))
            else:
                for probe in (live, ready):
                    command = " ".join((probe.get("exec") or {}).get("command", []))
                    if "http://127.0.0.1:8080/gateway-health" not in command:
                        problems.append("%s: a probe does not ask the gateway's own /gateway-health" % where(w, c))
    return problems


def check_resources(r):
    problems = []
    for w in r.workloads():
        for c in containers(w):
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    if what not in (res.get(kind) or {}):
                        problems.append("%s: no %s.%s" % (where(w, c), kind, what))
    return problems


def check_security(r):
    """Non-root (10001), a read-only root file system, no privilege escalation, every capability
    dropped; no service account token, no Service links, nothing of the host's."""
    problems = []
    for w in r.workloads():
        spec = pod_spec(w)
        pod = spec.get("securityContext") or {}
        if pod.get("runAsNonRoot") is not True:
            problems.append("%s: pod securityContext.runAsNonRoot is not true" % where(w))
        if spec.get("automountServiceAccountToken") is not False:
            problems.append("%s: the service account token is mounted" % where(w))
        if spec.get("enableServiceLinks") is not False:
            problems.append("%s: Service links are on (they set BROKER_* variables)" % where(w))
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problems.append("%s: %s" % (where(w), host))
        for v in spec.get("volumes", []):
            if "hostPath" in v:
                problems.append("%s: hostPath volume %s" % (where(w), v["name"]))
        for c in containers(w):
            sc = c.get("securityContext") or {}
            user = sc.get("runAsUser", pod.get("runAsUser"))
            if user != 10001:
                problems.append("%s: runs as user %s, not 10001" % (where(w, c), user))
            if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append("%s: runAsNonRoot is not true" % where(w, c))
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("%s: readOnlyRootFilesystem is not true" % where(w, c))
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("%s: allowPrivilegeEscalation is not false" % where(w, c))
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append("%s: capabilities do not drop ALL" % where(w, c))
            if caps.get("add"):
                problems.append("%s: capabilities added: %s" % (where(w, c), caps["add"]))
            if sc.get("privileged"):
                problems.append("%s: privileged" % where(w, c))
    return problems


def check_writable_paths(r):
    """With a read-only root, every place a process writes is a volume: /tmp everywhere, certd's
    --certs, the gateway's run directory."""
    problems = []
    for w in r.workloads():
        for c in containers(w):
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            needed = []
            if is_broker(c):
                needed.append("/tmp")
                if c["command"][0] == "broker-certd":
                    needed.append(flags(c).get("certs", "(no --certs)"))
            else:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                needed.append(env.get("BROKER_GATEWAY_RUN", "/tmp/gateway"))
            for path in needed:
                if path not in mounts or mounts[path].get("readOnly"):
                    problems.append("%s: %s is not a writable volume" % (where(w, c), path))
    return problems


def check_stream_rollout(r):
    """The stream's rollout never lowers its capacity (maxUnavailable 0, maxSurge 1), it pauses
    before SIGTERM, and its grace period outlasts the pause and the drain of --drain_seconds."""
    problems = []
    w = r.by_component("stream")
    if w is None:
        return ["no stream Deployment"]
    strategy = w["spec"].get("strategy") or {}
    ru = strategy.get("rollingUpdate") or {}
    if strategy.get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0 or ru.get("maxSurge") != 1:
        problems.append("stream rollout is %s %s, not RollingUpdate with maxUnavailable 0, maxSurge 1"
                        % (strategy.get("type"), ru))
    c = [c for c in containers(w) if is_broker(c)][0]
    seconds = flags(c).get("drain_seconds")
    if seconds is None or not seconds.isdigit():
        return problems + ["stream: no --drain_seconds=<n> on its command line"]
    drain = r.values["stream"]["drainSeconds"]
    if int(seconds) != drain:
        problems.append("stream: --drain_seconds=%s, the values say %d" % (seconds, drain))
    pre = ((c.get("lifecycle") or {}).get("preStop")) or {}
    pause = None
    if "sleep" in pre:
        pause = pre["sleep"]["seconds"]
    elif (pre.get("exec") or {}).get("command", [""])[0] == "sleep":
        pause = int(pre["exec"]["command"][1])
    if pause is None:
        problems.append("stream: no preStop pause for the endpoints to update")
        pause = 0
    grace = pod_spec(w).get("terminationGracePeriodSeconds", 30)
    if not grace > int(seconds) + pause:
        problems.append("stream: terminationGracePeriodSeconds %s does not exceed the preStop pause %d + "
                        "--drain_seconds %s" % (grace, pause, seconds))
    return problems


def check_forwarders(r):
    """A StatefulSet of forwarders behind its headless Service, and every broker service naming
    each forwarder by its stable DNS name in --bus_forwarders, nothing else."""
    bus = r.by_component("bus")
    if bus is None or bus["kind"] != "StatefulSet":
        return ["the forwarders are not a StatefulSet"]
    problems = []
    headless = r.named("Service", bus["spec"].get("serviceName", ""))
    if headless is None or headless["spec"].get("clusterIP") != "None":
        problems.append("no headless Service %r for the forwarders" % bus["spec"].get("serviceName"))
    elif not selects({"matchLabels": headless["spec"]["selector"]}, pod_labels(bus)):
        problems.append("the headless Service does not select the forwarders")
    port = flags([c for c in containers(bus) if is_broker(c)][0]).get("bus_forwarder_port", "5559")
    names = ["%s-%d.%s.%s.svc.%s:%s" % (bus["metadata"]["name"], i, bus["spec"].get("serviceName"),
                                        r.namespace, r.values["clusterDomain"], port)
             for i in range(bus["spec"].get("replicas", 1))]
    for w in r.workloads():
        for c in containers(w):
            if not is_broker(c):
                continue
            listed = flags(c).get("bus_forwarders", "").split(",")
            if listed != names:
                problems.append("%s: --bus_forwarders=%s, expected %s" % (where(w, c), ",".join(listed), ",".join(names)))
    return problems


def secret_mounts(workload, container):
    """{mount path: (Secret name, {item path: key} or None for every key)} of a container."""
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        v = volumes.get(m["name"], {})
        if "secret" in v:
            items = v["secret"].get("items")
            out[m["mountPath"]] = (v["secret"]["secretName"],
                                   {i["path"]: i["key"] for i in items} if items else None, m.get("readOnly"))
    return out


def secret_values(r):
    """Every value of the Secrets the chart made (what must never appear in a pod's spec)."""
    values = []
    for s in r.of_kind("Secret"):
        for v in (s.get("data") or {}).values():
            values.append(base64.b64decode(v).decode())
        values += list((s.get("stringData") or {}).values())
    return values


def check_secrets_as_files(r):
    """Secrets reach the services as files on read-only Secret volumes, through the _file flags
    and the key flags; none is in an environment variable or on a command line; the API's
    secrets and the store's URI go to auth, ingest and stream only."""
    problems = []
    known = [v.strip() for v in secret_values(r) if len(v.strip()) >= 8]
    file_flags = ("admin_token_file", "jwt_secret_file", "store_file", "store_password_file", "bus_key_file",
                  "bus_trusted_keys", "bus_server_key", "bus_certd_key")
    for w in r.workloads():
        for c in containers(w):
            for e in c.get("env", []):
                if "secretKeyRef" in (e.get("valueFrom") or {}):
                    problems.append("%s: env %s comes from a Secret" % (where(w, c), e["name"]))
                if e["name"] in ("BROKER_" + f.upper() for f in SECRET_FLAGS):
                    problems.append("%s: env %s holds a secret" % (where(w, c), e["name"]))
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    problems.append("%s: envFrom a Secret" % where(w, c))
            words = c.get("command", []) + c.get("args", []) + [e.get("value") or "" for e in c.get("env", [])]
            for word in words:
                for secret in known:
                    if secret in word:
                        problems.append("%s: a Secret's value is in its spec: %s" % (where(w, c), word[:60]))
            f = flags(c)
            for name in SECRET_FLAGS:
                if name in f:
                    problems.append("%s: --%s= puts a secret on the command line" % (where(w, c), name))
            mounts = secret_mounts(w, c)
            for path, (_, _, read_only) in mounts.items():
                if not read_only:
                    problems.append("%s: the Secret volume at %s is not read-only" % (where(w, c), path))
            for name in file_flags:
                if name not in f:
                    continue
                for file in f[name].split(","):
                    directory, _, base = file.rpartition("/")
                    mount = mounts.get(directory)
                    if mount is None or (mount[1] is not None and base not in mount[1]):
                        problems.append("%s: --%s=%s is not a file of a mounted Secret" % (where(w, c), name, file))
            if is_broker(c):
                component = pod_labels(w).get(COMPONENT)
                wants_api = component in API_COMPONENTS
                for name in ("admin_token_file", "jwt_secret_file", "store_file"):
                    if (name in f) != wants_api:
                        problems.append("%s: --%s %s" % (where(w, c), name, "missing" if wants_api else "given to a service without the store"))
                if "bus_key_file" not in f:
                    problems.append("%s: no --bus_key_file: the bus in the clear" % where(w, c))
                if f.get("bus_insecure", "false") != "false":
                    problems.append("%s: --bus_insecure" % where(w, c))
                # Its own pair, not another service's.
                key = f.get("bus_key_file", "")
                directory, _, base = key.rpartition("/")
                mount = mounts.get(directory)
                if mount and mount[1] is not None and mount[1].get(base) != component:
                    problems.append("%s: its bus key is the Secret key %r, not %r" % (where(w, c), mount[1].get(base), component))
    return problems


def check_network_policies(r):
    """Each NetworkPolicy selects exactly the pods of the component it is labelled with; every
    workload has one; every rule names ports the pods have; sources are this release's broker
    pods (the bus ports), the gateway or the Ingress controller of the values (the services'
    port), and only the gateway's policy may take anyone, on its own ports."""
    problems = []
    np_values = r.values["networkPolicy"]
    controller = {"namespaceSelector": np_values["ingressController"]["namespaceSelector"]}
    if np_values["ingressController"].get("podSelector"):
        controller["podSelector"] = np_values["ingressController"]["podSelector"]
    policies = r.of_kind("NetworkPolicy")
    covered = set()
    gateway = r.by_component("gateway")
    for np in policies:
        name = np["metadata"]["name"]
        claimed = np["metadata"].get("labels", {}).get(COMPONENT)
        chosen = selected_workloads(r, np["spec"]["podSelector"])
        want = [w for w in r.workloads() if pod_labels(w).get(COMPONENT) == claimed]
        if not want or chosen != want:
            problems.append("NetworkPolicy/%s (%s) selects %s" % (name, claimed, [w["metadata"]["name"] for w in chosen]))
            continue
        covered.update(w["metadata"]["name"] for w in chosen)
        if "Ingress" not in np["spec"].get("policyTypes", []):
            problems.append("NetworkPolicy/%s: not an Ingress policy" % name)
        ports = {}
        for w in chosen:
            ports.update(container_ports(w))
        for rule in np["spec"].get("ingress") or []:
            rule_ports = [p.get("port") for p in rule.get("ports") or []]
            if not rule_ports:
                problems.append("NetworkPolicy/%s: a rule opens every port" % name)
            for p in rule_ports:
                if p not in ports and p not in ports.values():
                    problems.append("NetworkPolicy/%s: port %s is no port of its pods" % (name, p))
            sources = rule.get("from") or []
            if not sources:
                if claimed != "gateway":
                    problems.append("NetworkPolicy/%s: takes anyone on %s" % (name, rule_ports))
                continue
            metrics = np_values.get("metricsFrom") or []
            for peer in sources:
                # Scrapers of /metrics the values name, by selector only.
                if peer in metrics and rule_ports == ["http"] and "ipBlock" not in peer:
                    continue
                problem = judge_peer(r, peer, claimed, rule_ports, controller, gateway)
                if problem:
                    problems.append("NetworkPolicy/%s: %s" % (name, problem))
    for w in r.workloads():
        if w["metadata"]["name"] not in covered:
            problems.append("%s: no NetworkPolicy selects its pods" % where(w))
    return problems


def judge_peer(r, peer, claimed, ports, controller, gateway):
    """What is wrong with one source of a rule, or None."""
    if "ipBlock" in peer:
        return "an ipBlock source %s" % peer["ipBlock"]
    if "namespaceSelector" in peer:
        if peer != controller:
            return "a namespace source %s that is not the Ingress controller's %s" % (peer, controller)
        if claimed == "bus" or (claimed in API_COMPONENTS + ("certd",) and gateway is not None):
            return "the Ingress controller reaches %s %s" % (claimed, ports)
        return None
    if "podSelector" not in peer:
        return "a source with no selector %s" % peer
    sel = peer["podSelector"]
    labels = sel.get("matchLabels") or {}
    if labels.get(INSTANCE) != r.release or NAME not in labels:
        return "a pod source %s that is not this release's broker pods" % sel
    chosen = selected_workloads(r, sel)
    components = {pod_labels(w).get(COMPONENT) for w in chosen}
    if not chosen:
        return "a pod source %s that selects no pod" % sel
    if claimed == "bus":
        if not components <= set(BROKER_COMPONENTS) or set(ports) - {"xsub", "xpub"}:
            return "the bus takes %s on %s" % (sorted(components), ports)
    elif components != {"gateway"}:
        return "%s takes %s on %s: only the gateway should" % (claimed, sorted(components), ports)
    return None


def check_routing(r):
    """Services, PodDisruptionBudgets and the autoscaler select pods that exist; the gateway's
    upstreams and the Ingress's backends are Services of the chart with those ports."""
    problems = []
    for s in r.of_kind("Service"):
        chosen = selected_workloads(r, {"matchLabels": s["spec"].get("selector", {})})
        if len(chosen) != 1:
            problems.append("Service/%s selects %d workloads" % (s["metadata"]["name"], len(chosen)))
            continue
        ports = container_ports(chosen[0])
        for p in s["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            if target not in ports and target not in ports.values():
                problems.append("Service/%s: target port %s is no port of its pods" % (s["metadata"]["name"], target))
    for pdb in r.of_kind("PodDisruptionBudget"):
        if len(selected_workloads(r, pdb["spec"]["selector"])) != 1:
            problems.append("PodDisruptionBudget/%s does not select one workload" % pdb["metadata"]["name"])
    scaled = set()
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = r.named(ref["kind"], ref["name"])
        if target is None:
            problems.append("HorizontalPodAutoscaler/%s scales no object of the chart" % hpa["metadata"]["name"])
        elif "replicas" in target["spec"]:
            problems.append("%s sets replicas while an autoscaler owns them" % where(target))
        scaled.add(ref["name"])
    covered = {w["metadata"]["name"] for pdb in r.of_kind("PodDisruptionBudget")
               for w in selected_workloads(r, pdb["spec"]["selector"])}
    for w in r.workloads():
        several = w["spec"].get("replicas", 1) > 1 or w["metadata"]["name"] in scaled
        if several and w["metadata"]["name"] not in covered:
            problems.append("%s: several replicas and no PodDisruptionBudget" % where(w))
    services = {s["metadata"]["name"]: s for s in r.of_kind("Service")}
    suffix = ".%s.svc.%s" % (r.namespace, r.values["clusterDomain"])
    for w in r.workloads():
        for c in containers(w):
            for e in c.get("env", []):
                if re.match(r"^BROKER_GATEWAY_(AUTH|INGEST|STREAM|CERTD)$", e["name"]):
                    host, _, port = e["value"].rpartition(":")
                    svc = services.get(host[:-len(suffix)]) if host.endswith(suffix) else None
                    if svc is None or int(port) not in [p["port"] for p in svc["spec"]["ports"]]:
                        problems.append("%s: %s=%s is no Service of the chart" % (where(w, c), e["name"], e["value"]))
    for ing in r.of_kind("Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                port = backend["port"]
                if svc is None or not any(p["port"] == port.get("number") or p.get("name") == port.get("name")
                                          for p in svc["spec"]["ports"]):
                    problems.append("Ingress/%s: %s goes to no Service port of the chart" % (ing["metadata"]["name"], path["path"]))
    return problems


def check_ingress_sse(r):
    """An Ingress carries ingress-nginx's settings for Server-Sent Events: no response buffering,
    read and send timeouts of an hour at least; without the gateway, /sse goes to stream."""
    problems = []
    for ing in r.of_kind("Ingress"):
        a = ing["metadata"].get("annotations", {})
        if a.get("nginx.ingress.kubernetes.io/proxy-buffering") != "off":
            problems.append("Ingress: proxy-buffering is not off")
        for t in ("proxy-read-timeout", "proxy-send-timeout"):
            value = a.get("nginx.ingress.kubernetes.io/" + t, "60")
            if not value.isdigit() or int(value) < 3600:
                problems.append("Ingress: %s is %s s" % (t, value))
        if r.by_component("gateway") is None:
            routes = {p["path"]: p["backend"]["service"]["name"] for rule in ing["spec"]["rules"]
                      for p in rule["http"]["paths"]}
            stream = r.by_component("stream")["metadata"]["name"]
            if routes.get("/sse") != stream:
                problems.append("Ingress: /sse does not go to %s" % stream)
    return problems


ALL = [check_probes, check_resources, check_security, check_writable_paths, check_stream_rollout,
       check_forwarders, check_secrets_as_files, check_network_policies, check_routing, check_ingress_sse]

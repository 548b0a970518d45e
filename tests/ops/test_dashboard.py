"""Checks of the Grafana dashboard deploy/grafana/broker-dashboard.json.

A dashboard fails quietly: a misspelt metric draws an empty panel and nobody notices until the
night it was needed. So besides its shape (importable JSON, a title and a query on every panel,
the ${DS_PROMETHEUS} input), every broker_* metric any query names must be one a real broker
exposes on /metrics. The test starts one and first makes it do one SSE connection, one insert
delivered to it and one refused credential, so that series created on first use exist.

If promtool (Debian package prometheus) is installed, every query is also parsed by
Prometheus's own PromQL parser; without it only a bracket and quote balance check runs.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import DEPLOY, HTTP_TIMEOUT, start_broker, stop_broker

DASHBOARD = os.path.join(DEPLOY, "grafana", "broker-dashboard.json")
ADMIN = "ops-admin-token"
SECRET = "ops-jwt-secret"
SSE_TIMEOUT = 10.0  # seconds to wait for the inserted event on the stream

METRIC_RE = re.compile(r"\bbroker_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Families the operator asked for; a panel dropped by mistake shows up here.
REQUIRED_FAMILIES = {
    "broker_http_requests_total", "broker_sse_subscribers", "broker_events_inserted_total",
    "broker_store_write_batches_total", "broker_store_write_microseconds_total",
    "broker_sse_slow_dropped_total", "broker_door_relayed_total",
    "broker_delivery_latency_seconds", "broker_auth_failures_total",
}


# ---------------------------------------------------------------- the dashboard

@pytest.fixture(scope="module")
def dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dash):
    """Panels at any depth (rows may nest panels); row panels themselves have no query."""
    out = []
    stack = list(dash.get("panels", []))
    while stack:
        p = stack.pop(0)
        stack.extend(p.get("panels", []))
        if p.get("type") != "row":
            out.append(p)
    return out


def queries(dash):
    """(where, PromQL) of every panel target and every query variable."""
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            out.append(("panel %r target %s" % (p.get("title"), t.get("refId")), t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            out.append(("variable %r" % v.get("name"), q.get("query", "") if isinstance(q, dict) else q or ""))
    return out


def family(name, exposed):
    """The metric family a query's name belongs to: foo_bucket/_sum/_count -> foo when foo is
    a histogram (or summary) on /metrics."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if exposed["types"].get(base) in ("histogram", "summary"):
                return base
    return name


def test_dashboard_shape(dashboard):
    assert isinstance(dashboard.get("schemaVersion"), int) and 36 <= dashboard["schemaVersion"] <= 41, \
        dashboard.get("schemaVersion")
    assert dashboard.get("title") and dashboard.get("uid"), "title and uid are needed to import"
    assert "Import" in dashboard.get("description", ""), "the description should say how to use it"
    inputs = {i.get("name"): i for i in dashboard.get("__inputs", [])}
    ds = inputs.get("DS_PROMETHEUS")
    assert ds and ds.get("type") == "datasource" and ds.get("pluginId") == "prometheus", inputs


def test_every_panel_has_title_and_query(dashboard):
    panels = all_panels(dashboard)
    assert len(panels) >= 9, "expected a panel per requested view, found %d" % len(panels)
    ids = [p.get("id") for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat: %s" % ids
    for p in panels:
        where = "panel id %s" % p.get("id")
        assert isinstance(p.get("title"), str) and p["title"].strip(), where + " has no title"
        assert p.get("gridPos"), where + " has no position"
        targets = p.get("targets") or []
        assert targets, "%s (%r) has no target" % (where, p["title"])
        for t in targets:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), \
                "%r target %s has no expression" % (p["title"], t.get("refId"))
            for obj in (p, t):
                assert obj.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", \
                    "%r: datasource must be the ${DS_PROMETHEUS} input: %r" % (p["title"], obj.get("datasource"))


def test_requested_views_are_there(dashboard):
    names = {n for _, q in queries(dashboard) for n in METRIC_RE.findall(q)}
    used = names | {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    missing = sorted(REQUIRED_FAMILIES - used)
    assert not missing, "no panel queries %s" % missing
    exprs = [q for _, q in queries(dashboard)]
    for quantile in ("0.5", "0.99"):
        assert any(re.search(r"histogram_quantile\(\s*%s\s*," % re.escape(quantile), e)
                   and "broker_delivery_latency_seconds_bucket" in e for e in exprs), \
            "no p%s of broker_delivery_latency_seconds" % quantile.replace("0.", "")
    assert any(re.search(r"by \(kind\)", e) and "broker_auth_failures_total" in e for e in exprs), \
        "auth failures are not split by kind"
    assert any(re.search(r"by \(code\)", e) and "broker_http_requests_total" in e for e in exprs), \
        "HTTP requests are not split by status class"


def test_queries_are_balanced(dashboard):
    """A cheap syntax guard that always runs: brackets pair up outside string literals."""
    pairs = {")": "(", "]": "[", "}": "{"}
    for where, q in queries(dashboard):
        stack, quote = [], None
        for c in q:
            if quote:
                quote = None if c == quote else quote
            elif c in "\"'`":
                quote = c
            elif c in "([{":
                stack.append(c)
            elif c in pairs:
                assert stack and stack.pop() == pairs[c], "%s: unbalanced %r in %s" % (where, c, q)
        assert not stack and not quote, "%s: unclosed %s in %s" % (where, stack or quote, q)
        for m in re.finditer(r"histogram_quantile\(", q):
            assert "_bucket" in q and re.search(r"\ble\b", q), \
                "%s: histogram_quantile needs the _bucket series summed by le: %s" % (where, q)


def grafana_to_promql(q):
    """Replace Grafana's variables with values Prometheus would see."""
    q = re.sub(r"\$__(rate_)?interval\b", "1m", q)
    q = re.sub(r"\$\{?(job|instance)\}?", ".*", q)
    return q


def test_queries_parse_with_promtool(dashboard):
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed: PromQL not parsed")
    exprs = [(w, grafana_to_promql(q)) for w, q in queries(dashboard) if not q.startswith("label_values(")]
    d = tempfile.mkdtemp(prefix="broker-ops-promql-")
    try:
        path = os.path.join(d, "rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n- name: dashboard\n  rules:\n")
            for i, (_, q) in enumerate(exprs):
                f.write("  - record: dashboard:query%d\n    expr: %s\n" % (i, json.dumps(q)))
        r = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, "promtool refuses a query:\n%s\n%s" % (
            r.stdout + r.stderr, "\n".join("query%d: %s" % (i, q) for i, (_, q) in enumerate(exprs)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- a live broker's /metrics

def parse_exposition(text):
    """{"types": {family: type}, "samples": {sample name: [label strings]}} of Prometheus text."""
    types, samples = {}, {}
    for line in text.splitlines():
        m = re.match(r"#\s*TYPE\s+(\S+)\s+(\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", line)
        assert m, "not a sample line: %r" % line
        samples.setdefault(m.group(1), []).append(m.group(2) or "")
    return {"types": types, "samples": samples}


def read_until(sock, needle, deadline):
    buf = b""
    while needle not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%r did not arrive on the stream; got %r" % (needle, buf[-500:]))
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("stream closed before %r; got %r" % (needle, buf[-500:]))
        buf += chunk
    return buf


@pytest.fixture(scope="module")
def exposed(broker_bin):
    """/metrics of a broker that has served one stream, one delivered insert and one refused
    credential."""
    b = start_broker(broker_bin, ["--admin_token=" + ADMIN, "--jwt_secret=" + SECRET, "--keepalive=2"])
    sock = None
    try:
        r = requests.post(b.url("/create_user"), timeout=HTTP_TIMEOUT, json={
            "username": "ops", "password": "ops-password", "admin_token": ADMIN, "tenant_name": "ops"})
        assert r.status_code == 200, r.text
        r = requests.post(b.url("/login"), json={"username": "ops", "password": "ops-password"},
                          timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        jwt = r.json()["jwt"]

        port = int(b.base_url.rsplit(":", 1)[1])
        sock = socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT)
        sock.sendall(("GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                      "Authorization: Bearer %s\r\n\r\n" % jwt).encode())
        deadline = time.monotonic() + SSE_TIMEOUT
        read_until(sock, b"retry:", deadline)  # subscribed: the insert below is live for it

        r = requests.post(b.url("/insert"), json={"event": "ops", "data": {"n": 1}},
                          headers={"Authorization": "Bearer " + jwt}, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        read_until(sock, b"event: ops", deadline)  # delivered: a latency was observed

        r = requests.get(b.url("/verify"), headers={"Authorization": "Bearer not.a.jwt"},
                         timeout=HTTP_TIMEOUT)
        assert r.status_code == 401, r.text

        r = requests.get(b.url("/metrics"), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return parse_exposition(r.text)
    finally:
        if sock is not None:
            sock.close()
        stop_broker(b)


def test_every_queried_metric_is_exposed(dashboard, exposed):
    known = set(exposed["samples"]) | set(exposed["types"])
    missing = {}
    for where, q in queries(dashboard):
        for name in METRIC_RE.findall(q):
            if name not in known and family(name, exposed) not in known:
                missing.setdefault(name, []).append(where)
    print("metric families on /metrics: %d; names in the dashboard's queries: %d" % (
        len(exposed["types"]), len({n for _, q in queries(dashboard) for n in METRIC_RE.findall(q)})))
    assert not missing, "the dashboard queries metrics a live broker does not expose:\n" + "\n".join(
        "  %s (%s)" % (n, "; ".join(w)) for n, w in sorted(missing.items()))


def test_quantiles_read_a_real_histogram(dashboard, exposed):
    for where, q in queries(dashboard):
        for name in re.findall(r"\b(broker_[a-z0-9_]+)_bucket\b", q):
            assert exposed["types"].get(name) == "histogram", \
                "%s: %s is not a histogram on /metrics (TYPE %r)" % (where, name, exposed["types"].get(name))
            buckets = exposed["samples"].get(name + "_bucket", [])
            assert any('le="+Inf"' in labels for labels in buckets), \
                "%s: %s_bucket has no le=\"+Inf\" series" % (where, name)

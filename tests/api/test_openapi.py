"""docs/openapi.yaml stays true: a valid OpenAPI 3.1 file that describes exactly what Broker serves.

Three kinds of check, because each catches a different way for the reference to drift:
  1. the file itself: YAML, the OpenAPI 3.1 structure, every $ref resolves, every operation has
     responses, every schema is a valid JSON Schema 2020-12 and every example fits its schema,
     and docs/ links nothing outside the repository;
  2. the routes: the C route tables (services/*/*.c, lib/*.c) and the stream engine's GET /sse
     against the file's paths, both ways; then a real broker (BROKER_BIN, default build/broker,
     started here on a free loopback port) answers every documented (method, path) with a
     documented status and body, answers 405 to the other methods, and walks the happy paths
     with bodies and headers matching their schemas;
  3. the statuses: the black-box suite, run with BROKER_STATUS_LOG=<file> (see
     tests/blackbox/conftest.py), logs every (method, path, status) it received.  Each one on a
     documented path must be documented, and each documented status must have been seen, except
     the few in NOT_PROVOKED below.  So this file runs AFTER that black-box run, with the same
     BROKER_STATUS_LOG; without the log the status checks fail (they never skip).
"""

import base64
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid

import jsonschema
import pytest
import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SPEC_FILE = os.path.join(REPO, "docs", "openapi.yaml")
API_MD = os.path.join(REPO, "docs", "API.md")
BROKER_BIN = os.environ.get("BROKER_BIN", os.path.join(REPO, "build", "broker"))
STATUS_LOG = os.environ.get("BROKER_STATUS_LOG", "")

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TIMEOUT = 10.0  # every request and wait is bounded by this
ADMIN = "api-admin-" + uuid.uuid4().hex[:8]
SECRET = "api-secret-" + uuid.uuid4().hex

# Documented statuses the black-box suite cannot provoke against a healthy all-in-one broker.
# Each is still documented because the code answers it; the reason says why the suite never
# sees it.  Keep this list short: a status that the suite could provoke belongs in the suite.
_STORE_FAULT = ("a server fault (the user store, password hashing or token signing failing): "
                "the suite's full-disk test breaks event writes only (POST /insert 507, /readyz "
                "503); tests/mongo/test_faults.py stops a MongoDB store instead")
NOT_PROVOKED = {
    ("POST", "/insert", "500"): ("the event store failing for another reason than a full disk (which "
                                 "answers 507): tests/mongo/test_faults.py stops a MongoDB store"),
    ("POST", "/create_user", "500"): _STORE_FAULT,
    ("POST", "/login", "500"): _STORE_FAULT,
    ("GET", "/verify", "500"): _STORE_FAULT,
    ("POST", "/revoke_user", "500"): _STORE_FAULT,
    ("POST", "/unrevoke_user", "500"): _STORE_FAULT,
    ("POST", "/list_users", "500"): _STORE_FAULT,
    ("POST", "/get_user", "500"): _STORE_FAULT,
    ("POST", "/update_user", "500"): _STORE_FAULT,
    ("GET", "/sse", "500"): _STORE_FAULT + " (the user store failing during a stream's credential check)",
    ("GET", "/presence", "500"): _STORE_FAULT + " (the user store failing during the credential check)",
    ("GET", "/metrics", "500"): "the exposition could not be rendered (out of memory)",
    ("GET", "/sse", "408"): ("the suite's slow-head test sends no request line at all, so the "
                             "408 it gets names no path; a half-sent GET /sse would take 10 s"),
}


# ---------------------------------------------------------------- the file

@pytest.fixture(scope="module")
def spec():
    with open(SPEC_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def pointer(doc, ref):
    """The node a local $ref ("#/a/b") names; KeyError when it names nothing."""
    assert ref.startswith("#/"), "only local $refs are allowed: %r" % ref
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def deref(doc, node, depth=0):
    """`node` with every $ref replaced by (a copy of) its target, recursively."""
    assert depth < 40, "a $ref cycle"
    if isinstance(node, dict):
        if "$ref" in node:
            return deref(doc, copy.deepcopy(pointer(doc, node["$ref"])), depth + 1)
        return {k: deref(doc, v, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [deref(doc, v, depth + 1) for v in node]
    return node


def walk(node, path=()):
    """Every (path, dict) in the document."""
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, path + (i,))


def operations(spec):
    """(METHOD, path, operation) for every operation in the file."""
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def responses_of(spec, method, path):
    return spec["paths"][path][method.lower()]["responses"]


def test_top_level_structure(spec):
    assert isinstance(spec, dict), "openapi.yaml is not a mapping"
    assert re.fullmatch(r"3\.1\.\d+", str(spec.get("openapi", ""))), spec.get("openapi")
    info = spec.get("info") or {}
    assert isinstance(info.get("title"), str) and info["title"], "info.title"
    assert isinstance(info.get("version"), str) and info["version"], "info.version"
    assert isinstance(spec.get("paths"), dict) and spec["paths"], "paths"
    allowed = {"openapi", "info", "jsonSchemaDialect", "servers", "paths", "webhooks",
               "components", "security", "tags", "externalDocs"}
    extra = {k for k in spec if k not in allowed and not k.startswith("x-")}
    assert not extra, "unknown top-level keys: %s" % sorted(extra)
    for p in spec["paths"]:
        assert p.startswith("/"), "path %r must start with /" % p


def test_every_ref_resolves(spec):
    bad = []
    for where, node in walk(spec):
        ref = node.get("$ref")
        if ref is None:
            continue
        try:
            pointer(spec, ref)
        except (KeyError, IndexError, ValueError, AssertionError) as e:
            bad.append("%s: %r (%s)" % ("/".join(map(str, where)), ref, e))
    assert not bad, "unresolved $refs:\n" + "\n".join(bad)


def test_every_operation_has_responses(spec):
    bad = []
    for method, path, op in operations(spec):
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            bad.append("%s %s: no responses" % (method, path))
            continue
        for status, resp in responses.items():
            if not re.fullmatch(r"[1-5][0-9][0-9]|default", str(status)):
                bad.append("%s %s: response key %r" % (method, path, status))
            resp = deref(spec, resp)
            if not isinstance(resp.get("description"), str):
                bad.append("%s %s %s: no description" % (method, path, status))
            for mtype, media in (resp.get("content") or {}).items():
                if "schema" not in media:
                    bad.append("%s %s %s %s: no schema" % (method, path, status, mtype))
    assert not bad, "\n".join(bad)


def test_operation_ids_unique_and_tags_declared(spec):
    ids = [op["operationId"] for _, _, op in operations(spec) if "operationId" in op]
    assert len(ids) == len(set(ids)), "duplicate operationIds: %s" % sorted(
        i for i in set(ids) if ids.count(i) > 1)
    declared = {t["name"] for t in spec.get("tags", [])}
    used = {t for _, _, op in operations(spec) for t in op.get("tags", [])}
    assert used <= declared, "undeclared tags: %s" % sorted(used - declared)


def test_path_parameters_declared(spec):
    bad = []
    for path, item in spec["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for method in HTTP_METHODS:
            if method not in item:
                continue
            params = [deref(spec, p) for p in item.get("parameters", []) +
                      item[method].get("parameters", [])]
            declared = {p["name"] for p in params if p.get("in") == "path"}
            if declared != names:
                bad.append("%s %s: path parameters %s, template %s" % (method, path, declared, names))
            for p in params:
                if p.get("in") == "path" and p.get("required") is not True:
                    bad.append("%s %s: path parameter %s must be required" % (method, path, p["name"]))
                if p.get("in") not in ("query", "header", "path", "cookie"):
                    bad.append("%s %s: parameter %r in %r" % (method, path, p.get("name"), p.get("in")))
    assert not bad, "\n".join(bad)


def test_security_schemes(spec):
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert schemes, "no securitySchemes"
    for name, s in schemes.items():
        assert s.get("type") in ("apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"), name
        if s["type"] == "http":
            assert s.get("scheme") in ("bearer", "basic"), name
        if s["type"] == "apiKey":
            assert s.get("in") in ("query", "header", "cookie") and s.get("name"), name
    users = {}
    for method, path, op in operations(spec):
        for requirement in op.get("security", spec.get("security", [])):
            for name in requirement:
                assert name in schemes, "%s %s: unknown security scheme %r" % (method, path, name)
                users.setdefault(name, set()).add((method, path))
    # The query-string JWT is for EventSource, on /sse only.
    query_schemes = {n for n, s in schemes.items() if s["type"] == "apiKey" and s["in"] == "query"}
    for n in query_schemes:
        assert users.get(n, set()) <= {("GET", "/sse")}, "%s used beyond GET /sse: %s" % (n, users[n])


def all_schemas(spec):
    """(where, schema) of every schema object: components' and each inline one."""
    for name, s in spec.get("components", {}).get("schemas", {}).items():
        yield "components/schemas/" + name, s
    for where, node in walk(spec["paths"]):
        if isinstance(node.get("schema"), dict):
            yield "paths/" + "/".join(map(str, where)), node["schema"]


def test_schemas_are_json_schema_2020_12(spec):
    bad = []
    for where, s in all_schemas(spec):
        try:
            jsonschema.Draft202012Validator.check_schema(deref(spec, s))
        except jsonschema.SchemaError as e:
            bad.append("%s: %s" % (where, e.message))
    assert not bad, "\n".join(bad)


def test_examples_fit_their_schemas(spec):
    checked = 0
    for where, s in all_schemas(spec):
        full = deref(spec, s)
        for ex in s.get("examples", []) if isinstance(s.get("examples"), list) else []:
            jsonschema.validate(ex, full, cls=jsonschema.Draft202012Validator)
            checked += 1
    for where, node in walk(spec["paths"]):
        if "example" in node and isinstance(node.get("schema"), dict):
            jsonschema.validate(node["example"], deref(spec, node["schema"]),
                                cls=jsonschema.Draft202012Validator)
            checked += 1
    assert checked >= 3, "expected some examples to check, found %d" % checked


def heading_anchor(title):
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return slug.replace(" ", "-")


def test_docs_stand_alone():
    """docs/ links only to itself: no file outside the repository, no anchor that is not there."""
    with open(API_MD, encoding="utf-8") as f:
        md = f.read()
    with open(SPEC_FILE, encoding="utf-8") as f:
        oas = f.read()
    for name, text in (("API.md", md), ("openapi.yaml", oas)):
        for bad in ("../", "SPEC.md", "shared/"):
            assert bad not in text, "%s mentions %r: the docs must stand alone" % (name, bad)
    anchors = {heading_anchor(m) for m in re.findall(r"^#+ (.+)$", md, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", md)
    assert links, "API.md has no links at all?"
    for link in links:
        assert not re.match(r"[a-z]+:", link), "API.md links outside the repository: %r" % link
        target, _, frag = link.partition("#")
        if target:
            assert os.path.exists(os.path.join(REPO, "docs", target)), "API.md: missing %r" % link
        elif frag:
            assert frag in anchors, "API.md: no heading for #%s" % frag


# ---------------------------------------------------------------- the routes in the code

ROUTE_ROW = re.compile(r'\{\s*"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)"\s*,\s*"(/[^"]*)"')
# The front door's routes, which services register with door_route_add(door, "METHOD", "/path", ...).
DOOR_ROUTE = re.compile(r'door_route_add\(\s*\w+\s*,\s*"(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS)"\s*,\s*"(/[^"]*)"')


def code_routes():
    """(METHOD, path) of every row of the C route tables, the front door's routes, and the
    preflight OPTIONS that lib/http.c adds on every path."""
    files = []
    for d in ("services", "lib"):
        for root, _dirs, names in os.walk(os.path.join(REPO, d)):
            files += [os.path.join(root, n) for n in names if n.endswith(".c")]
    routes, door = set(), set()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        routes |= set(ROUTE_ROW.findall(text))
        door |= set(DOOR_ROUTE.findall(text))
    assert ("GET", "/sse") in door, "the stream service no longer plugs GET /sse into the front door"
    routes |= door
    routes |= {("OPTIONS", p) for _, p in routes}
    return routes


def code_path_covers(code_path, doc_path):
    """A route table path covers a documented one: the same, or a ulfius wildcard "/x/*"
    and a documented path under "/x/"."""
    if code_path == doc_path:
        return True
    return code_path.endswith("/*") and doc_path.startswith(code_path[:-1])


def test_code_routes_and_file_match(spec):
    code = code_routes()
    doc = {(m, p) for m, p, _ in operations(spec)}
    assert len(code) >= 20, "found only %d routes in the C code: is ROUTE_ROW still right? %s" % (
        len(code), sorted(code))
    undocumented = sorted((m, c) for m, c in code
                          if not any(dm == m and code_path_covers(c, dp) for dm, dp in doc))
    unserved = sorted((m, d) for m, d in doc
                      if not any(cm == m and code_path_covers(cp, d) for cm, cp in code))
    assert not undocumented, "served by the code, missing from openapi.yaml: %s" % undocumented
    assert not unserved, "in openapi.yaml, served by no route of the code: %s" % unserved


# ---------------------------------------------------------------- a running broker

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *flags):
        self.flags = list(flags)
        self.dir = tempfile.mkdtemp(prefix="broker-api-")
        self.proc = None
        self.base = None

    def start(self):
        if not os.access(BROKER_BIN, os.X_OK):
            pytest.fail("broker binary not found: %s (build it or set BROKER_BIN)" % BROKER_BIN)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
        for _attempt in range(3):  # the free port may be taken before the broker binds it
            port = free_port()
            self.base = "http://127.0.0.1:%d" % port
            self.err = open(os.path.join(self.dir, "stderr"), "wb")
            self.proc = subprocess.Popen(
                [BROKER_BIN, "--port=%d" % port, "--bind=127.0.0.1", "--db=" + os.path.join(self.dir, "db"),
                 "--admin_token=" + ADMIN, "--jwt_secret=" + SECRET, "--keepalive=2"] + self.flags,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err, env=env)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if requests.get(self.base + "/healthz", timeout=1).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            self.stop()
        pytest.fail("broker did not answer /healthz:\n" + self.stderr())

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "stderr"), "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "err", None):
            self.err.close()

    def request(self, method, path, **kw):
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("allow_redirects", False)
        return requests.request(method, self.base + path, **kw)


@pytest.fixture(scope="module")
def server():
    s = Server()
    try:
        yield s.start()
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def test_console_off(spec):
    """--console=false: every console path answers 404, as documented."""
    s = Server("--console=false")
    try:
        s.start()
        for path in ("/console", "/console/", "/console/{file}"):
            r = s.request("GET", concrete(spec, path))
            assert r.status_code == 404, (path, r.status_code)
            check(spec, "GET", path, r)
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def test_rate_limit_answers_documented(spec):
    """429 with Retry-After, as documented, from each kind of limit (buckets of 1 here)."""
    s = Server("--login_limit_user=1", "--login_limit_ip=0", "--admin_limit_ip=1")
    try:
        s.start()
        wrong = {"username": "nobody_" + uuid.uuid4().hex[:6], "password": "wrong-password"}
        statuses = [s.request("POST", "/login", json=wrong) for _ in range(2)]
        assert [r.status_code for r in statuses] == [401, 429], [r.text for r in statuses]
        check(spec, "POST", "/login", statuses[1])
        basic = (wrong["username"], wrong["password"])  # the same username's bucket, now empty
        for method, path in (("GET", "/verify"), ("POST", "/insert")):
            r = s.request(method, path, auth=basic, json={"event": "e", "data": 1})
            assert r.status_code == 429, (path, r.status_code, r.text)
            check(spec, method, path, r)
        token = base64.b64encode(("%s:%s" % basic).encode()).decode()
        status, hdrs, body = read_stream_head(s.base, "/sse", {"Authorization": "Basic " + token})
        assert status == 429, (status, body)
        check_answer(spec, "GET", "/sse", status, hdrs, body)
        bad_admin = {"admin_token": "not-the-token"}
        statuses = [s.request("POST", "/list_users", json=bad_admin) for _ in range(2)]
        assert [r.status_code for r in statuses] == [401, 429], [r.text for r in statuses]
        check(spec, "POST", "/list_users", statuses[1])
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)


def concrete(spec, path):
    """A path of the file with each template parameter replaced by its first allowed value."""
    def value(m):
        for p in spec["paths"][path].get("parameters", []):
            p = deref(spec, p)
            if p.get("name") == m.group(1):
                sch = p.get("schema", {})
                return str((sch.get("enum") or sch.get("examples") or [p.get("example", "x")])[0])
        return "x"
    return re.sub(r"\{([^}]+)\}", value, path)


def check_answer(spec, method, path, status, headers, body):
    """Asserts that an answer (status, headers with lower-case names, body bytes) of
    (method, path) is documented: its status, its required headers and its body's schema."""
    responses = responses_of(spec, method, path)
    what = "%s %s -> %d %r" % (method, path, status, body[:300])
    assert str(status) in responses, "undocumented status: " + what
    resp = deref(spec, responses[str(status)])  # every $ref inside replaced too
    for name, h in (resp.get("headers") or {}).items():
        value = headers.get(name.lower())
        if value is None:
            assert not h.get("required"), "missing header %s: %s %r" % (name, what, headers)
            continue
        jsonschema.validate(value, h.get("schema", {}), cls=jsonschema.Draft202012Validator)
    content = resp.get("content") or {}
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if not content:
        assert not body, "documented without a body, got one: " + what
        return None
    assert ctype in content, "Content-Type %r not documented (%s): %s" % (ctype, sorted(content), what)
    if ctype != "application/json":
        return body
    doc = json.loads(body.decode("utf-8"))
    try:
        jsonschema.validate(doc, content[ctype]["schema"], cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        raise AssertionError("body does not match the schema (%s): %s" % (e.message, what))
    if isinstance(doc, dict) and "request_id" in doc:
        assert doc["request_id"] == headers.get("x-request-id"), \
            "request_id and X-Request-Id differ: %s %r" % (what, headers)
    return doc


def check(spec, method, path, r):
    return check_answer(spec, method, path, r.status_code,
                        {k.lower(): v for k, v in r.headers.items()}, r.content)


def minimal_request(server, method, path):
    """The least request for (method, path): no credential, an empty JSON object for POST."""
    if method == "POST":
        return server.request(method, path, data=b"{}", headers={"Content-Type": "application/json"})
    if method == "OPTIONS":
        return server.request(method, path, headers={"Origin": "https://app.example",
                                                     "Access-Control-Request-Method": "GET"})
    return server.request(method, path)


def test_every_documented_route_is_served(spec, server):
    for method, path, _op in operations(spec):
        target = concrete(spec, path)
        r = minimal_request(server, method, target)
        assert r.status_code not in (404, 405), "%s %s (%s) is not served: %d %r" % (
            method, path, target, r.status_code, r.text[:200])
        check(spec, method, path, r)


def test_other_methods_answer_405(spec, server):
    for path, item in spec["paths"].items():
        target = concrete(spec, path)
        for method in ("PUT", "DELETE", "PATCH", "HEAD", "POST", "GET"):
            if method.lower() in item:
                continue
            r = server.request(method, target, data=b"{}" if method != "HEAD" else None)
            assert r.status_code == 405, "%s %s answered %d, not 405: %r" % (
                method, target, r.status_code, r.text[:200])
            if method != "HEAD":
                jsonschema.validate(r.json(), deref(spec, {"$ref": "#/components/schemas/Error"}),
                                    cls=jsonschema.Draft202012Validator)


def test_unknown_path_404(spec, server):
    r = server.request("GET", "/no_such_endpoint_" + uuid.uuid4().hex[:6])
    assert r.status_code == 404, r.text
    jsonschema.validate(r.json(), deref(spec, {"$ref": "#/components/schemas/Error"}),
                        cls=jsonschema.Draft202012Validator)
    assert r.json()["request_id"] == r.headers.get("X-Request-Id")


def test_request_id_rules(spec, server):
    """Kept when 1-128 of [A-Za-z0-9._:-], otherwise made by the server."""
    for given, kept in (("abc-123_x.y:z", True), ("a" * 128, True), ("a" * 129, False),
                        ("has space", False), ("bad/char", False)):
        r = server.request("POST", "/login", data=b"{}", headers={"X-Request-Id": given})
        body = check(spec, "POST", "/login", r)
        rid = r.headers.get("X-Request-Id")
        assert rid and body["request_id"] == rid
        if kept:
            assert rid == given, "X-Request-Id %r not kept: %r" % (given, rid)
        else:
            assert rid != given and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid), (given, rid)


def test_event_data_limit(spec, server):
    """data over --max_event_bytes (default 65,536 as compact JSON) answers 413, documented."""
    user, password = "big_" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex[:10]
    check(spec, "POST", "/create_user", server.request("POST", "/create_user", json={
        "admin_token": ADMIN, "username": user, "password": password, "tenant_name": "t_big"}))
    r = server.request("POST", "/insert", auth=(user, password), json={"event": "big", "data": "x" * 70000})
    assert r.status_code == 413, (r.status_code, r.text[:200])
    check(spec, "POST", "/insert", r)


def read_stream_head(base, path, headers, timeout=TIMEOUT):
    """GET `path` on a raw socket: (status, headers, the body bytes until the first blank line
    of the body, or the whole body of a refusal)."""
    u = urllib.parse.urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=timeout) as s:
        head = "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            path, u.netloc, "".join("%s: %s\r\n" % kv for kv in headers.items()))
        s.sendall(head.encode("latin-1"))
        buf, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"\r\n\r\n" in buf:
                top, _, rest = buf.partition(b"\r\n\r\n")
                lines = top.decode("latin-1").split("\r\n")
                status = int(lines[0].split(" ")[1])
                hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
                if status != 200 and len(rest) >= int(hdrs.get("content-length", "0")):
                    return status, hdrs, rest
                if status == 200 and b"\n\n" in rest:
                    return status, hdrs, rest
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    raise AssertionError("no complete answer from GET %s: %r" % (path, buf[:300]))


def test_happy_paths_match_the_file(spec, server):
    """Every success the file documents, with its body checked against the schema."""
    user, password, tenant = "api_" + uuid.uuid4().hex[:8], "pw-" + uuid.uuid4().hex[:10], "t_api"
    created = check(spec, "POST", "/create_user", server.request("POST", "/create_user", json={
        "admin_token": ADMIN, "username": user, "password": password, "tenant_name": tenant,
        "email": "api@example.com", "data": {"k": [1, 2]}}))
    assert created["username"] == user and created["data"] == {"k": [1, 2]}
    jwt = check(spec, "POST", "/login", server.request(
        "POST", "/login", json={"username": user, "password": password}))["jwt"]
    bearer = {"Authorization": "Bearer " + jwt}
    who = check(spec, "GET", "/verify", server.request("GET", "/verify", headers=bearer))
    assert who == {"username": user, "tenant_name": tenant}
    who = check(spec, "GET", "/verify", server.request("GET", "/verify", auth=(user, password)))
    assert who["username"] == user
    eid = check(spec, "POST", "/insert", server.request(
        "POST", "/insert", headers=bearer, json={"event": "chat", "data": {"text": "hi"}}))["id"]
    for path in ("/get_user", "/revoke_user", "/unrevoke_user"):
        check(spec, "POST", path, server.request("POST", path, json={"admin_token": ADMIN, "username": user}))
    users = check(spec, "POST", "/list_users", server.request("POST", "/list_users", json={"admin_token": ADMIN}))
    assert user in [u["username"] for u in users]
    updated = check(spec, "POST", "/update_user", server.request("POST", "/update_user", json={
        "admin_token": ADMIN, "username": user, "email": "", "data": None}))
    assert updated["email"] is None and updated["data"] is None

    # Revoking voided the JWT for good (its "gen" is older than the user's): log in again.
    assert server.request("GET", "/verify", headers=bearer).status_code == 401
    jwt = check(spec, "POST", "/login", server.request(
        "POST", "/login", json={"username": user, "password": password}))["jwt"]

    # The stream: the head, and "retry: 3000" first.
    status, hdrs, body = read_stream_head(server.base, "/sse?access_token=" + jwt, {})
    assert status == 200, (status, hdrs, body)
    check_answer(spec, "GET", "/sse", status, hdrs, b"")  # the body is a stream: headers only
    assert hdrs.get("content-type", "").startswith("text/event-stream"), hdrs
    assert body.startswith(b"retry: 3000\n\n"), body[:100]
    status, hdrs, body = read_stream_head(server.base, "/sse", {"Authorization": "Bearer nope"})
    check_answer(spec, "GET", "/sse", status, hdrs, body)
    assert status == 401

    health = check(spec, "GET", "/healthz", server.request("GET", "/healthz"))
    assert health["version"] == spec["info"]["version"], \
        "openapi.yaml info.version %r is not the server's %r" % (spec["info"]["version"], health["version"])
    check(spec, "GET", "/readyz", server.request("GET", "/readyz"))
    text = check(spec, "GET", "/metrics", server.request("GET", "/metrics")).decode()
    families = set(re.findall(r"\bbroker_[a-z_]+", spec["paths"]["/metrics"]["get"]["description"]))
    shown = set(re.findall(r"^# TYPE (broker_[a-z_]+) ", text, re.M))
    assert families == shown, "/metrics shows %s, openapi.yaml lists %s" % (
        sorted(shown - families), sorted(families - shown))
    assert eid

    r = server.request("GET", "/console")
    check(spec, "GET", "/console", r)
    assert r.status_code == 308
    check(spec, "GET", "/console/", server.request("GET", "/console/"))
    names = spec["paths"]["/console/{file}"]["parameters"][0]["schema"]["enum"]
    for name in names:
        r = server.request("GET", "/console/" + name)
        check(spec, "GET", "/console/{file}", r)
        assert r.status_code == 200 and r.content, name
    check(spec, "GET", "/console/{file}", server.request("GET", "/console/no-such-file.txt"))


# ---------------------------------------------------------------- the statuses the black-box suite saw

def template_match(doc_path, path):
    pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(doc_path)) + "$"
    return re.match(pattern, path) is not None


def doc_path_of(spec, path):
    """The documented path that `path` is (exact first, then templates), or None."""
    if path in spec["paths"]:
        return path
    for doc_path in spec["paths"]:
        if "{" in doc_path and template_match(doc_path, path):
            return doc_path
    return None


_SEEN = []


def seen():
    """The black-box run's BROKER_STATUS_LOG entries; fails (never skips) without it."""
    if _SEEN:
        return _SEEN
    if not STATUS_LOG:
        pytest.fail("BROKER_STATUS_LOG is not set: this check needs the log of a black-box run "
                    "(BROKER_STATUS_LOG=<file> pytest tests/blackbox, then this file with the same "
                    "BROKER_STATUS_LOG)")
    if not os.path.exists(STATUS_LOG) or os.path.getsize(STATUS_LOG) == 0:
        pytest.fail("BROKER_STATUS_LOG=%s is missing or empty: run the black-box suite with it "
                    "first" % STATUS_LOG)
    with open(STATUS_LOG, encoding="utf-8") as f:
        _SEEN.extend(json.loads(line) for line in f if line.strip())
    return _SEEN


def test_statuses_seen_are_documented(spec):
    undocumented = set()
    wrong_method = set()
    on_documented_paths = 0
    for e in seen():
        doc_path = doc_path_of(spec, e["path"])
        if doc_path is None:
            continue  # a path probed on purpose (404 tests) or garbage
        on_documented_paths += 1
        item = spec["paths"][doc_path]
        if e["method"].lower() not in item:
            if e["status"] != 405:  # the file's rule for any other method
                wrong_method.add((e["method"], e["path"], e["status"]))
            continue
        if str(e["status"]) not in item[e["method"].lower()]["responses"]:
            undocumented.add((e["method"], doc_path, e["status"]))
    assert on_documented_paths > 100, "only %d logged answers on documented paths" % on_documented_paths
    assert not undocumented, "the black-box suite saw statuses openapi.yaml does not document: %s" % (
        sorted(undocumented))
    assert not wrong_method, "a method a path does not serve answered other than 405: %s" % sorted(
        wrong_method)


def test_documented_statuses_are_seen(spec):
    got = set()
    for e in seen():
        doc_path = doc_path_of(spec, e["path"])
        if doc_path is not None:
            got.add((e["method"], doc_path, str(e["status"])))
    documented = {(m, p, s) for m, p, op in operations(spec) for s in op["responses"]}
    stale = sorted(k for k in NOT_PROVOKED if k not in documented)
    assert not stale, "NOT_PROVOKED names statuses the file does not document: %s" % stale
    provoked = sorted(k for k in NOT_PROVOKED if k in got)
    assert not provoked, "NOT_PROVOKED names statuses the suite did see (drop them): %s" % provoked
    never = sorted(k for k in documented if k not in got and k not in NOT_PROVOKED)
    assert not never, ("documented statuses the black-box suite never saw (provoke them there, or "
                       "add them to NOT_PROVOKED with the reason the suite cannot): %s" % never)

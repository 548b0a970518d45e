"""The JS client as users get it: `npm pack` in clients/js makes a tarball whose version is the
broker's; `npm install ./broker-client-X.Y.Z.tgz --offline` puts it into an empty project with
no network at all (npm runs in a network namespace of its own, `unshare --net`, and its
registry is an address nothing answers on); then the installed package is imported by name and
used against a real broker, in Node (ESM) and in headless chromium (an import map naming the
installed file, as a page without a bundler would).

Needs npm (with Debian's nodejs, Debian's npm package), node, unshare (util-linux), chromium.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading

import pytest

import jsclient_harness as h
from test_jsclient_browser import WAIT, driver  # noqa: F401 (fixture)

PKG_DIR = os.path.join(h.REPO, "clients", "js")
NODE = shutil.which("node")
NPM = shutil.which("npm")

APP = r"""
import BrokerClient, { BrokerError, EventStreamParser } from "broker-client";
import { readFileSync } from "node:fs";

const [base, username, password] = process.argv.slice(2);
const reactEntry = import.meta.resolve("broker-client/react");
const version = JSON.parse(readFileSync(new URL("./node_modules/broker-client/package.json", import.meta.url))).version;
const jwt = await BrokerClient.login(base, username, password);
let refused = null;
try { await BrokerClient.login(base, username, "wrong-password"); } catch (e) { refused = e instanceof BrokerError ? e.status : String(e); }
const client = new BrokerClient(base + "/sse", { headers: { Authorization: "Bearer " + jwt } });
const got = [];
const second = new Promise((resolve) => client.addEventListener("hello", (ev) => {
  got.push([JSON.parse(ev.data).n, ev.lastEventId]);
  if (JSON.parse(ev.data).n === 2) resolve();
}));
await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
const { id } = await client.insert("hello", { n: 2 });
const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true, got })); process.exit(1); }, 10000);
await second;
clearTimeout(timer);
client.close();
console.log(JSON.stringify({ got, id, transport: client.transport, refused, reactEntry, version,
                             parser: typeof EventStreamParser }));
"""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>broker-client from its tarball</title>
<script type="importmap">
{"imports": {"broker-client": "./node_modules/broker-client/broker-client.js"}}
</script></head>
<body><p id="ready">loading</p>
<script type="module">
import BrokerClient from "broker-client";
window.useInstalled = async (base, username, password) => {
  const jwt = await BrokerClient.login(base, username, password);
  const client = new BrokerClient(base + "/sse", { headers: { Authorization: "Bearer " + jwt } });
  const got = [];
  const second = new Promise((resolve) => client.addEventListener("hello", (ev) => {
    got.push([JSON.parse(ev.data).n, ev.lastEventId]);
    if (JSON.parse(ev.data).n === 2) resolve();
  }));
  await new Promise((resolve) => client.addEventListener("open", resolve, { once: true }));
  const { id } = await client.insert("hello", { n: 2 });
  await second;
  client.close();
  return { got, id, transport: client.transport };
};
document.getElementById("ready").textContent = "ready";
</script></body></html>
"""


def broker_version():
    with open(os.path.join(h.REPO, "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*broker\s+VERSION\s+([0-9][0-9.]*)", f.read())
    assert m, "no project VERSION in CMakeLists.txt"
    return m.group(1)


def npm_env(workdir):
    """npm with its own cache, no registry that answers, nothing asked of the network."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("npm_config_")}
    env.update(npm_config_cache=os.path.join(workdir, "npm-cache"), npm_config_registry="http://127.0.0.1:9/",
               npm_config_audit="false", npm_config_fund="false", npm_config_update_notifier="false",
               npm_config_userconfig=os.path.join(workdir, "npmrc"), HOME=workdir)
    return env


@pytest.fixture(scope="module")
def installed():
    """(the empty project with the package installed, the tarball's name, its member names)."""
    assert NPM and NODE, "npm and node are needed (Debian: nodejs, npm)"
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing"
    workdir = tempfile.mkdtemp(prefix="broker-jsclient-package-")
    try:
        env = npm_env(workdir)
        p = subprocess.run([NPM, "pack", "--pack-destination", workdir], cwd=PKG_DIR, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, "npm pack: %s\n%s" % (p.stdout, p.stderr)
        tgz = p.stdout.strip().splitlines()[-1]
        with tarfile.open(os.path.join(workdir, tgz)) as t:
            members = sorted(t.getnames())
        app = os.path.join(workdir, "app")
        os.makedirs(app)
        with open(os.path.join(app, "package.json"), "w") as f:
            json.dump({"name": "empty-app", "private": True, "type": "module"}, f)
        ns = [unshare, "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        p = subprocess.run(ns + [NPM, "install", "../" + tgz, "--offline"], cwd=app, env=env,
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, "npm install --offline: %s\n%s" % (p.stdout, p.stderr)
        yield app, tgz, members
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_version_is_the_brokers():
    with open(os.path.join(PKG_DIR, "package.json")) as f:
        assert json.load(f)["version"] == broker_version()


def test_tarball_name_and_files(installed):
    _app, tgz, members = installed
    assert tgz == "broker-client-%s.tgz" % broker_version()
    assert members == ["package/README.md", "package/broker-client.d.ts", "package/broker-client.js",
                       "package/package.json", "package/react.d.ts", "package/react.js"], members


def test_installed_offline_into_an_empty_project(installed):
    app, tgz, _members = installed
    dest = os.path.join(app, "node_modules", "broker-client")
    for name in ("broker-client.js", "react.js", "package.json"):
        assert os.path.isfile(os.path.join(dest, name)), name
    with open(os.path.join(app, "package.json")) as f:
        assert json.load(f)["dependencies"] == {"broker-client": "file:../" + tgz}
    # React is an optional peer: nothing else was installed.
    assert sorted(n for n in os.listdir(os.path.join(app, "node_modules")) if not n.startswith(".")) == ["broker-client"]


def test_imported_and_used_in_node(installed, broker):
    app, _tgz, _members = installed
    user = broker.create_user("pkg-node", "pkg-node-password", "pkgnode")
    first = broker.insert(broker.login(user), "hello", {"n": 1})
    with open(os.path.join(app, "app.mjs"), "w") as f:
        f.write(APP)
    p = subprocess.run([NODE, "app.mjs", broker.base, user["username"], user["password"]], cwd=app,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, "%s\n%s\n%s" % (p.stdout, p.stderr, broker.log_tail())
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["got"] == [[1, first], [2, out["id"]]], out
    assert out["transport"] == "fetch" and out["refused"] == 401 and out["parser"] == "function", out
    assert out["version"] == broker_version(), out
    assert out["reactEntry"].endswith("/node_modules/broker-client/react.js"), out


def test_hook_entry_imports_with_the_apps_react(installed):
    """broker-client/react from the tarball, with the React the application brings (Debian's
    React 18 here, linked into the project for this test only)."""
    app, _tgz, _members = installed
    react = os.path.join(app, "node_modules", "react")
    assert os.path.isdir("/usr/share/nodejs/react"), "apt-get install node-react"
    os.symlink("/usr/share/nodejs/react", react)
    try:
        with open(os.path.join(app, "hook.mjs"), "w") as f:
            f.write('import React from "react";\n'
                    'import useBrokerDefault, { useBroker } from "broker-client/react";\n'
                    'console.log(JSON.stringify({ react: React.version, hook: typeof useBroker,'
                    ' same: useBroker === useBrokerDefault }));\n')
        p = subprocess.run([NODE, "hook.mjs"], cwd=app, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["react"].startswith("18.") and out["hook"] == "function" and out["same"], out
    finally:
        os.unlink(react)


def test_imported_and_used_in_a_browser(installed, broker, driver):  # noqa: F811
    app, _tgz, _members = installed
    with open(os.path.join(app, "index.html"), "w") as f:
        f.write(PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=app))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        user = broker.create_user("pkg-web", "pkg-web-password", "pkgweb")
        first = broker.insert(broker.login(user), "hello", {"n": 1})
        driver.get("http://127.0.0.1:%d/index.html" % srv.server_address[1])
        out = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const wait = () => window.useInstalled ? window.useInstalled(arguments[0], arguments[1], arguments[2])"
            "  .then((v) => done({ok: v}), (e) => done({err: String(e)})) : setTimeout(wait, 20);"
            "wait();", broker.base, user["username"], user["password"])
        assert "err" not in out, out
        assert out["ok"]["got"] == [[1, first], [2, out["ok"]["id"]]], out
        assert out["ok"]["transport"] == "fetch", out
        assert driver.find_element("id", "ready").text == "ready"
    finally:
        driver.get("about:blank")
        srv.shutdown()
        srv.server_close()

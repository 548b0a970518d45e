"""useBroker, the React hook of the JS client (clients/js/react.js), counted by pytest.

node/react.test.mjs runs under node's test runner in a throwaway project, the way an
application would import the package: node_modules/broker-client is a copy of clients/js's
package files, node_modules/react and react-test-renderer are Debian's (node-react,
node-react-test-renderer, under /usr/share/nodejs; NODE_PATH finds their own dependencies),
against a real broker this module starts. Each node test is one pytest test, as in
test_jsclient_node.py.
"""
import json
import os
import shutil
import tempfile

import pytest

import jsclient_harness as h
from test_jsclient_node import NODE, NodeRun

DEBIAN_NODE = "/usr/share/nodejs"
TEST_FILE = os.path.join(h.HERE, "node", "react.test.mjs")
DECLARED = h.declared_node_tests(TEST_FILE)
USERS = {"rosa": "rsnap", "rudi": "rsnap", "tom": "rother"}


def make_project(where):
    """An application folder whose node_modules has broker-client, react, react-test-renderer."""
    modules = os.path.join(where, "node_modules")
    os.makedirs(modules)
    pkg_dir = os.path.join(h.REPO, "clients", "js")
    with open(os.path.join(pkg_dir, "package.json")) as f:
        pkg = json.load(f)
    dest = os.path.join(modules, "broker-client")
    os.makedirs(dest)
    for name in pkg["files"] + ["package.json"]:
        shutil.copy2(os.path.join(pkg_dir, name), dest)
    for name in ("react", "react-test-renderer"):
        src = os.path.join(DEBIAN_NODE, name)
        assert os.path.isdir(src), "%s is missing (apt-get install node-react node-react-test-renderer)" % src
        os.symlink(src, os.path.join(modules, name))
    with open(os.path.join(where, "package.json"), "w") as f:
        json.dump({"name": "hook-test-app", "private": True, "type": "module"}, f)
    shutil.copy2(TEST_FILE, where)
    return os.path.join(where, os.path.basename(TEST_FILE))


@pytest.fixture(scope="module")
def react_run(broker):
    assert NODE, "node is not installed"
    where = tempfile.mkdtemp(prefix="broker-jsclient-react-")
    try:
        path = make_project(where)
        users = {n: broker.create_user("react-" + n, "pw-" + n + "-secret", t) for n, t in USERS.items()}
        env = dict(os.environ, BROKER_JS_BASE=broker.base, BROKER_JS_USERS=json.dumps(users),
                   NODE_PATH=DEBIAN_NODE)
        rc, out, err = h.run_node_tests(path, env, timeout=90)
        yield NodeRun(rc, out, err, "\n--- broker log\n" + broker.log_tail())
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("name", DECLARED)
def test_hook(name, react_run):
    assert name in react_run.results, "node did not report %r\n%s" % (name, react_run.report())
    ok, directive, block = react_run.results[name]
    assert ok and directive is None, "node test %r: %s\n%s\n\n%s" % (
        name, directive or "failed", block, react_run.report())


def test_hook_file_totals(react_run):
    n = len(DECLARED)
    assert n > 0
    assert react_run.rc == 0, react_run.report()
    assert set(react_run.results) == set(DECLARED), react_run.report()
    assert react_run.counts.get("tests") == n and react_run.counts.get("pass") == n, react_run.report()
    for key in ("fail", "cancelled", "skipped", "todo"):
        assert react_run.counts.get(key) == 0, react_run.report()

"""The JS client (clients/js/broker-client.js) in Node, counted by pytest.

- tests/jsclient/node/parser.test.mjs, client.test.mjs and xhr.test.mjs (the XMLHttpRequest
  transport over a fake one, and the module where React Native lacks globals): unit tests, no
  server.
- tests/jsclient/node/broker.test.mjs: against a real broker this module starts, with the users
  it creates (passed to node in BROKER_JS_* variables).
Each node test is one pytest test here (its name read from the .mjs source); node runs once per
file with the TAP reporter, and a failing node test fails its pytest test with node's report.
A per-file check also insists on node's exit code and its counts, so a file that does not load,
or a test node ran that this module did not list, fails too.

- test_resume_across_broker_restart drives node/restart_client.mjs line by line while the broker
  is stopped with SIGTERM and started again on the same port and db.

Needs node (18+; Debian's nodejs) and the broker binary (BROKER_BIN, default build/broker).
"""
import json
import os
import shutil
import subprocess

import pytest

import jsclient_harness as h

NODE = shutil.which("node")
NODE_DIR = os.path.join(h.HERE, "node")
FILES = ["parser.test.mjs", "client.test.mjs", "xhr.test.mjs", "broker.test.mjs"]
NEEDS_BROKER = {"broker.test.mjs"}
DECLARED = {f: h.declared_node_tests(os.path.join(NODE_DIR, f)) for f in FILES}
CASES = [(f, name) for f in FILES for name in DECLARED[f]]

# Users of broker.test.mjs: name -> tenant. "t1" and "t10": a tenant name that is a prefix of
# another's must not see its events.
NODE_USERS = {"alice": "t1", "bob": "t1", "carol": "t10", "dave": "snap", "erin": "snap",
              "frank": "exp", "gina": "close", "hank": "close", "ivan": "resume", "judy": "basic",
              "fay": "filter", "gus": "filter", "pia": "presence", "pete": "presence"}


def test_node_is_available():
    assert NODE, "node is not installed (Debian package nodejs)"
    out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=10).stdout
    assert int(out.strip().lstrip("v").split(".")[0]) >= 18, out


class NodeRun:
    def __init__(self, rc, out, err, extra=""):
        self.rc, self.out, self.err, self.extra = rc, out, err, extra
        self.results, self.counts = h.parse_tap(out)

    def report(self):
        return "node exit code %s\n--- stdout (TAP)\n%s\n--- stderr\n%s%s" % (
            self.rc, self.out[-6000:], self.err[-3000:], self.extra)


@pytest.fixture(scope="module")
def node_run(request):
    """node_run(file) -> NodeRun; each file runs once, the broker file with the broker up."""
    cache = {}

    def run(f):
        if f not in cache:
            assert NODE, "node is not installed"
            env = dict(os.environ)
            extra = ""
            b = None
            if f in NEEDS_BROKER:
                b = request.getfixturevalue("broker")
                users = {}
                for name, tenant in NODE_USERS.items():
                    users[name] = b.create_user("js-" + name, "pw-" + name + "-secret", tenant)
                env.update(BROKER_JS_BASE=b.base, BROKER_JS_JWT_SECRET=b.jwt_secret,
                           BROKER_JS_USERS=json.dumps(users))
            rc, out, err = h.run_node_tests(os.path.join(NODE_DIR, f), env, timeout=60)
            if b is not None:
                extra = "\n--- broker log\n" + b.log_tail()
            cache[f] = NodeRun(rc, out, err, extra)
        return cache[f]

    return run


@pytest.mark.parametrize("file,name", CASES, ids=["%s: %s" % c for c in CASES])
def test_node(file, name, node_run):
    run = node_run(file)
    assert name in run.results, "node did not report %r\n%s" % (name, run.report())
    ok, directive, block = run.results[name]
    assert ok and directive is None, "node test %r: %s\n%s\n\n%s" % (
        name, directive or "failed", block, run.report())


@pytest.mark.parametrize("file", FILES)
def test_node_file_totals(file, node_run):
    run = node_run(file)
    assert run.rc == 0, run.report()
    n = len(DECLARED[file])
    assert n > 0
    assert set(run.results) == set(DECLARED[file]), run.report()
    assert run.counts.get("tests") == n and run.counts.get("pass") == n, run.report()
    for key in ("fail", "cancelled", "skipped", "todo"):
        assert run.counts.get(key) == 0, run.report()


def test_resume_across_broker_restart():
    """A client streams while the broker is stopped (SIGTERM) and started again on the same
    port and db, twice: once with the reconnect held until events were inserted (they can only
    come through the Last-Event-ID replay), once left to its own timing (connection refused
    while the broker is down). It must get every event exactly once, in order."""
    assert NODE, "node is not installed"
    workdir = h.new_workdir()
    b = h.Broker(workdir)
    proc = None
    try:
        b.start()
        reader_user = b.create_user("rita", "rita-password", "restart")
        writer = b.create_user("sam", "sam-password", "restart")
        jwt = b.login(writer)
        expected = []

        def insert(name):
            expected.append((name, {"n": name}, b.insert(jwt, name, {"n": name})))
            return expected[-1][2]

        insert("k1")  # before the client: it comes in the snapshot
        env = dict(os.environ, BROKER_JS_BASE=b.base, BROKER_JS_USERNAME=reader_user["username"],
                   BROKER_JS_PASSWORD=reader_user["password"])
        proc = subprocess.Popen([NODE, os.path.join(NODE_DIR, "restart_client.mjs")], cwd=h.REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = h.LineReader(proc)

        def send(cmd):
            proc.stdin.write(cmd + "\n")
            proc.stdin.flush()

        def event_with(id_):
            return lambda m: m.get("kind") == "event" and m.get("id") == id_

        lines.expect("ready", lambda m: m.get("kind") == "ready")
        lines.expect("the first open", lambda m: m.get("kind") == "open")
        lines.expect("k1 from the snapshot", event_with(expected[0][2]))
        insert("k2")
        lines.expect("k3", event_with(insert("k3")))

        # 1. Held reconnect: k4 and k5 are stored while the client is away.
        send("hold")
        lines.expect("the hold", lambda m: m.get("kind") == "held")
        b.stop()
        lines.expect("the end of the stream", lambda m: m.get("kind") == "error")
        b.start()
        insert("k4")
        insert("k5")
        send("release")
        resume = lines.expect("the resumed request", lambda m: m.get("kind") == "fetch")
        assert resume["lastEventId"] == expected[2][2], resume
        lines.expect("the second open", lambda m: m.get("kind") == "open")
        lines.expect("k5", event_with(expected[4][2]))
        lines.expect("k6, live", event_with(insert("k6")))

        # 2. Unheld: the client retries on its own while the broker is down.
        b.stop()
        lines.expect("a refused reconnect", lambda m: m.get("kind") == "error" and "network" in m.get("message", ""))
        b.start()
        insert("k7")
        lines.expect("k7", event_with(expected[6][2]), timeout=15)
        lines.expect("k8, live", event_with(insert("k8")))

        send("close")
        closed = lines.expect("the close report", lambda m: m.get("kind") == "closed")
        msgs = lines.messages()
        got = [(m["type"], m["data"], m["id"]) for m in msgs if m.get("kind") == "event"]
        assert got == expected, "events (type, data, id) seen vs inserted:\n%s\n%s" % (got, expected)
        fetches = [m["lastEventId"] for m in msgs if m.get("kind") == "fetch"]
        assert fetches[0] is None, fetches
        assert fetches[1] == expected[2][2], fetches
        assert all(f is not None for f in fetches[1:]), fetches
        assert not any(m.get("fatal") for m in msgs if m.get("kind") == "error"), msgs
        assert closed["readyState"] == 2 and closed["lastEventId"] == expected[-1][2], closed
        assert closed["latest"] == {n: json.dumps(d, separators=(",", ":")) for n, d, _ in expected}, closed
        assert proc.wait(10) == 0
    except AssertionError as e:
        raise AssertionError("%s\n--- broker log\n%s" % (e, b.log_tail())) from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)
        b.stop()
        shutil.rmtree(workdir, ignore_errors=True)

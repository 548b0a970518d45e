// A BrokerClient driven line by line by tests/jsclient/test_jsclient_node.py, which restarts the
// broker under it (not a *.test.mjs: the test runner does not pick it up).
//
// Environment: BROKER_JS_BASE, BROKER_JS_USERNAME, BROKER_JS_PASSWORD.
// stdout, one JSON object a line: {"ready"}, {"held"}, {"open"}, {"error", status, fatal},
//   {"fetch", lastEventId}, {"event", type, data, id}, at the end {"closed", readyState, latest}.
// stdin, one command a line:
//   hold     the next connection attempts wait (so that events inserted meanwhile can only
//            reach the client through its Last-Event-ID resume, never live)
//   release  let them go
//   close    close the client, report, exit
import { createInterface } from "node:readline";
import BrokerClient from "../../../clients/js/broker-client.js";

const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const base = process.env.BROKER_JS_BASE;

let held = null; // a promise that connection attempts wait for while held
let release = null;

// Wraps fetch to report what each attempt sends, and to hold attempts on command.
async function watchedFetch(url, init) {
  if (held) await held;
  say({ kind: "fetch", lastEventId: init.headers["Last-Event-ID"] || null });
  return fetch(url, init);
}

const jwt = await BrokerClient.login(base, process.env.BROKER_JS_USERNAME, process.env.BROKER_JS_PASSWORD);
// maxRetry keeps the test short; the policy itself is the default one.
const client = new BrokerClient(base + "/sse", {
  headers: { Authorization: "Bearer " + jwt }, fetch: watchedFetch, maxRetry: 1000,
});
client.addEventListener("open", () => say({ kind: "open" }));
client.addEventListener("error", (e) => say({ kind: "error", status: e.status, fatal: e.fatal, message: e.message }));
client.onAnyEvent((e) => say({ kind: "event", type: e.type, data: JSON.parse(e.data), id: e.lastEventId }));
say({ kind: "ready" });

const rl = createInterface({ input: process.stdin });
// The parent going away (stdin closed) must not leave this process running.
rl.on("close", () => { client.close(); process.exit(0); });
rl.on("line", (line) => {
  const cmd = line.trim();
  if (cmd === "hold" && !held) {
    held = new Promise((resolve) => { release = resolve; });
    say({ kind: "held" });
  } else if (cmd === "release" && held) {
    const r = release;
    held = null;
    release = null;
    r();
  } else if (cmd === "close") {
    client.close();
    say({ kind: "closed", readyState: client.readyState, lastEventId: client.lastEventId,
          latest: Object.fromEntries(Array.from(client.latest, ([k, v]) => [k, v.data])) });
    process.exit(0);
  }
});

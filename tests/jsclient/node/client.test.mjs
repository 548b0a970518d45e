// Unit tests of BrokerClient (clients/js/broker-client.js) over a scripted fake fetch, no server
// needed: what it sends, how it delivers events, and its reconnect policy (Last-Event-ID, the
// server's retry field, backoff with jitter and its reset, fatal 401/403, close(), idleTimeout),
// plus the HTTP helpers. The fake serves each request with the next responder of a script.
// Run: node --test tests/jsclient/node/client.test.mjs
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import BrokerClient, { BrokerClient as Named, BrokerError } from "../../../clients/js/broker-client.js";

const URL_SSE = "http://broker.test:8080/sse";

// Polls until check() is truthy; fails after `ms` (every wait of these tests is bounded).
async function waitFor(what, check, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 5));
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Every client a test makes is closed after it, even when an assertion failed first: a client
// left retrying would keep node from exiting.
const live = new Set();
function make(url, options) {
  const c = new BrokerClient(url, options);
  live.add(c);
  return c;
}
afterEach(() => { for (const c of live) c.close(); live.clear(); });

// A response whose body the test writes: call.push(text), call.end(), call.fail().
function streaming(call, headers = { "Content-Type": "text/event-stream" }) {
  let ctl;
  const body = new ReadableStream({ start(c) { ctl = c; } });
  const enc = new TextEncoder();
  let done = false;
  call.push = (text) => { if (!done) ctl.enqueue(enc.encode(text)); };
  call.end = () => { if (!done) { done = true; ctl.close(); } };
  call.fail = () => { if (!done) { done = true; ctl.error(new TypeError("connection reset")); } };
  call.signal?.addEventListener("abort", () => {
    if (!done) { done = true; ctl.error(new DOMException("aborted", "AbortError")); }
  });
  return new Response(body, { status: 200, headers });
}

const respond = {
  stream: (first = "") => (call) => { const r = streaming(call); if (first) call.push(first); return r; },
  status: (code, body, type = "application/json") => () =>
    new Response(typeof body === "string" ? body : JSON.stringify(body), { status: code, headers: { "Content-Type": type } }),
  network: () => () => { throw new TypeError("fetch failed"); },
};

// A fake fetch: records every call and answers it with the next responder of `script`
// (the last one repeats).
function fakeFetch(script) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const call = { url: String(url), init, headers: init.headers || {}, signal: init.signal };
    calls.push(call);
    const responder = script.length > 1 ? script.shift() : script[0];
    return responder(call);
  };
  return { fetch, calls };
}

// Records what a client reports.
function record(client) {
  const log = { events: [], errors: [], opens: 0, any: [] };
  client.addEventListener("open", () => { log.opens++; });
  client.addEventListener("error", (e) => {
    log.errors.push({ status: e.status, message: e.message, fatal: e.fatal, retryIn: e.retryIn, state: client.readyState });
  });
  client.onAnyEvent((e) => log.any.push([e.type, e.data, e.lastEventId]));
  return log;
}

test("exports: default and named BrokerClient, BrokerError, readyState constants", () => {
  assert.equal(BrokerClient, Named);
  assert.deepEqual([BrokerClient.CONNECTING, BrokerClient.OPEN, BrokerClient.CLOSED], [0, 1, 2]);
  const e = new BrokerError(401, "no", { error: "no" });
  assert.ok(e instanceof Error);
  assert.deepEqual([e.name, e.status, e.message, e.body], ["BrokerError", 401, "no", { error: "no" }]);
});

test("streams events, keeps the latest per name, resumes with Last-Event-ID after the stream ends", async () => {
  const { fetch, calls } = fakeFetch([respond.stream(), respond.stream()]);
  const c = make(URL_SSE, { fetch, headers: { Authorization: "Bearer T" } });
  assert.equal(c.readyState, BrokerClient.CONNECTING);
  const log = record(c);
  const chats = [];
  c.addEventListener("a", (e) => chats.push(e.data));
  try {
    await waitFor("the first request", () => calls.length === 1 && log.opens === 1);
    assert.equal(c.readyState, BrokerClient.OPEN);
    const first = calls[0];
    assert.equal(first.url, URL_SSE, "credentials never go in the URL");
    assert.equal(first.init.method, "GET");
    assert.equal(first.headers.Authorization, "Bearer T");
    assert.equal(first.headers.Accept, "text/event-stream");
    assert.equal(first.headers["Last-Event-ID"], undefined, "a fresh client asks for the snapshot");
    first.push("retry: 10\n\nid: 1\nevent: a\ndata: {\"v\":1}\n\nid: 2\nevent: b\ndata: 2\n\n");
    first.push("id: 3\nevent: a\ndata: {\"v\":3}\n\nid: 4\nevent: a\ndata: half");
    await waitFor("3 events", () => log.any.length === 3);
    first.end();
    await waitFor("the reconnect", () => calls.length === 2 && log.opens === 2);
    assert.equal(calls[1].headers["Last-Event-ID"], "3", "resume from the last complete event");
    assert.equal(calls[1].headers.Authorization, "Bearer T");
    assert.equal(log.errors.length, 1);
    assert.deepEqual([log.errors[0].status, log.errors[0].fatal, log.errors[0].state], [0, false, BrokerClient.CONNECTING]);
    calls[1].push("id: 5\nevent: c\ndata: 5\n\n");
    await waitFor("event 5", () => log.any.length === 4);
    assert.deepEqual(log.any, [["a", '{"v":1}', "1"], ["b", "2", "2"], ["a", '{"v":3}', "3"], ["c", "5", "5"]]);
    assert.deepEqual(chats, ['{"v":1}', '{"v":3}'], "a named listener gets its name only");
    assert.deepEqual(Array.from(c.latest.entries()), [
      ["b", { type: "b", data: "2", lastEventId: "2" }],
      ["a", { type: "a", data: '{"v":3}', lastEventId: "3" }],
      ["c", { type: "c", data: "5", lastEventId: "5" }],
    ]);
    assert.equal(c.lastEventId, "5");
  } finally {
    c.close();
  }
  assert.equal(c.readyState, BrokerClient.CLOSED);
  assert.ok(calls[1].signal.aborted, "close() aborts the fetch");
});

test("backoff doubles to maxRetry, jittered 0-50% above it, the server's retry replaces the base, an open resets it", async () => {
  const realRandom = Math.random;
  Math.random = () => 0.5; // the wait is then exactly 5/4 of the full delay
  const { fetch, calls } = fakeFetch([
    respond.network(), respond.network(), respond.network(), respond.network(), respond.network(),
    (call) => { const r = streaming(call); call.push("retry: 20\n\n"); setTimeout(() => call.end(), 1); return r; },
    respond.network(),
    respond.status(401, { error: "stop here" }),
  ]);
  const c = make(URL_SSE, { fetch, retry: 8, maxRetry: 40 });
  const log = record(c);
  try {
    await waitFor("the fatal error", () => log.errors.some((e) => e.fatal), 5000);
  } finally {
    Math.random = realRandom;
    c.close();
  }
  assert.deepEqual(log.errors.map((e) => [e.status, e.fatal, e.retryIn]), [
    [0, false, 10], [0, false, 20], [0, false, 40], [0, false, 50], [0, false, 50], // 8,16,32,40,40
    [0, false, 25],  // opened: failures reset, base now the server's 20
    [0, false, 50],  // 40 (20 * 2), capped at maxRetry
    [401, true, null],
  ]);
  assert.equal(calls.length, 8);
  assert.equal(log.opens, 1);
});

test("jitter: waits fall between the delay and half as much again", async () => {
  const { fetch } = fakeFetch([respond.network()]);
  const c = make(URL_SSE, { fetch, retry: 4, maxRetry: 4 });
  const log = record(c);
  try {
    await waitFor("20 failures", () => log.errors.length >= 20, 5000);
  } finally {
    c.close();
  }
  for (const e of log.errors) assert.ok(e.retryIn >= 4 && e.retryIn <= 6, "retryIn " + e.retryIn);
});

test("a draining server's retry is honoured, never undercut, even past maxRetry; the jitter spreads clients", async () => {
  // A server shutting down ends each stream with a retry: of its own, to spread its clients'
  // returns over its drain window: each client waits at least that long, plus up to half again.
  const waits = [];
  for (let i = 0; i < 20; i++) {
    const { fetch } = fakeFetch([
      (call) => { const r = streaming(call); call.push("id: 7\nevent: a\ndata: 1\n\nretry: 120\n\n"); setTimeout(() => call.end(), 1); return r; },
      respond.status(401, { error: "stop here" }),
    ]);
    const c = make(URL_SSE, { fetch, retry: 5, maxRetry: 50 });
    const log = record(c);
    try {
      await waitFor("the end of the stream", () => log.errors.length >= 1, 3000);
    } finally {
      c.close();
    }
    assert.equal(log.errors[0].status, 0);
    assert.equal(c.lastEventId, "7");
    waits.push(log.errors[0].retryIn);
  }
  for (const w of waits) assert.ok(w >= 120 && w <= 180, "retryIn " + w);
  assert.ok(new Set(waits).size >= 5, "20 clients told the same retry: should not all wait alike: " + waits);
});

async function fatalCase(status) {
  const { fetch, calls } = fakeFetch([respond.status(status, { error: "token expired" })]);
  const c = make(URL_SSE, { fetch, retry: 1, maxRetry: 1 });
  const log = record(c);
  await waitFor("the error", () => log.errors.length === 1);
  assert.deepEqual(log.errors[0], { status, message: "token expired", fatal: true, retryIn: null, state: BrokerClient.CLOSED });
  assert.equal(c.readyState, BrokerClient.CLOSED);
  await sleep(100); // a retrying client would have asked dozens of times by now
  assert.equal(calls.length, 1);
  assert.equal(log.errors.length, 1);
  assert.equal(log.opens, 0);
}
// (Test names are plain literals: the pytest wrapper reads them from this file.)
test("HTTP 401 is fatal: one request, an error with the server's message, CLOSED", () => fatalCase(401));
test("HTTP 403 is fatal: one request, an error with the server's message, CLOSED", () => fatalCase(403));
// A refused events filter, or presence turned off: the same request cannot succeed later.
test("HTTP 400 is fatal: one request, an error with the server's message, CLOSED", () => fatalCase(400));

test("events and presence go in the query of every request, each name encoded on its own", async () => {
  const { fetch, calls } = fakeFetch([respond.stream(), respond.stream()]);
  const c = make(URL_SSE + "?app=1#top", {
    fetch, retry: 1, maxRetry: 1, presence: true,
    events: ["chat,dm", "room.42.*", "a*b", "100%", "h\u00e9", "*"],
  });
  const log = record(c);
  try {
    await waitFor("the first request", () => log.opens === 1);
    calls[0].push("id: 7\nevent: chat,dm\ndata: 1\n\n");
    await waitFor("the event", () => log.any.length === 1);
    calls[0].end();
    await waitFor("the reconnect", () => log.opens === 2);
  } finally {
    c.close();
  }
  // The comma inside "chat,dm" is %2C, the list's commas are raw; the prefix's trailing star is
  // raw and any other star %2A (the server reads only a raw trailing one as a prefix).
  const wanted = URL_SSE + "?app=1&events=chat%2Cdm,room.42.*,a%2Ab,100%25,h%C3%A9,*&presence=true";
  assert.deepEqual(calls.map((call) => call.url), [wanted, wanted]);
  assert.equal(calls[1].headers["Last-Event-ID"], "7");
  assert.equal(c.url, URL_SSE + "?app=1#top", "url is the one given");

  // One name as a string; nothing asked: the URL as given; an empty list is every event.
  const one = fakeFetch([respond.stream()]);
  const plain = fakeFetch([respond.stream()]);
  const empty = fakeFetch([respond.stream()]);
  const clients = [make(URL_SSE, { fetch: one.fetch, events: "a,b" }), make(URL_SSE, { fetch: plain.fetch, presence: false }),
                   make(URL_SSE, { fetch: empty.fetch, events: [] })];
  try {
    await waitFor("the three requests", () => one.calls.length && plain.calls.length && empty.calls.length);
  } finally {
    for (const x of clients) x.close();
  }
  assert.deepEqual([one.calls[0].url, plain.calls[0].url, empty.calls[0].url],
                   [URL_SSE + "?events=a%2Cb", URL_SSE, URL_SSE]);
  assert.throws(() => new BrokerClient(URL_SSE, { presence: "yes" }), TypeError);
  assert.throws(() => new BrokerClient(URL_SSE, { events: 42 }), TypeError);
});

test("$presence frames keep the presence map and call onJoin/onLeave/onPresence, never as events, never moving lastEventId", async () => {
  const { fetch, calls } = fakeFetch([respond.stream(), respond.stream()]);
  const c = make(URL_SSE, { fetch, retry: 1, maxRetry: 1, presence: true });
  const log = record(c);
  const seen = [];
  c.onJoin((names) => seen.push(["join", names]));
  const offLeave = c.onLeave((names) => seen.push(["leave", names]));
  c.onPresence((map) => seen.push(["presence", Object.fromEntries(map)]));
  const dollar = [];
  c.addEventListener("$presence", (e) => dollar.push(e));
  const presence = c.presence;
  const frame = (data) => "event: $presence\ndata: " + JSON.stringify(data) + "\n\n";
  try {
    await waitFor("the stream", () => log.opens === 1);
    // The first list is the starting point: presence, no join.
    calls[0].push(frame({ users: [{ username: "ann", connections: 2 }, { username: "bo", connections: 1 }] }));
    calls[0].push("id: 5\nevent: chat\ndata: 1\n\n");
    calls[0].push(frame({ join: ["cy", "ann"], leave: [] }));   // ann is there already: no change for her
    calls[0].push(frame({ join: [], leave: ["bo", "zed"] }));   // zed was never there
    calls[0].push(frame({ join: [], leave: ["nobody"] }));      // no change: no callback at all
    calls[0].push("event: $later\ndata: {}\n\n");             // a server frame unknown here: skipped
    await waitFor("the changes", () => seen.length === 5);
    assert.deepEqual(seen, [
      ["presence", { ann: 2, bo: 1 }],
      ["join", ["cy"]], ["presence", { ann: 2, bo: 1, cy: 1 }],
      ["leave", ["bo"]], ["presence", { ann: 2, cy: 1 }],
    ]);
    assert.equal(c.lastEventId, "5", "presence frames carry no id");
    calls[0].end();
    // While away, cy left and dee came: the reconnect's list replaces the map and tells so.
    await waitFor("the reconnect", () => log.opens === 2);
    assert.equal(calls[1].headers["Last-Event-ID"], "5");
    calls[1].push(frame({ users: [{ username: "ann", connections: 1 }, { username: "dee", connections: 3 }] }));
    await waitFor("the new list", () => seen.length === 8);
    assert.deepEqual(seen.slice(5), [["join", ["dee"]], ["leave", ["cy"]], ["presence", { ann: 1, dee: 3 }]]);
    offLeave();
    calls[1].push(frame({ join: [], leave: ["dee"] }));
    await waitFor("the last change", () => seen.length === 9);
    assert.deepEqual(seen[8], ["presence", { ann: 1 }], "an unsubscribed onLeave is not called");
  } finally {
    c.close();
  }
  assert.equal(c.presence, presence, "one Map, changed in place");
  assert.deepEqual(log.any, [["chat", "1", "5"]], "no $ frame is an event");
  assert.deepEqual(dollar, []);
  assert.deepEqual(Array.from(c.latest.keys()), ["chat"]);
  assert.equal(c.lastEventId, "5");
});

test("other HTTP errors and a response that is not an event stream are retried", async () => {
  const { fetch, calls } = fakeFetch([
    respond.status(500, { error: "store down" }),
    respond.status(502, "<html>bad gateway</html>", "text/html"),
    respond.status(200, "<html>portal</html>", "text/html"),
    respond.stream("data: ok\n\n"),
  ]);
  const c = make(URL_SSE, { fetch, retry: 1, maxRetry: 2 });
  const log = record(c);
  try {
    await waitFor("the stream", () => log.any.length === 1);
    assert.equal(c.readyState, BrokerClient.OPEN);
  } finally {
    c.close();
  }
  assert.deepEqual(log.errors.map((e) => [e.status, e.fatal]), [[500, false], [502, false], [200, false]]);
  assert.equal(log.errors[0].message, "store down");
  assert.match(log.errors[1].message, /bad gateway/);
  assert.match(log.errors[2].message, /not an event stream/);
  assert.equal(calls.length, 4);
  assert.deepEqual(log.any, [["message", "ok", ""]]);
});

test("close() in an error listener or during the wait stops reconnecting", async () => {
  for (const when of ["listener", "wait"]) {
    const { fetch, calls } = fakeFetch([respond.network()]);
    const c = make(URL_SSE, { fetch, retry: 200, maxRetry: 200 });
    let errors = 0;
    c.addEventListener("error", () => { errors++; if (when === "listener") c.close(); });
    await waitFor("the error", () => errors === 1);
    if (when === "wait") { await sleep(1); c.close(); } // the wait is at least 100 ms
    await sleep(400);
    assert.equal(calls.length, 1, when);
    assert.equal(errors, 1, when);
    assert.equal(c.readyState, BrokerClient.CLOSED, when);
  }
});

test("close() aborts an open stream; nothing is delivered or reported after it", async () => {
  const { fetch, calls } = fakeFetch([respond.stream()]);
  const c = make(URL_SSE, { fetch, retry: 1 });
  const log = record(c);
  await waitFor("the stream", () => log.opens === 1);
  calls[0].push("id: 1\ndata: before\n\n");
  await waitFor("the event", () => log.any.length === 1);
  c.close();
  assert.equal(c.readyState, BrokerClient.CLOSED);
  assert.ok(calls[0].signal.aborted);
  calls[0].push("id: 2\ndata: after\n\n");
  await sleep(50);
  assert.deepEqual(log.any, [["message", "before", "1"]]);
  assert.equal(log.errors.length, 0);
  assert.equal(calls.length, 1);
});

test("idleTimeout: a silent stream is dropped and resumed", async () => {
  const { fetch, calls } = fakeFetch([respond.stream("id: 9\ndata: x\n\n"), respond.stream()]);
  const c = make(URL_SSE, { fetch, retry: 1, maxRetry: 1, idleTimeout: 50 });
  const log = record(c);
  try {
    await waitFor("the second connection", () => calls.length === 2);
  } finally {
    c.close();
  }
  assert.match(log.errors[0].message, /no data for 50 ms/);
  assert.equal(calls[1].headers["Last-Event-ID"], "9");
});

test("the lastEventId option is sent on the first request", async () => {
  const { fetch, calls } = fakeFetch([respond.stream()]);
  const c = make(URL_SSE, { fetch, lastEventId: "41" });
  try {
    await waitFor("the request", () => calls.length === 1);
  } finally {
    c.close();
  }
  assert.equal(calls[0].headers["Last-Event-ID"], "41");
  assert.equal(c.lastEventId, "41");
});

test("onAnyEvent returns an unsubscribe; removeEventListener works", async () => {
  const { fetch, calls } = fakeFetch([respond.stream()]);
  const c = make(URL_SSE, { fetch });
  const seen = [];
  const named = [];
  const off = c.onAnyEvent((e) => seen.push(e.data));
  const fn = (e) => named.push(e.data);
  c.addEventListener("n", fn);
  try {
    await waitFor("the stream", () => calls.length === 1 && c.readyState === BrokerClient.OPEN);
    calls[0].push("event: n\ndata: 1\n\n");
    await waitFor("event 1", () => seen.length === 1);
    off();
    c.removeEventListener("n", fn);
    calls[0].push("event: n\ndata: 2\n\n");
    await waitFor("event 2 in latest", () => c.latest.get("n")?.data === "2");
  } finally {
    c.close();
  }
  assert.deepEqual(seen, ["1"]);
  assert.deepEqual(named, ["1"]);
});

test("helpers: base URL, verify, insert, login, and BrokerError on failure", async () => {
  const requests = [];
  const answers = {
    "GET /api/sse": () => new Response("", { status: 200, headers: { "Content-Type": "text/event-stream" } }),
    "GET /api/verify": () => Response.json({ username: "u", tenant_name: "t" }),
    "POST /api/insert": () => Response.json({ id: "9" }),
    "POST /api/login": () => Response.json({ jwt: "J" }),
  };
  let failWith = null;
  const fetch = async (url, init = {}) => {
    const u = new URL(url);
    const key = (init.method || "GET") + " " + u.pathname;
    if (key !== "GET /api/sse") requests.push({ key, url: String(url), init });
    if (failWith && key !== "GET /api/sse") return failWith();
    return answers[key]();
  };
  const c = make("http://h:1/api/sse?x=1#f", { fetch, headers: { Authorization: "Bearer Z" }, retry: 1000 });
  try {
    assert.equal(c.baseUrl, "http://h:1/api");
    assert.deepEqual(await c.verify(), { username: "u", tenant_name: "t" });
    assert.deepEqual(await c.insert("e", { k: 1 }), { id: "9" });
    assert.equal(await BrokerClient.login("http://h:1/api/", "me", "pw", { fetch }), "J");
    assert.deepEqual(requests.map((r) => r.url), ["http://h:1/api/verify", "http://h:1/api/insert", "http://h:1/api/login"]);
    assert.equal(requests[0].init.headers.Authorization, "Bearer Z");
    assert.equal(requests[1].init.headers.Authorization, "Bearer Z");
    assert.equal(requests[1].init.headers["Content-Type"], "application/json");
    assert.deepEqual(JSON.parse(requests[1].init.body), { event: "e", data: { k: 1 } });
    assert.deepEqual(JSON.parse(requests[2].init.body), { username: "me", password: "pw" });
    assert.equal(requests[2].init.headers.Authorization, undefined);

    failWith = () => Response.json({ error: "data is missing" }, { status: 400 });
    await assert.rejects(c.insert("e"), (e) => e instanceof BrokerError && e.status === 400 &&
      e.message === "data is missing" && e.body.error === "data is missing");
    await assert.rejects(BrokerClient.login("http://h:1/api", "me", "pw", { fetch }), (e) => e.status === 400);
    failWith = () => { throw new TypeError("fetch failed"); };
    await assert.rejects(c.verify(), (e) => e instanceof BrokerError && e.status === 0 && /fetch failed/.test(e.message));
    failWith = () => new Response("<html>oops</html>", { status: 502 });
    await assert.rejects(c.verify(), (e) => e.status === 502 && /oops/.test(e.message) && e.body === "<html>oops</html>");
  } finally {
    c.close();
  }
});

test("close() in an event listener stops the rest of the chunk", async () => {
  const { fetch } = fakeFetch([respond.stream("data: 1\n\ndata: 2\n\ndata: 3\n\n")]);
  const c = make(URL_SSE, { fetch });
  const seen = [];
  c.addEventListener("message", (e) => { seen.push(e.data); if (e.data === "1") c.close(); });
  await waitFor("the close", () => c.readyState === BrokerClient.CLOSED);
  await sleep(20);
  assert.deepEqual(seen, ["1"]);
  assert.deepEqual(Array.from(c.latest.keys()), ["message"]);
  assert.equal(c.latest.get("message").data, "1");
});

test("headers may be a Headers object; a Last-Event-ID among them is the starting point, never doubled", async () => {
  const { fetch, calls } = fakeFetch([respond.stream("id: 2\ndata: x\n\n"), respond.stream()]);
  const headers = new Headers({ Authorization: "Bearer H", "last-event-id": "1" });
  const c = make(URL_SSE, { fetch, headers, retry: 1, maxRetry: 1 });
  await waitFor("the first event", () => c.lastEventId === "2");
  calls[0].end();
  await waitFor("the reconnect", () => calls.length === 2);
  c.close();
  assert.equal(calls[0].headers.authorization, "Bearer H");
  assert.equal(new Headers(calls[0].headers).get("last-event-id"), "1");
  assert.equal(new Headers(calls[1].headers).get("last-event-id"), "2");
  assert.equal(new Headers(calls[1].headers).get("authorization"), "Bearer H");
});

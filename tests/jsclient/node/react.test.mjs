// useBroker (clients/js/react.js) under React 18 and react-test-renderer (Debian's node-react
// and node-react-test-renderer), against a REAL broker. Started by
// tests/jsclient/test_jsclient_react.py, which copies this file into a throwaway project where
// "broker-client" is the package folder and "react" is Debian's, runs the broker and creates
// the users; it passes them in the environment:
//   BROKER_JS_BASE   the broker's base URL (http://127.0.0.1:PORT)
//   BROKER_JS_USERS  JSON {name: {username, password, tenant}}
// Whether a stream is open is read from the broker itself (broker_sse_subscribers in
// /metrics): this module's broker serves no other client.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import React from "react";
import TestRenderer from "react-test-renderer";
import BrokerClient from "broker-client";
import { useBroker } from "broker-client/react";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;
const { act } = TestRenderer;

const BASE = process.env.BROKER_JS_BASE;
if (!BASE || !process.env.BROKER_JS_USERS) {
  throw new Error("BROKER_JS_BASE and BROKER_JS_USERS are not set: run this file through tests/jsclient/test_jsclient_react.py");
}
const USERS = JSON.parse(process.env.BROKER_JS_USERS);
const SSE = BASE + "/sse";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const roots = new Set(); // unmounted at the end even when a test fails
after(async () => { for (const r of roots) await act(async () => r.unmount()); });

async function bearer(name) {
  const u = USERS[name];
  return { Authorization: "Bearer " + (await BrokerClient.login(BASE, u.username, u.password)) };
}

async function insert(headers, event, data) {
  const res = await fetch(BASE + "/insert", {
    method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers),
    body: JSON.stringify({ event, data }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text).id;
}

async function openStreams() {
  const text = await (await fetch(BASE + "/metrics")).text();
  const m = /^broker_sse_subscribers(?:\{[^}]*\})? (\d+)$/m.exec(text);
  assert.ok(m, "no broker_sse_subscribers in /metrics");
  return Number(m[1]);
}

// Lets React and the stream run (inside act, so that state updates are flushed) until check()
// is true.
async function waitFor(what, check, ms = 8000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await act(async () => { await sleep(20); });
  }
}

// A component that shows what the hook returns, and a log of every render.
async function mount(props) {
  const renders = [];
  function View(p) {
    const b = useBroker(p.url, { headers: p.headers, events: p.events, presence: p.presence, fetch: p.fetch,
                                 retry: 50, maxRetry: 200 });
    renders.push(b);
    const shown = Object.fromEntries(Object.entries(b.latest).map(([k, v]) => [k, v.data]));
    return React.createElement("pre", null, b.state + " " + JSON.stringify(shown));
  }
  let root;
  await act(async () => { root = TestRenderer.create(React.createElement(View, props)); });
  roots.add(root);
  return {
    renders,
    last: () => renders[renders.length - 1],
    text: () => root.toJSON().children.join(""),
    update: (next) => act(async () => { root.update(React.createElement(View, next)); }),
    unmount: async () => { await act(async () => root.unmount()); roots.delete(root); },
  };
}

test("renders the snapshot, then re-renders on an insert", async () => {
  const writer = await bearer("rudi");
  const a1 = await insert(writer, "a", { v: 1 });
  const b1 = await insert(writer, "b", { v: 2 });
  const a2 = await insert(writer, "a", { v: 3 });
  const view = await mount({ url: SSE, headers: await bearer("rosa") });
  await waitFor("the snapshot", () => view.last().latest.b && view.last().latest.a && view.last().state === "open");
  assert.ok(a1 < a2);
  assert.deepEqual(view.last().latest, {
    a: { type: "a", data: { v: 3 }, raw: '{"v":3}', id: a2 },
    b: { type: "b", data: { v: 2 }, raw: '{"v":2}', id: b1 },
  });
  assert.equal(view.text(), 'open {"b":{"v":2},"a":{"v":3}}');
  assert.equal(view.last().error, null);
  const before = view.renders.length;
  const a3 = await insert(writer, "a", { v: 4 });
  await waitFor("the live insert", () => view.last().latest.a.id === a3);
  assert.ok(view.renders.length > before, "no new render for the insert");
  assert.deepEqual(view.last().latest.a, { type: "a", data: { v: 4 }, raw: '{"v":4}', id: a3 });
  assert.equal(view.last().lastEventId, a3);
  assert.equal(view.text(), 'open {"b":{"v":2},"a":{"v":4}}');
  // The client is there for inserts of the component's own.
  const own = await view.last().client.insert("b", { v: 5 });
  await waitFor("the component's own insert", () => view.last().latest.b.id === own.id);
  await view.unmount();
});

test("closes the stream on unmount", async () => {
  await waitFor("no stream open", async () => (await openStreams()) === 0);
  const view = await mount({ url: SSE, headers: await bearer("rosa") });
  await waitFor("open", () => view.last().state === "open");
  assert.equal(await openStreams(), 1);
  const client = view.last().client;
  await view.unmount();
  assert.equal(client.readyState, BrokerClient.CLOSED);
  await waitFor("the broker to see the stream closed", async () => (await openStreams()) === 0);
});

test("reopens when the credentials or the URL change", async () => {
  const rosa = await bearer("rosa");
  const tom = await bearer("tom");
  const t1 = await insert(tom, "t", { who: "tom" });
  const view = await mount({ url: SSE, headers: rosa });
  await waitFor("rosa's snapshot", () => view.last().state === "open" && view.last().latest.a);
  const first = view.last().client;
  // The same credentials in a new object do not reopen.
  await view.update({ url: SSE, headers: Object.assign({}, rosa) });
  assert.equal(view.last().client, first);
  // Another user's: another tenant's snapshot, and only the new stream open.
  await view.update({ url: SSE, headers: tom });
  await waitFor("tom's snapshot", () => view.last().latest.t && view.last().state === "open");
  assert.deepEqual(Object.keys(view.last().latest), ["t"]);
  assert.equal(view.last().latest.t.id, t1);
  assert.notEqual(view.last().client, first);
  assert.equal(first.readyState, BrokerClient.CLOSED);
  await waitFor("one stream open", async () => (await openStreams()) === 1);
  // Another URL: reopened too.
  const second = view.last().client;
  await view.update({ url: BASE + "/sse?client=2", headers: tom });
  await waitFor("the new URL's stream", () => view.last().client !== second && view.last().state === "open");
  assert.equal(second.readyState, BrokerClient.CLOSED);
  assert.equal(view.last().client.url, BASE + "/sse?client=2");
  await waitFor("one stream open", async () => (await openStreams()) === 1);
  await view.unmount();
});

test("events: the server sends only the names asked for", async () => {
  const urls = [];
  const recording = (url, init) => { urls.push(url); return fetch(url, init); };
  const rudi = await bearer("rudi");
  await insert(rudi, "d", { v: 0 });
  const view = await mount({ url: SSE, headers: await bearer("rosa"), events: ["b", "c*", "d,e"], fetch: recording });
  await waitFor("the snapshot of b", () => view.last().state === "open" && view.last().latest.b);
  await insert(rudi, "a", { v: 6 });
  await insert(rudi, "cat", { v: 7 });
  await insert(rudi, "d", { v: 8 });
  await insert(rudi, "d,e", { v: 9 });
  const b = await insert(rudi, "b", { v: 10 });
  await waitFor("b, live", () => view.last().latest.b.id === b);
  assert.deepEqual(Object.keys(view.last().latest).sort(), ["b", "cat", "d,e"]);
  // The filter is the server's: the client under the hook got nothing else either.
  assert.deepEqual(Array.from(view.last().client.latest.keys()).sort(), ["b", "cat", "d,e"]);
  assert.deepEqual(urls, [SSE + "?events=b,c*,d%2Ce"]);
  await view.unmount();
});

test("presence: who is online, updated as another user's stream opens and closes", async () => {
  const me = USERS.rosa.username;
  const other = USERS.rudi.username;
  const view = await mount({ url: SSE, headers: await bearer("rosa"), presence: true });
  await waitFor("myself online", () => view.last().presence[me] >= 1);
  const rudi = new BrokerClient(SSE, { headers: await bearer("rudi") });
  try {
    await waitFor("rudi online", () => view.last().presence[other] === 1);
  } finally {
    rudi.close();
  }
  await waitFor("rudi gone", () => !(other in view.last().presence));
  assert.deepEqual(Object.keys(view.last().presence), [me]);
  await view.unmount();
});

test("no URL: closed; a refused credential: closed with the error", async () => {
  const view = await mount({ url: null, headers: {} });
  await act(async () => { await sleep(50); });
  assert.equal(view.last().state, "closed");
  assert.equal(view.last().client, null);
  await view.update({ url: SSE, headers: { Authorization: "Bearer not-a-token" } });
  await waitFor("the fatal error", () => view.last().error && view.last().state === "closed");
  assert.equal(view.last().error.status, 401);
  assert.equal(view.last().error.fatal, true);
  await view.unmount();
});

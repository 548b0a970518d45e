// Unit tests of BrokerClient's XMLHttpRequest transport (clients/js/broker-client.js) over a
// scripted fake XMLHttpRequest, no server needed: which transport is chosen, text split
// anywhere, the reopen past xhrReopenAfter (an event cut at the bound comes again, none
// twice), errors and their retries, the fatal 401, close(); and the module loaded where there
// is no EventTarget, Event or TextDecoder, as in React Native.
// Run: node --test tests/jsclient/node/xhr.test.mjs
import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import BrokerClient from "../../../clients/js/broker-client.js";

const URL_SSE = "http://broker.test:8080/sse";
const CLIENT = new URL("../../../clients/js/broker-client.js", import.meta.url).href;

async function waitFor(what, check, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// A fake XMLHttpRequest the test drives: respond(status, type), push(text), finish(), fail().
class FakeXHR {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.statusText = "";
    this.responseText = "";
    this.responseURL = "";
    this.headers = {};
    this.aborted = false;
    this._type = null;
  }
  open(method, url) { this.method = method; this.url = url; this.readyState = 1; }
  setRequestHeader(name, value) { this.headers[name] = value; }
  send() { FakeXHR.sent.push(this); }
  abort() { this.aborted = true; }
  getResponseHeader(name) { return name.toLowerCase() === "content-type" ? this._type : null; }
  respond(status, type = "text/event-stream") {
    this.status = status;
    this._type = type;
    this.responseURL = this.url;
    this.readyState = 2;
    if (this.onreadystatechange) this.onreadystatechange();
  }
  push(text) {
    this.responseText += text;
    this.readyState = 3;
    if (this.onreadystatechange) this.onreadystatechange();
    if (this.onprogress) this.onprogress();
  }
  finish() { this.readyState = 4; if (this.onload) this.onload(); }
  fail() { this.readyState = 4; this.status = 0; if (this.onerror) this.onerror(); }
}
FakeXHR.sent = [];

const live = new Set();
function make(options) {
  const c = new BrokerClient(URL_SSE, Object.assign({ transport: "xhr", headers: { Authorization: "Bearer t" } }, options));
  live.add(c);
  const log = { events: [], errors: [], opens: 0 };
  c.addEventListener("open", () => { log.opens++; });
  c.addEventListener("error", (e) => log.errors.push({ status: e.status, message: e.message, fatal: e.fatal, retryIn: e.retryIn }));
  c.onAnyEvent((e) => log.events.push([e.type, e.data, e.lastEventId]));
  return { c, log };
}
afterEach(() => {
  for (const c of live) c.close();
  live.clear();
  FakeXHR.sent = [];
  delete globalThis.XMLHttpRequest;
});
globalThis.XMLHttpRequest = FakeXHR;

function useFake() { globalThis.XMLHttpRequest = FakeXHR; }
const frame = (id, type, data) => "id: " + id + "\nevent: " + type + "\ndata: " + data + "\n\n";

test("the transport: xhr where fetch cannot stream, fetch where it can or is given", () => {
  useFake();
  const saved = globalThis.ReadableStream;
  delete globalThis.ReadableStream; // as in React Native
  try {
    const auto = new BrokerClient(URL_SSE, {});
    live.add(auto);
    assert.equal(auto.transport, "xhr");
    const given = new BrokerClient(URL_SSE, { fetch: () => new Promise(() => {}) });
    live.add(given);
    assert.equal(given.transport, "fetch");
  } finally {
    globalThis.ReadableStream = saved;
  }
  const here = new BrokerClient(URL_SSE, { fetch: () => new Promise(() => {}) });
  live.add(here);
  assert.equal(here.transport, "fetch");
  const forced = new BrokerClient(URL_SSE, { transport: "xhr" });
  live.add(forced);
  assert.equal(forced.transport, "xhr");
  assert.throws(() => new BrokerClient(URL_SSE, { transport: "websocket" }), TypeError);
});

test("xhr: sends the headers, parses text split anywhere, reads only the new part", async () => {
  useFake();
  const { c, log } = make();
  const x = await waitFor("the request", () => FakeXHR.sent[0]);
  assert.equal(x.method, "GET");
  assert.equal(x.url, URL_SSE);
  assert.deepEqual(x.headers, { Accept: "text/event-stream", Authorization: "Bearer t" });
  x.respond(200, "text/event-stream; charset=utf-8");
  assert.equal(c.readyState, BrokerClient.OPEN);
  const text = "retry: 3000\n\n" + frame("1", "a", '{"s":"h\u00e9 \u2603"}') + ": keep-alive\n\n" + frame("2", "b", "2");
  for (const piece of [text.slice(0, 7), text.slice(7, 30), text.slice(30, 31), text.slice(31)]) x.push(piece);
  assert.deepEqual(log.events, [["a", '{"s":"h\u00e9 \u2603"}', "1"], ["b", "2", "2"]]);
  x.push(""); // a progress event with nothing new delivers nothing again
  assert.equal(log.events.length, 2);
  assert.equal(c.lastEventId, "2");
  assert.deepEqual(log.errors, []);
});

test("xhr: past xhrReopenAfter the request is reopened with Last-Event-ID; nothing missed or repeated", async () => {
  useFake();
  const { c, log } = make({ xhrReopenAfter: 60 });
  const x1 = await waitFor("the first request", () => FakeXHR.sent[0]);
  x1.respond(200);
  x1.push(frame("1", "a", "1") + frame("2", "a", "2"));       // 48 characters: under the bound
  x1.push(frame("3", "a", "3") + "id: 4\nevent: a\ndata: 4"); // past it, event 4 cut short
  assert.ok(x1.aborted, "the first request was not let go");
  const x2 = await waitFor("the reopened request", () => FakeXHR.sent[1]);
  assert.equal(x2.headers["Last-Event-ID"], "3");
  x2.respond(200);
  x2.push(frame("4", "a", "4") + frame("5", "a", "5"));
  assert.deepEqual(log.events.map((e) => e[2]), ["1", "2", "3", "4", "5"]);
  assert.deepEqual(log.errors, [], "a reopen is not an error");
  assert.equal(log.opens, 2);
  assert.equal(c.readyState, BrokerClient.OPEN);
});

test("xhr: a bound smaller than one event still moves on: no reopen before a whole event", async () => {
  useFake();
  const { log } = make({ xhrReopenAfter: 5 });
  const x1 = await waitFor("the first request", () => FakeXHR.sent[0]);
  x1.respond(200);
  x1.push("retry: 3000\n\nid: 1\nevent: a\ndata: ");
  x1.push("1\n");
  assert.equal(FakeXHR.sent.length, 1, "reopened with nothing to resume from");
  x1.push("\n");
  const x2 = await waitFor("the reopened request", () => FakeXHR.sent[1]);
  assert.equal(x2.headers["Last-Event-ID"], "1");
  x2.respond(200);
  x2.push(frame("2", "a", "2"));
  await waitFor("the third request", () => FakeXHR.sent[2]);
  assert.deepEqual(log.events.map((e) => e[2]), ["1", "2"]);
  assert.deepEqual(log.errors, []);
});

test("xhr: a network error or the end of the stream is retried with Last-Event-ID", async () => {
  useFake();
  const { log } = make({ retry: 1, maxRetry: 5 });
  const x1 = await waitFor("the first request", () => FakeXHR.sent[0]);
  x1.respond(200);
  x1.push(frame("7", "a", "1"));
  x1.fail();
  await waitFor("the error event", () => log.errors.length === 1);
  assert.equal(log.errors[0].fatal, false);
  assert.equal(log.errors[0].status, 0);
  assert.ok(log.errors[0].retryIn >= 0);
  const x2 = await waitFor("the retry", () => FakeXHR.sent[1]);
  assert.equal(x2.headers["Last-Event-ID"], "7");
  x2.respond(503, "application/json");
  x2.push('{"error":"draining"}');
  x2.finish();
  await waitFor("the second error event", () => log.errors.length === 2);
  assert.deepEqual(log.errors[1], { status: 503, message: "draining", fatal: false, retryIn: log.errors[1].retryIn });
  const x3 = await waitFor("the next retry", () => FakeXHR.sent[2]);
  x3.respond(200);
  x3.finish();
  await waitFor("the third error event", () => log.errors.length === 3);
  assert.equal(log.errors[2].message, "the stream ended");
  await waitFor("a retry after the end", () => FakeXHR.sent[3]);
});

test("xhr: events and presence in the query of every request; a 400 is fatal", async () => {
  useFake();
  const { c, log } = make({ retry: 1, maxRetry: 1, events: ["x,y", "room.*"], presence: true });
  const wanted = URL_SSE + "?events=x%2Cy,room.*&presence=true";
  const x1 = await waitFor("the first request", () => FakeXHR.sent[0]);
  assert.equal(x1.url, wanted);
  x1.respond(200);
  x1.push("event: $presence\ndata: {\"users\":[{\"username\":\"ann\",\"connections\":1}]}\n\n" + frame("3", "x,y", "1"));
  x1.fail();
  const x2 = await waitFor("the retry", () => FakeXHR.sent[1]);
  assert.deepEqual([x2.url, x2.headers["Last-Event-ID"]], [wanted, "3"]);
  assert.deepEqual(log.events, [["x,y", "1", "3"]]);
  assert.deepEqual(Array.from(c.presence), [["ann", 1]]);
  x2.respond(400, "application/json");
  x2.push('{"error":"presence is turned off"}');
  x2.finish();
  await waitFor("the fatal error", () => log.errors.length === 2);
  assert.deepEqual(log.errors[1], { status: 400, message: "presence is turned off", fatal: true, retryIn: null });
  assert.equal(c.readyState, BrokerClient.CLOSED);
});

test("xhr: 401 is fatal, with the server's message; no retry", async () => {
  useFake();
  const { c, log } = make({ retry: 1, maxRetry: 1 });
  const x = await waitFor("the request", () => FakeXHR.sent[0]);
  x.respond(401, "application/json");
  x.push('{"error":"the token has expired"}');
  x.finish();
  await waitFor("the error event", () => log.errors.length === 1);
  assert.deepEqual(log.errors, [{ status: 401, message: "the token has expired", fatal: true, retryIn: null }]);
  assert.equal(c.readyState, BrokerClient.CLOSED);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(FakeXHR.sent.length, 1);
  assert.equal(log.opens, 0);
});

test("xhr: a 200 that is not an event stream is an error, then a retry", async () => {
  useFake();
  const { log } = make({ retry: 1, maxRetry: 1 });
  const x = await waitFor("the request", () => FakeXHR.sent[0]);
  x.respond(200, "text/html");
  assert.ok(x.aborted);
  await waitFor("the error event", () => log.errors.length === 1);
  assert.match(log.errors[0].message, /not an event stream: text\/html/);
  await waitFor("the retry", () => FakeXHR.sent[1]);
});

test("xhr: close() aborts the request and nothing more is delivered", async () => {
  useFake();
  const { c, log } = make();
  const x = await waitFor("the request", () => FakeXHR.sent[0]);
  x.respond(200);
  x.push(frame("1", "a", "1"));
  c.close();
  assert.ok(x.aborted);
  x.push(frame("2", "a", "2"));
  assert.deepEqual(log.events.map((e) => e[2]), ["1"]);
  assert.equal(c.readyState, BrokerClient.CLOSED);
  assert.deepEqual(log.errors, []);
});

test("loads and streams with no EventTarget, Event or TextDecoder (React Native)", async () => {
  useFake();
  const saved = { EventTarget: globalThis.EventTarget, Event: globalThis.Event, TextDecoder: globalThis.TextDecoder,
                  ReadableStream: globalThis.ReadableStream };
  let c;
  for (const name of Object.keys(saved)) delete globalThis[name];
  try {
    const mod = await import(CLIENT + "?react-native"); // a fresh instance of the module
    c = new mod.BrokerClient(URL_SSE, {});
    live.add(c);
  } finally {
    Object.assign(globalThis, saved);
  }
  assert.equal(c.transport, "xhr");
  assert.ok(!(c instanceof EventTarget), "the stand-in should be in use");
  const got = [];
  let opened = 0;
  const onA = (e) => got.push([e.type, e.data, e.lastEventId]);
  c.addEventListener("a", onA);
  c.addEventListener("open", () => { opened++; });
  const x = await waitFor("the request", () => FakeXHR.sent[0]);
  x.respond(200);
  x.push(frame("1", "a", "1") + frame("2", "b", "2"));
  c.removeEventListener("a", onA);
  x.push(frame("3", "a", "3"));
  assert.deepEqual(got, [["a", "1", "1"]]);
  assert.equal(opened, 1);
  assert.deepEqual(Array.from(c.latest.keys()), ["b", "a"]);
  assert.equal(c.baseUrl, "http://broker.test:8080");
});

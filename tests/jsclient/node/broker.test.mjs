// BrokerClient against a REAL broker, in Node. Started by tests/jsclient/test_jsclient_node.py,
// which runs the broker and creates the users; it passes them in the environment:
//   BROKER_JS_BASE        the broker's base URL (http://127.0.0.1:PORT)
//   BROKER_JS_JWT_SECRET  its --jwt_secret (to sign an expired token ourselves)
//   BROKER_JS_USERS       JSON {name: {username, password, tenant}}
// Each test uses users of its own tenant, so the snapshot a test sees is its own doing.
// Tenants "t1" and "t10" exist to show that a tenant whose name is a prefix of another's never
// sees the other's events.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import BrokerClient, { BrokerError } from "../../../clients/js/broker-client.js";

const BASE = process.env.BROKER_JS_BASE;
const SECRET = process.env.BROKER_JS_JWT_SECRET;
if (!BASE || !SECRET || !process.env.BROKER_JS_USERS) {
  throw new Error("BROKER_JS_BASE, BROKER_JS_JWT_SECRET and BROKER_JS_USERS are not set: " +
    "run this file through tests/jsclient/test_jsclient_node.py");
}
const USERS = JSON.parse(process.env.BROKER_JS_USERS);
const SSE = BASE + "/sse";

const open = new Set(); // every client a test made, closed at the end even when a test fails
after(() => { for (const c of open) c.close(); });

async function waitFor(what, check, ms = 8000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 10));
  }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A streaming client with a log of what it reported.
function stream(headers, options = {}) {
  const c = new BrokerClient(SSE, Object.assign({ headers }, options));
  open.add(c);
  const log = { events: [], errors: [], opens: 0 };
  c.addEventListener("open", () => { log.opens++; });
  c.addEventListener("error", (e) => log.errors.push({ status: e.status, message: e.message, fatal: e.fatal, state: c.readyState }));
  c.onAnyEvent((e) => log.events.push({ type: e.type, data: JSON.parse(e.data), id: e.lastEventId }));
  return { c, log };
}

// A fetch the test steers: it records each request (URL and Last-Event-ID), cut() drops the
// open stream (the client sees a network error and reconnects), and while hold() is on a new
// request waits until release(), so that what happens meanwhile happens while the client is away.
function steeredFetch() {
  const ctl = { urls: [], lastIds: [], current: null, gate: null };
  ctl.fetch = async (url, init) => {
    if (!url.startsWith(SSE)) return fetch(url, init); // the helpers' requests
    ctl.urls.push(url);
    ctl.lastIds.push(init.headers["Last-Event-ID"] || null);
    if (ctl.gate) await ctl.gate.promise;
    const own = new AbortController();
    init.signal.addEventListener("abort", () => own.abort());
    ctl.current = own;
    return fetch(url, Object.assign({}, init, { signal: own.signal }));
  };
  ctl.hold = () => {
    let release;
    const promise = new Promise((r) => { release = r; });
    ctl.gate = { promise, release };
  };
  ctl.release = () => { const g = ctl.gate; ctl.gate = null; g.release(); };
  ctl.cut = () => ctl.current.abort();
  return ctl;
}

async function bearer(name) {
  const u = USERS[name];
  return { Authorization: "Bearer " + (await BrokerClient.login(BASE, u.username, u.password)) };
}

function b64url(buf) {
  return Buffer.from(buf).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}
function signHS256(payload) {
  const input = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(payload));
  return input + "." + b64url(createHmac("sha256", SECRET).update(input).digest());
}

test("login gives a JWT the broker accepts; a wrong password is a BrokerError 401", async () => {
  const u = USERS.alice;
  const jwt = await BrokerClient.login(BASE, u.username, u.password);
  assert.equal(jwt.split(".").length, 3);
  const { c } = stream({ Authorization: "Bearer " + jwt });
  assert.deepEqual(await c.verify(), { username: u.username, tenant_name: "t1" });
  c.close();
  await assert.rejects(BrokerClient.login(BASE, u.username, "not the password"), (e) =>
    e instanceof BrokerError && e.status === 401 && typeof e.body.error === "string" && e.message === e.body.error);
});

test("the snapshot is the latest event per name, oldest first; then live inserts; latest follows", async () => {
  const writer = stream(await bearer("erin")).c;
  const red = await writer.insert("color", "red");
  const one = await writer.insert("size", 1);
  const blue = await writer.insert("color", "blue");
  assert.ok(Number(red.id) < Number(one.id) && Number(one.id) < Number(blue.id), JSON.stringify([red, one, blue]));

  const { c, log } = stream(await bearer("dave"));
  const colors = [];
  c.addEventListener("color", (e) => colors.push(JSON.parse(e.data)));
  await waitFor("the snapshot", () => log.events.length === 2);
  assert.equal(c.readyState, BrokerClient.OPEN);
  const green = await writer.insert("color", { shade: "green" });
  await waitFor("the live insert", () => log.events.length === 3);
  await sleep(200); // room for a stray extra event to show up
  assert.deepEqual(log.events, [
    { type: "size", data: 1, id: one.id },
    { type: "color", data: "blue", id: blue.id },
    { type: "color", data: { shade: "green" }, id: green.id },
  ]);
  assert.deepEqual(colors, ["blue", { shade: "green" }]);
  assert.deepEqual(Array.from(c.latest.keys()), ["size", "color"]);
  assert.deepEqual(c.latest.get("color"), { type: "color", data: '{"shade":"green"}', lastEventId: green.id });
  assert.deepEqual(c.latest.get("size"), { type: "size", data: "1", lastEventId: one.id });
  assert.equal(c.lastEventId, green.id);
  assert.equal(log.opens, 1);
  assert.deepEqual(log.errors, []);
  c.close();
  writer.close();
});

test("tenant t1 gets another t1 user's live insert and never an event of tenant t10", async () => {
  const bob = stream(await bearer("bob")).c;      // t1
  const carol = stream(await bearer("carol"));    // t10
  await carol.c.insert("chat", { from: "carol-before" });
  await carol.c.insert("t10only", true);
  const bobBefore = await bob.insert("chat", { from: "bob-before" });

  const alice = stream(await bearer("alice"));    // t1
  await waitFor("alice's snapshot", () => alice.log.events.length === 1);
  await carol.c.insert("chat", { from: "carol-live" });
  const bobLive = await bob.insert("chat", { from: "bob-live" });
  await waitFor("bob's live insert", () => alice.log.events.length >= 2);
  const sentinel = await bob.insert("sentinel", 0); // t10's events, had they leaked, came before this
  await waitFor("the sentinel", () => alice.log.events.some((e) => e.type === "sentinel"));
  assert.deepEqual(alice.log.events, [
    { type: "chat", data: { from: "bob-before" }, id: bobBefore.id },
    { type: "chat", data: { from: "bob-live" }, id: bobLive.id },
    { type: "sentinel", data: 0, id: sentinel.id },
  ]);
  // carol's own stream shows her inserts did happen.
  await waitFor("carol's live event", () => carol.log.events.some((e) => e.data && e.data.from === "carol-live"));
  assert.ok(!carol.log.events.some((e) => e.data && String(e.data.from).startsWith("bob")));
  for (const c of [bob, carol.c, alice.c]) c.close();
});

test("the lastEventId option resumes after a stored id instead of the snapshot", async () => {
  const headers = await bearer("ivan");
  const writer = stream(headers).c;
  const ids = [];
  for (const name of ["r1", "r2", "r3"]) ids.push((await writer.insert(name, name)).id);
  const { c, log } = stream(headers, { lastEventId: ids[0] });
  await waitFor("the replay", () => log.events.length === 2);
  const r4 = await writer.insert("r4", "r4");
  await waitFor("the live event", () => log.events.length === 3);
  assert.deepEqual(log.events.map((e) => [e.type, e.id]), [["r2", ids[1]], ["r3", ids[2]], ["r4", r4.id]]);
  c.close();
  writer.close();
});

test("Basic credentials in the headers work for the stream and the helpers", async () => {
  const u = USERS.judy;
  const headers = { Authorization: "Basic " + Buffer.from(u.username + ":" + u.password).toString("base64") };
  const { c, log } = stream(headers);
  assert.deepEqual(await c.verify(), { username: u.username, tenant_name: u.tenant });
  await waitFor("the stream", () => log.opens === 1);
  const { id } = await c.insert("basic", { ok: true });
  await waitFor("the event", () => log.events.length === 1);
  assert.deepEqual(log.events, [{ type: "basic", data: { ok: true }, id }]);
  c.close();
});

test("insert and verify report the broker's errors as BrokerError", async () => {
  const { c } = stream(await bearer("judy"));
  await assert.rejects(c.insert("no-data"), (e) => e instanceof BrokerError && e.status === 400 && e.message.length > 0);
  await assert.rejects(c.insert("", 1), (e) => e.status === 400);
  c.close();
  const bad = stream({ Authorization: "Bearer not.a.jwt" });
  await assert.rejects(bad.c.verify(), (e) => e instanceof BrokerError && e.status === 401 && typeof e.body.error === "string");
  await waitFor("the fatal error", () => bad.log.errors.length === 1);
  assert.deepEqual([bad.log.errors[0].status, bad.log.errors[0].fatal], [401, true]);
});

test("an expired JWT stops the client: one fatal 401 error, CLOSED, no retry", async () => {
  const u = USERS.frank;
  // The broker's clock may not be the host's: date the token from one the broker issued.
  const real = await BrokerClient.login(BASE, u.username, u.password);
  const { iat } = JSON.parse(Buffer.from(real.split(".")[1], "base64url").toString());
  const claims = { sub: u.username, tenant: u.tenant, iss: "broker" };
  const valid = signHS256({ ...claims, iat, exp: iat + 3600 });
  const expired = signHS256({ ...claims, iat: iat - 7200, exp: iat - 3600 });
  // Our signing is right (so the refusal below is the expiry's doing):
  const check = stream({ Authorization: "Bearer " + valid });
  assert.deepEqual(await check.c.verify(), { username: u.username, tenant_name: u.tenant });
  check.c.close();

  let requests = 0;
  const counting = (url, init) => { requests++; return fetch(url, init); };
  const { c, log } = stream({ Authorization: "Bearer " + expired }, { fetch: counting, retry: 10, maxRetry: 10 });
  await waitFor("the error", () => log.errors.length === 1);
  assert.equal(log.errors[0].status, 401);
  assert.equal(log.errors[0].fatal, true);
  assert.equal(log.errors[0].state, BrokerClient.CLOSED);
  assert.ok(log.errors[0].message.length > 0);
  assert.equal(c.readyState, BrokerClient.CLOSED);
  await sleep(300); // a client that retried every 10 ms would have asked again by now
  assert.equal(requests, 1);
  assert.equal(log.errors.length, 1);
  assert.equal(log.opens, 0);
});

test("close() stops the stream: later inserts are not delivered", async () => {
  const { c, log } = stream(await bearer("gina"));
  await waitFor("the stream", () => log.opens === 1);
  const hank = stream(await bearer("hank"));
  await waitFor("hank's stream", () => hank.log.opens === 1);
  c.close();
  assert.equal(c.readyState, BrokerClient.CLOSED);
  const { id } = await hank.c.insert("after-close", 1);
  await waitFor("the event at another client", () => hank.log.events.some((e) => e.id === id));
  await sleep(200);
  assert.deepEqual(log.events, []);
  assert.deepEqual(log.errors, []);
  hank.c.close();
});

test("events: only the names asked for, in the snapshot, live, and in the replay after a reconnect; a comma in a name", async () => {
  const writer = stream(await bearer("gus")).c;
  const put = async (name, v) => ({ name, v, id: (await writer.insert(name, v)).id });
  const before = [await put("keep", 1), await put("room.1.a", 2), await put("drop", 3), await put("x,y", 4),
                  await put("x", 5), await put("roomy", 6)];
  const wire = steeredFetch();
  // maxRetry: the reconnect comes within 100 ms of the cut, not after the server's retry (3 s).
  const { c, log } = stream(await bearer("fay"), { events: ["keep", "room.*", "x,y"], fetch: wire.fetch, maxRetry: 100 });
  const got = () => log.events.map((e) => [e.type, e.data, e.id]);
  await waitFor("the snapshot", () => log.events.length === 3);
  const live = [await put("drop", 7), await put("room.2", 8)];
  await waitFor("room.2, live", () => log.events.length === 4);

  wire.hold();
  wire.cut();
  await waitFor("the held reconnect", () => wire.urls.length === 2);
  const away = [await put("drop", 9), await put("keep", 10), await put("x", 11), await put("room.3", 12)];
  wire.release();
  await waitFor("room.3 from the replay", () => log.events.some((e) => e.type === "room.3"));
  const sentinel = await put("x,y", 13); // an event that should not have come would be here by now
  await waitFor("the sentinel", () => log.events.some((e) => e.id === sentinel.id));
  const want = [before[0], before[1], before[3], live[1], away[1], away[3], sentinel].map((e) => [e.name, e.v, e.id]);
  assert.deepEqual(got(), want);
  assert.deepEqual(Array.from(c.latest.keys()), ["room.1.a", "room.2", "keep", "room.3", "x,y"]);
  assert.equal(log.errors.length, 1);
  assert.deepEqual(wire.lastIds, [null, live[1].id]);
  for (const url of wire.urls) assert.equal(url, SSE + "?events=keep,room.*,x%2Cy");
  c.close();
  writer.close();
});

test("a filter the server refuses is a fatal 400 with its reason", async () => {
  const { c, log } = stream(await bearer("fay"), { events: ["ok", "$presence"], retry: 10, maxRetry: 10 });
  await waitFor("the error", () => log.errors.length === 1);
  assert.deepEqual([log.errors[0].status, log.errors[0].fatal, c.readyState], [400, true, BrokerClient.CLOSED]);
  assert.match(log.errors[0].message, /item 2 .* reserved/);
});

test("presence: another user's stream opening calls onJoin, closing onLeave; the map follows; $presence is no event and no id", async () => {
  const me = USERS.pia.username;
  const other = USERS.pete.username;
  const writer = stream(await bearer("pete")).c;
  const first = await writer.insert("p", 1);
  writer.close();
  const wire = steeredFetch();
  const { c, log } = stream(await bearer("pia"), { presence: true, fetch: wire.fetch, maxRetry: 100 });
  const calls = [];
  c.onJoin((names) => calls.push(["join", names]));
  c.onLeave((names) => calls.push(["leave", names]));
  c.onPresence(() => calls.push(["presence"]));
  const dollar = [];
  c.addEventListener("$presence", (e) => dollar.push(e));
  await waitFor("the list", () => calls.some((x) => x[0] === "presence"));
  await waitFor("myself online", () => c.presence.has(me));
  await waitFor("pete's stream closed", () => !c.presence.has(other));

  const opened = Date.now();
  const pete = stream(await bearer("pete"));
  await waitFor("pete's join", () => calls.some((x) => x[0] === "join" && x[1].includes(other)), 3000);
  console.log("join seen after", Date.now() - opened, "ms");
  assert.equal(c.presence.get(other), 1);
  const listed = await c.getPresence();
  assert.deepEqual(listed.users.map((u) => u.username).sort(), [me, other].sort());
  pete.c.close();
  await waitFor("pete's leave", () => calls.some((x) => x[0] === "leave" && x[1].includes(other)), 3000);
  assert.ok(!c.presence.has(other));

  // Away when pete leaves: the reconnect's list no longer has him.
  const again = stream(await bearer("pete"));
  await waitFor("pete back", () => c.presence.has(other), 3000);
  wire.hold();
  wire.cut();
  await waitFor("the held reconnect", () => wire.urls.length === 2);
  again.c.close();
  await sleep(600); // the server's presence ticks every 250 ms
  const leavesBefore = calls.filter((x) => x[0] === "leave").length;
  wire.release();
  await waitFor("the leave from the new list", () => calls.filter((x) => x[0] === "leave").length > leavesBefore);
  assert.ok(!c.presence.has(other), JSON.stringify(Array.from(c.presence)));

  assert.deepEqual(log.events, [{ type: "p", data: 1, id: first.id }], "presence frames are not events");
  assert.deepEqual(dollar, []);
  assert.equal(c.lastEventId, first.id, "presence frames never move lastEventId");
  assert.deepEqual(wire.lastIds, [null, first.id]);
  for (const url of wire.urls) assert.equal(url, SSE + "?presence=true");
  c.close();
});

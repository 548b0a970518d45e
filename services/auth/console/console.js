// Broker's web console: the behaviour of index.html.
//
// A user logs in (POST /login through BrokerClient.login), the JWT stays in sessionStorage
// so a reload keeps the session and closing the tab ends it, and one BrokerClient streams
// GET /sse: its events fill the latest-per-name table and the live feed, and its presence
// frames the who-is-online panel. The event filter is the server's (`events=`): applying one
// opens a new stream, which starts over from the snapshot of those names. The admin panel
// talks to the admin endpoints with the admin token held only in this module's memory.
//
// Two rules shape the code. The page runs under a strict Content-Security-Policy, so all
// behaviour lives here and visibility changes go through the `hidden` attribute and classes,
// never inline styles. Everything that comes from the server (event names, data, user fields,
// error messages) is written with textContent, never parsed as HTML.
import BrokerClient from "./broker-client.js";

// The API lives at the origin and path the console is served from, one level up
// (/console/ -> /): behind a gateway the page keeps talking to whatever served it.
const BASE = new URL("../", location.href);
const JWT_KEY = "broker-console.jwt";
const FILTER_KEY = "broker-console.events"; // the filter, kept with the session
const FEED_MAX = 200;          // rows kept in the live feed (and events held while paused)
const DATA_MAX_CHARS = 320;    // longer pretty-printed data is cut, with a button to show it all
const DATA_MAX_LINES = 8;

const $ = (id) => document.getElementById(id);

let client = null;
let jwt = null;
let me = null;                 // the username logged in, once /verify said
let filter = [];               // the event names and prefixes asked for; [] = every event
let presenceOff = null;        // null until known: whether the server has presence turned off
let adminToken = null;
const latest = new Map();      // event name -> {id, data}, what the table shows
let paused = false;
let held = [];                 // events that arrived while the feed was paused, oldest first
let feedTotal = 0;

// ---------------------------------------------------------------- small DOM helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function show(node, visible) {
  node.hidden = !visible;
}

// kind: "ok", "error" or "" (neutral); tests read data-status.
function message(node, text, kind = "") {
  node.textContent = text;
  node.dataset.status = kind;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// Event data arrives as compact JSON text; show it indented. Anything that does not parse
// (it should not happen) is shown as it came.
function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return String(text);
  }
}

function cut(text) {
  const lines = text.split("\n");
  let short = lines.length > DATA_MAX_LINES ? lines.slice(0, DATA_MAX_LINES).join("\n") : text;
  if (short.length > DATA_MAX_CHARS) short = short.slice(0, DATA_MAX_CHARS);
  return short.length < text.length ? short + " …" : null;
}

// A <pre> with the data, cut when long, and a button to expand and fold it.
function dataBlock(text) {
  const full = pretty(text);
  const short = cut(full);
  const pre = el("pre", { class: "data", "data-test": "data", text: short ?? full });
  if (short === null) return pre;
  const wrap = el("div", { class: "data-wrap" }, pre);
  const more = el("button", { type: "button", class: "link", "data-test": "data-more",
                              text: `show all (${full.length} chars)` });
  more.addEventListener("click", () => {
    const open = pre.textContent !== full;
    pre.textContent = open ? full : short;
    more.textContent = open ? "show less" : `show all (${full.length} chars)`;
  });
  wrap.append(more);
  return wrap;
}

// Ids are decimal strings that may outgrow a double; compare them as integers.
function idAfter(a, b) {
  try {
    return BigInt(a) > BigInt(b);
  } catch {
    return a !== b;
  }
}

function flash(node) {
  node.classList.remove("flash");
  void node.offsetWidth; // restart the animation on a row updated twice in a row
  node.classList.add("flash");
}

// ---------------------------------------------------------------- connection state

const STATE_LABEL = {
  idle: "signed out",
  connecting: "connecting",
  live: "live",
  reconnecting: "reconnecting",
  stopped: "stopped",
};

function setConn(state, detail = "") {
  $("conn").dataset.state = state;
  $("conn-state").textContent = STATE_LABEL[state];
  $("conn-detail").textContent = detail;
  show($("conn-retry"), state === "stopped" && jwt !== null);
}

function showLoggedOut(note = "") {
  show($("login"), true);
  show($("app"), false);
  show($("whoami-box"), false);
  message($("login-error"), note, note ? "error" : "");
  setConn("idle");
}

// ---------------------------------------------------------------- filter

// "chat, room.42.* ,," -> ["chat", "room.42.*"]: a name with a comma cannot be typed here.
function parseFilter(text) {
  return text.split(",").map((item) => item.trim()).filter((item) => item !== "");
}

function renderFilter() {
  $("filter-state").textContent = filter.length ? `Showing only: ${filter.join(", ")}.` : "Showing every event.";
  $("latest-empty").textContent = filter.length ? "No event of these names yet." : "No event yet in this tenant.";
}

function onFilter(e) {
  e.preventDefault();
  filter = parseFilter($("filter-events").value);
  $("filter-events").value = filter.join(", ");
  if (filter.length) sessionStorage.setItem(FILTER_KEY, JSON.stringify(filter));
  else sessionStorage.removeItem(FILTER_KEY);
  message($("filter-error"), "");
  renderFilter();
  if (jwt === null) return;
  // The table and the feed held other names: start over from the new filter's snapshot.
  clearEvents();
  startStream();
}

function loadFilter() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(FILTER_KEY) || "[]");
    filter = Array.isArray(stored) ? stored.map(String) : [];
  } catch {
    filter = [];
  }
  $("filter-events").value = filter.join(", ");
  renderFilter();
}

// ---------------------------------------------------------------- who is online

function renderPresence(map) {
  const names = [...map.keys()].sort((a, b) => a.localeCompare(b));
  const rows = names.map((name) => {
    const n = map.get(name);
    return el("li", { "data-username": name, "data-connections": String(n), "data-test": "online-row" },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("span", { class: "name", "data-test": "name", text: name }),
      name === me ? el("span", { class: "you", text: "you" }) : "",
      el("span", { class: "connections", "data-test": "connections", text: plural(n, "connection") }));
  });
  $("online-list").replaceChildren(...rows);
  $("online-count").textContent = `${names.length} online`;
  show($("online-empty"), names.length === 0);
}

function clearPresence(note = "Nobody yet.") {
  $("online-list").replaceChildren();
  $("online-count").textContent = "";
  $("online-empty").textContent = note;
  show($("online-empty"), true);
}

// A server started with presence off refuses presence=true (400, a fatal error for the
// client) and answers GET /presence with 404: asked once, before the first stream, so that
// the stream asks only for what the server gives. Unanswered, it stays unknown and the stream
// asks for presence (the server's default).
async function checkPresence() {
  if (presenceOff !== null) return;
  try {
    const res = await fetch(new URL("presence", BASE), {
      headers: { Authorization: "Bearer " + jwt }, cache: "no-store",
    });
    presenceOff = res.status === 404;
  } catch {
    // a network error: the stream will say so
  }
}

// ---------------------------------------------------------------- session

function clearEvents() {
  latest.clear();
  $("latest-body").replaceChildren();
  renderLatestCount();
  held = [];
  feedTotal = 0;
  $("feed-list").replaceChildren();
  renderFeedCount();
}

function stopStream() {
  if (client) client.close();
  client = null;
}

// resume: carry on from the last event seen (the Reconnect button) instead of starting
// over with the snapshot, which would repeat the feed.
function startStream(resume = false) {
  const lastEventId = resume && client ? client.lastEventId : "";
  stopStream();
  const presence = presenceOff !== true;
  const c = new BrokerClient(new URL("sse", BASE).href, {
    headers: { Authorization: "Bearer " + jwt },
    lastEventId,
    events: filter,
    presence,
  });
  client = c;
  setConn("connecting");
  if (presence) clearPresence();
  else clearPresence("Presence is turned off on this server.");
  // A replaced client may still deliver a late callback; only the current one counts.
  c.addEventListener("open", () => {
    if (client === c) setConn("live");
  });
  c.addEventListener("error", (ev) => {
    if (client !== c) return;
    const what = ev.message || (ev.status ? `HTTP ${ev.status}` : "network error");
    if (ev.fatal || c.readyState === BrokerClient.CLOSED) {
      setConn("stopped", ev.status ? `${what} (HTTP ${ev.status})` : what);
      // A 400 on the stream is the server refusing the filter: say so where it was typed.
      if (ev.status === 400 && filter.length) message($("filter-error"), what, "error");
    } else {
      const wait = ev.retryIn ? `; retrying in ${Math.max(1, Math.round(ev.retryIn / 1000))} s` : "";
      setConn("reconnecting", what + wait);
    }
  });
  c.onAnyEvent((ev) => {
    if (client === c) receive(ev);
  });
  c.onPresence((map) => {
    if (client === c) renderPresence(map);
  });
  return c;
}

async function startSession(token) {
  jwt = token;
  me = null;
  clearEvents();
  show($("login"), false);
  show($("app"), true);
  setConn("connecting");
  await checkPresence();
  if (jwt !== token) return; // logged out meanwhile
  const c = startStream();
  try {
    const who = await c.verify();
    // Logged out meanwhile; a filter applied meanwhile replaced the stream, not the session.
    if (jwt !== token) return;
    me = who.username;
    if (client) renderPresence(client.presence);
    $("whoami").replaceChildren(
      el("span", { class: "who-user", "data-test": "whoami-username", text: who.username }),
      " in tenant ",
      el("span", { class: "who-tenant", "data-test": "whoami-tenant", text: who.tenant_name }),
    );
    show($("whoami-box"), true);
  } catch (err) {
    if (jwt !== token) return;
    if (err && (err.status === 401 || err.status === 403)) {
      // The stored token expired or the user was revoked: start over at the login form.
      logout(`Please log in again: ${err.message}`);
    } else {
      $("whoami").textContent = "could not check who you are: " + errorText(err);
      show($("whoami-box"), true);
    }
  }
}

function logout(note = "") {
  stopStream();
  jwt = null;
  me = null;
  sessionStorage.removeItem(JWT_KEY);
  clearEvents();
  clearPresence();
  // The filter was this session's; the next user starts with every event.
  sessionStorage.removeItem(FILTER_KEY);
  loadFilter();
  message($("filter-error"), "");
  $("whoami").replaceChildren();
  showLoggedOut(note);
  $("login-username").focus();
}

function errorText(err) {
  if (!err) return "unknown error";
  const msg = err.message || String(err);
  return err.status ? `${msg} (HTTP ${err.status})` : msg;
}

async function onLogin(e) {
  e.preventDefault();
  const username = $("login-username").value;
  const password = $("login-password").value;
  const button = $("login-submit");
  button.disabled = true;
  message($("login-error"), "");
  try {
    const token = await BrokerClient.login(BASE.href, username, password);
    sessionStorage.setItem(JWT_KEY, token);
    $("login-password").value = "";
    await startSession(token);
  } catch (err) {
    message($("login-error"), errorText(err), "error");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- events

function receive(ev) {
  const item = { name: ev.type, id: ev.lastEventId, data: ev.data, at: new Date() };
  updateLatest(item);
  if (paused) {
    held.push(item);
    if (held.length > FEED_MAX) held.splice(0, held.length - FEED_MAX);
    renderPaused();
  } else {
    addToFeed(item);
  }
}

function updateLatest({ name, id, data }) {
  const known = latest.get(name);
  if (known && !idAfter(id, known.id)) return;
  latest.set(name, { id, data });
  const body = $("latest-body");
  const row = el("tr", { "data-event-name": name, "data-event-id": id, "data-test": "latest-row" },
    el("td", { class: "name", "data-test": "name", text: name }),
    el("td", { class: "id", "data-test": "id", text: id }),
    el("td", { class: "data-cell" }, dataBlock(data)));
  const old = [...body.rows].find((r) => r.dataset.eventName === name);
  if (old) {
    old.replaceWith(row);
  } else {
    // Rows stay sorted by name so an operator finds one without searching.
    const next = [...body.rows].find((r) => r.dataset.eventName.localeCompare(name) > 0);
    body.insertBefore(row, next ?? null);
  }
  flash(row);
  renderLatestCount();
}

function renderLatestCount() {
  $("latest-count").textContent = plural(latest.size, "name");
  show($("latest-empty"), latest.size === 0);
  show($("latest-table"), latest.size > 0);
}

function addToFeed({ name, id, data, at }) {
  const list = $("feed-list");
  const li = el("li", { "data-event-name": name, "data-event-id": id, "data-test": "feed-row" },
    el("div", { class: "feed-head" },
      el("span", { class: "name", "data-test": "name", text: name }),
      el("span", { class: "id", "data-test": "id", text: "#" + id }),
      el("time", { class: "at", datetime: at.toISOString(), text: at.toLocaleTimeString() })),
    dataBlock(data));
  list.prepend(li);
  while (list.children.length > FEED_MAX) list.lastElementChild.remove();
  feedTotal += 1;
  renderFeedCount();
}

function renderFeedCount() {
  const shown = $("feed-list").children.length;
  $("feed-count").textContent = feedTotal > shown
    ? `${plural(feedTotal, "event")}, last ${shown} shown` : plural(feedTotal, "event");
  show($("feed-empty"), shown === 0);
}

function renderPaused() {
  const note = $("feed-paused");
  show(note, paused);
  note.textContent = held.length
    ? `Paused: ${plural(held.length, "new event")} waiting.` : "Paused: new events wait here.";
}

function togglePause() {
  paused = !paused;
  const b = $("feed-pause");
  b.textContent = paused ? "Resume" : "Pause";
  b.setAttribute("aria-pressed", String(paused));
  if (!paused) {
    const waiting = held;
    held = [];
    for (const item of waiting) addToFeed(item);
  }
  renderPaused();
}

// ---------------------------------------------------------------- insert

// Returns {ok, value} or {ok: false, why}; the message names what to fix.
function parseJson(text, what) {
  if (text.trim() === "") return { ok: false, why: `${what} is empty: type JSON, e.g. {} or null` };
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, why: `${what} is not valid JSON: ${err.message}` };
  }
}

function checkInsertData() {
  const r = parseJson($("insert-data").value, "data");
  message($("insert-json-error"), r.ok ? "" : r.why, r.ok ? "" : "error");
  $("insert-data").setAttribute("aria-invalid", String(!r.ok));
  return r;
}

async function onInsert(e) {
  e.preventDefault();
  const result = $("insert-result");
  const name = $("insert-name").value;
  delete result.dataset.id;
  if (name === "") {
    message(result, "The event name is required.", "error");
    $("insert-name").focus();
    return;
  }
  const data = checkInsertData();
  if (!data.ok) {
    message(result, "");
    $("insert-data").focus();
    return;
  }
  if (!client) return;
  const button = $("insert-submit");
  button.disabled = true;
  message(result, "inserting…");
  try {
    const { id } = await client.insert(name, data.value);
    result.dataset.id = id;
    message(result, `Inserted “${name}” with id ${id}.`, "ok");
  } catch (err) {
    message(result, `Refused: ${errorText(err)}`, "error");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- admin

class AdminError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// POSTs JSON with the admin token in the body; a refusal throws the server's `error` text
// as it came, so the operator reads exactly what the broker said.
async function adminCall(path, fields = {}) {
  let res;
  try {
    res = await fetch(new URL(path, BASE), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ admin_token: adminToken, ...fields }),
      cache: "no-store",
    });
  } catch (err) {
    throw new AdminError(`network error: ${err.message}`, 0);
  }
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!res.ok) {
    const text = body && typeof body.error === "string" ? body.error : `HTTP ${res.status}`;
    throw new AdminError(text, res.status);
  }
  return body;
}

function adminMessage(text, kind) {
  message($("admin-message"), text, kind);
}

async function onAdminUnlock(e) {
  e.preventDefault();
  const token = $("admin-token").value;
  if (token === "") return;
  adminToken = token;
  const button = $("admin-unlock");
  button.disabled = true;
  message($("admin-error"), "");
  try {
    const users = await adminCall("list_users");
    $("admin-token").value = "";
    show($("admin-unlock-form"), false);
    show($("admin-body"), true);
    $("admin-state").textContent = "open";
    renderUsers(users);
    adminMessage("");
  } catch (err) {
    adminToken = null;
    message($("admin-error"), err.message, "error");
  } finally {
    button.disabled = false;
  }
}

function adminLock() {
  adminToken = null;
  $("users-body").replaceChildren();
  show($("admin-body"), false);
  show($("admin-unlock-form"), true);
  $("admin-state").textContent = "locked";
  adminMessage("");
}

async function loadUsers() {
  try {
    renderUsers(await adminCall("list_users"));
    return true;
  } catch (err) {
    adminMessage(err.message, "error");
    return false;
  }
}

function renderUsers(users) {
  const list = Array.isArray(users) ? [...users] : [];
  list.sort((a, b) => String(a.tenant_name).localeCompare(String(b.tenant_name)) ||
                      String(a.username).localeCompare(String(b.username)));
  const rows = list.map((u) => {
    const revoked = u.revoked === true;
    const action = el("button", { type: "button", class: revoked ? "secondary" : "danger",
                                  "data-action": revoked ? "unrevoke" : "revoke",
                                  "data-test": revoked ? "unrevoke" : "revoke",
                                  text: revoked ? "Unrevoke" : "Revoke" });
    action.addEventListener("click", () => setRevoked(u.username, !revoked, action));
    const edit = el("button", { type: "button", class: "secondary", "data-action": "edit",
                                "data-test": "edit", text: "Edit" });
    edit.addEventListener("click", () => {
      $("update-username").value = u.username;
      $("update-form").scrollIntoView({ block: "nearest" });
      $("update-tenant").focus();
    });
    const data = u.data === null || u.data === undefined ? el("span", { class: "muted", text: "—" })
      : dataBlock(JSON.stringify(u.data));
    // data-label names the cell where a phone shows each row as a card (console.css).
    return el("tr", { "data-username": u.username, "data-revoked": String(revoked), "data-test": "user-row" },
      el("td", { class: "name", "data-label": "Username", "data-test": "username", text: u.username }),
      el("td", { "data-label": "Tenant", "data-test": "tenant", text: u.tenant_name ?? "" }),
      el("td", { class: "email", "data-label": "Email", "data-test": "email", text: u.email ?? "—" }),
      el("td", { "data-label": "State" },
         el("span", { class: revoked ? "badge revoked" : "badge active", "data-test": "state",
                      text: revoked ? "revoked" : "active" })),
      el("td", { class: "data-cell", "data-label": "Data" }, data),
      el("td", { class: "actions", "data-label": "" }, action, edit));
  });
  $("users-body").replaceChildren(...rows);
  if (rows.length === 0) {
    $("users-body").append(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "No user yet." })));
  }
}

async function setRevoked(username, revoke, button) {
  button.disabled = true;
  try {
    await adminCall(revoke ? "revoke_user" : "unrevoke_user", { username });
    adminMessage(`${revoke ? "Revoked" : "Unrevoked"} ${username}.`, "ok");
    await loadUsers();
  } catch (err) {
    adminMessage(err.message, "error");
    button.disabled = false;
  }
}

async function onCreate(e) {
  e.preventDefault();
  const fields = {
    username: $("create-username").value,
    password: $("create-password").value,
    tenant_name: $("create-tenant").value,
  };
  const email = $("create-email").value.trim();
  if (email !== "") fields.email = email;
  const dataText = $("create-data").value;
  if (dataText.trim() !== "") {
    const r = parseJson(dataText, "data");
    if (!r.ok) return adminMessage(r.why, "error");
    fields.data = r.value;
  }
  // The broker checks every field; its refusal says which one is wrong.
  const button = $("create-submit");
  button.disabled = true;
  try {
    const u = await adminCall("create_user", fields);
    adminMessage(`Created ${u.username} in tenant ${u.tenant_name}.`, "ok");
    $("create-form").reset();
    await loadUsers();
  } catch (err) {
    adminMessage(err.message, "error");
  } finally {
    button.disabled = false;
  }
}

async function onUpdate(e) {
  e.preventDefault();
  const fields = { username: $("update-username").value };
  const tenant = $("update-tenant").value.trim();
  const password = $("update-password").value;
  const email = $("update-email").value.trim();
  const dataText = $("update-data").value;
  if (tenant !== "") fields.tenant_name = tenant;
  if (password !== "") fields.password = password;
  if ($("update-email-clear").checked) fields.email = "";
  else if (email !== "") fields.email = email;
  if (dataText.trim() !== "") {
    const r = parseJson(dataText, "data");
    if (!r.ok) return adminMessage(r.why, "error");
    fields.data = r.value;
  }
  if (Object.keys(fields).length === 1) {
    return adminMessage("Nothing to change: fill in at least one field besides the username.", "error");
  }
  const button = $("update-submit");
  button.disabled = true;
  try {
    const u = await adminCall("update_user", fields);
    adminMessage(`Updated ${u.username}.`, "ok");
    const keep = $("update-username").value;
    $("update-form").reset();
    $("update-username").value = keep;
    await loadUsers();
  } catch (err) {
    adminMessage(err.message, "error");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- start

function init() {
  // The retry button lives with the state it belongs to; made here to keep the HTML plain.
  const retry = el("button", { type: "button", id: "conn-retry", "data-test": "conn-retry",
                               class: "secondary small", text: "Reconnect" });
  retry.hidden = true;
  retry.addEventListener("click", () => jwt && startStream(true));
  $("conn").append(retry);

  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => logout());
  $("filter-form").addEventListener("submit", onFilter);
  $("insert-form").addEventListener("submit", onInsert);
  $("insert-data").addEventListener("input", checkInsertData);
  $("feed-pause").addEventListener("click", togglePause);
  $("feed-clear").addEventListener("click", () => {
    feedTotal = 0;
    held = [];
    $("feed-list").replaceChildren();
    renderFeedCount();
    renderPaused();
  });
  $("admin-unlock-form").addEventListener("submit", onAdminUnlock);
  $("admin-lock").addEventListener("click", adminLock);
  $("users-refresh").addEventListener("click", async () => {
    if (await loadUsers()) adminMessage("User list refreshed.", "ok");
  });
  $("create-form").addEventListener("submit", onCreate);
  $("update-form").addEventListener("submit", onUpdate);

  renderLatestCount();
  renderFeedCount();
  loadFilter();
  clearPresence();
  const stored = sessionStorage.getItem(JWT_KEY);
  if (stored) {
    startSession(stored);
  } else {
    showLoggedOut();
    $("login-username").focus();
  }
  document.body.dataset.ready = "true"; // tests wait for this before touching the page
}

init();

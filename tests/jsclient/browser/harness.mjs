// The test page's side of tests/jsclient/test_jsclient_browser.py: window.harness wraps one
// BrokerClient; selenium calls it and reads harness.state (and the DOM, which shows the same).
import BrokerClient from "/broker-client.js";

const $ = (id) => document.getElementById(id);
const state = { events: [], errors: [], opens: 0, fetches: [] };
let client = null;

function show() {
  $("state").textContent = client ? ["CONNECTING", "OPEN", "CLOSED"][client.readyState] : "-";
}

window.harness = {
  state,
  login: (base, username, password) => BrokerClient.login(base, username, password),

  // Streams base/sse with a Bearer token. Every connection attempt is recorded with the
  // Last-Event-ID it carries.
  start(base, jwt, options) {
    const fetchAndRecord = (url, init) => {
      state.fetches.push(init.headers["Last-Event-ID"] || null);
      return fetch(url, init);
    };
    client = new BrokerClient(base + "/sse", Object.assign(
      { headers: { Authorization: "Bearer " + jwt }, fetch: fetchAndRecord }, options || {}));
    client.addEventListener("open", () => { state.opens++; show(); });
    client.addEventListener("error", (e) => {
      state.errors.push({ status: e.status, message: e.message, fatal: e.fatal, readyState: client.readyState });
      if (e.fatal) $("error").textContent = "fatal " + e.status + ": " + e.message;
      show();
    });
    client.onAnyEvent((e) => {
      state.events.push([e.type, JSON.parse(e.data), e.lastEventId]);
      const li = document.createElement("li");
      li.textContent = e.lastEventId + " " + e.type + " " + e.data;
      $("events").append(li);
    });
    show();
  },

  verify: () => client.verify(),
  readyState: () => client.readyState,
  latest: () => Object.fromEntries(Array.from(client.latest, ([k, v]) => [k, v])),

  // An insert by another user, from this page, through a client of that user's own.
  async insertAs(base, jwt, event, data) {
    const other = new BrokerClient(base + "/sse", { headers: { Authorization: "Bearer " + jwt } });
    try {
      return await other.insert(event, data);
    } finally {
      other.close();
    }
  },

  close() { client.close(); show(); return client.readyState; },
};
$("ready").textContent = "ready";

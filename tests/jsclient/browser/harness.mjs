// The test page's side of tests/jsclient/test_jsclient_browser.py: window.harness wraps one
// BrokerClient; selenium calls it and reads harness.state (and the DOM, which shows the same).
import BrokerClient from "/broker-client.js";

const $ = (id) => document.getElementById(id);
const state = { events: [], errors: [], opens: 0, fetches: [], xhrs: [], urls: [], transport: null,
                joins: [], leaves: [], presence: null, dollarEvents: 0, lastEventId: null };
let client = null;

// Every XMLHttpRequest the page sends, with the Last-Event-ID it carries (the XHR transport's
// connection attempts, as state.fetches records the fetch transport's).
const xhrOpen = XMLHttpRequest.prototype.open;
const xhrSetHeader = XMLHttpRequest.prototype.setRequestHeader;
const xhrSend = XMLHttpRequest.prototype.send;
XMLHttpRequest.prototype.open = function (method, url, ...rest) {
  this._harness = { url: String(url), lastEventId: null };
  return xhrOpen.call(this, method, url, ...rest);
};
XMLHttpRequest.prototype.setRequestHeader = function (name, value) {
  if (this._harness && name.toLowerCase() === "last-event-id") this._harness.lastEventId = value;
  return xhrSetHeader.call(this, name, value);
};
XMLHttpRequest.prototype.send = function (...args) {
  if (this._harness) {
    state.xhrs.push(this._harness.lastEventId);
    state.urls.push(this._harness.url);
  }
  return xhrSend.apply(this, args);
};

function show() {
  $("state").textContent = client ? ["CONNECTING", "OPEN", "CLOSED"][client.readyState] : "-";
}

window.harness = {
  state,
  login: (base, username, password) => BrokerClient.login(base, username, password),

  // Streams base/sse with a Bearer token. Every connection attempt is recorded with the
  // Last-Event-ID it carries and its URL; with presence, the map and every join and leave.
  start(base, jwt, options) {
    const fetchAndRecord = (url, init) => {
      state.fetches.push(init.headers["Last-Event-ID"] || null);
      state.urls.push(url);
      return fetch(url, init);
    };
    // A fetch of our own would be the transport's choice: left out where the test is the XHR one.
    const xhrTest = window.FETCH_STREAMING_DISABLED || (options && options.transport === "xhr");
    client = new BrokerClient(base + "/sse", Object.assign(
      { headers: { Authorization: "Bearer " + jwt } }, xhrTest ? {} : { fetch: fetchAndRecord }, options || {}));
    state.transport = client.transport;
    client.addEventListener("open", () => { state.opens++; show(); });
    client.addEventListener("error", (e) => {
      state.errors.push({ status: e.status, message: e.message, fatal: e.fatal, readyState: client.readyState });
      if (e.fatal) $("error").textContent = "fatal " + e.status + ": " + e.message;
      show();
    });
    client.onJoin((names) => state.joins.push(names));
    client.onLeave((names) => state.leaves.push(names));
    client.onPresence((map) => {
      state.presence = Object.fromEntries(map);
      state.lastEventId = client.lastEventId;
    });
    client.addEventListener("$presence", () => { state.dollarEvents++; });
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

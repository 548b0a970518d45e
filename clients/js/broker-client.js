/*
 * broker-client.js: the JavaScript client of Broker, for browsers and Node 18+.
 *
 * One ES module, no dependencies, no build step. It reads Broker's event stream (GET /sse) the
 * way a browser's EventSource would, but with what EventSource cannot do: credentials in
 * request headers (never in the URL, where they end up in logs), resuming from a stored event
 * id, a reconnect policy with backoff, and a fatal stop on a refused credential instead of
 * hammering the server with a dead token. It also keeps the latest event of every name (Broker
 * sends them first on connect: the latest event is the schema) and has small helpers for
 * /login, /verify, /insert and /presence.
 *
 * Design:
 *  - Two transports, one parser. With fetch, the response body is read chunk by chunk through
 *    its ReadableStream reader; close() aborts the fetch with an AbortController. Where fetch
 *    gives no readable body (React Native, older browsers), XMLHttpRequest streams instead:
 *    each progress event feeds the parser only the new part of responseText, and since
 *    responseText keeps everything the request received, the request is reopened with
 *    Last-Event-ID once it passes xhrReopenAfter characters, so memory stays bounded. The
 *    transport is chosen once, in the constructor ("auto"), or forced with options.transport.
 *  - Filters and presence ride in the URL: options.events becomes `events=` (each name
 *    percent-encoded on its own, so a comma inside a name is not the list's separator; a
 *    trailing `*`, the prefix mark, stays raw) and options.presence `presence=true`, on every
 *    request, reconnects included. A 400 is fatal as well: the server refused the request
 *    itself (such a filter, presence turned off), and sending it again cannot change that.
 *    Frames whose name starts with `$` are the server's own (no event can be inserted under
 *    such a name): `$presence` keeps the presence map, and none is delivered as an event.
 *    They carry no id, so they never move lastEventId.
 *  - Parsing is EventStreamParser, a small state machine following the HTML standard's
 *    "interpreting an event stream": it keeps the unfinished line across chunks and one flag for
 *    a CR that ended the previous chunk (its LF may start the next one), so a stream split
 *    anywhere (mid-line, mid CRLF, mid UTF-8 sequence) parses as if it came in one piece.
 *  - Reconnect policy: after a network error, an HTTP error other than 401/403, or the end of
 *    the stream, wait and reconnect with Last-Event-ID set to the last id seen; Broker then
 *    replays exactly the events missed. The wait is min(maxRetry, retry * 2^failures), never
 *    less than `retry`, plus a random 0-50% of it (jitter: clients dropped together by a server
 *    restart do not come back together). `retry` is the server's `retry:` field once it sent
 *    one (a server that is shutting down gives each client one of its own, to spread their
 *    returns: the client never comes back sooner), and the failure count restarts at 0 each
 *    time a stream opens. 401 and 403 are fatal: the client
 *    closes and says so in an error event with fatal=true, because retrying a refused credential
 *    cannot succeed.
 */

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 2;

// responseText past this many characters: the XHR transport reopens its request (a few MiB).
const XHR_REOPEN_AFTER = 4 * 1024 * 1024;

const LF = 10;
const CR = 13;
const BOM = 0xfeff;

// React Native has no EventTarget or Event: a small stand-in gives the same listener API.
class ListenerTarget {
  constructor() { this._listeners = new Map(); }
  addEventListener(type, fn) {
    if (!fn) return;
    if (!this._listeners.has(type)) this._listeners.set(type, []);
    const list = this._listeners.get(type);
    if (list.indexOf(fn) < 0) list.push(fn);
  }
  removeEventListener(type, fn) {
    const list = this._listeners.get(type);
    if (list && list.indexOf(fn) >= 0) list.splice(list.indexOf(fn), 1);
  }
  dispatchEvent(event) {
    for (const fn of (this._listeners.get(event.type) || []).slice()) {
      try {
        if (typeof fn === "function") fn.call(this, event); else fn.handleEvent(event);
      } catch (err) { reportLater(err); }
    }
    return true;
  }
}
const EventTargetBase = typeof EventTarget === "function" ? EventTarget : ListenerTarget;
const EventBase = typeof Event === "function" ? Event : class { constructor(type) { this.type = type; } };

/** An HTTP or network failure of a helper (login, verify, insert). status 0 = network. */
export class BrokerError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "BrokerError";
    this.status = status;
    this.body = body === undefined ? null : body;
  }
}

/** A server-sent event, shaped like the browser's MessageEvent: data is the raw string. */
export class BrokerMessageEvent extends EventBase {
  constructor(type, init) {
    super(type);
    this.data = init.data;
    this.lastEventId = init.lastEventId;
    this.origin = init.origin || "";
  }
}

/** The "error" event: status is the HTTP status (0 = network or end of stream). */
export class BrokerErrorEvent extends EventBase {
  constructor(init) {
    super("error");
    this.status = init.status;
    this.message = init.message;
    this.fatal = init.fatal;
    // Milliseconds until the next attempt; null when fatal.
    this.retryIn = init.retryIn === undefined ? null : init.retryIn;
  }
}

/**
 * The WHATWG event-stream parser. Feed it text or bytes in any chunking; it calls
 * onEvent({type, data, lastEventId}) at each blank line that ends an event with data, and
 * onRetry(ms) for a valid `retry:` field. end() discards an unfinished event (the end of a
 * stream never dispatches one) and readies the parser for the next stream; lastEventId
 * survives it, as the standard's "last event ID string" survives reconnections.
 */
export class EventStreamParser {
  constructor(onEvent, onRetry, lastEventId) {
    this.onEvent = onEvent || (() => {});
    this.onRetry = onRetry || (() => {});
    this.onComment = null; // optional: called with each comment's text (keep-alives)
    this.lastEventId = lastEventId || "";
    this._startStream();
  }

  _startStream() {
    // Made at the first chunk of bytes: the XHR transport feeds text, and React Native may
    // have no TextDecoder.
    this._decoder = null;
    this._atStart = true;   // no character of this stream seen yet: a BOM may come
    this._afterCR = false;  // the previous chunk ended with CR: skip an LF opening this one
    this._line = "";        // the unfinished line
    this._data = "";
    this._type = "";
    // An id of an event the previous stream did not finish is dropped with that event; like
    // browsers, a new stream's id buffer starts from the last id committed.
    this._idBuffer = this.lastEventId;
  }

  feed(chunk) {
    if (typeof chunk !== "string" && this._decoder === null) {
      // ignoreBOM: the decoder passes U+FEFF through, so exactly one leading BOM is dropped here.
      this._decoder = new TextDecoder("utf-8", { ignoreBOM: true });
    }
    const text = typeof chunk === "string" ? chunk : this._decoder.decode(chunk, { stream: true });
    let i = 0;
    const n = text.length;
    if (n === 0) return;
    if (this._atStart) {
      this._atStart = false;
      if (text.charCodeAt(0) === BOM) i = 1;
    }
    if (this._afterCR && i < n) {
      this._afterCR = false;
      if (text.charCodeAt(i) === LF) i++;
    }
    while (i < n) {
      let j = i;
      let c = 0;
      while (j < n) {
        c = text.charCodeAt(j);
        if (c === LF || c === CR) break;
        j++;
      }
      if (j === n) { // no line end in the rest of this chunk: keep it for the next one
        this._line += text.slice(i);
        return;
      }
      const line = this._line + text.slice(i, j);
      this._line = "";
      i = j + 1;
      if (c === CR) {
        if (i < n) {
          if (text.charCodeAt(i) === LF) i++;
        } else {
          this._afterCR = true;
        }
      }
      this._processLine(line);
    }
  }

  end() {
    this._startStream();
  }

  _processLine(line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* ":" */) {
      if (this.onComment) this.onComment(line.slice(1));
      return;
    }
    let field = line;
    let value = "";
    const colon = line.indexOf(":");
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32 /* " " */) value = value.slice(1);
    }
    switch (field) {
      case "event":
        this._type = value;
        break;
      case "data":
        this._data += value + "\n";
        break;
      case "id":
        if (value.indexOf("\0") < 0) this._idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
        break;
      default: // unknown fields are ignored
    }
  }

  _dispatch() {
    // The id is committed even by an event without data, which is then not dispatched.
    this.lastEventId = this._idBuffer;
    if (this._data === "") {
      this._type = "";
      return;
    }
    const data = this._data.slice(0, -1);
    const type = this._type || "message";
    this._data = "";
    this._type = "";
    this.onEvent({ type, data, lastEventId: this.lastEventId });
  }
}

// The URL resolved against the page, where there is one; as given where URL cannot (React
// Native's URL implements little).
function absoluteUrl(url) {
  try {
    return new URL(url, typeof location !== "undefined" ? location.href : undefined).href;
  } catch (_) {
    return String(url);
  }
}

// The sse URL with its last path segment "sse", query and fragment removed.
function baseFromSseUrl(url) {
  return absoluteUrl(url).replace(/[?#].*$/, "").replace(/\/sse\/?$/, "").replace(/\/+$/, "");
}

function originOf(url) {
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)/i.exec(absoluteUrl(url));
  return m ? m[1].toLowerCase() : "";
}

// Whether fetch can stream a response body here (not in React Native, nor older browsers).
function fetchCanStream() {
  return typeof globalThis.fetch === "function" && typeof ReadableStream === "function" &&
    typeof Response === "function" && "body" in Response.prototype &&
    typeof ReadableStream.prototype.getReader === "function";
}

function chooseTransport(opts) {
  const asked = opts.transport === undefined ? "auto" : opts.transport;
  if (asked === "fetch" || asked === "xhr") return asked;
  if (asked !== "auto") throw new TypeError('options.transport: "auto", "fetch" or "xhr", not ' + JSON.stringify(asked));
  // A fetch of the caller's is the caller's choice; without one, the platform decides.
  if (opts.fetch || fetchCanStream()) return "fetch";
  return typeof XMLHttpRequest === "function" ? "xhr" : "fetch";
}

// options.headers as a plain object; a Headers object or an array of pairs is copied too.
function plainHeaders(headers) {
  const out = {};
  if (!headers) return out;
  if (Array.isArray(headers) || (typeof Headers !== "undefined" && headers instanceof Headers)) {
    new Headers(headers).forEach((value, name) => { out[name] = value; });
  } else {
    Object.assign(out, headers);
  }
  return out;
}

// options.events as the value of the `events` query parameter, or null for every event. The
// server splits the raw value on ',' before it percent-decodes each item, so each name is
// encoded on its own: a comma inside a name travels as %2C. A trailing '*' marks a prefix and
// must stay raw; any other '*' is sent as %2A, which the server keeps as a star of the name
// (encodeURIComponent leaves '*' alone).
function eventsQuery(events) {
  if (events === undefined || events === null) return null;
  let names;
  if (typeof events === "string") names = [events];
  else if (Array.isArray(events)) names = events.map(String);
  else throw new TypeError("options.events: an array of event names (or one name), not " + typeof events);
  if (names.length === 0) return null;
  return names.map((name) => {
    const prefix = name.endsWith("*");
    const exact = prefix ? name.slice(0, -1) : name;
    return encodeURIComponent(exact).replace(/\*/g, "%2A") + (prefix ? "*" : "");
  }).join(",");
}

// url with the query parameters (already encoded "k=v" strings) added; a fragment, which a
// request never sends, is dropped.
function withQuery(url, params) {
  if (params.length === 0) return url;
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  const sep = base.indexOf("?") < 0 ? "?" : /[?&]$/.test(base) ? "" : "&";
  return base + sep + params.join("&");
}

// Statuses of the stream that stop the client: a refused credential (401, 403), or a request
// the server refused as it is (400: a bad `events` filter, presence turned off). Retrying the
// same request cannot succeed.
function fatalStatus(status) {
  return status === 400 || status === 401 || status === 403;
}

function defaultFetch(input, init) {
  return globalThis.fetch(input, init); // called through globalThis: browsers refuse an unbound fetch
}

function reportLater(err) {
  // A listener's exception must not stop the stream; surface it the way the platform does.
  if (typeof reportError === "function") reportError(err);
  else setTimeout(() => { throw err; }, 0);
}

// The error of a failed answer's text: Broker's {"error": "..."} or the start of the body.
function errorOfText(text, status, statusText) {
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  const message = body && typeof body === "object" && typeof body.error === "string"
    ? body.error
    : (text.slice(0, 200) || statusText || "HTTP " + status);
  return { body, message };
}

async function errorOf(res) {
  let text = "";
  try { text = await res.text(); } catch (_) { /* the body could not be read: status only */ }
  return errorOfText(text, res.status, res.statusText);
}

async function requestJson(fetchFn, method, url, headers, payload) {
  const init = { method, headers: Object.assign({}, headers) };
  if (payload !== undefined) {
    for (const name of Object.keys(init.headers)) {
      if (name.toLowerCase() === "content-type") delete init.headers[name];
    }
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(payload);
  }
  let res;
  try {
    res = await fetchFn(url, init);
  } catch (err) {
    throw new BrokerError(0, "network error: " + (err && err.message ? err.message : String(err)), null);
  }
  if (!res.ok) {
    const { body, message } = await errorOf(res);
    throw new BrokerError(res.status, message, body);
  }
  try {
    return await res.json();
  } catch (err) {
    throw new BrokerError(res.status, "the answer is not JSON", null);
  }
}

export class BrokerClient extends EventTargetBase {
  /**
   * @param url     the /sse URL (absolute, or relative to the page in a browser)
   * @param options headers, lastEventId, fetch, retry (ms, default 3000), maxRetry (ms, default
   *                30000), idleTimeout (ms, default 0 = off: reconnect when nothing, not even a
   *                keep-alive, arrived for that long), transport ("auto", "fetch" or "xhr"),
   *                xhrReopenAfter (characters, default 4 MiB), events (names, or prefixes
   *                ending in `*`, the server is to send; all when left out), presence (true:
   *                keep client.presence, the tenant's users online)
   */
  constructor(url, options) {
    super();
    const opts = options || {};
    this.url = String(url);
    this.baseUrl = baseFromSseUrl(this.url);
    this._headers = plainHeaders(opts.headers);
    // A Last-Event-ID among the headers is a starting point like options.lastEventId; the
    // client sends its own from then on, never two.
    let startId = opts.lastEventId === undefined || opts.lastEventId === null ? "" : String(opts.lastEventId);
    for (const name of Object.keys(this._headers)) {
      if (name.toLowerCase() !== "last-event-id") continue;
      if (!startId) startId = String(this._headers[name]);
      delete this._headers[name];
    }
    if (opts.presence !== undefined && typeof opts.presence !== "boolean") {
      throw new TypeError("options.presence: true or false, not " + JSON.stringify(opts.presence));
    }
    const query = [];
    const events = eventsQuery(opts.events);
    if (events !== null) query.push("events=" + events);
    if (opts.presence) query.push("presence=true");
    // What every request of the stream asks for; this.url stays as given.
    this._streamUrl = withQuery(this.url, query);
    this._fetch = opts.fetch || defaultFetch;
    this.transport = chooseTransport(opts);
    this._xhrReopenAfter = opts.xhrReopenAfter || XHR_REOPEN_AFTER;
    this._retry = opts.retry === undefined ? 3000 : opts.retry;
    this._maxRetry = opts.maxRetry === undefined ? 30000 : opts.maxRetry;
    this._idleTimeout = opts.idleTimeout || 0;
    this._readyState = CONNECTING;
    this._failures = 0;
    this._abort = null;
    this._wakeUp = null;
    this._anyListeners = new Set();
    this.latest = new Map();
    // Username -> connections, from the server's `$presence` frames (options.presence). One
    // Map for the client's life, changed in place, so a reference to it stays current.
    this.presence = new Map();
    this._presenceListeners = { join: new Set(), leave: new Set(), presence: new Set() };
    this._presenceListed = false; // a list came already: later lists are compared with the map
    this._parser = new EventStreamParser(
      (ev) => this._deliver(ev),
      (ms) => { this._retry = ms; },
      startId);
    // Start after the constructor returns, so listeners added right after `new` see everything.
    Promise.resolve().then(() => this._run()).catch(reportLater);
  }

  get readyState() { return this._readyState; }
  get lastEventId() { return this._parser.lastEventId; }

  /** Calls fn(event) for every event of the stream, whatever its name. Returns an unsubscribe. */
  onAnyEvent(fn) {
    this._anyListeners.add(fn);
    return () => { this._anyListeners.delete(fn); };
  }

  /**
   * Calls fn(usernames) when users of the tenant come online (presence: true): those a
   * `$presence` frame announces, and after a reconnect those in the server's list that the map
   * lacked. Returns an unsubscribe. A method rather than an event type of addEventListener:
   * those types are the stream's event names, and "join" is a name applications use.
   */
  onJoin(fn) { return this._addPresenceListener("join", fn); }

  /** Calls fn(usernames) when users go offline; as onJoin. Returns an unsubscribe. */
  onLeave(fn) { return this._addPresenceListener("leave", fn); }

  /**
   * Calls fn(presence), the client.presence Map, after each list the server sends (on every
   * connect) and each change of the map. Returns an unsubscribe.
   */
  onPresence(fn) { return this._addPresenceListener("presence", fn); }

  _addPresenceListener(kind, fn) {
    const set = this._presenceListeners[kind];
    set.add(fn);
    return () => { set.delete(fn); };
  }

  /** Stops for good: aborts the stream and any pending reconnect. */
  close() {
    this._readyState = CLOSED;
    if (this._abort) this._abort.abort();
    if (this._wakeUp) this._wakeUp();
  }

  /** GET /verify with this client's headers: {username, tenant_name}. */
  verify() {
    return requestJson(this._fetch, "GET", this.baseUrl + "/verify", this._headers);
  }

  /** GET /presence with this client's headers: {users: [{username, connections}]}. */
  getPresence() {
    return requestJson(this._fetch, "GET", this.baseUrl + "/presence", this._headers);
  }

  /** POST /insert with this client's headers: {id}. */
  insert(event, data) {
    return requestJson(this._fetch, "POST", this.baseUrl + "/insert", this._headers, { event, data });
  }

  /** POST /login: the JWT. options.fetch replaces the global fetch. */
  static async login(baseUrl, username, password, options) {
    const fetchFn = (options && options.fetch) || defaultFetch;
    const url = String(baseUrl).replace(/\/+$/, "") + "/login";
    const body = await requestJson(fetchFn, "POST", url, {}, { username, password });
    if (!body || typeof body.jwt !== "string") throw new BrokerError(200, "the answer has no jwt", body);
    return body.jwt;
  }

  _deliver(ev) {
    if (this._readyState === CLOSED) return; // a listener closed the client mid-chunk
    if (ev.type.charCodeAt(0) === 36 /* "$" */) {
      // The server's own frame, never an event of the tenant's; one this client does not know
      // (a later server's) is skipped.
      if (ev.type === "$presence") this._presenceFrame(ev.data);
      return;
    }
    const event = new BrokerMessageEvent(ev.type, { data: ev.data, lastEventId: ev.lastEventId, origin: this._origin });
    // delete + set: the Map iterates from the least to the most recently updated name.
    this.latest.delete(ev.type);
    this.latest.set(ev.type, { type: ev.type, data: ev.data, lastEventId: ev.lastEventId });
    this.dispatchEvent(event);
    for (const fn of Array.from(this._anyListeners)) {
      try { fn(event); } catch (err) { reportLater(err); }
    }
  }

  // A `$presence` frame: {"users": [{username, connections}]}, the whole list, first on each
  // connect; then {"join": [usernames], "leave": [usernames]}, which carry no counts (a user
  // who joins has one connection as far as the client can tell).
  _presenceFrame(text) {
    let frame;
    try { frame = JSON.parse(text); } catch (_) { return; }
    if (!frame || typeof frame !== "object") return;
    const map = this.presence;
    const joined = [];
    const left = [];
    let listed = false;
    if (Array.isArray(frame.users)) {
      const next = new Map();
      for (const u of frame.users) {
        if (u && typeof u.username === "string") {
          next.set(u.username, typeof u.connections === "number" ? u.connections : 1);
        }
      }
      // The first list is where the client starts from, not news; a later one (a reconnect)
      // tells who came and went while the stream was away.
      if (this._presenceListed) {
        for (const name of next.keys()) if (!map.has(name)) joined.push(name);
        for (const name of map.keys()) if (!next.has(name)) left.push(name);
      }
      map.clear();
      for (const [name, n] of next) map.set(name, n);
      this._presenceListed = true;
      listed = true;
    }
    for (const name of Array.isArray(frame.join) ? frame.join : []) {
      if (typeof name === "string" && !map.has(name)) {
        map.set(name, 1);
        joined.push(name);
      }
    }
    for (const name of Array.isArray(frame.leave) ? frame.leave : []) {
      if (typeof name === "string" && map.delete(name)) left.push(name);
    }
    if (joined.length > 0) this._emitPresence("join", joined);
    if (left.length > 0) this._emitPresence("leave", left);
    if (listed || joined.length > 0 || left.length > 0) this._emitPresence("presence", map);
  }

  _emitPresence(kind, arg) {
    for (const fn of Array.from(this._presenceListeners[kind])) {
      try { fn(kind === "presence" ? arg : arg.slice()); } catch (err) { reportLater(err); }
    }
  }

  _fail(status, message, fatal, retryIn) {
    this._readyState = fatal ? CLOSED : CONNECTING;
    this.dispatchEvent(new BrokerErrorEvent({ status, message, fatal, retryIn }));
  }

  _nextDelay() {
    // At least 1 ms to double from: a retry of 0 must still back off, not spin.
    const base = Math.max(1, this._retry);
    // Never sooner than the server's retry, even past maxRetry: a server that spreads its
    // clients' returns (a drain) counts on it.
    const full = Math.max(base, Math.min(this._maxRetry, base * Math.pow(2, this._failures)));
    this._failures = Math.min(this._failures + 1, 30);
    return Math.round(full + Math.random() * (full / 2));
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() { clearTimeout(timer); resolve(); }
      this._wakeUp = done;
    }).then(() => { this._wakeUp = null; });
  }

  async _run() {
    while (this._readyState !== CLOSED) {
      const outcome = this.transport === "xhr" ? await this._connectOnceXhr() : await this._connectOnce();
      if (this._readyState === CLOSED) return;
      if (outcome.reopen) continue; // the XHR transport's bound: no error, no wait
      if (outcome.fatal) {
        this._fail(outcome.status, outcome.message, true, null);
        return;
      }
      const delay = this._nextDelay();
      this._fail(outcome.status, outcome.message, false, delay);
      if (this._readyState === CLOSED) return; // an error listener closed the client
      await this._sleep(delay);
    }
  }

  // One connection, from the request to the end of its stream: {status, message, fatal}.
  async _connectOnce() {
    this._readyState = CONNECTING;
    const ctrl = new AbortController();
    this._abort = ctrl;
    let idleTimer = null;
    let idle = false;
    const armIdle = () => {
      if (!this._idleTimeout) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => { idle = true; ctrl.abort(); }, this._idleTimeout);
    };
    try {
      const headers = Object.assign({ Accept: "text/event-stream" }, this._headers);
      if (this._parser.lastEventId) headers["Last-Event-ID"] = this._parser.lastEventId;
      armIdle();
      const res = await this._fetch(this._streamUrl, { method: "GET", headers, signal: ctrl.signal });
      if (fatalStatus(res.status)) {
        const { message } = await errorOf(res);
        return { status: res.status, message, fatal: true };
      }
      if (!res.ok || !res.body) {
        const { message } = await errorOf(res);
        return { status: res.status, message, fatal: false };
      }
      const ctype = (res.headers.get("content-type") || "").toLowerCase();
      if (ctype.split(";")[0].trim() !== "text/event-stream") {
        try { await res.body.cancel(); } catch (_) { /* nothing to free */ }
        return { status: res.status, message: "not an event stream: " + (ctype || "no Content-Type"), fatal: false };
      }
      this._origin = originOf(res.url || this.url);
      this._readyState = OPEN;
      this._failures = 0;
      this.dispatchEvent(new EventBase("open"));
      const reader = res.body.getReader();
      for (;;) {
        armIdle();
        const { value, done } = await reader.read();
        if (done) break;
        if (this._readyState === CLOSED) break;
        this._parser.feed(value);
      }
      return { status: 0, message: "the stream ended", fatal: false };
    } catch (err) {
      if (idle) return { status: 0, message: "no data for " + this._idleTimeout + " ms", fatal: false };
      return { status: 0, message: "network error: " + (err && err.message ? err.message : String(err)), fatal: false };
    } finally {
      clearTimeout(idleTimer);
      this._parser.end();
      if (this._abort === ctrl) this._abort = null;
    }
  }

  // One XMLHttpRequest, from its open to its end, or to the reopen once responseText passed
  // the bound: {status, message, fatal} as _connectOnce, or {reopen: true}.
  _connectOnceXhr() {
    this._readyState = CONNECTING;
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      let fed = 0; // characters of responseText already given to the parser
      const startId = this._parser.lastEventId;
      let opened = false;
      let settled = false;
      let idleTimer = null;
      const finish = (outcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(idleTimer);
        xhr.onreadystatechange = xhr.onprogress = xhr.onload = xhr.onerror = xhr.ontimeout = null;
        if (xhr.readyState !== 4) xhr.abort();
        this._parser.end();
        if (this._abort === handle) this._abort = null;
        resolve(outcome);
      };
      const handle = { abort: () => finish({ status: 0, message: "closed", fatal: false }) };
      this._abort = handle;
      const armIdle = () => {
        if (!this._idleTimeout) return;
        clearTimeout(idleTimer);
        idleTimer = setTimeout(() => finish({ status: 0, message: "no data for " + this._idleTimeout + " ms", fatal: false }),
          this._idleTimeout);
      };
      const failed = () => {
        const { message } = errorOfText(xhr.responseText || "", xhr.status, xhr.statusText);
        return { status: xhr.status, message, fatal: fatalStatus(xhr.status) };
      };
      // Headers are in: open the stream, or wait for the whole (small) error body.
      const onHeaders = () => {
        if (opened || xhr.status !== 200) return;
        const ctype = (xhr.getResponseHeader("Content-Type") || "").toLowerCase();
        if (ctype.split(";")[0].trim() !== "text/event-stream") {
          finish({ status: xhr.status, message: "not an event stream: " + (ctype || "no Content-Type"), fatal: false });
          return;
        }
        opened = true;
        this._origin = originOf(xhr.responseURL || this.url);
        this._readyState = OPEN;
        this._failures = 0;
        this.dispatchEvent(new EventBase("open"));
      };
      const consume = () => {
        if (settled) return;
        if (!opened) onHeaders();
        if (!opened) return;
        armIdle();
        const text = xhr.responseText;
        if (text.length > fed) {
          const fresh = text.slice(fed);
          fed = text.length;
          this._parser.feed(fresh);
        }
        // An event cut at the bound is dropped by the parser's end() and comes again after
        // Last-Event-ID, the id of the last whole event. Only once this request has moved
        // that id on: a bound smaller than one event must not reopen the same request forever.
        if (!settled && this._readyState !== CLOSED && fed >= this._xhrReopenAfter &&
            this._parser.lastEventId !== startId) finish({ reopen: true });
      };
      xhr.onreadystatechange = () => {
        if (xhr.readyState === 2) onHeaders();
        else if (xhr.readyState === 3) consume();
      };
      xhr.onprogress = consume;
      xhr.onload = () => {
        if (xhr.status === 200) {
          consume();
          if (!settled) finish({ status: 0, message: "the stream ended", fatal: false });
        } else {
          finish(failed());
        }
      };
      xhr.onerror = () => finish({ status: 0, message: "network error", fatal: false });
      try {
        xhr.open("GET", this._streamUrl, true);
        const headers = Object.assign({ Accept: "text/event-stream" }, this._headers);
        if (this._parser.lastEventId) headers["Last-Event-ID"] = this._parser.lastEventId;
        for (const name of Object.keys(headers)) xhr.setRequestHeader(name, headers[name]);
        armIdle();
        xhr.send();
      } catch (err) {
        finish({ status: 0, message: "network error: " + (err && err.message ? err.message : String(err)), fatal: false });
      }
    });
  }
}

BrokerClient.CONNECTING = CONNECTING;
BrokerClient.OPEN = OPEN;
BrokerClient.CLOSED = CLOSED;

export default BrokerClient;

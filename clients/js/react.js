/*
 * react.js: useBroker, a React hook over BrokerClient (import from "broker-client/react").
 *
 *   const { latest, presence, state, error, client } = useBroker(url, { headers, events, presence: true });
 *
 * The component re-renders on each event with `latest`, the latest event of every name (Broker
 * sends them first on connect, then live ones: the latest event is the state), on each change
 * of the connection's state, and with presence: true on each change of who is online. The
 * stream opens when the component mounts, closes when it unmounts, and is reopened, from a
 * fresh snapshot, when the URL, the headers (the credentials), the event names or presence
 * change. The event names go to the server (BrokerClient's `events`), which sends only those:
 * the hook itself filters nothing. React 18 is a peer dependency; nothing else is needed.
 *
 * Why state is kept here rather than read from client.latest: a render must see a value that
 * changes identity when an event arrives, or React would not re-render; each event makes a new
 * `latest` object with the one name replaced.
 */
import React from "react";
import BrokerClient from "./broker-client.js";

const IDLE = { latest: {}, presence: {}, state: "closed", error: null, lastEventId: "", client: null };

// A value that changes when the headers change, whatever their form or key order.
function headersKey(headers) {
  if (!headers) return "";
  let pairs;
  if (Array.isArray(headers)) pairs = headers.map(([k, v]) => [String(k).toLowerCase(), String(v)]);
  else if (typeof headers.forEach === "function" && typeof headers.get === "function") {
    pairs = [];
    headers.forEach((v, k) => pairs.push([k.toLowerCase(), v]));
  } else pairs = Object.keys(headers).map((k) => [k.toLowerCase(), String(headers[k])]);
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return JSON.stringify(pairs);
}

function eventsList(events) {
  if (events === undefined || events === null) return [];
  return (Array.isArray(events) ? events : [events]).map(String);
}

function parsed(data) {
  try { return JSON.parse(data); } catch (_) { return data; }
}

/**
 * @param url     the /sse URL; null or "" keeps the stream closed (e.g. before a login)
 * @param options headers (the credentials), events (the names the server is to send, exact or
 *                by prefix with a trailing `*`; all when left out), presence (true: who is
 *                online, in `presence`), and any BrokerClient option (lastEventId, retry,
 *                maxRetry, idleTimeout, transport, fetch), read when the stream opens
 * @returns {latest, presence, state, error, lastEventId, client}: latest maps each event name
 *          to {type, data (parsed JSON), raw (the text), id}; presence maps each username
 *          online to its connections ({} without presence: true); state is "connecting", "open" or
 *          "closed"; error is the last {status, message, fatal} since the stream opened, or
 *          null; client is the BrokerClient (for insert() and verify()), null while closed
 */
export function useBroker(url, options) {
  const opts = options || {};
  const key = headersKey(opts.headers);
  // JSON, not a join on ",": a comma may be part of a name.
  const namesKey = JSON.stringify(eventsList(opts.events));
  const presence = opts.presence === true;
  const [snap, setSnap] = React.useState(IDLE);
  // The options of the render that (re)opens the stream; other options changing alone do not
  // reopen it.
  const optsRef = React.useRef(opts);
  optsRef.current = opts;

  React.useEffect(() => {
    if (!url) {
      setSnap(IDLE);
      return undefined;
    }
    // events and presence as the render that opens the stream has them (the keys above).
    const clientOptions = Object.assign({}, optsRef.current, { events: JSON.parse(namesKey), presence });
    const client = new BrokerClient(url, clientOptions);
    let live = true;
    const update = (fn) => { if (live) setSnap(fn); };
    setSnap({ latest: {}, presence: {}, state: "connecting", error: null, lastEventId: "", client });
    client.addEventListener("open", () => update((s) => Object.assign({}, s, { state: "open", error: null })));
    client.addEventListener("error", (e) => update((s) => Object.assign({}, s, {
      state: e.fatal ? "closed" : "connecting",
      error: { status: e.status, message: e.message, fatal: e.fatal },
    })));
    client.onAnyEvent((ev) => update((s) => Object.assign({}, s, {
      latest: Object.assign({}, s.latest, {
        [ev.type]: { type: ev.type, data: parsed(ev.data), raw: ev.data, id: ev.lastEventId },
      }),
      lastEventId: ev.lastEventId,
    })));
    // A new object on each change, as for latest, so that React re-renders.
    client.onPresence((map) => update((s) => Object.assign({}, s, { presence: Object.fromEntries(map) })));
    return () => {
      live = false;
      client.close();
    };
    // The keys stand for the headers and event names: the effect depends on their values, not
    // on the objects' identity.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [url, key, namesKey, presence]);

  return snap;
}

export default useBroker;

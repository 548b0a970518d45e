// TypeScript declarations of broker-client.js, the JavaScript client of Broker.
// Everything the module exports is declared here; see README.md for how to use it.

/** What a BrokerClient takes besides its URL. */
export interface BrokerClientOptions {
  /** Request headers of the stream and of verify()/insert(), e.g. { Authorization: "Bearer " + jwt }. */
  headers?: Record<string, string> | Headers | Array<[string, string]>;
  /** Resume after this event id instead of starting from the snapshot. */
  lastEventId?: string;
  /** A fetch to use instead of the global one. */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
  /** Initial reconnect delay in ms (default 3000); the server's `retry:` field replaces it. */
  retry?: number;
  /** Cap of the exponential backoff in ms (default 30000), before the 0-50% jitter; never below the server's `retry:`. */
  maxRetry?: number;
  /** Reconnect when nothing (not even a keep-alive) arrived for this many ms; 0 (default) = never. */
  idleTimeout?: number;
  /**
   * How the stream is read: "fetch" (a ReadableStream body), "xhr" (XMLHttpRequest progress
   * events, for React Native and browsers whose fetch gives no readable body), or "auto"
   * (default): fetch where it can stream or when `fetch` is given, XHR otherwise.
   */
  transport?: "auto" | "fetch" | "xhr";
  /**
   * XHR transport: once its responseText passes this many characters (default 4 MiB), the
   * request is reopened with Last-Event-ID, so memory stays bounded. Nothing is missed.
   */
  xhrReopenAfter?: number;
  /**
   * The event names the server is to send, in the snapshot, live and in a Last-Event-ID
   * replay: exact names, or prefixes ending in `*` ("room.42.*"); `"*"` alone is every event.
   * All events when left out or empty. Sent as the `events` query parameter of every request,
   * each name percent-encoded (a comma inside a name is fine). A filtered stream's ids keep the
   * tenant's sequence, so they have gaps. A name the server refuses (one starting with `$`, or
   * with control characters, or over 256 bytes; over 64 names) is a fatal 400.
   */
  events?: string | string[];
  /**
   * true: ask for presence (`presence=true`) and keep `presence`, the tenant's users online,
   * up to date (onJoin, onLeave, onPresence). A server started with presence off answers a
   * fatal 400.
   */
  presence?: boolean;
}

/** One user online, as GET /presence lists them. */
export interface PresenceUser {
  username: string;
  /** The user's open streams, across the deployment. */
  connections: number;
}

/** The latest event of one name, as kept in BrokerClient.latest. */
export interface LatestEvent {
  type: string;
  /** The event's data: Broker sends compact JSON, so JSON.parse(data) gives the value. */
  data: string;
  lastEventId: string;
}

/** A failed helper call (login, verify, insert). */
export class BrokerError extends Error {
  constructor(status: number, message: string, body?: unknown);
  readonly name: "BrokerError";
  /** The HTTP status; 0 for a network error. */
  status: number;
  /** The parsed error body ({"error": "..."} from Broker), the raw text, or null. */
  body: unknown;
}

/** A server-sent event, shaped like the browser's MessageEvent. */
export class BrokerMessageEvent extends Event {
  constructor(type: string, init: { data: string; lastEventId: string; origin?: string });
  readonly data: string;
  readonly lastEventId: string;
  readonly origin: string;
}

/** The "error" event of a BrokerClient. */
export class BrokerErrorEvent extends Event {
  constructor(init: { status: number; message: string; fatal: boolean; retryIn?: number | null });
  /** The HTTP status; 0 for a network error or the end of the stream. */
  readonly status: number;
  readonly message: string;
  /**
   * True on 401/403 (a refused credential) and 400 (a request the server refuses as it is: a
   * bad `events` filter, presence turned off): the client has closed for good (readyState CLOSED).
   */
  readonly fatal: boolean;
  /** Milliseconds until the next attempt; null when fatal. */
  readonly retryIn: number | null;
}

/** The WHATWG event-stream parser the client uses; exported for reuse and tests. */
export class EventStreamParser {
  constructor(
    onEvent?: (ev: { type: string; data: string; lastEventId: string }) => void,
    onRetry?: ((ms: number) => void) | null,
    lastEventId?: string,
  );
  onEvent: (ev: { type: string; data: string; lastEventId: string }) => void;
  onRetry: (ms: number) => void;
  /** Called with the text of each comment line (after the colon). */
  onComment: ((text: string) => void) | null;
  /** The last event id committed (it survives end()). */
  lastEventId: string;
  /** Feed a chunk of the stream, as text or UTF-8 bytes, split anywhere. */
  feed(chunk: string | Uint8Array): void;
  /** The stream ended: drop an unfinished event, ready for the next stream. */
  end(): void;
}

interface BrokerClientEventMap {
  open: Event;
  error: BrokerErrorEvent;
}

export class BrokerClient extends EventTarget {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSED: 2;

  /** Starts streaming `url` (the /sse URL) at once. */
  constructor(url: string | URL, options?: BrokerClientOptions);

  /** The /sse URL given. */
  readonly url: string;
  /** The transport chosen in the constructor. */
  readonly transport: "fetch" | "xhr";
  /** The URL without its last path segment "sse", query and fragment; the helpers' base. */
  readonly baseUrl: string;
  /** 0 CONNECTING, 1 OPEN, 2 CLOSED. */
  readonly readyState: 0 | 1 | 2;
  /** The id of the last event received (or the starting id). */
  readonly lastEventId: string;
  /** Event name -> its latest event, from the least to the most recently updated name. */
  readonly latest: Map<string, LatestEvent>;
  /**
   * With `presence: true`: username -> open streams, the tenant's users online. The server's
   * list replaces it on every connect; a join adds a user (1 connection, as far as the client
   * can tell, until the next list), a leave removes one. Empty until the first list. The same
   * Map for the client's life, changed in place.
   */
  readonly presence: Map<string, number>;

  addEventListener<K extends keyof BrokerClientEventMap>(
    type: K, listener: (ev: BrokerClientEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(
    type: string, listener: (ev: BrokerMessageEvent) => void, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof BrokerClientEventMap>(
    type: K, listener: (ev: BrokerClientEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(
    type: string, listener: (ev: BrokerMessageEvent) => void, options?: boolean | EventListenerOptions): void;

  /** Calls fn for every event of the stream, whatever its name; returns the unsubscribe. */
  onAnyEvent(fn: (ev: BrokerMessageEvent) => void): () => void;
  /**
   * Calls fn with the usernames that came online (presence: true): those the server announces,
   * and after a reconnect those its list has that `presence` lacked (not after the first list,
   * the starting point). Returns the unsubscribe.
   */
  onJoin(fn: (usernames: string[]) => void): () => void;
  /** Calls fn with the usernames that went offline, as onJoin. Returns the unsubscribe. */
  onLeave(fn: (usernames: string[]) => void): () => void;
  /**
   * Calls fn with `presence` after each list the server sends (one per connect) and each
   * change of the map. Returns the unsubscribe.
   */
  onPresence(fn: (presence: Map<string, number>) => void): () => void;
  /** Stops for good: aborts the stream and any pending reconnect. */
  close(): void;
  /** GET /verify with this client's headers. */
  verify(): Promise<{ username: string; tenant_name: string }>;
  /** GET /presence with this client's headers: the tenant's users online. */
  getPresence(): Promise<{ users: PresenceUser[] }>;
  /** POST /insert {event, data} with this client's headers. */
  insert(event: string, data: unknown): Promise<{ id: string }>;

  /** POST /login: the JWT. Throws BrokerError. */
  static login(
    baseUrl: string | URL, username: string, password: string,
    options?: { fetch?: (input: string, init: RequestInit) => Promise<Response> },
  ): Promise<string>;
}

export default BrokerClient;

// TypeScript declarations of react.js: useBroker, the React hook of broker-client
// (import { useBroker } from "broker-client/react"). React 18 is a peer dependency.
import type { BrokerClient, BrokerClientOptions } from "./broker-client.js";

/** The latest event of one name, as the hook gives it. */
export interface BrokerHookEvent {
  type: string;
  /** The event's data, parsed (Broker sends JSON); the text itself where it does not parse. */
  data: unknown;
  /** The data as received. */
  raw: string;
  /** The event's id. */
  id: string;
}

export interface UseBrokerOptions extends BrokerClientOptions {
  /**
   * The event names the server is to send, and so the names in `latest` (all when left out);
   * a trailing `*` makes a name a prefix. Changing them reopens the stream.
   */
  events?: string | string[];
  /** true: who is online, in `presence`. Changing it reopens the stream. */
  presence?: boolean;
}

export interface BrokerHookState {
  /** Event name -> its latest event, since the stream (re)opened. */
  latest: Record<string, BrokerHookEvent>;
  /** With presence: true, username -> open streams of the tenant's users online; {} otherwise. */
  presence: Record<string, number>;
  state: "connecting" | "open" | "closed";
  /** The last error since the stream opened; fatal ones (401, 403) leave state "closed". */
  error: { status: number; message: string; fatal: boolean } | null;
  /** The id of the last event received. */
  lastEventId: string;
  /** The stream's client (insert(), verify()); null while there is no URL. */
  client: BrokerClient | null;
}

/**
 * Streams `url` (the /sse URL) while the component is mounted and re-renders on each event,
 * state change and (presence: true) change of who is online; reopens when url,
 * options.headers, options.events or options.presence change; a null or empty url keeps it
 * closed. Other options are read when the stream opens.
 */
export function useBroker(url: string | URL | null | undefined, options?: UseBrokerOptions): BrokerHookState;

export default useBroker;

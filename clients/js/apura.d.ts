// Type declarations of apura-client (dist/apura.mjs; dist/apura.iife.js defines the same as the
// global `Apura`). The documents are described in the repository's docs/contract.md and
// docs/openapi.yaml.

/** How the client receives documents: `auto` tries SSE, then WebSocket, then GET polling. */
export type Transport = 'auto' | 'sse' | 'ws' | 'poll';

/** A topic: `brazil`, `cities`, `state-{uf}`, `mayors-{uf}-{slug}`, `councillors-…`, `zones-…`. */
export type Topic = string;

/** Options of {@link ApuraClient}; every one is optional. */
export interface ApuraOptions {
  /** The gateway's URL. Default: the folder the client was loaded from (http/https only). */
  baseUrl?: string;
  /** Default `'auto'`. */
  transport?: Transport;
  /** Milliseconds between GET rounds when polling (5000). */
  pollInterval?: number;
  /** Milliseconds one GET round may take (10000). */
  pollTimeout?: number;
  /** Reconnect delay: full jitter, random(0, min(backoffCap, backoffBase·2^attempt)) (1000). */
  backoffBase?: number;
  /** See `backoffBase` (30000). */
  backoffCap?: number;
  /** Milliseconds a fresh stream may take to deliver its first document (10000). */
  snapshotTimeout?: number;
  /** Failed attempts of a stream, with the gateway reachable by GET, before `auto` moves on (2). */
  fallbackAfter?: number;
  /** Milliseconds of fallback polling before `auto` tries the streams again (300000; 0 = never). */
  upgradeAfter?: number;
  /** Milliseconds without a connection after which the status says `stale` (10000). */
  staleAfter?: number;
  /** Milliseconds before asking again for a topic the gateway did not know (10000). */
  missingRetry?: number;
  /**
   * Ask the streams for changes as RFC 6902 patches (SSE `&delta=1`, WebSocket `"delta": true`),
   * applied to the version held only when it is their `base`; otherwise the document is fetched
   * whole by GET (`via: 'probe'`). `false`: every change comes whole. Default `true`.
   */
  deltas?: boolean;
  /** Injectable for tests and for Node.js (which has `fetch` but no `EventSource`). */
  fetch?: typeof fetch;
  EventSource?: new (url: string) => EventSource;
  WebSocket?: new (url: string) => WebSocket;
  setTimeout?: (fn: () => void, ms?: number) => unknown;
  clearTimeout?: (id: any) => void;
  now?: () => number;
  random?: () => number;
}

/** A topic's document: the contract's envelope, then the fields of its `kind`. */
export interface ApuraDocument {
  topic: Topic;
  /** Strictly increasing per topic (milliseconds-since-epoch clock values). */
  version: number;
  /** When the ingest published this version, Unix milliseconds. */
  published_at: number;
  kind: 'city' | 'zones' | 'state' | 'brazil' | 'index';
  [field: string]: unknown;
}

/** Where a delivered document came from. */
export interface DocumentMeta {
  topic: Topic;
  version: number;
  via: 'sse' | 'ws' | 'poll' | 'probe' | 'cache';
  /** True when the client built this version by applying a `patch` event to the previous one. */
  patched?: boolean;
}

/** One RFC 6902 operation. */
export interface PatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  /** A JSON Pointer (RFC 6901). */
  path: string;
  /** For `move` and `copy`. */
  from?: string;
  /** For `add`, `replace` and `test`. */
  value?: unknown;
}

/** A `patch` event (SSE `event: patch`, WebSocket `{"type": "patch", …}`). */
export interface PatchMessage {
  type?: 'patch';
  topic: Topic;
  /** The version the patch applies to. */
  base: number;
  /** The version it makes. */
  version: number;
  patch: PatchOperation[];
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stale' | 'closed';

export interface ApuraStatus {
  state: ConnectionState;
  transport?: Exclude<Transport, 'auto'>;
  /** Since when the data were last known current (milliseconds), while not connected. */
  since?: number;
  attempt?: number;
  /** Milliseconds until the next attempt. */
  delay?: number;
  /** When this status was set (milliseconds). */
  at: number;
}

/** An error the gateway reported, e.g. `unknown_topic`. */
export interface ApuraError {
  type: 'error';
  code: string;
  message: string;
  topic?: Topic;
  status?: number;
}

export interface ApuraEvents {
  status: (status: ApuraStatus) => void;
  document: (doc: ApuraDocument, meta: DocumentMeta) => void;
  error: (error: ApuraError) => void;
  debug: (info: Record<string, unknown>) => void;
}

export class ApuraClient {
  constructor(options?: ApuraOptions);
  readonly options: Required<Pick<ApuraOptions, keyof typeof DEFAULTS>> & ApuraOptions;
  /** The gateway's URL, resolved. */
  readonly baseUrl: string;
  /** The last status set. */
  readonly status: ApuraStatus | { state: 'idle'; at?: number };
  /** The transport of the current connection attempt. */
  readonly transport: Exclude<Transport, 'auto'>;
  /** The latest version and document of every topic held. */
  readonly book: VersionBook;
  /** The topics being streamed: subscribed and not reported missing. */
  topics(): Topic[];
  /** The latest document held for `topic`, if any. */
  get(topic: Topic): ApuraDocument | undefined;
  /** Every newer version of each topic, and at once the one already held; returns `off()`. */
  subscribe(topics: Topic | Topic[], callback: (doc: ApuraDocument, meta: DocumentMeta) => void): () => void;
  /** Without `callback`, drops every callback of those topics. */
  unsubscribe(topics: Topic | Topic[], callback?: (doc: ApuraDocument, meta: DocumentMeta) => void): void;
  /** Listen to an event; returns a function that stops listening. */
  on<E extends keyof ApuraEvents>(event: E, handler: ApuraEvents[E]): () => void;
  /** Close the connection and every timer. */
  close(): void;
}

export const DEFAULTS: Readonly<{
  transport: 'auto';
  pollInterval: number;
  pollTimeout: number;
  backoffBase: number;
  backoffCap: number;
  snapshotTimeout: number;
  fallbackAfter: number;
  upgradeAfter: number;
  staleAfter: number;
  missingRetry: number;
  deltas: boolean;
}>;

export interface BackoffOptions {
  base?: number;
  cap?: number;
  random?: () => number;
}
/** The upper bound of the delay before reconnect attempt `attempt` (0-based). */
export function backoffCeiling(attempt: number, options?: Omit<BackoffOptions, 'random'>): number;
/** A uniformly random delay in [0, ceiling). */
export function backoffDelay(attempt: number, options?: BackoffOptions): number;
export class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  next(): number;
  reset(): void;
}

export class VersionBook {
  /** Record `doc` as the topic's latest if `version` is newer; true when accepted. */
  accept(topic: Topic, version: number, doc: unknown): boolean;
  version(topic: Topic): number | undefined;
  doc(topic: Topic): ApuraDocument | undefined;
  /** The `since` to resume `topics` from: the lowest version held among them, 0 if any is missing. */
  resumePoint(topics: Topic[]): number;
}

/** The GET path of a topic's document; throws for a malformed topic. */
export function topicPath(topic: Topic): string;
export function joinUrl(base: string, path: string): string;
/** The SSE URL for `topics`, resuming after version `since`, with `&delta=1` when `delta`. */
export function eventsUrl(base: string, topics: Topic[], since?: number, delta?: boolean): string;
/** The WebSocket URL. */
export function wsUrl(base: string): string;
/** The version in an ETag header (`"42"` or `W/"42"`). */
export function parseEtag(etag: string | null | undefined): number | undefined;
/** The transports to try, in order. */
export function transportOrder(
  choice: Transport,
  env: { EventSource?: unknown; WebSocket?: unknown; fetch?: unknown },
): Array<Exclude<Transport, 'auto'>>;
/** One GET round over `topics`. */
export function pollOnce(args: {
  fetch: typeof fetch;
  baseUrl: string;
  topics: Topic[];
  versionOf: (topic: Topic) => number | undefined;
  /** `version` from the ETag; `topic` the one asked for. */
  onDoc: (doc: ApuraDocument, version: number | undefined, topic: Topic) => void;
  timeout?: number;
  env: { setTimeout: (fn: () => void, ms?: number) => unknown; clearTimeout: (id: any) => void };
}): Promise<{
  results: Array<{ topic: Topic; status: number; body?: unknown; error?: unknown }>;
  /** The gateway answered anything below 500 for some topic. */
  reachable: boolean;
  missing: Array<{ topic: Topic; status: 404; body?: unknown }>;
}>;

/** A patch that cannot be applied: a bad operation or pointer, a missing target, a failed `test`. */
export class PatchError extends Error {
  name: 'PatchError';
}
/**
 * The document `patch` makes of `doc`: a new one sharing nothing with `doc`, which is left as it
 * was. Throws a {@link PatchError} if any operation fails (all or nothing).
 */
export function applyPatch<T = unknown>(doc: unknown, patch: PatchOperation[]): T;
/** The reference tokens of a JSON Pointer (`~1` is `/`, `~0` is `~`). */
export function parsePointer(pointer: string): string[];
/** A deep copy of a JSON value. */
export function cloneJson<T>(value: T): T;
/** Equality of JSON values (objects by keys, whatever their order). */
export function jsonEqual(a: unknown, b: unknown): boolean;

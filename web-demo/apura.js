// apura.js — dependency-free client for the apura election results gateway (SSE, WebSocket, polling).
//
// Usage (browser, <script type="module">, or Node 20 with injected constructors):
//
//   import { ApuraClient } from './apura.js';
//   const client = new ApuraClient({ baseUrl: 'https://apura.example.com' });
//   const off = client.subscribe(['brazil', 'mayors-sp-sao-paulo'], (doc, meta) => render(doc));
//   client.on('status', (s) => show(s.state, s.since));   // connecting | connected | reconnecting | stale | idle | closed
//   client.on('error', (e) => console.warn(e));            // server errors, e.g. an unknown topic
//   off();            // unsubscribe this callback from these topics
//   client.close();
//
// Options (all optional):
//   baseUrl          gateway URL; default: the folder apura.js was loaded from (http/https only)
//   transport        'auto' (SSE, then WebSocket, then polling) | 'sse' | 'ws' | 'poll'
//   pollInterval     ms between GET rounds when polling (5000)
//   backoffBase/Cap  reconnect delay: full jitter, random(0, min(cap, base·2^attempt)) (1000 / 30000)
//   snapshotTimeout  ms a fresh stream may take to deliver its first document before it counts as
//                    failed, which catches buffering proxies (10000)
//   fallbackAfter    failed attempts of a stream, with the gateway reachable by GET, before 'auto'
//                    moves on to the next transport (2)
//   upgradeAfter     ms of fallback polling before 'auto' tries the streams again (300000; 0 = never)
//   staleAfter       ms without a connection after which status says 'stale' (10000)
//   missingRetry     ms before asking again for a topic the gateway did not know (10000): a
//                    gateway that has just started knows no topic until its first publication
//   deltas           ask the streams for changes as RFC 6902 patches (true): applied to the
//                    version held only when it is the patch's base, else the document is fetched
//                    whole by GET; false: every change comes whole
//   fetch, EventSource, WebSocket, setTimeout, clearTimeout, now, random: injectable for tests.
//
// Guarantees: documents reach callbacks only with a version newer than the last one delivered for
// that topic; a reconnect resumes from the versions already held (SSE `lastEventId`, WS `since`,
// GET `If-None-Match`), so only what changed meanwhile is sent again. A patch never reaches
// callbacks half applied or applied to another version: it builds a new document (sharing nothing
// with the ones callers hold) from the client's own copy of its base, or is replaced by a GET.

export const DEFAULTS = Object.freeze({
  transport: 'auto',
  pollInterval: 5000,
  pollTimeout: 10000,
  backoffBase: 1000,
  backoffCap: 30000,
  snapshotTimeout: 10000,
  fallbackAfter: 2,
  upgradeAfter: 300000,
  staleAfter: 10000,
  missingRetry: 10000,
  deltas: true,
});

// ---------------------------------------------------------------------------------------------
// Pure pieces: backoff, versions, URLs.

/** The upper bound of the delay before reconnect attempt `attempt` (0-based). */
export function backoffCeiling(attempt, { base = 1000, cap = 30000 } = {}) {
  return Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/** Full jitter: a uniformly random delay in [0, ceiling), so a crowd of clients spreads out. */
export function backoffDelay(attempt, { base = 1000, cap = 30000, random = Math.random } = {}) {
  return Math.floor(random() * backoffCeiling(attempt, { base, cap }));
}

/** Counts attempts; `next()` gives the next delay, `reset()` after a success. */
export class Backoff {
  constructor(options = {}) {
    this.options = options;
    this.attempt = 0;
  }
  next() {
    return backoffDelay(this.attempt++, this.options);
  }
  reset() {
    this.attempt = 0;
  }
}

/** The latest version and document of every topic; accepts only strictly newer versions. */
export class VersionBook {
  constructor() {
    this.entries = new Map();
  }
  /** Record `doc` as `topic`'s latest if `version` is newer; true when accepted. */
  accept(topic, version, doc) {
    if (typeof topic !== 'string' || !Number.isFinite(version)) return false;
    const held = this.entries.get(topic);
    if (held && version <= held.version) return false;
    this.entries.set(topic, { version, doc });
    return true;
  }
  version(topic) {
    return this.entries.get(topic)?.version;
  }
  doc(topic) {
    return this.entries.get(topic)?.doc;
  }
  /**
   * The `since` to resume `topics` from: the lowest version held among them, 0 if any is missing.
   * The gateway resends every topic whose version is greater, so nothing changed after a version
   * we hold can be skipped, even when one stream interleaves topics out of version order. With one
   * topic, or topics delivered in version order, this is the highest version applied.
   */
  resumePoint(topics) {
    let since = Infinity;
    for (const t of topics) {
      const v = this.version(t);
      if (v === undefined) return 0;
      since = Math.min(since, v);
    }
    return since === Infinity ? 0 : since;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON Patch (RFC 6902) over JSON Pointer (RFC 6901): what a `patch` event carries.

/** A patch that cannot be applied: a bad operation or pointer, a missing target, a failed test. */
export class PatchError extends Error {
  constructor(message) {
    super(`apura: ${message}`);
    this.name = 'PatchError';
  }
}

const hasOwn = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

/** Set an own property, `__proto__` included (a plain assignment would change the prototype). */
function setKey(obj, key, value) {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/** A deep copy of a JSON value: nothing mutable is shared with the original. */
export function cloneJson(value) {
  if (Array.isArray(value)) return value.map(cloneJson);
  if (value === null || typeof value !== 'object') return value;
  const out = {};
  for (const k of Object.keys(value)) setKey(out, k, cloneJson(value[k]));
  return out;
}

/** JSON equality: same type, arrays in order, objects with the same keys and values. */
export function jsonEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => hasOwn(b, k) && jsonEqual(a[k], b[k]));
}

/** The reference tokens of a JSON Pointer (`~1` is `/`, `~0` is `~`). */
export function parsePointer(pointer) {
  if (pointer === '') return [];
  if (typeof pointer !== 'string' || pointer[0] !== '/') throw new PatchError(`not a JSON Pointer: ${JSON.stringify(pointer)}`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => {
      if (/~(?![01])/.test(t)) throw new PatchError(`bad escape in ${JSON.stringify(pointer)}`);
      return t.replace(/~1/g, '/').replace(/~0/g, '~');
    });
}

/** The index `token` names in `arr`; `-` (past the end) and `length` itself only when `adding`. */
function arrayIndex(arr, token, adding) {
  if (adding && token === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new PatchError(`not an array index: ${JSON.stringify(token)}`);
  const i = Number(token);
  if (i > arr.length || (!adding && i === arr.length)) throw new PatchError(`index ${i} out of bounds (${arr.length})`);
  return i;
}

/** The value at `tokens` in `doc`; throws when it does not exist. */
function getAt(doc, tokens) {
  let node = doc;
  for (const t of tokens) {
    if (Array.isArray(node)) node = node[arrayIndex(node, t, false)];
    else if (node !== null && typeof node === 'object' && hasOwn(node, t)) node = node[t];
    else throw new PatchError(`no such member: /${tokens.join('/')}`);
  }
  return node;
}

/** The container holding the last token of `tokens`, which must exist and be an array or object. */
function parentOf(doc, tokens) {
  const parent = getAt(doc, tokens.slice(0, -1));
  if (parent === null || typeof parent !== 'object') throw new PatchError(`not a container: /${tokens.slice(0, -1).join('/')}`);
  return parent;
}

function addAt(doc, tokens, value) {
  if (!tokens.length) return value;
  const parent = parentOf(doc, tokens);
  const key = tokens.at(-1);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, true), 0, value);
  else setKey(parent, key, value);
  return doc;
}

function removeAt(doc, tokens) {
  if (!tokens.length) throw new PatchError('cannot remove the whole document');
  const parent = parentOf(doc, tokens);
  const key = tokens.at(-1);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, false), 1);
  else if (hasOwn(parent, key)) delete parent[key];
  else throw new PatchError(`no such member to remove: /${tokens.join('/')}`);
  return doc;
}

/** Replace an existing value in place, so that an object keeps the order of its keys. */
function replaceAt(doc, tokens, value) {
  if (!tokens.length) return value;
  const parent = parentOf(doc, tokens);
  const key = tokens.at(-1);
  if (Array.isArray(parent)) parent[arrayIndex(parent, key, false)] = value;
  else if (hasOwn(parent, key)) setKey(parent, key, value);
  else throw new PatchError(`no such member to replace: /${tokens.join('/')}`);
  return doc;
}

/** Apply one operation to `doc` in place; returns the document (a new root for path ""). */
function applyOp(doc, op) {
  if (op === null || typeof op !== 'object') throw new PatchError('an operation is not an object');
  const path = parsePointer(op.path);
  const value = () => {
    if (!hasOwn(op, 'value')) throw new PatchError(`${op.op} without a value`);
    return cloneJson(op.value);
  };
  switch (op.op) {
    case 'add':
      return addAt(doc, path, value());
    case 'remove':
      return removeAt(doc, path);
    case 'replace':
      return replaceAt(doc, path, value());
    case 'move': {
      const from = parsePointer(op.from);
      if (op.path.startsWith(op.from + '/')) throw new PatchError(`cannot move ${op.from} into itself`);
      const v = getAt(doc, from);
      if (op.from === op.path) return doc;
      return addAt(removeAt(doc, from), path, v);
    }
    case 'copy':
      return addAt(doc, path, cloneJson(getAt(doc, parsePointer(op.from))));
    case 'test':
      if (!jsonEqual(getAt(doc, path), value())) throw new PatchError(`test failed at ${op.path}`);
      return doc;
    default:
      throw new PatchError(`unknown operation ${JSON.stringify(op.op)}`);
  }
}

/**
 * The document `patch` (RFC 6902, an array of operations) makes of `doc`: a new one, sharing
 * nothing with `doc`, which is left as it was. Throws a PatchError if any operation fails: a patch
 * applies whole or not at all.
 */
export function applyPatch(doc, patch) {
  if (!Array.isArray(patch)) throw new PatchError('a patch is an array of operations');
  let out = cloneJson(doc);
  for (const op of patch) out = applyOp(out, op);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Topics and URLs.

const CITY_TOPIC = /^(mayors|councillors|zones)-[a-z]{2}-[a-z0-9]+(-[a-z0-9]+)*$/;

/** The GET path of a topic's document, per the contract; throws for a malformed topic. */
export function topicPath(topic) {
  if (topic === 'brazil') return '/brazil.json';
  if (topic === 'cities') return '/cities.json';
  const state = /^state-([a-z]{2})$/.exec(topic);
  if (state) return `/states/${state[1]}.json`;
  if (CITY_TOPIC.test(topic)) return `/cities/${topic}.json`;
  throw new TypeError(`apura: not a topic: ${JSON.stringify(topic)}`);
}

export function joinUrl(base, path) {
  return base.replace(/\/+$/, '') + path;
}

/** The SSE URL for `topics`, with deltas when `delta`, resuming after version `since` (omitted when 0). */
export function eventsUrl(base, topics, since = 0, delta = false) {
  let url = joinUrl(base, '/events?topics=' + topics.map(encodeURIComponent).join(','));
  if (delta) url += '&delta=1';
  return since > 0 ? `${url}&lastEventId=${since}` : url;
}

/** The WebSocket URL: the gateway's `/ws` with http(s) turned into ws(s). */
export function wsUrl(base) {
  return joinUrl(base, '/ws').replace(/^http/, 'ws');
}

/** The version in an ETag header (`"42"` or `W/"42"`), or undefined. */
export function parseEtag(etag) {
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(etag ?? '');
  return m ? Number(m[1]) : undefined;
}

/** The transports to try, in order, for a `transport` option and what the environment offers. */
export function transportOrder(choice, env) {
  const available = { sse: !!env.EventSource, ws: !!env.WebSocket, poll: !!env.fetch };
  const order = choice === 'auto' ? ['sse', 'ws', 'poll'] : [choice];
  if (!order.every((k) => k in available)) throw new TypeError(`apura: unknown transport ${choice}`);
  const usable = order.filter((k) => available[k]);
  if (!usable.length) throw new TypeError(`apura: transport ${choice} is not available here`);
  return usable;
}

/**
 * One GET round over `topics`: conditional on the versions held, documents handed to `onDoc`.
 * `reachable` is true when the gateway answered anything below 500 for some topic.
 */
export async function pollOnce({ fetch, baseUrl, topics, versionOf, onDoc, timeout, env }) {
  const results = await Promise.all(
    topics.map(async (topic) => {
      const held = versionOf(topic);
      const headers = held === undefined ? {} : { 'If-None-Match': `"${held}"` };
      const abort = typeof AbortController === 'function' ? new AbortController() : null;
      const timer = abort && timeout ? env.setTimeout(() => abort.abort(), timeout) : null;
      try {
        const res = await fetch(joinUrl(baseUrl, topicPath(topic)), {
          headers,
          cache: 'no-store',
          signal: abort?.signal,
        });
        if (res.status === 304) return { topic, status: 304 };
        let body = null;
        try {
          body = await res.json();
        } catch {
          // A body that is not JSON is reported by status alone.
        }
        if (res.ok && body) onDoc(body, parseEtag(res.headers?.get?.('etag')), topic);
        return { topic, status: res.status, body };
      } catch (error) {
        return { topic, status: 0, error };
      } finally {
        if (timer !== null) env.clearTimeout(timer);
      }
    }),
  );
  return {
    results,
    reachable: results.some((r) => r.status > 0 && r.status < 500),
    missing: results.filter((r) => r.status === 404),
  };
}

// ---------------------------------------------------------------------------------------------
// Transports. Each is one connection attempt: it reports open / documents / failure to `ctx` and
// never reconnects by itself; the client decides when and how to try again.

function sseTransport(ctx) {
  const es = new ctx.env.EventSource(eventsUrl(ctx.baseUrl, ctx.topics(), ctx.since, ctx.options.deltas));
  let done = false;
  const parse = (e) => {
    try {
      return JSON.parse(e.data);
    } catch {
      return undefined;
    }
  };
  const onMessage = (e) => {
    const doc = parse(e);
    if (doc !== undefined) ctx.onDoc(doc, Number(e.lastEventId));
  };
  for (const name of ['snapshot', 'update', 'message']) es.addEventListener(name, onMessage);
  es.addEventListener('patch', (e) => {
    const change = parse(e);
    if (change !== undefined) ctx.onPatch(change);
  });
  es.addEventListener('open', () => ctx.onOpen());
  es.addEventListener('error', (e) => {
    if (e && typeof e.data === 'string') {
      // A server-sent `event: error` frame, not a broken connection.
      try {
        ctx.onServerError(JSON.parse(e.data));
      } catch {
        ctx.onServerError({ type: 'error', message: e.data });
      }
      return;
    }
    if (done) return;
    done = true;
    es.close(); // no native retry: the client reconnects with its own backoff and resume point
    ctx.onFail('event stream error');
  });
  return {
    update: () => false, // the topic list is in the URL: a new list needs a new stream
    close() {
      done = true;
      es.close();
    },
  };
}

function wsTransport(ctx) {
  const ws = new ctx.env.WebSocket(wsUrl(ctx.baseUrl));
  const subscribed = new Set();
  let open = false;
  let done = false;
  const send = (msg) => ws.send(JSON.stringify(msg));
  const sync = () => {
    const want = new Set(ctx.topics());
    const removed = [...subscribed].filter((t) => !want.has(t));
    const added = [...want].filter((t) => !subscribed.has(t));
    if (removed.length) {
      send({ type: 'unsubscribe', topics: removed });
      removed.forEach((t) => subscribed.delete(t));
    }
    if (added.length) {
      const msg = { type: 'subscribe', topics: added, since: ctx.resumePoint(added) };
      send(ctx.options.deltas ? { ...msg, delta: true } : msg);
      added.forEach((t) => subscribed.add(t));
    }
  };
  const fail = (why) => {
    if (done) return;
    done = true;
    try {
      ws.close();
    } catch {
      // already closed
    }
    ctx.onFail(why);
  };
  ws.onopen = () => {
    open = true;
    sync();
    ctx.onOpen();
  };
  ws.onmessage = (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch {
      return;
    }
    if (msg.type === 'snapshot' || msg.type === 'update') ctx.onDoc(msg.document, Number(msg.version), msg.topic);
    else if (msg.type === 'patch') ctx.onPatch(msg);
    else if (msg.type === 'error') {
      if (msg.topic) subscribed.delete(msg.topic); // not subscribed: a later sync asks again
      ctx.onServerError(msg);
    }
  };
  ws.onerror = () => fail('websocket error');
  ws.onclose = (e) => fail(`websocket closed (${e?.code ?? '?'})`);
  return {
    update() {
      if (open && !done) sync(); // before open, onopen subscribes whatever is wanted then
      return true;
    },
    close() {
      done = true;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
    },
  };
}

function pollTransport(ctx) {
  let closed = false;
  let running = false;
  let again = false;
  let timer = null;
  const round = async () => {
    if (closed) return;
    if (running) {
      again = true;
      return;
    }
    running = true;
    const r = await pollOnce({
      fetch: ctx.env.fetch,
      env: ctx.env,
      baseUrl: ctx.baseUrl,
      topics: ctx.topics(),
      versionOf: ctx.versionOf,
      onDoc: ctx.onDoc,
      timeout: ctx.options.pollTimeout,
    });
    running = false;
    if (closed) return;
    for (const m of r.missing) ctx.onServerError(missingTopicError(m));
    if (!r.reachable) return ctx.onFail('gateway unreachable by GET');
    ctx.onOpen();
    timer = ctx.env.setTimeout(round, again ? 0 : ctx.options.pollInterval);
    again = false;
  };
  round();
  return {
    update() {
      ctx.env.clearTimeout(timer);
      round(); // a new topic should not wait a whole interval
      return true;
    },
    close() {
      closed = true;
      ctx.env.clearTimeout(timer);
    },
  };
}

const TRANSPORTS = { sse: sseTransport, ws: wsTransport, poll: pollTransport };

function missingTopicError({ topic, status, body }) {
  return {
    type: 'error',
    code: body?.error ?? 'unknown_topic',
    message: body?.message ?? `topic ${topic} not found`,
    topic,
    status,
  };
}

function defaultBaseUrl() {
  try {
    const here = new URL('.', import.meta.url);
    if (here.protocol === 'http:' || here.protocol === 'https:') return here.href;
  } catch {
    // no usable module URL: fall through
  }
  if (globalThis.location?.origin) return globalThis.location.origin + '/';
  throw new TypeError('apura: baseUrl is required outside a browser');
}

function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (error) {
    // A failing callback must not break delivery to the others; report it where pages see it.
    queueMicrotask(() => {
      throw error;
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The client.

export class ApuraClient {
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    const g = globalThis;
    this.options = o;
    this.env = {
      fetch: o.fetch ?? (g.fetch ? g.fetch.bind(g) : undefined),
      EventSource: o.EventSource ?? g.EventSource,
      WebSocket: o.WebSocket ?? g.WebSocket,
      setTimeout: o.setTimeout ?? g.setTimeout.bind(g),
      clearTimeout: o.clearTimeout ?? g.clearTimeout.bind(g),
      now: o.now ?? Date.now,
      random: o.random ?? Math.random,
    };
    this.baseUrl = o.baseUrl
      ? new URL(o.baseUrl, g.location?.href ?? undefined).href
      : defaultBaseUrl();
    this.kinds = transportOrder(o.transport, this.env);
    this.kindIndex = 0;
    this.failures = 0; // consecutive failed attempts of the current transport, gateway reachable
    this.book = new VersionBook();
    this.bases = new Map(); // topic -> {version, doc}: the client's own copy patches apply to
    this.refetching = new Map(); // topic -> the newest version a refused patch announced
    this.subs = new Map(); // topic -> Set of callbacks
    this.missing = new Set(); // topics the gateway said it does not know, left out for now
    this.reported = new Set(); // missing topics already reported by an 'error' event
    this.handlers = new Map(); // event name -> Set of handlers
    this.backoff = new Backoff({ base: o.backoffBase, cap: o.backoffCap, random: this.env.random });
    this.timers = new Map();
    this.conn = null;
    this.attempt = null;
    this.probing = false;
    this.upgrading = false;
    this.forceFull = false;
    this.proven = new Set(); // transports that have delivered a document
    this.everConnected = false;
    this.lostAt = null; // when the data was last known current, while not connected
    this.closed = false;
    this.status = { state: 'idle' };
    this.onlineHandler = null;
    if (typeof g.addEventListener === 'function' && g.window === g) {
      // Back online: skip the rest of the backoff wait.
      this.onlineHandler = () => {
        if (this.timers.has('reconnect')) {
          this.clearTimer('reconnect');
          this.connect();
        }
      };
      g.addEventListener('online', this.onlineHandler);
    }
  }

  /** The topics being streamed: subscribed and not reported missing. */
  topics() {
    return [...this.subs.keys()].filter((t) => !this.missing.has(t)).sort();
  }

  /** The transport of the current connection attempt ('sse' | 'ws' | 'poll'). */
  get transport() {
    return this.kinds[this.kindIndex];
  }

  /** The latest document held for `topic`, if any. */
  get(topic) {
    return this.book.doc(topic);
  }

  /**
   * Call `callback(doc, {topic, version, via})` with every new version of each of `topics`, and at
   * once with the document already held. Returns a function that undoes this subscription.
   */
  subscribe(topics, callback) {
    const list = [].concat(topics);
    list.forEach(topicPath);
    if (typeof callback !== 'function') throw new TypeError('apura: subscribe needs a callback');
    let added = false;
    for (const topic of list) {
      let set = this.subs.get(topic);
      if (!set) {
        set = new Set();
        this.subs.set(topic, set);
        added = true;
      }
      set.add(callback);
      const doc = this.book.doc(topic);
      if (doc) {
        const meta = { topic, version: this.book.version(topic), via: 'cache' };
        queueMicrotask(() => this.subs.get(topic)?.has(callback) && safeCall(callback, doc, meta));
      }
    }
    if (added) this.topicsChanged();
    return () => this.unsubscribe(list, callback);
  }

  /** Stop `callback` (or every callback, without one) receiving `topics`. */
  unsubscribe(topics, callback) {
    let removed = false;
    for (const topic of [].concat(topics)) {
      const set = this.subs.get(topic);
      if (!set) continue;
      if (callback) set.delete(callback);
      else set.clear();
      if (set.size === 0) {
        this.subs.delete(topic);
        // The document stays in the book: a gateway does not send a socket again a version it
        // already sent there, and coming back to the topic shows it at once, resuming from it.
        this.missing.delete(topic);
        this.reported.delete(topic);
        removed = true;
      }
    }
    if (removed) this.topicsChanged();
  }

  /** Listen to 'status', 'document' or 'error'; returns a function that stops listening. */
  on(event, handler) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(handler);
    return () => this.handlers.get(event)?.delete(handler);
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const name of [...this.timers.keys()]) this.clearTimer(name);
    this.dropConn();
    if (this.onlineHandler) globalThis.removeEventListener('online', this.onlineHandler);
    this.setStatus({ state: 'closed' });
  }

  // --- internals -------------------------------------------------------------------------------

  emit(event, ...args) {
    for (const h of [...(this.handlers.get(event) ?? [])]) safeCall(h, ...args);
  }

  setTimer(name, ms, fn) {
    this.clearTimer(name);
    const id = this.env.setTimeout(() => {
      this.timers.delete(name);
      fn();
    }, ms);
    this.timers.set(name, id);
  }

  clearTimer(name) {
    if (!this.timers.has(name)) return;
    this.env.clearTimeout(this.timers.get(name));
    this.timers.delete(name);
  }

  setStatus(status) {
    this.status = { ...status, at: this.env.now() };
    this.emit('status', this.status);
  }

  topicsChanged() {
    if (this.closed) return;
    if (!this.topics().length) {
      for (const name of ['restart', 'reconnect', 'snapshot', 'upgrade', 'stale']) this.clearTimer(name);
      this.dropConn();
      this.setStatus({ state: 'idle' });
      return;
    }
    // A pending reconnect or probe picks up the new list when it connects.
    if (this.probing || this.timers.has('reconnect')) return;
    if (this.conn?.update()) return;
    // Coalesce an unsubscribe + subscribe made together into one new connection.
    this.setTimer('restart', 0, () => {
      this.dropConn();
      this.connect();
    });
  }

  dropConn() {
    this.attempt = null;
    const conn = this.conn;
    this.conn = null;
    conn?.close();
  }

  connect() {
    if (this.closed) return;
    const topics = this.topics();
    if (!topics.length) return;
    const kind = this.kinds[this.kindIndex];
    // Until a stream has delivered a document it must prove itself with a full snapshot: a
    // resumed stream that opens and stays silent could be a buffering proxy.
    const full = this.forceFull || (kind !== 'poll' && !this.proven.has(kind));
    const since = full ? 0 : this.book.resumePoint(topics);
    this.forceFull = false;
    if (!this.everConnected && this.status.state !== 'connecting') this.setStatus({ state: 'connecting', transport: kind });
    const attempt = { kind, since, succeeded: false, failed: false };
    this.attempt = attempt;
    const current = () => attempt === this.attempt;
    const ctx = {
      baseUrl: this.baseUrl,
      env: this.env,
      options: this.options,
      since,
      topics: () => this.topics(),
      versionOf: (t) => this.book.version(t),
      resumePoint: (ts) => this.book.resumePoint(ts),
      onOpen: () => current() && this.onOpen(attempt),
      onDoc: (doc, hint, topic) => current() && this.onDoc(attempt, doc, hint, topic),
      onPatch: (change) => current() && this.onPatch(attempt, change),
      onFail: (why) => current() && this.onFail(attempt, why),
      onServerError: (err) => this.onServerError(err),
    };
    if (kind !== 'poll' && since === 0) {
      // A fresh stream owes us a snapshot of every topic; a buffering proxy never delivers it.
      this.setTimer('snapshot', this.options.snapshotTimeout, () =>
        this.onFail(attempt, 'no snapshot in time (buffering proxy?)'),
      );
    }
    try {
      this.conn = TRANSPORTS[kind](ctx);
    } catch (error) {
      this.onFail(attempt, String(error));
    }
  }

  onOpen(attempt) {
    // A resumed stream may have nothing to send: being open is success. A fresh one must deliver.
    if (attempt.kind === 'poll' || attempt.since > 0) this.succeed(attempt);
  }

  onDoc(attempt, doc, hint, topic) {
    this.proven.add(attempt.kind);
    this.succeed(attempt);
    this.apply(doc, hint, topic, attempt.kind);
  }

  onPatch(attempt, change) {
    this.proven.add(attempt.kind);
    this.succeed(attempt);
    this.applyChange(change, attempt.kind);
  }

  /**
   * Deliver a document built by a `patch` event from the copy held at its `base`; if that is not
   * the version held, or the patch does not apply, fetch the document whole instead.
   */
  applyChange(change, via) {
    const topic = change?.topic;
    const version = Number(change?.version);
    if (!this.subs.has(topic) || !Number.isFinite(version)) return false;
    const held = this.book.version(topic);
    if (held !== undefined && version <= held) return false; // nothing newer than what we have
    let doc;
    try {
      const base = this.bases.get(topic);
      if (held === undefined || base?.version !== held || Number(change.base) !== held) {
        throw new PatchError(`patch from ${change.base}, holding ${held ?? 'nothing'}`);
      }
      doc = applyPatch(base.doc, change.patch);
      if (doc === null || typeof doc !== 'object' || (doc.version !== undefined && Number(doc.version) !== version)) {
        throw new PatchError(`patch to ${version} gave version ${doc?.version}`);
      }
    } catch (error) {
      this.refetch(topic, version, error.message);
      return false;
    }
    return this.apply(cloneJson(doc), version, topic, via, doc);
  }

  /**
   * A patch was refused: GET the topic whole. If that does not bring a version at least as new
   * as the patch's (the GET failed, or answered from behind), open the stream again: it resumes
   * from the versions held and sends this topic whole.
   */
  async refetch(topic, version, why) {
    if (this.closed) return;
    this.emit('debug', { event: 'patch-refused', topic, version, why });
    const pending = this.refetching.get(topic);
    this.refetching.set(topic, Math.max(version, pending ?? 0));
    if (pending !== undefined) return; // one GET per topic at a time
    await pollOnce({
      fetch: this.env.fetch,
      env: this.env,
      baseUrl: this.baseUrl,
      topics: [topic],
      versionOf: (t) => this.book.version(t),
      onDoc: (doc, hint, t) => this.apply(doc, hint, t, 'probe'),
      timeout: this.options.pollTimeout,
    });
    const wanted = this.refetching.get(topic);
    this.refetching.delete(topic);
    if (this.closed || !this.subs.has(topic) || (this.book.version(topic) ?? 0) >= wanted) return;
    this.emit('debug', { event: 'resubscribe', topic, version: wanted });
    if (this.conn && this.attempt?.succeeded && !this.timers.has('reconnect')) {
      this.setTimer('restart', 0, () => {
        this.dropConn();
        this.connect();
      });
    }
  }

  /**
   * Hand `doc` to the callbacks if it is newer than the version held. `patched` is the client's
   * own copy when `doc` was built by a patch (the next patch applies to it).
   */
  apply(doc, hint, topicHint, via, patched = null) {
    if (!doc || typeof doc !== 'object') return false;
    const topic = doc.topic ?? topicHint;
    const version = Number(doc.version ?? hint);
    if (!this.subs.has(topic)) return false;
    if (!this.book.accept(topic, version, doc)) return false;
    if (this.options.deltas) this.bases.set(topic, { version, doc: patched ?? cloneJson(doc) });
    this.reported.delete(topic);
    const meta = { topic, version, via };
    if (patched) meta.patched = true;
    for (const cb of [...this.subs.get(topic)]) safeCall(cb, doc, meta);
    this.emit('document', doc, meta);
    return true;
  }

  succeed(attempt) {
    if (attempt.succeeded || attempt.failed) return;
    attempt.succeeded = true;
    this.clearTimer('snapshot');
    this.clearTimer('stale');
    this.backoff.reset();
    this.failures = 0;
    this.upgrading = false;
    this.everConnected = true;
    this.lostAt = null;
    this.setStatus({ state: 'connected', transport: attempt.kind });
    const fellBack = attempt.kind === 'poll' && this.kindIndex > 0;
    if (fellBack && this.options.upgradeAfter > 0) {
      this.setTimer('upgrade', this.options.upgradeAfter, () => this.upgrade());
    }
  }

  /** After a while on fallback polling, try the streams again from the top. */
  upgrade() {
    this.upgrading = true;
    this.kindIndex = 0;
    this.failures = 0;
    this.forceFull = true; // a full snapshot proves the stream is not buffered
    this.dropConn();
    this.connect();
  }

  onFail(attempt, why) {
    if (attempt.failed || this.closed) return;
    attempt.failed = true;
    this.clearTimer('snapshot');
    this.clearTimer('upgrade');
    this.dropConn();
    this.emit('debug', { event: 'fail', transport: attempt.kind, why });
    if (this.upgrading) {
      // The streams still do not work: back to polling quietly, try again later.
      this.upgrading = false;
      this.kindIndex = this.kinds.length - 1;
      this.connect();
      return;
    }
    if (this.status.state === 'connected') this.lostAt = this.env.now();
    if (!attempt.succeeded && this.kindIndex < this.kinds.length - 1) this.probe(attempt.kind);
    else this.scheduleReconnect();
  }

  /**
   * A stream failed before delivering: ask for the documents by GET. If the gateway answers, the
   * stream itself is the problem (refused, or cut by a proxy) and counts toward falling back; if
   * not, the gateway is down and we only wait. The GET's documents are applied meanwhile.
   */
  async probe(kind) {
    this.probing = true;
    const r = await pollOnce({
      fetch: this.env.fetch,
      env: this.env,
      baseUrl: this.baseUrl,
      topics: this.topics(),
      versionOf: (t) => this.book.version(t),
      onDoc: (doc, hint, topic) => this.apply(doc, hint, topic, 'probe'),
      timeout: this.options.pollTimeout,
    });
    this.probing = false;
    if (this.closed) return;
    this.emit('debug', { event: 'probe', transport: kind, reachable: r.reachable });
    if (r.missing.length) {
      // The stream was refused for an unknown topic, not because streams fail: drop it, retry.
      r.missing.forEach((m) => this.onServerError(missingTopicError(m)));
      if (this.topics().length) this.connect();
      return;
    }
    if (r.reachable) {
      if (this.lostAt !== null) this.lostAt = this.env.now(); // the GET brought the data up to date
      this.failures += 1;
      if (this.failures >= this.options.fallbackAfter) {
        this.kindIndex += 1;
        this.failures = 0;
        this.backoff.reset();
        this.connect();
        return;
      }
    }
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    const delay = this.backoff.next();
    const attempt = this.backoff.attempt;
    this.setTimer('reconnect', delay, () => this.connect());
    const info = { transport: this.transport, attempt, delay };
    if (!this.everConnected) return this.setStatus({ state: 'connecting', ...info });
    const since = this.lostAt ?? this.env.now();
    this.lostAt = since;
    const staleAt = since + this.options.staleAfter;
    if (this.env.now() >= staleAt) return this.setStatus({ state: 'stale', since, ...info });
    this.setStatus({ state: 'reconnecting', since, ...info });
    if (!this.timers.has('stale')) {
      this.setTimer('stale', staleAt - this.env.now(), () => {
        if (this.status.state === 'reconnecting') this.setStatus({ ...this.status, state: 'stale' });
      });
    }
  }

  onServerError(err) {
    const topic = err?.topic;
    if (!topic || !this.subs.has(topic)) return this.emit('error', err);
    this.missing.add(topic);
    if (!this.reported.has(topic)) {
      this.reported.add(topic);
      this.emit('error', err);
    }
    // Not necessarily for good: a gateway warming up or a city published later. Ask again.
    if (!this.timers.has('missing')) {
      this.setTimer('missing', this.options.missingRetry, () => {
        this.missing.clear();
        this.topicsChanged();
      });
    }
  }
}

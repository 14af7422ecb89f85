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
//   fetch, EventSource, WebSocket, setTimeout, clearTimeout, now, random: injectable for tests.
//
// Guarantees: documents reach callbacks only with a version newer than the last one delivered for
// that topic; a reconnect resumes from the versions already held (SSE `lastEventId`, WS `since`,
// GET `If-None-Match`), so only what changed meanwhile is sent again.

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

/** The SSE URL for `topics`, resuming after version `since` (omitted when 0). */
export function eventsUrl(base, topics, since = 0) {
  const url = joinUrl(base, '/events?topics=' + topics.map(encodeURIComponent).join(','));
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
  const es = new ctx.env.EventSource(eventsUrl(ctx.baseUrl, ctx.topics(), ctx.since));
  let done = false;
  const onMessage = (e) => {
    let doc;
    try {
      doc = JSON.parse(e.data);
    } catch {
      return;
    }
    ctx.onDoc(doc, Number(e.lastEventId));
  };
  for (const name of ['snapshot', 'update', 'message']) es.addEventListener(name, onMessage);
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
      send({ type: 'subscribe', topics: added, since: ctx.resumePoint(added) });
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

  apply(doc, hint, topicHint, via) {
    if (!doc || typeof doc !== 'object') return false;
    const topic = doc.topic ?? topicHint;
    const version = Number(doc.version ?? hint);
    if (!this.subs.has(topic)) return false;
    if (!this.book.accept(topic, version, doc)) return false;
    this.reported.delete(topic);
    const meta = { topic, version, via };
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

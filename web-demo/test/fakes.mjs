// fakes.mjs — test doubles for apura.js: a virtual clock, EventSource, WebSocket and fetch.

import { ApuraClient } from '../apura.js';

/** Timers on virtual time: `advance(ms)` runs what falls due, in order. */
export class FakeClock {
  constructor() {
    this.time = 1_700_000_000_000;
    this.queue = [];
    this.nextId = 1;
    this.scheduled = []; // every delay ever asked for, with its timer id
    this.setTimeout = (fn, ms = 0) => {
      const id = this.nextId++;
      this.queue.push({ id, at: this.time + ms, fn });
      this.scheduled.push({ id, ms });
      return id;
    };
    this.clearTimeout = (id) => {
      this.queue = this.queue.filter((t) => t.id !== id);
    };
    this.now = () => this.time;
  }
  /** Move time forward by `ms`, running due timers and letting promises settle between them. */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      await flush();
      this.queue.sort((a, b) => a.at - b.at || a.id - b.id);
      const t = this.queue[0];
      if (!t || t.at > end) break;
      this.queue.shift();
      this.time = Math.max(this.time, t.at);
      t.fn();
    }
    this.time = end;
    await flush();
  }
}

/** Let pending promise callbacks (fetch fakes, the client's probes) run. */
export async function flush() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

export class FakeEventSource {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    FakeEventSource.instances.push(this);
  }
  static get last() {
    return FakeEventSource.instances.at(-1);
  }
  static reset() {
    FakeEventSource.instances = [];
  }
  addEventListener(name, fn) {
    (this.listeners[name] ??= []).push(fn);
  }
  dispatch(name, event) {
    for (const fn of this.listeners[name] ?? []) fn(event);
  }
  close() {
    this.readyState = 2;
  }
  get closed() {
    return this.readyState === 2;
  }
  // --- driven by tests
  open() {
    this.readyState = 1;
    this.dispatch('open', {});
  }
  send(name, doc) {
    this.dispatch(name, { data: JSON.stringify(doc), lastEventId: String(doc.version) });
  }
  fail() {
    this.readyState = 0;
    this.dispatch('error', {});
  }
}

export class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeWebSocket.instances.push(this);
  }
  static get last() {
    return FakeWebSocket.instances.at(-1);
  }
  static reset() {
    FakeWebSocket.instances = [];
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // --- driven by tests
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  /** A refused handshake or a dropped connection: error, then close. */
  fail(code = 1006) {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code });
  }
}

/**
 * A fetch whose answers come from `route(url, init)`: a `{status, body, headers}` object, or
 * 'down' for a refused connection. Every request is recorded in `requests`.
 */
export function fakeFetch(route) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const headers = init.headers ?? {};
    requests.push({ url, ifNoneMatch: headers['If-None-Match'] });
    const answer = route(url, init);
    if (answer === 'down') throw new TypeError('fetch failed');
    const body = answer.body === undefined ? null : JSON.stringify(answer.body);
    return new Response(answer.status === 304 ? null : body, {
      status: answer.status ?? 200,
      headers: { 'content-type': 'application/json', ...(answer.headers ?? {}) },
    });
  };
  fetch.requests = requests;
  return fetch;
}

/** A document of the contract's shape, small: just what the client looks at. */
export function doc(topic, version, extra = {}) {
  return { topic, version, published_at: 1_700_000_000_000 + version * 1000, ...extra };
}

/** A client wired to the fakes; `options` override anything. */
export function makeClient(options = {}) {
  FakeEventSource.reset();
  FakeWebSocket.reset();
  const clock = new FakeClock();
  const fetch = options.fetch ?? fakeFetch(() => 'down');
  const client = new ApuraClient({
    baseUrl: 'http://gw.test',
    EventSource: FakeEventSource,
    WebSocket: FakeWebSocket,
    fetch,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const statuses = [];
  client.on('status', (s) => statuses.push(s));
  return { client, clock, fetch, statuses };
}

// deltas.test.mjs — JSON Patch (RFC 6902) application, and the client's use of `patch` events:
// applied only to the version held at their base, else the document is fetched whole.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PatchError, applyPatch, parsePointer } from '../apura.js';
import { FakeEventSource, FakeWebSocket, fakeFetch, flush, makeClient } from './fakes.mjs';

const SP = 'mayors-sp-sao-paulo';

/** A mayor race as the contract describes it, two versions of the count. */
function mayors(version, { counted = 12000, a = 1500000, b = 1400000 } = {}) {
  const valid = a + b + 500000;
  const pct = (v) => Math.round((v / valid) * 10000) / 100;
  const candidates = [
    { number: 45, name: 'ANA LIMA', party: 'PSDB', votes: a, percent: pct(a), elected: false, status: null, valid: true, color: '#0C93D5', photo: '45.jpg' },
    { number: 13, name: 'JOÃO SOUZA', party: 'PT', votes: b, percent: pct(b), elected: false, status: null, valid: true, color: '#C4122D', photo: '13.jpg' },
    { number: 50, name: 'RUI PAZ', party: 'PSOL', votes: 500000, percent: pct(500000), elected: false, status: null, valid: true, color: '#FFCC00', photo: null },
  ].sort((x, y) => y.votes - x.votes);
  return {
    version,
    published_at: version + 5000,
    topic: SP,
    kind: 'city',
    office: 'mayor',
    round: 1,
    city: { ibge: 3550308, name: 'São Paulo', uf: 'SP', slug: 'sao-paulo', capital: true },
    source_time: '2028-10-01T19:12:00',
    progress: { sections_counted: counted, sections_total: 26656, percent: Math.round((counted / 26656) * 10000) / 100 },
    totals: { electorate: 9300000, turnout: valid + 200000, abstentions: 400000, blank: 90000, null: 110000, valid },
    candidates,
    final: false,
  };
}

const V1 = 1796199453191;
const V2 = 1796199458204;
const V3 = 1796199463310;

/** The change from `before` to `after` for these two versions, as a generic diff would give it. */
function change(before, after) {
  const patch = [
    { op: 'replace', path: '/version', value: after.version },
    { op: 'replace', path: '/published_at', value: after.published_at },
    { op: 'replace', path: '/progress', value: after.progress },
    { op: 'replace', path: '/totals/turnout', value: after.totals.turnout },
    { op: 'replace', path: '/totals/valid', value: after.totals.valid },
  ];
  after.candidates.forEach((c, i) => patch.push({ op: 'replace', path: `/candidates/${i}`, value: c }));
  assert.deepEqual(applyPatch(before, patch), after, 'the fixture patch is right');
  return { topic: after.topic, base: before.version, version: after.version, patch };
}

test('JSON Pointer: escapes ~1 and ~0, in that order; the whole document is ""', () => {
  assert.deepEqual(parsePointer(''), []);
  assert.deepEqual(parsePointer('/a~1b/m~0n/~01/0'), ['a/b', 'm~n', '~1', '0']);
  assert.deepEqual(parsePointer('/'), ['']);
  assert.throws(() => parsePointer('a'), PatchError);
  assert.throws(() => parsePointer('/a~2'), PatchError);
});

test('applyPatch: every operation on a city document, leaving the original as it was', () => {
  const base = mayors(V1);
  const frozen = structuredClone(base);
  const patch = [
    { op: 'test', path: '/city/name', value: 'São Paulo' },
    { op: 'replace', path: '/candidates/0/votes', value: 1500001 },
    { op: 'add', path: '/held', value: { since: '2028-10-01T22:14:05Z', reason: 'negative', detail: 'c[0]' } },
    { op: 'remove', path: '/held' },
    { op: 'move', from: '/candidates/2', path: '/candidates/0' },
    { op: 'copy', from: '/city', path: '/where' },
    { op: 'replace', path: '/where/name', value: 'Sampa' },
    { op: 'add', path: '/candidates/-', value: { number: 99, name: 'NOVO' } },
    { op: 'add', path: '/candidates/1', value: { number: 77, name: 'MEIO' } },
    { op: 'add', path: '/a~1b', value: 1 },
    { op: 'add', path: '/m~0n', value: 2 },
    { op: 'test', path: '/a~1b', value: 1 },
    { op: 'replace', path: '/progress', value: { sections_counted: 26656, sections_total: 26656, percent: 100 } },
    { op: 'replace', path: '/final', value: true },
  ];
  const out = applyPatch(base, patch);
  assert.deepEqual(base, frozen, 'the base is untouched');
  assert.deepEqual(out.candidates.map((c) => c.number), [50, 77, 45, 13, 99]);
  assert.equal(out.candidates[2].votes, 1500001);
  assert.equal(out.held, undefined);
  assert.equal(out.where.name, 'Sampa');
  assert.equal(out.city.name, 'São Paulo', 'copy copies: the original value is not shared');
  assert.equal(out['a/b'], 1);
  assert.equal(out['m~n'], 2);
  assert.equal(out.final, true);
  assert.deepEqual(Object.keys(out).slice(0, 4), ['version', 'published_at', 'topic', 'kind'], 'replace keeps the order of keys');
  // Nothing mutable shared with the base: changing the new document leaves the base alone.
  out.totals.valid = -1;
  out.candidates[3].votes = -1;
  out.city.slug = 'x';
  assert.deepEqual(base, frozen);
});

test('applyPatch: RFC 6902 corner cases', () => {
  assert.deepEqual(applyPatch({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }]), { foo: ['bar', 'qux', 'baz'] });
  assert.deepEqual(applyPatch({ foo: ['bar', 'qux', 'baz'] }, [{ op: 'remove', path: '/foo/1' }]), { foo: ['bar', 'baz'] });
  assert.deepEqual(applyPatch({ foo: 1 }, [{ op: 'add', path: '', value: [1] }]), [1], 'the whole document');
  assert.deepEqual(applyPatch({ foo: 1 }, [{ op: 'replace', path: '', value: { bar: 2 } }]), { bar: 2 });
  assert.deepEqual(applyPatch({ foo: 1 }, [{ op: 'add', path: '/foo', value: 2 }]), { foo: 2 }, 'add replaces a member');
  assert.deepEqual(applyPatch({ a: { b: 1 } }, [{ op: 'move', from: '/a', path: '/a' }]), { a: { b: 1 } });
  assert.deepEqual(applyPatch({ '': 1 }, [{ op: 'test', path: '/', value: 1 }]), { '': 1 });
  assert.deepEqual(applyPatch({ a: [1, { b: 2 }] }, [{ op: 'test', path: '/a', value: [1, { b: 2 }] }]), { a: [1, { b: 2 }] });
  assert.deepEqual(applyPatch({}, [{ op: 'add', path: '/__proto__', value: { polluted: true } }]).__proto__, { polluted: true });
  assert.equal({}.polluted, undefined);
  const fails = [
    [{ a: 1 }, { op: 'remove', path: '/b' }],
    [{ a: 1 }, { op: 'replace', path: '/b', value: 1 }],
    [{ a: [1] }, { op: 'replace', path: '/a/1', value: 1 }],
    [{ a: [1] }, { op: 'add', path: '/a/2', value: 1 }],
    [{ a: [1] }, { op: 'add', path: '/a/01', value: 1 }],
    [{ a: [1] }, { op: 'remove', path: '/a/-' }],
    [{ a: 1 }, { op: 'add', path: '/b/c', value: 1 }],
    [{ a: 1 }, { op: 'add', path: '/a/c', value: 1 }],
    [{ a: 1 }, { op: 'add', path: '/b' }],
    [{ a: 1 }, { op: 'test', path: '/a', value: '1' }],
    [{ a: [1, 2] }, { op: 'test', path: '/a', value: [2, 1] }],
    [{ a: { b: 1 } }, { op: 'move', from: '/a', path: '/a/b/c' }],
    [{ a: 1 }, { op: 'copy', from: '/x', path: '/y' }],
    [{ a: 1 }, { op: 'remove', path: '' }],
    [{ a: 1 }, { op: 'frobnicate', path: '/a' }],
    [{ a: 1 }, { op: 'remove', path: 'a' }],
  ];
  for (const [doc, op] of fails) {
    const before = structuredClone(doc);
    assert.throws(() => applyPatch(doc, [op]), PatchError, JSON.stringify(op));
    assert.deepEqual(doc, before, 'a failed patch changes nothing');
  }
  assert.throws(() => applyPatch({ a: 1 }, { op: 'remove', path: '/a' }), PatchError, 'not an array');
});

test('SSE: patches build each new version from the one held; callers get a fresh document', async () => {
  const fetch = fakeFetch(() => ({ status: 500 }));
  const { client, clock } = makeClient({ transport: 'sse', fetch });
  const seen = [];
  client.subscribe(SP, (d, meta) => seen.push({ d, meta }));
  await clock.advance(0);
  const es = FakeEventSource.last;
  assert.equal(es.url, `http://gw.test/events?topics=${SP}&delta=1`);
  es.open();
  const [v1, v2, v3] = [mayors(V1), mayors(V2, { counted: 13000, a: 1600000 }), mayors(V3, { counted: 14000, b: 1800000 })];
  es.send('snapshot', v1);
  es.send('patch', change(v1, v2));
  const first = seen[0].d;
  first.candidates.reverse(); // a careless caller sorting in place must not spoil the next patch
  first.progress.percent = -1;
  es.send('patch', change(v2, v3));
  assert.deepEqual(seen.map((s) => [s.meta.version, s.meta.via, !!s.meta.patched]), [[V1, 'sse', false], [V2, 'sse', true], [V3, 'sse', true]]);
  assert.deepEqual(seen[1].d, v2);
  assert.deepEqual(seen[2].d, v3, 'each version exactly the served one');
  assert.equal(seen[2].d.candidates[0].name, 'JOÃO SOUZA', 'the lead changed');
  assert.notEqual(seen[2].d.candidates, seen[1].d.candidates, 'no array shared with the previous version');
  assert.notEqual(seen[2].d.progress, seen[1].d.progress);
  assert.equal(client.get(SP), seen[2].d);
  assert.equal(fetch.requests.length, 0, 'no GET while patches apply');
  client.close();
});

test('WebSocket: subscribe asks for deltas; a patch message applies like the SSE event', async () => {
  const { client, clock } = makeClient({ transport: 'ws' });
  const seen = [];
  client.subscribe(SP, (d, meta) => seen.push({ d, meta }));
  await clock.advance(0);
  const ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'subscribe', topics: [SP], since: 0, delta: true }]);
  const [v1, v2] = [mayors(V1), mayors(V2, { counted: 13000 })];
  ws.receive({ type: 'snapshot', topic: SP, version: V1, document: v1 });
  ws.receive({ type: 'patch', ...change(v1, v2) });
  assert.deepEqual(seen.map((s) => [s.meta.version, s.meta.via, !!s.meta.patched]), [[V1, 'ws', false], [V2, 'ws', true]]);
  assert.deepEqual(seen[1].d, v2);
  client.close();
});

/** A client over SSE holding `v1` of São Paulo, with a gateway whose GET serves `served()`. */
async function holding(v1, served) {
  const fetch = fakeFetch((url) => {
    const d = served();
    return d ? { status: 200, body: d, headers: { etag: `"${d.version}"` } } : 'down';
  });
  const made = makeClient({ transport: 'sse', fetch });
  const seen = [];
  const debug = [];
  made.client.subscribe(SP, (d, meta) => seen.push({ d, meta }));
  made.client.on('debug', (e) => debug.push(e));
  await made.clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', v1);
  return { ...made, seen, debug, es: FakeEventSource.last };
}

test('a patch from another base is not applied: the document is fetched whole by GET', async () => {
  const [v1, v2, v3] = [mayors(V1), mayors(V2, { counted: 13000 }), mayors(V3, { counted: 14000 })];
  const { client, fetch, seen, debug, es } = await holding(v1, () => v3);
  es.send('patch', change(v2, v3)); // the client never saw v2
  await flush();
  assert.deepEqual(fetch.requests, [{ url: `http://gw.test/cities/${SP}.json`, ifNoneMatch: `"${V1}"` }]);
  assert.deepEqual(seen.map((s) => [s.meta.version, s.meta.via, !!s.meta.patched]), [[V1, 'sse', false], [V3, 'probe', false]]);
  assert.deepEqual(seen[1].d, v3);
  assert.equal(debug[0].event, 'patch-refused');
  // The next patch applies to the fetched version.
  const v4 = mayors(V3 + 5000, { counted: 15000 });
  es.send('patch', change(v3, v4));
  assert.deepEqual(seen.at(-1).d, v4);
  assert.equal(seen.at(-1).meta.patched, true);
  assert.equal(fetch.requests.length, 1);
  client.close();
});

test('a patch that fails (a test op, a missing member, a wrong version) is dropped whole for a GET', async () => {
  const [v1, v2] = [mayors(V1), mayors(V2, { counted: 13000 })];
  const bad = [
    [{ op: 'test', path: '/progress/percent', value: 99 }, ...change(v1, v2).patch],
    [...change(v1, v2).patch, { op: 'remove', path: '/nowhere' }],
    change(v1, v2).patch.slice(1), // /version not replaced: not the document at `version`
  ];
  for (const patch of bad) {
    const { client, fetch, seen, es } = await holding(v1, () => v2);
    es.send('patch', { topic: SP, base: V1, version: V2, patch });
    await flush();
    assert.equal(fetch.requests.length, 1, 'one GET');
    assert.deepEqual(seen.map((s) => [s.meta.version, s.meta.via]), [[V1, 'sse'], [V2, 'probe']]);
    assert.deepEqual(seen[1].d, v2, 'only the whole document reaches callbacks');
    client.close();
  }
});

test('while the GET runs, other refused patches wait for it; a GET that fails reopens the stream', async () => {
  const [v1, v2, v3] = [mayors(V1), mayors(V2, { counted: 13000 }), mayors(V3, { counted: 14000 })];
  const { client, clock, fetch, seen, debug, es } = await holding(v1, () => null);
  es.send('patch', change(v2, v3));
  es.send('patch', { ...change(v2, v3), base: V2 + 1, version: V3 + 1 });
  await clock.advance(0);
  assert.equal(fetch.requests.length, 1, 'one GET for the topic at a time');
  assert.equal(seen.length, 1, 'nothing wrongly patched');
  assert.ok(es.closed, 'the stream is reopened');
  assert.equal(FakeEventSource.last.url, `http://gw.test/events?topics=${SP}&delta=1&lastEventId=${V1}`, 'resuming from the version held');
  assert.equal(debug.at(-1).event, 'resubscribe');
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', v3);
  assert.deepEqual(seen.at(-1).d, v3);
  client.close();
});

test('an old or repeated patch is ignored without a GET', async () => {
  const [v1, v2] = [mayors(V1), mayors(V2, { counted: 13000 })];
  const { client, fetch, seen, es } = await holding(v1, () => v2);
  es.send('patch', change(v1, v2));
  es.send('patch', change(v1, v2));
  es.send('patch', { topic: SP, base: V1 - 10, version: V1, patch: [] });
  await flush();
  assert.equal(seen.length, 2);
  assert.equal(fetch.requests.length, 0);
  client.close();
});

test('deltas: false asks for whole documents on both transports', async () => {
  const sse = makeClient({ transport: 'sse', deltas: false });
  sse.client.subscribe(SP, () => {});
  await sse.clock.advance(0);
  assert.equal(FakeEventSource.last.url, `http://gw.test/events?topics=${SP}`);
  sse.client.close();
  const ws = makeClient({ transport: 'ws', deltas: false });
  ws.client.subscribe(SP, () => {});
  await ws.clock.advance(0);
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent, [{ type: 'subscribe', topics: [SP], since: 0 }]);
  assert.equal(ws.client.bases.size, 0, 'no copy kept for patches');
  ws.client.close();
});

// resume.test.mjs — after a reconnect, each transport resumes from the versions already applied.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventsUrl, joinUrl, parseEtag, topicPath, wsUrl } from '../apura.js';
import { FakeEventSource, FakeWebSocket, doc, fakeFetch, makeClient } from './fakes.mjs';

test('URLs follow the contract', () => {
  assert.equal(topicPath('brazil'), '/brazil.json');
  assert.equal(topicPath('cities'), '/cities.json');
  assert.equal(topicPath('state-sp'), '/states/sp.json');
  assert.equal(topicPath('mayors-sp-sao-paulo'), '/cities/mayors-sp-sao-paulo.json');
  assert.equal(topicPath('councillors-al-olho-d-agua-grande'), '/cities/councillors-al-olho-d-agua-grande.json');
  assert.throws(() => topicPath('mayors-sp-São Paulo'), TypeError);
  assert.throws(() => topicPath('../etc'), TypeError);
  assert.equal(joinUrl('http://gw/', '/brazil.json'), 'http://gw/brazil.json');
  assert.equal(joinUrl('https://cdn.example/apura/', '/ws'), 'https://cdn.example/apura/ws');
  assert.equal(eventsUrl('http://gw', ['brazil', 'state-sp']), 'http://gw/events?topics=brazil,state-sp');
  assert.equal(eventsUrl('http://gw', ['brazil'], 42), 'http://gw/events?topics=brazil&lastEventId=42');
  assert.equal(wsUrl('http://gw:8080/'), 'ws://gw:8080/ws');
  assert.equal(wsUrl('https://gw'), 'wss://gw/ws');
  assert.equal(parseEtag('"17"'), 17);
  assert.equal(parseEtag('W/"17"'), 17);
  assert.equal(parseEtag(null), undefined);
});

test('SSE: the first stream has no lastEventId; the reconnect carries the highest version applied', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  client.subscribe('mayors-sp-sao-paulo', () => {});
  await clock.advance(0);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=mayors-sp-sao-paulo&delta=1');
  const es = FakeEventSource.last;
  es.open();
  es.send('snapshot', doc('mayors-sp-sao-paulo', 7));
  es.send('update', doc('mayors-sp-sao-paulo', 9));
  es.send('update', doc('mayors-sp-sao-paulo', 8)); // dropped: must not lower the resume point
  es.fail();
  assert.ok(es.closed, 'the native retry is switched off');
  await clock.advance(statuses.at(-1).delay);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=mayors-sp-sao-paulo&delta=1&lastEventId=9');
  client.close();
});

test('SSE with several topics resumes from the lowest of their versions, so none is skipped', async () => {
  // One stream merges one channel per topic, so brazil@12 may arrive before mayors@10 was sent.
  // Resuming from 12 could skip mayors@10; resuming from 9 costs at most one duplicate of brazil,
  // which the version check drops.
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  client.subscribe(['brazil', 'mayors-sp-sao-paulo'], () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 12));
  FakeEventSource.last.send('snapshot', doc('mayors-sp-sao-paulo', 9));
  FakeEventSource.last.fail();
  await clock.advance(statuses.at(-1).delay);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil,mayors-sp-sao-paulo&delta=1&lastEventId=9');
  client.close();
});

test('SSE: a new topic opens one new stream for all topics, from 0 since the new one is not held', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 12));
  const first = FakeEventSource.last;
  // Switching cities: unsubscribe and subscribe in one go give one new stream, not two.
  const off = client.subscribe(['mayors-sp-sao-paulo', 'councillors-sp-sao-paulo'], () => {});
  await clock.advance(0);
  assert.ok(first.closed);
  assert.equal(FakeEventSource.instances.length, 2);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil,councillors-sp-sao-paulo,mayors-sp-sao-paulo&delta=1');
  off();
  client.subscribe('mayors-rj-rio-de-janeiro', () => {});
  await clock.advance(0);
  assert.equal(FakeEventSource.instances.length, 3);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil,mayors-rj-rio-de-janeiro&delta=1');
  assert.equal(statuses.filter((s) => s.state === 'reconnecting').length, 0, 'a topic change is no outage');
  client.close();
});

test('WebSocket: subscribe carries since; after a reconnect since is the highest version applied', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'ws' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  let ws = FakeWebSocket.last;
  assert.equal(ws.url, 'ws://gw.test/ws');
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'subscribe', topics: ['brazil'], since: 0, delta: true }]);
  ws.receive({ type: 'snapshot', topic: 'brazil', version: 20, document: doc('brazil', 20) });
  ws.receive({ type: 'update', topic: 'brazil', version: 23, document: doc('brazil', 23) });
  ws.fail();
  await clock.advance(statuses.at(-1).delay);
  ws = FakeWebSocket.last;
  ws.open();
  assert.deepEqual(ws.sent, [{ type: 'subscribe', topics: ['brazil'], since: 23, delta: true }]);
  assert.equal(statuses.at(-1).state, 'connected', 'a resumed socket is connected even if nothing changed');
  client.close();
});

test('WebSocket: topic changes are messages on the open socket, not a new connection', async () => {
  const { client, clock } = makeClient({ transport: 'ws' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  const ws = FakeWebSocket.last;
  ws.open();
  ws.receive({ type: 'snapshot', topic: 'brazil', version: 20, document: doc('brazil', 20) });
  const off = client.subscribe('mayors-sp-sao-paulo', () => {});
  off();
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(ws.sent.slice(1), [
    { type: 'subscribe', topics: ['mayors-sp-sao-paulo'], since: 0, delta: true },
    { type: 'unsubscribe', topics: ['mayors-sp-sao-paulo'] },
  ]);
  client.close();
});

test('WebSocket: a topic subscribed again shows the document held at once and resumes from its version', async () => {
  const { client, clock } = makeClient({ transport: 'ws' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  const ws = FakeWebSocket.last;
  ws.open();
  const seen = [];
  const off = client.subscribe('mayors-sp-sao-paulo', (d, meta) => seen.push([meta.version, meta.via]));
  ws.receive({ type: 'snapshot', topic: 'mayors-sp-sao-paulo', version: 30, document: doc('mayors-sp-sao-paulo', 30) });
  off();
  // The gateway sends no second snapshot of version 30 on this socket: the page has it.
  client.subscribe('mayors-sp-sao-paulo', (d, meta) => seen.push([meta.version, meta.via]));
  await clock.advance(0);
  assert.equal(seen.length, 2);
  assert.deepEqual(seen[1], [30, 'cache']);
  assert.deepEqual(ws.sent.slice(1), [
    { type: 'subscribe', topics: ['mayors-sp-sao-paulo'], since: 0, delta: true },
    { type: 'unsubscribe', topics: ['mayors-sp-sao-paulo'] },
    { type: 'subscribe', topics: ['mayors-sp-sao-paulo'], since: 30, delta: true },
  ]);
  client.close();
});

test('WebSocket: an error for an unknown topic is reported and the topic left out of reconnects', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'ws' });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.subscribe(['brazil', 'mayors-sp-nowhere'], () => {});
  await clock.advance(0);
  FakeWebSocket.last.open();
  FakeWebSocket.last.receive({ type: 'error', code: 'unknown_topic', message: 'no such topic', topic: 'mayors-sp-nowhere' });
  assert.equal(errors[0].topic, 'mayors-sp-nowhere');
  FakeWebSocket.last.fail();
  await clock.advance(statuses.at(-1).delay);
  FakeWebSocket.last.open();
  assert.deepEqual(FakeWebSocket.last.sent[0].topics, ['brazil']);
  // Asked again later (a city may be published after the page subscribed), on the same socket.
  await clock.advance(10000);
  assert.deepEqual(FakeWebSocket.last.sent.at(-1), { type: 'subscribe', topics: ['mayors-sp-nowhere'], since: 0, delta: true });
  FakeWebSocket.last.receive({ type: 'error', code: 'unknown_topic', message: 'no such topic', topic: 'mayors-sp-nowhere' });
  assert.equal(errors.length, 1, 'reported once, not at every retry');
  client.close();
});

test('polling: the conditional GET carries the version applied as ETag', async () => {
  const fetch = fakeFetch(() => ({ status: 200, body: doc('brazil', 31), headers: { etag: '"31"' } }));
  const { client, clock } = makeClient({ transport: 'poll', fetch, pollInterval: 1000 });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  await clock.advance(1000);
  assert.deepEqual(
    fetch.requests.map((r) => [r.url, r.ifNoneMatch]),
    [
      ['http://gw.test/brazil.json', undefined],
      ['http://gw.test/brazil.json', '"31"'],
    ],
  );
  client.close();
});

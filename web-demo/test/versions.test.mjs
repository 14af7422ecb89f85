// versions.test.mjs — only newer versions reach callbacks, per topic, on every transport.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VersionBook } from '../apura.js';
import { FakeEventSource, FakeWebSocket, doc, makeClient } from './fakes.mjs';

test('VersionBook accepts strictly newer versions, per topic', () => {
  const book = new VersionBook();
  assert.equal(book.accept('brazil', 5, { v: 5 }), true);
  assert.equal(book.accept('brazil', 5, { v: '5 again' }), false, 'equal is dropped');
  assert.equal(book.accept('brazil', 4, { v: 4 }), false, 'older is dropped');
  assert.equal(book.accept('state-sp', 2, { v: 2 }), true, 'another topic has its own order');
  assert.equal(book.accept('brazil', 6, { v: 6 }), true);
  assert.deepEqual(book.doc('brazil'), { v: 6 });
  assert.equal(book.accept('brazil', NaN, {}), false, 'a document without a version is refused');
});

test('resume point: lowest version held among the topics, 0 when one is missing', () => {
  const book = new VersionBook();
  assert.equal(book.resumePoint([]), 0);
  book.accept('brazil', 12, {});
  assert.equal(book.resumePoint(['brazil']), 12);
  book.accept('mayors-sp-sao-paulo', 9, {});
  assert.equal(book.resumePoint(['brazil', 'mayors-sp-sao-paulo']), 9);
  assert.equal(book.resumePoint(['brazil', 'councillors-sp-sao-paulo']), 0);
});

test('SSE: an older or equal version after a newer one never reaches the callback', async () => {
  const { client, clock } = makeClient({ transport: 'sse' });
  const seen = [];
  client.subscribe(['brazil', 'mayors-sp-sao-paulo'], (d) => seen.push(`${d.topic}@${d.version}`));
  await clock.advance(0);
  const es = FakeEventSource.last;
  es.open();
  es.send('snapshot', doc('brazil', 5));
  es.send('snapshot', doc('mayors-sp-sao-paulo', 2)); // older than brazil's, but its own topic
  es.send('update', doc('brazil', 3));
  es.send('update', doc('brazil', 5));
  es.send('update', doc('mayors-sp-sao-paulo', 7));
  es.send('update', doc('brazil', 6));
  es.send('update', doc('mayors-sp-sao-paulo', 6));
  assert.deepEqual(seen, ['brazil@5', 'mayors-sp-sao-paulo@2', 'mayors-sp-sao-paulo@7', 'brazil@6']);
  assert.equal(client.get('brazil').version, 6);
  client.close();
});

test('WebSocket: the same ordering, and documents of topics not subscribed are ignored', async () => {
  const { client, clock } = makeClient({ transport: 'ws' });
  const seen = [];
  client.subscribe('brazil', (d) => seen.push(d.version));
  await clock.advance(0);
  const ws = FakeWebSocket.last;
  ws.open();
  const send = (type, d) => ws.receive({ type, topic: d.topic, version: d.version, document: d });
  send('snapshot', doc('brazil', 10));
  send('update', doc('brazil', 9));
  send('update', doc('state-sp', 11));
  send('update', doc('brazil', 11));
  assert.deepEqual(seen, [10, 11]);
  client.close();
});

test('a version held survives reconnects: a replayed snapshot is not delivered twice', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  const seen = [];
  client.subscribe('brazil', (d) => seen.push(d.version));
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 8));
  FakeEventSource.last.fail();
  await clock.advance(statuses.at(-1).delay);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 8)); // a gateway that resends anyway
  FakeEventSource.last.send('update', doc('brazil', 9));
  assert.deepEqual(seen, [8, 9]);
  client.close();
});

test('subscribing to a topic already held hands over the document at once', async () => {
  const { client, clock } = makeClient({ transport: 'sse' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 4));
  const seen = [];
  client.subscribe('brazil', (d, meta) => seen.push([d.version, meta.via]));
  await clock.advance(0);
  assert.deepEqual(seen, [[4, 'cache']]);
  client.close();
});

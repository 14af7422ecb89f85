// poll.test.mjs — GET polling with If-None-Match / 304, failures, unknown topics; status over time.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEventSource, doc, fakeFetch, makeClient } from './fakes.mjs';

test('polling: 200 delivers, 304 is silent, an older 200 (a lagging cache) is dropped', async () => {
  const answers = [
    { status: 200, body: doc('mayors-sp-sao-paulo', 5) },
    { status: 304 },
    { status: 200, body: doc('mayors-sp-sao-paulo', 6) },
    { status: 200, body: doc('mayors-sp-sao-paulo', 4) },
    { status: 304 },
  ];
  const fetch = fakeFetch(() => answers.shift());
  const { client, clock } = makeClient({ transport: 'poll', fetch, pollInterval: 3000 });
  const seen = [];
  client.subscribe('mayors-sp-sao-paulo', (d) => seen.push(d.version));
  await clock.advance(0);
  await clock.advance(3000 * 4);
  assert.deepEqual(seen, [5, 6]);
  assert.deepEqual(
    fetch.requests.map((r) => r.ifNoneMatch),
    [undefined, '"5"', '"5"', '"6"', '"6"'],
  );
  assert.ok(fetch.requests.every((r) => r.url === 'http://gw.test/cities/mayors-sp-sao-paulo.json'));
  client.close();
});

test('polling: one request per topic per round; a new topic is fetched at once', async () => {
  const fetch = fakeFetch((url) => ({ status: 200, body: doc(url.includes('brazil') ? 'brazil' : 'state-sp', 1) }));
  const { client, clock } = makeClient({ transport: 'poll', fetch, pollInterval: 5000 });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  assert.equal(fetch.requests.length, 1);
  client.subscribe('state-sp', () => {});
  await clock.advance(0);
  assert.deepEqual(fetch.requests.map((r) => r.url).slice(1).sort(), ['http://gw.test/brazil.json', 'http://gw.test/states/sp.json']);
  client.close();
});

test('polling: a failing gateway backs off, and recovery resets the pace', async () => {
  let up = true;
  const fetch = fakeFetch(() => (up ? { status: 200, body: doc('brazil', 1) } : 'down'));
  const { client, clock, statuses } = makeClient({ transport: 'poll', fetch, pollInterval: 5000 });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  assert.equal(statuses.at(-1).state, 'connected');
  up = false;
  await clock.advance(5000);
  assert.equal(statuses.at(-1).state, 'reconnecting');
  assert.equal(statuses.at(-1).delay, 500);
  await clock.advance(500);
  assert.equal(statuses.at(-1).delay, 1000);
  up = true;
  await clock.advance(1000);
  assert.equal(statuses.at(-1).state, 'connected');
  client.close();
});

test('polling: a 404 topic is reported once and left out until missingRetry', async () => {
  const fetch = fakeFetch((url) =>
    url.includes('nowhere') ? { status: 404, body: { error: 'unknown_topic', message: 'not found' } } : { status: 304 },
  );
  const { client, clock } = makeClient({ transport: 'poll', fetch, pollInterval: 1000 });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.subscribe(['brazil', 'mayors-sp-nowhere'], () => {});
  await clock.advance(0);
  await clock.advance(3000);
  assert.equal(errors.length, 1);
  assert.deepEqual([errors[0].code, errors[0].topic, errors[0].status], ['unknown_topic', 'mayors-sp-nowhere', 404]);
  assert.equal(fetch.requests.filter((r) => r.url.includes('nowhere')).length, 1);
  await clock.advance(7000); // 10 s after the 404
  assert.equal(fetch.requests.filter((r) => r.url.includes('nowhere')).length, 2);
  assert.equal(errors.length, 1);
  client.close();
});

test('status: connected, reconnecting since the drop, stale after staleAfter, connected again', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse', staleAfter: 10000 });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 1));
  assert.equal(statuses.at(-1).state, 'connected');
  const dropped = clock.now();
  FakeEventSource.last.fail();
  assert.deepEqual([statuses.at(-1).state, statuses.at(-1).since], ['reconnecting', dropped]);
  // Keep failing: after 10 s without a connection the data is stale, since the drop.
  while (clock.now() < dropped + 10000) {
    await clock.advance(statuses.at(-1).delay);
    if (clock.now() < dropped + 10000) FakeEventSource.last.fail();
  }
  assert.equal(statuses.at(-1).state, 'stale');
  assert.equal(statuses.at(-1).since, dropped);
  FakeEventSource.last.fail();
  assert.equal(statuses.at(-1).state, 'stale', 'further attempts keep saying stale');
  await clock.advance(statuses.at(-1).delay);
  FakeEventSource.last.open(); // resumed from version 1: open is enough
  assert.equal(statuses.at(-1).state, 'connected');
  client.close();
  assert.equal(statuses.at(-1).state, 'closed');
});

test('close stops everything: no timers left, no new connections', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.fail();
  client.close();
  assert.equal(clock.queue.length, 0);
  await clock.advance(60000);
  assert.equal(FakeEventSource.instances.length, 1);
  assert.equal(statuses.at(-1).state, 'closed');
});

// fallback.test.mjs — 'auto' moves from SSE to WebSocket to polling when streams fail, not when the gateway is down.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEventSource, FakeWebSocket, doc, fakeFetch, makeClient } from './fakes.mjs';

/** A gateway reachable by GET whose brazil.json is at `version.value`. */
function upGateway(version = { value: 5 }) {
  return fakeFetch((url, init) => {
    if (!url.endsWith('/brazil.json')) return { status: 404, body: { error: 'unknown_topic', message: 'no' } };
    if (init.headers['If-None-Match'] === `"${version.value}"`) return { status: 304 };
    return { status: 200, body: doc('brazil', version.value), headers: { etag: `"${version.value}"` } };
  });
}

test('streams refused (503): SSE twice, WebSocket twice, then polling, which connects', async () => {
  const version = { value: 5 };
  const fetch = upGateway(version);
  const { client, clock, statuses } = makeClient({ fetch, pollInterval: 2000 });
  const seen = [];
  client.subscribe('brazil', (d) => seen.push(d.version));
  await clock.advance(0);
  assert.equal(statuses.at(-1).state, 'connecting');
  FakeEventSource.last.fail(); // refused: error without open
  await clock.advance(0); // the probe GET answers: streams are the problem
  assert.equal(FakeEventSource.instances.length, 1);
  await clock.advance(statuses.at(-1).delay);
  assert.equal(FakeEventSource.instances.length, 2);
  FakeEventSource.last.fail();
  await clock.advance(0);
  assert.equal(FakeWebSocket.instances.length, 1, 'second refusal: on to WebSocket at once');
  FakeWebSocket.last.fail();
  await clock.advance(0);
  await clock.advance(statuses.at(-1).delay);
  assert.equal(FakeWebSocket.instances.length, 2);
  FakeWebSocket.last.fail();
  await clock.advance(0);
  assert.equal(client.transport, 'poll');
  assert.deepEqual(statuses.at(-1), { state: 'connected', transport: 'poll', at: clock.now() });
  // The probes already brought version 5; polling goes on and brings 6.
  version.value = 6;
  await clock.advance(2000);
  assert.deepEqual(seen, [5, 6]);
  assert.equal(FakeEventSource.instances.length, 2, 'no stream attempts while polling');
  client.close();
});

test('a buffering proxy (stream open, no snapshot) counts as a failure after snapshotTimeout', async () => {
  const fetch = upGateway();
  const { client, clock } = makeClient({ fetch, snapshotTimeout: 10000, transport: 'auto' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open(); // headers through, events held back
  await clock.advance(9999);
  assert.ok(!FakeEventSource.last.closed);
  await clock.advance(1);
  assert.ok(FakeEventSource.last.closed, 'given up after 10 s');
  await clock.advance(1000); // probe + backoff
  FakeEventSource.last.open();
  await clock.advance(10000);
  assert.equal(FakeWebSocket.instances.length, 1, 'two silent streams: WebSocket next');
  client.close();
});

test('gateway down (GET fails too): no fallback, only backoff on the same transport', async () => {
  const { client, clock, statuses } = makeClient({ fetch: fakeFetch(() => 'down') });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  for (let i = 0; i < 5; i++) {
    FakeEventSource.last.fail();
    await clock.advance(0);
    await clock.advance(statuses.at(-1).delay);
  }
  assert.equal(FakeEventSource.instances.length, 6);
  assert.equal(FakeWebSocket.instances.length, 0);
  client.close();
});

test('a stream that worked and then drops is retried, not abandoned', async () => {
  const { client, clock, statuses } = makeClient({ fetch: upGateway() });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 5));
  for (let i = 0; i < 3; i++) {
    FakeEventSource.last.fail(); // e.g. the gateway restarts
    await clock.advance(statuses.at(-1).delay);
    FakeEventSource.last.open(); // resumed (since 5): open is success
  }
  assert.equal(FakeWebSocket.instances.length, 0);
  assert.equal(statuses.at(-1).state, 'connected');
  assert.equal(statuses.at(-1).transport, 'sse');
  client.close();
});

test('after upgradeAfter on fallback polling, streams are tried again', async () => {
  const fetch = upGateway();
  const { client, clock, statuses } = makeClient({ fetch, upgradeAfter: 60000, pollInterval: 5000 });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  for (let i = 0; i < 4; i++) {
    (client.transport === 'sse' ? FakeEventSource : FakeWebSocket).last.fail();
    await clock.advance(0);
    await clock.advance(statuses.at(-1).delay ?? 0);
  }
  assert.equal(client.transport, 'poll');
  const streams = FakeEventSource.instances.length;
  await clock.advance(60000);
  assert.equal(FakeEventSource.instances.length, streams + 1, 'an upgrade attempt');
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil&delta=1', 'from 0: a full snapshot proves the stream');
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 5));
  assert.equal(client.transport, 'sse');
  assert.equal(statuses.at(-1).transport, 'sse');
  client.close();
});

test('a failed upgrade goes back to polling without showing an outage', async () => {
  const fetch = upGateway();
  const { client, clock, statuses } = makeClient({ fetch, upgradeAfter: 60000, transport: 'auto' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  for (let i = 0; i < 4; i++) {
    (client.transport === 'sse' ? FakeEventSource : FakeWebSocket).last.fail();
    await clock.advance(0);
    await clock.advance(statuses.at(-1).delay ?? 0);
  }
  const before = statuses.length;
  await clock.advance(60000);
  FakeEventSource.last.fail();
  await clock.advance(0);
  assert.equal(client.transport, 'poll');
  assert.ok(statuses.slice(before).every((s) => s.state === 'connected'), JSON.stringify(statuses.slice(before)));
  client.close();
});

test('SSE refused for an unknown topic: reported, left out, the stream retried without it', async () => {
  const fetch = upGateway(); // 404 for anything but brazil
  const { client, clock } = makeClient({ fetch });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.subscribe(['brazil', 'mayors-sp-nowhere'], () => {});
  await clock.advance(0);
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil,mayors-sp-nowhere&delta=1');
  FakeEventSource.last.fail(); // the gateway answered 404 to the whole stream
  await clock.advance(0);
  assert.deepEqual(errors.map((e) => [e.code, e.topic]), [['unknown_topic', 'mayors-sp-nowhere']]);
  assert.equal(FakeEventSource.instances.length, 2, 'retried at once');
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil&delta=1');
  assert.equal(client.transport, 'sse', 'not a reason to fall back');
  client.close();
});

test('unsubscribing from everything closes the connection and goes idle', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  const off = client.subscribe('brazil', () => {});
  await clock.advance(0);
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 1));
  off();
  assert.ok(FakeEventSource.last.closed);
  assert.equal(statuses.at(-1).state, 'idle');
  await clock.advance(60000);
  assert.equal(FakeEventSource.instances.length, 1);
  client.close();
});

test('a topic the gateway does not know yet (warming up) is asked for again and arrives', async () => {
  let ready = false;
  const fetch = fakeFetch((url) => (ready ? { status: 200, body: doc('brazil', 3) } : { status: 404, body: { error: 'unknown_topic', message: 'no' } }));
  const { client, clock } = makeClient({ fetch, missingRetry: 10000 });
  const errors = [];
  const seen = [];
  client.on('error', (e) => errors.push(e.topic));
  client.subscribe(['brazil', 'state-sp'], (d) => seen.push(d.topic));
  await clock.advance(0);
  FakeEventSource.last.fail(); // 404: neither topic exists yet
  await clock.advance(0);
  assert.deepEqual(errors, ['brazil', 'state-sp']);
  const streams = FakeEventSource.instances.length;
  ready = true;
  await clock.advance(10000);
  assert.equal(FakeEventSource.instances.length, streams + 1, 'asked again after missingRetry');
  assert.equal(FakeEventSource.last.url, 'http://gw.test/events?topics=brazil,state-sp&delta=1');
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', doc('brazil', 3));
  assert.deepEqual(seen, ['brazil']);
  client.close();
});

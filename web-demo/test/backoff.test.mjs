// backoff.test.mjs — exponential backoff with full jitter: growth, cap, bounds, reset.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, backoffCeiling, backoffDelay } from '../apura.js';
import { FakeEventSource, makeClient } from './fakes.mjs';

test('the ceiling doubles from the base and stops at the cap', () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7].map((n) => backoffCeiling(n, { base: 1000, cap: 30000 }));
  assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoffCeiling(10_000, { base: 1000, cap: 30000 }), 30000, 'no overflow to Infinity');
});

test('full jitter spans [0, ceiling) and scales with random()', () => {
  assert.equal(backoffDelay(3, { random: () => 0 }), 0);
  assert.equal(backoffDelay(3, { random: () => 0.5 }), 4000);
  assert.equal(backoffDelay(3, { random: () => 0.999999 }), 7999);
  for (let attempt = 0; attempt < 8; attempt++) {
    const ceiling = backoffCeiling(attempt);
    const samples = Array.from({ length: 2000 }, () => backoffDelay(attempt));
    assert.ok(samples.every((d) => Number.isInteger(d) && d >= 0 && d < ceiling), `bounds at ${attempt}`);
    // Uniform over the range: both ends are visited.
    assert.ok(Math.min(...samples) < ceiling * 0.1 && Math.max(...samples) > ceiling * 0.9);
  }
});

test('Backoff counts attempts and reset starts again from the base', () => {
  const b = new Backoff({ base: 1000, cap: 30000, random: () => 0.5 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [500, 1000, 2000, 4000, 8000, 15000]);
  b.reset();
  assert.equal(b.next(), 500);
});

test('the client waits backoff delays between failed attempts and resets after a success', async () => {
  const { client, clock, statuses } = makeClient({ transport: 'sse' });
  client.subscribe('brazil', () => {});
  await clock.advance(0);
  const delays = [];
  for (let i = 0; i < 7; i++) {
    FakeEventSource.last.fail();
    const s = statuses.at(-1);
    delays.push(s.delay);
    await clock.advance(s.delay);
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000]);
  assert.equal(FakeEventSource.instances.length, 8, 'one new stream per attempt');
  // Success (a snapshot arrives), then a drop: the delay is back to the first step.
  FakeEventSource.last.open();
  FakeEventSource.last.send('snapshot', { topic: 'brazil', version: 3 });
  assert.equal(statuses.at(-1).state, 'connected');
  FakeEventSource.last.fail();
  assert.equal(statuses.at(-1).state, 'reconnecting');
  assert.equal(statuses.at(-1).delay, 500);
  client.close();
});

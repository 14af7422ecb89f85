// compression.test.mjs — headless Chromium against a live `apura demo`: its EventSource gets the
// stream gzip-compressed and its WebSocket negotiates permessage-deflate, and both carry the same
// documents as GET.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { check, cleanUpAfterAll, launchBrowser, startDemo } from './harness.mjs';

const TOPICS = ['brazil', 'state-sp', 'mayors-sp-sao-paulo'];
const path = (t) => (t === 'brazil' ? '/brazil.json' : t.startsWith('state-') ? `/states/${t.slice(6)}.json` : `/cities/${t}.json`);

let browser;
const cleanups = [];
cleanUpAfterAll(cleanups, () => browser, 'compression');

/**
 * In the page: follow `topics` for `ms` over `transport` ('sse' or 'ws'); for every document
 * received, GET its topic at once and keep both when GET still serves that version.
 */
function follow(page, transport, topics, ms) {
  return page.evaluate(
    async ({ transport, topics, ms, paths }) => {
      const seen = [];
      let extensions = null;
      const compare = async (topic, version, doc) => {
        const res = await fetch(paths[topic], { cache: 'no-store' });
        const got = await res.json();
        seen.push({ topic, version, same: got.version === version ? JSON.stringify(got) === JSON.stringify(doc) : null });
      };
      await new Promise((resolve, reject) => {
        setTimeout(resolve, ms);
        if (transport === 'sse') {
          const es = new EventSource(`/events?topics=${topics.join(',')}`);
          for (const type of ['snapshot', 'update']) {
            es.addEventListener(type, (e) => {
              const doc = JSON.parse(e.data);
              compare(doc.topic, Number(e.lastEventId), doc);
            });
          }
          es.onerror = () => reject(new Error('EventSource error'));
        } else {
          const ws = new WebSocket(`${location.origin.replace('http', 'ws')}/ws`);
          ws.onopen = () => {
            extensions = ws.extensions;
            ws.send(JSON.stringify({ type: 'subscribe', topics }));
          };
          ws.onmessage = (e) => {
            const m = JSON.parse(e.data);
            if (m.type === 'snapshot' || m.type === 'update') compare(m.topic, m.version, m.document);
          };
          ws.onerror = () => reject(new Error('WebSocket error'));
        }
      });
      await new Promise((r) => setTimeout(r, 500));
      return { seen, extensions };
    },
    { transport, topics, ms, paths: Object.fromEntries(topics.map((t) => [t, path(t)])) },
  );
}

function summarize(seen) {
  const compared = seen.filter((s) => s.same !== null);
  assert.ok(seen.length >= TOPICS.length, `only ${seen.length} documents received`);
  assert.ok(compared.length >= TOPICS.length, `only ${compared.length} documents compared with GET`);
  const different = compared.filter((s) => !s.same);
  assert.deepEqual(different, [], 'documents that differ from GET at the same version');
  return `${seen.length} documents, ${compared.length} equal to GET at their version`;
}

test('Chromium: EventSource over gzip, WebSocket with permessage-deflate, same documents as GET', { timeout: 180_000 }, async () => {
  const demo = await startDemo();
  cleanups.push(() => demo.stop());
  browser = await launchBrowser();
  const context = await browser.newContext();
  cleanups.push(() => context.close());
  const page = await context.newPage();
  const streams = [];
  page.on('response', (r) => r.url().includes(`/events?topics=${TOPICS.join(',')}`) && streams.push(r));
  await page.goto(`${demo.url}/index.html`);

  await check('EventSource: the stream comes with Content-Encoding: gzip and its events arrive', async () => {
    const { seen } = await follow(page, 'sse', TOPICS, 8_000);
    assert.equal(streams.length, 1, 'one EventSource response');
    const headers = await streams[0].allHeaders();
    assert.equal(headers['content-encoding'], 'gzip');
    assert.match(headers['content-type'], /text\/event-stream/);
    return `content-encoding: ${headers['content-encoding']}; ${summarize(seen)}`;
  });

  await check('WebSocket: permessage-deflate negotiated and its messages arrive', async () => {
    const { seen, extensions } = await follow(page, 'ws', TOPICS, 8_000);
    assert.match(extensions ?? '', /^permessage-deflate/);
    assert.match(extensions, /server_no_context_takeover/);
    return `extensions: ${extensions}; ${summarize(seen)}`;
  });
});

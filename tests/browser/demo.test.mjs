// demo.test.mjs — end to end: the web demo in headless Chromium against a live `apura demo`.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { check, launchBrowser, results, screenshot, startDemo, startProxy } from './harness.mjs';

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const SP = 'mayors-sp-sao-paulo';

let browser;
const cleanups = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => {});
  await browser?.close();
  const passed = results.filter((r) => r.ok).length;
  console.log(`\n${passed}/${results.length} browser checks passed`);
});

async function openPage(url, viewport = DESKTOP) {
  browser ??= await launchBrowser();
  const context = await browser.newContext({ viewport, locale: 'pt-BR', timezoneId: 'America/Sao_Paulo' });
  cleanups.push(() => context.close());
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  await page.goto(url);
  return page;
}

const status = (page) => page.evaluate(() => ({ ...document.querySelector('#status').dataset, label: document.querySelector('#status .label').textContent }));
const counted = (page) => page.evaluate(() => Number(document.querySelector('#city-pct').dataset.value));
const held = (page, topic) => page.evaluate((t) => window.apura.client.book.version(t), topic);

/** Wait until São Paulo's % counted differs from `before` (the count moved on screen). */
async function waitCountMoves(page, before, timeout = 60_000) {
  await page.waitForFunction(
    (v) => {
      const el = document.querySelector('#city-pct');
      return el.dataset.value !== undefined && el.dataset.value !== '' && Number(el.dataset.value) !== v;
    },
    before,
    { timeout, polling: 200 },
  );
  return counted(page);
}

async function waitStatus(page, states, transport, timeout) {
  await page.waitForFunction(
    ([states, transport]) => {
      const d = document.querySelector('#status').dataset;
      return states.includes(d.state) && (!transport || d.transport === transport);
    },
    [states, transport],
    { timeout, polling: 100 },
  );
  return status(page);
}

test('live page over SSE: search, live mayor race, national view, outage and resume', { timeout: 300_000 }, async () => {
  const demo = await startDemo();
  cleanups.push(() => demo.stop());
  const proxy = await startProxy(demo.port);
  cleanups.push(() => proxy.stop());
  console.log(`apura demo on ${demo.url} (${demo.args.join(' ')}), page through proxy ${proxy.url}`);
  const page = await openPage(`${proxy.url}/`);
  const streams = [];
  page.on('request', (r) => r.url().includes('/events?') && streams.push(r.url()));

  await check('status indicator says "conectado" over SSE', async () => {
    const s = await waitStatus(page, ['connected'], 'sse', 20_000);
    assert.match(s.label, /conectado/);
    return s.label;
  });

  await check('national view: progress, 27-state cartogram, capitals with leaders, parties', async () => {
    await page.waitForFunction(() => document.querySelector('#br-pct').dataset.value !== undefined, null, { timeout: 15_000 });
    assert.equal(await page.locator('#br-map .tile').count(), 27);
    await page.waitForFunction(() => document.querySelectorAll('#br-capitals li').length >= 20, null, { timeout: 15_000 });
    const caps = await page.locator('#br-capitals li').count();
    assert.match(await page.locator('#br-cities').textContent(), /municípios com apuração encerrada/);
    return `${caps} capitals, national ${await page.locator('#br-pct').textContent()} counted`;
  });

  await check('search without accents: "sao paulo" lists São Paulo (SP) first', async () => {
    await page.waitForFunction(() => !document.querySelector('#search').disabled, null, { timeout: 15_000 });
    await page.fill('#search', 'sao paulo');
    const first = page.locator('#suggestions li').first();
    await first.waitFor();
    assert.equal(await first.locator('.sug-name').textContent(), 'São Paulo');
    assert.equal(await first.locator('.sug-uf').textContent(), 'SP');
    return (await page.locator('#suggestions li .sug-name').allTextContents()).slice(0, 4).join(' | ');
  });

  await check('search "São Paulo" and choose it: URL becomes #/sp/sao-paulo', async () => {
    await page.fill('#search', 'São Paulo');
    const sp = page.locator('#suggestions li').filter({ has: page.locator('.sug-uf', { hasText: /^SP$/ }) })
      .filter({ has: page.locator('.sug-name', { hasText: /^São Paulo$/ }) });
    await sp.click();
    await page.waitForFunction(() => location.hash === '#/sp/sao-paulo');
    await page.locator('#city-name').filter({ hasText: 'São Paulo' }).waitFor();
  });

  await check('mayor race: candidate bars with pt-BR votes and percentages', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#mayor-list li.cand').length > 1, null, { timeout: 15_000 });
    await page.waitForTimeout(1000); // let the count-up settle
    const rows = await page.$$eval('#mayor-list li.cand', (lis) => lis.map((li) => ({
      name: li.querySelector('.cand-name').textContent,
      votes: li.querySelector('.votes').textContent,
      pct: li.querySelector('.cand-pct').textContent,
      bar: li.querySelector('.bar span').style.width,
    })));
    for (const r of rows) {
      assert.match(r.votes, /^\d{1,3}(\.\d{3})*$/, `votes of ${r.name}`);
      assert.match(r.pct, /^\d{1,3},\d{2}%$/, `percent of ${r.name}`);
    }
    assert.match(await page.locator('#city-progress').textContent(), /das seções apuradas/);
    assert.match(await page.locator('#city-updated').textContent(), /atualizado há \d+ (s|min)/);
    return `${rows.length} candidates, leader ${rows[0].name} ${rows[0].pct} (${rows[0].votes} votos)`;
  });

  await check('councillors: compact ranked table, "ver todos" shows the rest', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#council-body tbody tr').length > 0, null, { timeout: 15_000 });
    const top = await page.locator('#council-body tbody tr').count();
    assert.ok(top <= 10);
    if (await page.locator('#council-more').isVisible()) {
      await page.click('#council-more');
      const all = await page.locator('#council-body tbody tr').count();
      assert.ok(all > top);
      await page.click('#council-more');
      return `top ${top}, ${all} with "ver todos"`;
    }
    return `${top} candidates`;
  });

  await check('numbers change as the simulated count advances', async () => {
    const before = await counted(page);
    const afterValue = await waitCountMoves(page, before);
    return `${before}% → ${afterValue}% counted`;
  });

  await check('delivery latency, published_at to page (informational)', async () => {
    // Wait for a few live documents (a cycle every --interval; slower with a debug build).
    const lat = await page.evaluate(() => new Promise((resolve) => {
      const seen = [];
      const done = () => (off(), resolve(seen.sort((a, b) => a - b)));
      const off = window.apura.client.on('document', (d) => seen.push(Date.now() - d.published_at) >= 4 && done());
      setTimeout(done, 30_000);
    }));
    assert.ok(lat.length > 0, 'documents arrived');
    return `${lat.length} documents, median ${lat[lat.length >> 1]} ms, max ${lat.at(-1)} ms`;
  });

  await check('reload keeps the chosen city (hash)', async () => {
    await page.reload();
    await page.locator('#city-name').filter({ hasText: 'São Paulo' }).waitFor({ timeout: 15_000 });
    await page.waitForFunction(() => document.querySelector('#city-pct').dataset.value !== undefined, null, { timeout: 15_000 });
    await waitStatus(page, ['connected'], 'sse', 20_000);
  });

  await screenshot(page.locator('#city'), 'city-desktop.png');
  await screenshot(page.locator('#national'), 'national-desktop.png');
  await page.evaluate(() => window.scrollTo(0, 0));
  await screenshot(page, 'page-desktop.png');

  let streamsBeforeCut;
  await check('stream cut: status goes to "reconectando"', async () => {
    streamsBeforeCut = streams.length;
    await proxy.cut();
    const s = await waitStatus(page, ['reconnecting', 'stale'], null, 15_000);
    assert.match(s.label, /reconectando/);
    await screenshot(page.locator('.masthead'), 'status-reconnecting-desktop.png');
    return s.label;
  });
  await page.waitForTimeout(3000);
  const atRestore = await counted(page);
  const versionAtRestore = await held(page, SP);
  await proxy.restore();

  await check('stream back: status returns to "conectado", resumed with lastEventId', async () => {
    const s = await waitStatus(page, ['connected'], 'sse', 45_000);
    const resumed = streams.slice(streamsBeforeCut).map((u) => new URL(u).searchParams.get('lastEventId'));
    const since = Number(resumed.at(-1));
    assert.ok(since > 0, `the reconnect resumes (lastEventId=${resumed.at(-1)})`);
    assert.ok(since <= versionAtRestore || since <= (await held(page, 'brazil')), 'from a version the page held');
    return `${s.label}; ${resumed.length} reconnect attempt(s), lastEventId=${since}`;
  });

  await check('numbers move again after the outage', async () => {
    const v = await waitCountMoves(page, atRestore);
    assert.ok((await held(page, SP)) > versionAtRestore, 'a newer version was applied');
    return `${atRestore}% → ${v}% counted`;
  });

  await check('phone width (375 px): no horizontal scroll', async () => {
    await page.setViewportSize(PHONE);
    await page.waitForTimeout(500);
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= inner, `scrollWidth ${scroll} > ${inner}`);
  });
  await screenshot(page.locator('#city'), 'city-phone.png');
  await screenshot(page.locator('#national'), 'national-phone.png');
  await page.evaluate(() => window.scrollTo(0, 0));
  await screenshot(page, 'page-phone.png');

  await check('no script errors in the page', async () => {
    assert.deepEqual(page.errors, []);
  });

  await check('WebSocket transport (?transport=ws): connects and updates', async () => {
    const ws = await openPage(`${demo.url}/?transport=ws#/sp/sao-paulo`);
    const s = await waitStatus(ws, ['connected'], 'ws', 20_000);
    await ws.waitForFunction(() => document.querySelector('#city-pct').dataset.value !== undefined, null, { timeout: 15_000 });
    const before = await counted(ws);
    const v = await waitCountMoves(ws, before);
    assert.deepEqual(ws.errors, []);
    return `${s.label}; ${before}% → ${v}% counted`;
  });
});

test('streams disabled (503): the page falls back to polling and still updates', { timeout: 240_000 }, async () => {
  // The page is opened as soon as the gateway serves it, before its first publication: topics
  // are unknown (404) for a while and must be asked for again, not given up.
  const demo = await startDemo({ disableStreams: true, warm: false });
  cleanups.push(() => demo.stop());
  console.log(`apura demo --disable-streams on ${demo.url}`);
  const page = await openPage(`${demo.url}/#/sp/sao-paulo`);

  await check('gateway refuses /events and /ws with 503', async () => {
    const events = await fetch(`${demo.url}/events?topics=brazil`);
    const ws = await fetch(`${demo.url}/ws`);
    assert.equal(events.status, 503);
    assert.equal(ws.status, 503);
  });

  await check('page opened during warm-up gets São Paulo and the national view once published', async () => {
    await page.locator('#city-name').filter({ hasText: 'São Paulo' }).waitFor({ timeout: 60_000 });
    await page.waitForFunction(() => document.querySelectorAll('#mayor-list li.cand').length > 1, null, { timeout: 60_000 });
    await page.waitForFunction(() => document.querySelectorAll('#br-capitals li').length >= 20, null, { timeout: 60_000 });
  });

  await check('page falls back to polling: "conectado · consulta periódica"', async () => {
    const s = await waitStatus(page, ['connected'], 'poll', 45_000);
    assert.match(s.label, /consulta periódica/);
    return s.label;
  });

  await check('São Paulo result shown and updating via polling', async () => {
    await page.waitForFunction(() => document.querySelectorAll('#mayor-list li.cand').length > 1, null, { timeout: 20_000 });
    const before = await counted(page);
    const v = await waitCountMoves(page, before, 90_000);
    return `${before}% → ${v}% counted`;
  });
  await screenshot(page.locator('#city'), 'city-polling-desktop.png');

  await check('no script errors in the polling page', async () => {
    assert.deepEqual(page.errors, []);
  });
});

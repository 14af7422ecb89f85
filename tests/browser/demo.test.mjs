// demo.test.mjs — end to end: the web demo in headless Chromium against a live `apura demo`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { check, cleanUpAfterAll, launchBrowser, repoRoot, screenshot, startDemo, startProxy } from './harness.mjs';

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const SP = 'mayors-sp-sao-paulo';

let browser;
const cleanups = [];
cleanUpAfterAll(cleanups, () => browser, 'browser');

async function openPage(url, viewport = DESKTOP, beforeGoto = () => {}) {
  browser ??= await launchBrowser();
  const context = await browser.newContext({ viewport, locale: 'pt-BR', timezoneId: 'America/Sao_Paulo' });
  cleanups.push(() => context.close());
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  beforeGoto(page);
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

/**
 * In the page: wait for `want` documents the client built from patches (within `ms`), GET each
 * one's topic at once and compare, key order aside, when GET still serves that version; then the
 * same for São Paulo's mayor race as rendered, with its % counted on screen.
 */
function patchesAgainstGet(page, want, ms = 30_000) {
  return page.evaluate(async ({ want, ms }) => {
    const { client, state } = window.apura;
    const path = (t) => (t === 'brazil' ? 'brazil.json' : t.startsWith('state-') ? `states/${t.slice(6)}.json` : `cities/${t}.json`);
    const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === 'object' && !Array.isArray(x)
      ? Object.fromEntries(Object.keys(x).sort().map((key) => [key, x[key]])) : x));
    const get = async (topic) => (await fetch(new URL(path(topic), client.baseUrl), { cache: 'no-store' })).json();
    const checks = [];
    await new Promise((resolve) => {
      const done = () => (off(), clearTimeout(timer), resolve());
      const timer = setTimeout(done, ms);
      const off = client.on('document', (doc, meta) => {
        if (!meta.patched) return;
        const text = canon(doc);
        checks.push(get(meta.topic).then((got) => ({
          topic: meta.topic, version: meta.version, same: got.version === meta.version ? canon(got) === text : null,
        })));
        if (checks.length >= want) done();
      });
    });
    const patched = await Promise.all(checks);
    let shown = null;
    for (let i = 0; i < 20 && !shown; i++) {
      const held = state.mayor;
      const got = await get(held.topic);
      if (got.version === held.version) {
        shown = {
          version: held.version,
          same: canon(got) === canon(held),
          pct: Number(document.querySelector('#city-pct').dataset.value),
          getPct: got.progress.percent,
        };
      }
    }
    return { patched, shown };
  }, { want, ms });
}

/** Assert what `patchesAgainstGet` found. */
function assertPatchesLikeGet({ patched, shown }, want) {
  assert.ok(patched.length >= want, `${patched.length} patched documents, wanted ${want}`);
  const compared = patched.filter((p) => p.same !== null);
  assert.ok(compared.length > 0, 'a patched document compared with GET at its version');
  assert.deepEqual(patched.filter((p) => p.same === false), [], 'patched documents that differ from GET');
  assert.ok(shown, 'the mayor race as shown compared with GET at its version');
  assert.ok(shown.same, 'the mayor race as shown is what GET serves');
  assert.equal(shown.pct, shown.getPct, '% counted on screen');
  return `${patched.length} patched documents (${[...new Set(patched.map((p) => p.topic))].join(', ')}), ` +
    `${compared.length} equal to GET at their version; São Paulo shows ${shown.pct}% like GET`;
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
    await check('the data are labelled "simulação" (the brazil document says source: simulation)', async () => {
      assert.equal(await page.evaluate(() => window.apura.state.brazil.source), 'simulation');
      assert.ok(await page.locator('#sim-label').isVisible(), 'simulation label visible');
      assert.equal((await page.locator('#sim-label').textContent()).trim(), 'simulação');
      assert.match(await page.locator('#source-text').textContent(), /simulação/);
    });
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

  await check('deltas: the stream asks for them, the page applies patches, and shows what GET serves', async () => {
    assert.ok(streams.length > 0 && streams.every((u) => new URL(u).searchParams.get('delta') === '1'), `delta=1 in ${streams}`);
    return assertPatchesLikeGet(await patchesAgainstGet(page, 4), 4);
  });

  await check('progress beside counted votes never reads "0,0%"', async () => {
    await page.waitForFunction(() => document.querySelector('#br-capitals .cap-leader .who'), null, { timeout: 30_000 });
    const cards = await page.$$eval('#br-capitals li', (lis) => lis.map((li) => ({
      votes: !!li.querySelector('.cap-leader .who'),
      pct: li.querySelector('.cap-pct').textContent,
    })));
    const bad = cards.filter((c) => c.votes && /^0,0+%/.test(c.pct));
    assert.deepEqual(bad, [], 'a capital with votes shows 0,0 %');
    return cards.filter((c) => c.votes).map((c) => c.pct).slice(0, 4).join(' | ');
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

  await check('WebSocket transport (?transport=ws): connects and updates, with deltas', async () => {
    const sent = [];
    let patches = 0;
    const ws = await openPage(`${demo.url}/?transport=ws#/sp/sao-paulo`, DESKTOP, (p) => p.on('websocket', (socket) => {
      socket.on('framesent', (f) => sent.push(JSON.parse(f.payload)));
      socket.on('framereceived', (f) => (patches += JSON.parse(f.payload).type === 'patch'));
    }));
    const s = await waitStatus(ws, ['connected'], 'ws', 20_000);
    await ws.waitForFunction(() => document.querySelector('#city-pct').dataset.value !== undefined, null, { timeout: 15_000 });
    const before = await counted(ws);
    const v = await waitCountMoves(ws, before);
    const subscribes = sent.filter((m) => m.type === 'subscribe');
    assert.ok(subscribes.length > 0 && subscribes.every((m) => m.delta === true), `delta: true in ${JSON.stringify(subscribes)}`);
    const applied = assertPatchesLikeGet(await patchesAgainstGet(ws, 2), 2);
    assert.ok(patches >= 2, `${patches} patch messages received`);
    assert.deepEqual(ws.errors, []);
    return `${s.label}; ${before}% → ${v}% counted; ${patches} patch messages; ${applied}`;
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

/**
 * Save a screenshot of what the test just checked, with the others; with
 * APURA_UPDATE_SCREENSHOTS=1 also where the README shows it (docs/images/), so that a test run
 * leaves the repository as it was unless asked.
 */
async function keep(page, name) {
  const file = await screenshot(page, name);
  if (process.env.APURA_UPDATE_SCREENSHOTS !== '1') return file;
  const kept = path.join(repoRoot, 'docs', 'images', name);
  fs.copyFileSync(file, kept);
  return kept;
}

test('after the count: simulation label, second rounds with both candidates, photos, no-election places', { timeout: 240_000 }, async () => {
  // A short night, so that the count ends and the large cities without a majority go to a
  // second round (a single seed: the same capitals every run).
  const demo = await startDemo({ duration: '15s' });
  cleanups.push(() => demo.stop());
  const page = await openPage(`${demo.url}/`);
  await page.waitForFunction(() => {
    const b = window.apura?.state.brazil;
    return b && b.progress.cities_final === b.progress.cities_total;
  }, null, { timeout: 90_000, polling: 250 });
  const runoff = await page.evaluate(() => window.apura.state.brazil.capitals.find((c) => c.second_round?.length === 2));
  assert.ok(runoff, 'a capital goes to a second round');
  const names = runoff.second_round.map((c) => c.name);

  await check('national view: the second-round capital shows both candidates, marked "2º turno"', async () => {
    const card = page.locator(`#br-capitals li[data-uf="${runoff.uf}"]`);
    await card.locator('.cap-leader').nth(1).waitFor();
    assert.equal(await card.locator('.cap-leader').count(), 2);
    const shown = await card.locator('.cap-leader .who').allTextContents();
    assert.deepEqual(shown.map((n) => n.toUpperCase()), names.map((n) => n.toUpperCase()));
    assert.equal(await card.locator('.mark.second').textContent(), '2º turno');
    return `${runoff.name}: ${shown.join(' × ')}`;
  });

  await check('party chart: second rounds count apart, not as "liderando"', async () => {
    const parties = await page.evaluate(() => window.apura.state.brazil.parties);
    assert.ok(parties.every((p) => p.leading === 0), 'no party leads once every count is over');
    assert.ok(parties.some((p) => p.second_round > 0));
    const labels = await page.locator('#br-parties-list li .pnum').allTextContents();
    assert.ok(labels.some((l) => /2ºT/.test(l)), 'second rounds shown in the chart');
    const cut = await page.$$eval('#br-parties-list .pname', (els) => els.filter((e) => e.scrollWidth > e.clientWidth).map((e) => e.textContent));
    assert.deepEqual(cut, [], 'party names shown whole');
  });

  await check('following a capital link: the city shows, the header covers no part of the search box', async () => {
    await page.click(`#br-capitals li[data-uf="${runoff.uf}"] a`);
    await page.locator('#city-name').filter({ hasText: runoff.name }).waitFor();
    await page.waitForTimeout(1200); // the smooth scroll
    const [head, search] = await page.evaluate(() => [
      document.querySelector('.masthead').getBoundingClientRect().bottom,
      document.querySelector('#search').getBoundingClientRect().top,
    ]);
    assert.ok(search >= head, `search box top ${search} under the header bottom ${head}`);
    const name = await page.evaluate(() => document.querySelector('#city-name').getBoundingClientRect().top);
    assert.ok(name > head && name < (await page.evaluate(() => innerHeight)), `the city's name on screen (${name} px)`);
    return `header ends at ${head} px, search box starts at ${search} px, city name at ${name} px`;
  });

  for (const [viewport, name] of [[{ width: 1280, height: 900 }, 'page-1280.png'], [{ width: 390, height: 844 }, 'page-390.png']]) {
    await check(`${viewport.width} px: label, "${runoff.name}" with both candidates and their photos on screen`, async () => {
      await page.setViewportSize(viewport);
      await page.evaluate(() => document.querySelector('.search').scrollIntoView({ block: 'start' }));
      await page.waitForFunction(() => document.querySelectorAll('#mayor-list li.cand').length > 1, null, { timeout: 15_000 });
      await page.waitForTimeout(900); // count-ups settle
      assert.ok(await page.locator('#sim-label').isVisible(), 'simulation label visible');
      assert.ok(await page.locator('#mayor-runoff').isVisible(), 'second-round note visible');
      const note = (await page.locator('#mayor-runoff').textContent()).toUpperCase();
      for (const n of names) assert.ok(note.includes(n.toUpperCase()), `${n} in "${note}"`);
      const seconds = page.locator('#mayor-list li.cand').filter({ has: page.locator('.mark.second') });
      assert.equal(await seconds.count(), 2, 'both candidates marked 2º turno');
      const photos = await seconds.locator('img.photo').evaluateAll((imgs) => imgs.map((i) => {
        const r = i.getBoundingClientRect();
        return { alt: i.alt, loaded: i.complete && i.naturalWidth > 0, inView: r.bottom <= innerHeight && r.top >= 0 };
      }));
      assert.equal(photos.length, 2);
      for (const p of photos) {
        assert.ok(p.loaded, `photo of ${p.alt} loaded`);
        assert.ok(p.inView, `photo of ${p.alt} on screen`);
      }
      const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      assert.ok(scroll <= inner, `no horizontal scroll (${scroll} > ${inner})`);
      // Party names whole, each on one line (not cut, not broken inside the word).
      const parties = await page.$$eval('#br-parties-list .pname', (els) => els.map((e) => ({
        name: e.textContent, cut: e.scrollWidth > e.clientWidth, lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)),
      })));
      assert.ok(parties.length > 0);
      assert.deepEqual(parties.filter((n) => n.cut || n.lines > 1), [], 'party names whole, on one line');
      return path.relative(repoRoot, await keep(page, name));
    });
  }

  await check('Brasília and Fernando de Noronha: why there is no municipal race', async () => {
    await page.setViewportSize(DESKTOP);
    await page.evaluate(() => (location.hash = '#/df/brasilia'));
    await page.locator('#city-name').filter({ hasText: 'Brasília' }).waitFor();
    assert.match(await page.locator('#mayor-list').textContent(), /Distrito Federal não .* elege prefeito/);
    await page.evaluate(() => (location.hash = '#/pe/fernando-de-noronha'));
    await page.locator('#city-name').filter({ hasText: 'Fernando de Noronha' }).waitFor();
    assert.match(await page.locator('#mayor-list').textContent(), /distrito estadual/);
    assert.doesNotMatch(await page.locator('#city').textContent(), /Sem resultado/);
  });

  await check('no script errors in the page', async () => {
    assert.deepEqual(page.errors, []);
  });
});

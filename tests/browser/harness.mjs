// harness.mjs — starts `apura demo` on a free port, a cuttable TCP proxy in front of it, and headless Chromium.

import { after } from 'node:test';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '../..');
export const screenshotDir = path.join(repoRoot, 'test-artifacts', 'screenshots');

const BIN = path.resolve(here, process.env.APURA_BIN ?? '../../target/release/apura');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Long enough that São Paulo is still counting when the test cuts and restores the stream.
const DURATION = process.env.APURA_DEMO_DURATION ?? '120s';
const INTERVAL = process.env.APURA_DEMO_INTERVAL ?? '1s';

/** A port nobody listens on now: bind port 0, read the number, close. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Run `apura demo` on a free port until `stop()`. Resolves once /brazil.json answers 200, i.e. the
 * first feed file has been ingested and published; with `warm: false`, as soon as the page is
 * served, possibly before any document exists.
 */
export async function startDemo({ disableStreams = false, warm = true, duration = DURATION } = {}) {
  if (!fs.existsSync(BIN)) throw new Error(`apura binary not found at ${BIN} (set APURA_BIN or build it: cargo build --release)`);
  const port = await freePort();
  const args = ['demo', '--listen', `127.0.0.1:${port}`, '--duration', duration, '--interval', INTERVAL,
    '--web-dir', path.join(repoRoot, 'web-demo')];
  if (disableStreams) args.push('--disable-streams');
  const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, APURA_LOG: process.env.APURA_LOG ?? 'warn' } });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`apura demo exited early (${child.exitCode}):\n${log}`);
    try {
      const res = await fetch(`${url}${warm ? '/brazil.json' : '/index.html'}`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`apura demo did not publish /brazil.json within 60 s:\n${log}`);
    }
    await sleep(200);
  }
  return {
    url,
    port,
    args,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * A TCP proxy on its own port in front of `target`: `cut()` drops every connection and refuses new
 * ones (a network outage, as the browser sees it); `restore()` listens again on the same port.
 */
export async function startProxy(targetPort) {
  const port = await freePort();
  const sockets = new Set();
  let server = null;
  const listen = () =>
    new Promise((resolve, reject) => {
      server = net.createServer((client) => {
        const upstream = net.connect(targetPort, '127.0.0.1');
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => {
            client.destroy();
            upstream.destroy();
          });
        }
        client.pipe(upstream);
        upstream.pipe(client);
      });
      server.on('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
  await listen();
  return {
    url: `http://127.0.0.1:${port}`,
    async cut() {
      const closed = new Promise((r) => server.close(r));
      for (const s of sockets) s.destroy();
      await closed;
    },
    restore: listen,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => (server.listening ? server.close(r) : r()));
    },
  };
}

/** Headless Chromium from Debian, with the flags this closed network needs. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    // launch() gives every run a fresh temporary profile (user-data-dir) and removes it on close.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Save a screenshot of a page or of one element. For an element taller than the viewport the
 * sticky masthead would be painted over it, so it is unstuck for the shot.
 */
export async function screenshot(target, name) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  const file = path.join(screenshotDir, name);
  if (typeof target.page === 'function') {
    const page = target.page();
    await page.evaluate(() => document.querySelector('.masthead').style.setProperty('position', 'static'));
    await target.screenshot({ path: file, animations: 'disabled' });
    await page.evaluate(() => document.querySelector('.masthead').style.removeProperty('position'));
  } else {
    await target.screenshot({ path: file, animations: 'disabled' });
  }
  return file;
}

/** Run one named check, print PASS/FAIL for the log, rethrow failures. */
export const results = [];

/**
 * A test file's clean-up, once its tests are done: `cleanups` last first, then the browser that
 * `browser()` answers, then how many checks passed.
 */
export function cleanUpAfterAll(cleanups, browser, label) {
  after(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => {});
    await browser()?.close();
    const passed = results.filter((r) => r.ok).length;
    console.log(`\n${passed}/${results.length} ${label} checks passed`);
  });
}
export async function check(name, fn) {
  const started = Date.now();
  try {
    const out = await fn();
    results.push({ name, ok: true });
    console.log(`PASS  ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)${out ? ` — ${out}` : ''}`);
    return out;
  } catch (error) {
    results.push({ name, ok: false });
    console.log(`FAIL  ${name}: ${error.message.split('\n')[0]}`);
    throw error;
  }
}

// The script-tag build of the installed package: a classic script (no `export`, no
// import.meta) that defines the global `Apura`, whose client defaults to the folder the script
// was loaded from. Run from a folder where apura-client is installed (tests/js_client.rs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import vm from 'node:vm';

const require = createRequire(`${process.cwd()}/`);
const file = require.resolve('apura-client/script');
const { version } = require('apura-client/package.json');

/** Run the script as a browser would run <script src="…">, in a fresh global. */
function load(src, location) {
  const global = {
    document: { currentScript: src ? { src } : null },
    location,
    URL,
    setTimeout,
    clearTimeout,
    queueMicrotask,
    console,
    fetch: async () => new Response('{}', { status: 404 }),
  };
  vm.createContext(global);
  vm.runInContext(readFileSync(file, 'utf8'), global, { filename: file });
  return global;
}

test('the script build is a classic script defining the global Apura', () => {
  const source = readFileSync(file, 'utf8');
  assert.doesNotMatch(source, /^\s*export\s/m);
  assert.doesNotMatch(source, /import\.meta/);
  const g = load('https://results.example.com/static/apura.iife.js');
  assert.equal(typeof g.Apura.ApuraClient, 'function');
  assert.equal(g.Apura.version, version);
});

test('its default base URL is the folder the script came from, not the page', () => {
  const g = load('https://results.example.com/static/apura.iife.js', { href: 'https://news.example.org/live/', origin: 'https://news.example.org' });
  const client = new g.Apura.ApuraClient({ transport: 'poll' });
  assert.equal(client.baseUrl, 'https://results.example.com/static/');
});

test('an inline script falls back to the page origin; an explicit baseUrl wins', () => {
  const g = load(null, { href: 'https://news.example.org/live/', origin: 'https://news.example.org' });
  assert.equal(new g.Apura.ApuraClient({ transport: 'poll' }).baseUrl, 'https://news.example.org/');
  assert.equal(new g.Apura.ApuraClient({ transport: 'poll', baseUrl: 'https://gw.example/' }).baseUrl, 'https://gw.example/');
});

// The contract's descriptions (docs/openapi.yaml, docs/asyncapi.yaml) pass their validators, and
// every document and message a real `apura demo` sends, over GET, SSE and WebSocket, validates
// against their schemas. APURA_BIN names the binary (`cargo test` sets it; see tests/web.rs).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import SwaggerParser from '@apidevtools/swagger-parser';
import { Parser, fromFile } from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import WebSocket from 'ws';
import YAML from 'yaml';

const docs = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs');
const openapiPath = join(docs, 'openapi.yaml');
const asyncapiPath = join(docs, 'asyncapi.yaml');

// Topics of every kind: a capital's three races, its state, the country, the index.
const TOPICS = [
  'mayors-sp-sao-paulo',
  'councillors-sp-sao-paulo',
  'zones-sp-sao-paulo',
  'state-sp',
  'brazil',
  'cities',
];
const LISTEN_SECONDS = 6;

let demo;
let base;
let validate;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Until `path` answers 200: the gateway is ready with the first documents, and zone documents
// come with the first zone poll, a little later.
async function waitFor(url, path, seconds) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    try {
      const r = await fetch(url + path);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no ${path} at ${url} after ${seconds} s`);
}

// Validators for the schemas of both descriptions: the OpenAPI 3.1 schemas are JSON Schema
// 2020-12, registered under the file's name so that the AsyncAPI `$ref`s resolve the same way.
function validators() {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const openapi = YAML.parse(readFileSync(openapiPath, 'utf8'));
  const asyncapi = YAML.parse(readFileSync(asyncapiPath, 'utf8'));
  ajv.addSchema({ $id: 'openapi.yaml', components: openapi.components });
  ajv.addSchema({ $id: 'asyncapi.yaml', components: asyncapi.components });
  const make = (ref) => {
    const v = ajv.getSchema(ref);
    assert.ok(v, `no schema ${ref}`);
    return (value, what) => {
      assert.ok(v(value), `${what} does not follow ${ref}: ${ajv.errorsText(v.errors)}`);
    };
  };
  return {
    document: make('openapi.yaml#/components/schemas/Document'),
    error: make('openapi.yaml#/components/schemas/Error'),
    wsDocument: make('asyncapi.yaml#/components/schemas/WsDocumentMessage'),
    wsError: make('asyncapi.yaml#/components/messages/WsError/payload'),
  };
}

before(async () => {
  const bin = process.env.APURA_BIN;
  assert.ok(bin, 'APURA_BIN must name the apura binary');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  demo = spawn(bin, ['demo', '--listen', `127.0.0.1:${port}`, '--interval', '1s', '--duration', '40s'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    cwd: join(docs, '..'),
    env: { ...process.env, APURA_LOG: 'warn' },
  });
  await waitFor(base, '/readyz', 60);
  await waitFor(base, '/cities/zones-sp-sao-paulo.json', 90);
  validate = validators();
});

after(() => {
  demo?.kill('SIGTERM');
});

test('docs/openapi.yaml is a valid OpenAPI description', async () => {
  const api = await SwaggerParser.validate(openapiPath);
  assert.equal(api.openapi, '3.1.0');
  for (const path of ['/cities/{topic}.json', '/states/{uf}.json', '/brazil.json', '/cities.json', '/events', '/ws']) {
    assert.ok(api.paths[path], `${path} is described`);
  }
});

test('docs/asyncapi.yaml is a valid AsyncAPI description', async () => {
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, asyncapiPath).parse();
  const errors = diagnostics.filter((d) => d.severity === 0);
  assert.deepEqual(errors.map((d) => `${d.path.join('.')}: ${d.message}`), []);
  assert.ok(document, 'the description parses');
  assert.deepEqual(document.channels().all().map((c) => c.address()).sort(), ['/events', '/ws']);
});

test('every GET document and error follows the OpenAPI schemas', async () => {
  const urls = {
    'mayors-sp-sao-paulo': '/cities/mayors-sp-sao-paulo.json',
    'councillors-sp-sao-paulo': '/cities/councillors-sp-sao-paulo.json',
    'zones-sp-sao-paulo': '/cities/zones-sp-sao-paulo.json',
    'state-sp': '/states/sp.json',
    brazil: '/brazil.json',
    cities: '/cities.json',
  };
  for (const [topic, url] of Object.entries(urls)) {
    const r = await fetch(base + url);
    assert.equal(r.status, 200, url);
    const doc = await r.json();
    validate.document(doc, url);
    assert.equal(doc.topic, topic);
    assert.equal(r.headers.get('etag'), `"${doc.version}"`);
  }
  const missing = await fetch(`${base}/cities/mayors-sp-nowhere.json`);
  assert.equal(missing.status, 404);
  validate.error(await missing.json(), '404 body');
  for (const [method, path, status] of [
    ['GET', '/nowhere', 404],
    ['GET', '//brazil.json', 404],
    ['POST', '/brazil.json', 405],
    ['DELETE', '/', 405],
  ]) {
    const r = await fetch(base + path, { method });
    assert.equal(r.status, status, `${method} ${path}`);
    assert.match(r.headers.get('content-type'), /application\/json/, `${method} ${path}`);
    validate.error(await r.json(), `${method} ${path}`);
  }
  const index = await (await fetch(`${base}/cities.json`)).json();
  const many = index.cities.slice(0, 65).map((c) => c.topics[0]);
  const tooMany = await fetch(`${base}/events?topics=${many.join(',')}`);
  assert.equal(tooMany.status, 400);
  validate.error(await tooMany.json(), '400 body');
});

test('every SSE event of the demo follows the AsyncAPI messages', async () => {
  const controller = new AbortController();
  const r = await fetch(`${base}/events?topics=${TOPICS.join(',')}`, { signal: controller.signal });
  assert.equal(r.status, 200);
  const decoder = new TextDecoder();
  const events = [];
  let buffer = '';
  const stop = setTimeout(() => controller.abort(), LISTEN_SECONDS * 1000);
  try {
    for await (const chunk of r.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const fields = {};
        for (const line of block.split('\n')) {
          const i = line.indexOf(':');
          if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1).replace(/^ /, '');
        }
        if (fields.data !== undefined) events.push(fields);
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  } finally {
    clearTimeout(stop);
  }
  const snapshots = events.filter((e) => e.event === 'snapshot');
  assert.equal(snapshots.length, TOPICS.length, 'one snapshot per topic');
  assert.ok(events.some((e) => e.event === 'update'), `updates within ${LISTEN_SECONDS} s`);
  for (const e of events) {
    assert.ok(['snapshot', 'update'].includes(e.event), `event ${e.event}`);
    const doc = JSON.parse(e.data);
    validate.document(doc, `SSE ${e.event} of ${doc.topic}`);
    assert.equal(e.id, String(doc.version), 'id: is the version');
    assert.ok(TOPICS.includes(doc.topic));
  }
});

test('every WebSocket message of the demo follows the AsyncAPI messages', async () => {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
  const messages = [];
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.on('message', (data) => messages.push(JSON.parse(data.toString())));
  ws.send(JSON.stringify({ type: 'subscribe', topics: TOPICS, since: 0 }));
  ws.send(JSON.stringify({ type: 'subscribe', topics: ['mayors-sp-nowhere'] }));
  await new Promise((r) => setTimeout(r, LISTEN_SECONDS * 1000));
  ws.close(1000);
  const errors = messages.filter((m) => m.type === 'error');
  assert.equal(errors.length, 1, 'one error, for the unknown topic');
  validate.wsError(errors[0], 'WebSocket error');
  assert.equal(errors[0].code, 'unknown_topic');
  const docs = messages.filter((m) => m.type !== 'error');
  assert.equal(docs.filter((m) => m.type === 'snapshot').length, TOPICS.length, 'one snapshot per topic');
  assert.ok(docs.some((m) => m.type === 'update'), `updates within ${LISTEN_SECONDS} s`);
  for (const m of docs) {
    validate.wsDocument(m, `WebSocket ${m.type} of ${m.topic}`);
    assert.equal(m.version, m.document.version);
    assert.equal(m.topic, m.document.topic);
  }
});

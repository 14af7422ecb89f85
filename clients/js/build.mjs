// build.mjs: the package's two builds from the one source the page serves, web-demo/apura.js.
//
//   dist/apura.mjs       the ES module, as is
//   dist/apura.iife.js   a classic script (<script src>) defining the global `Apura`; its default
//                        base URL is the folder the script was loaded from (document.currentScript),
//                        since a classic script has no import.meta.url
//
// No bundler: the source is one dependency-free module, so the script build only drops the
// `export` keywords, swaps import.meta.url for the script's own URL and wraps the whole.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, '..', '..', 'web-demo', 'apura.js'), 'utf8');
const { version } = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'));

const exported = [...source.matchAll(/^export (?:const|function|class|async function) (\w+)/gm)].map((m) => m[1]);
if (!exported.includes('ApuraClient')) throw new Error('web-demo/apura.js: no ApuraClient export');
if (/^\s*import\s/m.test(source)) throw new Error('web-demo/apura.js imports a module: the script build cannot');
if (source.split('import.meta.url').length !== 2) throw new Error('expected import.meta.url exactly once');

const banner = `// apura-client ${version}`;
mkdirSync(join(here, 'dist'), { recursive: true });
writeFileSync(join(here, 'dist', 'apura.mjs'), `${banner} (ES module)\n${source}`);

const body = source
  .replace(/^export (const|function|class|async function) /gm, '$1 ')
  .replace('import.meta.url', 'scriptUrl');
const iife = `${banner} (classic script: defines the global \`Apura\`)
(function (global) {
  'use strict';
  // The URL this script was loaded from, read while it runs (currentScript is null afterwards).
  const scriptUrl = (global.document && global.document.currentScript && global.document.currentScript.src) || '';
${body}
  global.Apura = Object.freeze({ version: ${JSON.stringify(version)}, ${exported.join(', ')} });
})(typeof globalThis !== 'undefined' ? globalThis : this);
`;
writeFileSync(join(here, 'dist', 'apura.iife.js'), iife);
console.log(`apura-client ${version}: dist/apura.mjs, dist/apura.iife.js (global Apura: ${exported.join(', ')})`);

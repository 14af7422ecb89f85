// A TypeScript program using apura-client as a newsroom front-end would: checked with --strict.
import { ApuraClient, type ApuraDocument, type ApuraOptions, type ApuraStatus, type PatchOperation, applyPatch, topicPath } from 'apura-client';

const options: ApuraOptions = { baseUrl: 'https://apura.example.com', transport: 'sse', staleAfter: 15_000, deltas: true };
const client = new ApuraClient(options);
const off: () => void = client.subscribe(['brazil', 'mayors-sp-sao-paulo'], (doc: ApuraDocument, meta) => {
  const version: number = doc.version;
  const via: 'sse' | 'ws' | 'poll' | 'probe' | 'cache' = meta.via;
  const patched: boolean = meta.patched ?? false;
  console.log(doc.topic, version, via, patched);
});
client.on('status', (s: ApuraStatus) => console.log(s.state, s.transport ?? '-'));
client.on('error', (e) => console.warn(e.code, e.message, e.topic));
const path: string = topicPath('state-sp');
const held: ApuraDocument | undefined = client.get('brazil');
console.log(path, held?.kind, client.baseUrl);
const ops: PatchOperation[] = [{ op: 'replace', path: '/progress/percent', value: 50 }];
const next = applyPatch<ApuraDocument>(held ?? {}, ops);
console.log(next.version);
off();
client.close();

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileQueue } from './shared/adapters/local/file-queue.js';
const dir = await mkdtemp(path.join(os.tmpdir(), 'qb-'));
const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
const N = 1000;
let t = performance.now();
await q.publishBatch('t', Array.from({ length: N }, (_, i) => ({ data: { i, name: `photos/${i}.jpg`, generation: '1700000000000000' } })));
const pub = performance.now() - t;
t = performance.now();
let n = 0;
for (;;) { const b = await q.pull<{i:number}>('t', { maxMessages: 32 }); if (!b.length) break; n += b.length; await q.ack('t', b.map((d) => d.ackId)); }
const con = performance.now() - t;
console.log(`publish ${N}: ${pub.toFixed(0)} ms (${(N / pub * 1000).toFixed(0)}/s); pull+ack ${n}: ${con.toFixed(0)} ms (${(n / con * 1000).toFixed(0)}/s)`);
await rm(dir, { recursive: true, force: true });

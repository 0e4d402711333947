import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { faultEnv, filesIn, report, seededRng, settledAccounting, startUp, writeTinyPngs, type UpProcess } from './support/harness.js';

/**
 * `imgsearch up` killed with SIGKILL at random points (seeded: FAULT_SEED replays a run) while files
 * are added, replaced and removed; after the last kill a clean start catches up, and every file is
 * indexed once at its newest generation.
 */
const ITERATIONS = Number(process.env.FAULT_KILL_ITERATIONS ?? 20);
const SEED = Number(process.env.FAULT_SEED ?? 9);

describe('fault: kill -9 of `up` at random points', () => {
  let up: UpProcess | null = null;
  afterEach(async () => {
    await up?.kill9();
    up = null;
  });

  it(`loses nothing over ${ITERATIONS} kills (seed ${SEED})`, async () => {
    const fe = await faultEnv('kill9', { IMGSEARCH_ACK_DEADLINE_SECONDS: '3', IMGSEARCH_BATCH_SIZE: '8' });
    const rng = seededRng(SEED);
    let next = 0;
    const kills: string[] = [];
    for (let i = 0; i < ITERATIONS; i++) {
      up = await startUp(fe);
      // Changes while it runs: new files, replaced files (a newer generation), removed files.
      const existing = (await filesIn(fe.bucket)).filter((n) => n.endsWith('.png'));
      const add = Array.from({ length: 4 + Math.floor(rng() * 12) }, () => `f${String(next++).padStart(4, '0')}.png`);
      const replace = existing.filter(() => rng() < 0.1);
      const remove = existing.filter((n) => !replace.includes(n) && rng() < 0.05);
      await writeTinyPngs(fe.bucket, [...add, ...replace], rng);
      for (const name of remove) await fs.rm(path.join(fe.bucket, name));
      const afterMs = Math.floor(rng() * 2500);
      await new Promise((r) => setTimeout(r, afterMs));
      await up.kill9();
      up = null;
      kills.push(`#${i}: +${add.length} ~${replace.length} -${remove.length}, killed after ${afterMs} ms`);
    }
    up = await startUp(fe);
    const files = await filesIn(fe.bucket);
    const a = await settledAccounting(fe, up, files.length);
    report(`kill -9 ×${ITERATIONS} (seed ${SEED})`, a);
    expect(a.lost, kills.join('\n')).toBe(0);
    expect(a.indexed).toBe(files.length);
    expect(a.wrongDocuments).toEqual([]);
  }, 900_000);
});

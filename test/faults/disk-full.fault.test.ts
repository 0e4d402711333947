import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  account,
  cli,
  faultEnv,
  getJson,
  report,
  seededRng,
  setFault,
  settledAccounting,
  startUp,
  waitFor,
  writeTinyPngs,
  type UpProcess,
} from './support/harness.js';

/**
 * Disk full mid-ingest, then space freed: writes under the data directory fail with ENOSPC (the
 * fault injector preloaded into the real process) while the control file exists.
 */
async function stagingLeftovers(home: string): Promise<string[]> {
  const out: string[] = [];
  for (const topic of await fs.readdir(path.join(home, 'queue')).catch(() => [] as string[])) {
    for (const sub of ['tmp', 'inflight', 'dead']) {
      const names = await fs.readdir(path.join(home, 'queue', topic, sub)).catch(() => [] as string[]);
      out.push(...names.filter((n) => sub === 'tmp' || n.endsWith('.tmp')).map((n) => `${topic}/${sub}/${n}`));
    }
  }
  return out;
}

describe('fault: disk full', () => {
  let up: UpProcess | null = null;
  afterEach(async () => {
    await up?.kill9();
    up = null;
  });

  it('`up` stays up while the disk is full, shows the fault in /api/status, and indexes everything once space is back', async () => {
    const fe = await faultEnv('disk-full');
    const rng = seededRng(11);
    up = await startUp(fe);
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 40 }, (_, i) => `a/${String(i).padStart(3, '0')}.png`),
      rng,
    );
    await setFault(fe, 'enospc', true);
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 40 }, (_, i) => `b/${String(i).padStart(3, '0')}.png`),
      rng,
    );
    type Status = { faults: { stage: string; summary: string }[]; pending: number };
    await waitFor(
      async () => (await getJson<Status>(`${up!.url}/api/status`)).faults.some((f) => /ENOSPC/.test(f.summary)),
      60_000,
      () => up!.stderr().slice(-2000),
    );
    // Still serving, still up, after several failed retries.
    await new Promise((r) => setTimeout(r, 3000));
    expect(up.child.exitCode).toBeNull();
    const during = await getJson<Status>(`${up.url}/api/status`);
    expect(during.faults.map((f) => f.summary).join('\n')).toMatch(/failing since \d{4}-\d\d-\d\dT.*ENOSPC/);
    expect(up.stderr()).toMatch(/"err":\{[^}]*"code":"ENOSPC"/);

    await setFault(fe, 'enospc', false);
    const a = await settledAccounting(fe, up, 80);
    report('disk full while `up` runs, then space freed', a);
    expect(a.lost).toBe(0);
    expect(a.indexed).toBe(80);
    expect(a.wrongDocuments).toEqual([]);
    expect((await getJson<Status>(`${up.url}/api/status`)).faults).toEqual([]);
    // A restart sweeps what failed writes of the previous process left in the queue's staging folders.
    await up.stop();
    up = await startUp(fe);
    await waitFor(
      async () => (await stagingLeftovers(fe.home)).length === 0,
      30_000,
      async () => (await stagingLeftovers(fe.home)).join(', '),
    );
  });

  it('`ingest` on a full disk exits non-zero with a clear error and loses nothing: the next run indexes everything', async () => {
    const fe = await faultEnv('disk-full-ingest');
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 60 }, (_, i) => `${String(i).padStart(3, '0')}.png`),
      seededRng(12),
    );
    expect((await cli(fe, ['status', '--json'])).code).toBe(0); // model bootstrapped before the disk fills
    await setFault(fe, 'enospc', true);
    const failed = await cli(fe, ['ingest', fe.bucket]);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/ENOSPC|no space left/i);
    await setFault(fe, 'enospc', false);
    const done = await cli(fe, ['ingest', fe.bucket]);
    expect(done.code, done.stderr).toBe(0);
    const a = await account(fe);
    report('`ingest` on a full disk, then again after space freed', a);
    expect(a.lost).toBe(0);
    expect(a.indexed).toBe(60);
    expect(a.wrongDocuments).toEqual([]);
    expect(await stagingLeftovers(fe.home)).toEqual([]);
  });
});

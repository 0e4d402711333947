import { afterEach, describe, expect, it } from 'vitest';
import { documentId } from '../../shared/contracts.js';
import { faultEnv, report, seededRng, settledAccounting, startUp, writeTinyPngs, type UpProcess } from './support/harness.js';

/**
 * A burst of 10,000 tiny images (28×28 PNGs) into the watched folder while searches run against the
 * same `up`: every image indexed once, and the searches keep being answered (or shed with 429/503),
 * never failing otherwise. Slow (minutes on 2 cores): in `npm run test:faults` only. FAULT_BURST_N
 * scales it down for a quick try.
 */
const N = Number(process.env.FAULT_BURST_N ?? 10_000);

describe('fault: a burst of files while searches run', () => {
  let up: UpProcess | null = null;
  afterEach(async () => {
    await up?.kill9();
    up = null;
  });

  it(`indexes a burst of ${N} files once each while searches are answered`, async () => {
    const fe = await faultEnv('burst', { IMGSEARCH_BATCH_SIZE: '64' });
    const rng = seededRng(41);
    up = await startUp(fe);
    await writeTinyPngs(fe.bucket, ['seed/0.png'], rng);
    const names = Array.from({ length: N }, (_, i) => `burst/${String(Math.floor(i / 1000)).padStart(2, '0')}/${String(i).padStart(5, '0')}.png`);
    const searches = { ok: 0, shed: 0, failed: [] as string[] };
    let writing = true;
    const searcher = (async () => {
      const id = documentId(fe.bucket, 'seed/0.png');
      while (writing) {
        const res = await fetch(`${up!.url}/api/search?similarTo=${id}&k=5`).catch((err: Error) => ({ status: 0, text: async () => err.message }));
        if (res.status === 200) searches.ok++;
        else if (res.status === 429 || res.status === 503 || res.status === 404)
          searches.shed++; // 404: the seed image not indexed yet
        else searches.failed.push(`${res.status} ${(await res.text()).slice(0, 200)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const started = Date.now();
    await writeTinyPngs(fe.bucket, names, rng);
    const a = await settledAccounting(fe, up, N + 1, 1_800_000).finally(() => {
      writing = false;
    });
    await searcher;
    const seconds = (Date.now() - started) / 1000;
    report(
      `burst of ${N} files while searching (${seconds.toFixed(0)} s, searches ok ${searches.ok}, shed ${searches.shed}, failed ${searches.failed.length})`,
      a,
    );
    expect(a.lost).toBe(0);
    expect(a.indexed).toBe(N + 1);
    expect(a.wrongDocuments).toEqual([]);
    expect(searches.failed).toEqual([]);
    expect(searches.ok).toBeGreaterThan(0);
    expect(up.child.exitCode).toBeNull();
  }, 2_400_000);
});

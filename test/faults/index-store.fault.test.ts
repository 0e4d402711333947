import { afterEach, describe, expect, it } from 'vitest';
import { FakeOpenSearch } from '../unit/opensearch-fake-server.js';
import { cli, faultEnv, getJson, report, seededRng, setFault, settledAccounting, startUp, waitFor, writeTinyPngs, type UpProcess } from './support/harness.js';

/**
 * The index store refusing writes for a while, then recovering. LanceDB: the fault injector makes
 * every LanceDB write throw while a control file exists (we run as root, so a chmod'ed directory
 * would not stop the native writer). OpenSearch: the fake cluster answers 503, 429 and drops
 * connections on _bulk for a while.
 */
type Status = { faults: { stage: string; summary: string }[] };

describe('fault: the index store fails writes for a while', () => {
  let up: UpProcess | null = null;
  let cluster: FakeOpenSearch | null = null;
  afterEach(async () => {
    await up?.kill9();
    up = null;
    await cluster?.stop();
    cluster = null;
  });

  it('LanceDB refusing writes: `up` stays up, status says index writes fail, and everything is indexed once it recovers', async () => {
    const fe = await faultEnv('lancedb');
    const rng = seededRng(21);
    up = await startUp(fe);
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 30 }, (_, i) => `a${i}.png`),
      rng,
    );
    await setFault(fe, 'lancedb', true);
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 30 }, (_, i) => `b${i}.png`),
      rng,
    );
    await waitFor(
      async () => (await getJson<Status>(`${up!.url}/api/status`)).faults.some((f) => /failing since/.test(f.summary)),
      60_000,
      () => up!.stderr().slice(-2000),
    );
    await new Promise((r) => setTimeout(r, 6000)); // longer than the 4 s lease: held batches are not redelivered or spent
    expect(up.child.exitCode).toBeNull();
    await setFault(fe, 'lancedb', false);
    const a = await settledAccounting(fe, up, 60);
    report('LanceDB refusing writes, then recovering', a);
    expect(a.lost).toBe(0);
    expect(a.indexed).toBe(60);
    expect(a.wrongDocuments).toEqual([]);
    const status = JSON.parse((await cli(fe, ['status', '--json'])).stdout) as { deadLettered: { count: number } };
    expect(status.deadLettered.count).toBe(0);
  });

  it('OpenSearch answering 503, 429 and dropping connections, then recovering: nothing lost, nothing indexed twice', async () => {
    cluster = new FakeOpenSearch();
    const url = await cluster.start();
    const fe = await faultEnv('opensearch', { IMGSEARCH_INDEX: 'opensearch', OPENSEARCH_URL: url });
    const rng = seededRng(22);
    up = await startUp(fe);
    const bulk = (r: { path: string }) => r.path.includes('_bulk');
    cluster.addFault({ match: bulk, times: 6, status: 503 });
    cluster.addFault({ match: bulk, times: 6, status: 429 });
    cluster.addFault({ match: bulk, times: 4, reset: true });
    await writeTinyPngs(
      fe.bucket,
      Array.from({ length: 40 }, (_, i) => `o${i}.png`),
      rng,
    );
    const a = await settledAccounting(fe, up, 40);
    report('OpenSearch 503/429/connection resets, then recovering', a);
    expect(a.lost).toBe(0);
    expect(a.indexed).toBe(40);
    expect(a.wrongDocuments).toEqual([]);
    expect(cluster.requestsTo(/_bulk/).length).toBeGreaterThan(16);
  });
});

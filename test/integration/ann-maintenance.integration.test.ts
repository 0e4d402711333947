import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import type { LanceDbVectorIndex } from '../../shared/adapters/local/lancedb-index.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { silentLogger } from '../../shared/logger.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { EventBus } from '../../shared/ports/event-bus.js';
import { AnnMaintenance, DEFAULT_ANN_POLICY, describeAnnStatus, type AnnAction, type AnnPolicy } from '../../shared/services/ann-maintenance.js';
import { pipelineStatus } from '../../shared/services/status.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { l2NormaliseInPlace } from '../../shared/vector-math.js';
import { makeDoc } from '../contracts/vector-index.contract.js';
import { MemoryRejections } from '../helpers/strict-fakes.js';

/**
 * The ANN index kept up by the product, on a real LanceDB table: a few thousand small vectors and a
 * threshold lowered through the configuration, so a build takes a second or two.
 */
const DIM = 64;
const MODEL = 'm1';

function clusteredVectors(n: number, seed: number): Float32Array[] {
  const r = mulberry32(seed);
  const g = () => Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
  const centres = Array.from({ length: 40 }, () => l2NormaliseInPlace(Float32Array.from({ length: DIM }, g)));
  return Array.from({ length: n }, () => {
    const c = centres[Math.floor(r() * centres.length)]!;
    return l2NormaliseInPlace(Float32Array.from(c, (x) => x + (0.6 * g()) / Math.sqrt(DIM)));
  });
}

const docs = (vectors: Float32Array[], prefix: string) => vectors.map((v, i) => makeDoc(`${prefix}${i}`, '1', v, { modelVersion: MODEL }));

/** Polls until the pass reports `building` (true) or ends first (false). */
async function waitForBuilding(index: LanceDbVectorIndex, pass: Promise<AnnAction>): Promise<boolean> {
  let settled = false;
  void pass.finally(() => (settled = true));
  while (!settled) {
    if ((await index.annStatus()).state === 'building') return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}

describe('ANN maintenance over a real LanceDB index', () => {
  let dir: string;
  let catalog: LanceDbIndexCatalog;
  let index: LanceDbVectorIndex;
  const corpus = clusteredVectors(6_000, 7);
  // The threshold comes from the configuration, as `up` reads it.
  const config = configFromEnv(parseEnv({ IMGSEARCH_ANN_MIN_ROWS: '5000', IMGSEARCH_ANN_TYPE: 'ivf_hnsw_sq' }), os.tmpdir());
  const policy: AnnPolicy = { ...DEFAULT_ANN_POLICY, minRows: config.ann.minRows, type: config.ann.type, foldInRows: 50 };

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'iss-ann-'));
    catalog = await LanceDbIndexCatalog.open(dir);
    index = (await catalog.ensureLive(MODEL, DIM)) as LanceDbVectorIndex;
  });
  afterEach(async () => {
    await catalog.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function buildPastThreshold(m: AnnMaintenance): Promise<void> {
    await index.upsert(docs(corpus, 'd'));
    expect(await m.runOnce()).toMatchObject({ kind: 'build' });
  }

  it('keeps the flat scan below the configured threshold, and builds past it while searches and upserts go on', async () => {
    const m = new AnnMaintenance(async () => index, policy, silentLogger);
    await index.upsert(docs(corpus.slice(0, 4_999), 'd'));
    expect(await m.runOnce()).toMatchObject({ kind: 'none' });
    expect(await index.annStatus()).toMatchObject({ state: 'none', type: null, rowsUnindexed: 4_999 });

    await index.upsert(docs(corpus.slice(4_999), 'd').map((d, i) => ({ ...d, id: `d${4_999 + i}` })));
    const pass = m.runOnce();
    expect(await waitForBuilding(index, pass)).toBe(true);
    // During the build: queries answer (exact scan, no index yet) and an upsert is not held up by it.
    const during = await index.query(corpus[123]!, { k: 5 });
    const written = await index.upsert(docs(clusteredVectors(20, 99), 'new'));
    const status = await index.annStatus();
    expect(status).toMatchObject({ state: 'building', building: { params: { type: 'ivf_hnsw_sq', rows: 6_000 } } });
    expect(during[0]!.id).toBe('d123');
    expect(written).toEqual(Array(20).fill('created'));

    expect(await pass).toMatchObject({ kind: 'build', params: { type: 'ivf_hnsw_sq', rows: 6_000, numPartitions: 1 } });
    const ready = await index.annStatus();
    expect(ready).toMatchObject({ state: 'ready', type: 'IVF_HNSW_SQ', maintainedBy: 'product', building: null, params: { rows: 6_000, m: 16 } });
    expect(ready.rowsIndexed + ready.rowsUnindexed).toBe(6_020);
    expect(ready.lastBuildAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(ready.lastBuildSeconds).toBeGreaterThanOrEqual(0);
    expect((await index.query(corpus[4_321]!, { k: 5 }))[0]!.id).toBe('d4321');
  });

  it('finds rows added after the build before the next fold-in, then folds them in', async () => {
    const m = new AnnMaintenance(async () => index, policy, silentLogger);
    await buildPastThreshold(m);
    const late = clusteredVectors(60, 1234);
    await index.upsert(docs(late, 'late'));
    expect((await index.annStatus()).rowsUnindexed).toBeGreaterThanOrEqual(60);
    for (const [i, v] of late.entries()) expect((await index.query(v, { k: 3 }))[0]!.id).toBe(`late${i}`);

    expect(await m.runOnce()).toMatchObject({ kind: 'fold-in' });
    expect(await index.annStatus()).toMatchObject({ state: 'ready', rowsUnindexed: 0, rowsIndexed: 6_060 });
    for (const [i, v] of late.entries()) expect((await index.query(v, { k: 3 }))[0]!.id).toBe(`late${i}`);
  });

  it('answers searches with the previous index during a rebuild (the configured type changed)', async () => {
    await buildPastThreshold(new AnnMaintenance(async () => index, policy, silentLogger));
    const m = new AnnMaintenance(async () => index, { ...policy, type: 'ivf_pq' }, silentLogger);
    const pass = m.runOnce();
    expect(await waitForBuilding(index, pass)).toBe(true);
    const hits = await index.query(corpus[42]!, { k: 10 });
    expect(await index.annStatus()).toMatchObject({ state: 'building', type: 'IVF_HNSW_SQ', building: { params: { type: 'ivf_pq', numPartitions: 77 } } });
    expect(hits[0]!.id).toBe('d42');
    expect(hits).toHaveLength(10);

    expect(await pass).toMatchObject({ kind: 'rebuild' });
    expect(await index.annStatus()).toMatchObject({ state: 'ready', type: 'IVF_PQ', params: { type: 'ivf_pq', numSubVectors: 8 } });
    expect((await index.query(corpus[42]!, { k: 10 }))[0]!.id).toBe('d42');
  });

  it('reports the state in the status JSON and line, also from another handle (another process), and forgets a build whose process is gone', async () => {
    const bus = { stats: async () => ({ ready: 0, inflight: 0, deadLettered: 0 }), listDeadLetters: async () => [] } as unknown as EventBus;
    const embedder = { modelVersion: MODEL, dimension: DIM, hasTextTower: false, manifest: { name: 'fake' } } as unknown as Embedder;
    const before = await pipelineStatus({ bus, index, rejections: new MemoryRejections(), embedder });
    expect(before.ann).toMatchObject({ state: 'none', rowsIndexed: 0 });

    await buildPastThreshold(new AnnMaintenance(async () => index, policy, silentLogger));
    const other = await LanceDbIndexCatalog.open(dir);
    try {
      const seen = (await other.open(index.name)) as LanceDbVectorIndex;
      const status = await pipelineStatus({ bus, index: seen, rejections: new MemoryRejections(), embedder });
      expect(status.ann).toMatchObject({
        state: 'ready',
        type: 'IVF_HNSW_SQ',
        rowsIndexed: 6_000,
        rowsUnindexed: 0,
        params: { type: 'ivf_hnsw_sq', rows: 6_000 },
      });
      expect(describeAnnStatus(status.ann)).toMatch(/^ready: IVF_HNSW_SQ over 6000 rows, 0 not yet folded in .*chosen for 6000 rows.*last built /);

      // A build recorded by a process that no longer runs (killed mid-build) is not "building".
      const file = path.join(dir, `${index.name}.ann.json`);
      const recorded = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      const gone = { pid: 2 ** 22 + 1, host: os.hostname(), startedAt: '2026-01-01T00:00:00.000Z', params: recorded.params };
      await writeFile(file, JSON.stringify({ ...recorded, building: gone }));
      expect(await seen.annStatus()).toMatchObject({ state: 'ready', building: null });
    } finally {
      await other.close();
    }
  });
});

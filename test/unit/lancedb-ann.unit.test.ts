import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import type { LanceDbVectorIndex } from '../../shared/adapters/local/lancedb-index.js';
import { AppError } from '../../shared/errors.js';
import type { AnnParams, VectorDocument } from '../../shared/ports/vector-index.js';

/** ANN build, status and query-side tuning of one embedded index version (real LanceDB, dimension 8, 300 rows). */
let dir: string;
let catalog: LanceDbIndexCatalog;
let index: LanceDbVectorIndex;

/** Seeded unit vectors (mulberry32). */
function vectors(n: number, dim: number, seed: number): Float32Array[] {
  let s = seed >>> 0;
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: n }, () => {
    const v = Float32Array.from({ length: dim }, () => rand() - 0.5);
    const norm = Math.hypot(...v);
    return v.map((x) => x / norm);
  });
}

const doc = (id: string, vector: Float32Array): VectorDocument => ({
  id,
  uri: `file:///b/${id}.jpg`,
  generation: '1',
  modelVersion: 'm',
  vector,
  labels: [],
  indexedAt: '2026-01-01T00:00:00.000Z',
});

const annFile = () => path.join(dir, 'a-v1.ann.json');

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lancedb-ann-'));
  catalog = await LanceDbIndexCatalog.open(dir, { alias: 'a' });
  index = await catalog.ensureLive('m', 8);
});

afterEach(async () => {
  await catalog.close();
  await rm(dir, { recursive: true, force: true });
});

async function fill(n: number): Promise<Float32Array[]> {
  const vs = vectors(n, 8, 7);
  await index.upsert(vs.map((v, i) => doc(`d${i}`, v)));
  return vs;
}

const params: AnnParams = { type: 'ivf_pq', rows: 300, numPartitions: 4, numSubVectors: 1, nprobes: 4, refineFactor: 20 };

describe('ANN build', () => {
  it('refuses to train on fewer than 256 rows, and reports no index', async () => {
    await fill(255);
    await expect(index.buildAnn(params)).rejects.toThrow(
      new AppError('An ANN index needs at least 256 rows to train, index a-v1 has 255; exact search is fast at this size'),
    );
    const status = await index.annStatus();
    expect(status).toMatchObject({ state: 'none', type: null, params: null, rowsIndexed: 0, rowsUnindexed: 255, building: null, maintainedBy: 'product' });
    expect(index.annIndexed).toBe(false);
    await expect(index.tuneQuery({ nprobes: 2 })).rejects.toThrow(new AppError('index a-v1 has no ANN index to tune'));
  });

  it('builds with the given parameters, records them, and reports the index ready', async () => {
    const vs = await fill(300);
    await index.buildAnn(params);
    expect(index.annIndexed).toBe(true);
    const file = JSON.parse(await readFile(annFile(), 'utf8')) as Record<string, unknown>;
    expect(file.params).toEqual(params);
    expect(file.building).toBeNull();
    expect(typeof file.lastBuildAt).toBe('string');
    expect(typeof file.lastBuildSeconds).toBe('number');
    const status = await index.annStatus();
    expect(status).toMatchObject({ state: 'ready', type: 'IVF_PQ', params, rowsIndexed: 300, rowsUnindexed: 0, building: null, lastBuildAt: file.lastBuildAt });
    // Searches still find the exact neighbour (re-ranked).
    expect((await index.query(vs[5]!, { k: 1 }))[0]!.id).toBe('d5');
    // Rows written after the build are unindexed until a fold-in.
    await index.upsert([doc('late', vectors(1, 8, 99)[0]!)]);
    expect((await index.annStatus()).rowsUnindexed).toBe(1);
    expect((await index.query(vectors(1, 8, 99)[0]!, { k: 1 }))[0]!.id).toBe('late');
    await index.foldInAnn();
    expect((await index.annStatus()).rowsUnindexed).toBe(0);
  });

  it('builds a B-tree over the ids beside it; documents written or replaced after the build are still found by id', async () => {
    const vs = await fill(300);
    await index.buildAnn(params);
    const table = (index as unknown as { table: { listIndices(): Promise<{ columns: string[]; indexType: string }[]> } }).table;
    expect((await table.listIndices()).map((i) => [i.columns.join(','), i.indexType]).sort()).toEqual([
      ['id', 'BTree'],
      ['vector', 'IvfPq'],
    ]);
    await index.upsert([doc('late', vs[1]!), { ...doc('d2', vs[3]!), generation: '2' }]);
    expect((await index.get('late'))?.id).toBe('late');
    expect((await index.get('d2'))?.generation).toBe('2');
    expect(await index.generations(['d0', 'd2', 'late', 'nope'])).toEqual(
      new Map([
        ['d0', '1'],
        ['d2', '2'],
        ['late', '1'],
      ]),
    );
  });

  it('a second handle (another process) sees the index and its recorded parameters', async () => {
    await fill(300);
    await index.buildAnn(params);
    const other = await LanceDbIndexCatalog.open(dir, { alias: 'a' });
    const again = await other.open('a-v1');
    expect(again.annIndexed).toBe(true);
    expect((await again.annStatus()).params).toEqual(params);
    await again.tuneQuery({ nprobes: 1 });
    await other.close();
  });

  it('runs one build at a time per handle: a second call joins the running one', async () => {
    await fill(300);
    const first = index.buildAnn(params);
    const second = index.buildAnn({ ...params, numPartitions: 2, nprobes: 2 });
    await Promise.all([first, second]);
    expect((JSON.parse(await readFile(annFile(), 'utf8')) as { params: AnnParams }).params.numPartitions).toBe(4);
    // After it finished, a new build runs.
    await index.buildAnn({ ...params, numPartitions: 2, nprobes: 2 });
    expect((JSON.parse(await readFile(annFile(), 'utf8')) as { params: AnnParams }).params.numPartitions).toBe(2);
  });

  it('a failed build clears the running build from the ANN file and keeps the previous record', async () => {
    await fill(300);
    await index.buildAnn(params);
    const before = await readFile(annFile(), 'utf8');
    await expect(index.buildAnn({ ...params, numSubVectors: 3 })).rejects.toThrow();
    expect(JSON.parse(await readFile(annFile(), 'utf8'))).toEqual(JSON.parse(before));
    expect((await index.annStatus()).state).toBe('ready');
  });

  it('createAnnIndex chooses parameters from the size, takes overrides, and caps nprobes at the partitions', async () => {
    await fill(300);
    const chosen = await index.createAnnIndex({ numPartitions: 3 });
    expect(chosen).toMatchObject({ type: 'ivf_pq', rows: 300, numPartitions: 3, numSubVectors: 1, nprobes: 3, refineFactor: 20 });
    const hnsw = await index.createAnnIndex({ type: 'ivf_hnsw_sq' });
    expect(hnsw).toMatchObject({ type: 'ivf_hnsw_sq', numPartitions: 1, nprobes: 1, m: 16, ef: 100 });
    expect((await index.annStatus()).type).toBe('IVF_HNSW_SQ');
  });
});

describe('ANN status of a build in progress', () => {
  const building = (pid: number, host: string) => ({
    params: null,
    lastBuildAt: null,
    lastBuildSeconds: null,
    building: { pid, host, startedAt: '2026-01-01T00:00:00.000Z', params },
  });

  it('reports a build of another live process as building, and forgets one whose process is gone', async () => {
    await fill(10);
    await writeFile(annFile(), JSON.stringify(building(process.ppid, os.hostname())));
    expect(await index.annStatus()).toMatchObject({ state: 'building', building: { startedAt: '2026-01-01T00:00:00.000Z', params }, rowsUnindexed: 10 });
    await writeFile(annFile(), JSON.stringify(building(2 ** 22 + 12345, os.hostname())));
    expect(await index.annStatus()).toMatchObject({ state: 'none', building: null });
  });

  it('a record of this process with no build running in this handle is not a build', async () => {
    await fill(10);
    await writeFile(annFile(), JSON.stringify(building(process.pid, os.hostname())));
    expect(await index.annStatus()).toMatchObject({ state: 'none', building: null });
  });

  it('reports building while this handle builds, beside a ready index', async () => {
    await fill(300);
    await index.buildAnn(params);
    const running = index.buildAnn({ ...params, numPartitions: 2, nprobes: 2 });
    // The file is written before training starts; poll the status until the build record appears.
    let state = (await index.annStatus()).state;
    for (let i = 0; i < 50 && state !== 'building'; i++) state = (await index.annStatus()).state;
    await running;
    expect(['building', 'ready']).toContain(state);
    expect((await index.annStatus()).state).toBe('ready');
  });

  it('names a damaged ANN file and how to fix it', async () => {
    await writeFile(annFile(), '{"params": 5}');
    await expect(index.annStatus()).rejects.toThrow(/a-v1\.ann\.json/);
    await expect(index.annStatus()).rejects.toThrow(/builds the ANN index of a-v1 again/);
  });
});

describe('tuneQuery', () => {
  it('overrides the query-side settings in this handle only', async () => {
    const vs = await fill(300);
    await index.buildAnn(params);
    await index.tuneQuery({ nprobes: 1, refineFactor: 0 });
    // Still answers (approximate); the recorded parameters on disk are unchanged.
    expect(await index.query(vs[0]!, { k: 3 })).toHaveLength(3);
    expect((await index.annStatus()).params).toEqual(params);
  });
});

describe('queries over an ANN index skip tombstones and excluded ids, however they are filtered', () => {
  const hnsw: AnnParams = { type: 'ivf_hnsw_sq', rows: 300, numPartitions: 1, m: 16, efConstruction: 150, nprobes: 1, ef: 100, refineFactor: 2 };
  /** Ids of the live rows nearest to q, exactly. */
  const exact = (vs: Float32Array[], live: (i: number) => boolean, q: Float32Array, k: number) =>
    vs
      .map((v, i) => ({ i, s: v.reduce((a, x, j) => a + x * q[j]!, 0) }))
      .filter(({ i }) => live(i))
      .sort((a, b) => b.s - a.s)
      .slice(0, k)
      .map(({ i }) => `d${i}`);
  const overlap = (a: string[], b: string[]) => a.filter((id) => b.includes(id)).length;
  // Tombstones hold the placeholder vector e₀: a query of e₀ is where an unfiltered search would return them first.
  const e0 = Float32Array.from({ length: 8 }, (_, j) => (j === 0 ? 1 : 0));

  it('a few tombstones (filtered after the search): k live results, the nearest ones', async () => {
    const vs = await fill(300);
    await index.buildAnn(hnsw);
    const gone = exact(vs, () => true, e0, 5);
    await index.delete(gone.map((id) => ({ id, generation: '2' })));
    const hits = (await index.query(e0, { k: 10 })).map((h) => h.id);
    expect(hits).toHaveLength(10);
    expect(hits.filter((id) => gone.includes(id))).toEqual([]);
    const deleted = new Set(gone.map((id) => Number(id.slice(1))));
    expect(
      overlap(
        hits,
        exact(vs, (i) => !deleted.has(i), e0, 10),
      ),
    ).toBeGreaterThanOrEqual(9);
  });

  it('an excluded id ("more like this") is not returned, and k results still come back', async () => {
    const vs = await fill(300);
    await index.buildAnn(hnsw);
    const hits = (await index.query(vs[3]!, { k: 10, filter: { excludeIds: ['d3'] } })).map((h) => h.id);
    expect(hits).toHaveLength(10);
    expect(hits).not.toContain('d3');
    expect(
      overlap(
        hits,
        exact(vs, (i) => i !== 3, vs[3]!, 10),
      ),
    ).toBeGreaterThanOrEqual(9);
  });

  it('many tombstones (filtered before the search): k live results', async () => {
    const vs = await fill(300);
    await index.buildAnn(hnsw);
    const gone = exact(vs, () => true, e0, 100);
    await index.delete(gone.map((id) => ({ id, generation: '2' })));
    const hits = (await index.query(e0, { k: 10 })).map((h) => h.id);
    expect(hits).toHaveLength(10);
    expect(hits.filter((id) => gone.includes(id))).toEqual([]);
  });

  it('a delete committed between the count and the search cannot let a tombstone through, nor leave fewer than k', async () => {
    const vs = await fill(300);
    await index.buildAnn(hnsw);
    const gone = exact(vs, () => true, e0, 20);
    await index.delete(gone.map((id) => ({ id, generation: '2' })));
    // As if the count had been read just before those deletes landed.
    (index as unknown as { tombstones: () => Promise<number> }).tombstones = async () => 0;
    const hits = (await index.query(e0, { k: 10 })).map((h) => h.id);
    expect(hits).toHaveLength(10);
    expect(hits.filter((id) => gone.includes(id))).toEqual([]);
  });

  it('tombstones written by another handle (another process) after this one last counted are skipped too', async () => {
    const vs = await fill(300);
    await index.buildAnn(hnsw);
    expect(await index.query(e0, { k: 10 })).toHaveLength(10); // counted: no tombstones
    const other = await LanceDbIndexCatalog.open(dir, { alias: 'a' });
    const gone = exact(vs, () => true, e0, 20);
    await (await other.open('a-v1')).delete(gone.map((id) => ({ id, generation: '2' })));
    await other.close();
    const hits = (await index.query(e0, { k: 10 })).map((h) => h.id);
    expect(hits).toHaveLength(10);
    expect(hits.filter((id) => gone.includes(id))).toEqual([]);
  });
});

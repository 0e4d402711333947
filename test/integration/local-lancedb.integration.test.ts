import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbFeatureStore } from '../../shared/adapters/local/lancedb-feature-store.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-index.js';
import { Field, FixedSizeList, Float32, Schema, Utf8 } from 'apache-arrow';
import { GenerationOrderedTable, rowsToArrowTable } from '../../shared/adapters/local/lancedb-ordered-table.js';
import { makeDoc } from '../contracts/vector-index.contract.js';

/** LanceDB specifics beyond the port contract: batching, locking, persistence, ANN recall. */
function randomUnit(dim: number, seed: number): Float32Array {
  let s = seed * 2654435761 + 1;
  const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const v = Float32Array.from({ length: dim }, rnd);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

describe('LanceDbIndexCatalog (embedded specifics)', () => {
  let dir: string;
  let catalog: LanceDbIndexCatalog;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'iss-lance-'));
    catalog = await LanceDbIndexCatalog.open(dir);
  });
  afterEach(async () => {
    await catalog.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a batch of upserts as one table version (one merge, not one per document)', async () => {
    const index = await catalog.ensureLive('m1', 16);
    const db = await lancedb.connect(dir);
    const before = await (await db.openTable(index.name)).version();
    const docs = Array.from({ length: 400 }, (_, i) => makeDoc(`d${i}`, '1', randomUnit(16, i), { modelVersion: 'm1' }));
    const t0 = performance.now();
    const outcomes = await index.upsert(docs);
    const ms = performance.now() - t0;
    expect(outcomes.every((o) => o === 'created')).toBe(true);
    expect(await (await db.openTable(index.name)).version()).toBe(before + 1);
    expect(await index.count()).toBe(400);
    console.info(`upsert of 400 docs (dim 16) in one batch: ${ms.toFixed(0)} ms`);
    await index.upsert([makeDoc('d0', '2', randomUnit(16, 1000), { modelVersion: 'm1' })]);
    await (index as Awaited<ReturnType<LanceDbIndexCatalog['createVersion']>>).compact();
    expect(await index.count()).toBe(400);
    expect((await index.get('d0'))!.generation).toBe('2');
    db.close();
  });

  it('serialises concurrent upserts of one id inside the process: one created, newest generation wins', async () => {
    const index = await catalog.ensureLive('m1', 4);
    const gens = ['5', '3', '9', '1', '7'];
    const outcomes = (await Promise.all(gens.map((g) => index.upsert([makeDoc('same', g, randomUnit(4, Number(g)), { modelVersion: 'm1' })])))).flat();
    expect(outcomes.filter((o) => o === 'created')).toHaveLength(1);
    expect((await index.get('same'))!.generation).toBe('9');
    expect(await index.count()).toBe(1);
  });

  it('never lets an older generation overwrite a newer one, even from a writer that does not share the lock', async () => {
    const index = await catalog.ensureLive('m1', 4);
    await index.upsert([makeDoc('x', '1', randomUnit(4, 1), { modelVersion: 'm1' })]);
    // A second handle with its own lock stands in for another process.
    const db = await lancedb.connect(dir);
    const other = new GenerationOrderedTable(await db.openTable(index.name), 'another-process', 4);
    const row = (g: string) => ({
      ...makeDoc('x', g, randomUnit(4, 2), { modelVersion: 'm1' }),
      labels: [],
      caption: null,
      contentType: null,
      width: null,
      height: null,
      eventTime: null,
      eventMs: null,
    });
    await index.upsert([makeDoc('x', '8', randomUnit(4, 8), { modelVersion: 'm1' })]);
    // The other writer decided from a state read before generation 8 landed (a cross-process race):
    // the merge's own guard must still refuse to write its older generation 4.
    Object.assign(other, { states: async () => new Map([['x', { generation: '1', deleted: false, uri: 'u' }]]) });
    expect(await other.upsert([row('4')])).toEqual(['updated']);
    expect((await index.get('x'))!.generation).toBe('8');
    expect(await index.count()).toBe(1);
    db.close();
  });

  it('keeps versions, alias and data across reopening', async () => {
    const v1 = await catalog.ensureLive('m1', 4);
    await v1.upsert([makeDoc('a', '1', randomUnit(4, 1), { modelVersion: 'm1' })]);
    const v2 = await catalog.createVersion('m2', 4);
    await catalog.swapAlias(v2.name);
    await catalog.close();
    catalog = await LanceDbIndexCatalog.open(dir);
    expect((await catalog.live())!.name).toBe(v2.name);
    expect((await catalog.versions()).map((v) => [v.name, v.modelVersion, v.count, v.live])).toEqual([
      ['images-v1', 'm1', 1, false],
      ['images-v2', 'm2', 0, true],
    ]);
    expect(await catalog.rollback()).toBe('images-v1');
  });

  it('builds an ANN index that keeps recall high (refine), and refuses one on a tiny table', async () => {
    const index = (await catalog.ensureLive('m1', 16)) as Awaited<ReturnType<LanceDbIndexCatalog['createVersion']>>;
    await index.upsert([makeDoc('only', '1', randomUnit(16, 1), { modelVersion: 'm1' })]);
    await expect(index.createAnnIndex()).rejects.toThrow(/256 rows/);
    const n = 600;
    await index.upsert(
      Array.from({ length: n }, (_, i) => makeDoc(`d${i}`, '1', randomUnit(16, i + 10), { modelVersion: 'm1', labels: [i % 2 ? 'odd' : 'even'] })),
    );
    const queries = Array.from({ length: 30 }, (_, q) => q * 17);
    const flat = await Promise.all(queries.map((i) => index.query(randomUnit(16, i + 10), { k: 10 })));
    const t0 = performance.now();
    await index.createAnnIndex({ numPartitions: 8 });
    const buildMs = performance.now() - t0;
    expect(index.annIndexed).toBe(true);
    const ann = await Promise.all(queries.map((i) => index.query(randomUnit(16, i + 10), { k: 10 })));
    let overlap = 0;
    queries.forEach((i, q) => {
      expect(ann[q]![0]!.id).toBe(`d${i}`);
      const truth = new Set(flat[q]!.map((h) => h.id));
      overlap += ann[q]!.filter((h) => truth.has(h.id)).length;
    });
    const recall = overlap / (queries.length * 10);
    console.info(`ANN (IVF_PQ, 8 partitions, refine 10) on ${n} × 16: build ${buildMs.toFixed(0)} ms, recall@10 vs flat ${recall.toFixed(3)}`);
    expect(recall).toBeGreaterThanOrEqual(0.8);
    // Filters still apply with the ANN index.
    const filtered = await index.query(randomUnit(16, 11), { k: 5, filter: { labels: ['odd'] } });
    expect(filtered.length).toBeGreaterThan(0);
    expect(filtered.every((h) => h.labels.includes('odd'))).toBe(true);
    // Writes after the index was built are still found.
    await index.upsert([makeDoc('fresh', '1', randomUnit(16, 9999), { modelVersion: 'm1' })]);
    expect((await index.query(randomUnit(16, 9999), { k: 1 }))[0]!.id).toBe('fresh');
  });

  it('refuses an unsafe alias and bad createVersion arguments', async () => {
    await expect(LanceDbIndexCatalog.open(dir, { alias: '../x' })).rejects.toThrow(/alias/);
    await expect(catalog.createVersion('m1', 0)).rejects.toThrow(/dimension/);
    await expect(catalog.open('images-v42')).rejects.toThrow(/does not exist/);
  });
});

describe('LanceDbFeatureStore (embedded specifics)', () => {
  it('keeps its dimension and records across reopening; a delete before any put is a no-op', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'iss-feat-'));
    try {
      let store = await LanceDbFeatureStore.open(dir);
      await store.delete([{ id: 'ghost', generation: '1' }]);
      expect(store.dimension).toBeNull();
      await store.put([{ id: 'a', uri: 'u', generation: '1', baseModel: 'b', vector: new Float32Array([1, 0, 0]), labels: [] }]);
      await store.close();
      store = await LanceDbFeatureStore.open(dir);
      expect(store.dimension).toBe(3);
      expect(await store.count()).toBe(1);
      await expect(store.put([{ id: 'b', uri: 'u', generation: '1', baseModel: 'b', vector: new Float32Array(4), labels: [] }])).rejects.toThrow(
        /dimension 4, expected 3/,
      );
      await store.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('rowsToArrowTable (the write path of both LanceDB tables)', () => {
  it('lays vectors out exactly, keeps nullable gaps, and refuses rows that do not fit the schema', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'iss-arrow-'));
    try {
      const db = await lancedb.connect(dir);
      const table = await db.createTable('t', [{ id: 'seed', note: 'x', vector: [0.5, 0.25, 0.125] }]);
      const schema = await table.schema();
      const rows = [
        { id: 'a', note: null, vector: Float32Array.from([1, 2, 3]) },
        { id: 'b', note: 'kept', vector: Float32Array.from([-1, 0.1, 1e-7]) },
      ];
      await table.add(rowsToArrowTable(rows, schema));
      const back = await table.query().where("id IN ('a','b')").toArray();
      const byId = new Map(back.map((r) => [String(r.id), r]));
      expect(Array.from(byId.get('a')!.vector as ArrayLike<number>)).toEqual([1, 2, 3]);
      expect(Array.from(byId.get('b')!.vector as ArrayLike<number>)).toEqual(Array.from(Float32Array.from([-1, 0.1, 1e-7])));
      expect(byId.get('a')!.note).toBeNull();
      expect(byId.get('b')!.note).toBe('kept');

      expect(() => rowsToArrowTable([{ id: 'c', note: 'x', vector: Float32Array.from([1, 2]) }], schema)).toThrow(
        /column vector: row c needs a Float32Array of 3 values/,
      );
      expect(() => rowsToArrowTable([{ id: 'c', note: 'x', vector: [1, 2, 3] }], schema)).toThrow(/needs a Float32Array/);
      const strict = await db.createEmptyTable(
        'strict',
        new Schema([new Field('id', new Utf8(), false), new Field('vector', new FixedSizeList(3, new Field('item', new Float32(), true)), false)]),
      );
      const strictSchema = await strict.schema();
      expect(() => rowsToArrowTable([{ id: undefined, vector: Float32Array.from([1, 2, 3]) }], strictSchema)).toThrow(/column id may not be empty/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as lancedb from '@lancedb/lancedb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import { annQuery, indexTableSchema, type LanceDbVectorIndex } from '../../shared/adapters/local/lancedb-index.js';
import { AppError, ModelMismatchError } from '../../shared/errors.js';
import type { AnnParams, VectorDocument } from '../../shared/ports/vector-index.js';

/** Queries, filters and document round trips of one embedded index version (real LanceDB, dimension 2). */
let dir: string;
let catalog: LanceDbIndexCatalog;
let index: LanceDbVectorIndex;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lancedb-index-'));
  catalog = await LanceDbIndexCatalog.open(dir, { alias: 'q' });
  index = await catalog.ensureLive('m', 2);
});

afterEach(async () => {
  await catalog.close();
  await rm(dir, { recursive: true, force: true });
});

/** A unit vector at `deg` degrees: cosine similarity between two is cos(difference). */
const at = (deg: number) => new Float32Array([Math.cos((deg * Math.PI) / 180), Math.sin((deg * Math.PI) / 180)]);

const doc = (id: string, deg: number, extra: Partial<VectorDocument> = {}): VectorDocument => ({
  id,
  uri: `file:///b/${id}.jpg`,
  generation: '1',
  modelVersion: 'm',
  vector: at(deg),
  labels: [],
  indexedAt: '2026-01-01T00:00:00.000Z',
  ...extra,
});

describe('documents', () => {
  it('round-trips every field, and leaves absent optional fields absent', async () => {
    const full = doc('full', 0, {
      labels: ['a', 'b'],
      caption: 'c',
      contentType: 'image/png',
      width: 640,
      height: 480,
      eventTime: '2026-02-03T04:05:06.000Z',
    });
    await index.upsert([full, doc('bare', 90)]);
    const got = await index.get('full');
    expect({ ...got, vector: Array.from(got!.vector) }).toEqual({ ...full, vector: [1, 0] });
    const bare = await index.get('bare');
    expect([bare?.caption, bare?.contentType, bare?.width, bare?.height, bare?.eventTime]).toEqual([undefined, undefined, undefined, undefined, undefined]);
    expect(await index.get('nope')).toBeNull();
  });

  it('refuses a document of another model version, with the ids in meta, and writes nothing of the batch', async () => {
    const err = await index.upsert([doc('ok', 0), doc('x', 0, { modelVersion: 'other' })]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelMismatchError);
    expect((err as ModelMismatchError).message).toBe('Document x was embedded by model other, but index q-v1 holds vectors of model m');
    expect((err as ModelMismatchError).meta).toEqual({ id: 'x', documentModel: 'other', indexModel: 'm', index: 'q-v1' });
    expect(await index.count()).toBe(0);
  });

  it('names the document in vector, id and eventTime errors', async () => {
    await expect(index.upsert([doc('v', 0, { vector: new Float32Array(3) })])).rejects.toThrow('document v: vector has dimension 3, expected 2');
    await expect(index.upsert([doc('', 0)])).rejects.toThrow('document id must be a non-empty string');
    await expect(index.upsert([doc('t', 0, { eventTime: 'yesterday' })])).rejects.toThrow(
      new AppError('document t eventTime is not a valid date/time: "yesterday"'),
    );
    expect(await index.count()).toBe(0);
  });

  it('an empty upsert or delete does nothing and reports nothing', async () => {
    expect(await index.upsert([])).toEqual([]);
    expect(await index.delete([])).toEqual([]);
    expect(await index.count()).toBe(0);
  });

  it('generations() lists live documents only', async () => {
    await index.upsert([doc('a', 0, { generation: '3' }), doc('b', 0, { generation: '4' })]);
    await index.delete([
      { id: 'b', generation: '4' },
      { id: 'c', generation: '1' },
    ]);
    expect(await index.generations(['a', 'b', 'c', 'd'])).toEqual(new Map([['a', '3']]));
    expect(await index.count()).toBe(1);
  });

  it('the table schema requires model version and indexedAt', () => {
    const fields = indexTableSchema(2).fields.map((f) => [f.name, f.nullable]);
    expect(fields.slice(7)).toEqual([
      ['modelVersion', false],
      ['caption', true],
      ['contentType', true],
      ['width', true],
      ['height', true],
      ['eventTime', true],
      ['eventMs', true],
      ['indexedAt', false],
    ]);
  });
});

describe('query', () => {
  beforeEach(async () => {
    await index.upsert([
      doc('d0', 0, { labels: ['cat'], uri: 'file:///b/x/d0.jpg', eventTime: '2026-01-01T00:00:00.000Z', caption: 'zero' }),
      doc('d30', 30, { labels: ['dog'], uri: 'file:///b/y/d30.jpg', eventTime: '2026-01-02T00:00:00.000Z' }),
      doc('d60', 60, { labels: ['cat', 'dog'], uri: 'file:///b/x/d60.jpg', eventTime: '2026-01-03T00:00:00.000Z' }),
      doc('d180', 180, { labels: [], uri: 'file:///b/y/d180.jpg' }),
    ]);
  });

  it('returns the k nearest by cosine similarity, closest first, with score = cosine', async () => {
    const hits = await index.query(at(0), { k: 3 });
    expect(hits.map((h) => h.id)).toEqual(['d0', 'd30', 'd60']);
    expect(hits[0]).toMatchObject({ id: 'd0', uri: 'file:///b/x/d0.jpg', generation: '1', labels: ['cat'], caption: 'zero', modelVersion: 'm' });
    expect(hits[0]!.score).toBeCloseTo(1, 5);
    expect(hits[1]!.score).toBeCloseTo(Math.cos(Math.PI / 6), 5);
    expect(hits[2]!.score).toBeCloseTo(0.5, 5);
    expect(hits[1]!.caption).toBeUndefined();
    const all = await index.query(at(0), { k: 10 });
    expect(all.map((h) => h.id)).toEqual(['d0', 'd30', 'd60', 'd180']);
    expect(all[3]!.score).toBeCloseTo(-1, 5);
    expect(all[3]!.score).toBeGreaterThanOrEqual(-1);
  });

  it('minScore keeps hits scoring at least minScore', async () => {
    expect((await index.query(at(0), { k: 10, minScore: 0.5 })).map((h) => h.id)).toEqual(['d0', 'd30', 'd60']);
    expect((await index.query(at(0), { k: 10, minScore: 0.6 })).map((h) => h.id)).toEqual(['d0', 'd30']);
    expect((await index.query(at(180), { k: 10, minScore: 1 })).map((h) => h.id)).toEqual(['d180']);
    expect((await index.query(at(0), { k: 10, minScore: -1 })).map((h) => h.id)).toHaveLength(4);
  });

  it('refuses k outside 1..10000 and minScore outside [-1, 1]', async () => {
    for (const k of [0, -1, 2.5, 10_001, Number.NaN]) {
      await expect(index.query(at(0), { k })).rejects.toThrow(new AppError(`k must be a whole number from 1 to 10000, got ${k}`));
    }
    expect(await index.query(at(0), { k: 10_000 })).toHaveLength(4);
    expect(await index.query(at(0), { k: 1 })).toHaveLength(1);
    for (const minScore of [-1.01, 1.01, Number.NaN]) {
      await expect(index.query(at(0), { k: 1, minScore })).rejects.toThrow(new AppError(`minScore must be within [-1, 1], got ${minScore}`));
    }
    await expect(index.query(new Float32Array(3), { k: 1 })).rejects.toThrow('query: vector has dimension 3, expected 2');
  });

  it('filters by any of the labels, uri prefix, event time range and excluded ids', async () => {
    const ids = async (filter: object) => (await index.query(at(0), { k: 10, filter })).map((h) => h.id);
    expect(await ids({ labels: ['dog'] })).toEqual(['d30', 'd60']);
    expect(await ids({ labels: ['cat', 'dog'] })).toEqual(['d0', 'd30', 'd60']);
    expect(await ids({ labels: [] })).toEqual(['d0', 'd30', 'd60', 'd180']);
    expect(await ids({ uriPrefix: 'file:///b/x/' })).toEqual(['d0', 'd60']);
    expect(await ids({ eventTimeFrom: '2026-01-02T00:00:00.000Z' })).toEqual(['d30', 'd60']);
    expect(await ids({ eventTimeTo: '2026-01-02T00:00:00.000Z' })).toEqual(['d0', 'd30']);
    expect(await ids({ eventTimeFrom: '2026-01-02T00:00:00.000Z', eventTimeTo: '2026-01-02T00:00:00.000Z' })).toEqual(['d30']);
    expect(await ids({ excludeIds: ['d0', 'd60'] })).toEqual(['d30', 'd180']);
    expect(await ids({ excludeIds: [] })).toEqual(['d0', 'd30', 'd60', 'd180']);
    expect(await ids({ labels: ["it's"] })).toEqual([]);
    await expect(ids({ eventTimeFrom: 'soon' })).rejects.toThrow(new AppError('eventTimeFrom is not a valid date/time: "soon"'));
    await expect(ids({ eventTimeTo: 'later' })).rejects.toThrow(new AppError('eventTimeTo is not a valid date/time: "later"'));
  });

  it('never returns deleted documents', async () => {
    await index.delete([{ id: 'd0', generation: '1' }]);
    expect((await index.query(at(0), { k: 10 })).map((h) => h.id)).toEqual(['d30', 'd60', 'd180']);
  });
});

describe('annQuery (query-side ANN settings)', () => {
  /** Records the settings applied to a LanceDB vector query. */
  function recorder() {
    const calls: Record<string, number> = {};
    const q = {
      nprobes(n: number) {
        calls.nprobes = n;
        return q;
      },
      ef(n: number) {
        calls.ef = n;
        return q;
      },
      refineFactor(n: number) {
        calls.refineFactor = n;
        return q;
      },
    };
    return { q: q as unknown as lancedb.VectorQuery, calls };
  }
  const pq: AnnParams = { type: 'ivf_pq', rows: 1000, numPartitions: 30, numSubVectors: 4, nprobes: 12, refineFactor: 5 };
  const hnsw: AnnParams = { type: 'ivf_hnsw_sq', rows: 1000, numPartitions: 4, m: 16, efConstruction: 150, nprobes: 3, ef: 40, refineFactor: 2 };

  it('uses the recorded parameters, raised by numCandidates', () => {
    const a = recorder();
    annQuery(a.q, { k: 10 }, pq);
    expect(a.calls).toEqual({ nprobes: 12, refineFactor: 5 });
    const b = recorder();
    annQuery(b.q, { k: 10, numCandidates: 200 }, pq);
    expect(b.calls).toEqual({ nprobes: 20, refineFactor: 5 });
    const c = recorder();
    annQuery(c.q, { k: 10, numCandidates: 101 }, pq);
    expect(c.calls.nprobes).toBe(12);
    const d = recorder();
    annQuery(d.q, { k: 10, numCandidates: 121 }, pq);
    expect(d.calls.nprobes).toBe(13);
  });

  it('without recorded parameters: 32 probes and refine factor 20', () => {
    const a = recorder();
    annQuery(a.q, { k: 5 }, null);
    expect(a.calls).toEqual({ nprobes: 32, refineFactor: 20 });
  });

  it('no re-ranking when the refine factor is 0', () => {
    const a = recorder();
    annQuery(a.q, { k: 5 }, { ...pq, refineFactor: 0 });
    expect(a.calls).toEqual({ nprobes: 12 });
  });

  it('HNSW: ef is at least the recorded ef, 10 × k, k × refineFactor and numCandidates', () => {
    const cases: [Parameters<typeof annQuery>[1], AnnParams, number][] = [
      [{ k: 2 }, hnsw, 40],
      [{ k: 5 }, hnsw, 50],
      [{ k: 30 }, { ...hnsw, refineFactor: 11 }, 330],
      [{ k: 2, numCandidates: 77 }, hnsw, 77],
      [{ k: 2 }, { ...hnsw, ef: undefined }, 100],
      [{ k: 20 }, { ...hnsw, refineFactor: 0, ef: 1 }, 200],
    ];
    for (const [options, params, ef] of cases) {
      const r = recorder();
      annQuery(r.q, options, params);
      expect(r.calls.ef).toBe(ef);
    }
    const r = recorder();
    annQuery(r.q, { k: 2 }, pq);
    expect(r.calls.ef).toBeUndefined();
  });
});

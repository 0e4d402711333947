import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelMismatchError } from '../../shared/errors.js';
import type { VectorDocument, VectorIndex, VectorIndexCatalog } from '../../shared/ports/vector-index.js';

/**
 * The behaviour every VectorIndexCatalog / VectorIndex adapter must have (LanceDB, OpenSearch).
 * Call from a test file: `describeVectorIndexContract('lancedb', async () => ({ catalog, cleanup }))`.
 */
export interface CatalogFixture {
  catalog: VectorIndexCatalog;
  cleanup(): Promise<void>;
  /**
   * Makes every write so far visible to `query()`, for an adapter whose search is near-real-time
   * (OpenSearch: `POST <index>/_refresh`, what its refresh interval does within a second). Left
   * out where a query reads its own writes (LanceDB). `count()`, `get()`, `generations()` and
   * `scan()` must see the writes without it: they are how writes are verified.
   */
  makeSearchable?(index: VectorIndex): Promise<void>;
}

const DIM = 8;
const MODEL = 'model-a';

/** A unit vector pointing mostly along axis `axis`, slightly towards `axis + 1`. */
export function unitVector(axis: number, tilt = 0, dim = DIM): Float32Array {
  const v = new Float32Array(dim);
  v[axis % dim] = 1;
  v[(axis + 1) % dim] = tilt;
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
}

export function makeDoc(id: string, generation: string, vector: Float32Array, extra: Partial<VectorDocument> = {}): VectorDocument {
  return {
    id,
    uri: `gs://bucket/photos/${id}.jpg`,
    generation,
    modelVersion: MODEL,
    vector,
    labels: [],
    indexedAt: new Date().toISOString(),
    ...extra,
  };
}

export function describeVectorIndexContract(label: string, makeCatalog: () => Promise<CatalogFixture>): void {
  describe(`VectorIndex contract: ${label}`, () => {
    let fx: CatalogFixture;
    let index: VectorIndex;
    /** Before a query that must see the writes made just before it. */
    const searchable = async (): Promise<void> => fx.makeSearchable?.(index);

    beforeEach(async () => {
      fx = await makeCatalog();
      index = await fx.catalog.ensureLive(MODEL, DIM);
    });
    afterEach(async () => {
      await fx.catalog.close();
      await fx.cleanup();
    });

    it('reports the model version and dimension it was created for', () => {
      expect(index.modelVersion).toBe(MODEL);
      expect(index.dimension).toBe(DIM);
    });

    it('upserts idempotently: created, then unchanged for the same generation', async () => {
      const doc = makeDoc('a', '100', unitVector(0), { labels: ['cat'], caption: 'a cat', width: 10, height: 20, eventTime: '2024-01-01T00:00:00.000Z' });
      expect(await index.upsert([doc])).toEqual(['created']);
      expect(await index.upsert([doc])).toEqual(['unchanged']);
      expect(await index.count()).toBe(1);
      const got = await index.get('a');
      expect(got).not.toBeNull();
      expect(got!.generation).toBe('100');
      expect(got!.labels).toEqual(['cat']);
      expect(got!.caption).toBe('a cat');
      expect(got!.width).toBe(10);
      expect(Array.from(got!.vector)).toEqual(Array.from(doc.vector).map((x) => expect.closeTo(x, 5)));
    });

    it('orders upserts by generation (numerically, not as text), also out of order', async () => {
      expect(await index.upsert([makeDoc('a', '9', unitVector(0))])).toEqual(['created']);
      // '10' > '9' numerically although it sorts before it as text.
      expect(await index.upsert([makeDoc('a', '10', unitVector(1))])).toEqual(['updated']);
      expect(await index.upsert([makeDoc('a', '9', unitVector(2))])).toEqual(['stale']);
      const got = await index.get('a');
      expect(got!.generation).toBe('10');
      expect(got!.vector[1]).toBeCloseTo(1, 5);
      // int64-sized GCS generations compare exactly.
      expect(await index.upsert([makeDoc('b', '1700000000000000001', unitVector(3))])).toEqual(['created']);
      expect(await index.upsert([makeDoc('b', '1700000000000000000', unitVector(4))])).toEqual(['stale']);
      expect(await index.upsert([makeDoc('b', '1700000000000000002', unitVector(5))])).toEqual(['updated']);
    });

    it('handles several generations of one id inside one batch', async () => {
      const out = await index.upsert([makeDoc('a', '5', unitVector(0)), makeDoc('a', '7', unitVector(1)), makeDoc('a', '6', unitVector(2))]);
      expect(out).toEqual(['created', 'updated', 'stale']);
      expect((await index.get('a'))!.generation).toBe('7');
      expect(await index.count()).toBe(1);
    });

    it('deletes only generations it has seen', async () => {
      await index.upsert([makeDoc('a', '100', unitVector(0)), makeDoc('b', '100', unitVector(1))]);
      expect(await index.delete([{ id: 'a', generation: '99' }])).toEqual(['stale']);
      expect(await index.get('a')).not.toBeNull();
      expect(
        await index.delete([
          { id: 'a', generation: '100' },
          { id: 'zz', generation: '5' },
        ]),
      ).toEqual(['deleted', 'absent']);
      expect(await index.get('a')).toBeNull();
      expect(await index.count()).toBe(1);
      expect(await index.delete([{ id: 'a', generation: '200' }])).toEqual(['absent']);
    });

    it('keeps a tombstone: a stale upsert after the delete does not resurrect, a newer one does', async () => {
      await index.upsert([makeDoc('a', '100', unitVector(0))]);
      await index.delete([{ id: 'a', generation: '100' }]);
      expect(await index.upsert([makeDoc('a', '100', unitVector(0))])).toEqual(['stale']);
      expect(await index.upsert([makeDoc('a', '50', unitVector(0))])).toEqual(['stale']);
      expect(await index.get('a')).toBeNull();
      expect(await index.count()).toBe(0);
      await searchable();
      expect(await index.query(unitVector(0), { k: 5 })).toEqual([]);
      expect(await index.upsert([makeDoc('a', '101', unitVector(0))])).toEqual(['created']);
      expect((await index.get('a'))!.generation).toBe('101');
    });

    it('reports the generations of live documents in one call, without tombstones', async () => {
      await index.upsert([makeDoc('a', '100', unitVector(0)), makeDoc('b', '12345678901234567', unitVector(1)), makeDoc('c', '7', unitVector(2))]);
      await index.delete([{ id: 'c', generation: '7' }]);
      const gens = await index.generations(['a', 'b', 'c', 'missing', 'a']);
      expect([...gens.entries()].sort()).toEqual([
        ['a', '100'],
        ['b', '12345678901234567'],
      ]);
      expect((await index.generations([])).size).toBe(0);
    });

    it('remembers a delete that arrives before its upsert (out of order)', async () => {
      expect(await index.delete([{ id: 'late', generation: '300' }])).toEqual(['absent']);
      expect(await index.upsert([makeDoc('late', '300', unitVector(0))])).toEqual(['stale']);
      expect(await index.get('late')).toBeNull();
      expect(await index.upsert([makeDoc('late', '301', unitVector(0))])).toEqual(['created']);
    });

    it('refuses documents of another model version, naming both versions, and writes nothing', async () => {
      const bad = makeDoc('x', '1', unitVector(0), { modelVersion: 'model-b' });
      const good = makeDoc('y', '1', unitVector(1));
      const err = await index.upsert([good, bad]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ModelMismatchError);
      expect((err as Error).message).toContain('model-a');
      expect((err as Error).message).toContain('model-b');
      expect(await index.count()).toBe(0);
    });

    it('refuses vectors of the wrong dimension with a clear error', async () => {
      await expect(index.upsert([makeDoc('x', '1', new Float32Array(DIM + 1).fill(0.1))])).rejects.toThrow(/dimension/i);
      await expect(index.query(new Float32Array(3), { k: 1 })).rejects.toThrow(/dimension/i);
      expect(await index.count()).toBe(0);
    });

    it('refuses bad k and bad generations', async () => {
      await expect(index.query(unitVector(0), { k: 0 })).rejects.toThrow(/k/);
      await expect(index.query(unitVector(0), { k: 1.5 })).rejects.toThrow(/k/);
      await expect(index.upsert([makeDoc('x', 'abc', unitVector(0))])).rejects.toThrow(/generation/);
    });

    describe('queries', () => {
      beforeEach(async () => {
        await index.upsert([
          makeDoc('cat1', '1', unitVector(0, 0.1), { labels: ['cat'], uri: 'gs://bucket/pets/cat1.jpg', eventTime: '2024-01-10T00:00:00Z' }),
          makeDoc('cat2', '1', unitVector(0, 0.3), { labels: ['cat', 'indoor'], uri: 'gs://bucket/pets/cat2.jpg', eventTime: '2024-02-10T00:00:00Z' }),
          makeDoc('dog1', '1', unitVector(0, 0.6), { labels: ['dog'], uri: 'gs://bucket/pets/dog1.jpg', eventTime: '2024-03-10T00:00:00Z' }),
          makeDoc('car1', '1', unitVector(3), { labels: ['car'], uri: 'gs://bucket/cars/car1.jpg', eventTime: '2024-04-10T00:00:00Z' }),
          makeDoc(
            'opp',
            '1',
            unitVector(0).map((x) => -x),
            { labels: [], uri: 'gs://bucket/misc/opp.jpg' },
          ),
        ]);
        await searchable();
      });

      it('returns cosine similarity in [-1, 1], best first, k bounded', async () => {
        const hits = await index.query(unitVector(0), { k: 10 });
        expect(hits.map((h) => h.id)).toEqual(['cat1', 'cat2', 'dog1', 'car1', 'opp']);
        expect(hits[0]!.score).toBeCloseTo(1 / Math.hypot(1, 0.1), 4);
        expect(hits[3]!.score).toBeCloseTo(0, 4);
        expect(hits[4]!.score).toBeCloseTo(-1, 4);
        for (const h of hits) (expect(h.score).toBeGreaterThanOrEqual(-1), expect(h.score).toBeLessThanOrEqual(1));
        expect(hits[0]).toMatchObject({ uri: 'gs://bucket/pets/cat1.jpg', generation: '1', labels: ['cat'], modelVersion: MODEL });
        expect((await index.query(unitVector(0), { k: 2 })).map((h) => h.id)).toEqual(['cat1', 'cat2']);
      });

      it('filters by labels (any of)', async () => {
        const hits = await index.query(unitVector(0), { k: 10, filter: { labels: ['dog', 'indoor'] } });
        expect(hits.map((h) => h.id)).toEqual(['cat2', 'dog1']);
        expect(await index.query(unitVector(0), { k: 10, filter: { labels: ["it's"] } })).toEqual([]);
      });

      it('filters by uri prefix', async () => {
        const hits = await index.query(unitVector(0), { k: 10, filter: { uriPrefix: 'gs://bucket/cars/' } });
        expect(hits.map((h) => h.id)).toEqual(['car1']);
      });

      it('filters by event time range (inclusive)', async () => {
        const hits = await index.query(unitVector(0), {
          k: 10,
          filter: { eventTimeFrom: '2024-02-10T00:00:00Z', eventTimeTo: '2024-03-31T00:00:00Z' },
        });
        expect(hits.map((h) => h.id)).toEqual(['cat2', 'dog1']);
      });

      it('excludes ids and cuts below minScore', async () => {
        const hits = await index.query(unitVector(0), { k: 10, filter: { excludeIds: ['cat1'] }, minScore: 0.5 });
        expect(hits.map((h) => h.id)).toEqual(['cat2', 'dog1']);
        expect(hits.every((h) => h.score >= 0.5)).toBe(true);
      });

      it('combines filters', async () => {
        const hits = await index.query(unitVector(0), { k: 10, filter: { labels: ['cat'], uriPrefix: 'gs://bucket/pets/', excludeIds: ['cat2'] } });
        expect(hits.map((h) => h.id)).toEqual(['cat1']);
      });

      it('scans every live document in pages, without tombstones', async () => {
        await index.delete([{ id: 'opp', generation: '1' }]);
        const pages: VectorDocument[][] = [];
        for await (const page of index.scan(2)) pages.push(page);
        expect(pages.map((p) => p.length)).toEqual([2, 2]);
        expect(
          pages
            .flat()
            .map((d) => d.id)
            .sort(),
        ).toEqual(['car1', 'cat1', 'cat2', 'dog1']);
        expect(pages.flat()[0]!.vector).toBeInstanceOf(Float32Array);
        expect(await index.count()).toBe(4);
      });
    });

    describe('versions and alias', () => {
      it('builds a new version beside the live one, swaps the alias, rolls back', async () => {
        await index.upsert([makeDoc('a', '1', unitVector(0))]);
        const v2 = await fx.catalog.createVersion('model-b', 4);
        expect(v2.name).not.toBe(index.name);
        expect(v2.modelVersion).toBe('model-b');
        expect((await fx.catalog.live())!.name).toBe(index.name);
        await v2.upsert([{ ...makeDoc('a', '1', unitVector(1, 0, 4)), modelVersion: 'model-b' }]);

        expect(await fx.catalog.swapAlias(v2.name)).toBe(index.name);
        const live = await fx.catalog.live();
        expect(live!.name).toBe(v2.name);
        expect(live!.dimension).toBe(4);

        const versions = await fx.catalog.versions();
        expect(versions.map((v) => v.name)).toEqual(expect.arrayContaining([index.name, v2.name]));
        expect(versions.find((v) => v.name === v2.name)).toMatchObject({ live: true, modelVersion: 'model-b', dimension: 4, count: 1 });
        expect(versions.find((v) => v.name === index.name)).toMatchObject({ live: false, modelVersion: MODEL, dimension: DIM, count: 1 });

        expect(await fx.catalog.rollback()).toBe(index.name);
        expect((await fx.catalog.live())!.name).toBe(index.name);
        // ensureLive returns the live version rather than creating another.
        expect((await fx.catalog.ensureLive(MODEL, DIM)).name).toBe(index.name);
      });

      it('refuses to drop the live version, drops others', async () => {
        const v2 = await fx.catalog.createVersion('model-b', 4);
        await expect(fx.catalog.dropVersion(index.name)).rejects.toThrow(/alias/i);
        await fx.catalog.dropVersion(v2.name);
        expect((await fx.catalog.versions()).map((v) => v.name)).toEqual([index.name]);
        await expect(fx.catalog.open(v2.name)).rejects.toThrow();
      });

      it('refuses a rollback with no previous version, and a swap to an unknown one', async () => {
        await expect(fx.catalog.rollback()).rejects.toThrow(/previous/i);
        await expect(fx.catalog.swapAlias('no-such-index')).rejects.toThrow();
      });

      it('opens an existing version by name with its data', async () => {
        await index.upsert([makeDoc('a', '1', unitVector(0))]);
        const reopened = await fx.catalog.open(index.name);
        expect(reopened.modelVersion).toBe(MODEL);
        expect(await reopened.count()).toBe(1);
      });
    });
  });
}

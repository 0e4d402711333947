import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';

/** The behaviour every FeatureStore adapter must have (LanceDB, GCS shards). */
export interface FeatureStoreFixture {
  store: FeatureStore;
  cleanup(): Promise<void>;
}

const DIM = 6;

function record(id: string, generation: string, fill: number, extra: Partial<FeatureRecord> = {}): FeatureRecord {
  return { id, uri: `gs://b/${id}.jpg`, generation, baseModel: 'base-1', vector: new Float32Array(DIM).fill(fill), labels: ['l'], ...extra };
}

export function describeFeatureStoreContract(label: string, makeStore: () => Promise<FeatureStoreFixture>): void {
  describe(`FeatureStore contract: ${label}`, () => {
    let fx: FeatureStoreFixture;
    let store: FeatureStore;
    beforeEach(async () => {
      fx = await makeStore();
      store = fx.store;
    });
    afterEach(async () => fx.cleanup());

    it('is empty at first', async () => {
      expect(await store.count()).toBe(0);
      expect(await store.get('a')).toBeNull();
      const pages: FeatureRecord[][] = [];
      for await (const p of store.scan()) pages.push(p);
      expect(pages).toEqual([]);
    });

    it('stores and returns records; puts are idempotent and generation-ordered', async () => {
      await store.put([record('a', '10', 0.1, { caption: 'a red car', eventTime: '2024-01-01T00:00:00Z' }), record('b', '10', 0.2)]);
      await store.put([record('a', '10', 0.1, { caption: 'a red car' })]);
      expect(await store.count()).toBe(2);
      await store.put([record('a', '9', 0.9)]);
      const a = await store.get('a');
      expect(a).toMatchObject({ id: 'a', generation: '10', baseModel: 'base-1', labels: ['l'], caption: 'a red car' });
      expect(a!.vector).toBeInstanceOf(Float32Array);
      expect(a!.vector[0]).toBeCloseTo(0.1, 5);
      await store.put([record('a', '11', 0.5)]);
      expect((await store.get('a'))!.vector[0]).toBeCloseTo(0.5, 5);
    });

    it('deletes seen generations only and keeps a tombstone against stale puts', async () => {
      await store.put([record('a', '10', 0.1)]);
      await store.delete([{ id: 'a', generation: '9' }]);
      expect(await store.get('a')).not.toBeNull();
      await store.delete([{ id: 'a', generation: '10' }]);
      expect(await store.get('a')).toBeNull();
      await store.put([record('a', '10', 0.1)]);
      expect(await store.get('a')).toBeNull();
      expect(await store.count()).toBe(0);
      await store.put([record('a', '12', 0.1)]);
      expect(await store.count()).toBe(1);
    });

    it('scans in batches', async () => {
      await store.put(Array.from({ length: 5 }, (_, i) => record(`r${i}`, '1', i / 10)));
      const pages: FeatureRecord[][] = [];
      for await (const p of store.scan(2)) pages.push(p);
      expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
      expect(
        pages
          .flat()
          .map((r) => r.id)
          .sort(),
      ).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    });

    it('refuses a vector of another dimension with a clear error', async () => {
      await store.put([record('a', '1', 0.1)]);
      await expect(store.put([{ ...record('b', '1', 0.1), vector: new Float32Array(DIM + 2) }])).rejects.toThrow(/dimension/);
    });
  });
}

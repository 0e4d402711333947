import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, FeatureRecord, FeatureStore } from '../../shared/ports/index.js';
import { reindexFromFeatures } from '../../shared/services/reindex.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger } from './functions-fakes.js';

/**
 * Which images a reindex reports as needing re-embedding when several image towers stored them
 * (a tuned tower's records sit beside the first tower's, shared/adapters/local/per-tower-feature-store.ts):
 * an image counts once, and only when the target tower has no record of it or only one older than
 * another tower's (the image was replaced after the target tower's records were written). The index
 * is the real LanceDB catalog; the feature store is the port's scan over fixed records.
 */
const TOWER = 'tuned-tower';

const record = (id: string, baseModel: string, generation: string): FeatureRecord => ({
  id,
  uri: `file:///images/${id}.png`,
  generation,
  baseModel,
  vector: Float32Array.of(1, 0, 0),
  labels: [],
});

function storeOf(records: FeatureRecord[]): FeatureStore {
  return strict<FeatureStore>('feature store', {
    async *scan(batchSize = 2) {
      for (let i = 0; i < records.length; i += batchSize) yield records.slice(i, i + batchSize);
    },
  });
}

const embedder = strict<Embedder>('embedder', {
  modelVersion: 'v-tuned',
  dimension: 2,
  manifest: { name: TOWER, image: { dimension: 3 } } as ModelManifest,
  project: async (base) => base.map((b) => Float32Array.of(b[0]!, b[1]!)),
});

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'iss-reindex-needs-'));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('reindex from stored features: images that need re-embedding', () => {
  it('counts an image once, not when the target tower has it, and when it was replaced after the target tower stored it', async () => {
    const catalog = await LanceDbIndexCatalog.open(join(work, 'index'));
    const records = [
      record('a', 'default', '5'),
      record('a', TOWER, '5'), // both towers, same picture
      record('b', TOWER, '5'),
      record('b', 'default', '6'), // replaced after the tuned tower's records: the index would hold the old picture
      record('c', 'default', '5'),
      record('c', 'another-tuned', '5'), // only other towers, two of them: one image
      record('d', 'default', '6'),
      record('d', TOWER, '7'), // the tuned tower's record is the newer one
    ];
    const { logger } = captureLogger();
    const result = await reindexFromFeatures({ catalog, features: storeOf(records), embedder, logger });
    expect(result.count).toBe(3); // a, b (its old record), d
    expect(result.needsReembedding.map((r) => r.id).sort()).toEqual(['b', 'c']);
    expect(result.needsReembedding.find((r) => r.id === 'c')).toEqual({ id: 'c', uri: 'file:///images/c.png' });
  });
});

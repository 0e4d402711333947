import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { silentLogger } from '../../shared/logger.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, FeatureRecord, FeatureStore } from '../../shared/ports/index.js';
import { reindexFromFeatures, ReindexVerificationError } from '../../shared/services/reindex.js';
import { strict } from '../helpers/strict-fakes.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

/**
 * The reindex (shared/services/reindex.ts) against the OpenSearch adapter with its production
 * options (refresh=false) and a fake whose scheduled refresh never comes: the count it verifies
 * before the alias swap must not depend on a refresh happening to have run.
 */
const N = 25;

function record(i: number, baseModel = 'base'): FeatureRecord {
  const angle = (i / N) * Math.PI;
  return {
    id: `img${i}`,
    uri: `gs://bucket/${i}.jpg`,
    generation: String(i + 1),
    baseModel,
    vector: Float32Array.of(Math.cos(angle), Math.sin(angle), 0),
    labels: [],
  };
}

const features = strict<FeatureStore>('features', {
  async *scan() {
    yield Array.from({ length: 10 }, (_, i) => record(i));
    yield [...Array.from({ length: N - 10 }, (_, i) => record(10 + i)), { ...record(99, 'other-tower'), id: 'other' }];
  },
});

const embedder = strict<Embedder>('embedder', {
  modelVersion: 'm2',
  dimension: 2,
  manifest: { name: 'base', image: { dimension: 3 } } as ModelManifest,
  project: async (base) => base.map((v) => Float32Array.of(v[0]!, v[1]!)),
});

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  fake.autoRefresh = false;
  await fake.start();
  // bulkMaxBytes small enough for several bulks: the last one is what a missing refresh loses.
  const options = parseOpenSearchIndexOptions({ backoffBaseMs: 1, bulkMaxBytes: 2048 });
  expect(options.refresh).toBe(false);
  catalog = new OpenSearchIndexCatalog(createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 }), options, silentLogger);
  await catalog.ensureLive('m1', 2);
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

describe('reindexFromFeatures on OpenSearch with refresh=false', () => {
  it('verifies its count and swaps the alias although no scheduled refresh ever ran', async () => {
    const result = await reindexFromFeatures({ catalog, features, embedder, logger: silentLogger });
    expect(result).toMatchObject({ index: 'images-v2', previous: 'images-v1', count: N });
    expect(result.needsReembedding.map((r) => r.id)).toEqual(['other']);
    expect([...fake.aliases.get('images')!]).toEqual(['images-v2']);

    // Order on the wire: every bulk, then the refresh of the new index, then its count, then the swap.
    const seq = fake.requests.map((r) => `${r.method} ${r.path}`);
    const bulks = seq.flatMap((s, i) => (s === 'POST /_bulk' ? [i] : []));
    expect(bulks.length).toBeGreaterThan(1);
    const refresh = seq.indexOf('POST /images-v2/_refresh');
    const count = seq.indexOf('POST /images-v2/_count');
    expect(bulks.at(-1)!).toBeLessThan(refresh);
    expect(refresh).toBeLessThan(count);
    expect(count).toBeLessThan(seq.lastIndexOf('POST /_aliases'));
    expect(fake.searchableIds('images-v2')).toHaveLength(N);
  });

  it('refuses the swap when the index holds fewer documents than were written', async () => {
    fake.addFault({
      match: (r) => r.path === '/images-v2/_count',
      status: 200,
      body: { count: N - 1, _shards: { total: 1, successful: 1, skipped: 0, failed: 0 } },
    });
    await expect(reindexFromFeatures({ catalog, features, embedder, logger: silentLogger })).rejects.toThrow(ReindexVerificationError);
    expect([...fake.aliases.get('images')!]).toEqual(['images-v1']);
  });
});

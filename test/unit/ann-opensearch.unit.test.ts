import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { silentLogger } from '../../shared/logger.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

/** OpenSearch keeps its own HNSW graphs: the mapping is sized for the documents a new version will hold, and the status says who keeps the index. */
const MODEL = 'm1';

function unit(i: number): Float32Array {
  const v = Float32Array.from([1, i % 3, i % 5, (i * 7) % 11]);
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
}

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  await fake.start();
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  catalog = new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, backoffMaxMs: 5, refresh: 'wait_for' }), silentLogger);
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

describe('OpenSearch ANN settings and status', () => {
  it('creates the first version for an empty collection and a reindex version sized for the live count, recorded in _meta', async () => {
    const live = await catalog.ensureLive(MODEL, 4);
    const docs = Array.from({ length: 30 }, (_, i) => ({
      id: `d${i}`,
      uri: `gs://b/d${i}.jpg`,
      generation: '1',
      modelVersion: MODEL,
      vector: unit(i),
      labels: [],
      indexedAt: '2026-01-01T00:00:00.000Z',
    }));
    await live.upsert(docs);
    const next = await catalog.createVersion(MODEL, 4);

    const mapping = (name: string) => fake.indices.get(name)!.mappings;
    expect(mapping(live.name)._meta.expectedDocs).toBe(0);
    expect(mapping(next.name)._meta.expectedDocs).toBe(30);
    expect(mapping(next.name).properties.vector.method).toEqual({
      name: 'hnsw',
      engine: 'lucene',
      space_type: 'cosinesimil',
      parameters: { m: 16, ef_construction: 128 },
    });
  });

  it('reports the index as kept by the engine, ready, with its method and every document indexed', async () => {
    const live = await catalog.ensureLive(MODEL, 4);
    await live.upsert([
      { id: 'a', uri: 'gs://b/a.jpg', generation: '1', modelVersion: MODEL, vector: unit(1), labels: [], indexedAt: '2026-01-01T00:00:00.000Z' },
    ]);
    expect(await live.annStatus!()).toEqual({
      state: 'ready',
      type: 'hnsw/lucene',
      params: { m: 16, ef_construction: 128, space_type: 'cosinesimil', ef_search: 100, expected_docs: 0 },
      rowsIndexed: 1,
      rowsUnindexed: 0,
      sizeBytes: null,
      lastBuildAt: null,
      lastBuildSeconds: null,
      building: null,
      maintainedBy: 'engine',
    });
  });
});

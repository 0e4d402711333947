import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeOpenSearch } from './opensearch-fake-server.js';

/**
 * The fake is the oracle of the OpenSearch adapter's offline tests, so it is held to the
 * documented behaviour it claims (its header names the pages). Raw HTTP here, no adapter.
 */
let fake: FakeOpenSearch;
let now: number;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  now = 1_700_000_000_000;
  fake.now = () => now;
  await fake.start();
});

afterEach(async () => {
  await fake.stop();
});

async function call(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const ndjson = typeof body === 'string';
  const res = await fetch(`${fake.url}${path}`, {
    method,
    headers: { 'content-type': ndjson ? 'application/x-ndjson' : 'application/json' },
    body: body === undefined ? undefined : ndjson ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

function knnIndex(engine: string, space: string, settings: Record<string, unknown> = {}): unknown {
  return {
    settings: { index: { knn: true, ...settings } },
    mappings: {
      properties: {
        vector: { type: 'knn_vector', dimension: 2, method: { name: 'hnsw', engine, space_type: space } },
        label: { type: 'keyword' },
      },
    },
  };
}

function bulkOf(index: string, docs: { id: string; vector: number[]; label?: string }[]): string {
  return docs
    .map(
      (d, i) =>
        `${JSON.stringify({ index: { _index: index, _id: d.id, version: i + 1, version_type: 'external' } })}\n${JSON.stringify({ vector: d.vector, label: d.label ?? 'x' })}\n`,
    )
    .join('');
}

const countOf = async (index: string) => (await call('POST', `/${index}/_count`, { query: { match_all: {} } })).body.count as number;

describe('visibility: realtime GET, near-real-time _search and _count', () => {
  it('a write is seen at once by GET and _mget, by _search and _count only after a refresh', async () => {
    fake.autoRefresh = false;
    await call('PUT', '/idx', knnIndex('lucene', 'cosinesimil'));
    const bulk = await call('POST', '/_bulk', bulkOf('idx', [{ id: 'a', vector: [1, 0] }]));
    expect(bulk.body.items[0].index).toMatchObject({ _id: 'a', status: 201, result: 'created' });
    expect(bulk.body.items[0].index.forced_refresh).toBeUndefined();

    expect((await call('GET', '/idx/_doc/a')).body).toMatchObject({ found: true, _source: { label: 'x' } });
    expect((await call('POST', '/idx/_mget', { ids: ['a'] })).body.docs[0]).toMatchObject({ _id: 'a', found: true });
    expect(await countOf('idx')).toBe(0);
    expect((await call('POST', '/idx/_search', { query: { match_all: {} } })).body.hits.total.value).toBe(0);
    expect((await call('POST', '/idx/_count', {})).body).toEqual({ count: 0, _shards: { total: 1, successful: 1, skipped: 0, failed: 0 } });

    expect(await call('POST', '/idx/_refresh')).toEqual({ status: 200, body: { _shards: { total: 1, successful: 1, failed: 0 } } });
    expect(await countOf('idx')).toBe(1);
    expect((await call('POST', '/idx/_search', { query: { match_all: {} } })).body.hits.hits.map((h: any) => h._id)).toEqual(['a']);
  });

  it('refresh=true and refresh=wait_for make a bulk searchable before it answers (true says forced_refresh), false does not', async () => {
    fake.autoRefresh = false;
    await call('PUT', '/idx', knnIndex('lucene', 'cosinesimil'));
    await call('POST', '/_bulk?refresh=false', bulkOf('idx', [{ id: 'a', vector: [1, 0] }]));
    expect(await countOf('idx')).toBe(0);
    const forced = await call('POST', '/_bulk?refresh=true', bulkOf('idx', [{ id: 'b', vector: [0, 1] }]));
    expect(forced.body.items[0].index.forced_refresh).toBe(true);
    expect(await countOf('idx')).toBe(2); // a refresh makes every earlier write searchable
    const waited = await call('POST', '/_bulk?refresh=wait_for', bulkOf('idx', [{ id: 'c', vector: [1, 1] }]));
    expect(waited.body.items[0].index.forced_refresh).toBeUndefined();
    expect(await countOf('idx')).toBe(3);
  });

  it('refreshes on schedule every index.refresh_interval (1 s by default), never with -1 or with autoRefresh off', async () => {
    await call('PUT', '/one-second', knnIndex('lucene', 'cosinesimil'));
    await call('PUT', '/never', knnIndex('lucene', 'cosinesimil', { refresh_interval: '-1' }));
    await call('PUT', '/fast', knnIndex('lucene', 'cosinesimil', { refresh_interval: '200ms' }));
    now += 500;
    for (const name of ['one-second', 'never', 'fast']) await call('POST', '/_bulk', bulkOf(name, [{ id: 'a', vector: [1, 0] }]));
    // The schedule runs from index creation: refreshes at +200, +400, +600… and +1000, +2000…
    now += 99; // +599
    expect([await countOf('one-second'), await countOf('never'), await countOf('fast')]).toEqual([0, 0, 0]);
    now += 1; // +600
    expect([await countOf('one-second'), await countOf('never'), await countOf('fast')]).toEqual([0, 0, 1]);
    now += 399; // +999
    expect(await countOf('one-second')).toBe(0);
    now += 1; // +1000
    expect(await countOf('one-second')).toBe(1);
    now += 60_000;
    expect(await countOf('never')).toBe(0);
    expect((await call('POST', '/_refresh')).body._shards.successful).toBe(3);
    expect(await countOf('never')).toBe(1);

    fake.autoRefresh = false;
    await call('POST', '/_bulk', bulkOf('one-second', [{ id: 'b', vector: [0, 1] }]));
    now += 60_000;
    expect(await countOf('one-second')).toBe(1);
    fake.refreshAll();
    expect(await countOf('one-second')).toBe(2);
  });

  it('answers a refresh of a missing index with index_not_found_exception', async () => {
    const res = await call('POST', '/nope/_refresh');
    expect(res.status).toBe(404);
    expect(res.body.error.type).toBe('index_not_found_exception');
  });

  it('reports its version at GET /', async () => {
    fake.version = '2.17.1';
    expect((await call('GET', '/')).body.version).toMatchObject({ distribution: 'opensearch', number: '2.17.1' });
  });
});

describe('k-NN: filters per engine and version, scores per space type', () => {
  const search = (index: string, filter?: unknown) =>
    call('POST', `/${index}/_search`, { size: 5, query: { knn: { vector: { vector: [1, 0], k: 5, ...(filter ? { filter } : {}) } } } });

  it('refuses a filter inside knn unless the engine is lucene (2.4+) or faiss (2.9+), with the shard failure OpenSearch sends', async () => {
    fake.autoRefresh = false;
    for (const engine of ['nmslib', 'faiss', 'lucene']) {
      await call('PUT', `/${engine}`, knnIndex(engine, 'l2'));
      await call('POST', '/_bulk?refresh=true', bulkOf(engine, [{ id: 'a', vector: [1, 0], label: 'cat' }]));
    }
    const filter = { term: { label: 'cat' } };
    const refused = await search('nmslib', filter);
    expect(refused.status).toBe(400);
    expect(refused.body.status).toBe(400);
    expect(refused.body.error).toMatchObject({
      type: 'search_phase_execution_exception',
      reason: 'all shards failed',
      root_cause: [{ type: 'illegal_argument_exception', reason: 'Engine [NMSLIB] does not support filters' }],
    });
    expect((await search('nmslib')).status).toBe(200);
    expect((await search('faiss', filter)).body.hits.hits.map((h: any) => h._id)).toEqual(['a']);
    expect((await search('lucene', filter)).status).toBe(200);

    fake.version = '2.8.0';
    expect((await search('faiss', filter)).body.error.root_cause[0].reason).toBe('Engine [FAISS] does not support filters');
    expect((await search('lucene', filter)).status).toBe(200);
    fake.version = '2.3.0';
    expect((await search('lucene', filter)).status).toBe(400);
  });

  it('scores with the formula of each space type (and the pre-2.19 cosine of nmslib and faiss)', async () => {
    fake.autoRefresh = false;
    // Stored [0.6, 0.8] against the query [1, 0]: dot = cos = 0.6; l1 d = 1.2; l2 d = 0.8; linf d = 0.8.
    const scoreOf = async (engine: string, space: string, stored = [0.6, 0.8]) => {
      const name = `${engine}-${space}-${stored.join('_')}`.replace(/[.]/g, 'p');
      if (!fake.indices.has(name)) {
        await call('PUT', `/${name}`, knnIndex(engine, space));
        await call('POST', '/_bulk?refresh=true', bulkOf(name, [{ id: 'a', vector: stored }]));
      }
      return (await search(name)).body.hits.hits[0]._score as number;
    };
    expect(await scoreOf('faiss', 'l1')).toBeCloseTo(1 / (1 + 1.2), 9);
    expect(await scoreOf('faiss', 'l2')).toBeCloseTo(1 / (1 + 0.8), 9);
    expect(await scoreOf('lucene', 'l2')).toBeCloseTo(1 / (1 + 0.8), 9);
    expect(await scoreOf('nmslib', 'linf')).toBeCloseTo(1 / (1 + 0.8), 9);
    // cosinesimil: d = 1 − 0.6 = 0.4; (2 − d) / 2 = 0.8 everywhere from 2.19; 1 / (1 + d) before, except lucene.
    for (const engine of ['lucene', 'faiss', 'nmslib']) expect(await scoreOf(engine, 'cosinesimil')).toBeCloseTo(0.8, 9);
    fake.version = '2.17.0';
    expect(await scoreOf('lucene', 'cosinesimil')).toBeCloseTo(0.8, 9);
    expect(await scoreOf('faiss', 'cosinesimil')).toBeCloseTo(1 / 1.4, 9);
    expect(await scoreOf('nmslib', 'cosinesimil')).toBeCloseTo(1 / 1.4, 9);
    // innerproduct: dot + 1 for a positive dot, 1 / (1 − dot) for a negative one, on every engine.
    for (const engine of ['lucene', 'faiss', 'nmslib']) {
      expect(await scoreOf(engine, 'innerproduct')).toBeCloseTo(1.6, 9);
      expect(await scoreOf(engine, 'innerproduct', [-0.6, 0.8])).toBeCloseTo(1 / 1.6, 9);
    }
  });
});

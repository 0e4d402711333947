import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, ModelMismatchError, NotFoundError, ParseError, TransientError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';
import {
  createOpenSearchClient,
  OpenSearchBulkItemError,
  OpenSearchIndexCatalog,
  openOpenSearchCatalog,
  parseOpenSearchIndexOptions,
  redact,
  type OpenSearchIndexOptionsInput,
} from '../../shared/adapters/opensearch/index.js';
import { cosineToScore, scoreToCosine } from '../../shared/adapters/opensearch/scores.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

const MODEL = 'mobilenet-v2@1';
const DIM = 4;

function unit(v: number[]): Float32Array {
  const n = Math.hypot(...v);
  return Float32Array.from(v.map((x) => x / n));
}

function doc(id: string, generation: string, vector: number[], extra: Partial<VectorDocument> = {}): VectorDocument {
  return {
    id,
    uri: `gs://bucket/photos/${id}.jpg`,
    generation,
    modelVersion: MODEL,
    vector: unit(vector),
    labels: [],
    indexedAt: '2024-05-01T00:00:00.000Z',
    ...extra,
  };
}

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;

function makeCatalog(options: OpenSearchIndexOptionsInput = {}): OpenSearchIndexCatalog {
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  return new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, backoffMaxMs: 5, ...options }), silentLogger);
}

beforeEach(async () => {
  fake = new FakeOpenSearch();
  await fake.start();
  catalog = makeCatalog();
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

describe('options and connection', () => {
  it('validates options with a clear error', () => {
    expect(parseOpenSearchIndexOptions({})).toMatchObject({ alias: 'images', engine: 'lucene', spaceType: 'cosinesimil', bulkMaxBytes: 5 * 1024 * 1024 });
    expect(() => parseOpenSearchIndexOptions({ engine: 'annoy' })).toThrow(ConfigError);
    expect(() => parseOpenSearchIndexOptions({ engine: 'annoy' })).toThrow(/engine/);
    expect(() => parseOpenSearchIndexOptions({ alias: 'Images!' })).toThrow(/alias must be lower-case/);
    expect(() => parseOpenSearchIndexOptions({ replica: 1 })).toThrow(/replica/);
  });

  it('refuses a missing or non-PEM CA file and a bad URL, naming the fix', () => {
    expect(() => createOpenSearchClient({ url: 'https://localhost:9200', caFile: '/nonexistent/ca.pem' })).toThrow(
      /Cannot read the OpenSearch CA file \/nonexistent\/ca\.pem.*OPENSEARCH_CA_FILE/,
    );
    const dir = mkdtempSync(path.join(tmpdir(), 'os-ca-'));
    writeFileSync(path.join(dir, 'ca.pem'), 'not a certificate');
    expect(() => createOpenSearchClient({ url: 'https://localhost:9200', caFile: path.join(dir, 'ca.pem') })).toThrow(/holds no PEM certificate/);
    expect(() => createOpenSearchClient({ url: 'localhost:9200' })).toThrow(ConfigError);
    expect(() => createOpenSearchClient({ url: 'ftp://localhost:9200' })).toThrow(/http:\/\/ or https:\/\//);
  });

  it('sends basic auth and keeps the password out of every error', async () => {
    const secured = new FakeOpenSearch({ username: 'admin', password: 'Sup3r-Secret-pw' });
    await secured.start();
    try {
      const good = await openOpenSearchCatalog({ url: secured.url, username: 'admin', password: 'Sup3r-Secret-pw', logger: silentLogger });
      expect(await good.live()).toBeNull();
      expect(secured.requests[0]!.headers.authorization).toBe(`Basic ${Buffer.from('admin:Sup3r-Secret-pw').toString('base64')}`);
      await good.close();

      const bad = await openOpenSearchCatalog({ url: secured.url.replace('http://', 'http://admin:Wr0ng-Secret-pw@'), logger: silentLogger });
      const error = await bad.live().then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(error).toBeInstanceOf(Error);
      expect(error!.message).toMatch(/401/);
      const everything = `${error!.message} ${JSON.stringify(error)} ${String((error as Error & { cause?: Error }).cause?.message)} ${error!.stack}`;
      expect(everything).not.toContain('Wr0ng-Secret-pw');
      expect(everything).not.toContain(Buffer.from('admin:Wr0ng-Secret-pw').toString('base64'));
      await bad.close();

      // Even when the server echoes the secret back, it is scrubbed from our errors.
      secured.addFault({
        match: (r) => r.path.startsWith('/_alias'),
        status: 400,
        body: { error: { type: 'illegal_argument_exception', reason: 'rejected header Sup3r-Secret-pw from http://admin:Sup3r-Secret-pw@node' }, status: 400 },
      });
      const echoing = await openOpenSearchCatalog({ url: secured.url, username: 'admin', password: 'Sup3r-Secret-pw', logger: silentLogger });
      const echoed = await echoing.live().then(
        () => null,
        (e: unknown) => e as Error & { cause?: Error },
      );
      expect(echoed!.message).toMatch(/illegal_argument_exception: rejected header \*\*\* from http:\/\/\*\*\*@node/);
      expect(`${echoed!.message} ${echoed!.cause?.message} ${JSON.stringify(echoed)}`).not.toContain('Sup3r-Secret-pw');
      await echoing.close();
    } finally {
      await secured.stop();
    }
  });

  it('redacts URL credentials and Authorization headers in connection errors', async () => {
    const down = await openOpenSearchCatalog({ url: 'http://user:An0ther-Secret@127.0.0.1:1', maxRetries: 0, logger: silentLogger });
    const error = await down.live().then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(TransientError);
    expect(`${error!.message} ${JSON.stringify(error)}`).not.toContain('An0ther-Secret');
    await down.close();
    expect(redact('GET http://bob:pw123@host:9200/x authorization: Basic Ym9iOnB3MTIz')).toBe('GET http://***@host:9200/x authorization: Basic ***');
  });
});

describe('index versions', () => {
  it('creates <alias>-v<N> with the knn_vector mapping, settings and _meta', async () => {
    const c = makeCatalog({ engine: 'faiss', m: 24, efConstruction: 200, efSearch: 64, shards: 2, replicas: 0 });
    const index = await c.createVersion(MODEL, DIM);
    expect(index.name).toBe('images-v1');
    const put = fake.requestsTo(/^\/images-v1$/, 'PUT')[0]!;
    expect(put.json.settings.index).toEqual({ knn: true, 'knn.algo_param.ef_search': 64, number_of_shards: 2, number_of_replicas: 0 });
    const { properties, _meta, dynamic } = put.json.mappings;
    expect(dynamic).toBe('strict');
    expect(properties.vector).toEqual({
      type: 'knn_vector',
      dimension: DIM,
      method: { name: 'hnsw', engine: 'faiss', space_type: 'cosinesimil', parameters: { m: 24, ef_construction: 200 } },
    });
    expect(properties).toMatchObject({
      uri: { type: 'keyword' },
      name: { type: 'keyword' },
      generation: { type: 'long' },
      labels: { type: 'keyword' },
      caption: { type: 'text' },
      modelVersion: { type: 'keyword' },
      eventTime: { type: 'date' },
      indexedAt: { type: 'date' },
    });
    expect(_meta).toMatchObject({ modelVersion: MODEL, dimension: DIM });
    expect(Date.parse(_meta.createdAt)).not.toBeNaN();
    expect((await c.createVersion(MODEL, DIM)).name).toBe('images-v2');
    const reopened = await c.open('images-v1');
    expect([reopened.modelVersion, reopened.dimension]).toEqual([MODEL, DIM]);
    await expect(c.open('images-v9')).rejects.toThrow(NotFoundError);
    await expect(c.open('other-v1')).rejects.toThrow(/not a version of alias images/);
    await expect(c.createVersion(MODEL, 0)).rejects.toThrow(/dimension must be a whole number/);
    await c.close();
  });

  it('swaps the alias in one _aliases call, remembers the previous target, rolls back and guards drops', async () => {
    const v1 = await catalog.ensureLive(MODEL, DIM);
    expect(v1.name).toBe('images-v1');
    expect((await catalog.ensureLive(MODEL, DIM)).name).toBe('images-v1');
    await v1.upsert([doc('a', '1', [1, 0, 0, 0])]);
    await expect(catalog.rollback()).rejects.toThrow(/no previous index version/);

    const v2 = await catalog.createVersion('clip@2', DIM);
    const before = fake.requestsTo(/^\/_aliases$/).length;
    expect(await catalog.swapAlias(v2.name)).toBe('images-v1');
    const calls = fake.requestsTo(/^\/_aliases$/).slice(before);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.json.actions).toEqual([{ remove: { index: 'images-v1', alias: 'images' } }, { add: { index: 'images-v2', alias: 'images' } }]);
    expect((await catalog.live())!.name).toBe('images-v2');
    expect((await catalog.live())!.modelVersion).toBe('clip@2');

    const versions = await catalog.versions();
    expect(versions.map((v) => [v.name, v.modelVersion, v.count, v.live])).toEqual([
      ['images-v1', MODEL, 1, false],
      ['images-v2', 'clip@2', 0, true],
    ]);

    await expect(catalog.dropVersion('images-v2')).rejects.toThrow(/alias images points at it/);
    expect(await catalog.rollback()).toBe('images-v1');
    expect((await catalog.live())!.name).toBe('images-v1');
    await catalog.dropVersion('images-v2');
    await expect(catalog.rollback()).rejects.toThrow(/no previous|was dropped/);
    await expect(catalog.dropVersion('images-v2')).rejects.toThrow(NotFoundError);
    await expect(catalog.swapAlias('images-v7')).rejects.toThrow(NotFoundError);
  });
});

describe('bulk upserts and deletes', () => {
  it('writes NDJSON with external version = generation and maps outcomes', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    const big = '9007199254740993123'; // beyond 2^53: must reach OpenSearch digit for digit
    expect(
      await index.upsert([
        doc('a', '100', [1, 0, 0, 0], { labels: ['cat'], caption: 'a cat', eventTime: '2024-01-02T00:00:00Z' }),
        doc('b', big, [0, 1, 0, 0]),
      ]),
    ).toEqual(['created', 'created']);
    const bulk = fake.requestsTo(/^\/_bulk$/)[0]!;
    expect(bulk.headers['content-type']).toContain('application/x-ndjson');
    const lines = bulk.body.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(JSON.parse(lines[0]!)).toEqual({ index: { _index: 'images-v1', _id: 'a', version: 100, version_type: 'external' } });
    expect(lines[2]).toContain(`"version":${big},`);
    const source = JSON.parse(lines[1]!);
    expect(source).toMatchObject({
      id: 'a',
      uri: 'gs://bucket/photos/a.jpg',
      name: 'photos/a.jpg',
      generation: '100',
      modelVersion: MODEL,
      labels: ['cat'],
      caption: 'a cat',
      deleted: false,
    });
    expect(source.vector).toHaveLength(DIM);
    expect(source.vector[0]).toBeCloseTo(1, 6);

    const bulksBefore = fake.requestsTo(/^\/_bulk$/).length;
    expect(await index.upsert([doc('a', '100', [1, 0, 0, 0]), doc('b', '5', [0, 1, 0, 0])])).toEqual(['unchanged', 'stale']);
    expect(fake.requestsTo(/^\/_bulk$/).length).toBe(bulksBefore); // nothing worth sending
    expect(await index.upsert([doc('a', '101', [1, 1, 0, 0])])).toEqual(['updated']);
    expect((await index.get('b'))!.generation).toBe(big);
    expect((await index.get('a'))!.generation).toBe('101');
    // Same id twice in one call: applied in order.
    expect(await index.upsert([doc('c', '2', [0, 0, 1, 0]), doc('c', '3', [0, 0, 1, 1]), doc('c', '1', [0, 0, 0, 1])])).toEqual([
      'created',
      'updated',
      'stale',
    ]);
  });

  it('refuses another model version or dimension before any request', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    const n = fake.requests.length;
    await expect(index.upsert([doc('a', '1', [1, 0, 0, 0]), doc('x', '1', [1, 0, 0, 0], { modelVersion: 'clip@2' })])).rejects.toThrow(ModelMismatchError);
    await expect(index.upsert([doc('x', '1', [1, 0, 0, 0], { modelVersion: 'clip@2' })])).rejects.toThrow(
      /embedded by model clip@2, but index images-v1 holds model mobilenet-v2@1/,
    );
    await expect(index.upsert([{ ...doc('y', '1', [1, 0, 0, 0]), vector: new Float32Array(3) }])).rejects.toThrow(
      /vector of dimension 3; index images-v1 holds dimension 4/,
    );
    await expect(index.upsert([doc('z', '-1', [1, 0, 0, 0])])).rejects.toThrow(ParseError);
    await expect(index.upsert([doc('z', '99999999999999999999', [1, 0, 0, 0])])).rejects.toThrow(/int64/);
    expect(fake.requests.length).toBe(n);
  });

  it('deletes with tombstones: deleted / stale / absent, and a late older upsert stays stale', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '10', [1, 0, 0, 0]), doc('b', '10', [0, 1, 0, 0])]);
    expect(
      await index.delete([
        { id: 'a', generation: '10' },
        { id: 'b', generation: '9' },
        { id: 'n', generation: '3' },
      ]),
    ).toEqual(['deleted', 'stale', 'absent']);
    const bulk = fake.requestsTo(/^\/_bulk$/).at(-1)!;
    expect(JSON.parse(bulk.body.split('\n')[0]!)).toEqual({ index: { _index: 'images-v1', _id: 'a', version: 10, version_type: 'external_gte' } });
    expect(JSON.parse(bulk.body.split('\n')[1]!)).toMatchObject({ id: 'a', generation: '10', deleted: true });
    expect(await index.get('a')).toBeNull();
    expect(await index.count()).toBe(1);
    expect(await index.upsert([doc('a', '10', [1, 0, 0, 0]), doc('n', '2', [1, 0, 0, 0])])).toEqual(['stale', 'stale']);
    expect(await index.delete([{ id: 'a', generation: '10' }])).toEqual(['absent']);
    expect(await index.upsert([doc('a', '11', [1, 0, 0, 0])])).toEqual(['created']);
    expect(await index.count()).toBe(2);
  });

  it('splits bulks by bytes', async () => {
    const c = makeCatalog({ bulkMaxBytes: 2048 });
    const index = await c.createVersion(MODEL, 32);
    const docs = Array.from({ length: 8 }, (_, i) =>
      doc(
        `d${i}`,
        '1',
        Array.from({ length: 32 }, (_, j) => (((i + 1) * (j + 3)) % 7) + 0.5),
      ),
    );
    expect(await index.upsert(docs)).toEqual(Array(8).fill('created'));
    const bulks = fake.requestsTo(/^\/_bulk$/);
    expect(bulks.length).toBeGreaterThan(1);
    for (const b of bulks) expect(Buffer.byteLength(b.body)).toBeLessThanOrEqual(2048);
    expect(bulks.reduce((n, b) => n + b.body.trimEnd().split('\n').length / 2, 0)).toBe(8);
    await c.close();
  });
});

describe('faults and retries', () => {
  it('retries only throttled items, classifies a raced 409, and names refused documents', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    const stored = () => fake.indices.get('images-v1')!.docs;
    fake.addFault({
      match: (r) => r.path === '/_bulk',
      items: (id) => {
        if (id === 't') return { status: 429, type: 'es_rejected_execution_exception' };
        if (id === 'r') {
          // A concurrent writer indexed the same generation first.
          stored().set('r', { version: 7n, source: { id: 'r', generation: '7', deleted: false } });
          return { status: 409, type: 'version_conflict_engine_exception' };
        }
        return undefined;
      },
    });
    expect(await index.upsert([doc('t', '7', [1, 0, 0, 0]), doc('r', '7', [0, 1, 0, 0]), doc('ok', '7', [0, 0, 1, 0])])).toEqual([
      'created',
      'unchanged',
      'created',
    ]);
    const bulks = fake.requestsTo(/^\/_bulk$/);
    expect(bulks).toHaveLength(2);
    expect(
      bulks[1]!.body
        .trimEnd()
        .split('\n')
        .map((l) => JSON.parse(l).index?._id)
        .filter(Boolean),
    ).toEqual(['t']);

    fake.addFault({
      match: (r) => r.path === '/_bulk',
      items: (id) =>
        id === 'bad'
          ? { status: 400, type: 'mapper_parsing_exception', reason: 'failed to parse field [vector]' }
          : id === 'slow'
            ? { status: 429, type: 'es_rejected_execution_exception' }
            : undefined,
    });
    const error = await index.upsert([doc('bad', '1', [1, 0, 0, 0]), doc('slow', '1', [0, 1, 0, 0]), doc('fine', '1', [0, 0, 1, 0])]).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OpenSearchBulkItemError);
    expect((error as Error).message).toMatch(/refused 1 upsert\(s\) in images-v1: bad \(400 mapper_parsing_exception: failed to parse field \[vector\]\)/);
    expect(stored().has('slow') && stored().has('fine')).toBe(true);
  });

  it('retries a whole request answered 429, then succeeds', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    fake.addFault({
      match: (r) => r.path === '/_bulk',
      status: 429,
      body: { error: { type: 'circuit_breaking_exception', reason: 'too many requests' }, status: 429 },
    });
    expect(await index.upsert([doc('a', '1', [1, 0, 0, 0])])).toEqual(['created']);
    expect(fake.requestsTo(/^\/_bulk$/)).toHaveLength(2);
  });

  it('retries after a connection reset, then succeeds', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    fake.addFault({ match: (r) => r.path === '/_bulk', reset: true });
    expect(await index.upsert([doc('a', '1', [1, 0, 0, 0])])).toEqual(['created']);
    expect(fake.requestsTo(/^\/_bulk$/)).toHaveLength(2);
    fake.refreshAll(); // what the refresh interval does within a second
    fake.addFault({ match: (r) => r.path.endsWith('/_search'), reset: true });
    expect((await index.query(unit([1, 0, 0, 0]), { k: 1 }))[0]!.id).toBe('a');
  });

  it('reports its own write, not "unchanged", when a bulk was applied but its answer was lost', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert([doc('old', '1', [1, 0, 0, 0])]);
    fake.addFault({ match: (r) => r.path === '/_bulk', resetAfterApplying: true });
    expect(await index.upsert([doc('new', '1', [1, 0, 0, 0]), doc('old', '2', [0, 1, 0, 0])])).toEqual(['created', 'updated']);
    fake.addFault({ match: (r) => r.path === '/_bulk', resetAfterApplying: true });
    expect(await index.delete([{ id: 'old', generation: '2' }])).toEqual(['deleted']);
    expect(await index.upsert([doc('new', '1', [1, 0, 0, 0])])).toEqual(['unchanged']);
  });

  it('gives up with a TransientError after maxRetries, naming the documents', async () => {
    const c = makeCatalog({ maxRetries: 2 });
    const index = await c.createVersion(MODEL, DIM);
    fake.addFault({ match: (r) => r.path === '/_bulk', times: 10, items: () => ({ status: 429, type: 'es_rejected_execution_exception' }) });
    await expect(index.upsert([doc('a', '1', [1, 0, 0, 0])])).rejects.toThrow(/kept refusing 1 upsert\(s\).*after 3 attempts: a/);
    fake.addFault({ match: (r) => r.path === '/_bulk', times: 10, status: 503 });
    await expect(index.upsert([doc('b', '1', [1, 0, 0, 0])])).rejects.toThrow(TransientError);
    expect(fake.requestsTo(/^\/_bulk$/).length).toBe(6);
    await c.close();
  });
});

describe('k-NN query', () => {
  it('sends an efficient-filter knn query and converts scores to cosine', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert([
      doc('cat1', '1', [1, 0, 0, 0], { labels: ['cat'], eventTime: '2024-01-10T00:00:00Z' }),
      doc('cat2', '1', [1, 0.2, 0, 0], { labels: ['cat', 'pet'], eventTime: '2024-02-10T00:00:00Z' }),
      doc('dog', '1', [0, 1, 0, 0], { labels: ['dog'], eventTime: '2024-01-15T00:00:00Z', uri: 'gs://bucket/other/dog.jpg' }),
      doc('far', '1', [-1, 0, 0, 0], { labels: ['cat'] }),
    ]);
    fake.refreshAll(); // what the refresh interval does within a second
    const q = unit([1, 0, 0, 0]);
    const all = await index.query(q, { k: 10 });
    expect(all.map((h) => h.id)).toEqual(['cat1', 'cat2', 'dog', 'far']);
    expect(all[0]!.score).toBeCloseTo(1, 5);
    expect(all[2]!.score).toBeCloseTo(0, 5);
    expect(all[3]!.score).toBeCloseTo(-1, 5);
    expect(all[0]).toMatchObject({ uri: 'gs://bucket/photos/cat1.jpg', generation: '1', labels: ['cat'], modelVersion: MODEL });

    const hits = await index.query(q, {
      k: 2,
      numCandidates: 50,
      filter: {
        labels: ['cat', 'dog'],
        uriPrefix: 'photos/',
        eventTimeFrom: '2024-01-01T00:00:00Z',
        eventTimeTo: '2024-01-31T00:00:00Z',
        excludeIds: ['cat2'],
      },
    });
    const search = fake.requestsTo(/^\/images-v1\/_search$/).at(-1)!.json;
    expect(search.size).toBe(2);
    expect(search._source).toEqual({ excludes: ['vector'] });
    expect(search.query.knn.vector.k).toBe(50);
    expect(search.query.knn.vector.vector).toHaveLength(DIM);
    expect(search.query.knn.vector.filter).toEqual({
      bool: {
        filter: [
          { terms: { labels: ['cat', 'dog'] } },
          { bool: { should: [{ prefix: { uri: 'photos/' } }, { prefix: { name: 'photos/' } }], minimum_should_match: 1 } },
          { range: { eventTime: { gte: '2024-01-01T00:00:00Z', lte: '2024-01-31T00:00:00Z' } } },
        ],
        must_not: [{ ids: { values: ['cat2'] } }],
      },
    });
    expect(hits.map((h) => h.id)).toEqual(['cat1']);

    expect((await index.query(q, { k: 10, minScore: 0.5 })).map((h) => h.id)).toEqual(['cat1', 'cat2']);
    expect(fake.requestsTo(/^\/images-v1\/_search$/).at(-1)!.json.min_score).toBeCloseTo(0.75, 4);
    expect((await index.query(q, { k: 10, filter: { uriPrefix: 'gs://bucket/other/' } })).map((h) => h.id)).toEqual(['dog']);
  });

  it('validates k, numCandidates, minScore and the vector', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    const q = unit([1, 0, 0, 0]);
    await expect(index.query(q, { k: 0 })).rejects.toThrow(/k must be at least 1/);
    await expect(index.query(q, { k: 10_001 })).rejects.toThrow(/k must be at most 10000/);
    await expect(index.query(q, { k: 1, minScore: 2 })).rejects.toThrow(ParseError);
    await expect(index.query(q, { k: 1, filter: { eventTimeFrom: 'yesterday' } })).rejects.toThrow(/ISO 8601/);
    await expect(index.query(new Float32Array(3), { k: 1 })).rejects.toThrow(ModelMismatchError);
  });

  it('converts scores per space type', () => {
    for (const cos of [-1, -0.5, 0, 0.3, 1]) {
      expect(scoreToCosine(cosineToScore(cos, 'cosinesimil'), 'cosinesimil')).toBeCloseTo(cos, 9);
      expect(scoreToCosine(cosineToScore(cos, 'innerproduct'), 'innerproduct')).toBeCloseTo(cos, 9);
    }
    expect(scoreToCosine(0.75, 'cosinesimil')).toBeCloseTo(0.5, 9);
    expect(scoreToCosine(1.5, 'innerproduct')).toBeCloseTo(0.5, 9);
    expect(scoreToCosine(0.5, 'innerproduct')).toBeCloseTo(-1, 9);
  });
});

describe('scan', () => {
  it('pages live documents with search_after on id, skipping tombstones', async () => {
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert(Array.from({ length: 7 }, (_, i) => doc(`id${i}`, '1', [i + 1, 1, 0, 0])));
    await index.delete([{ id: 'id3', generation: '1' }]);
    const pages: string[][] = [];
    for await (const page of index.scan(3)) pages.push(page.map((d) => d.id));
    expect(pages).toEqual([
      ['id0', 'id1', 'id2'],
      ['id4', 'id5', 'id6'],
    ]);
    const searches = fake.requestsTo(/^\/images-v1\/_search$/);
    expect(searches[1]!.json.search_after).toEqual(['id2']);
    expect(searches[0]!.json.sort).toEqual([{ id: 'asc' }]);
    const first = (await index.get('id0'))!;
    expect(first.vector).toBeInstanceOf(Float32Array);
    expect(first.vector[0]).toBeCloseTo(1 / Math.hypot(1, 1), 6);
  });
});

describe('refresh: writes reach _search and _count only after a refresh', () => {
  const refreshes = () => fake.requestsTo(/_refresh$/).map((r) => `${r.method} ${r.path}`);

  it('count() and scan() refresh what this catalog wrote with refresh=false (the default); queries never refresh', async () => {
    fake.autoRefresh = false;
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '1', [1, 0, 0, 0]), doc('b', '1', [0, 1, 0, 0])]);
    expect(fake.requestsTo(/^\/_bulk$/)[0]!.query.has('refresh')).toBe(false);
    expect(fake.searchableIds('images-v1')).toEqual([]);
    expect(await index.query(unit([1, 0, 0, 0]), { k: 5 })).toEqual([]); // near-real-time, as on a cluster
    expect(refreshes()).toEqual([]);

    expect(await index.count()).toBe(2);
    expect(refreshes()).toEqual(['POST /images-v1/_refresh']);
    expect(await index.count()).toBe(2);
    expect(refreshes()).toHaveLength(1); // nothing new to refresh

    // Another object for the same index (open() and versions() make them) knows of the writes too.
    await index.delete([{ id: 'a', generation: '1' }]);
    const ids: string[] = [];
    for await (const page of (await catalog.open('images-v1')).scan()) ids.push(...page.map((d) => d.id));
    expect(ids).toEqual(['b']);
    expect(refreshes()).toHaveLength(2);
    expect((await catalog.versions()).map((v) => [v.name, v.count])).toEqual([['images-v1', 1]]);
    expect((await index.query(unit([1, 0, 0, 0]), { k: 5 })).map((h) => h.id)).toEqual(['b']);

    // A process that wrote nothing (the search service) forces no refresh: its count follows the interval.
    await index.upsert([doc('c', '1', [0, 0, 1, 0])]);
    const reader = makeCatalog();
    expect(await (await reader.open('images-v1')).count()).toBe(1);
    await reader.close();
    expect(refreshes()).toHaveLength(2);
    expect(await index.count()).toBe(2);
  });

  it('refresh=wait_for: each bulk answers once searchable, so count() needs no refresh', async () => {
    fake.autoRefresh = false;
    const c = makeCatalog({ refresh: 'wait_for' });
    const index = await c.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '1', [1, 0, 0, 0])]);
    expect(fake.requestsTo(/^\/_bulk$/)[0]!.query.get('refresh')).toBe('wait_for');
    expect((await index.query(unit([1, 0, 0, 0]), { k: 1 })).map((h) => h.id)).toEqual(['a']);
    expect(await index.count()).toBe(1);
    expect(refreshes()).toEqual([]);
    await c.close();
  });

  it('tries a failed refresh again at the next count()', async () => {
    fake.autoRefresh = false;
    const index = await catalog.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '1', [1, 0, 0, 0])]);
    fake.addFault({
      match: (r) => r.path.endsWith('/_refresh'),
      status: 403,
      body: { error: { type: 'security_exception', reason: 'no permissions for [indices:admin/refresh]' }, status: 403 },
    });
    await expect(index.count()).rejects.toThrow(/refresh failed: 403 security_exception/);
    expect(await index.count()).toBe(1);
  });
});

describe('k-NN per engine and cluster version (k-NN search with filters, Spaces)', () => {
  const q = unit([1, 0, 0, 0]);
  /** Cosines 1, 0.5, 0 and −1 to q. */
  const docs = () => [
    doc('same', '1', [1, 0, 0, 0], { labels: ['a'] }),
    doc('half', '1', [0.5, Math.sqrt(0.75), 0, 0], { labels: ['b'] }),
    doc('right', '1', [0, 1, 0, 0], { labels: ['b'] }),
    doc('opposite', '1', [-1, 0, 0, 0], { labels: ['b'] }),
  ];
  const lastSearch = () => fake.requestsTo(/^\/images-v1\/_search$/).at(-1)!.json;

  it('reads the cluster version once (GET /) and filters inside the knn clause on lucene and faiss', async () => {
    for (const engine of ['lucene', 'faiss'] as const) {
      const f = new FakeOpenSearch();
      await f.start();
      const c = new OpenSearchIndexCatalog(
        createOpenSearchClient({ url: f.url, requestTimeoutMs: 5_000 }),
        parseOpenSearchIndexOptions({ engine, refresh: 'wait_for', backoffBaseMs: 1 }),
        silentLogger,
      );
      const index = await c.createVersion(MODEL, DIM);
      await index.upsert(docs());
      expect((await index.query(q, { k: 2, filter: { labels: ['b'] } })).map((h) => h.id)).toEqual(['half', 'right']);
      expect((await index.query(q, { k: 2, filter: { labels: ['b'] } })).map((h) => h.score)).toEqual([expect.closeTo(0.5, 5), expect.closeTo(0, 5)]);
      const body = f.requestsTo(/^\/images-v1\/_search$/).at(-1)!.json;
      expect(body.query.knn.vector.filter).toEqual({ bool: { filter: [{ terms: { labels: ['b'] } }] } });
      expect(f.requestsTo(/^\/$/, 'GET')).toHaveLength(1);
      await c.close();
      await f.stop();
    }
  });

  it('nmslib (no efficient filtering): the filter goes beside the knn clause, a post-filter on its candidates', async () => {
    fake.version = '2.11.1';
    const c = makeCatalog({ engine: 'nmslib', refresh: 'wait_for' });
    const index = await c.createVersion(MODEL, DIM);
    await index.upsert(docs());
    expect((await index.query(q, { k: 2, filter: { labels: ['b'] }, numCandidates: 4 })).map((h) => [h.id, h.score])).toEqual([
      ['half', expect.closeTo(0.5, 5)],
      ['right', expect.closeTo(0, 5)],
    ]);
    expect(lastSearch().query).toEqual({
      bool: {
        must: [{ knn: { vector: { vector: Array.from(q), k: 4 } } }],
        filter: [{ bool: { filter: [{ terms: { labels: ['b'] } }] } }],
      },
    });
    // The price of a post-filter: it keeps the matching ones among the k nearest only.
    expect((await index.query(q, { k: 1, filter: { labels: ['b'] } })).map((h) => h.id)).toEqual([]);
    // Unfiltered queries are plain knn queries.
    expect((await index.query(q, { k: 1 })).map((h) => h.id)).toEqual(['same']);
    expect(lastSearch().query).toEqual({ knn: { vector: { vector: Array.from(q), k: 1 } } });
    await c.close();
  });

  it('converts the pre-2.19 nmslib and faiss cosine scores (1 / (1 + d)) and cuts minScore on that scale', async () => {
    fake.version = '2.17.0';
    for (const engine of ['nmslib', 'faiss', 'lucene'] as const) {
      fake.indices.clear();
      const c = makeCatalog({ engine, refresh: 'wait_for' });
      const index = await c.createVersion(MODEL, DIM);
      await index.upsert(docs());
      const hits = await index.query(q, { k: 10 });
      expect(hits.map((h) => [h.id, h.score])).toEqual([
        ['same', expect.closeTo(1, 5)],
        ['half', expect.closeTo(0.5, 5)],
        ['right', expect.closeTo(0, 5)],
        ['opposite', expect.closeTo(-1, 5)],
      ]);
      expect((await index.query(q, { k: 10, minScore: 0.4 })).map((h) => h.id)).toEqual(['same', 'half']);
      // The server-side cut is on the engine's scale: 1 / (2 − 0.4) before 2.19 on nmslib and faiss, (1 + 0.4) / 2 on lucene.
      expect(lastSearch().min_score).toBeCloseTo(engine === 'lucene' ? 0.7 : 1 / 1.6, 5);
      await c.close();
    }
  });

  it('takes a cluster that will not tell its version (403 on GET /) for a current one', async () => {
    fake.addFault({
      match: (r) => r.path === '/' && r.method === 'GET',
      status: 403,
      body: { error: { type: 'security_exception', reason: 'no permissions' }, status: 403 },
    });
    const c = makeCatalog({ engine: 'faiss', refresh: 'wait_for' });
    const index = await c.createVersion(MODEL, DIM);
    await index.upsert(docs());
    expect((await index.query(q, { k: 1, filter: { labels: ['b'] } })).map((h) => [h.id, h.score])).toEqual([['half', expect.closeTo(0.5, 5)]]);
    expect(lastSearch().query.knn.vector.filter).toBeDefined();
    await c.close();
  });
});

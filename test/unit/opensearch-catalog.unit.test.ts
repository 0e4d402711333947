import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError, NotFoundError, TransientError } from '../../shared/errors.js';
import { createLogger, silentLogger, type Logger } from '../../shared/logger.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';
import {
  createOpenSearchClient,
  OpenSearchIndexCatalog,
  OpenSearchRequestError,
  parseOpenSearchIndexOptions,
  type OpenSearchIndexOptionsInput,
} from '../../shared/adapters/opensearch/index.js';
import { FakeOpenSearch, type RecordedRequest } from './opensearch-fake-server.js';

/**
 * The OpenSearch catalog's own rules beyond the shared contract: which requests it sends, what it
 * keeps in `<alias>-catalog`, how it answers a cluster that refuses, races or answers oddly, and
 * that every failed request names the operation in the error a caller sees.
 */
const MODEL = 'mobilenet-v2@1';
const DIM = 4;

function doc(id: string, generation: string): VectorDocument {
  return {
    id,
    uri: `gs://bucket/${id}.jpg`,
    generation,
    modelVersion: MODEL,
    vector: Float32Array.of(1, 0, 0, 0),
    labels: [],
    indexedAt: '2024-05-01T00:00:00.000Z',
  };
}

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;

function makeCatalog(options: OpenSearchIndexOptionsInput = {}, logger: Logger = silentLogger): OpenSearchIndexCatalog {
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  return new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, backoffMaxMs: 5, ...options }), logger);
}

/** A logger that keeps its JSON lines. */
function capturingLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const out: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      out.push(chunk.toString('utf8'));
      done();
    },
  });
  const logger = createLogger({ level: 'info', destination: stream });
  return {
    logger,
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** The state document `<alias>-catalog/_doc/state`, as stored. */
function stateDoc(): Record<string, unknown> | undefined {
  return fake.indices.get('images-catalog')?.docs.get('state')?.source;
}

/** What another program (or an older release) makes: an index with a mapping but no adapter `_meta`. */
async function putForeignIndex(name: string, mappings: unknown = { properties: { id: { type: 'keyword' } } }): Promise<void> {
  const res = await fetch(`${fake.url}/${name}`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ mappings }) });
  expect(res.status).toBe(200);
}

const forbidden = { error: { type: 'security_exception', reason: 'no permissions for this action' }, status: 403 };
const at = (method: string, path: string) => (r: RecordedRequest) => r.method === method && r.path === path;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  await fake.start();
  catalog = makeCatalog();
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

describe('creating versions', () => {
  it('refuses a dimension above the knn_vector limit of 16000, saying so', async () => {
    await expect(catalog.createVersion(MODEL, 16_001)).rejects.toThrow('dimension must be a whole number from 1 to 16000 (the knn_vector limit), got 16001');
    expect(fake.requestsTo(/^\/images-v1$/, 'PUT')).toEqual([]);
    expect((await catalog.createVersion(MODEL, 16_000)).dimension).toBe(16_000);
  });

  it('takes the next number when a concurrent creator took the name first', async () => {
    // Between our listing and our PUT, another creator makes images-v1: OpenSearch then answers
    // our PUT 400 resource_already_exists_exception ("Create index").
    fake.addFault({
      match: (r) => {
        if (r.method === 'PUT' && r.path === '/images-v1' && !fake.indices.has('images-v1')) {
          fake.indices.set('images-v1', {
            settings: r.json.settings,
            mappings: r.json.mappings,
            docs: new Map(),
            searchable: new Map(),
            refreshedAt: Date.now(),
          });
        }
        return false; // the fault itself never applies: the fake answers the PUT by its own rules
      },
      status: 500,
    });
    const index = await catalog.createVersion(MODEL, DIM);
    expect(index.name).toBe('images-v2');
    expect(fake.requestsTo(/^\/images-v\d+$/, 'PUT').map((r) => r.path)).toEqual(['/images-v1', '/images-v2']);
  });

  it('refuses any other 400 on create, quoting OpenSearch', async () => {
    fake.addFault({
      match: at('PUT', '/images-v1'),
      status: 400,
      body: { error: { type: 'illegal_argument_exception', reason: 'Validation Failed: 1: knn plugin is not installed;' }, status: 400 },
    });
    const error = await catalog.createVersion(MODEL, DIM).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenSearchRequestError);
    expect((error as Error).message).toBe(
      'OpenSearch refused to create index images-v1: {"type":"illegal_argument_exception","reason":"Validation Failed: 1: knn plugin is not installed;"}',
    );
    // A 400 without an error object is refused too, not taken for "already exists".
    fake.addFault({ match: at('PUT', '/images-v1'), status: 400, body: { status: 400 } });
    await expect(catalog.createVersion(MODEL, DIM)).rejects.toThrow(new OpenSearchRequestError('OpenSearch refused to create index images-v1: undefined'));
  });

  it('still creates a version while the alias is split over two (the way to mend it), sized for no documents', async () => {
    const v1 = await catalog.ensureLive(MODEL, DIM);
    await v1.upsert([doc('a', '1')]);
    await catalog.createVersion(MODEL, DIM);
    fake.aliases.get('images')!.add('images-v2');
    await expect(catalog.live()).rejects.toThrow(/points at 2 indices/);
    expect((await catalog.createVersion(MODEL, DIM)).name).toBe('images-v3');
    expect(fake.indices.get('images-v3')!.mappings._meta.expectedDocs).toBe(0);
  });
});

describe('opening and listing versions', () => {
  it('names the missing version', async () => {
    await expect(catalog.open('images-v3')).rejects.toThrow(new NotFoundError('Index version images-v3 does not exist'));
  });

  it('refuses an index without the adapter _meta, and skips it when listing', async () => {
    await catalog.ensureLive(MODEL, DIM);
    await putForeignIndex('images-v2');
    await expect(catalog.open('images-v2')).rejects.toThrow(
      new AppError('Index images-v2 has no model version in its mapping _meta: it was not created by this adapter'),
    );
    expect((await catalog.versions()).map((v) => v.name)).toEqual(['images-v1']);
  });

  it('lists only <alias>-v<N> names, in numeric order whatever order OpenSearch answers in', async () => {
    for (let i = 0; i < 10; i++) await catalog.createVersion(MODEL, DIM);
    // A copy named like a version but not one (a restore with a suffix), with a valid _meta.
    const v1Mapping = fake.indices.get('images-v1')!.mappings;
    await putForeignIndex('images-v1-restored', v1Mapping);
    // OpenSearch does not order the keys of a _mapping answer: put v10 and v2 first.
    for (const name of ['images-v2', 'images-v10']) {
      const entry = fake.indices.get(name)!;
      fake.indices.delete(name);
      fake.indices.set(name, entry);
    }
    const names = [...fake.indices.keys()];
    expect(names.indexOf('images-v10')).toBeGreaterThan(names.indexOf('images-v9'));
    expect((await catalog.versions()).map((v) => v.name)).toEqual(Array.from({ length: 10 }, (_, i) => `images-v${i + 1}`));
  });

  it('skips a version whose mapping answer has no mappings, and opens none from an empty answer', async () => {
    await catalog.ensureLive(MODEL, DIM);
    fake.addFault({ match: at('GET', '/images-v*/_mapping'), status: 200, body: { 'images-v1': {} } });
    expect(await catalog.versions()).toEqual([]);
    fake.addFault({ match: at('GET', '/images-v1/_mapping'), status: 200, body: { 'images-v1': {} } });
    await expect(catalog.open('images-v1')).rejects.toThrow(/has no model version in its mapping _meta/);
    fake.addFault({ match: at('GET', '/images-v1/_mapping'), status: 200, body: {} });
    await expect(catalog.open('images-v1')).rejects.toThrow(/has no model version in its mapping _meta/);
  });

  it('opens a version made before its size was recorded in _meta as sized for no documents', async () => {
    await catalog.ensureLive(MODEL, DIM);
    const meta = fake.indices.get('images-v1')!.mappings._meta;
    delete meta.expectedDocs; // what an older release wrote
    const status = await (await catalog.open('images-v1')).annStatus!();
    expect(status.params).toMatchObject({ expected_docs: 0, m: 16, ef_construction: 128 });
  });

  it('opens a version that is an alias of a restored index (the answer is keyed by the concrete index)', async () => {
    await catalog.ensureLive(MODEL, DIM);
    const mappings = fake.indices.get('images-v1')!.mappings;
    // "Get mappings": the answer is keyed by concrete index names, also when the request names an alias.
    fake.addFault({ match: at('GET', '/images-v1/_mapping'), status: 200, body: { 'images-v1-restored': { mappings } } });
    const index = await catalog.open('images-v1');
    expect([index.name, index.modelVersion, index.dimension]).toEqual(['images-v1', MODEL, DIM]);
  });
});

describe('the alias and its catalog document', () => {
  it('keeps live and previous in <alias>-catalog, written with refresh=wait_for', async () => {
    await catalog.ensureLive(MODEL, DIM);
    const create = fake.requestsTo(/^\/images-catalog$/, 'PUT')[0]!;
    expect(create.json.mappings.dynamic).toBe('strict');
    expect(create.json.settings.index.number_of_shards).toBe(1);
    expect(Object.keys(create.json.mappings.properties).sort()).toEqual(['alias', 'live', 'previous', 'updatedAt']);
    const write = fake.requestsTo(/^\/images-catalog\/_doc\/state$/, 'PUT').at(-1)!;
    expect(write.query.get('refresh')).toBe('wait_for');
    expect(stateDoc()).toEqual({ alias: 'images', live: 'images-v1', previous: null, updatedAt: expect.any(String) });

    await catalog.createVersion(MODEL, DIM);
    await catalog.swapAlias('images-v2');
    expect(stateDoc()).toMatchObject({ alias: 'images', live: 'images-v2', previous: 'images-v1' });
    // A second swap finds the catalog index there already (400 resource_already_exists_exception) and carries on.
    expect(fake.requestsTo(/^\/images-catalog$/, 'PUT')).toHaveLength(2);
  });

  it('refuses to go on when the catalog index cannot be created', async () => {
    const v1 = await catalog.createVersion(MODEL, DIM);
    fake.addFault({
      match: at('PUT', '/images-catalog'),
      status: 400,
      body: { error: { type: 'validation_exception', reason: 'this action would add [2] shards, but this cluster currently has [1000]/[1000]' }, status: 400 },
    });
    const error = await catalog.swapAlias(v1.name).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenSearchRequestError);
    expect((error as Error).message).toBe(
      'OpenSearch refused to create images-catalog: {"type":"validation_exception","reason":"this action would add [2] shards, but this cluster currently has [1000]/[1000]"}',
    );
    expect(stateDoc()).toBeUndefined();
    // A 400 without an error object is refused too, not taken for "already exists".
    const v2 = await catalog.createVersion(MODEL, DIM);
    fake.addFault({ match: at('PUT', '/images-catalog'), status: 400, body: { status: 400 } });
    await expect(catalog.swapAlias(v2.name)).rejects.toThrow(new OpenSearchRequestError('OpenSearch refused to create images-catalog: undefined'));
  });

  it('rolls back nothing on a catalog that never swapped (no catalog index yet)', async () => {
    await catalog.createVersion(MODEL, DIM);
    expect(fake.indices.has('images-catalog')).toBe(false);
    await expect(catalog.rollback()).rejects.toThrow(new AppError('Cannot roll back alias images: there is no previous index version'));
    // Dropping a version with no catalog document is fine too.
    await catalog.dropVersion('images-v1');
    expect(fake.indices.has('images-v1')).toBe(false);
  });

  it('forgets the previous version only when that one is dropped', async () => {
    await catalog.ensureLive(MODEL, DIM);
    await catalog.createVersion(MODEL, DIM);
    await catalog.createVersion(MODEL, DIM);
    await catalog.swapAlias('images-v2');
    await catalog.swapAlias('images-v3');
    expect(stateDoc()).toMatchObject({ live: 'images-v3', previous: 'images-v2' });

    await catalog.dropVersion('images-v1'); // not the remembered one
    expect(stateDoc()).toMatchObject({ alias: 'images', live: 'images-v3', previous: 'images-v2' });

    await catalog.dropVersion('images-v2');
    expect(stateDoc()).toEqual({ alias: 'images', live: 'images-v3', previous: null, updatedAt: expect.any(String) });
    await expect(catalog.rollback()).rejects.toThrow('Cannot roll back alias images: there is no previous index version');
  });

  it('refuses a rollback to a previous version someone else deleted, leaving the alias alone', async () => {
    await catalog.ensureLive(MODEL, DIM);
    await catalog.createVersion(MODEL, DIM);
    await catalog.swapAlias('images-v2');
    expect((await fetch(`${fake.url}/images-v1`, { method: 'DELETE' })).status).toBe(200);
    await expect(catalog.rollback()).rejects.toThrow(new AppError('Cannot roll back alias images: the previous version images-v1 was dropped'));
    expect(fake.requestsTo(/^\/images-v1$/, 'HEAD')).toHaveLength(1);
    expect([...fake.aliases.get('images')!]).toEqual(['images-v2']);
  });

  it('mends an alias split over two versions by removing only the other one', async () => {
    await catalog.ensureLive(MODEL, DIM);
    await catalog.createVersion(MODEL, DIM);
    fake.aliases.get('images')!.add('images-v2');
    await expect(catalog.live()).rejects.toThrow(/points at 2 indices \(images-v1, images-v2\)/);
    expect(await catalog.swapAlias('images-v2')).toBe('images-v1');
    expect(fake.requestsTo(/^\/_aliases$/).at(-1)!.json.actions).toEqual([
      { remove: { index: 'images-v1', alias: 'images' } },
      { add: { index: 'images-v2', alias: 'images' } },
    ]);
    expect((await catalog.live())!.name).toBe('images-v2');
  });
});

describe('the cluster version', () => {
  const q = Float32Array.of(1, 0, 0, 0);

  it('reads GET / again after a failed read', async () => {
    const c = makeCatalog({ maxRetries: 0, refresh: 'wait_for' });
    const index = await c.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '1')]);
    fake.addFault({ match: at('GET', '/'), status: 503 });
    const error = await index.query(q, { k: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toMatch(/^OpenSearch read cluster version failed after 1 attempt\(s\): 503/);
    expect((await index.query(q, { k: 1 })).map((h) => h.id)).toEqual(['a']);
    expect(await index.query(q, { k: 1 })).toHaveLength(1);
    expect(fake.requestsTo(/^\/$/, 'GET')).toHaveLength(2);
    await c.close();
  });

  it('warns once when the cluster will not tell its version, and not when it does', async () => {
    const { logger, lines } = capturingLogger();
    const c = makeCatalog({ refresh: 'wait_for' }, logger);
    const index = await c.createVersion(MODEL, DIM);
    await index.query(q, { k: 1 });
    expect(lines().filter((l) => l.severity === 'WARNING')).toEqual([]);
    await c.close();

    fake.addFault({ match: at('GET', '/'), status: 403, body: forbidden });
    const { logger: logger2, lines: lines2 } = capturingLogger();
    const c2 = makeCatalog({ refresh: 'wait_for' }, logger2);
    await (await c2.open('images-v1')).query(q, { k: 1 });
    const warnings = lines2().filter((l) => l.severity === 'WARNING');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ status: 403, message: expect.stringMatching(/^OpenSearch did not report its version: assuming a current one/) });
    await c2.close();
  });

  it('takes a 200 answer without a version number for a current cluster', async () => {
    fake.version = '2.17.0'; // what the fake scores by; the adapter is not told
    const c = makeCatalog({ engine: 'faiss', refresh: 'wait_for' });
    const index = await c.createVersion(MODEL, DIM);
    await index.upsert([doc('a', '1')]);
    fake.addFault({ match: at('GET', '/'), status: 200, body: { name: 'proxy' } });
    // Current rules: the filter goes inside the knn clause (faiss 2.9+).
    await index.query(q, { k: 1, filter: { labels: ['x'] } });
    expect(fake.requestsTo(/_search$/).at(-1)!.json.query.knn.vector.filter).toBeDefined();
    await c.close();
  });
});

describe('closing', () => {
  it('closes the client it was given unless told the caller owns it', async () => {
    const owned = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
    await new OpenSearchIndexCatalog(owned, parseOpenSearchIndexOptions({ maxRetries: 0 }), silentLogger).close();
    await expect(owned.transport.request({ method: 'GET', path: '/' })).rejects.toThrow(/ConnectionPool was not able to find a usable Connection/);

    const shared = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
    await new OpenSearchIndexCatalog(shared, parseOpenSearchIndexOptions({ maxRetries: 0 }), silentLogger, false).close();
    expect((await shared.transport.request({ method: 'GET', path: '/' })).statusCode).toBe(200);
    await shared.close();
  });
});

describe('a refused request names the operation', () => {
  /** v1 (holds 'a'), v2 live, v1 remembered as previous. */
  async function setUp(): Promise<void> {
    const v1 = await catalog.ensureLive(MODEL, DIM);
    await v1.upsert([doc('a', '1')]);
    await catalog.createVersion(MODEL, DIM);
    await catalog.swapAlias('images-v2');
  }

  const cases: [string, string, string, (c: OpenSearchIndexCatalog) => Promise<unknown>][] = [
    ['read mapping of images-v1', 'GET', '/images-v1/_mapping', (c) => c.open('images-v1')],
    ['list index versions', 'GET', '/images-v*/_mapping', (c) => c.versions()],
    ['list index versions', 'GET', '/images-v*/_mapping', (c) => c.createVersion(MODEL, DIM)],
    ['create index images-v3', 'PUT', '/images-v3', (c) => c.createVersion(MODEL, DIM)],
    ['resolve alias', 'GET', '/_alias/images', (c) => c.live()],
    ['swap alias', 'POST', '/_aliases', (c) => c.rollback()],
    ['read alias catalog', 'GET', '/images-catalog/_doc/state', (c) => c.rollback()],
    ['index exists', 'HEAD', '/images-v1', (c) => c.rollback()],
    ['create alias catalog', 'PUT', '/images-catalog', (c) => c.rollback()],
    ['write alias catalog', 'PUT', '/images-catalog/_doc/state', (c) => c.rollback()],
    ['drop index', 'DELETE', '/images-v1', (c) => c.dropVersion('images-v1')],
    ['get a', 'GET', '/images-v1/_doc/a', async (c) => (await c.open('images-v1')).get('a')],
    ['count', 'POST', '/images-v1/_count', async (c) => (await c.open('images-v1')).count()],
    ['read generations', 'POST', '/images-v1/_mget', async (c) => (await c.open('images-v1')).generations(['a'])],
    ['bulk images-v1', 'POST', '/_bulk', async (c) => (await c.open('images-v1')).upsert([doc('b', '1')])],
    ['k-NN query', 'POST', '/images-v1/_search', async (c) => (await c.open('images-v1')).query(Float32Array.of(1, 0, 0, 0), { k: 1 })],
    [
      'scan',
      'POST',
      '/images-v1/_search',
      async (c) => {
        for await (const page of (await c.open('images-v1')).scan()) void page;
      },
    ],
  ];

  it.each(cases)('%s (%s %s)', async (what, method, path, action) => {
    await setUp();
    fake.addFault({ match: at(method, path), status: 403, body: forbidden });
    const error = await action(catalog).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenSearchRequestError);
    expect((error as Error).message).toMatch(new RegExp(`^OpenSearch ${what.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} failed: 403`));
  });
});

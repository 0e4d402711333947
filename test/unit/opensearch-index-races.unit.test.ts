import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelMismatchError, ParseError, TransientError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument, VectorIndex } from '../../shared/ports/vector-index.js';
import {
  createOpenSearchClient,
  OpenSearchBulkItemError,
  OpenSearchIndexCatalog,
  OpenSearchVectorIndex,
  parseOpenSearchIndexOptions,
  type OpenSearchIndexOptionsInput,
} from '../../shared/adapters/opensearch/index.js';
import { UnrefreshedWrites } from '../../shared/adapters/opensearch/refresh.js';
import { makeRequester, type Requester } from '../../shared/adapters/opensearch/vector-index.js';
import { FakeOpenSearch, type RecordedRequest } from './opensearch-fake-server.js';

/**
 * The OpenSearch index under races and odd answers: writers that get there between our `_mget`
 * and our `_bulk`, answers that were applied but lost, throttled items, refreshes that run while
 * a bulk is in flight, and answers missing the parts a well-behaved cluster always sends.
 */
const MODEL = 'mobilenet-v2@1';
const DIM = 4;

function doc(id: string, generation: string, extra: Partial<VectorDocument> = {}): VectorDocument {
  return {
    id,
    uri: `gs://bucket/${id}.jpg`,
    generation,
    modelVersion: MODEL,
    vector: Float32Array.of(1, 0, 0, 0),
    labels: [],
    indexedAt: '2024-05-01T00:00:00.000Z',
    ...extra,
  };
}

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;
let index: VectorIndex;

function makeCatalog(options: OpenSearchIndexOptionsInput = {}): OpenSearchIndexCatalog {
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  return new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, backoffMaxMs: 2, ...options }), silentLogger);
}

/** What the fake holds for `id` in images-v1 (realtime view). */
const stored = (id: string) => fake.indices.get('images-v1')!.docs.get(id);
/** Another writer's document or tombstone, as its bulk would have stored it (version = generation). */
function writeByOther(id: string, generation: number, deleted = false): void {
  fake.indices.get('images-v1')!.docs.set(id, { version: BigInt(generation), source: { id, generation: String(generation), deleted, modelVersion: MODEL } });
}
const isBulk = (r: RecordedRequest) => r.method === 'POST' && r.path === '/_bulk';
/** Runs `effect` when our next bulk arrives, before the fake applies it: the other writer got there first. */
function beforeNextBulk(effect: () => void): void {
  let done = false;
  fake.addFault({
    match: (r) => {
      if (isBulk(r) && !done) {
        done = true;
        effect();
      }
      return false; // the fault itself never applies: the fake answers the bulk by its own rules
    },
    status: 500,
  });
}
const bulks = () => fake.requestsTo(/^\/_bulk$/).length;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  await fake.start();
  catalog = makeCatalog();
  index = await catalog.ensureLive(MODEL, DIM);
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

describe('upsert races (409 from external versioning)', () => {
  it('is stale when another writer stored a newer generation, or a tombstone of the same one, or the refusal has no document behind it', async () => {
    await index.upsert([doc('t', '5')]);
    beforeNextBulk(() => {
      writeByOther('n', 9);
      writeByOther('t', 6, true);
    });
    fake.addFault({
      match: isBulk,
      items: (id) => (id === 'v' ? { status: 409, type: 'version_conflict_engine_exception' } : undefined),
    });
    // Order of the faults: the side effect runs first (it never matches), then the item fault.
    expect(await index.upsert([doc('n', '5'), doc('t', '6'), doc('v', '1'), doc('ok', '1')])).toEqual(['stale', 'stale', 'stale', 'created']);
    expect(stored('n')!.source.generation).toBe('9');
  });

  it('is created when the document vanished between the read and the write (OpenSearch answers result "created")', async () => {
    await index.upsert([doc('g', '1')]);
    beforeNextBulk(() => fake.indices.get('images-v1')!.docs.delete('g'));
    expect(await index.upsert([doc('g', '2')])).toEqual(['created']);
  });
});

describe('delete', () => {
  it('sends nothing when every delete is stale or already absent, and keeps the generation a newer delete names', async () => {
    await index.upsert([doc('live', '10')]);
    await index.delete([{ id: 'gone', generation: '10' }]);
    const before = bulks();
    expect(
      await index.delete([
        { id: 'live', generation: '9' },
        { id: 'gone', generation: '10' },
        { id: 'gone', generation: '9' },
      ]),
    ).toEqual(['stale', 'absent', 'absent']);
    expect(bulks()).toBe(before);

    // A delete newer than the tombstone moves the tombstone up: an upsert of that generation arriving late stays out.
    expect(await index.delete([{ id: 'gone', generation: '11' }])).toEqual(['absent']);
    expect(bulks()).toBe(before + 1);
    expect(stored('gone')!.version).toBe(11n);
    expect(await index.upsert([doc('gone', '11')])).toEqual(['stale']);
    expect(await index.upsert([doc('gone', '12')])).toEqual(['created']);
  });

  it('is stale when another writer stored a newer generation, absent when it deleted it first', async () => {
    await index.upsert([doc('a', '5'), doc('b', '5')]);
    beforeNextBulk(() => {
      writeByOther('a', 9);
      writeByOther('b', 7, true);
    });
    expect(
      await index.delete([
        { id: 'a', generation: '5' },
        { id: 'b', generation: '5' },
        { id: 'c', generation: '5' },
      ]),
    ).toEqual(['stale', 'absent', 'absent']);
    expect(stored('a')!.source).toMatchObject({ generation: '9', deleted: false });
  });

  it('is deleted when its own earlier attempt was applied but unanswered, and a newer tombstone refuses the retry', async () => {
    await index.upsert([doc('a', '5')]);
    fake.addFault({ match: isBulk, resetAfterApplying: true });
    let second = false;
    fake.addFault({
      match: (r) => {
        if (isBulk(r) && !second) {
          second = true;
          writeByOther('a', 8, true);
        }
        return false; // the fault itself never applies
      },
      status: 500,
    });
    expect(await index.delete([{ id: 'a', generation: '5' }])).toEqual(['deleted']);
    expect(bulks()).toBe(3);
  });

  it('is deleted when the document vanished between the read and the write (OpenSearch answers 201)', async () => {
    await index.upsert([doc('a', '5')]);
    beforeNextBulk(() => fake.indices.get('images-v1')!.docs.delete('a'));
    expect(await index.delete([{ id: 'a', generation: '5' }])).toEqual(['deleted']);
  });

  it('names the refused deletes', async () => {
    await index.upsert([doc('a', '5')]);
    fake.addFault({
      match: isBulk,
      items: () => ({ status: 403, type: 'cluster_block_exception', reason: 'index [images-v1] blocked by: [FORBIDDEN/8/index write (api)]' }),
    });
    await expect(index.delete([{ id: 'a', generation: '5' }])).rejects.toThrow(
      'OpenSearch refused 1 delete(s) in images-v1: a (403 cluster_block_exception: index [images-v1] blocked by: [FORBIDDEN/8/index write (api)])',
    );
  });
});

describe('throttled and refused bulk items', () => {
  it('retries items answered 500 and 503 alone', async () => {
    fake.addFault({
      match: isBulk,
      items: (id) =>
        id === 'x' ? { status: 500, type: 'exception', reason: 'internal' } : id === 'y' ? { status: 503, type: 'unavailable_shards_exception' } : undefined,
    });
    expect(await index.upsert([doc('x', '1'), doc('y', '1'), doc('z', '1')])).toEqual(['created', 'created', 'created']);
    const retried = fake
      .requestsTo(/^\/_bulk$/)[1]!
      .body.split('\n')
      .filter((l) => l.startsWith('{"index"'));
    expect(retried.map((l) => JSON.parse(l).index._id)).toEqual(['x', 'y']);
  });

  it('needs no retry budget when nothing is throttled', async () => {
    const c = makeCatalog({ maxRetries: 0 });
    const i = await c.open('images-v1');
    expect(await i.upsert([doc('a', '1')])).toEqual(['created']);
    expect(await i.delete([{ id: 'a', generation: '1' }])).toEqual(['deleted']);
    await c.close();
  });

  it('gives up naming the first ten throttled documents, and says which in its meta', async () => {
    const c = makeCatalog({ maxRetries: 1 });
    const i = await c.open('images-v1');
    fake.addFault({ match: isBulk, times: 2, items: () => ({ status: 429, type: 'es_rejected_execution_exception' }) });
    const ids = Array.from({ length: 12 }, (_, k) => `d${k}`);
    const error = await i.delete(ids.map((id) => ({ id, generation: '1' }))).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransientError);
    expect((error as Error).message).toBe(
      'OpenSearch kept refusing 12 delete(s) in images-v1 (429/5xx) after 2 attempts: d0, d1, d2, d3, d4, d5, d6, d7, d8, d9',
    );
    expect((error as TransientError).meta).toEqual({ index: 'images-v1', ids });
    await c.close();
  });

  it('names a refused item even when its answer carries no error object', async () => {
    fake.addFault({ match: isBulk, status: 200, body: { took: 1, errors: true, items: [{ index: { _id: 'a', status: 400 } }] } });
    const error = await index.upsert([doc('a', '1')]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenSearchBulkItemError);
    expect((error as Error).message).toBe('OpenSearch refused 1 upsert(s) in images-v1: a (400 error: )');
  });

  it('refuses a bulk answer that does not match the operations sent', async () => {
    fake.addFault({ match: isBulk, status: 200, body: { took: 1, errors: false, items: [{ index: { _id: 'a', status: 201, result: 'created' } }] } });
    await expect(index.upsert([doc('a', '1'), doc('b', '1')])).rejects.toThrow(
      new TransientError('OpenSearch bulk answer for images-v1 has 1 items for 2 operations'),
    );
    fake.addFault({ match: isBulk, status: 200, body: { took: 1, errors: false } });
    await expect(index.upsert([doc('a', '1')])).rejects.toThrow(new TransientError('OpenSearch bulk answer for images-v1 has 0 items for 1 operations'));
  });
});

describe('checks before any request', () => {
  it('refuses NaN or Infinity in a document or a query vector, and a document without an id', async () => {
    const n = fake.requests.length;
    await expect(index.upsert([doc('a', '1', { vector: Float32Array.of(1, 0, Number.NaN, 0) })])).rejects.toThrow(
      new ParseError('Document a: vector holds NaN or Infinity'),
    );
    await expect(index.upsert([doc('', '1')])).rejects.toThrow(new ParseError('Document without an id'));
    await expect(index.query(Float32Array.of(1, Number.POSITIVE_INFINITY, 0, 0), { k: 1 })).rejects.toThrow(
      new ParseError('Query vector holds NaN or Infinity'),
    );
    expect(fake.requests.length).toBe(n);
  });

  it('says which document and index a model mismatch is about', async () => {
    const other = await index.upsert([doc('m', '1', { modelVersion: 'clip@2' })]).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(ModelMismatchError);
    expect((other as ModelMismatchError).meta).toEqual({ id: 'm', index: 'images-v1' });
    const short = await index.upsert([doc('s', '1', { vector: Float32Array.of(1, 0) })]).catch((e: unknown) => e);
    expect(short).toBeInstanceOf(ModelMismatchError);
    expect((short as ModelMismatchError).meta).toEqual({ id: 's', index: 'images-v1' });
  });
});

describe('reads', () => {
  it('reads the generations with _mget of the two fields only, and sends nothing for no ids', async () => {
    await index.upsert([doc('a', '3')]);
    expect(await index.generations(['a', 'a', 'b'])).toEqual(new Map([['a', '3']]));
    const mget = fake.requestsTo(/^\/images-v1\/_mget$/).at(-1)!;
    expect(mget.query.get('_source_includes')).toBe('generation,deleted');
    expect(mget.json).toEqual({ ids: ['a', 'b'] });
    const n = fake.requests.length;
    expect(await index.generations([])).toEqual(new Map());
    expect(fake.requests.length).toBe(n);
  });

  it('takes a stored document without a generation (not written by this adapter) for absent', async () => {
    fake.indices.get('images-v1')!.docs.set('x', { version: 1n, source: { id: 'x', uri: 'gs://bucket/x.jpg' } });
    expect(await index.generations(['x'])).toEqual(new Map());
    expect(await index.upsert([doc('x', '2')])).toEqual(['created']);
  });

  it('get: null for an id never written, and for a tombstone', async () => {
    expect(await index.get('never')).toBeNull();
    await index.upsert([doc('a', '1')]);
    await index.delete([{ id: 'a', generation: '1' }]);
    expect(await index.get('a')).toBeNull();
  });

  it('reads documents an older release stored without uri, labels, caption or model version', async () => {
    const c = makeCatalog({ refresh: 'wait_for' });
    const i = await c.open('images-v1');
    await i.upsert([doc('full', '1', { caption: 'a cat', labels: ['cat'] })]);
    fake.indices.get('images-v1')!.docs.set('old', { version: 1n, source: { id: 'old', generation: '1', vector: [0, 1, 0, 0] } });
    fake.refreshAll();
    const hits = await i.query(Float32Array.of(1, 0, 0, 0), { k: 5 });
    expect(hits).toStrictEqual([
      { id: 'full', uri: 'gs://bucket/full.jpg', score: expect.closeTo(1, 5), generation: '1', labels: ['cat'], caption: 'a cat', modelVersion: MODEL },
      { id: 'old', uri: '', score: expect.closeTo(0, 5), generation: '1', labels: [], modelVersion: MODEL },
    ]);
    await c.close();
  });

  it('cuts hits below minScore itself and keeps at most k, whatever the cluster answers', async () => {
    const c = makeCatalog({ refresh: 'wait_for' });
    const i = await c.open('images-v1');
    await i.upsert([doc('a', '1'), doc('b', '1', { vector: Float32Array.of(0, 1, 0, 0) }), doc('c', '1', { vector: Float32Array.of(0.6, 0.8, 0, 0) })]);
    // A cluster that ignores min_score and size (as a proxy or an older plugin might): scores 1, 0.75 and 0.5
    // on the lucene scale ((1 + cos) / 2), cosines 1, 0.5 and 0.
    const hit = (id: string, score: number) => ({ _id: id, _score: score, _source: { id, generation: '1', uri: `gs://bucket/${id}.jpg` } });
    const answer = { hits: { hits: [hit('a', 1), hit('c', 0.75), hit('b', 0.5)] } };
    fake.addFault({ match: (r) => r.path.endsWith('/_search'), status: 200, body: answer });
    // minScore 0.5 is exactly c's cosine: c stays.
    expect((await i.query(Float32Array.of(1, 0, 0, 0), { k: 10, minScore: 0.5 })).map((h) => h.id)).toEqual(['a', 'c']);
    fake.addFault({ match: (r) => r.path.endsWith('/_search'), status: 200, body: answer });
    expect((await i.query(Float32Array.of(1, 0, 0, 0), { k: 2 })).map((h) => h.id)).toEqual(['a', 'c']);
    await c.close();
  });

  it('takes an answer without hits for none', async () => {
    fake.addFault({ match: (r) => r.path.endsWith('/_search'), status: 200, body: { took: 1, timed_out: true } });
    expect(await index.query(Float32Array.of(1, 0, 0, 0), { k: 3 })).toEqual([]);
    fake.addFault({ match: (r) => r.path.endsWith('/_search'), status: 200, body: { took: 1, timed_out: true } });
    const pages: unknown[] = [];
    for await (const page of index.scan()) pages.push(page);
    expect(pages).toEqual([]);
  });

  it('scan stops after a short page without asking again', async () => {
    await index.upsert([doc('a', '1'), doc('b', '1'), doc('c', '1'), doc('d', '1'), doc('e', '1')]);
    const searches = () => fake.requestsTo(/^\/images-v1\/_search$/).length;
    const ids: string[] = [];
    for await (const page of index.scan(3)) ids.push(...page.map((d) => d.id));
    expect(ids).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(searches()).toBe(2);
  });
});

describe('refresh=false bookkeeping', () => {
  it('a refresh that runs while a bulk is in flight does not hide that bulk from the next count()', async () => {
    fake.autoRefresh = false;
    const options = parseOpenSearchIndexOptions({ backoffBaseMs: 1 });
    expect(options.refresh).toBe(false);
    const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
    const real = makeRequester(client, options, silentLogger);
    const session = { unrefreshed: new UnrefreshedWrites(), clusterVersion: async () => null };
    let inFlight = true;
    // Another caller's count() runs while our bulk is on its way: its refresh comes before the bulk is applied.
    const request: Requester = async (what, params, ignore, onFailedAttempt) => {
      if (params.path === '/_bulk' && inFlight) {
        inFlight = false;
        await racing.count();
      }
      return real(what, params, ignore, onFailedAttempt);
    };
    const meta = {
      modelVersion: MODEL,
      dimension: DIM,
      createdAt: '2024-05-01T00:00:00.000Z',
      engine: 'lucene' as const,
      spaceType: 'cosinesimil' as const,
      alias: 'images',
    };
    const racing = new OpenSearchVectorIndex(request, 'images-v1', meta, options, silentLogger, session);
    expect(await racing.upsert([doc('a', '1')])).toEqual(['created']);
    expect(fake.searchableIds('images-v1')).toEqual([]);
    expect(await racing.count()).toBe(1);
    await client.close();
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { closeSearchService, createSearchService, querySampleSink } from '../../functions/search-server.js';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { silentLogger } from '../../shared/logger.js';
import type { QueryVectorSink, SampledQuery } from '../../shared/services/drift.js';
import { SearchService } from '../../shared/services/search-service.js';
import type { CreateOnlyStore } from '../../shared/services/feedback.js';
import {
  encodeQueryVector,
  ObjectQueryVectorSink,
  ObjectQueryVectorSource,
  parseQueryBatch,
  queryBatchObjectName,
} from '../../shared/services/query-vector-objects.js';
import { parseCloudConfig } from '../../shared/wiring/cloud-config.js';
import { fakeGcsForSuite } from './gcp-fake-gcs-server.js';
import { captureLogger, FakeEmbedder, MemoryIndex, MemoryRejections, normalise } from './functions-fakes.js';

/**
 * The cloud query sample of the drift check (shared/services/query-vector-objects.ts): search
 * instances write batches of image-query vectors as create-only objects under query-vectors/ of the
 * features bucket, the drift job reads the newest back. Through the real Storage client and
 * GcsBlobStore against the fake JSON API, which enforces `ifGenerationMatch` as GCS does.
 */
const BUCKET = 'iss-features';
const T0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
/** When the drift job reads in these tests: an hour after T0 (it lists the last 7 days only). */
const READ_AT = () => T0 + 3600_000;
const server = fakeGcsForSuite();
let store: GcsBlobStore;

beforeEach(() => {
  store = new GcsBlobStore(server.storage(), BUCKET);
});

/** A 4-dimensional vector whose first component names it. */
const vec = (id: number) => Float32Array.from([id, 0.1, -3.5e-7, 1e30]);
const ids = (queries: SampledQuery[]) => queries.map((q) => q.vector[0]);
const objectNames = (prefix = 'query-vectors/') => [...(server.buckets.get(BUCKET)?.keys() ?? [])].filter((n) => n.startsWith(prefix)).sort();
const uploads = () => server.requests.filter((r) => r.method === 'POST' && r.path.startsWith('/upload/'));
const mediaReads = () => server.requests.filter((r) => r.query.alt === 'media').map((r) => decodeURIComponent(r.path.split('/o/')[1]!));
const batchJson = (modelVersion: string, entries: { at: number; vector: string }[], format = 1) => JSON.stringify({ format, modelVersion, entries });

/** An index of the search service's fake model holding one image, 'cat'. */
async function catIndex(): Promise<MemoryIndex> {
  const index = new MemoryIndex('images-v1', 'fake-v1', 4);
  await index.upsert([
    {
      id: 'cat',
      uri: 'gs://iss-images/cat.png',
      generation: '1',
      modelVersion: 'fake-v1',
      vector: normalise(Float32Array.from([9, 1, 1, 1])),
      labels: [],
      indexedAt: new Date().toISOString(),
    },
  ]);
  return index;
}

describe('ObjectQueryVectorSink → GcsBlobStore → ObjectQueryVectorSource', () => {
  it('two instances writing at once: the reader gets the newest ≤ capacity of one version, oldest first, across objects', async () => {
    let now = T0;
    const clock = () => now;
    const a = new ObjectQueryVectorSink(store, { batchSize: 4, now: clock });
    const b = new ObjectQueryVectorSink(new GcsBlobStore(server.storage(), BUCKET), { batchSize: 4, now: clock });
    for (let i = 0; i < 20; i++) {
      now += 1000;
      (i % 2 === 0 ? a : b).add('v1', vec(i));
      // Versions whose folders share the prefix "v1" as a string, and another model entirely.
      if (i % 5 === 0) a.add('v10', vec(100 + i));
      if (i % 7 === 0) b.add('v2', vec(200 + i));
    }
    await Promise.all([a.flush(), b.flush()]);
    expect(a.pending + b.pending).toBe(0);
    // The add that starts a write keeps no query. a sees 0 100 2 4, then 105 writes them as two
    // objects (v1, v10), which take both write slots, so the rest wait for flush; b sees 200 1 3 5,
    // then 7 writes them (v2, v1), the same. So v1 loses 7, v10 loses 105, v2 loses none.
    const keptV1 = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19];

    // One create-only request per batch, each a new name sorting by the time of its first query.
    expect(uploads().length).toBe(objectNames().length);
    for (const u of uploads()) expect(u.query.ifGenerationMatch).toBe('0');
    for (const name of objectNames()) expect(name).toMatch(/^query-vectors\/v(1|10|2)\/\d{15}-[0-9a-f]{16}\.json$/);
    expect(objectNames('query-vectors/v1/').length).toBeGreaterThanOrEqual(5);

    const full = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 1000 }).recent('v1');
    expect(ids(full)).toEqual(keptV1);
    expect(full.map((q) => q.at)).toEqual(keptV1.map((i) => T0 + (i + 1) * 1000));
    expect(full[3]!.vector).toEqual(vec(3));

    server.requests.length = 0;
    const newest = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 7 }).recent('v1');
    expect(ids(newest)).toEqual([13, 14, 15, 16, 17, 18, 19]);
    const lists = server.requests.filter((r) => r.path === `/storage/v1/b/${BUCKET}/o`);
    expect(lists.map((r) => r.query.prefix)).toEqual(['query-vectors/v1/']);
    expect(mediaReads().every((n) => n.startsWith('query-vectors/v1/'))).toBe(true);

    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 100 }).recent('v10'))).toEqual([100, 110, 115]);
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 100 }).recent('v2'))).toEqual([200, 207, 214]);
    expect(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 100 }).recent('v3')).toEqual([]);
  });

  it('reads newest objects first and stops once it holds capacity queries', async () => {
    let now = T0;
    const sink = new ObjectQueryVectorSink(store, { batchSize: 4, maxWrites: 10, now: () => (now += 1000) });
    for (let i = 0; i < 20; i++) sink.add('v1', vec(i));
    await sink.flush();
    // Adds 4, 9, 14 and 19 each write the four before them and keep nothing: 0–3, 5–8, 10–13, 15–18.
    expect(objectNames()).toHaveLength(4);
    server.requests.length = 0;
    const recent = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 6, concurrency: 1 }).recent('v1');
    expect(ids(recent)).toEqual([12, 13, 15, 16, 17, 18]);
    // The two newest batches (15–18, 10–13), not the two older ones.
    expect(mediaReads()).toEqual(objectNames().slice(-2).reverse());
  });

  it('a batch is written by the first add after its oldest query is flushMs old: no timer needed', async () => {
    let now = T0;
    const sink = new ObjectQueryVectorSink(store, { batchSize: 100, flushMs: 60_000, now: () => now });
    sink.add('v1', vec(1));
    now += 59_999;
    sink.add('v1', vec(2));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(uploads()).toHaveLength(0);
    now += 1;
    // This add writes 1–2 and keeps nothing of its own.
    expect(sink.add('v1', vec(3))).toBeInstanceOf(Promise);
    expect(sink.pending).toBe(0);
    await sink.flush();
    expect(objectNames()).toEqual([expect.stringMatching(new RegExp(`^query-vectors/v1/00${T0}-[0-9a-f]{16}\\.json$`))]);
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('v1'))).toEqual([1, 2]);
  });

  it('skips an unreadable or malformed object, reports the skips once, and still answers', async () => {
    let now = T0 - 100_000;
    const sink = new ObjectQueryVectorSink(store, { batchSize: 2, now: () => (now += 1000) });
    // Add 2 writes 0–1 and keeps nothing; flush writes 3.
    for (let i = 0; i < 4; i++) sink.add('v1', vec(i));
    await sink.flush();
    const later = (n: number) => `query-vectors/v1/${String(T0 + n).padStart(15, '0')}`;
    const ok = encodeQueryVector(vec(9));
    server.put(BUCKET, `${later(1)}-torn.json`, '{"format":1,"modelVersion":"v1","entries":[{"at"');
    server.put(BUCKET, `${later(2)}-format.json`, batchJson('v1', [{ at: T0, vector: ok }], 2));
    server.put(BUCKET, `${later(3)}-version.json`, batchJson('v2', [{ at: T0, vector: ok }]));
    server.put(BUCKET, `${later(4)}-bytes.json`, batchJson('v1', [{ at: T0, vector: Buffer.from([1, 2, 3]).toString('base64') }]));
    server.put(
      BUCKET,
      `${later(5)}-dims.json`,
      batchJson('v1', [
        { at: T0, vector: ok },
        { at: T0, vector: encodeQueryVector(Float32Array.from([1, 2])) },
      ]),
    );
    server.put(BUCKET, `${later(6)}-big.json`, batchJson('v1', [{ at: T0, vector: ok }]).padEnd(5000, ' '));
    server.put(BUCKET, `${later(7)}-other.tmp`, 'not a batch, not listed as one');
    const { logger, lines } = captureLogger();

    const recent = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 100, maxBytes: 4096, logger }).recent('v1');
    expect(ids(recent)).toEqual([0, 1, 3]);
    const reports = lines().filter((l) => String(l.message).startsWith('query sample:'));
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ severity: 'WARNING', modelVersion: 'v1', skipped: 6, unreadable: 1, folder: `gs://${BUCKET}/query-vectors/v1/` });
    expect((reports[0]!.err as { message: string }).message).toMatch(/over the 4096-byte limit/);
    // Only the prefix was read: the .tmp object is not a batch.
    expect(mediaReads()).not.toContain(`${later(7)}-other.tmp`);
  });

  it('create-only: a batch whose name is taken does not replace the object there (a 412 on our own random name counts as saved, at debug)', async () => {
    const { logger, lines } = captureLogger();
    const sink = new ObjectQueryVectorSink(store, { batchSize: 2, now: () => T0, unique: () => 'taken', logger });
    const name = queryBatchObjectName('v1', T0, 'query-vectors/', 'taken');
    const original = server.put(BUCKET, name, batchJson('v1', [{ at: 1, vector: encodeQueryVector(vec(42)) }]), 'application/json');
    sink.add('v1', vec(1));
    sink.add('v1', vec(2));
    await sink.flush();
    expect(server.get(BUCKET, name)).toBe(original);
    expect(uploads().map((u) => [u.query.ifGenerationMatch, u.existedBefore])).toEqual([['0', true]]);
    expect(lines().filter((l) => l.severity === 'WARNING')).toEqual([]);
    expect(lines().filter((l) => String(l.message).startsWith('query sample batch already saved'))).toEqual([
      expect.objectContaining({ severity: 'DEBUG', name, queries: 2 }),
    ]);
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('v1'))).toEqual([42]);
  });

  it('a failing write never reaches the search: add returns, flush resolves, the batch is logged and dropped, the next one is written', async () => {
    const { logger, lines } = captureLogger();
    const sink = new ObjectQueryVectorSink(store, { batchSize: 2, now: () => T0, logger });
    server.failures.push(503);
    expect(() => {
      sink.add('v1', vec(1));
      sink.add('v1', vec(2));
    }).not.toThrow();
    await expect(sink.flush()).resolves.toBeUndefined();
    const [failure] = lines().filter((l) => l.message === 'query sample batch not saved: dropped');
    expect(failure).toMatchObject({ severity: 'WARNING', queries: 2, err: { type: 'TransientError' } });
    expect(objectNames()).toEqual([]);
    sink.add('v1', vec(3));
    sink.add('v1', vec(4));
    await sink.flush();
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('v1'))).toEqual([3, 4]);

    // A store that throws synchronously does not reach the caller either.
    const throwing: CreateOnlyStore = {
      write() {
        throw new Error('boom');
      },
    };
    const broken = new ObjectQueryVectorSink(throwing, { batchSize: 1, logger: silentLogger });
    expect(() => broken.add('v1', vec(5))).not.toThrow();
    await expect(broken.flush()).resolves.toBeUndefined();
  });

  it('holds at most maxBuffered vectors while writes hang, dropping the oldest, and says how many', async () => {
    const written: string[] = [];
    const release: (() => void)[] = [];
    const slow: CreateOnlyStore = {
      write: (_name, data) =>
        new Promise<void>((resolve) =>
          release.push(() => {
            written.push(data);
            resolve();
          }),
        ),
    };
    const { logger, lines } = captureLogger();
    const sink = new ObjectQueryVectorSink(slow, { batchSize: 2, maxBuffered: 4, maxWrites: 1, now: () => T0, logger });
    // Add 2 writes 0–1 (the only slot) and keeps nothing; 3–9 wait, the cap of 4 drops 3, 4 and 5.
    for (let i = 0; i < 10; i++) sink.add('v1', vec(i));
    expect(sink.pending).toBe(4);
    release.splice(0).forEach((r) => r());
    const flushed = sink.flush();
    await new Promise((resolve) => setTimeout(resolve, 0));
    release.splice(0).forEach((r) => r());
    await flushed;
    const kept = written.flatMap((text) => ids(parseQueryBatch(text, 'v1')!));
    expect(kept).toEqual([0, 1, 6, 7, 8, 9]);
    expect(lines().filter((l) => String(l.message).includes('dropped while writes were slow'))).toEqual([
      expect.objectContaining({ dropped: 3, maxBuffered: 4 }),
    ]);
  });
});

describe('the cloud wiring', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  it("the search service hands each image query's vector to its sink; a similar query (an indexed vector) adds none", async () => {
    const index = await catIndex();
    const embedder = new FakeEmbedder('fake-v1');
    const sink = new ObjectQueryVectorSink(store);
    app = await createSearchService({
      catalog: { live: async () => index },
      model: { get: async () => embedder, current: () => embedder, forVersion: async () => embedder },
      rejections: new MemoryRejections(),
      readObject: async () => Buffer.alloc(0),
      logger: silentLogger,
      queryVectors: sink,
    });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const form = new FormData();
    form.append('image', new Blob([Uint8Array.from([8, 1, 2, 1, 0, 0])], { type: 'image/png' }), 'query.png');
    expect((await fetch(`${url}/api/search?k=1`, { method: 'POST', body: form })).status).toBe(200);
    expect((await fetch(`${url}/api/search?similarTo=cat&k=1`)).status).toBe(200);
    // Shutdown (startSearchService's close) writes what is buffered.
    await sink.flush();
    const sampled = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('fake-v1');
    expect(sampled).toHaveLength(1);
    expect(Array.from(sampled[0]!.vector)).toEqual(Array.from(normalise(Float32Array.from([8, 1, 2, 1]))));
  });

  it('the drift job reads DRIFT_QUERY_SAMPLE (default 1000, 0 = none) and DRIFT_SERVED_BASELINE (default 500), naming the fix; the sample must hold the reference', () => {
    const env = { GCP_PROJECT: 'my-project-123', MODELS_BUCKET: 'm-1', FEATURES_BUCKET: 'f-1', TOPIC_RETRAIN_REQUESTS: 'iss-retrain-requests' };
    expect(parseCloudConfig('driftJob', env)).toMatchObject({ DRIFT_QUERY_SAMPLE: 1000, DRIFT_SERVED_BASELINE: 500 });
    expect(parseCloudConfig('driftJob', { ...env, DRIFT_QUERY_SAMPLE: '0', DRIFT_SERVED_BASELINE: '10' })).toMatchObject({
      DRIFT_QUERY_SAMPLE: 0,
      DRIFT_SERVED_BASELINE: 10,
    });
    expect(() => parseCloudConfig('driftJob', { ...env, DRIFT_QUERY_SAMPLE: '-1' })).toThrow(/DRIFT_QUERY_SAMPLE="-1".*e\.g\. DRIFT_QUERY_SAMPLE=1000/);
    expect(() => parseCloudConfig('driftJob', { ...env, DRIFT_SERVED_BASELINE: '9' })).toThrow(/DRIFT_SERVED_BASELINE="9".*e\.g\. DRIFT_SERVED_BASELINE=500/);
    // As locally: a sample that cannot hold the served-query reference plus a judged sample is refused.
    expect(() => parseCloudConfig('driftJob', { ...env, DRIFT_QUERY_SAMPLE: '699' })).toThrow(
      /DRIFT_QUERY_SAMPLE="699": keeps too few queries .* = 700; raise it or lower DRIFT_SERVED_BASELINE/,
    );
    expect(parseCloudConfig('driftJob', { ...env, DRIFT_QUERY_SAMPLE: '700' }).DRIFT_QUERY_SAMPLE).toBe(700);
  });
});

/** Resolves after `ms` (real time). */
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/** Whether `p` has settled after the pending callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await sleep(5);
  return done;
}
/** A store whose writes settle only when the test says so. */
function heldStore(): { store: CreateOnlyStore; names: string[]; release: () => void } {
  const names: string[] = [];
  const waiting: (() => void)[] = [];
  return {
    names,
    store: {
      write: (name) => {
        names.push(name);
        return new Promise<void>((resolve) => waiting.push(resolve));
      },
    },
    release: () => waiting.splice(0).forEach((r) => r()),
  };
}
const DAY = 24 * 3600_000;

describe('review: privacy (sampling rate, whole seconds)', () => {
  it('keeps each query with probability rate (the injected draw below it), stamped in whole seconds', async () => {
    const draws = [0.05, 0.5, 0.09, 0.1, 0.99, 0];
    let now = T0;
    const sink = new ObjectQueryVectorSink(store, { rate: 0.1, random: () => draws.shift()!, now: () => now });
    for (let i = 0; i < 6; i++) {
      now = T0 + 123 + i * 1001;
      sink.add('v1', vec(i));
    }
    // 0.1 is not below 0.1: three of six kept.
    expect(sink.pending).toBe(3);
    await sink.flush();
    const [name] = objectNames();
    const stored = JSON.parse(server.get(BUCKET, name!)!.data.toString('utf8')) as { entries: { at: number }[] };
    // T0 + 123, T0 + 2125 and T0 + 5128, to the second below.
    expect(stored.entries.map((e) => e.at)).toEqual([T0, T0 + 2000, T0 + 5000]);
    expect(name).toMatch(new RegExp(`^query-vectors/v1/00${T0}-[0-9a-f]{16}\\.json$`));
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('v1'))).toEqual([0, 2, 5]);
  });

  it('rate 0 keeps nothing; a rate outside [0, 1] is refused', async () => {
    const sink = new ObjectQueryVectorSink(store, { rate: 0, batchSize: 1 });
    for (let i = 0; i < 10; i++) expect(sink.add('v1', vec(i))).toBeUndefined();
    await sink.flush();
    expect(uploads()).toEqual([]);
    expect(() => new ObjectQueryVectorSink(store, { rate: 1.5 })).toThrow(/rate must be in \[0, 1\]/);
  });

  it('the add that starts a write keeps no query: its query is in no object ever written, and batches hold batchSize queries', async () => {
    const written: string[] = [];
    const memory: CreateOnlyStore = {
      write: async (_name, data) => {
        written.push(String(data));
      },
    };
    let now = T0;
    const sink = new ObjectQueryVectorSink(memory, { batchSize: 3, maxWrites: 10, now: () => (now += 1000) });
    const writers: number[] = [];
    for (let i = 0; i < 22; i++) {
      const started = sink.add('v1', vec(i));
      if (started) {
        writers.push(i);
        await started;
      }
    }
    const byAdds = written.length;
    await sink.flush();
    const batches = written.map((text) => ids(parseQueryBatch(text, 'v1')!));
    // Adds 3, 7, 11, 15 and 19 each write the three before them; flush writes what is left (20, 21).
    expect(writers).toEqual([3, 7, 11, 15, 19]);
    expect(batches.slice(0, byAdds)).toEqual([
      [0, 1, 2],
      [4, 5, 6],
      [8, 9, 10],
      [12, 13, 14],
      [16, 17, 18],
    ]);
    expect(batches.slice(byAdds)).toEqual([[20, 21]]);
    const stored = batches.flat();
    for (const w of writers) expect(stored).not.toContain(w);
    // Every other query is kept (rate 1).
    expect([...stored, ...writers].sort((x, y) => x - y)).toEqual(Array.from({ length: 22 }, (_, i) => i));
  });

  it('the search service samples at QUERY_SAMPLE_RATE (default 0.1, named fix); at 0 it builds no sink', () => {
    const env = { OPENSEARCH_URL: 'https://10.0.0.5:9200', MODELS_BUCKET: 'm-1', FEATURES_BUCKET: 'f-1', IMAGES_BUCKET: 'i-1' };
    expect(parseCloudConfig('search', env).QUERY_SAMPLE_RATE).toBe(0.1);
    expect(parseCloudConfig('search', { ...env, QUERY_SAMPLE_RATE: '0' }).QUERY_SAMPLE_RATE).toBe(0);
    expect(() => parseCloudConfig('search', { ...env, QUERY_SAMPLE_RATE: '1.5' })).toThrow(
      /QUERY_SAMPLE_RATE="1\.5": .*\(set the share of image queries .* e\.g\. QUERY_SAMPLE_RATE=0\.1 \(stack setting iss:search\.querySampleRate\)\)/,
    );
    expect(() => parseCloudConfig('search', { ...env, QUERY_SAMPLE_RATE: 'ten percent' })).toThrow(/QUERY_SAMPLE_RATE="ten percent"/);
    expect(querySampleSink({ QUERY_SAMPLE_RATE: 0 }, store, silentLogger)).toBeNull();
  });

  it('querySampleSink keeps about QUERY_SAMPLE_RATE of the queries (Math.random)', async () => {
    const sink = querySampleSink({ QUERY_SAMPLE_RATE: 0.5 }, store, silentLogger)!;
    for (let i = 0; i < 400; i++) sink.add('v1', vec(i));
    await sink.flush();
    const kept = (await new ObjectQueryVectorSource(store, { capacity: 1000 }).recent('v1')).length;
    // 400 fair draws at 0.5: far from 0 and from 400 (|z| < 6).
    expect(kept).toBeGreaterThan(140);
    expect(kept).toBeLessThan(260);
  });
});

describe('review: Cloud Run throttles the CPU after the response', () => {
  it('add returns a promise only when it started a write, settled when the write is done', async () => {
    const held = heldStore();
    const sink = new ObjectQueryVectorSink(held.store, { batchSize: 2, now: () => T0 });
    expect(sink.add('v1', vec(1))).toBeUndefined();
    // A full batch is written by the next add, not by the one that filled it.
    expect(sink.add('v1', vec(2))).toBeUndefined();
    expect(held.names).toHaveLength(0);
    const writing = sink.add('v1', vec(3));
    expect(writing).toBeInstanceOf(Promise);
    expect(held.names).toHaveLength(1);
    expect(sink.pending).toBe(0);
    expect(await settled(writing!)).toBe(false);
    held.release();
    await expect(writing).resolves.toBeUndefined();
  });

  it('a stalled write keeps the request at most awaitMs, never rejects, and gives up its slot after writeTimeoutMs', async () => {
    const { logger, lines } = captureLogger();
    const stalled: string[] = [];
    const never: CreateOnlyStore = {
      write: (name) => {
        stalled.push(name);
        return new Promise(() => {});
      },
    };
    const sink = new ObjectQueryVectorSink(never, { batchSize: 1, maxWrites: 1, awaitMs: 30, writeTimeoutMs: 120, now: () => T0, logger });
    expect(sink.add('v1', vec(1))).toBeUndefined();
    const started = Date.now();
    // Writes 1 (and keeps nothing of its own).
    await sink.add('v1', vec(2));
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
    expect(Date.now() - started).toBeLessThan(110);
    // The only slot is taken: the next vector waits in the buffer.
    expect(sink.add('v1', vec(3))).toBeUndefined();
    expect(sink.pending).toBe(1);
    await sleep(150);
    expect(lines().filter((l) => String(l.message).includes('its slot is freed'))).toEqual([expect.objectContaining({ severity: 'WARNING', timeoutMs: 120 })]);
    // Slot free again: this add writes what waited, and keeps nothing.
    expect(sink.add('v1', vec(4))).toBeInstanceOf(Promise);
    expect(stalled).toHaveLength(2);
    expect(sink.pending).toBe(0);

    const refusing: CreateOnlyStore = { write: () => Promise.reject(new Error('refused')) };
    const refused = new ObjectQueryVectorSink(refusing, { batchSize: 1, logger: silentLogger });
    refused.add('v1', vec(5));
    await expect(refused.add('v1', vec(6))).resolves.toBeUndefined();
  });

  it('the search that started a sample write answers only once the write is done', async () => {
    const index = await catIndex();
    const embedder = new FakeEmbedder('fake-v1');
    const service = new SearchService(
      () => embedder,
      async () => index,
    );
    let release!: () => void;
    const sink: QueryVectorSink = { add: () => new Promise<void>((resolve) => (release = resolve)) };
    service.queryVectors = sink;
    const answer = service.byImage(Buffer.from([8, 1, 2, 1]), { k: 1 });
    expect(await settled(answer)).toBe(false);
    release();
    expect((await answer).results.map((h) => h.id)).toEqual(['cat']);
    // A sink that starts no write (void) does not hold the answer.
    service.queryVectors = { add: () => undefined };
    expect((await service.byImage(Buffer.from([8, 1, 2, 1]), { k: 1 })).results).toHaveLength(1);
  });
});

describe("review: a 412 on the client's own retry", () => {
  it('the first attempt landed, its response was lost, the retry meets the object: saved, no warning', async () => {
    const { logger, lines } = captureLogger();
    const retrying = new GcsBlobStore(server.storage({ retries: true }), BUCKET);
    const sink = new ObjectQueryVectorSink(retrying, { batchSize: 2, now: () => T0, logger });
    server.lostUploadResponses.push(503);
    sink.add('v1', vec(1));
    await sink.add('v1', vec(2));
    await sink.flush();
    // Two attempts at one name: the first created it, the retry was refused (412) by ifGenerationMatch=0.
    expect(uploads().map((u) => [u.query.ifGenerationMatch, u.existedBefore])).toEqual([
      ['0', false],
      ['0', true],
    ]);
    expect(lines().filter((l) => l.severity === 'WARNING')).toEqual([]);
    expect(ids(await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10 }).recent('v1'))).toEqual([1, 2]);
  });
});

describe('review: shutdown within the SIGTERM grace', () => {
  it("the sample's writes start before the HTTP server closes, are capped, and the model and catalog close after", async () => {
    const events: string[] = [];
    const writes: CreateOnlyStore = {
      write: (name) => {
        events.push(`write ${name.split('/').pop()}`);
        return new Promise(() => {}); // stalls: never answers
      },
    };
    let n = 0;
    const queryVectors = new ObjectQueryVectorSink(writes, { now: () => T0, unique: () => `b${++n}` });
    queryVectors.add('v1', vec(1));
    const app = {
      close: async () => {
        events.push('app.close');
        await sleep(20);
        // A request in flight adds its vector while the server drains.
        queryVectors.add('v1', vec(2));
        events.push('app.closed');
      },
    };
    const started = Date.now();
    const closing = closeSearchService(
      {
        app,
        queryVectors,
        model: { close: async () => void events.push('model.close') },
        catalog: { close: async () => void events.push('catalog.close') },
        logger: silentLogger,
      },
      200,
    );
    expect(await Promise.race([closing.then(() => 'closed'), sleep(3000).then(() => 'stuck')])).toBe('closed');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(Date.now() - started).toBeLessThan(1500);
    expect(events).toEqual([
      `write ${String(T0).padStart(15, '0')}-b1.json`,
      'app.close',
      'app.closed',
      `write ${String(T0).padStart(15, '0')}-b2.json`,
      'model.close',
      'catalog.close',
    ]);
  });

  it('without a sample (rate 0) it closes the server, the model and the catalog', async () => {
    const events: string[] = [];
    await closeSearchService({
      app: { close: async () => void events.push('app.close') },
      queryVectors: null,
      model: { close: async () => void events.push('model.close') },
      catalog: { close: async () => void events.push('catalog.close') },
      logger: silentLogger,
    });
    expect(events).toEqual(['app.close', 'model.close', 'catalog.close']);
  });
});

describe('review: the drift job reads a window, and a failed listing is logged', () => {
  it('a listing refused (403 while a binding propagates) or unavailable is logged once with the folder and rethrown as it is', async () => {
    for (const status of [403, 503]) {
      const { logger, lines } = captureLogger();
      server.failures.push(status);
      const failure = await new ObjectQueryVectorSource(store, { now: READ_AT, capacity: 10, logger }).recent('v1').catch((err: unknown) => err);
      expect(failure).toBeInstanceOf(Error);
      const logged = lines().filter((l) => l.severity === 'WARNING');
      expect(logged).toEqual([
        expect.objectContaining({ message: 'query sample: the batches could not be listed', modelVersion: 'v1', folder: `gs://${BUCKET}/query-vectors/v1/` }),
      ]);
      expect((logged[0]!.err as { message: string }).message).toBe((failure as Error).message);
    }
  });

  it('lists from the start of the window (GCS startOffset) and never reads older batches; a folder store does the same', async () => {
    const at = (ms: number) => `query-vectors/v1/${String(ms).padStart(15, '0')}`;
    const batch = (id: number) => batchJson('v1', [{ at: T0, vector: encodeQueryVector(vec(id)) }]);
    const objects: [string, string][] = [
      [`${at(T0 - 30 * DAY)}-a.json`, batch(1)],
      [`${at(T0 - 7 * DAY - 1)}-b.json`, batch(2)],
      [`${at(T0 - 7 * DAY)}-c.json`, batch(3)],
      [`${at(T0 - DAY)}-d.json`, batch(4)],
    ];
    for (const [name, text] of objects) server.put(BUCKET, name, text);
    const reader = (blobs: GcsBlobStore | FolderBlobStore) => new ObjectQueryVectorSource(blobs, { now: () => T0, capacity: 100 });
    expect(ids(await reader(store).recent('v1'))).toEqual([3, 4]);
    const lists = server.requests.filter((r) => r.path === `/storage/v1/b/${BUCKET}/o`);
    expect(lists.map((r) => [r.query.prefix, r.query.startOffset])).toEqual([['query-vectors/v1/', at(T0 - 7 * DAY)]]);
    expect(mediaReads().sort()).toEqual([objects[2]![0], objects[3]![0]]);

    const dir = await mkdtemp(path.join(os.tmpdir(), 'qv-window-'));
    try {
      const folder = new FolderBlobStore(dir);
      for (const [name, text] of objects) await folder.write(name, text);
      expect(ids(await reader(folder).recent('v1'))).toEqual([3, 4]);
      const listed: string[] = [];
      for await (const info of folder.list('query-vectors/', { startOffset: at(T0 - 7 * DAY) })) listed.push(info.name);
      expect(listed).toEqual([objects[2]![0], objects[3]![0]]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

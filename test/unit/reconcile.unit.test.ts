import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { silentLogger } from '../../shared/logger.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';
import { TOPICS, type ImageEvent, type RejectedImage } from '../../shared/contracts.js';
import type { BlobInfo, BlobStore } from '../../shared/ports/blob-store.js';
import type { EventBus } from '../../shared/ports/event-bus.js';
import type { DocumentGeneration, VectorIndex } from '../../shared/ports/vector-index.js';
import { reconcileBucket } from '../../shared/services/reconcile.js';
import { strict } from '../helpers/strict-fakes.js';
import { MemoryIndex, MemoryRejections } from './functions-fakes.js';

/**
 * `imgsearch up` over a folder that is already indexed: one pass over the listing (name, size,
 * generation) against what the index holds, and only what changed while nothing watched goes
 * through the pipeline again (issue 15, item 5).
 */
const BUCKET = '/data/bucket';
const uri = (name: string) => `file://${BUCKET}/${name}`;
const info = (name: string, generation: string, size = 10): BlobInfo => ({
  bucket: BUCKET,
  name,
  generation,
  size,
  contentType: 'image/png',
  updated: '2025-03-01T10:00:00.000Z',
});
const doc = (name: string, generation: string, docUri = uri(name)) => ({
  id: `id-${name}`,
  uri: docUri,
  generation,
  modelVersion: 'm1',
  vector: new Float32Array(4),
  labels: [],
  indexedAt: '',
});
const blobsOf = (objects: BlobInfo[]) =>
  strict<BlobStore>('blobs', {
    bucket: BUCKET,
    uri,
    list: async function* () {
      yield* objects;
    },
  });
const rejection = (name: string, generation: string, reason: string): RejectedImage => ({
  id: `id-${name}`,
  uri: uri(name),
  generation,
  reason,
  detail: reason,
  at: '2025-03-01T10:00:00.000Z',
});

function recordingBus() {
  const published: { topic: string; data: unknown }[] = [];
  return { published, bus: strict<EventBus>('bus', { publish: async (topic: string, data: unknown) => String(published.push({ topic, data })) }) };
}

describe('reconcileBucket: restarts cost what changed', () => {
  it('sends nothing through the pipeline when every object is indexed at its generation', async () => {
    const index = new MemoryIndex('live', 'm1', 4);
    await index.upsert([doc('a.png', '5'), doc('b.png', '6'), doc('sub/c.png', '7')]);
    const seen: ImageEvent[] = [];
    const { bus, published } = recordingBus();
    const result = await reconcileBucket({
      blobs: blobsOf([info('a.png', '5'), info('b.png', '6'), info('sub/c.png', '7')]),
      index,
      bus,
      onObject: async (e) => void seen.push(e),
    });
    expect(seen).toEqual([]);
    expect(published).toEqual([]);
    expect(result).toEqual({ published: 0, deleted: 0, ignored: 0, unchanged: 3 });
  });

  it('publishes exactly the new and changed objects, and a delete (with the indexed generation) for each vanished one', async () => {
    const index = new MemoryIndex('live', 'm1', 4);
    await index.upsert([doc('a.png', '5'), doc('b.png', '6'), doc('gone.png', '3'), doc('other.png', '1', 'file:///elsewhere/other.png')]);
    const seen: ImageEvent[] = [];
    const { bus, published } = recordingBus();
    const result = await reconcileBucket({
      blobs: blobsOf([info('a.png', '5'), info('b.png', '8', 99), info('new.png', '9')]),
      index,
      bus,
      onObject: async (e) => void seen.push(e),
      now: () => new Date('2025-03-02T00:00:00Z'),
    });
    expect(seen.map((e) => [e.name, e.generation, e.size, e.eventType])).toEqual([
      ['b.png', '8', 99, 'finalize'],
      ['new.png', '9', 10, 'finalize'],
    ]);
    expect(published).toEqual([
      {
        topic: TOPICS.imageEvents,
        data: {
          bucket: BUCKET,
          name: 'gone.png',
          generation: '3',
          contentType: 'application/octet-stream',
          size: 0,
          eventType: 'delete',
          eventTime: '2025-03-02T00:00:00.000Z',
        },
      },
    ]);
    expect(result).toEqual({ published: 2, deleted: 1, ignored: 0, unchanged: 1 });
  });

  it('reads ids and generations only (never the vectors) when the index offers that scan', async () => {
    const pages: DocumentGeneration[][] = [
      [{ id: 'id-a.png', uri: uri('a.png'), generation: '5' }],
      [{ id: 'id-gone.png', uri: uri('gone.png'), generation: '2' }],
    ];
    // A strict fake: `scan` (vectors) is not set up, so calling it fails the test.
    const index = strict<VectorIndex>('index', {
      scanGenerations: async function* () {
        yield* pages;
      },
    });
    const seen: ImageEvent[] = [];
    const { bus, published } = recordingBus();
    const result = await reconcileBucket({ blobs: blobsOf([info('a.png', '5')]), index, bus, onObject: async (e) => void seen.push(e) });
    expect(seen).toEqual([]);
    expect(published.map((p) => (p.data as ImageEvent).name)).toEqual(['gone.png']);
    expect(result).toMatchObject({ published: 0, deleted: 1, unchanged: 1 });
  });

  it('does not re-send an object rejected for its content at the same generation, but does re-examine the others', async () => {
    const rejections = new MemoryRejections();
    await rejections.record(rejection('corrupt.png', '4', 'corrupt-image'));
    await rejections.record(rejection('fixed.png', '4', 'corrupt-image'));
    // Rejected for a setting (the size or pixel limit), which may have been raised since.
    await rejections.record(rejection('big.png', '4', 'too-large'));
    await rejections.record(rejection('huge.png', '4', 'too-many-pixels'));
    const seen: ImageEvent[] = [];
    const { bus } = recordingBus();
    const result = await reconcileBucket({
      blobs: blobsOf([info('big.png', '4'), info('corrupt.png', '4'), info('fixed.png', '5'), info('huge.png', '4')]),
      index: new MemoryIndex('live', 'm1', 4),
      rejections,
      bus,
      onObject: async (e) => void seen.push(e),
    });
    expect(seen.map((e) => [e.name, e.generation])).toEqual([
      ['big.png', '4'],
      ['fixed.png', '5'],
      ['huge.png', '4'],
    ]);
    expect(result).toMatchObject({ published: 3, unchanged: 1 });
  });

  it('publishes every object when there is no index yet (first start)', async () => {
    const seen: ImageEvent[] = [];
    const { bus, published } = recordingBus();
    const result = await reconcileBucket({
      blobs: blobsOf([info('a.png', '5'), info('b.png', '6')]),
      index: null,
      bus,
      onObject: async (e) => void seen.push(e),
    });
    expect(seen.map((e) => e.name)).toEqual(['a.png', 'b.png']);
    expect(published).toEqual([]);
    expect(result).toEqual({ published: 2, deleted: 0, ignored: 0, unchanged: 0 });
  });

  it('re-sends an object whose indexed generation differs in either direction (the index decides which is newer)', async () => {
    const index = new MemoryIndex('live', 'm1', 4);
    await index.upsert([doc('a.png', '10')]);
    const seen: ImageEvent[] = [];
    const { bus } = recordingBus();
    await reconcileBucket({ blobs: blobsOf([info('a.png', '9')]), index, bus, onObject: async (e) => void seen.push(e) });
    expect(seen.map((e) => [e.name, e.generation])).toEqual([['a.png', '9']]);
  });
});

describe('LanceDbVectorIndex.scanGenerations (what a restart reads from the embedded index)', () => {
  it('pages every live document as id, uri and generation, leaving out tombstones', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'iss-reconcile-lancedb-'));
    const catalog = await LanceDbIndexCatalog.open(dir, { alias: 'r' });
    try {
      const index = await catalog.ensureLive('m1', 4);
      const vec = (x: number) => Float32Array.from([x, 1, 0, 0]);
      await index.upsert(['a', 'b', 'c'].map((n, i) => ({ ...doc(`${n}.png`, String(100 + i)), vector: vec(i) })));
      // A newer generation replaces a row; a delete leaves a tombstone that must not be listed.
      await index.upsert([{ ...doc('b.png', '200'), vector: vec(9) }]);
      await index.delete([{ id: 'id-c.png', generation: '102' }]);
      const pages: DocumentGeneration[][] = [];
      for await (const page of index.scanGenerations!(1)) pages.push(page);
      expect(pages.every((p) => p.length === 1)).toBe(true);
      expect(pages.flat().sort((x, y) => x.id.localeCompare(y.id))).toEqual([
        { id: 'id-a.png', uri: uri('a.png'), generation: '100' },
        { id: 'id-b.png', uri: uri('b.png'), generation: '200' },
      ]);
    } finally {
      await catalog.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('reconcileBucket while the process stops', () => {
  it('ends the pass early, and stops retrying an event the full disk refuses, once stopped', async () => {
    let stopping = false;
    const seen: string[] = [];
    const { bus } = recordingBus();
    const full = Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
    const pass = reconcileBucket({
      blobs: blobsOf([info('a.png', '1'), info('b.png', '2'), info('c.png', '3')]),
      index: null,
      bus,
      onObject: async (e) => {
        seen.push(e.name);
        if (e.name === 'b.png') throw full;
      },
      stopped: () => stopping,
    });
    // b.png keeps failing (a full disk is retried with backoff) until the process stops.
    await new Promise((r) => setTimeout(r, 300));
    stopping = true;
    await expect(pass).rejects.toThrow(/ENOSPC/);
    expect(seen.filter((n) => n === 'b.png').length).toBeGreaterThanOrEqual(1);
    expect(seen).not.toContain('c.png');
  });
});

describe('OpenSearchVectorIndex.scanGenerations (a restart with IMGSEARCH_INDEX=opensearch)', () => {
  it('pages every live document as id, uri and generation, asking OpenSearch to leave the vectors out', async () => {
    const fake = new FakeOpenSearch();
    await fake.start();
    const catalog = new OpenSearchIndexCatalog(
      createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 }),
      parseOpenSearchIndexOptions({}),
      silentLogger,
    );
    try {
      const index = await catalog.ensureLive('m1', 4);
      await index.upsert(['a', 'b', 'c'].map((n, i) => ({ ...doc(`${n}.png`, String(100 + i)), vector: Float32Array.from([1, i, 0, 0]) })));
      await index.delete([{ id: 'id-b.png', generation: '101' }]);
      const pages: DocumentGeneration[][] = [];
      for await (const page of index.scanGenerations!(1)) pages.push(page);
      expect(pages.flat()).toEqual([
        { id: 'id-a.png', uri: uri('a.png'), generation: '100' },
        { id: 'id-c.png', uri: uri('c.png'), generation: '102' },
      ]);
      const searches = fake.requestsTo(/\/_search$/, 'POST');
      expect(searches.length).toBeGreaterThan(0);
      for (const r of searches) expect(r.json._source).toEqual({ excludes: ['vector'] });
    } finally {
      await catalog.close();
      await fake.stop();
    }
  });
});

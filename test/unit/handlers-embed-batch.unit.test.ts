import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TOPICS, vectorFromBase64, type ImageEvent } from '../../shared/contracts.js';
import { GenerationMismatchError, ImageRejectedError, NotFoundError } from '../../shared/errors.js';
import { embedBatch, mapLimit, settleEmbedOutcomes, type EmbedDeps } from '../../shared/handlers/embed-batch.js';
import type { EmbedOutcome } from '../../shared/handlers/results.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import {
  delivery,
  MemoryRejections,
  RecordingBus,
  strict,
  type BlobStore,
  type Embedder,
  type FeatureStore,
  type VectorIndex,
} from '../helpers/strict-fakes.js';
import { recordingLogger } from '../helpers/recording-logger.js';

/**
 * The embed step: which messages end embedded, deleted, unchanged, superseded, rejected,
 * dead-lettered or retried, and exactly what it writes (feature records, embedding messages,
 * rejections). Ids are sha256("bucket/name")[:32], computed outside the code under test.
 */
const NOW = '2026-01-02T03:04:05.000Z';
/** sha256 of "photos/<name>", first 32 hex digits (printf 'photos/a.jpg' | sha256sum). */
const ID = {
  a: '58d4d8dec171db3f9c5a14484e682c1a',
  b: 'f047b9232c3c2d0836c6e93934d5da4d',
  old: '09e21624fc89b956eda9678e8db0f14c',
  catsA: '8053a5dd413e307189d258784611d6d2',
};

const event = (over: Partial<ImageEvent> = {}): ImageEvent => ({
  bucket: 'photos',
  name: 'a.jpg',
  generation: '10',
  contentType: 'image/jpeg',
  size: 1234,
  eventType: 'finalize',
  eventTime: '2026-01-01T00:00:00.000Z',
  ...over,
});

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.parse(NOW));
});
afterEach(() => vi.useRealTimers());

interface Setup {
  files?: Record<string, string | Error>;
  sidecars?: Record<string, string>;
  indexed?: Record<string, string> | null;
  embedder?: Partial<Embedder>;
  features?: Partial<FeatureStore>;
  decodeConcurrency?: number;
}

function setup(opts: Setup = {}) {
  const bus = new RecordingBus();
  const rejections = new MemoryRejections();
  const put: FeatureRecord[] = [];
  const reads: { name: string; options?: { generation?: string; maxBytes?: number } }[] = [];
  const askedGenerations: string[][] = [];
  const files = opts.files ?? {};
  const sidecars = opts.sidecars ?? {};
  const blobs = strict<BlobStore>('blobs', {
    bucket: 'photos',
    read: async (name, options) => {
      if (name in sidecars) return Buffer.from(sidecars[name]!);
      reads.push({ name, options });
      const f = files[name];
      if (f instanceof Error) throw f;
      if (f === undefined) throw new Error(`unexpected read ${name}`);
      return Buffer.from(f);
    },
    stat: async (name) =>
      name in sidecars ? { bucket: 'photos', name, generation: '1', size: sidecars[name]!.length, contentType: 'text/plain', updated: NOW } : null,
  });
  const embedder = strict<Embedder>('embedder', {
    modelVersion: 'm1',
    dimension: 2,
    manifest: { name: 'base-net' } as Embedder['manifest'],
    prepare: async (buf: Buffer) => {
      const text = buf.toString();
      if (text === 'bad') throw new ImageRejectedError('corrupt-image', 'cannot decode');
      const [w, h] = text.split('x').map(Number);
      return { pixels: new Float32Array(3), width: w ?? 1, height: h ?? 1, format: 'png' };
    },
    // Each image's vectors carry its width, so a mix-up between images shows.
    embedDecoded: async (imgs) => ({ base: imgs.map((i) => Float32Array.of(i.width, 1)), vectors: imgs.map((i) => Float32Array.of(i.width, 2)) }),
    ...opts.embedder,
  });
  const features = strict<FeatureStore>('features', { put: async (r) => void put.push(...r), ...opts.features });
  const index =
    opts.indexed === null
      ? null
      : strict<VectorIndex>('index', {
          generations: async (ids) => {
            askedGenerations.push(ids);
            return new Map(Object.entries(opts.indexed ?? {}));
          },
        });
  const { logger, lines } = recordingLogger();
  const deps: EmbedDeps = {
    blobs: (bucket) => {
      expect(bucket).toBe('photos');
      return blobs;
    },
    embedder,
    bus: bus.asPort(),
    rejections,
    features,
    logger,
    index,
    limits: { maxBytes: 5000 },
    decodeConcurrency: opts.decodeConcurrency,
  };
  return { bus, rejections, put, reads, askedGenerations, lines, deps };
}

describe('embedBatch', () => {
  it('writes one feature record and one embedding message per image, each with its own vector and metadata', async () => {
    const { bus, put, reads, deps } = setup({ files: { 'cats/a.jpg': '30x20', 'b.png': '7x5' } });
    const out = await embedBatch(
      [delivery(event({ name: 'cats/a.jpg' }), 'A'), delivery(event({ name: 'b.png', generation: '11', contentType: 'image/png', size: 99 }), 'B')],
      deps,
    );
    expect(out).toEqual([
      { status: 'embedded', id: ID.catsA, ackId: 'A' },
      { status: 'embedded', id: ID.b, ackId: 'B' },
    ]);
    expect(reads).toEqual([
      { name: 'cats/a.jpg', options: { generation: '10', maxBytes: 5000 } },
      { name: 'b.png', options: { generation: '11', maxBytes: 5000 } },
    ]);
    expect(put).toEqual([
      {
        id: ID.catsA,
        uri: 'gs://photos/cats/a.jpg',
        generation: '10',
        baseModel: 'base-net',
        vector: Float32Array.of(30, 1),
        labels: ['cats'],
        caption: 'cats',
        eventTime: '2026-01-01T00:00:00.000Z',
      },
      {
        id: ID.b,
        uri: 'gs://photos/b.png',
        generation: '11',
        baseModel: 'base-net',
        vector: Float32Array.of(7, 1),
        labels: [],
        caption: undefined,
        eventTime: '2026-01-01T00:00:00.000Z',
      },
    ]);
    expect(bus.published.map((p) => [p.topic, p.attributes])).toEqual([
      [TOPICS.embeddings, { id: ID.catsA, op: 'upsert', generation: '10' }],
      [TOPICS.embeddings, { id: ID.b, op: 'upsert', generation: '11' }],
    ]);
    const [first, second] = bus.published.map((p) => p.data as Record<string, unknown>);
    expect({ ...first, vectorBase64: undefined }).toEqual({
      op: 'upsert',
      id: ID.catsA,
      uri: 'gs://photos/cats/a.jpg',
      bucket: 'photos',
      name: 'cats/a.jpg',
      generation: '10',
      modelVersion: 'm1',
      vectorBase64: undefined,
      metadata: { labels: ['cats'], caption: 'cats', contentType: 'image/jpeg', size: 1234, width: 30, height: 20, eventTime: '2026-01-01T00:00:00.000Z' },
    });
    expect(Array.from(vectorFromBase64(first!.vectorBase64 as string))).toEqual([30, 2]);
    expect(Array.from(vectorFromBase64(second!.vectorBase64 as string))).toEqual([7, 2]);
    expect(second!.metadata).toEqual({
      labels: [],
      caption: undefined,
      contentType: 'image/png',
      size: 99,
      width: 7,
      height: 5,
      eventTime: '2026-01-01T00:00:00.000Z',
    });
  });

  it('reads captions and labels from a sidecar beside the image', async () => {
    const { put, bus, deps } = setup({ files: { 'a.jpg': '3x3' }, sidecars: { 'a.json': JSON.stringify({ labels: ['cat', 'pet'], caption: 'a cat' }) } });
    await embedBatch([delivery(event(), 'A')], deps);
    expect(put[0]).toMatchObject({ labels: ['cat', 'pet'], caption: 'a cat' });
    expect((bus.published[0]!.data as { metadata: unknown }).metadata).toMatchObject({ labels: ['cat', 'pet'], caption: 'a cat' });
  });

  it('turns a delete into a delete message with the deleted generation, without reading or embedding anything', async () => {
    const { bus, put, askedGenerations, deps } = setup({ embedder: { embedDecoded: async () => expect.fail('nothing to embed') } });
    const out = await embedBatch([delivery(event({ eventType: 'delete', generation: '12' }), 'D')], deps);
    expect(out).toEqual([{ status: 'deleted', id: ID.a, ackId: 'D' }]);
    expect(bus.published).toEqual([
      {
        topic: TOPICS.embeddings,
        data: { op: 'delete', id: ID.a, uri: 'gs://photos/a.jpg', generation: '12' },
        attributes: { id: ID.a, op: 'delete', generation: '12' },
      },
    ]);
    expect(put).toEqual([]);
    expect(askedGenerations).toEqual([]); // the index is not asked about a batch of deletes only
  });

  it('skips an image already indexed at this generation or a newer one, and embeds one indexed at an older generation', async () => {
    const { put, askedGenerations, reads, deps } = setup({
      files: { 'a.jpg': '1x1', 'b.png': '2x2', 'old.jpg': '3x3' },
      indexed: { [ID.a]: '10', [ID.b]: '12', [ID.old]: '9' },
    });
    const out = await embedBatch(
      [
        delivery(event({ name: 'a.jpg', generation: '10' }), 'A'),
        delivery(event({ name: 'b.png', generation: '11' }), 'B'),
        delivery(event({ name: 'old.jpg', generation: '10' }), 'O'),
      ],
      deps,
    );
    expect(out).toEqual([
      { status: 'unchanged', id: ID.a, ackId: 'A' },
      { status: 'unchanged', id: ID.b, ackId: 'B' },
      { status: 'embedded', id: ID.old, ackId: 'O' },
    ]);
    expect(askedGenerations).toEqual([[ID.a, ID.b, ID.old]]);
    expect(reads.map((r) => r.name)).toEqual(['old.jpg']);
    expect(put.map((p) => p.id)).toEqual([ID.old]);
  });

  it('embeds everything when no index is given', async () => {
    const { deps } = setup({ files: { 'a.jpg': '1x1' }, indexed: null });
    expect(await embedBatch([delivery(event(), 'A')], deps)).toEqual([{ status: 'embedded', id: ID.a, ackId: 'A' }]);
  });

  it('records a rejected image with its reason and detail, and warns naming the object', async () => {
    const { rejections, lines, deps } = setup({ files: { 'a.jpg': 'bad' } });
    const publishes: unknown[] = [];
    deps.bus = { ...deps.bus, publishBatch: async (...args) => (publishes.push(args), []) };
    const out = await embedBatch([delivery(event(), 'A')], deps);
    expect(out).toEqual([{ status: 'rejected', id: ID.a, ackId: 'A', reason: 'corrupt-image', detail: 'cannot decode' }]);
    expect(await rejections.list()).toEqual([
      { id: ID.a, uri: 'gs://photos/a.jpg', generation: '10', reason: 'corrupt-image', detail: 'cannot decode', at: NOW },
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'WARNING', id: ID.a, object: 'a.jpg', reason: 'corrupt-image', message: 'rejected a.jpg: cannot decode' }),
    );
    expect(publishes).toEqual([]); // nothing to publish: no call at all
  });

  it('calls an image replaced or deleted since its event superseded, and retries other faults with an error log', async () => {
    const { rejections, lines, deps } = setup({
      files: { 'a.jpg': new GenerationMismatchError('now at generation 11'), 'b.png': new NotFoundError('gone'), 'old.jpg': new Error('ECONNRESET') },
    });
    const out = await embedBatch([delivery(event(), 'A'), delivery(event({ name: 'b.png' }), 'B'), delivery(event({ name: 'old.jpg' }), 'O')], deps);
    expect(out).toEqual([
      { status: 'superseded', id: ID.a, ackId: 'A', detail: 'now at generation 11' },
      { status: 'superseded', id: ID.b, ackId: 'B', detail: 'gone' },
      { status: 'retry', id: ID.old, ackId: 'O', detail: 'ECONNRESET' },
    ]);
    expect(await rejections.count()).toBe(0);
    expect(lines).toContainEqual(
      expect.objectContaining({
        severity: 'ERROR',
        id: ID.old,
        object: 'old.jpg',
        err: expect.objectContaining({ message: 'ECONNRESET' }),
        message: 'embedding failed; will retry',
      }),
    );
  });

  it('dead-letters a malformed event with the field named, and warns about a redelivery', async () => {
    const { lines, deps } = setup({ files: { 'a.jpg': '1x1' } });
    const out = await embedBatch([delivery({ bucket: 'photos', name: 'a.jpg' }, 'M'), delivery(event(), 'A', 3)], deps);
    expect(out[0]).toEqual({ status: 'dead-lettered', ackId: 'M', detail: expect.stringMatching(/^malformed image event: .*generation/) });
    expect(out[1]).toEqual({ status: 'embedded', id: ID.a, ackId: 'A' });
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'WARNING', messageId: 'A', deliveryAttempt: 3, message: 'image event redelivered (attempt 3)' }),
    );
    expect(lines.filter((l) => l.messageId === 'M')).toEqual([]); // a first delivery is not a redelivery
  });

  it('fails the batch (nothing to ack) when the feature store or the embeddings topic cannot be written', async () => {
    const a = setup({ files: { 'a.jpg': '1x1' }, features: { put: async () => Promise.reject(new Error('disk full')) } });
    await expect(embedBatch([delivery(event(), 'A')], a.deps)).rejects.toThrow('disk full');
    const b = setup({ files: { 'a.jpg': '1x1' } });
    b.deps.bus = { ...b.deps.bus, publishBatch: async () => Promise.reject(new Error('queue down')) };
    await expect(embedBatch([delivery(event(), 'A')], b.deps)).rejects.toThrow('queue down');
  });

  it('decodes at most decodeConcurrency images at a time (4 by default)', async () => {
    for (const [limit, expected] of [
      [undefined, 4],
      [2, 2],
    ] as const) {
      let active = 0;
      let peak = 0;
      const files = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`${i}.jpg`, '1x1']));
      const { deps } = setup({
        files,
        decodeConcurrency: limit,
        embedder: {
          prepare: async () => {
            active++;
            peak = Math.max(peak, active);
            await new Promise((r) => setImmediate(r));
            active--;
            return { pixels: new Float32Array(3), width: 1, height: 1, format: 'png' };
          },
        },
      });
      const out = await embedBatch(
        Object.keys(files).map((name) => delivery(event({ name }), name)),
        deps,
      );
      expect(out.map((o) => o.status)).toEqual(Array(9).fill('embedded'));
      expect(peak).toBe(expected);
    }
  });
});

describe('mapLimit', () => {
  it('runs every item once, at most `limit` at a time, and copes with fewer items than the limit', async () => {
    let active = 0;
    let peak = 0;
    const seen: number[] = [];
    const work = async (n: number) => {
      active++;
      peak = Math.max(peak, active);
      await new Promise((r) => setImmediate(r));
      seen.push(n);
      active--;
    };
    await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, work);
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(peak).toBe(3);
    peak = 0;
    seen.length = 0;
    await mapLimit([1, 2], 8, work);
    expect(seen.sort()).toEqual([1, 2]);
    expect(peak).toBe(2);
    await mapLimit([], 3, work);
  });
});

describe('settleEmbedOutcomes', () => {
  it('acks what is done, nacks retries and dead-letters malformed events, each with its detail', async () => {
    const bus = new RecordingBus();
    const outcomes: EmbedOutcome[] = [
      { status: 'embedded', id: 'e', ackId: 'E' },
      { status: 'retry', id: 'r', ackId: 'R', detail: 'ECONNRESET' },
      { status: 'deleted', id: 'd', ackId: 'D' },
      { status: 'dead-lettered', ackId: 'M', detail: 'malformed image event: x' },
      { status: 'unchanged', id: 'u', ackId: 'U' },
      { status: 'superseded', id: 's', ackId: 'S', detail: 'gone' },
      { status: 'rejected', id: 'j', ackId: 'J', reason: 'corrupt-image', detail: 'x' },
    ];
    await settleEmbedOutcomes(bus.asPort(), outcomes);
    expect(bus.acked).toEqual(['E', 'D', 'U', 'S', 'J']);
    expect(bus.nacked).toEqual([{ ackId: 'R', reason: 'ECONNRESET' }]);
    expect(bus.dead).toEqual([{ ackId: 'M', reason: 'malformed image event: x' }]);
  });

  it('settles on the image-events topic and makes no empty ack call', async () => {
    const calls: string[] = [];
    const bus = strict<import('../../shared/ports/event-bus.js').EventBus>('bus', {
      ack: async (topic, ids) => void calls.push(`ack ${topic} ${ids.join(',')}`),
      nack: async (topic, ids) => void calls.push(`nack ${topic} ${ids.join(',')}`),
      deadLetter: async (topic, ids) => void calls.push(`dead ${topic} ${ids.join(',')}`),
    });
    await settleEmbedOutcomes(bus, [
      { status: 'retry', id: 'r', ackId: 'R', detail: 'x' },
      { status: 'dead-lettered', ackId: 'M', detail: 'y' },
    ]);
    expect(calls).toEqual(['nack image-events R', 'dead image-events M']);
    await settleEmbedOutcomes(bus, []);
    expect(calls).toHaveLength(2);
  });
});

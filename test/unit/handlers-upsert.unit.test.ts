import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TOPICS, vectorToBase64 } from '../../shared/contracts.js';
import type { UpsertHandlerOutcome } from '../../shared/handlers/results.js';
import { settleUpsertOutcomes, upsertEmbeddings, type UpsertDeps } from '../../shared/handlers/upsert-vectors.js';
import type { EventBus } from '../../shared/ports/event-bus.js';
import type { DeleteOutcome, UpsertOutcome, VectorDocument } from '../../shared/ports/vector-index.js';
import { delivery, RecordingBus, strict, type FeatureStore, type VectorIndex } from '../helpers/strict-fakes.js';
import { recordingLogger } from '../helpers/recording-logger.js';

/**
 * The upsert step: what reaches the live index (documents, deletes), what is acked, retried,
 * dead-lettered or sent back for re-embedding, and which rejections are forgotten.
 */
const NOW = '2026-01-02T03:04:05.000Z';

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.parse(NOW));
});
afterEach(() => vi.useRealTimers());

const msg = (over: Record<string, unknown> = {}) => ({
  op: 'upsert',
  id: 'id1',
  uri: 'gs://photos/a.jpg',
  bucket: 'photos',
  name: 'a.jpg',
  generation: '10',
  modelVersion: 'm1',
  vector: [0.5, -1],
  metadata: { labels: ['cat'] },
  ...over,
});
const del = (over: Record<string, unknown> = {}) => ({ op: 'delete', id: 'id1', uri: 'gs://photos/a.jpg', generation: '10', ...over });

/** A rejection log that records the calls made to it. */
function recordingRejections() {
  const cleared: [string, string | undefined][] = [];
  return {
    cleared,
    log: { record: async () => undefined, clear: async (id: string, g?: string) => void cleared.push([id, g]), list: async () => [], count: async () => 0 },
  };
}

function setup(
  opts: {
    upsert?: (docs: VectorDocument[]) => Promise<UpsertOutcome[]>;
    delete?: (items: { id: string; generation: string }[]) => Promise<DeleteOutcome[]>;
    features?: boolean;
    readShardRow?: UpsertDeps['readShardRow'];
  } = {},
) {
  const bus = new RecordingBus();
  const written: VectorDocument[][] = [];
  const deleted: { id: string; generation: string }[][] = [];
  const featureDeletes: { id: string; generation: string }[][] = [];
  const index = strict<VectorIndex>('index', {
    modelVersion: 'm1',
    dimension: 2,
    upsert: async (docs) => {
      written.push(docs);
      return opts.upsert ? opts.upsert(docs) : docs.map(() => 'created' as const);
    },
    delete: async (items) => {
      deleted.push(items);
      return opts.delete ? opts.delete(items) : items.map(() => 'deleted' as const);
    },
  });
  const rejections = recordingRejections();
  const features = opts.features ? strict<FeatureStore>('features', { delete: async (items) => void featureDeletes.push(items) }) : undefined;
  const { logger, lines } = recordingLogger();
  const deps: UpsertDeps = { index, bus: bus.asPort(), rejections: rejections.log, features, logger, readShardRow: opts.readShardRow };
  return { bus, written, deleted, featureDeletes, cleared: rejections.cleared, lines, deps };
}

describe('upsertEmbeddings', () => {
  it('writes a document with every field of the message, indexed now, and forgets an earlier rejection of the id', async () => {
    const { written, cleared, deps } = setup();
    const out = await upsertEmbeddings(
      [
        delivery(
          msg({
            metadata: { labels: ['cat'], caption: 'a cat', contentType: 'image/jpeg', size: 10, width: 30, height: 20, eventTime: '2026-01-01T00:00:00.000Z' },
          }),
          'A',
        ),
      ],
      deps,
    );
    expect(out).toEqual([{ status: 'created', id: 'id1', ackId: 'A' }]);
    expect(written).toEqual([
      [
        {
          id: 'id1',
          uri: 'gs://photos/a.jpg',
          generation: '10',
          modelVersion: 'm1',
          vector: Float32Array.of(0.5, -1),
          labels: ['cat'],
          caption: 'a cat',
          contentType: 'image/jpeg',
          width: 30,
          height: 20,
          eventTime: '2026-01-01T00:00:00.000Z',
          indexedAt: NOW,
        },
      ],
    ]);
    expect(cleared).toEqual([['id1', '10']]);
  });

  it('asks the index to delete nothing when a batch holds no delete', async () => {
    const { deleted, deps } = setup();
    await upsertEmbeddings([delivery(msg(), 'A')], deps);
    expect(deleted).toEqual([]);
  });

  it('reports the index’s answer per document, and forgets rejections only for documents it wrote', async () => {
    const answers: UpsertOutcome[] = ['updated', 'unchanged', 'stale', 'created'];
    const { cleared, deps } = setup({ upsert: async () => answers });
    const out = await upsertEmbeddings(
      ['u', 'n', 's', 'c'].map((id, i) => delivery(msg({ id, generation: String(20 + i) }), id.toUpperCase())),
      deps,
    );
    expect(out).toEqual([
      { status: 'updated', id: 'u', ackId: 'U' },
      { status: 'unchanged', id: 'n', ackId: 'N' },
      { status: 'stale', id: 's', ackId: 'S' },
      { status: 'created', id: 'c', ackId: 'C' },
    ]);
    expect(cleared).toEqual([
      ['u', '20'],
      ['c', '23'],
    ]);
  });

  it('of two messages with the same generation for one id, writes the first and calls the second stale', async () => {
    const { written, deps } = setup();
    const out = await upsertEmbeddings([delivery(msg({ vector: [1, 0] }), 'A'), delivery(msg({ vector: [0, 1] }), 'B')], deps);
    expect(written[0]!.map((d) => Array.from(d.vector))).toEqual([[1, 0]]);
    expect(out).toEqual([
      { status: 'stale', id: 'id1', ackId: 'B' },
      { status: 'created', id: 'id1', ackId: 'A' },
    ]);
  });

  it('prefers the base64 vector, then the inline one, then a shard reference', async () => {
    const rows: [string, number][] = [];
    const { written, deps } = setup({
      readShardRow: async (shard, row) => {
        rows.push([shard, row]);
        return Float32Array.of(row, 0);
      },
    });
    await upsertEmbeddings(
      [
        delivery(msg({ id: 'b', vector: [9, 9], vectorBase64: vectorToBase64(Float32Array.of(0.25, 4)) }), 'B'),
        delivery(msg({ id: 'v', vector: [3, 4], vectorRef: { shard: 's1', row: 7 } }), 'V'),
        delivery(msg({ id: 'r', vector: undefined, vectorRef: { shard: 's1', row: 5 } }), 'R'),
      ],
      deps,
    );
    expect(written[0]!.map((d) => [d.id, Array.from(d.vector)])).toEqual([
      ['b', [0.25, 4]],
      ['v', [3, 4]],
      ['r', [5, 0]],
    ]);
    expect(rows).toEqual([['s1', 5]]);
  });

  it('retries a message whose vector cannot be read (no vector, no shard reader, a failing shard)', async () => {
    const none = setup();
    expect(
      await upsertEmbeddings(
        [delivery(msg({ vector: undefined }), 'N'), delivery(msg({ id: 'x', vector: undefined, vectorRef: { shard: 's', row: 1 } }), 'X')],
        none.deps,
      ),
    ).toEqual([
      { status: 'retry', id: 'id1', ackId: 'N', detail: 'cannot read vector: message has no inline vector (vectorBase64 or vector) nor a readable vectorRef' },
      { status: 'retry', id: 'x', ackId: 'X', detail: 'cannot read vector: message has no inline vector (vectorBase64 or vector) nor a readable vectorRef' },
    ]);
    const failing = setup({ readShardRow: async () => Promise.reject(new Error('shard s unreadable')) });
    expect(await upsertEmbeddings([delivery(msg({ vector: undefined, vectorRef: { shard: 's', row: 1 } }), 'F')], failing.deps)).toEqual([
      { status: 'retry', id: 'id1', ackId: 'F', detail: 'cannot read vector: shard s unreadable' },
    ]);
    expect(none.written).toEqual([]);
  });

  it('dead-letters what can never succeed, saying why: malformed, undecodable vector, wrong dimension', async () => {
    const { written, deps } = setup();
    const out = await upsertEmbeddings(
      [delivery({ op: 'upsert', id: 'x' }, 'M'), delivery(msg({ vector: undefined, vectorBase64: 'AAA=' }), 'B'), delivery(msg({ vector: [1, 2, 3] }), 'W')],
      deps,
    );
    expect(out).toEqual([
      { status: 'dead-lettered', ackId: 'M', detail: expect.stringMatching(/^malformed embedding message: .*uri/) },
      { status: 'dead-lettered', ackId: 'B', detail: 'bad vector: a base64 vector must hold whole float32 values, got 2 bytes' },
      { status: 'dead-lettered', ackId: 'W', detail: 'vector has 3 dimensions, the index expects 2' },
    ]);
    expect(written).toEqual([]);
  });

  it('retries every document of a failed index write, logging the error', async () => {
    const { lines, cleared, deps } = setup({ upsert: async () => Promise.reject(new Error('index unavailable')) });
    const out = await upsertEmbeddings([delivery(msg({ id: 'a' }), 'A'), delivery(msg({ id: 'b' }), 'B')], deps);
    expect(out).toEqual([
      { status: 'retry', id: 'a', ackId: 'A', detail: 'index unavailable' },
      { status: 'retry', id: 'b', ackId: 'B', detail: 'index unavailable' },
    ]);
    expect(cleared).toEqual([]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        severity: 'ERROR',
        count: 2,
        err: expect.objectContaining({ message: 'index unavailable' }),
        message: 'index upsert failed; will retry',
      }),
    );
  });

  it('deletes by generation from the index and the feature store, forgets rejections, and reports each answer', async () => {
    const { deleted, featureDeletes, cleared, written, deps } = setup({ features: true, delete: async () => ['deleted', 'stale', 'absent'] });
    const out = await upsertEmbeddings(
      [delivery(del({ id: 'd' }), 'D'), delivery(del({ id: 's', generation: '3' }), 'S'), delivery(del({ id: 'a' }), 'A')],
      deps,
    );
    expect(out).toEqual([
      { status: 'deleted', id: 'd', ackId: 'D' },
      { status: 'stale-delete', id: 's', ackId: 'S' },
      { status: 'absent', id: 'a', ackId: 'A' },
    ]);
    const items = [
      { id: 'd', generation: '10' },
      { id: 's', generation: '3' },
      { id: 'a', generation: '10' },
    ];
    expect(deleted).toEqual([items]);
    expect(featureDeletes).toEqual([items]);
    expect(cleared).toEqual([
      ['d', '10'],
      ['s', '3'],
      ['a', '10'],
    ]);
    expect(written).toEqual([]);
  });

  it('retries every delete of a failed index delete, logging the error, and deletes without a feature store', async () => {
    const failing = setup({ features: true, delete: async () => Promise.reject(new Error('index down')) });
    const out = await upsertEmbeddings([delivery(del({ id: 'a' }), 'A'), delivery(del({ id: 'b' }), 'B')], failing.deps);
    expect(out).toEqual([
      { status: 'retry', id: 'a', ackId: 'A', detail: 'index down' },
      { status: 'retry', id: 'b', ackId: 'B', detail: 'index down' },
    ]);
    expect(failing.featureDeletes).toEqual([]);
    expect(failing.lines).toContainEqual(expect.objectContaining({ severity: 'ERROR', count: 2, message: 'index delete failed; will retry' }));
    const plain = setup();
    expect(await upsertEmbeddings([delivery(del(), 'D')], plain.deps)).toEqual([{ status: 'deleted', id: 'id1', ackId: 'D' }]);
  });

  it('sends a vector of another model version back to image-events as a finalize event, with what it knows of the object', async () => {
    const { bus, written, lines, deps } = setup();
    const out = await upsertEmbeddings(
      [
        delivery(msg({ modelVersion: 'm0', metadata: { labels: [], contentType: 'image/png', size: 77, eventTime: '2025-12-31T00:00:00.000Z' } }), 'A'),
        delivery(msg({ id: 'id2', name: 'b.bin', modelVersion: 'm0', metadata: { labels: [] } }), 'B'),
      ],
      deps,
    );
    expect(out).toEqual([
      { status: 'requeued', id: 'id1', ackId: 'A', detail: 'made by m0, index holds m1' },
      { status: 'requeued', id: 'id2', ackId: 'B', detail: 'made by m0, index holds m1' },
    ]);
    expect(written).toEqual([]);
    expect(bus.published).toEqual([
      {
        topic: TOPICS.imageEvents,
        data: {
          bucket: 'photos',
          name: 'a.jpg',
          generation: '10',
          contentType: 'image/png',
          size: 77,
          eventType: 'finalize',
          eventTime: '2025-12-31T00:00:00.000Z',
        },
        attributes: { id: 'id1', eventType: 'finalize', generation: '10', reason: 'model-version-changed' },
      },
      {
        topic: TOPICS.imageEvents,
        // Unknown type and size: placeholders the embed step accepts (it reads the object itself).
        data: { bucket: 'photos', name: 'b.bin', generation: '10', contentType: 'application/octet-stream', size: 1, eventType: 'finalize', eventTime: NOW },
        attributes: { id: 'id2', eventType: 'finalize', generation: '10', reason: 'model-version-changed' },
      },
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'INFO', id: 'id1', from: 'm0', to: 'm1', message: 'vector of another model version sent back for re-embedding' }),
    );
  });
});

describe('settleUpsertOutcomes', () => {
  it('acks every outcome but retries and dead letters, on the embeddings topic; nacks and dead-letters with the detail', async () => {
    const bus = new RecordingBus();
    const outcomes: UpsertHandlerOutcome[] = [
      { status: 'created', id: 'c', ackId: 'C' },
      { status: 'retry', id: 'r', ackId: 'R', detail: 'index down' },
      { status: 'stale-delete', id: 's', ackId: 'S' },
      { status: 'dead-lettered', ackId: 'M', detail: 'malformed' },
      { status: 'requeued', id: 'q', ackId: 'Q', detail: 'made by m0' },
    ];
    await settleUpsertOutcomes(bus.asPort(), outcomes);
    expect(bus.acked).toEqual(['C', 'S', 'Q']);
    expect(bus.nacked).toEqual([{ ackId: 'R', reason: 'index down' }]);
    expect(bus.dead).toEqual([{ ackId: 'M', reason: 'malformed' }]);
  });

  it('uses the embeddings topic and makes no empty ack call', async () => {
    const calls: string[] = [];
    const bus = strict<EventBus>('bus', {
      ack: async (topic, ids) => void calls.push(`ack ${topic} ${ids.join(',')}`),
      nack: async (topic, ids) => void calls.push(`nack ${topic} ${ids.join(',')}`),
      deadLetter: async (topic, ids) => void calls.push(`dead ${topic} ${ids.join(',')}`),
    });
    await settleUpsertOutcomes(bus, [
      { status: 'dead-lettered', ackId: 'M', detail: 'y' },
      { status: 'retry', id: 'r', ackId: 'R', detail: 'x' },
    ]);
    expect(calls).toEqual(['dead embeddings M', 'nack embeddings R']);
    await settleUpsertOutcomes(bus, [{ status: 'created', id: 'c', ackId: 'C' }]);
    expect(calls[2]).toBe('ack embeddings C');
  });
});

import { getFunction } from '@google-cloud/functions-framework/testing';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { documentId, TOPICS } from '../../shared/contracts.js';
import type { UpsertVectorsResult } from '../../functions/upsert-vectors.js';
import { captureLogger, MemoryIndex, MemoryRejections, RecordingBus } from './functions-fakes.js';

const SOURCE = '//pubsub.googleapis.com/projects/p1/topics/iss-embeddings';
const DLQ = 'projects/p1/topics/iss-embeddings-dead-letter';

/** A `messagePublished` CloudEvent as Eventarc (or the framework, from a push) hands it over. */
function pubsubEvent(payload: unknown, options: { raw?: string; attributes?: Record<string, string>; deliveryAttempt?: number } = {}) {
  const data = options.raw ?? JSON.stringify(payload);
  return {
    specversion: '1.0',
    id: '11112222333344',
    source: SOURCE,
    type: 'google.cloud.pubsub.topic.v1.messagePublished',
    time: '2025-03-01T10:00:05.000Z',
    datacontenttype: 'application/json',
    data: {
      message: {
        data: Buffer.from(data).toString('base64'),
        attributes: options.attributes ?? {},
        messageId: '11112222333344',
        publishTime: '2025-03-01T10:00:05.000Z',
      },
      subscription: 'projects/p1/subscriptions/iss-embeddings-upsert',
      ...(options.deliveryAttempt ? { deliveryAttempt: options.deliveryAttempt } : {}),
    },
  };
}

const id = documentId('iss-images', 'photos/cat.jpg');
function upsertMessage(generation: string, overrides: Record<string, unknown> = {}) {
  return {
    op: 'upsert',
    id,
    uri: 'gs://iss-images/photos/cat.jpg',
    bucket: 'iss-images',
    name: 'photos/cat.jpg',
    generation,
    modelVersion: 'm1',
    vector: [0.6, 0.8, 0, 0],
    metadata: { labels: ['cat'], contentType: 'image/jpeg', size: 10, eventTime: '2025-03-01T10:00:00Z' },
    ...overrides,
  };
}

let fn: (event: unknown) => Promise<UpsertVectorsResult>;
let setDeps: typeof import('../../functions/upsert-vectors.js').setDepsForTesting;
let bus: RecordingBus;
let index: MemoryIndex | null;
let liveFails: Error | null;
let rejections: MemoryRejections;
const shardRows = new Map<string, Float32Array[]>();

beforeAll(async () => {
  ({ setDepsForTesting: setDeps } = await import('../../functions/upsert-vectors.js'));
  fn = getFunction('upsertVectors') as unknown as typeof fn;
});

beforeEach(() => {
  bus = new RecordingBus();
  index = new MemoryIndex('images-v1', 'm1', 4);
  liveFails = null;
  rejections = new MemoryRejections();
  setDeps({
    liveIndex: async () => {
      if (liveFails) throw liveFails;
      return index;
    },
    bus,
    rejections,
    logger: captureLogger().logger,
    readShardRow: async (shard, row) => {
      const v = shardRows.get(shard)?.[row];
      if (!v) throw new Error(`no row ${row} in ${shard}`);
      return v;
    },
  });
});

describe('upsertVectors (registered with the Functions Framework)', () => {
  it('writes the vector into the live index and acks (returns)', async () => {
    await expect(fn(pubsubEvent(upsertMessage('100')))).resolves.toEqual({ status: 'done', outcome: 'created' });
    expect((await index!.get(id))!.generation).toBe('100');
    expect(rejections.cleared).toEqual([{ id, generation: '100' }]);
  });

  it('an older generation arriving late is stale and acked, never overwriting the newer one', async () => {
    await fn(pubsubEvent(upsertMessage('200')));
    await expect(fn(pubsubEvent(upsertMessage('100')))).resolves.toEqual({ status: 'done', outcome: 'stale' });
    expect((await index!.get(id))!.generation).toBe('200');
  });

  it('resolves vectors sent by reference to a shard', async () => {
    shardRows.set('embeddings/shards/s1.f32', [Float32Array.from([0, 0, 1, 0]), Float32Array.from([1, 0, 0, 0])]);
    const { vector: _v, ...byRef } = upsertMessage('300');
    await fn(pubsubEvent({ ...byRef, vectorRef: { shard: 'embeddings/shards/s1.f32', row: 1 } }));
    expect(Array.from((await index!.get(id))!.vector)).toEqual([1, 0, 0, 0]);
  });

  it('throws when OpenSearch fails, so Pub/Sub redelivers; nothing is dead-lettered', async () => {
    index!.failWith = new Error('connect ECONNREFUSED 10.0.0.5:9200');
    await expect(fn(pubsubEvent(upsertMessage('100')))).rejects.toThrow(/ECONNREFUSED/);
    liveFails = new Error('getaddrinfo ENOTFOUND opensearch');
    await expect(fn(pubsubEvent(upsertMessage('100')))).rejects.toThrow(/OpenSearch is unreachable.*ENOTFOUND/);
    index = null;
    liveFails = null;
    await expect(fn(pubsubEvent(upsertMessage('100')))).rejects.toThrow(/no live index/);
    expect(bus.published).toEqual([]);
  });

  it('dead-letters a malformed message with the reason (derived topic <topic>-dead-letter) and returns', async () => {
    const result = await fn(pubsubEvent({ op: 'upsert', id }, { attributes: { op: 'upsert', googSecret: 'x' } }));
    expect(result).toMatchObject({ status: 'dead-lettered', deadLetterTopic: DLQ });
    const [dead] = bus.on(DLQ);
    expect(dead!.attributes.reason).toMatch(/malformed embedding message: .*uri/);
    expect(dead!.attributes.sourceMessageId).toBe('11112222333344');
    expect(dead!.attributes.op).toBe('upsert');
    expect(dead!.attributes.googSecret).toBeUndefined();
    expect(dead!.data).toEqual({ op: 'upsert', id });
    expect(await index!.count()).toBe(0);
  });

  it('dead-letters a payload that is not JSON, and a wrong-dimension vector', async () => {
    await fn(pubsubEvent(null, { raw: 'not json at all' }));
    await fn(pubsubEvent(upsertMessage('1', { vector: [1, 0, 0] })));
    const reasons = bus.on(DLQ).map((d) => d.attributes.reason);
    expect(reasons[0]).toMatch(/malformed embedding message/);
    expect(reasons[1]).toMatch(/3 dimensions, the index expects 4/);
  });

  it('sends a vector of another model version back to image-events for re-embedding', async () => {
    await expect(fn(pubsubEvent(upsertMessage('5', { modelVersion: 'm0' })))).resolves.toEqual({ status: 'done', outcome: 'requeued' });
    const [requeued] = bus.on(TOPICS.imageEvents);
    expect(requeued!.data).toMatchObject({ name: 'photos/cat.jpg', generation: '5', eventType: 'finalize' });
    expect(await index!.count()).toBe(0);
  });

  it('applies deletes by generation', async () => {
    await fn(pubsubEvent(upsertMessage('10')));
    await expect(fn(pubsubEvent({ op: 'delete', id, uri: 'gs://iss-images/photos/cat.jpg', generation: '9' }))).resolves.toEqual({
      status: 'done',
      outcome: 'stale-delete',
    });
    await expect(fn(pubsubEvent({ op: 'delete', id, uri: 'gs://iss-images/photos/cat.jpg', generation: '10' }))).resolves.toEqual({
      status: 'done',
      outcome: 'deleted',
    });
    expect(await index!.count()).toBe(0);
  });
});

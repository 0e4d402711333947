import { getFunction } from '@google-cloud/functions-framework/testing';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { UpsertVectorsResult } from '../../functions/upsert-vectors.js';
import type { UpsertOutcome, VectorDocument } from '../../shared/ports/vector-index.js';
import { captureLogger, MemoryIndex, MemoryRejections, RecordingBus } from './functions-fakes.js';

/**
 * `upsertVectors` under concurrent Pub/Sub pushes (issue 15, item 6). Pub/Sub push sends one
 * message per HTTPS request and settles it by that request's status (cloud.google.com/pubsub/docs/push);
 * a Cloud Run functions instance serves up to its concurrency setting of requests at once
 * (cloud.google.com/run/docs/about-concurrency). The messages in flight on one instance share
 * index writes (one `_bulk` per batch), and each request still answers for its own message only.
 */
const SOURCE = '//pubsub.googleapis.com/projects/p1/topics/iss-embeddings';
const DLQ = 'projects/p1/topics/iss-embeddings-dead-letter';

let seq = 0;
function pushed(payload: unknown) {
  const messageId = String(++seq);
  return {
    specversion: '1.0',
    id: messageId,
    source: SOURCE,
    type: 'google.cloud.pubsub.topic.v1.messagePublished',
    time: '2025-03-01T10:00:05.000Z',
    datacontenttype: 'application/json',
    data: {
      message: {
        data: Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)).toString('base64'),
        attributes: {},
        messageId,
        publishTime: '2025-03-01T10:00:05.000Z',
      },
      subscription: 'projects/p1/subscriptions/iss-embeddings-upsert',
    },
  };
}
const upsertMessage = (id: string, generation = '100', vector = [0.6, 0.8, 0, 0]) => ({
  op: 'upsert',
  id,
  uri: `gs://iss-images/${id}.jpg`,
  bucket: 'iss-images',
  name: `${id}.jpg`,
  generation,
  modelVersion: 'm1',
  vector,
  metadata: { labels: [] },
});

/** An index that answers after a delay (a network round trip) and records each write. */
class SlowIndex extends MemoryIndex {
  readonly writes: string[][] = [];
  failIds = new Set<string>();
  override async upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]> {
    this.writes.push(docs.map((d) => d.id));
    await new Promise((r) => setTimeout(r, 20));
    return super.upsert(docs);
  }
}

let fn: (event: unknown) => Promise<UpsertVectorsResult>;
let setDeps: typeof import('../../functions/upsert-vectors.js').setDepsForTesting;
let index: SlowIndex;
let bus: RecordingBus;
let liveFails: Error | null;

beforeAll(async () => {
  ({ setDepsForTesting: setDeps } = await import('../../functions/upsert-vectors.js'));
  fn = getFunction('upsertVectors') as unknown as typeof fn;
});

beforeEach(() => {
  index = new SlowIndex('images-v1', 'm1', 4);
  bus = new RecordingBus();
  liveFails = null;
  setDeps({
    liveIndex: async () => {
      if (liveFails) throw liveFails;
      return index;
    },
    bus,
    rejections: new MemoryRejections(),
    logger: captureLogger().logger,
  });
});

describe('upsertVectors: concurrent pushes share index writes', () => {
  it('writes 60 messages in flight at once with a few index writes, each request answering for its own message', async () => {
    const ids = Array.from({ length: 60 }, (_, i) => `doc-${i}`);
    const results = await Promise.all(ids.map((id) => fn(pushed(upsertMessage(id)))));
    expect(results).toEqual(ids.map(() => ({ status: 'done', outcome: 'created' })));
    expect(await index.count()).toBe(60);
    // Today: one write per message (60). Batched: the first alone, the rest together.
    expect(index.writes.length).toBeLessThanOrEqual(3);
    expect(index.writes.flat().sort()).toEqual([...ids].sort());
  });

  it('keeps generation order whichever batch each version joins: the newer one is indexed, the older never overwrites it', async () => {
    // Both in one batch (behind a running write), in either order of arrival.
    const running = fn(pushed(upsertMessage('warm')));
    const [newer, older] = await Promise.all([fn(pushed(upsertMessage('x', '200', [0, 1, 0, 0]))), fn(pushed(upsertMessage('x', '100', [1, 0, 0, 0])))]);
    await running;
    expect(newer).toEqual({ status: 'done', outcome: 'created' });
    expect(older).toEqual({ status: 'done', outcome: 'stale' });
    expect(index.writes.find((w) => w.includes('x'))).toEqual(['x']);
    // The older one arriving later, alone.
    await expect(fn(pushed(upsertMessage('x', '150', [1, 0, 0, 0])))).resolves.toEqual({ status: 'done', outcome: 'stale' });
    expect(Array.from((await index.get('x'))!.vector)).toEqual([0, 1, 0, 0]);
    expect((await index.get('x'))!.generation).toBe('200');
  });

  it('dead-letters a malformed message alone; its batch-mates are written', async () => {
    const [bad, good] = await Promise.all([fn(pushed({ op: 'upsert', id: 'nope' })), fn(pushed(upsertMessage('fine')))]);
    expect(bad).toMatchObject({ status: 'dead-lettered', deadLetterTopic: DLQ });
    expect(good).toEqual({ status: 'done', outcome: 'created' });
    expect(bus.on(DLQ)).toHaveLength(1);
  });

  it('fails every waiting request when the index cannot be reached, so Pub/Sub redelivers each', async () => {
    liveFails = new Error('getaddrinfo ENOTFOUND opensearch');
    const settled = await Promise.allSettled(['a', 'b', 'c'].map((id) => fn(pushed(upsertMessage(id)))));
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const s of settled) expect(String((s as PromiseRejectedResult).reason)).toMatch(/OpenSearch is unreachable.*ENOTFOUND/);
    liveFails = null;
    await expect(fn(pushed(upsertMessage('a')))).resolves.toEqual({ status: 'done', outcome: 'created' });
  });

  it('fails only the request whose document the index refused', async () => {
    const failing = new (class extends SlowIndex {
      override async upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]> {
        const bad = docs.filter((d) => d.id === 'bad').map((d) => d.id);
        if (bad.length) {
          await super.upsert(docs.filter((d) => d.id !== 'bad'));
          const { AppError } = await import('../../shared/errors.js');
          throw new AppError('OpenSearch refused 1 upsert(s): bad (400 mapper_parsing_exception)', { meta: { ids: bad } });
        }
        return super.upsert(docs);
      }
    })('images-v1', 'm1', 4);
    index = failing;
    const settled = await Promise.allSettled(['ok-1', 'bad', 'ok-2'].map((id) => fn(pushed(upsertMessage(id)))));
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((settled[1] as PromiseRejectedResult).reason)).toMatch(/mapper_parsing_exception/);
  });
});

describe('UpsertBatcher (group commit)', () => {
  it('writes the first item at once, gathers those arriving meanwhile up to maxBatch, and answers each with its own result', async () => {
    const { UpsertBatcher } = await import('../../shared/services/upsert-batcher.js');
    const batches: number[][] = [];
    const batcher = new UpsertBatcher<number, number>(
      async (items) => {
        batches.push(items);
        await new Promise((r) => setTimeout(r, 10));
        return items.map((i) => i * 10);
      },
      { maxBatch: 4, maxConcurrentBatches: 1 },
    );
    const results = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((i) => batcher.submit(i)));
    expect(results).toEqual([10, 20, 30, 40, 50, 60, 70]);
    expect(batches).toEqual([[1], [2, 3, 4, 5], [6, 7]]);
  });

  it('fails every item of a batch whose write throws or answers the wrong number of results, and goes on with the next', async () => {
    const { UpsertBatcher } = await import('../../shared/services/upsert-batcher.js');
    let call = 0;
    const batcher = new UpsertBatcher<string, string>(
      async (items) => {
        call += 1;
        if (call === 1) throw new Error('index down');
        if (call === 2) return [];
        return items;
      },
      { maxBatch: 10, maxConcurrentBatches: 1 },
    );
    await expect(batcher.submit('a')).rejects.toThrow('index down');
    await expect(batcher.submit('b')).rejects.toThrow(/answered 0 results for 1 items/);
    await expect(batcher.submit('c')).resolves.toBe('c');
  });

  it('refuses a batch size or concurrency that is not a whole number ≥ 1', async () => {
    const { UpsertBatcher } = await import('../../shared/services/upsert-batcher.js');
    const write = async (items: number[]) => items;
    expect(() => new UpsertBatcher(write, { maxBatch: 0, maxConcurrentBatches: 1 })).toThrow(/maxBatch must be a whole number ≥ 1, got 0/);
    expect(() => new UpsertBatcher(write, { maxBatch: 5, maxConcurrentBatches: 1.5 })).toThrow(/maxConcurrentBatches must be a whole number ≥ 1, got 1.5/);
  });
});

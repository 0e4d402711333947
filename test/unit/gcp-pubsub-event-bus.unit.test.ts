import { PubSub, v1 } from '@google-cloud/pubsub';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PubSubEventBus } from '../../shared/adapters/gcp/pubsub-event-bus.js';
import { withLeaseExtension } from '../../shared/adapters/lease-extension.js';
import { AppError, NotFoundError } from '../../shared/errors.js';

/**
 * The real PubSub and v1 clients, intercepted at their request methods: the publisher's gRPC
 * `publish` (reached through `pubsub.api.PublisherClient`, where the library keeps its gax client)
 * and the subscriber's `pull` / `acknowledge` / `modifyAckDeadline`. Assertions are on the exact
 * request objects the adapter sends.
 */
const PROJECT = 'test-project';
const SUB = `projects/${PROJECT}/subscriptions/iss-image-events-sub`;
const DLQ_SUB = `projects/${PROJECT}/subscriptions/iss-image-events-sub-dlq`;

type PublishRequest = { topic: string; messages: { data: Buffer; attributes?: Record<string, string> }[] };

let pubsub: PubSub;
let subscriber: v1.SubscriberClient;
let published: PublishRequest[];
let bus: PubSubEventBus;

function received(id: number, data: unknown, extra: { deliveryAttempt?: number; attributes?: Record<string, string> } = {}) {
  return {
    ackId: `ack-${id}`,
    deliveryAttempt: extra.deliveryAttempt ?? 0,
    message: {
      messageId: `m-${id}`,
      data: Buffer.from(typeof data === 'string' ? data : JSON.stringify(data)),
      attributes: extra.attributes ?? {},
      publishTime: { seconds: 1_700_000_000, nanos: 5_000_000 },
    },
  };
}

beforeEach(() => {
  pubsub = new PubSub({ projectId: PROJECT });
  subscriber = new v1.SubscriberClient({ projectId: PROJECT });
  published = [];
  const publisher = new v1.PublisherClient({ projectId: PROJECT });
  let next = 0;
  vi.spyOn(publisher, 'publish').mockImplementation(((req: PublishRequest, _opts: unknown, cb: (e: null, r: unknown) => void) => {
    published.push(req);
    cb(null, { messageIds: req.messages.map(() => `id-${(next += 1)}`) });
  }) as never);
  (pubsub.api as Record<string, unknown>).PublisherClient = publisher;
  bus = new PubSubEventBus({
    pubsub,
    v1Subscriber: subscriber,
    projectId: PROJECT,
    topicFor: (t) => `iss-${t}`,
    subscriptionFor: (t) => `iss-${t}-sub`,
    deadLetterTopicFor: (t) => `iss-${t}-dlq`,
    pullTimeoutMs: 2000,
  });
});

afterEach(() => {
  vi.restoreAllMocks();
});

describe('PubSubEventBus at the SDK request boundary', () => {
  it('publishes JSON data with attributes to the mapped topic, one request for a batch', async () => {
    const ids = await bus.publishBatch('image-events', [
      { data: { name: 'a.jpg', generation: '1' }, attributes: { eventType: 'finalize' } },
      { data: { name: 'b.jpg', generation: '2' } },
    ]);
    expect(ids).toEqual(['id-1', 'id-2']);
    expect(published).toHaveLength(1);
    expect(published[0]!.topic).toBe(`projects/${PROJECT}/topics/iss-image-events`);
    expect(published[0]!.messages.map((m) => JSON.parse(Buffer.from(m.data).toString()))).toEqual([
      { name: 'a.jpg', generation: '1' },
      { name: 'b.jpg', generation: '2' },
    ]);
    expect(published[0]!.messages[0]!.attributes).toEqual({ eventType: 'finalize' });
    expect(await bus.publish('embeddings', { op: 'delete' })).toBe('id-3');
    expect(published[1]!.topic).toBe(`projects/${PROJECT}/topics/iss-embeddings`);
  });

  it('a failed publish rejects (and a failed dead-letter publish does not ack the original)', async () => {
    const publisher = (pubsub.api as unknown as Record<string, v1.PublisherClient>).PublisherClient!;
    vi.mocked(publisher.publish).mockImplementation(((_req: unknown, _opts: unknown, cb: (e: Error) => void) =>
      cb(Object.assign(new Error('topic not found'), { code: 5 }))) as never);
    await expect(bus.publish('image-events', { a: 1 })).rejects.toThrow(/topic not found/);
    vi.spyOn(subscriber, 'pull').mockResolvedValue([{ receivedMessages: [received(1, {})] }] as never);
    const ack = vi.spyOn(subscriber, 'acknowledge').mockResolvedValue([{}] as never);
    await bus.pull('image-events', { maxMessages: 1 });
    await expect(bus.deadLetter('image-events', ['ack-1'], 'bad')).rejects.toThrow(/topic not found/);
    expect(ack).not.toHaveBeenCalled();
  });

  it('refuses non-JSON data and non-string attributes before any request', async () => {
    await expect(bus.publish('image-events', undefined)).rejects.toThrow(/JSON-serialisable/);
    await expect(bus.publish('image-events', {}, { n: 1 as unknown as string })).rejects.toThrow(/attribute "n" must be a string/);
    expect(published).toHaveLength(0);
  });

  it('pulls synchronously with maxMessages, decodes JSON, defaults deliveryAttempt to 1, sets the ack deadline', async () => {
    const pull = vi
      .spyOn(subscriber, 'pull')
      .mockResolvedValue([
        { receivedMessages: [received(1, { a: 1 }, { attributes: { k: 'v' } }), received(2, 'not json{', { deliveryAttempt: 3 })] },
      ] as never);
    const modify = vi.spyOn(subscriber, 'modifyAckDeadline').mockResolvedValue([{}] as never);
    const deliveries = await bus.pull('image-events', { maxMessages: 50, ackDeadlineSeconds: 120 });
    expect(pull).toHaveBeenCalledWith({ subscription: SUB, maxMessages: 50 }, { timeout: 2000 });
    expect(deliveries).toEqual([
      { ackId: 'ack-1', messageId: 'm-1', data: { a: 1 }, attributes: { k: 'v' }, deliveryAttempt: 1, publishTime: '2023-11-14T22:13:20.005Z' },
      { ackId: 'ack-2', messageId: 'm-2', data: 'not json{', attributes: {}, deliveryAttempt: 3, publishTime: '2023-11-14T22:13:20.005Z' },
    ]);
    expect(modify).toHaveBeenCalledWith({ subscription: SUB, ackIds: ['ack-1', 'ack-2'], ackDeadlineSeconds: 120 });
    expect((await bus.stats('image-events')).inflight).toBe(2);
  });

  it('treats a pull deadline with no message as an empty batch, and rethrows other errors', async () => {
    const pull = vi.spyOn(subscriber, 'pull');
    pull.mockRejectedValueOnce(Object.assign(new Error('Deadline exceeded'), { code: 4 }));
    expect(await bus.pull('image-events', { maxMessages: 10 })).toEqual([]);
    pull.mockRejectedValueOnce(Object.assign(new Error('permission denied'), { code: 7 }));
    await expect(bus.pull('image-events', { maxMessages: 10 })).rejects.toThrow(/permission denied/);
    await expect(bus.pull('image-events', { maxMessages: 0 })).rejects.toThrow(/maxMessages must be an integer from 1 to 1000/);
    await expect(bus.pull('image-events', { maxMessages: 1, ackDeadlineSeconds: 601 })).rejects.toThrow(/0 to 600/);
  });

  it('acks with acknowledge, nacks with a zero deadline, extends with modifyAckDeadline', async () => {
    vi.spyOn(subscriber, 'pull').mockResolvedValue([{ receivedMessages: [received(1, {}), received(2, {})] }] as never);
    const ack = vi.spyOn(subscriber, 'acknowledge').mockResolvedValue([{}] as never);
    const modify = vi.spyOn(subscriber, 'modifyAckDeadline').mockResolvedValue([{}] as never);
    await bus.pull('image-events', { maxMessages: 2 });
    await bus.extendDeadline('image-events', ['ack-1', 'ack-2'], 60);
    await bus.ack('image-events', ['ack-1']);
    await bus.nack('image-events', ['ack-2'], 'model not ready');
    expect(modify.mock.calls.map((c) => c[0])).toEqual([
      { subscription: SUB, ackIds: ['ack-1', 'ack-2'], ackDeadlineSeconds: 60 },
      { subscription: SUB, ackIds: ['ack-2'], ackDeadlineSeconds: 0 },
    ]);
    expect(ack).toHaveBeenCalledWith({ subscription: SUB, ackIds: ['ack-1'] });
    expect(await bus.stats('image-events')).toEqual({ ready: -1, inflight: 0, deadLettered: -1 });
    await expect(bus.extendDeadline('image-events', ['x'], 1.5)).rejects.toThrow(AppError);
  });

  it('dead-letters: publishes the original bytes to the DLQ topic with a reason, then acks', async () => {
    vi.spyOn(subscriber, 'pull').mockResolvedValue([
      { receivedMessages: [received(7, { bad: true }, { deliveryAttempt: 2, attributes: { eventType: 'finalize' } })] },
    ] as never);
    const ack = vi.spyOn(subscriber, 'acknowledge').mockResolvedValue([{}] as never);
    await bus.pull('image-events', { maxMessages: 1 });
    await bus.deadLetter('image-events', ['ack-7'], 'invalid-event: name missing');
    expect(published).toHaveLength(1);
    expect(published[0]!.topic).toBe(`projects/${PROJECT}/topics/iss-image-events-dlq`);
    const [message] = published[0]!.messages;
    expect(Buffer.from(message!.data).toString()).toBe('{"bad":true}');
    expect(message!.attributes).toMatchObject({
      eventType: 'finalize',
      reason: 'invalid-event: name missing',
      deliveryAttempt: '2',
      sourceMessageId: 'm-7',
      sourceSubscription: SUB,
    });
    expect(ack).toHaveBeenCalledWith({ subscription: SUB, ackIds: ['ack-7'] });
    await expect(bus.deadLetter('image-events', ['ack-7'], 'again')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('lists dead letters by peeking at <subscription>-dlq and nacking them back', async () => {
    const pull = vi.spyOn(subscriber, 'pull').mockResolvedValue([
      {
        receivedMessages: [
          received(
            1,
            { x: 1 },
            { attributes: { reason: 'corrupt', deliveryAttempt: '1', sourceMessageId: 'orig-1', deadLetteredAt: '2024-01-01T00:00:00.000Z' } },
          ),
          received(2, { x: 2 }, { attributes: { CloudPubSubDeadLetterSourceDeliveryCount: '5' } }),
        ],
      },
    ] as never);
    const modify = vi.spyOn(subscriber, 'modifyAckDeadline').mockResolvedValue([{}] as never);
    const letters = await bus.listDeadLetters('image-events', 10);
    expect(pull).toHaveBeenCalledWith({ subscription: DLQ_SUB, maxMessages: 10 }, { timeout: 2000 });
    expect(modify).toHaveBeenCalledWith({ subscription: DLQ_SUB, ackIds: ['ack-1', 'ack-2'], ackDeadlineSeconds: 0 });
    expect(letters[0]).toMatchObject({ messageId: 'orig-1', data: { x: 1 }, reason: 'corrupt', deliveryAttempt: 1, at: '2024-01-01T00:00:00.000Z' });
    expect(letters[1]).toMatchObject({ messageId: 'm-2', reason: 'max delivery attempts reached (5)', deliveryAttempt: 5 });
  });

  it('keeps a lease extended while a batch is embedded (withLeaseExtension)', async () => {
    vi.useFakeTimers();
    try {
      const modify = vi.spyOn(subscriber, 'modifyAckDeadline').mockResolvedValue([{}] as never);
      let finish!: () => void;
      const running = withLeaseExtension(bus, 'image-events', ['a', 'b'], 60, () => new Promise<string>((r) => (finish = () => r('done'))));
      await vi.advanceTimersByTimeAsync(29_000);
      expect(modify).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1_000);
      expect(modify).toHaveBeenCalledTimes(1);
      expect(modify).toHaveBeenLastCalledWith({ subscription: SUB, ackIds: ['a', 'b'], ackDeadlineSeconds: 60 });
      await vi.advanceTimersByTimeAsync(60_000);
      expect(modify).toHaveBeenCalledTimes(3);
      finish();
      expect(await running).toBe('done');
      await vi.advanceTimersByTimeAsync(120_000);
      expect(modify).toHaveBeenCalledTimes(3);
    } finally {
      vi.useRealTimers();
    }
  });

  it('withLeaseExtension survives a failed extension and propagates the work error', async () => {
    vi.useFakeTimers();
    try {
      const extend = vi.fn().mockRejectedValueOnce(new Error('unavailable')).mockResolvedValue(undefined);
      let fail!: (e: Error) => void;
      const running = withLeaseExtension({ extendDeadline: extend }, 't', ['a'], 10, () => new Promise((_, rej) => (fail = rej)));
      const settled = running.catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(extend).toHaveBeenCalledTimes(2);
      fail(new Error('embedding failed'));
      expect(await settled).toMatchObject({ message: 'embedding failed' });
      await expect(withLeaseExtension({ extendDeadline: extend }, 't', ['a'], 0, async () => 1)).rejects.toThrow(/between 2 and 600/);
    } finally {
      vi.useRealTimers();
    }
  });
});

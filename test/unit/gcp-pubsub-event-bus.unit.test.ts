import { PubSub, v1 } from '@google-cloud/pubsub';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildStack, ofType, TEST_PROJECT, type RecordedResource } from '../../infra/testing/mocks.js';
import { PubSubEventBus } from '../../shared/adapters/gcp/pubsub-event-bus.js';
import { deadLetterInboxOf, deadLetterTopicOf } from '../../shared/adapters/gcp/pubsub-names.js';
import { withLeaseExtension } from '../../shared/adapters/lease-extension.js';
import { TOPICS } from '../../shared/contracts.js';
import { AppError, NotFoundError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import { cloudEventBus } from '../../shared/wiring/cloud.js';

/**
 * The real PubSub and v1 clients, intercepted at their request methods (the publisher's gRPC
 * `publish`, reached through `pubsub.api.PublisherClient` where the library keeps its gax client,
 * and the subscriber's `pull` / `acknowledge` / `modifyAckDeadline`), answered by a double of the
 * Pub/Sub service that holds the rules of its RPC reference
 * (cloud.google.com/pubsub/docs/reference/rpc/google.pubsub.v1):
 *  - only existing topics and subscriptions: anything else answers NOT_FOUND (gRPC code 5);
 *  - a subscription's ack deadline is 10 to 600 s; ModifyAckDeadline takes 0 to 600 s (0 = redeliver);
 *  - ack ids are only those the subscription delivered (INVALID_ARGUMENT, code 3, otherwise);
 *  - a pull may answer no message at all; maxMessages must be positive;
 *  - with a dead-letter policy, `deliveryAttempt` counts deliveries and a message delivered
 *    `maxDeliveryAttempts` times is forwarded to the dead-letter topic with the
 *    `CloudPubSubDeadLetterSource*` attributes; without one, `deliveryAttempt` is 0.
 * Its topics and subscriptions are the ones the Pulumi program creates (infra/testing/mocks.ts),
 * so the adapter is proven against the names the stack deploys, not names this test makes up.
 */
const STACK_TOPIC = 'iss-image-events';
const STACK_DEAD_LETTER_TOPIC = 'iss-image-events-dead-letter';
const SUB = `projects/${TEST_PROJECT}/subscriptions/iss-image-events-embed`;
const INBOX = `projects/${TEST_PROJECT}/subscriptions/iss-image-events-dead-letter-inbox`;
const topicPath = (id: string) => `projects/${TEST_PROJECT}/topics/${id}`;
/** The clock of the double: every message is published at 2023-11-14T22:13:20.005Z. */
const PUBLISH_TIME = { seconds: 1_700_000_000, nanos: 5_000_000 };

type PublishRequest = { topic: string; messages: { data: Buffer; attributes?: Record<string, string> }[] };
type Callback = (err: Error | null, response?: unknown) => void;

function grpcError(code: 3 | 5, status: string, details: string): Error {
  return Object.assign(new Error(`${code} ${status}: ${details}`), { code, details });
}

interface StoredMessage {
  messageId: string;
  data: Buffer;
  attributes: Record<string, string>;
  deliveries: number;
}

interface SubscriptionState {
  topic: string;
  ackDeadlineSeconds: number;
  deadLetterPolicy?: { deadLetterTopic: string; maxDeliveryAttempts: number };
  ready: StoredMessage[];
  outstanding: Map<string, StoredMessage>;
  issued: Set<string>;
}

class PubSubService {
  readonly topics = new Set<string>();
  readonly subscriptions = new Map<string, SubscriptionState>();
  readonly publishRequests: PublishRequest[] = [];
  private nextMessageId = 0;
  private nextAckId = 0;

  /** The topics and subscriptions the stack creates, with their ack deadlines and dead-letter policies. */
  static fromStack(stack: RecordedResource[]): PubSubService {
    const service = new PubSubService();
    for (const t of ofType(stack, 'gcp:pubsub/topic:Topic')) service.createTopic(topicPath(t.inputs.name));
    for (const s of ofType(stack, 'gcp:pubsub/subscription:Subscription')) {
      service.createSubscription(`projects/${TEST_PROJECT}/subscriptions/${s.inputs.name}`, s.inputs.topic, {
        ackDeadlineSeconds: s.inputs.ackDeadlineSeconds,
        deadLetterPolicy: s.inputs.deadLetterPolicy,
      });
    }
    return service;
  }

  createTopic(name: string): void {
    this.topics.add(name);
  }

  deleteTopic(name: string): void {
    this.topics.delete(name);
  }

  createSubscription(name: string, topic: string, options: Partial<Pick<SubscriptionState, 'ackDeadlineSeconds' | 'deadLetterPolicy'>> = {}): void {
    if (!this.topics.has(topic)) throw grpcError(5, 'NOT_FOUND', `Resource not found (resource=${topic}).`);
    const ackDeadlineSeconds = options.ackDeadlineSeconds ?? 10;
    if (!Number.isInteger(ackDeadlineSeconds) || ackDeadlineSeconds < 10 || ackDeadlineSeconds > 600) {
      throw grpcError(3, 'INVALID_ARGUMENT', `Invalid ack deadline given: ${ackDeadlineSeconds}`);
    }
    this.subscriptions.set(name, {
      topic,
      ackDeadlineSeconds,
      deadLetterPolicy: options.deadLetterPolicy,
      ready: [],
      outstanding: new Map(),
      issued: new Set(),
    });
  }

  publish(request: PublishRequest): { messageIds: string[] } {
    this.publishRequests.push(request);
    if (!this.topics.has(request.topic)) throw grpcError(5, 'NOT_FOUND', `Resource not found (resource=${request.topic}).`);
    return { messageIds: request.messages.map((m) => this.deliver(request.topic, Buffer.from(m.data), { ...(m.attributes ?? {}) })) };
  }

  pull(request: { subscription: string; maxMessages: number }) {
    const sub = this.subscription(request.subscription);
    if (!(request.maxMessages > 0)) throw grpcError(3, 'INVALID_ARGUMENT', 'max_messages must be positive');
    const receivedMessages = [];
    while (receivedMessages.length < request.maxMessages && sub.ready.length > 0) {
      const message = sub.ready.shift()!;
      const policy = sub.deadLetterPolicy;
      if (policy && message.deliveries >= policy.maxDeliveryAttempts) {
        this.forwardToDeadLetterTopic(request.subscription, policy.deadLetterTopic, message);
        continue;
      }
      message.deliveries += 1;
      const ackId = `${request.subscription.split('/').pop()}-ack-${(this.nextAckId += 1)}`;
      sub.outstanding.set(ackId, message);
      sub.issued.add(ackId);
      receivedMessages.push({
        ackId,
        deliveryAttempt: policy ? message.deliveries : 0,
        message: { messageId: message.messageId, data: message.data, attributes: message.attributes, publishTime: PUBLISH_TIME },
      });
    }
    return { receivedMessages };
  }

  acknowledge(request: { subscription: string; ackIds: string[] }): object {
    const sub = this.subscription(request.subscription);
    this.checkAckIds(sub, request.ackIds);
    for (const id of request.ackIds) sub.outstanding.delete(id);
    return {};
  }

  modifyAckDeadline(request: { subscription: string; ackIds: string[]; ackDeadlineSeconds: number }): object {
    const sub = this.subscription(request.subscription);
    const seconds = request.ackDeadlineSeconds;
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > 600) {
      throw grpcError(3, 'INVALID_ARGUMENT', `Invalid ack deadline given: ${seconds}`);
    }
    this.checkAckIds(sub, request.ackIds);
    if (seconds === 0) {
      for (const id of request.ackIds) {
        const message = sub.outstanding.get(id);
        if (message) sub.ready.push(message);
        sub.outstanding.delete(id);
      }
    }
    return {};
  }

  /** Messages of a subscription not acknowledged yet (waiting or leased). */
  unacked(subscription: string): number {
    const sub = this.subscription(subscription);
    return sub.ready.length + sub.outstanding.size;
  }

  /** Routes the SDK clients' request methods here (the publisher kept in `pubsub.api`, every v1 SubscriberClient). */
  attach(pubsub: PubSub): void {
    const publisher = new v1.PublisherClient({ projectId: TEST_PROJECT });
    vi.spyOn(publisher, 'publish').mockImplementation(((request: PublishRequest, _options: unknown, callback: Callback) => {
      try {
        callback(null, this.publish(request));
      } catch (err) {
        callback(err as Error);
      }
    }) as never);
    (pubsub.api as Record<string, unknown>).PublisherClient = publisher;
    const answer = (method: (request: never) => unknown) => async (request: never) => [method.call(this, request)];
    vi.spyOn(v1.SubscriberClient.prototype, 'pull').mockImplementation(answer(this.pull) as never);
    vi.spyOn(v1.SubscriberClient.prototype, 'acknowledge').mockImplementation(answer(this.acknowledge) as never);
    vi.spyOn(v1.SubscriberClient.prototype, 'modifyAckDeadline').mockImplementation(answer(this.modifyAckDeadline) as never);
  }

  private deliver(topic: string, data: Buffer, attributes: Record<string, string>): string {
    const messageId = String((this.nextMessageId += 1));
    for (const sub of this.subscriptions.values()) {
      if (sub.topic === topic) sub.ready.push({ messageId, data, attributes: { ...attributes }, deliveries: 0 });
    }
    return messageId;
  }

  private forwardToDeadLetterTopic(subscription: string, deadLetterTopic: string, message: StoredMessage): void {
    if (!this.topics.has(deadLetterTopic)) return;
    this.deliver(deadLetterTopic, message.data, {
      ...message.attributes,
      CloudPubSubDeadLetterSourceDeliveryCount: String(message.deliveries),
      CloudPubSubDeadLetterSourceSubscription: subscription.split('/').pop()!,
      CloudPubSubDeadLetterSourceSubscriptionProject: TEST_PROJECT,
    });
  }

  private subscription(name: string): SubscriptionState {
    const sub = this.subscriptions.get(name);
    if (!sub) throw grpcError(5, 'NOT_FOUND', `Resource not found (resource=${name}).`);
    return sub;
  }

  private checkAckIds(sub: SubscriptionState, ackIds: string[]): void {
    if (ackIds.length === 0 || ackIds.some((id) => !sub.issued.has(id))) {
      throw grpcError(3, 'INVALID_ARGUMENT', 'Some acknowledgement ids in the request were invalid.');
    }
  }
}

/** The bus as the embed job is configured: the stack's topic, subscription and dead-letter topic ids; the inbox by default. */
function busOptions(): ConstructorParameters<typeof PubSubEventBus>[0] {
  return {
    pubsub,
    v1Subscriber: subscriber,
    projectId: TEST_PROJECT,
    topicFor: (t) => `iss-${t}`,
    subscriptionFor: (t) => `iss-${t}-embed`,
    deadLetterTopicFor: (t) => `iss-${t}-dead-letter`,
    pullTimeoutMs: 2000,
  };
}

let stack: RecordedResource[];
let service: PubSubService;
let pubsub: PubSub;
let subscriber: v1.SubscriberClient;
let bus: PubSubEventBus;

beforeAll(async () => {
  stack = await buildStack({});
});

beforeEach(() => {
  service = PubSubService.fromStack(stack);
  pubsub = new PubSub({ projectId: TEST_PROJECT });
  service.attach(pubsub);
  subscriber = new v1.SubscriberClient({ projectId: TEST_PROJECT });
  bus = new PubSubEventBus(busOptions());
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** Publishes through the bus and pulls what arrived, as the embed job does. */
async function publishAndPull(count: number) {
  await bus.publishBatch(
    'image-events',
    Array.from({ length: count }, (_, i) => ({ data: { n: i + 1 } })),
  );
  return bus.pull('image-events', { maxMessages: count });
}

describe('the Pub/Sub double holds the documented rules', () => {
  it('answers NOT_FOUND for a topic or subscription that does not exist, INVALID_ARGUMENT for an ack id it never delivered', async () => {
    await expect(bus.publish('no-such-topic', { a: 1 })).rejects.toMatchObject({ code: 5 });
    await expect(subscriber.pull({ subscription: `${SUB}-dlq`, maxMessages: 1 })).rejects.toMatchObject({ code: 5 });
    await expect(subscriber.acknowledge({ subscription: SUB, ackIds: ['never-delivered'] })).rejects.toMatchObject({ code: 3 });
    await expect(subscriber.modifyAckDeadline({ subscription: SUB, ackIds: ['never-delivered'], ackDeadlineSeconds: 60 })).rejects.toMatchObject({ code: 3 });
    expect(() => service.createSubscription(`${SUB}-short`, topicPath(STACK_TOPIC), { ackDeadlineSeconds: 9 })).toThrow(/Invalid ack deadline/);
    expect(() => service.createSubscription(`${SUB}-long`, topicPath(STACK_TOPIC), { ackDeadlineSeconds: 601 })).toThrow(/Invalid ack deadline/);
  });
});

describe('PubSubEventBus at the SDK request boundary', () => {
  it('publishes JSON data with attributes to the mapped topic, one request for a batch', async () => {
    const ids = await bus.publishBatch('image-events', [
      { data: { name: 'a.jpg', generation: '1' }, attributes: { eventType: 'finalize' } },
      { data: { name: 'b.jpg', generation: '2' } },
    ]);
    expect(ids).toEqual(['1', '2']);
    const published = service.publishRequests;
    expect(published).toHaveLength(1);
    expect(published[0]!.topic).toBe(topicPath('iss-image-events'));
    expect(published[0]!.messages.map((m) => JSON.parse(Buffer.from(m.data).toString()))).toEqual([
      { name: 'a.jpg', generation: '1' },
      { name: 'b.jpg', generation: '2' },
    ]);
    expect(published[0]!.messages[0]!.attributes).toEqual({ eventType: 'finalize' });
    expect(await bus.publish('embeddings', { op: 'delete' })).toBe('3');
    expect(published[1]!.topic).toBe(topicPath('iss-embeddings'));
  });

  it('a failed publish rejects (and a failed dead-letter publish does not ack the original)', async () => {
    await expect(bus.publish('no-such-topic', { a: 1 })).rejects.toThrow(/NOT_FOUND/);
    const [delivery] = await publishAndPull(1);
    service.deleteTopic(topicPath(STACK_DEAD_LETTER_TOPIC));
    const ack = vi.mocked(subscriber.acknowledge);
    await expect(bus.deadLetter('image-events', [delivery!.ackId], 'bad')).rejects.toThrow(/NOT_FOUND/);
    expect(ack).not.toHaveBeenCalled();
    expect(service.unacked(SUB)).toBe(1);
  });

  it('refuses non-JSON data and non-string attributes before any request', async () => {
    await expect(bus.publish('image-events', undefined)).rejects.toThrow(/JSON-serialisable/);
    await expect(bus.publish('image-events', {}, { n: 1 as unknown as string })).rejects.toThrow(/attribute "n" must be a string/);
    expect(service.publishRequests).toHaveLength(0);
  });

  it('pulls synchronously with maxMessages, decodes JSON (text when not JSON), sets the ack deadline', async () => {
    await bus.publish('image-events', { a: 1 }, { k: 'v' });
    // Another publisher's payload that is not JSON.
    service.publish({ topic: topicPath(STACK_TOPIC), messages: [{ data: Buffer.from('not json{') }] });
    const deliveries = await bus.pull('image-events', { maxMessages: 50, ackDeadlineSeconds: 120 });
    expect(vi.mocked(subscriber.pull)).toHaveBeenCalledWith({ subscription: SUB, maxMessages: 50 }, { timeout: 2000 });
    expect(deliveries.map(({ ackId: _ackId, ...rest }) => rest)).toEqual([
      { messageId: '1', data: { a: 1 }, attributes: { k: 'v' }, deliveryAttempt: 1, publishTime: '2023-11-14T22:13:20.005Z' },
      { messageId: '2', data: 'not json{', attributes: {}, deliveryAttempt: 1, publishTime: '2023-11-14T22:13:20.005Z' },
    ]);
    expect(vi.mocked(subscriber.modifyAckDeadline)).toHaveBeenCalledWith({
      subscription: SUB,
      ackIds: deliveries.map((d) => d.ackId),
      ackDeadlineSeconds: 120,
    });
    expect((await bus.stats('image-events')).inflight).toBe(2);
  });

  it('reports the delivery attempt Pub/Sub counts, and 1 where the subscription has no dead-letter policy (Pub/Sub says 0)', async () => {
    const [first] = await publishAndPull(1);
    await bus.nack('image-events', [first!.ackId]);
    const [second] = await bus.pull('image-events', { maxMessages: 1 });
    expect(second).toMatchObject({ messageId: first!.messageId, deliveryAttempt: 2 });

    service.createSubscription(`projects/${TEST_PROJECT}/subscriptions/iss-image-events-plain`, topicPath(STACK_TOPIC));
    const plain = new PubSubEventBus({ ...busOptions(), subscriptionFor: () => 'iss-image-events-plain' });
    await plain.publish('image-events', { n: 2 });
    expect(await plain.pull('image-events', { maxMessages: 1 })).toMatchObject([{ data: { n: 2 }, deliveryAttempt: 1 }]);
  });

  it('answers an empty pull with no delivery, treats a pull deadline as an empty batch, and rethrows other errors', async () => {
    expect(await bus.pull('image-events', { maxMessages: 10 })).toEqual([]);
    const pull = vi.mocked(subscriber.pull);
    pull.mockRejectedValueOnce(Object.assign(new Error('Deadline exceeded'), { code: 4 }));
    expect(await bus.pull('image-events', { maxMessages: 10 })).toEqual([]);
    pull.mockRejectedValueOnce(Object.assign(new Error('permission denied'), { code: 7 }));
    await expect(bus.pull('image-events', { maxMessages: 10 })).rejects.toThrow(/permission denied/);
    await expect(bus.pull('retrain-requests', { maxMessages: 10 })).rejects.toMatchObject({ code: 5 });
    await expect(bus.pull('image-events', { maxMessages: 0 })).rejects.toThrow(/maxMessages must be an integer from 1 to 1000/);
    await expect(bus.pull('image-events', { maxMessages: 1, ackDeadlineSeconds: 601 })).rejects.toThrow(/0 to 600/);
  });

  it('acks with acknowledge, nacks with a zero deadline, extends with modifyAckDeadline', async () => {
    const [one, two] = await publishAndPull(2);
    const ack = vi.mocked(subscriber.acknowledge);
    const modify = vi.mocked(subscriber.modifyAckDeadline);
    await bus.extendDeadline('image-events', [one!.ackId, two!.ackId], 60);
    await bus.ack('image-events', [one!.ackId]);
    await bus.nack('image-events', [two!.ackId], 'model not ready');
    expect(modify.mock.calls.map((c) => c[0])).toEqual([
      { subscription: SUB, ackIds: [one!.ackId, two!.ackId], ackDeadlineSeconds: 60 },
      { subscription: SUB, ackIds: [two!.ackId], ackDeadlineSeconds: 0 },
    ]);
    expect(ack).toHaveBeenCalledWith({ subscription: SUB, ackIds: [one!.ackId] });
    expect(await bus.stats('image-events')).toEqual({ ready: -1, inflight: 0, deadLettered: -1 });
    // The nacked message is redelivered; the acked one is gone.
    expect((await bus.pull('image-events', { maxMessages: 10 })).map((d) => d.messageId)).toEqual([two!.messageId]);
    await expect(bus.extendDeadline('image-events', ['x'], 1.5)).rejects.toThrow(AppError);
  });

  it("dead-letters: publishes the original bytes to the stack's dead-letter topic with a reason, then acks", async () => {
    await bus.publish('image-events', { bad: true }, { eventType: 'finalize' });
    const [first] = await bus.pull('image-events', { maxMessages: 1 });
    await bus.nack('image-events', [first!.ackId]);
    const [delivery] = await bus.pull('image-events', { maxMessages: 1 });
    await bus.deadLetter('image-events', [delivery!.ackId], 'invalid-event: name missing');
    const dead = service.publishRequests.at(-1)!;
    expect(dead.topic).toBe(topicPath('iss-image-events-dead-letter'));
    const [message] = dead.messages;
    expect(Buffer.from(message!.data).toString()).toBe('{"bad":true}');
    expect(message!.attributes).toMatchObject({
      eventType: 'finalize',
      reason: 'invalid-event: name missing',
      deliveryAttempt: '2',
      sourceMessageId: '1',
      sourceSubscription: SUB,
    });
    expect(vi.mocked(subscriber.acknowledge)).toHaveBeenCalledWith({ subscription: SUB, ackIds: [delivery!.ackId] });
    expect(service.unacked(SUB)).toBe(0);
    expect(service.unacked(INBOX)).toBe(1);
    await expect(bus.deadLetter('image-events', [delivery!.ackId], 'again')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('lists dead letters by peeking at the inbox the stack creates (<topic>-dead-letter-inbox) and nacking them back', async () => {
    // One dead-lettered by the bus with a reason, one forwarded by Pub/Sub after 5 failed deliveries.
    const [bad] = await publishAndPull(1);
    await bus.deadLetter('image-events', [bad!.ackId], 'corrupt');
    await bus.publish('image-events', { x: 2 });
    for (let attempt = 1; attempt <= 5; attempt += 1) {
      const [d] = await bus.pull('image-events', { maxMessages: 1 });
      expect(d!.deliveryAttempt).toBe(attempt);
      await bus.nack('image-events', [d!.ackId]);
    }
    expect(await bus.pull('image-events', { maxMessages: 1 })).toEqual([]);

    const letters = await bus.listDeadLetters('image-events', 10);
    expect(vi.mocked(subscriber.pull)).toHaveBeenLastCalledWith({ subscription: INBOX, maxMessages: 10 }, { timeout: 2000 });
    expect(vi.mocked(subscriber.modifyAckDeadline)).toHaveBeenLastCalledWith({
      subscription: INBOX,
      ackIds: [expect.any(String), expect.any(String)],
      ackDeadlineSeconds: 0,
    });
    expect(letters).toHaveLength(2);
    expect(letters[0]).toMatchObject({ messageId: '1', data: { n: 1 }, reason: 'corrupt', deliveryAttempt: 1 });
    expect(letters[1]).toMatchObject({ data: { x: 2 }, reason: 'max delivery attempts reached (5)', deliveryAttempt: 5 });
    // A peek leaves them in the inbox.
    expect(service.unacked(INBOX)).toBe(2);
    expect(await bus.listDeadLetters('image-events', 10)).toHaveLength(2);
  });

  it("cloudEventBus, given the embed job's environment from the stack, reads dead letters from the stack's inbox", async () => {
    const job = ofType(stack, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-embed')!;
    const env = Object.fromEntries((job.inputs.template.template.containers[0].envs as { name: string; value?: string }[]).map((e) => [e.name, e.value]));
    const wired = cloudEventBus({
      projectId: env.GCP_PROJECT!,
      topics: { [TOPICS.imageEvents]: env.TOPIC_IMAGE_EVENTS! },
      subscriptions: { [TOPICS.imageEvents]: env.SUBSCRIPTION_IMAGE_EVENTS! },
      logger: silentLogger,
      pubsub,
    });
    await wired.publish(TOPICS.imageEvents, { name: 'a.jpg' });
    const [delivery] = await wired.pull(TOPICS.imageEvents, { maxMessages: 1 });
    await wired.deadLetter(TOPICS.imageEvents, [delivery!.ackId], 'undecodable image');
    expect(await wired.listDeadLetters(TOPICS.imageEvents, 10)).toMatchObject([{ data: { name: 'a.jpg' }, reason: 'undecodable image' }]);
    expect(vi.mocked(v1.SubscriberClient.prototype.pull)).toHaveBeenLastCalledWith({ subscription: INBOX, maxMessages: 10 }, expect.anything());
    await wired.close();
  });

  it('names the dead-letter topic and inbox of a full topic name in full (a full name is a valid TOPIC_* setting)', async () => {
    expect(deadLetterTopicOf('projects/p1/topics/iss-embeddings')).toBe('projects/p1/topics/iss-embeddings-dead-letter');
    expect(deadLetterInboxOf('projects/p1/topics/iss-embeddings')).toBe('projects/p1/subscriptions/iss-embeddings-dead-letter-inbox');
    const wired = cloudEventBus({ projectId: TEST_PROJECT, topics: { [TOPICS.imageEvents]: topicPath(STACK_TOPIC) }, logger: silentLogger, pubsub });
    expect(await wired.listDeadLetters(TOPICS.imageEvents, 10)).toEqual([]);
    expect(vi.mocked(v1.SubscriberClient.prototype.pull)).toHaveBeenLastCalledWith({ subscription: INBOX, maxMessages: 10 }, expect.anything());
    await wired.close();
  });

  it('keeps a lease extended while a batch is embedded (withLeaseExtension)', async () => {
    const ackIds = (await publishAndPull(2)).map((d) => d.ackId);
    const modify = vi.mocked(subscriber.modifyAckDeadline);
    modify.mockClear();
    vi.useFakeTimers();
    try {
      let finish!: () => void;
      const running = withLeaseExtension(bus, 'image-events', ackIds, 60, () => new Promise<string>((r) => (finish = () => r('done'))));
      await vi.advanceTimersByTimeAsync(29_000);
      expect(modify).not.toHaveBeenCalled();
      await vi.advanceTimersByTimeAsync(1_000);
      expect(modify).toHaveBeenCalledTimes(1);
      expect(modify).toHaveBeenLastCalledWith({ subscription: SUB, ackIds, ackDeadlineSeconds: 60 });
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

import type { protos, PubSub, Topic } from '@google-cloud/pubsub';
import { v1 } from '@google-cloud/pubsub';
import { AppError, NotFoundError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { DeadLetter, Delivery, EventBus, TopicStats } from '../../ports/event-bus.js';
import { GrpcCode, httpStatusOf } from './gcp-errors.js';
import { deadLetterInboxOf } from './pubsub-names.js';
import { truncateUtf8 } from '../../text/utf8.js';

type ReceivedMessage = protos.google.pubsub.v1.IReceivedMessage;
type Timestamp = protos.google.protobuf.ITimestamp;

export interface PubSubEventBusOptions {
  /** Publishing client (batches and retries publishes). */
  pubsub: PubSub;
  /** Synchronous pull / ack / modifyAckDeadline. Created from `pubsub`'s configuration when omitted. */
  v1Subscriber?: v1.SubscriberClient;
  projectId: string;
  /** Port topic (`image-events`) → Pub/Sub topic id or full `projects/…/topics/…` name. */
  topicFor(topic: string): string;
  /** Port topic → the subscription this process pulls from (id or full name). */
  subscriptionFor(topic: string): string;
  /** Port topic → the dead-letter topic of that subscription (its dead-letter policy's topic). */
  deadLetterTopicFor(topic: string): string;
  /**
   * Port topic → the subscription on its dead-letter topic that `listDeadLetters` reads. Default:
   * the inbox the stack creates, `<topic>-dead-letter-inbox` of `topicFor(topic)` ({@link deadLetterInboxOf}).
   */
  deadLetterSubscriptionFor?(topic: string): string;
  /**
   * How long a pull waits for messages before answering "none" (ms). Pull is called without
   * `returnImmediately` (deprecated, and it makes Pub/Sub answer empty too often).
   */
  pullTimeoutMs?: number;
  /**
   * Number of undelivered messages for `stats().ready` (e.g. a Cloud Monitoring query of
   * `subscription/num_undelivered_messages`). Without it, `ready` and `deadLettered` are -1:
   * Pub/Sub has no cheap API for them.
   */
  backlog?(subscription: string): Promise<{ ready: number; deadLettered?: number }>;
  logger?: Logger;
}

/** What is remembered about a message this process pulled and has not settled yet. */
interface Lease {
  topic: string;
  messageId: string;
  data: Buffer;
  attributes: Record<string, string>;
  deliveryAttempt: number;
  leasedAt: number;
}

const MAX_PULL = 1000;
const MAX_IDS_PER_REQUEST = 1000;
const MAX_ATTRIBUTE_BYTES = 1024;
/** Leases older than this are forgotten (their deadline has long passed: Pub/Sub redelivers). */
const LEASE_MEMORY_MS = 60 * 60 * 1000;

/**
 * {@link EventBus} on Google Cloud Pub/Sub. Publishing goes through the high-level client (JSON
 * payload, string attributes, batched); consuming uses synchronous unary `pull` on the v1
 * SubscriberClient — what a batch job wants: take N messages, work, ack, exit — rather than the
 * streaming subscriber meant for long-running servers.
 *
 * Retries and dead-lettering after `maxDeliveryAttempts` are done by Pub/Sub itself (the
 * subscription's dead-letter policy, set in infra); `deliveryAttempt` is what Pub/Sub reports
 * (1 when the subscription has no dead-letter policy). Pub/Sub cannot carry a nack reason: it is
 * logged with the message id. `deadLetter()` publishes the message to the dead-letter topic itself
 * (attribute `reason`), then acks it.
 */
export class PubSubEventBus implements EventBus {
  private readonly options: PubSubEventBusOptions;
  private readonly logger: Logger;
  private readonly topics = new Map<string, Topic>();
  private readonly leases = new Map<string, Lease>();
  private subscriber?: Promise<v1.SubscriberClient>;
  private ownsSubscriber = false;

  constructor(options: PubSubEventBusOptions) {
    if (!options.projectId) throw new AppError('PubSubEventBus needs a projectId');
    this.options = options;
    this.logger = options.logger ?? silentLogger;
    if (options.v1Subscriber) this.subscriber = Promise.resolve(options.v1Subscriber);
  }

  async publish(topic: string, data: unknown, attributes: Record<string, string> = {}): Promise<string> {
    const [id] = await this.publishBatch(topic, [{ data, attributes }]);
    return id!;
  }

  async publishBatch(topic: string, items: { data: unknown; attributes?: Record<string, string> }[]): Promise<string[]> {
    if (items.length === 0) return [];
    const messages = items.map((item, i) => ({ data: encodeJson(item.data, i), attributes: checkAttributes(item.attributes ?? {}, i) }));
    const handle = this.topicHandle(this.options.topicFor(topic));
    // Flush sends now instead of waiting for the batching timer (the caller awaits the ids anyway);
    // awaiting both together means a failed publish rejects once, never as an unhandled rejection.
    const [ids] = await Promise.all([Promise.all(messages.map((m) => handle.publishMessage(m))), handle.flush()]);
    return ids;
  }

  async pull<T = unknown>(topic: string, options: { maxMessages: number; ackDeadlineSeconds?: number }): Promise<Delivery<T>[]> {
    const { maxMessages, ackDeadlineSeconds } = options;
    if (!Number.isInteger(maxMessages) || maxMessages < 1 || maxMessages > MAX_PULL) {
      throw new AppError(`maxMessages must be an integer from 1 to ${MAX_PULL}, got ${maxMessages}`);
    }
    if (ackDeadlineSeconds !== undefined) checkDeadline(ackDeadlineSeconds);
    const subscription = this.subscriptionPath(this.options.subscriptionFor(topic));
    const received = await this.pullFrom(subscription, maxMessages);
    this.forgetOldLeases();
    const deliveries = received.map((rm) => this.toDelivery<T>(topic, rm));
    if (ackDeadlineSeconds !== undefined && deliveries.length > 0) {
      await this.modifyDeadline(
        subscription,
        deliveries.map((d) => d.ackId),
        ackDeadlineSeconds,
      );
    }
    return deliveries;
  }

  async ack(topic: string, ackIds: string[]): Promise<void> {
    if (ackIds.length === 0) return;
    const subscription = this.subscriptionPath(this.options.subscriptionFor(topic));
    const client = await this.subscriberClient();
    for (const chunk of chunks(ackIds)) await client.acknowledge({ subscription, ackIds: chunk });
    for (const id of ackIds) this.leases.delete(id);
  }

  async nack(topic: string, ackIds: string[], reason?: string): Promise<void> {
    if (ackIds.length === 0) return;
    for (const id of ackIds) {
      const lease = this.leases.get(id);
      this.logger.info({ topic, messageId: lease?.messageId, deliveryAttempt: lease?.deliveryAttempt, reason }, 'message nacked');
    }
    // A nack is a zero ack deadline: Pub/Sub redelivers (and counts the attempt).
    await this.modifyDeadline(this.subscriptionPath(this.options.subscriptionFor(topic)), ackIds, 0);
    for (const id of ackIds) this.leases.delete(id);
  }

  async extendDeadline(topic: string, ackIds: string[], seconds: number): Promise<void> {
    checkDeadline(seconds);
    if (ackIds.length === 0) return;
    await this.modifyDeadline(this.subscriptionPath(this.options.subscriptionFor(topic)), ackIds, seconds);
  }

  async deadLetter(topic: string, ackIds: string[], reason: string): Promise<void> {
    if (ackIds.length === 0) return;
    const leases = ackIds.map((id) => {
      const lease = this.leases.get(id);
      if (!lease || lease.topic !== topic) {
        throw new NotFoundError(`Cannot dead-letter ackId ${id.slice(0, 24)}…: it was not pulled from ${topic} by this bus (or was already settled)`);
      }
      return lease;
    });
    const subscription = this.subscriptionPath(this.options.subscriptionFor(topic));
    const dlq = this.topicHandle(this.options.deadLetterTopicFor(topic));
    const at = new Date().toISOString();
    // Publish first, ack after: a crash in between duplicates a dead letter, never loses one.
    const published = Promise.all(
      leases.map((lease) =>
        dlq.publishMessage({
          data: lease.data,
          attributes: {
            ...lease.attributes,
            reason: truncateUtf8(reason, MAX_ATTRIBUTE_BYTES),
            deliveryAttempt: String(lease.deliveryAttempt),
            sourceMessageId: lease.messageId,
            sourceSubscription: subscription,
            deadLetteredAt: at,
          },
        }),
      ),
    );
    await Promise.all([published, dlq.flush()]);
    this.logger.warn({ topic, count: leases.length, reason }, 'messages dead-lettered');
    await this.ack(topic, ackIds);
  }

  /**
   * Peeks at the dead-letter subscription: pulls up to `limit` messages and nacks them at once so
   * they stay there. Both kinds are read: ours (attribute `reason`) and those Pub/Sub forwarded after
   * too many attempts (`CloudPubSubDeadLetterSource*` attributes; the reason is then only in logs).
   * A peek leases the messages for an instant, so two concurrent peeks may each see part of them.
   */
  async listDeadLetters(topic: string, limit = 100): Promise<DeadLetter[]> {
    const max = Math.min(Math.max(1, Math.floor(limit)), MAX_PULL);
    const inbox = this.options.deadLetterSubscriptionFor?.(topic) ?? deadLetterInboxOf(this.options.topicFor(topic));
    const subscription = this.subscriptionPath(inbox);
    const received = await this.pullFrom(subscription, max);
    if (received.length > 0)
      await this.modifyDeadline(
        subscription,
        received.map((rm) => rm.ackId ?? ''),
        0,
      );
    return received.map((rm) => {
      const attributes = { ...(rm.message?.attributes ?? {}) };
      const forwardedAttempts = attributes.CloudPubSubDeadLetterSourceDeliveryCount;
      return {
        messageId: attributes.sourceMessageId ?? rm.message?.messageId ?? '',
        data: decodeJson(toBuffer(rm.message?.data)),
        attributes,
        reason: attributes.reason ?? (forwardedAttempts ? `max delivery attempts reached (${forwardedAttempts})` : 'unknown'),
        deliveryAttempt: Number(attributes.deliveryAttempt ?? forwardedAttempts ?? 1),
        at: attributes.deadLetteredAt ?? timestampToIso(rm.message?.publishTime),
      };
    });
  }

  /**
   * `inflight` counts the messages this process holds. Pub/Sub has no cheap call for the backlog:
   * `ready` and `deadLettered` come from the `backlog` option, or are -1 (unknown).
   */
  async stats(topic: string): Promise<TopicStats> {
    const inflight = [...this.leases.values()].filter((l) => l.topic === topic).length;
    if (!this.options.backlog) return { ready: -1, inflight, deadLettered: -1 };
    const backlog = await this.options.backlog(this.subscriptionPath(this.options.subscriptionFor(topic)));
    return { ready: backlog.ready, inflight, deadLettered: backlog.deadLettered ?? -1 };
  }

  /** Sends pending publishes; closes the subscriber client only if this bus created it. */
  async close(): Promise<void> {
    await Promise.all([...this.topics.values()].map((t) => t.flush()));
    if (this.ownsSubscriber && this.subscriber) await (await this.subscriber).close();
    this.subscriber = undefined;
  }

  private topicHandle(name: string): Topic {
    let handle = this.topics.get(name);
    if (!handle) {
      handle = this.options.pubsub.topic(name);
      this.topics.set(name, handle);
    }
    return handle;
  }

  private subscriberClient(): Promise<v1.SubscriberClient> {
    if (!this.subscriber) {
      this.ownsSubscriber = true;
      // The same configuration the PubSub client hands its own v1 clients (project, endpoint, emulator).
      this.subscriber = this.options.pubsub
        .getClientConfig()
        .then((config) => new v1.SubscriberClient(config as ConstructorParameters<typeof v1.SubscriberClient>[0]));
    }
    return this.subscriber;
  }

  private subscriptionPath(name: string): string {
    return name.startsWith('projects/') ? name : `projects/${this.options.projectId}/subscriptions/${name}`;
  }

  private async pullFrom(subscription: string, maxMessages: number): Promise<ReceivedMessage[]> {
    const client = await this.subscriberClient();
    try {
      const [response] = await client.pull({ subscription, maxMessages }, { timeout: this.options.pullTimeoutMs ?? 10_000 });
      return response.receivedMessages ?? [];
    } catch (err) {
      // No message arrived before the deadline: that is an empty batch, not a failure.
      if (httpStatusOf(err) === GrpcCode.DEADLINE_EXCEEDED) return [];
      throw err;
    }
  }

  private async modifyDeadline(subscription: string, ackIds: string[], ackDeadlineSeconds: number): Promise<void> {
    const client = await this.subscriberClient();
    for (const chunk of chunks(ackIds)) await client.modifyAckDeadline({ subscription, ackIds: chunk, ackDeadlineSeconds });
  }

  private toDelivery<T>(topic: string, rm: ReceivedMessage): Delivery<T> {
    const data = toBuffer(rm.message?.data);
    const attributes = { ...(rm.message?.attributes ?? {}) };
    const messageId = rm.message?.messageId ?? '';
    const deliveryAttempt = rm.deliveryAttempt && rm.deliveryAttempt > 0 ? rm.deliveryAttempt : 1;
    const ackId = rm.ackId ?? '';
    this.leases.set(ackId, { topic, messageId, data, attributes, deliveryAttempt, leasedAt: Date.now() });
    return {
      ackId,
      messageId,
      // Not JSON: handed over as text so the handler's schema rejects it and dead-letters it.
      data: decodeJson(data) as T,
      attributes,
      deliveryAttempt,
      publishTime: timestampToIso(rm.message?.publishTime),
    };
  }

  private forgetOldLeases(): void {
    const cutoff = Date.now() - LEASE_MEMORY_MS;
    for (const [id, lease] of this.leases) if (lease.leasedAt < cutoff) this.leases.delete(id);
  }
}

function encodeJson(data: unknown, index: number): Buffer {
  const text = data === undefined ? undefined : JSON.stringify(data);
  if (text === undefined) throw new AppError(`Message ${index}: data must be JSON-serialisable, got ${typeof data}`);
  return Buffer.from(text, 'utf8');
}

function decodeJson(data: Buffer): unknown {
  const text = data.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function checkAttributes(attributes: Record<string, string>, index: number): Record<string, string> {
  for (const [key, value] of Object.entries(attributes)) {
    if (typeof value !== 'string') {
      throw new AppError(`Message ${index}: attribute ${JSON.stringify(key)} must be a string, got ${typeof value}`);
    }
    if (key.startsWith('goog')) throw new AppError(`Message ${index}: attribute names starting with "goog" are reserved by Pub/Sub`);
  }
  return attributes;
}

function checkDeadline(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 600) {
    throw new AppError(`Pub/Sub ack deadlines are whole seconds from 0 to 600, got ${seconds}`);
  }
}

function toBuffer(data: Uint8Array | string | null | undefined): Buffer {
  if (data === null || data === undefined) return Buffer.alloc(0);
  // Over gRPC the data is bytes; over the REST fallback it is base64 text.
  return typeof data === 'string' ? Buffer.from(data, 'base64') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function timestampToIso(ts: Timestamp | null | undefined): string {
  if (!ts) return new Date(0).toISOString();
  const ms = Number(ts.seconds ?? 0) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
  return new Date(ms).toISOString();
}

function* chunks(ids: string[]): Iterable<string[]> {
  for (let i = 0; i < ids.length; i += MAX_IDS_PER_REQUEST) yield ids.slice(i, i + MAX_IDS_PER_REQUEST);
}

import { z } from 'zod';
import type { ImageEventInput } from '../shared/contracts.js';
import { ParseError } from '../shared/errors.js';
import type { Delivery } from '../shared/ports/event-bus.js';
import { parseWith } from '../shared/validation.js';
import { truncateUtf8 } from '../shared/text/utf8.js';

/**
 * Envelopes of the CloudEvents the functions receive, unwrapped before the payload is validated
 * (transport first, then contract). Failures are ParseErrors: the caller dead-letters them.
 */

/** The fields of a CloudEvent the functions read (the framework's CloudEvent type is wider). */
export interface CloudEventLike {
  id?: string;
  type?: string;
  source?: string;
  subject?: string;
  time?: string;
  data?: unknown;
  traceparent?: string;
  [extension: string]: unknown;
}

export const STORAGE_EVENT_TYPES = {
  'google.cloud.storage.object.v1.finalized': 'finalize',
  'google.cloud.storage.object.v1.deleted': 'delete',
} as const;

/** `StorageObjectData` as Eventarc sends it: int64 fields (generation, size) as decimal strings. */
const storageObjectDataSchema = z.object({
  bucket: z.string().min(1),
  name: z.string().min(1),
  generation: z.union([z.string(), z.number()]),
  contentType: z.string().optional(),
  size: z.union([z.string(), z.number()]).optional(),
  timeCreated: z.string().optional(),
  updated: z.string().optional(),
  timeDeleted: z.string().optional(),
});

/**
 * GCS object CloudEvent → the image event contract (not yet validated: `handleObjectEvent` does
 * that). The event time is the CloudEvent's `time` (when the change happened), else the object's.
 */
export function imageEventFromStorageCloudEvent(event: CloudEventLike): ImageEventInput {
  const eventType = STORAGE_EVENT_TYPES[String(event.type) as keyof typeof STORAGE_EVENT_TYPES];
  if (!eventType) {
    throw new ParseError(`unsupported CloudEvent type ${JSON.stringify(event.type)}: expected one of ${Object.keys(STORAGE_EVENT_TYPES).join(', ')}`);
  }
  // Issues are pathed from the CloudEvent (`data.bucket`), where the sender's mistake sits.
  const data = parseWith(storageObjectDataSchema, event.data, `malformed ${event.type} event`, { at: ['data'] });
  return {
    bucket: data.bucket,
    name: data.name,
    generation: String(data.generation),
    contentType: data.contentType ?? 'application/octet-stream',
    // A deleted object's size does not matter downstream; it may be absent there.
    size: data.size ?? 0,
    eventType,
    eventTime: event.time ?? (eventType === 'delete' ? data.timeDeleted : undefined) ?? data.updated ?? data.timeCreated ?? new Date().toISOString(),
  };
}

/** `google.cloud.pubsub.topic.v1.messagePublished` data (also what a raw push becomes in the framework). */
const pubSubDataSchema = z.object({
  message: z.object({
    data: z.string().optional(),
    attributes: z.record(z.string(), z.string()).nullish(),
    messageId: z.string().optional(),
    message_id: z.string().optional(),
    publishTime: z.string().optional(),
    publish_time: z.string().optional(),
  }),
  subscription: z.string().optional(),
  deliveryAttempt: z.number().int().optional(),
});

export const PUBSUB_MESSAGE_PUBLISHED = 'google.cloud.pubsub.topic.v1.messagePublished';

/**
 * Pub/Sub CloudEvent → a {@link Delivery} the handlers take (the message id stands in for the ack
 * id: a push delivery is settled by the HTTP status). The payload is base64 JSON; a payload that
 * is not JSON is handed over as text so the handler's schema rejects it with a reason.
 */
export function deliveryFromPubSubCloudEvent(event: CloudEventLike): Delivery {
  if (event.type !== PUBSUB_MESSAGE_PUBLISHED) {
    throw new ParseError(`unsupported CloudEvent type ${JSON.stringify(event.type)}: expected ${PUBSUB_MESSAGE_PUBLISHED}`);
  }
  const { message, deliveryAttempt } = parseWith(pubSubDataSchema, event.data, 'malformed Pub/Sub CloudEvent', { at: ['data'] });
  const text = Buffer.from(message.data ?? '', 'base64').toString('utf8');
  const messageId = message.messageId ?? message.message_id ?? event.id ?? '';
  return {
    ackId: messageId,
    messageId,
    data: parseJsonOrText(text),
    attributes: message.attributes ?? {},
    deliveryAttempt: deliveryAttempt && deliveryAttempt > 0 ? deliveryAttempt : 1,
    publishTime: message.publishTime ?? message.publish_time ?? event.time ?? new Date(0).toISOString(),
  };
}

function parseJsonOrText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** What a dead-lettered CloudEvent carries: enough to see what arrived and why it was refused. */
export function deadLetterBody(event: CloudEventLike, reason: string) {
  return {
    reason,
    cloudEvent: { id: event.id, type: event.type, source: event.source, subject: event.subject, time: event.time, data: event.data },
  };
}

/** Pub/Sub attribute values are limited to 1024 bytes. */
export function attributeValue(text: string, maxBytes = 1024): string {
  return truncateUtf8(text, maxBytes);
}

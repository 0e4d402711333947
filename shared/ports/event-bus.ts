/** A delivered message. `ackId` is what ack/nack/extend take; `deliveryAttempt` starts at 1. */
export interface Delivery<T = unknown> {
  ackId: string;
  messageId: string;
  data: T;
  attributes: Record<string, string>;
  deliveryAttempt: number;
  publishTime: string;
}

export interface DeadLetter {
  messageId: string;
  data: unknown;
  attributes: Record<string, string>;
  reason: string;
  deliveryAttempt: number;
  at: string;
}

export interface TopicStats {
  /** Published, not yet pulled. */
  ready: number;
  /** Pulled, not yet acked (leased). */
  inflight: number;
  deadLettered: number;
}

/**
 * At-least-once messaging: publish to a topic; pull batches from its (single) subscription;
 * ack, nack (redeliver), extend the lease while working; after `maxDeliveryAttempts` a message
 * goes to the dead-letter list with the last reason. Local: a durable on-disk queue; cloud: Pub/Sub.
 */
export interface EventBus {
  publish(topic: string, data: unknown, attributes?: Record<string, string>): Promise<string>;
  publishBatch(topic: string, items: { data: unknown; attributes?: Record<string, string> }[]): Promise<string[]>;
  pull<T = unknown>(topic: string, options: { maxMessages: number; ackDeadlineSeconds?: number }): Promise<Delivery<T>[]>;
  ack(topic: string, ackIds: string[]): Promise<void>;
  /** Makes the messages available again; `reason` is kept for the dead-letter record. */
  nack(topic: string, ackIds: string[], reason?: string): Promise<void>;
  /** Extends the lease of messages still being worked on. */
  extendDeadline(topic: string, ackIds: string[], seconds: number): Promise<void>;
  /** Sends a message straight to dead-letter (malformed payloads: retrying cannot help). */
  deadLetter(topic: string, ackIds: string[], reason: string): Promise<void>;
  listDeadLetters(topic: string, limit?: number): Promise<DeadLetter[]>;
  stats(topic: string): Promise<TopicStats>;
  close(): Promise<void>;
}

import type { BlobStore, Delivery, Embedder, EventBus, FeatureStore, RejectionLog, VectorIndex } from '../../shared/ports/index.js';
import type { RejectedImage } from '../../shared/contracts.js';

/**
 * Strict fakes: every port method a test did not set up throws, so a test fails when the code
 * under test touches something unexpected.
 */
export function strict<T extends object>(name: string, impl: Partial<T>): T {
  return new Proxy(impl, {
    get(target, prop) {
      if (prop in target) return (target as Record<PropertyKey, unknown>)[prop];
      if (prop === 'then') return undefined;
      return () => {
        throw new Error(`${name}.${String(prop)} was called but the test did not set it up`);
      };
    },
  }) as T;
}

export class RecordingBus {
  published: { topic: string; data: unknown; attributes?: Record<string, string> }[] = [];
  acked: string[] = [];
  nacked: { ackId: string; reason?: string }[] = [];
  dead: { ackId: string; reason: string }[] = [];

  asPort(): EventBus {
    return strict<EventBus>('bus', {
      publish: async (topic, data, attributes) => {
        this.published.push({ topic, data, attributes });
        return String(this.published.length);
      },
      publishBatch: async (topic, items) =>
        items.map((i) => {
          this.published.push({ topic, data: i.data, attributes: i.attributes });
          return String(this.published.length);
        }),
      ack: async (_t, ids) => void this.acked.push(...ids),
      nack: async (_t, ids, reason) => void this.nacked.push(...ids.map((ackId) => ({ ackId, reason }))),
      deadLetter: async (_t, ids, reason) => void this.dead.push(...ids.map((ackId) => ({ ackId, reason }))),
    });
  }
}

export class MemoryRejections implements RejectionLog {
  items = new Map<string, RejectedImage>();
  async record(r: RejectedImage) {
    this.items.set(r.id, r);
  }
  async clear(id: string) {
    this.items.delete(id);
  }
  async list() {
    return [...this.items.values()];
  }
  async count() {
    return this.items.size;
  }
}

export function delivery(data: unknown, ackId = `ack-${Math.random().toString(16).slice(2)}`, attempt = 1): Delivery {
  return { ackId, messageId: ackId, data, attributes: {}, deliveryAttempt: attempt, publishTime: new Date().toISOString() };
}

export type { BlobStore, Embedder, FeatureStore, VectorIndex };

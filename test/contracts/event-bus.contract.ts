import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EventBus } from '../../shared/ports/event-bus.js';

/**
 * The behaviour every EventBus adapter must have (file queue, Pub/Sub). The fixture's bus must be
 * configured with `maxDeliveryAttempts` = {@link CONTRACT_MAX_ATTEMPTS}.
 * `expireLease` makes leases of pulled messages lapse (short deadline + wait, or a fake clock).
 */
export const CONTRACT_MAX_ATTEMPTS = 3;

export interface EventBusFixture {
  bus: EventBus;
  /** A fresh topic name (the adapter must already accept it). */
  topic: string;
  cleanup(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface EventBusContractOptions {
  /** Shortest lease the adapter accepts (the lease-expiry test waits that long). */
  leaseSeconds: number;
  /** The adapter delivers in publish order (the file queue does; Pub/Sub without ordering keys does not). */
  fifo?: boolean;
  /** stats() is exact and immediate (Pub/Sub's backlog metrics are neither). */
  exactStats?: boolean;
}

export function describeEventBusContract(label: string, makeBus: () => Promise<EventBusFixture>, opts: EventBusContractOptions): void {
  const fifo = opts.fifo ?? true;
  const exactStats = opts.exactStats ?? true;
  const expectStats = async (bus: EventBus, topic: string, expected: Partial<Awaited<ReturnType<EventBus['stats']>>>) => {
    if (exactStats) expect(await bus.stats(topic)).toMatchObject(expected);
  };
  describe(`EventBus contract: ${label}`, () => {
    let fx: EventBusFixture;
    let bus: EventBus;
    let topic: string;

    beforeEach(async () => {
      fx = await makeBus();
      ({ bus, topic } = fx);
    });
    afterEach(async () => {
      await bus.close();
      await fx.cleanup();
    });

    it('delivers published messages with data, attributes, ids and attempt 1', async () => {
      const id = await bus.publish(topic, { n: 1, nested: { s: 'x' } }, { kind: 'test' });
      expect(typeof id).toBe('string');
      const got = await bus.pull<{ n: number }>(topic, { maxMessages: 10 });
      expect(got).toHaveLength(1);
      expect(got[0]).toMatchObject({ messageId: id, data: { n: 1, nested: { s: 'x' } }, attributes: { kind: 'test' }, deliveryAttempt: 1 });
      expect(Number.isNaN(Date.parse(got[0]!.publishTime))).toBe(false);
      await bus.ack(topic, [got[0]!.ackId]);
      expect(await bus.pull(topic, { maxMessages: 10 })).toEqual([]);
      await expectStats(bus, topic, { ready: 0, inflight: 0, deadLettered: 0 });
    });

    it('pulls in batches of at most maxMessages, first in first out, without handing one message to two pullers', async () => {
      const ids = await bus.publishBatch(
        topic,
        Array.from({ length: 5 }, (_, i) => ({ data: { i } })),
      );
      expect(ids).toHaveLength(5);
      expect(new Set(ids).size).toBe(5);
      const first = await bus.pull<{ i: number }>(topic, { maxMessages: 3 });
      const second = await bus.pull<{ i: number }>(topic, { maxMessages: 3 });
      expect(first).toHaveLength(3);
      if (fifo) {
        expect(first.map((d) => d.data.i)).toEqual([0, 1, 2]);
        expect(second.map((d) => d.data.i)).toEqual([3, 4]);
      }
      expect([...first, ...second].map((d) => d.data.i).sort()).toEqual([0, 1, 2, 3, 4]);
      await expectStats(bus, topic, { ready: 0, inflight: 5 });
      await bus.ack(
        topic,
        [...first, ...second].map((d) => d.ackId),
      );
      await expectStats(bus, topic, { ready: 0, inflight: 0 });
    });

    it('redelivers a nacked message with the attempt count incremented', async () => {
      await bus.publish(topic, { v: 'x' });
      const [d1] = await bus.pull(topic, { maxMessages: 1 });
      await bus.nack(topic, [d1!.ackId], 'transient failure');
      const [d2] = await bus.pull(topic, { maxMessages: 1 });
      expect(d2!.messageId).toBe(d1!.messageId);
      expect(d2!.deliveryAttempt).toBe(2);
      await bus.ack(topic, [d2!.ackId]);
    });

    it('dead-letters after maxDeliveryAttempts with the last reason, while other messages flow', async () => {
      await bus.publish(topic, { poison: true });
      await bus.publish(topic, { ok: 1 });
      for (let attempt = 1; attempt <= CONTRACT_MAX_ATTEMPTS; attempt++) {
        const batch = await bus.pull<{ poison?: boolean }>(topic, { maxMessages: 10 });
        const poison = batch.find((d) => d.data.poison);
        expect(poison?.deliveryAttempt).toBe(attempt);
        await bus.ack(
          topic,
          batch.filter((d) => !d.data.poison).map((d) => d.ackId),
        );
        await bus.nack(topic, [poison!.ackId], `bad payload #${attempt}`);
      }
      expect(await bus.pull(topic, { maxMessages: 10 })).toEqual([]);
      const dead = await bus.listDeadLetters(topic);
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({ data: { poison: true }, reason: `bad payload #${CONTRACT_MAX_ATTEMPTS}`, deliveryAttempt: CONTRACT_MAX_ATTEMPTS });
      await expectStats(bus, topic, { ready: 0, inflight: 0, deadLettered: 1 });
    });

    it('deadLetter() sends a message straight to dead letters with its reason', async () => {
      await bus.publish(topic, 'not json we understand', { source: 'test' });
      const [d] = await bus.pull(topic, { maxMessages: 1 });
      await bus.deadLetter(topic, [d!.ackId], 'malformed payload');
      const dead = await bus.listDeadLetters(topic);
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({
        messageId: d!.messageId,
        data: 'not json we understand',
        attributes: { source: 'test' },
        reason: 'malformed payload',
        deliveryAttempt: 1,
      });
      expect(Number.isNaN(Date.parse(dead[0]!.at))).toBe(false);
    });

    it('redelivers when a lease expires, visibly (attempt 2); an extended lease is kept', async () => {
      await bus.publishBatch(topic, [{ data: { i: 0 } }, { data: { i: 1 } }]);
      const first = await bus.pull<{ i: number }>(topic, { maxMessages: 2, ackDeadlineSeconds: opts.leaseSeconds });
      expect(first).toHaveLength(2);
      await bus.extendDeadline(topic, [first[1]!.ackId], 60);
      await sleep(opts.leaseSeconds * 1000 + 300);
      const again = await bus.pull<{ i: number }>(topic, { maxMessages: 10 });
      expect(again.map((d) => [d.data.i, d.deliveryAttempt])).toEqual([[0, 2]]);
      // The extended message is still leased by its holder, whose ack id still works.
      await bus.ack(topic, [first[1]!.ackId, again[0]!.ackId]);
      await expectStats(bus, topic, { ready: 0, inflight: 0, deadLettered: 0 });
    });

    it('refuses a bad maxMessages with a clear error', async () => {
      await expect(bus.pull(topic, { maxMessages: 0 })).rejects.toThrow(/maxMessages/);
    });
  });
}

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { tempDir } from '../helpers/cli.js';

/**
 * The queue's rules users rely on — leases, redelivery, ack only by the holder, dead-lettering
 * after N attempts, first-in first-out — through the public API, on real files in a temp dir.
 * Only `Date` is faked: a lease lapses when the clock is moved, never by waiting.
 */
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
const advance = (ms: number) => vi.setSystemTime(Date.now() + ms);

let dir: string;
beforeEach(async () => {
  dir = await tempDir('queue-leases');
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(T0);
});
afterEach(async () => {
  vi.useRealTimers();
  await fs.rm(dir, { recursive: true, force: true });
});

const numbers = (ds: { data: unknown }[]) => ds.map((d) => (d.data as { n: number }).n);

describe('FileQueue leases and redelivery', () => {
  it('keeps a message leased until its deadline and redelivers it at the deadline, as attempt 2', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5, ackDeadlineSeconds: 10 });
    const id = await q.publish('t', { n: 1 }, { kind: 'k' });
    const [first] = await q.pull('t', { maxMessages: 5 });
    expect(first).toMatchObject({ messageId: id, deliveryAttempt: 1, data: { n: 1 }, attributes: { kind: 'k' } });
    advance(9_999);
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 1, deadLettered: 0 });
    advance(1);
    const again = await q.pull('t', { maxMessages: 5 });
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ messageId: id, deliveryAttempt: 2, data: { n: 1 }, attributes: { kind: 'k' } });
    expect(again[0]!.ackId).not.toBe(first!.ackId);
  });

  it('leases for 60 s when no deadline is configured, and a pull’s own deadline wins over the default', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await q.publishBatch('t', [{ data: { n: 0 } }, { data: { n: 1 } }]);
    await q.pull('t', { maxMessages: 1 }); // n: 0, 60 s
    await q.pull('t', { maxMessages: 1, ackDeadlineSeconds: 1.5 }); // n: 1, 1.5 s
    advance(1_499);
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    advance(1);
    expect(numbers(await q.pull('t', { maxMessages: 5 }))).toEqual([1]);
    advance(60_000 - 1_500 - 1);
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    advance(1);
    expect(numbers(await q.pull('t', { maxMessages: 5 }))).toEqual([0]);
  });

  it('notices at once that its own lease lapsed, and within a second one that another instance took', async () => {
    const a = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const b = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await a.publishBatch('t', [{ data: { n: 0 } }, { data: { n: 1 } }]);
    expect(numbers(await a.pull('t', { maxMessages: 1, ackDeadlineSeconds: 0.2 }))).toEqual([0]);
    // b's lease is unknown to a, whose last look at inflight/ found nothing.
    expect(numbers(await b.pull('t', { maxMessages: 1, ackDeadlineSeconds: 0.1 }))).toEqual([1]);
    advance(300); // both leases lapsed; a looked 300 ms ago, but its own lease is due
    const back = await a.pull('t', { maxMessages: 5, ackDeadlineSeconds: 10 });
    expect(back.map((d) => [(d.data as { n: number }).n, d.deliveryAttempt])).toEqual([
      [0, 2],
      [1, 2],
    ]);

    await a.publish('t', { n: 2 });
    expect(numbers(await a.pull('t', { maxMessages: 1, ackDeadlineSeconds: 60 }))).toEqual([2]);
    await a.publish('t', { n: 3 });
    expect(numbers(await b.pull('t', { maxMessages: 1, ackDeadlineSeconds: 0.1 }))).toEqual([3]);
    advance(200);
    // a scanned inflight/ 200 ms ago and knows of no lease due before 60 s: b's lapse waits for the next scan.
    expect(await a.pull('t', { maxMessages: 5 })).toEqual([]);
    advance(800); // a's last scan was exactly 1 s ago: it looks again
    expect(numbers(await a.pull('t', { maxMessages: 5 }))).toEqual([3]);
  });

  it('remembers the earliest lease another instance holds, and reclaims it as soon as it lapses', async () => {
    const a = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const b = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await a.publish('t', { n: 0 });
    expect(numbers(await b.pull('t', { maxMessages: 1, ackDeadlineSeconds: 0.5 }))).toEqual([0]);
    expect(await a.pull('t', { maxMessages: 1 })).toEqual([]); // a sees b's lease, due in 500 ms
    advance(500);
    const back = await a.pull('t', { maxMessages: 1 });
    expect(back.map((d) => [(d.data as { n: number }).n, d.deliveryAttempt])).toEqual([[0, 2]]);
  });

  it('a nack cut short midway (the process dies) leaves a lease that lapses after 30 s and is redelivered with its attempts counted', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5, ackDeadlineSeconds: 10 });
    await q.publish('t', { n: 1 });
    const [d1] = await q.pull('t', { maxMessages: 1 });
    await q.nack('t', [d1!.ackId]);
    const [d2] = await q.pull('t', { maxMessages: 1 });
    expect(d2!.deliveryAttempt).toBe(2);
    const open = fs.open;
    const inflight = `${path.sep}inflight${path.sep}`;
    // The rewrite of the message file fails, as if the process died right after taking its private lease.
    const spy = vi.spyOn(fs, 'open').mockImplementation(async (file, flags) => {
      if (String(file).includes(inflight) && String(file).endsWith('.tmp')) throw Object.assign(new Error('EIO: i/o error, open'), { code: 'EIO' });
      return open(file, flags);
    });
    await expect(q.nack('t', [d2!.ackId], 'crash')).rejects.toThrow('EIO');
    spy.mockRestore();
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 1, deadLettered: 0 });
    const fresh = new FileQueue(dir, { maxDeliveryAttempts: 5 }); // the restarted process
    advance(29_999);
    expect(await fresh.pull('t', { maxMessages: 1 })).toEqual([]);
    advance(1);
    const [d3] = await fresh.pull('t', { maxMessages: 1 });
    expect(d3).toMatchObject({ messageId: d1!.messageId, data: { n: 1 }, deliveryAttempt: 3 });
  });

  it('acks, nacks, extends and dead-letters only for the current holder of a lease', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5, ackDeadlineSeconds: 10 });
    await q.publish('t', { n: 1 });
    const [old] = await q.pull('t', { maxMessages: 1 });
    advance(10_000);
    const [current] = await q.pull('t', { maxMessages: 1 });
    expect(current!.deliveryAttempt).toBe(2);

    await q.ack('t', [old!.ackId]);
    await q.nack('t', [old!.ackId], 'late nack');
    await q.deadLetter('t', [old!.ackId], 'late dead-letter');
    await q.extendDeadline('t', [old!.ackId], 3_600);
    await q.ack('t', ['00000000000000-00000000-00000000-00000000@000000000000', 'nonsense']);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 1, deadLettered: 0 });

    // The old holder's extension did not extend the current lease.
    advance(10_000);
    const [third] = await q.pull('t', { maxMessages: 1 });
    expect(third!.deliveryAttempt).toBe(3);
    await q.ack('t', [current!.ackId]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 1, deadLettered: 0 });
    await q.ack('t', [third!.ackId]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 0 });
    expect(await q.pull('t', { maxMessages: 1 })).toEqual([]);
  });

  it('extendDeadline keeps a lease past its first deadline, keeps the delivery count, and refuses a non-positive extension', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5, ackDeadlineSeconds: 10 });
    await q.publish('t', { n: 1 });
    const [d1] = await q.pull('t', { maxMessages: 1 });
    await q.nack('t', [d1!.ackId]);
    const [d2] = await q.pull('t', { maxMessages: 1 });
    expect(d2!.deliveryAttempt).toBe(2);
    await q.extendDeadline('t', [d2!.ackId], 30.5);
    advance(30_499);
    expect(await q.pull('t', { maxMessages: 1 })).toEqual([]);
    advance(1);
    const [d3] = await q.pull('t', { maxMessages: 1 });
    expect(d3!.deliveryAttempt).toBe(3);

    await expect(q.extendDeadline('t', [d3!.ackId], 0)).rejects.toThrow('extendDeadline seconds must be > 0, got 0');
    await expect(q.extendDeadline('t', [d3!.ackId], Number.NaN)).rejects.toThrow('extendDeadline seconds must be > 0, got NaN');
  });
});

describe('FileQueue dead-lettering', () => {
  it('dead-letters on the Nth nack, exactly, with the last reason, the data and the attempt count', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    const id = await q.publish('t', { n: 7 }, { source: 's' });
    for (let attempt = 1; attempt <= 3; attempt++) {
      const batch = await q.pull('t', { maxMessages: 5 });
      expect(batch.map((d) => d.deliveryAttempt)).toEqual([attempt]);
      await q.nack('t', [batch[0]!.ackId], `failure #${attempt}`);
    }
    expect(await q.pull('t', { maxMessages: 5 })).toEqual([]);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 1 });
    expect(await q.listDeadLetters('t')).toEqual([
      { messageId: id, data: { n: 7 }, attributes: { source: 's' }, reason: 'failure #3', deliveryAttempt: 3, at: new Date(T0).toISOString() },
    ]);
  });

  it('dead-letters after N lapsed leases with the reason "lease expired"', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 2, ackDeadlineSeconds: 1 });
    await q.publish('t', { n: 1 });
    expect((await q.pull('t', { maxMessages: 1 }))[0]!.deliveryAttempt).toBe(1);
    advance(1_000);
    expect((await q.pull('t', { maxMessages: 1 }))[0]!.deliveryAttempt).toBe(2);
    advance(1_000);
    expect(await q.pull('t', { maxMessages: 1 })).toEqual([]);
    expect(await q.listDeadLetters('t')).toMatchObject([{ data: { n: 1 }, reason: 'lease expired', deliveryAttempt: 2 }]);
  });

  it('with one attempt allowed, the first nack dead-letters; a nack without reason says "nacked"', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 1 });
    await q.publish('t', { n: 1 });
    const [d] = await q.pull('t', { maxMessages: 1 });
    await q.nack('t', [d!.ackId]);
    expect(await q.pull('t', { maxMessages: 1 })).toEqual([]);
    expect(await q.listDeadLetters('t')).toMatchObject([{ reason: 'nacked', deliveryAttempt: 1 }]);
  });

  it('deadLetter() sends a leased message straight to dead letters, whatever attempts are left', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const [idA, idB] = await q.publishBatch('t', [{ data: { n: 1 } }, { data: { n: 2 } }]);
    const [a, b] = await q.pull('t', { maxMessages: 2 });
    await q.deadLetter('t', [b!.ackId], 'malformed');
    await q.deadLetter('t', [a!.ackId], 'also malformed');
    const dead = await q.listDeadLetters('t');
    // Listed in publish order, not in the order they died.
    expect(dead.map((d) => [d.messageId, d.reason, d.deliveryAttempt])).toEqual([
      [idA, 'also malformed', 1],
      [idB, 'malformed', 1],
    ]);
    expect(await q.listDeadLetters('t', 1)).toHaveLength(1);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 2 });
  });

  it('releaseAllLeases hands every lease back: to ready with its attempt counted, or to dead when out of attempts', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 2 });
    await q.publishBatch('t', [{ data: { n: 0 } }, { data: { n: 1 } }]);
    const [first] = await q.pull('t', { maxMessages: 1 });
    await q.nack('t', [first!.ackId]);
    expect((await q.pull('t', { maxMessages: 2 })).map((d) => d.deliveryAttempt)).toEqual([2, 1]);
    await fs.writeFile(path.join(dir, 't', 'inflight', 'notes.txt'), 'not a lease');
    expect(await q.releaseAllLeases('t', 'restarted')).toBe(2);
    expect(await fs.readdir(path.join(dir, 't', 'inflight'))).toEqual(['notes.txt']);
    expect(await q.listDeadLetters('t')).toMatchObject([{ data: { n: 0 }, reason: 'restarted', deliveryAttempt: 2 }]);
    const back = await q.pull('t', { maxMessages: 5 });
    expect(back.map((d) => [(d.data as { n: number }).n, d.deliveryAttempt])).toEqual([[1, 2]]);
    expect(await q.releaseAllLeases('empty', 'restarted')).toBe(0);
    expect(await q.sweepStaging('empty')).toBe(0);
  });
});

describe('FileQueue order', () => {
  it('serves first in first out across publishes and batches larger than one staging chunk', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const ids = [await q.publish('t', { n: 0 })];
    ids.push(
      ...(await q.publishBatch(
        't',
        Array.from({ length: 150 }, (_, i) => ({ data: { n: i + 1 } })),
      )),
    );
    ids.push(await q.publish('t', { n: 151 }));
    expect(new Set(ids).size).toBe(152);
    const got: { messageId: string; data: unknown }[] = [];
    for (let batch = await q.pull('t', { maxMessages: 40 }); batch.length > 0; batch = await q.pull('t', { maxMessages: 40 })) {
      expect(batch.length).toBeLessThanOrEqual(40);
      got.push(...batch);
    }
    expect(numbers(got)).toEqual(Array.from({ length: 152 }, (_, i) => i));
    expect(got.map((d) => d.messageId)).toEqual(ids);
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 152, deadLettered: 0 });
  });

  it('puts a nacked message back in its place at once, and serves what it published since in the same pull', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await q.publishBatch(
      't',
      [0, 1, 2, 3].map((n) => ({ data: { n } })),
    );
    const [d0] = await q.pull('t', { maxMessages: 1 });
    await q.nack('t', [d0!.ackId]);
    expect(numbers(await q.pull('t', { maxMessages: 2 }))).toEqual([0, 1]);
    await q.publish('t', { n: 4 });
    expect(numbers(await q.pull('t', { maxMessages: 5 }))).toEqual([2, 3, 4]);
  });

  it('sees within a second a message another instance put back ahead of what it is serving', async () => {
    const a = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const b = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await a.publishBatch(
      't',
      [0, 1, 2, 3, 4].map((n) => ({ data: { n } })),
    );
    const [held] = await b.pull('t', { maxMessages: 1 });
    expect(numbers([held!])).toEqual([0]);
    expect(numbers(await a.pull('t', { maxMessages: 1 }))).toEqual([1]);
    await b.nack('t', [held!.ackId], 'put back');
    expect(numbers(await a.pull('t', { maxMessages: 1 }))).toEqual([2]);
    advance(1_000);
    const next = await a.pull('t', { maxMessages: 1 });
    expect(next.map((d) => [(d.data as { n: number }).n, d.deliveryAttempt])).toEqual([[0, 2]]);
  });

  it('serves at once what another instance published after its own listing was used up', async () => {
    const a = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const b = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await a.publish('t', { n: 0 });
    expect(numbers(await a.pull('t', { maxMessages: 5 }))).toEqual([0]);
    await b.publish('t', { n: 1 });
    expect(numbers(await a.pull('t', { maxMessages: 5 }))).toEqual([1]);
  });

  it('publishes none of a batch when writing one of its messages fails (a full disk), and leaves nothing staged', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await q.publish('t', { n: 0 });
    const open = fs.open;
    const staging = `${path.sep}tmp${path.sep}`;
    let opened = 0;
    const spy = vi.spyOn(fs, 'open').mockImplementation(async (file, flags) => {
      if (String(file).includes(staging) && String(file).endsWith('.tmp') && ++opened === 2) {
        throw Object.assign(new Error('ENOSPC: no space left on device, open'), { code: 'ENOSPC' });
      }
      return open(file, flags);
    });
    await expect(
      q.publishBatch(
        't',
        [1, 2, 3].map((n) => ({ data: { n } })),
      ),
    ).rejects.toThrow('ENOSPC');
    spy.mockRestore();
    expect(await fs.readdir(path.join(dir, 't', 'tmp'))).toEqual([]);
    expect(numbers(await q.pull('t', { maxMessages: 5 }))).toEqual([0]);
  });

  it('never returns more than maxMessages, also when another instance took some of the messages it listed', async () => {
    const a = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    const b = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await a.publishBatch(
      't',
      [0, 1, 2, 3, 4].map((n) => ({ data: { n } })),
    );
    expect(numbers(await a.pull('t', { maxMessages: 1 }))).toEqual([0]); // a now holds a listing of 1..4
    expect(numbers(await b.pull('t', { maxMessages: 1 }))).toEqual([1]);
    expect(numbers(await a.pull('t', { maxMessages: 2 }))).toEqual([2, 3]);
  });

  it('keeps topics apart', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await q.publish('a', { n: 1 });
    await q.publish('b', { n: 2 });
    expect(numbers(await q.pull('b', { maxMessages: 5 }))).toEqual([2]);
    expect(await q.stats('a')).toEqual({ ready: 1, inflight: 0, deadLettered: 0 });
  });
});

describe('FileQueue input checks', () => {
  it('refuses bad settings with the setting and the value in the message', () => {
    expect(() => new FileQueue(dir, { maxDeliveryAttempts: 0 })).toThrow('maxDeliveryAttempts must be a whole number ≥ 1, got 0');
    expect(() => new FileQueue(dir, { maxDeliveryAttempts: 1.5 })).toThrow('maxDeliveryAttempts must be a whole number ≥ 1, got 1.5');
    expect(() => new FileQueue(dir, { maxDeliveryAttempts: 3, ackDeadlineSeconds: 0 })).toThrow('ackDeadlineSeconds must be > 0, got 0');
    expect(() => new FileQueue(dir, { maxDeliveryAttempts: 3, ackDeadlineSeconds: Number.NaN })).toThrow('ackDeadlineSeconds must be > 0, got NaN');
    expect(() => new FileQueue(dir, { maxDeliveryAttempts: 1, ackDeadlineSeconds: 0.001 })).not.toThrow();
  });

  it('refuses a bad pull size or deadline, and a topic name that could leave the queue folder', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await expect(q.pull('t', { maxMessages: 0 })).rejects.toThrow('maxMessages must be a whole number ≥ 1, got 0');
    await expect(q.pull('t', { maxMessages: 2.5 })).rejects.toThrow('maxMessages must be a whole number ≥ 1, got 2.5');
    await expect(q.pull('t', { maxMessages: 1, ackDeadlineSeconds: -1 })).rejects.toThrow('ackDeadlineSeconds must be > 0, got -1');
    await expect(q.pull('t', { maxMessages: 1, ackDeadlineSeconds: 0 })).rejects.toThrow('ackDeadlineSeconds must be > 0, got 0');
    await expect(q.publish('../escape', { n: 1 })).rejects.toThrow('Invalid topic name "../escape": use letters, digits');
    await expect(q.stats('a/b')).rejects.toThrow('Invalid topic name "a/b"');
    expect(await fs.readdir(dir)).toEqual([]);
  });

  it('refuses a batch holding undefined data and publishes none of it', async () => {
    const q = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await expect(q.publishBatch('t', [{ data: { n: 1 } }, { data: undefined }])).rejects.toThrow('Cannot publish undefined data to t');
    expect(await q.stats('t')).toEqual({ ready: 0, inflight: 0, deadLettered: 0 });
    // null is data; attributes default to none; the publish time is the publisher's clock.
    const id = await q.publish('t', null);
    expect(await q.pull('t', { maxMessages: 1 })).toMatchObject([{ messageId: id, data: null, attributes: {}, publishTime: new Date(T0).toISOString() }]);
  });
});

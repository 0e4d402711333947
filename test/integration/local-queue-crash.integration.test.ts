import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';

/**
 * At-least-once across a crash: a worker process pulls a batch and is SIGKILLed before acking;
 * the messages come back (attempt 2) once the lease lapses and none is lost. A poison message
 * ends in dead letters after maxDeliveryAttempts while the others flow.
 */
const WORKER = fileURLToPath(new URL('../contracts/fixtures/queue-worker.ts', import.meta.url));
const TOPIC = 'image-events';
const LEASE_S = 0.5;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Pulled {
  messageId: string;
  data: { i: number };
  deliveryAttempt: number;
}

/** Starts a worker, waits for its batch, kills it with SIGKILL; returns what it had pulled. */
async function pullAndCrash(dir: string, maxMessages: number, maxAttempts: number, leaseSeconds = LEASE_S): Promise<Pulled[]> {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, dir, TOPIC, String(maxMessages), String(leaseSeconds), String(maxAttempts)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before pulling: ${stderr}`)));
  });
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  return JSON.parse(line) as Pulled[];
}

describe('FileQueue crash recovery (child process killed before ack)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'iss-crash-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('redelivers a killed worker’s batch with deliveryAttempt 2 and loses nothing', async () => {
    const queue = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await queue.publishBatch(
      TOPIC,
      Array.from({ length: 6 }, (_, i) => ({ data: { i } })),
    );

    const crashed = await pullAndCrash(dir, 4, 5);
    expect(crashed.map((d) => [d.data.i, d.deliveryAttempt])).toEqual([
      [0, 1],
      [1, 1],
      [2, 1],
      [3, 1],
    ]);
    expect(await queue.stats(TOPIC)).toEqual({ ready: 2, inflight: 4, deadLettered: 0 });

    // Before the lease lapses only the untouched messages are available.
    const early = await queue.pull<{ i: number }>(TOPIC, { maxMessages: 10 });
    expect(early.map((d) => d.data.i)).toEqual([4, 5]);
    await queue.ack(
      TOPIC,
      early.map((d) => d.ackId),
    );

    await sleep(LEASE_S * 1000 + 200);
    const redelivered = await queue.pull<{ i: number }>(TOPIC, { maxMessages: 10 });
    expect(redelivered.map((d) => [d.data.i, d.deliveryAttempt])).toEqual([
      [0, 2],
      [1, 2],
      [2, 2],
      [3, 2],
    ]);
    expect(redelivered.map((d) => d.messageId)).toEqual(crashed.map((d) => d.messageId));
    await queue.ack(
      TOPIC,
      redelivered.map((d) => d.ackId),
    );
    expect(await queue.stats(TOPIC)).toEqual({ ready: 0, inflight: 0, deadLettered: 0 });
  });

  it('dead-letters a message that keeps crashing its worker, while the others flow', async () => {
    const maxAttempts = 2;
    const queue = new FileQueue(dir, { maxDeliveryAttempts: maxAttempts });
    await queue.publish(TOPIC, { i: 0, poison: true });
    await queue.publishBatch(TOPIC, [{ data: { i: 1 } }, { data: { i: 2 } }]);
    const processed: number[] = [];

    for (let round = 1; round <= maxAttempts; round++) {
      // The poison message is first in line; the worker that takes it dies.
      const crashed = await pullAndCrash(dir, 1, maxAttempts);
      expect(crashed.map((d) => [d.data.i, d.deliveryAttempt])).toEqual([[0, round]]);
      const healthy = await queue.pull<{ i: number }>(TOPIC, { maxMessages: 1 });
      for (const d of healthy) processed.push(d.data.i);
      await queue.ack(
        TOPIC,
        healthy.map((d) => d.ackId),
      );
      await sleep(LEASE_S * 1000 + 200);
    }
    expect(await queue.pull(TOPIC, { maxMessages: 10 })).toEqual([]);
    expect(processed).toEqual([1, 2]);
    const dead = await queue.listDeadLetters(TOPIC);
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ data: { i: 0, poison: true }, reason: 'lease expired', deliveryAttempt: maxAttempts });
    expect(await queue.stats(TOPIC)).toEqual({ ready: 0, inflight: 0, deadLettered: 1 });
  });

  it('moves corrupt files in the queue to dead letters instead of failing the pull', async () => {
    const queue = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await queue.publish(TOPIC, { ok: true });
    const ready = path.join(dir, TOPIC, 'ready');
    await writeFile(path.join(ready, '000000000000000-00000000-00000000-deadbeef.json'), '{ truncated');
    await writeFile(path.join(ready, 'stray-file.txt'), 'hello');
    const got = await queue.pull<{ ok: boolean }>(TOPIC, { maxMessages: 10 });
    expect(got.map((d) => d.data)).toEqual([{ ok: true }]);
    const dead = await queue.listDeadLetters(TOPIC);
    expect(dead).toHaveLength(2);
    expect(dead.map((d) => d.reason).join('\n')).toMatch(/corrupt message file/);
    expect(dead.map((d) => d.reason).join('\n')).toMatch(/unexpected file name stray-file\.txt/);
    expect(await readdir(ready)).toEqual([]);
  });

  it('lets several processes pull one topic without handing a message out twice', async () => {
    const queue = new FileQueue(dir, { maxDeliveryAttempts: 5 });
    await queue.publishBatch(
      TOPIC,
      Array.from({ length: 12 }, (_, i) => ({ data: { i } })),
    );
    // A long lease: the workers start at different times and no lease may lapse meanwhile.
    const batches = await Promise.all([1, 2, 3].map(() => pullAndCrash(dir, 5, 5, 60)));
    const ids = batches.flat().map((d) => d.data.i);
    expect(ids.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(batches.flat().every((d) => d.deliveryAttempt === 1)).toBe(true);
    expect(await queue.stats(TOPIC)).toEqual({ ready: 0, inflight: 12, deadLettered: 0 });
  });
});

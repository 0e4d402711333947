import { describe, expect, it } from 'vitest';
import { ConcurrencyGate, defaultHttpLimits, OverloadedError, resolveHttpLimits } from '../../shared/http/limits.js';

/**
 * The limits of the search app (README, "Web page and HTTP API", Protections) and the gate that
 * bounds decodes: at most N at once, M waiting in arrival order, the rest refused at once (503).
 */
function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets pending promise callbacks run. */
const settle = () => new Promise((r) => setImmediate(r));

describe('HTTP limits', () => {
  it('defaults to the figures the README documents', () => {
    expect(defaultHttpLimits).toEqual({
      maxQueryBytes: 10 * 1024 * 1024,
      queryDecodes: { concurrent: 2, queued: 8 },
      thumbnails: { concurrent: 2, queued: 48, cacheBytes: 32 * 1024 * 1024 },
      rateLimit: { searchesPerMinute: 240, requestsPerMinute: 1200 },
      timeouts: { requestMs: 30_000, headersMs: 10_000, keepAliveMs: 5_000, connectionMs: 60_000, checkIntervalMs: 1_000 },
      maxConnections: 512,
    });
    expect(resolveHttpLimits()).toEqual(defaultHttpLimits);
    expect(resolveHttpLimits({})).toEqual(defaultHttpLimits);
  });

  it('takes overrides in part, one level deep, keeping the other defaults', () => {
    const limits = resolveHttpLimits({ maxQueryBytes: 1000, queryDecodes: { queued: 1 }, rateLimit: { searchesPerMinute: 3 }, maxConnections: undefined });
    expect(limits).toEqual({
      maxQueryBytes: 1000,
      queryDecodes: { concurrent: 2, queued: 1 },
      thumbnails: { concurrent: 2, queued: 48, cacheBytes: 32 * 1024 * 1024 },
      rateLimit: { searchesPerMinute: 3, requestsPerMinute: 1200 },
      timeouts: { requestMs: 30_000, headersMs: 10_000, keepAliveMs: 5_000, connectionMs: 60_000, checkIntervalMs: 1_000 },
      maxConnections: 512,
    });
    // The defaults themselves are untouched.
    expect(defaultHttpLimits.queryDecodes).toEqual({ concurrent: 2, queued: 8 });
    expect(defaultHttpLimits.maxQueryBytes).toBe(10 * 1024 * 1024);
  });

  it('an overload error is a 503 that says what is busy and when to retry', () => {
    const err = new OverloadedError('thumbnails', 3);
    expect(err.statusCode).toBe(503);
    expect(err.code).toBe('OVERLOADED');
    expect(err.retryAfterSeconds).toBe(3);
    expect(err.message).toBe('the server is busy with other thumbnails; retry in 3 s');
  });
});

describe('ConcurrencyGate', () => {
  it('runs at most `concurrent` tasks at once, queues `queued` more, and refuses the rest at once with a 1 s Retry-After', async () => {
    const gate = new ConcurrencyGate('query images', 2, 1);
    const started: number[] = [];
    const finish = [deferred(), deferred(), deferred()];
    const runs = finish.map((d, i) =>
      gate.run(async () => {
        started.push(i);
        await d.promise;
        return i;
      }),
    );
    await settle();
    expect(started).toEqual([0, 1]);

    const refused = await gate.run(async () => 'never').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OverloadedError);
    expect((refused as OverloadedError).retryAfterSeconds).toBe(1);
    expect((refused as Error).message).toBe('the server is busy with other query images; retry in 1 s');

    finish[0]!.resolve();
    await settle();
    expect(started).toEqual([0, 1, 2]); // the freed slot went to the waiting task
    finish[1]!.resolve();
    finish[2]!.resolve();
    expect(await Promise.all(runs)).toEqual([0, 1, 2]);
  });

  it('hands freed slots to waiting tasks first come, first served, and frees all slots when done', async () => {
    const gate = new ConcurrencyGate('x', 1, 3, 7);
    const order: string[] = [];
    const first = deferred();
    const runs = [
      gate.run(async () => {
        order.push('a');
        await first.promise;
      }),
      gate.run(async () => void order.push('b')),
      gate.run(async () => void order.push('c')),
      gate.run(async () => void order.push('d')),
    ];
    const refused = await gate.run(async () => undefined).catch((e: unknown) => e);
    expect((refused as OverloadedError).retryAfterSeconds).toBe(7);
    await settle();
    expect(order).toEqual(['a']);
    first.resolve();
    await Promise.all(runs);
    expect(order).toEqual(['a', 'b', 'c', 'd']);

    // Every slot is free again: one runs at once, three wait, the fifth is refused.
    const again = [deferred(), deferred(), deferred(), deferred()];
    const started: number[] = [];
    const reruns = again.map((d, i) =>
      gate.run(async () => {
        started.push(i);
        await d.promise;
      }),
    );
    await settle();
    expect(started).toEqual([0]);
    await expect(gate.run(async () => undefined)).rejects.toBeInstanceOf(OverloadedError);
    for (const d of again) d.resolve();
    await Promise.all(reruns);
  });

  it('frees the slot of a task that fails, and passes its error to the caller', async () => {
    const gate = new ConcurrencyGate('x', 1, 0);
    await expect(gate.run(async () => Promise.reject(new Error('decode failed')))).rejects.toThrow('decode failed');
    await expect(gate.run(async () => 'ok')).resolves.toBe('ok');

    // A waiting task gets the slot of a failed one.
    const hold = deferred();
    const queued = new ConcurrencyGate('x', 1, 1);
    const failing = queued.run(async () => {
      await hold.promise;
      throw new Error('boom');
    });
    const waiting = queued.run(async () => 'next');
    hold.resolve();
    await expect(failing).rejects.toThrow('boom');
    await expect(waiting).resolves.toBe('next');
    await expect(queued.run(async () => 'free')).resolves.toBe('free');
  });

  it('with no queue, refuses the task beyond `concurrent` and runs one once a slot is free', async () => {
    const gate = new ConcurrencyGate('x', 1, 0);
    const hold = deferred();
    const running = gate.run(() => hold.promise);
    await expect(gate.run(async () => undefined)).rejects.toBeInstanceOf(OverloadedError);
    hold.resolve();
    await running;
    await expect(gate.run(async () => 'ran')).resolves.toBe('ran');
  });
});

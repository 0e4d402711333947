import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { TOPICS, type ImageEventInput } from '../../shared/contracts.js';
import { NotFoundError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import type { BlobStore } from '../../shared/ports/blob-store.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { FeatureStore } from '../../shared/ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import type { VectorIndex } from '../../shared/ports/vector-index.js';
import { runEmbedLoop } from '../../shared/services/embed-loop.js';
import { LIVE_INDEX_TTL_MS, LiveIndexCache } from '../../shared/services/live-index-cache.js';
import { ModelFollower } from '../../shared/services/model-follower.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger, FakeEmbedder, MemoryIndex, MemoryRejections } from './functions-fakes.js';

const index = (name: string, modelVersion = 'm1') => new MemoryIndex(name, modelVersion, 4);

describe('LiveIndexCache (one TTL for every path that reads the live index)', () => {
  it('asks the catalog once per TTL, and concurrent callers share one lookup', async () => {
    let t = 0;
    let lookups = 0;
    let live: VectorIndex = index('a');
    const cache = new LiveIndexCache(
      async () => {
        lookups += 1;
        return live;
      },
      { now: () => t },
    );
    const [x, y] = await Promise.all([cache.get(), cache.get()]);
    expect([x!.name, y!.name, lookups]).toEqual(['a', 'a', 1]);
    live = index('b');
    t += LIVE_INDEX_TTL_MS - 1;
    expect((await cache.get())!.name).toBe('a');
    t += 1;
    expect((await cache.get())!.name).toBe('b');
    expect(lookups).toBe(2);
    live = index('c');
    cache.invalidate();
    expect((await cache.get())!.name).toBe('c');
    expect(cache.peek()!.name).toBe('c');
  });

  it('keeps neither "no live index yet" nor a failed lookup', async () => {
    const answers: (VectorIndex | null | Error)[] = [null, new Error('cluster unreachable'), index('a')];
    const cache = new LiveIndexCache(async () => {
      const next = answers.shift()!;
      if (next instanceof Error) throw next;
      return next;
    });
    expect(await cache.get()).toBeNull();
    expect(cache.peek()).toBeNull();
    await expect(cache.get()).rejects.toThrow('cluster unreachable');
    expect((await cache.get())!.name).toBe('a');
  });
});

describe('ModelHolder.forLiveIndex (a process that embeds and searches)', () => {
  const registry = (versions: string[], active: () => string) =>
    strict<ModelRegistry>('registry', {
      active: async () => ({ version: active() }) as ModelVersion,
      get: async (v: string) => (versions.includes(v) ? ({ version: v } as ModelVersion) : null),
      localPath: async (v: string) => `/models/${v}`,
    });

  it("loads the live index's model beside the active one, never replacing the one the pipeline embeds with", async () => {
    const closed: string[] = [];
    const loads: string[] = [];
    const holder = new ModelHolder(
      registry(['m1', 'm2'], () => 'm2'),
      {
        maxPixels: 1e7,
        logger: silentLogger,
        load: async (_dir, v) => {
          loads.push(v);
          const e = new FakeEmbedder(v);
          e.close = async () => void closed.push(v);
          return e;
        },
      },
    );
    expect((await holder.get()).modelVersion).toBe('m2');
    const [a, b] = await Promise.all([holder.forLiveIndex('m1'), holder.forLiveIndex('m1')]);
    expect([a.modelVersion, b.modelVersion]).toEqual(['m1', 'm1']);
    expect(loads).toEqual(['m2', 'm1']); // loaded once
    expect(holder.current().modelVersion).toBe('m2');
    // The alias moved to the active model's index: that model answers, and nothing more is loaded.
    expect((await holder.forLiveIndex('m2')).modelVersion).toBe('m2');
    expect(loads).toEqual(['m2', 'm1']);
    await holder.close();
    expect(closed).toContain('m2');
  });

  it('refuses a live index whose model is not in the registry', async () => {
    const holder = new ModelHolder(
      registry(['m2'], () => 'm2'),
      { maxPixels: 1e7, logger: silentLogger, load: async (_d, v) => new FakeEmbedder(v) },
    );
    await expect(holder.forLiveIndex('gone')).rejects.toThrow(/not in the registry/);
    expect(holder.current().modelVersion).toBe('m2');
  });
});

describe('ModelFollower', () => {
  it('runs onChange only when refresh swapped the model, and logs (never throws) a failed refresh', async () => {
    const answers: (boolean | Error)[] = [false, true, new Error('registry unreadable')];
    const changes: number[] = [];
    const { logger, lines } = captureLogger();
    const follower = new ModelFollower(
      {
        refresh: async () => {
          const next = answers.shift()!;
          if (next instanceof Error) throw next;
          return next;
        },
      },
      { logger, onChange: async () => void changes.push(1) },
    );
    expect(await follower.check()).toBe(false);
    expect(await follower.check()).toBe(true);
    expect(await follower.check()).toBe(false);
    expect(changes).toHaveLength(1);
    expect(lines().find((l) => l.severity === 'WARNING')).toMatchObject({
      message: 'model refresh failed',
      err: { type: 'Error', message: 'registry unreadable' },
    });
    await follower.stop();
  });
});

// reconcileBucket: test/unit/reconcile.unit.test.ts

describe('runEmbedLoop as the local workers run it', () => {
  let dir: string;
  let bus: FileQueue;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'iss-embed-loop-'));
    bus = new FileQueue(dir, { maxDeliveryAttempts: 5, ackDeadlineSeconds: 30 });
  });
  afterEach(async () => {
    await bus.close();
    await rm(dir, { recursive: true, force: true });
  });

  const event = (name: string): ImageEventInput => ({
    bucket: 'b',
    name,
    generation: '1',
    contentType: 'image/png',
    size: 8,
    eventType: 'delete',
    eventTime: '2025-03-01T10:00:00Z',
  });
  const embed = (embedder: Embedder = new FakeEmbedder('m1')) => ({
    blobs: () => strict<BlobStore>('blobs', {}),
    embedder,
    bus,
    rejections: new MemoryRejections(),
    features: strict<FeatureStore>('features', { delete: async () => {} }),
    logger: silentLogger,
    limits: { maxBytes: 1000 },
  });

  it('keeps pulling until stopped, waiting in `idle` on empty pulls, and reports each batch and cycle', async () => {
    await bus.publish(TOPICS.imageEvents, event('a.png'));
    let running = true;
    let idles = 0;
    let busy = 0;
    const batches: string[][] = [];
    const result = await runEmbedLoop({
      bus,
      embed: () => embed(),
      logger: silentLogger,
      settings: { batchSize: 4, leaseSeconds: 30 },
      running: () => running,
      idle: async () => {
        idles += 1;
        if (idles === 3) running = false;
      },
      hooks: { cycle: (d) => void (busy += d), batch: (o) => void batches.push(o.map((x) => x.status)) },
    });
    expect(result).toMatchObject({ stoppedBecause: 'stopped', batches: 1, messages: 1, outcomes: { deleted: 1 } });
    expect(batches).toEqual([['deleted']]);
    expect(idles).toBe(3);
    expect(busy).toBe(0);
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 0, inflight: 0 });
  });

  it('with lease-expiry, a batch that fails as a whole stays leased (no immediate redelivery) and the loop goes on', async () => {
    await bus.publish(TOPICS.imageEvents, {
      bucket: 'b',
      name: 'x.png',
      generation: '1',
      contentType: 'image/png',
      size: 8,
      eventType: 'finalize',
      eventTime: '2025-03-01T10:00:00Z',
    });
    const failures: string[] = [];
    let pulls = 0;
    // Inference fails for the whole batch (not one image's outcome).
    const crashing = new FakeEmbedder('m1');
    crashing.embedDecoded = async () => Promise.reject(new Error('inference worker crashed'));
    const bytes = strict<BlobStore>('blobs', {
      read: async (name: string) => (name.endsWith('.png') ? Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]) : Promise.reject(new NotFoundError(name))),
      stat: async () => null,
    });
    const counting = new Proxy(bus, {
      get(target, prop, receiver) {
        if (prop === 'pull') return (...args: Parameters<FileQueue['pull']>) => ((pulls += 1), target.pull(...args));
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const result = await runEmbedLoop({
      bus: counting,
      embed: () => ({ ...embed(crashing), blobs: () => bytes }),
      logger: silentLogger,
      settings: { batchSize: 4, leaseSeconds: 30, onBatchFailure: 'lease-expiry' },
      running: () => pulls < 3,
      hooks: { failure: (err) => void failures.push(err.message) },
    });
    expect(result.stoppedBecause).toBe('stopped');
    expect(failures).toEqual(['inference worker crashed']);
    expect(result.batches).toBe(0);
    // Still leased by the failed attempt: not handed out again at once, not dead-lettered.
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 0, inflight: 1, deadLettered: 0 });
  });
});

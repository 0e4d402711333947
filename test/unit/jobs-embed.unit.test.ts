import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { TOPICS, type EmbeddingMessage, type ImageEventInput } from '../../shared/contracts.js';
import { GenerationMismatchError, NotFoundError } from '../../shared/errors.js';
import type { BlobInfo, BlobStore } from '../../shared/ports/blob-store.js';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';
import { EmbedJobFailedError, embedTaskMain, runEmbedJob, type EmbedJobSettings, type EmbedTaskDeps } from '../../shared/services/embed-task.js';
import { bootstrapJobHint } from '../../shared/wiring/cloud-config.js';
import { CudaUnavailableError } from '../../shared/model/load-embedder.js';
import type { ModelRegistry } from '../../shared/ports/model-registry.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger, FakeEmbedder, MemoryRejections } from './functions-fakes.js';

/** An in-memory bucket: reads pinned to a generation fail like GCS when the object changed. */
class MemoryBucket implements BlobStore {
  readonly objects = new Map<string, { data: Buffer; generation: string }>();
  constructor(readonly bucket: string) {}
  uri(name: string) {
    return `gs://${this.bucket}/${name}`;
  }
  async read(name: string, options: { generation?: string } = {}) {
    const o = this.objects.get(name);
    if (!o) throw new NotFoundError(`${name} not found`);
    if (options.generation && options.generation !== o.generation) throw new GenerationMismatchError(`${name} changed`);
    return o.data;
  }
  async stat(name: string): Promise<BlobInfo | null> {
    const o = this.objects.get(name);
    return o ? { bucket: this.bucket, name, generation: o.generation, size: o.data.length, contentType: 'image/jpeg', updated: '' } : null;
  }
  async *list(): AsyncIterable<BlobInfo> {}
  async write(): Promise<BlobInfo> {
    throw new Error('unexpected write');
  }
  async delete() {}
}

class MemoryFeatures implements FeatureStore {
  readonly records = new Map<string, FeatureRecord>();
  async put(records: FeatureRecord[]) {
    for (const r of records) this.records.set(r.id, r);
  }
  async delete() {}
  async get(id: string) {
    return this.records.get(id) ?? null;
  }
  async count() {
    return this.records.size;
  }
  async *scan(): AsyncIterable<FeatureRecord[]> {}
}

let dir: string;
let bus: FileQueue;
let bucket: MemoryBucket;
let features: MemoryFeatures;
let embedder: FakeEmbedder;

const settings: EmbedJobSettings = { batchSize: 4, leaseSeconds: 30, maxEmptyPulls: 2, maxRuntimeMs: 60_000 };

function event(name: string, generation: string, eventType: 'finalize' | 'delete' = 'finalize'): ImageEventInput {
  return { bucket: 'iss-images', name, generation, contentType: 'image/jpeg', size: 8, eventType, eventTime: '2025-03-01T10:00:00Z' };
}

function jobDeps(overrides: Partial<EmbedJobSettings> = {}) {
  const logger = captureLogger().logger;
  return {
    bus,
    logger,
    settings: { ...settings, ...overrides },
    embed: { blobs: () => bucket, embedder, bus, rejections: new MemoryRejections(), features, logger, limits: { maxBytes: 1000 } },
  };
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'iss-embed-job-'));
  bus = new FileQueue(dir, { maxDeliveryAttempts: 3, ackDeadlineSeconds: 30 });
  bucket = new MemoryBucket('iss-images');
  features = new MemoryFeatures();
  embedder = new FakeEmbedder('m1');
});
afterEach(async () => {
  await bus.close();
  await rm(dir, { recursive: true, force: true });
});

describe('embed job task loop', () => {
  it('works the backlog in batches, settles every message, and stops when the subscription stays empty', async () => {
    for (let i = 0; i < 6; i += 1) bucket.objects.set(`photos/${i}.jpg`, { data: Buffer.from([i + 1, 2, 3, 4, 5, 6, 7, 8]), generation: String(100 + i) });
    await bus.publishBatch(
      TOPICS.imageEvents,
      [0, 1, 2, 3, 4, 5].map((i) => ({ data: event(`photos/${i}.jpg`, String(100 + i)) })),
    );
    await bus.publish(TOPICS.imageEvents, event('photos/gone.jpg', '7', 'delete'));
    await bus.publish(TOPICS.imageEvents, event('photos/replaced.jpg', '1')); // not in the bucket at that generation
    await bus.publish(TOPICS.imageEvents, { not: 'an image event' });

    const result = await runEmbedJob(jobDeps());
    expect(result.stoppedBecause).toBe('backlog-empty');
    expect(result.batches).toBe(3);
    expect(result.outcomes).toEqual({ embedded: 6, deleted: 1, superseded: 1, 'dead-lettered': 1 });

    const embeddings = await bus.pull<EmbeddingMessage>(TOPICS.embeddings, { maxMessages: 100 });
    expect(embeddings.map((d) => d.data.op).sort()).toEqual(['delete', 'upsert', 'upsert', 'upsert', 'upsert', 'upsert', 'upsert']);
    expect(features.records.size).toBe(6);
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 0, inflight: 0, deadLettered: 1 });
    expect((await bus.listDeadLetters(TOPICS.imageEvents))[0]!.reason).toMatch(/malformed image event/);
  });

  it('stops at the time budget without pulling more', async () => {
    await bus.publish(TOPICS.imageEvents, event('photos/a.jpg', '1'));
    let t = 0;
    const result = await runEmbedJob({ ...jobDeps({ maxRuntimeMs: 10 }), now: () => (t += 20) });
    expect(result).toMatchObject({ stoppedBecause: 'max-runtime', batches: 0 });
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 1 });
  });

  it('releases a batch that fails as a whole and exits with an error after repeated failures', async () => {
    bucket.objects.set('photos/a.jpg', { data: Buffer.from([1, 2, 3, 4]), generation: '1' });
    await bus.publish(TOPICS.imageEvents, event('photos/a.jpg', '1'));
    embedder.embedDecoded = async () => {
      throw new Error('CUDA out of memory');
    };
    await expect(runEmbedJob(jobDeps({ maxConsecutiveFailures: 2 }))).rejects.toThrow(EmbedJobFailedError);
    // The message was nacked each time: it is back in the queue (or dead-lettered after max attempts), never lost.
    const stats = await bus.stats(TOPICS.imageEvents);
    expect(stats.ready + stats.deadLettered).toBe(1);
    expect(stats.inflight).toBe(0);
  });
});

describe('embed task (what jobs/embed/main.ts runs)', () => {
  /** A registry the job may only read: any write fails the test. */
  const readOnlyRegistry = (active: ModelRegistry['active']) => strict<ModelRegistry>('registry', { active, localPath: async (v: string) => `/models/${v}` });

  function taskDeps(model: EmbedTaskDeps['model'], logger = captureLogger().logger): EmbedTaskDeps {
    const { embed, ...rest } = jobDeps();
    const { embedder: _unused, ...embedWithoutModel } = embed;
    return { ...rest, logger, model, embed: embedWithoutModel, executionProvider: 'cuda' };
  }

  it('with no active model registers nothing, pulls nothing, and exits 1 with an ERROR naming the bootstrap job and how to run it', async () => {
    await bus.publish(TOPICS.imageEvents, event('photos/a.jpg', '1'));
    const { logger, lines } = captureLogger();
    const hint = bootstrapJobHint({ BOOTSTRAP_JOB_NAME: 'iss-bootstrap-model', GCP_REGION: 'europe-west1' });
    const model = new ModelHolder(
      readOnlyRegistry(async () => null),
      { maxPixels: 1e7, executionProvider: 'cuda', logger, absentHint: hint },
    );

    expect(await embedTaskMain(() => taskDeps(model, logger), logger)).toBe(1);
    const errors = lines().filter((l) => l.severity === 'ERROR');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'NO_ACTIVE_MODEL' });
    expect(errors[0]!.message).toMatch(/^embed task failed: no model yet: the bootstrap job iss-bootstrap-model has not registered the first model/);
    expect(errors[0]!.message).toContain('`gcloud run jobs execute iss-bootstrap-model --region europe-west1 --wait`');
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 1, inflight: 0 });
  });

  it('fails the task when CUDA was required and did not load (no silent CPU run), keeping the cause', async () => {
    await bus.publish(TOPICS.imageEvents, event('photos/a.jpg', '1'));
    const { logger, lines } = captureLogger();
    const model = {
      get: () => Promise.reject(new CudaUnavailableError('/models/m1/image.onnx', new Error('libcudart.so.12: cannot open shared object file'))),
      close: async () => {},
    };
    expect(await embedTaskMain(() => taskDeps(model, logger), logger)).toBe(1);
    const [error] = lines().filter((l) => l.severity === 'ERROR');
    // The Error object itself is logged: its name, stack and the cause chain.
    expect(error).toMatchObject({
      code: 'CUDA_UNAVAILABLE',
      err: { type: 'CudaUnavailableError', cause: { message: 'libcudart.so.12: cannot open shared object file' } },
    });
    expect((error!.err as { stack: string }).stack).toMatch(/CudaUnavailableError/);
    expect(error!.message).toMatch(/CUDA execution provider was required .* ONNXRUNTIME_NODE_INSTALL=cuda12 .*gpu: false/);
    expect(await bus.stats(TOPICS.imageEvents)).toMatchObject({ ready: 1 });
  });

  it('a configuration error is one ERROR line and exit code 1', async () => {
    const { logger, lines } = captureLogger();
    const code = await embedTaskMain(() => {
      throw new Error('Invalid configuration of embedJob:\n- MODELS_BUCKET is missing');
    }, logger);
    expect(code).toBe(1);
    expect(lines().map((l) => l.severity)).toEqual(['ERROR']);
  });

  it('with an active model loads it first, works the backlog and exits 0', async () => {
    bucket.objects.set('photos/a.jpg', { data: Buffer.from([1, 2, 3, 4, 5]), generation: '1' });
    await bus.publish(TOPICS.imageEvents, event('photos/a.jpg', '1'));
    const { logger, lines } = captureLogger();
    const active = { version: 'm1' } as Awaited<ReturnType<ModelRegistry['active']>>;
    const model = new ModelHolder(
      readOnlyRegistry(async () => active),
      { maxPixels: 1e7, logger, load: async (_dir, version) => new FakeEmbedder(version) },
    );
    expect(await embedTaskMain(() => taskDeps(model, logger), logger)).toBe(0);
    const messages = lines().map((l) => l.message);
    expect(messages[0]).toBe('model loaded');
    expect(lines().find((l) => l.message === 'embed task finished')).toMatchObject({ outcomes: { embedded: 1 } });
    expect(features.records.size).toBe(1);
  });
});

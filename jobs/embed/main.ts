import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsRejectionLog } from '../../shared/adapters/gcp/gcs-rejection-log.js';
import { TOPICS } from '../../shared/contracts.js';
import type { BlobStore } from '../../shared/ports/blob-store.js';
import { embedTaskMain, type EmbedTaskDeps } from '../../shared/services/embed-task.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { bootstrapJobHint, cloudConfig } from '../../shared/wiring/cloud-config.js';
import { cloudEventBus, cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';
import { GPU_SMOKE_FLAG, gpuSmokeMain } from './gpu-smoke.js';

/** Lease on pulled image events; extended every half of it while a batch is embedded. */
const LEASE_SECONDS = 120;

/**
 * The embed job (Cloud Run job, GPU): one process per task. Loads the registry's active model —
 * on CUDA when ONNX_EXECUTION_PROVIDER=cuda, and then a CUDA provider that does not load fails the
 * task (never a silent CPU run) — and works the image-events backlog with the embed loop both modes share
 * (shared/services/embed-loop.ts, through embed-task.ts).
 * It only reads the models bucket: with no active model the task fails with a message naming the
 * bootstrap job. Exit code 0 when the backlog is done or the time budget is spent, 1 on a fatal
 * error (Cloud Run retries the task up to its maxRetries).
 *
 * `--gpu-smoke-test` (an execution with overridden args) runs jobs/embed/gpu-smoke.ts instead.
 */
function build(): EmbedTaskDeps {
  const config = cloudConfig('embedJob');
  const logger = cloudLogger('embedJob').child({ task: config.CLOUD_RUN_TASK_INDEX, tasks: config.CLOUD_RUN_TASK_COUNT });
  const storage = storageClient();
  const bus = cloudEventBus({
    projectId: config.GCP_PROJECT,
    topics: { [TOPICS.imageEvents]: config.TOPIC_IMAGE_EVENTS, [TOPICS.embeddings]: config.TOPIC_EMBEDDINGS },
    subscriptions: { [TOPICS.imageEvents]: config.SUBSCRIPTION_IMAGE_EVENTS },
    logger,
  });
  const registry = cloudModelRegistry(storage, config.MODELS_BUCKET, logger);
  const model = new ModelHolder(registry, {
    maxPixels: config.MAX_PIXELS,
    executionProvider: config.ONNX_EXECUTION_PROVIDER,
    logger,
    absentHint: bootstrapJobHint(config),
  });
  const features = new GcsBlobStore(storage, config.FEATURES_BUCKET);
  const stores = new Map<string, BlobStore>();
  const blobs = (bucket: string): BlobStore => {
    let store = stores.get(bucket);
    if (!store) stores.set(bucket, (store = new GcsBlobStore(storage, bucket)));
    return store;
  };
  return {
    model,
    bus,
    logger,
    executionProvider: config.ONNX_EXECUTION_PROVIDER,
    embed: {
      blobs,
      bus,
      rejections: new GcsRejectionLog(features),
      features: new GcsFeatureStore(features, { logger }),
      logger,
      limits: { maxBytes: config.MAX_BYTES },
    },
    settings: {
      batchSize: config.BATCH_SIZE,
      leaseSeconds: LEASE_SECONDS,
      maxEmptyPulls: config.EMBED_EMPTY_PULLS,
      maxRuntimeMs: config.EMBED_MAX_RUNTIME_SECONDS * 1000,
    },
  };
}

const args = process.argv.slice(2);
const run = args.includes(GPU_SMOKE_FLAG) ? gpuSmokeMain(args.filter((a) => a !== GPU_SMOKE_FLAG)) : embedTaskMain(build, cloudLogger('embedJob'));
void run.then((code) => {
  process.exitCode = code;
});

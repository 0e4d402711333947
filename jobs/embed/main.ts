import os from 'node:os';
import path from 'node:path';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsRejectionLog } from '../../shared/adapters/gcp/gcs-rejection-log.js';
import { TOPICS } from '../../shared/contracts.js';
import { errorMessage } from '../../shared/errors.js';
import type { BlobStore } from '../../shared/ports/blob-store.js';
import { ensureActiveModel, ModelHolder } from '../../shared/services/model-holder.js';
import { cloudConfig } from '../../functions/config.js';
import { cloudEventBus, cloudLogger, cloudModelRegistry, storageClient } from '../../functions/runtime.js';
import { runEmbedJob } from './embed-job.js';

/** Lease on pulled image events; extended every half of it while a batch is embedded. */
const LEASE_SECONDS = 120;

/**
 * The embed job (Cloud Run job, GPU): one process per task. Loads the active model (CUDA when
 * ONNX_EXECUTION_PROVIDER=cuda, CPU if the CUDA provider cannot load), then works the image-events
 * backlog (jobs/embed/embed-job.ts). Exit code 0 when the backlog is done or the time budget is
 * spent, 1 on a fatal error (Cloud Run retries the task up to its maxRetries).
 */
async function main(): Promise<void> {
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
  // First run of a new stack: the registry is empty, so the built-in default model (converted
  // from the nsfwjs package inside this image, no network) is registered and activated.
  await ensureActiveModel(registry, path.join(os.tmpdir(), 'iss-convert'), logger);
  const model = new ModelHolder(registry, { maxPixels: config.MAX_PIXELS, executionProvider: config.ONNX_EXECUTION_PROVIDER, logger });
  const loadStart = Date.now();
  const embedder = await model.get();
  logger.info({ modelVersion: embedder.modelVersion, executionProvider: config.ONNX_EXECUTION_PROVIDER, ms: Date.now() - loadStart }, 'model loaded');

  const features = new GcsBlobStore(storage, config.FEATURES_BUCKET);
  const stores = new Map<string, BlobStore>();
  const blobs = (bucket: string): BlobStore => {
    let store = stores.get(bucket);
    if (!store) stores.set(bucket, (store = new GcsBlobStore(storage, bucket)));
    return store;
  };
  try {
    const result = await runEmbedJob({
      bus,
      logger,
      embed: {
        blobs,
        embedder,
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
    });
    logger.info({ ...result }, 'embed task finished');
  } finally {
    await bus.close();
    await model.close();
  }
}

main().catch((err: unknown) => {
  cloudLogger('embedJob').fatal({ err: errorMessage(err), code: (err as { code?: unknown }).code }, 'embed task failed');
  process.exitCode = 1;
});

import path from 'node:path';
import type { LocalConfig } from '../shared/config.js';
import { FileQueue } from '../shared/adapters/local/file-queue.js';
import { FolderBlobStore } from '../shared/adapters/local/folder-blob-store.js';
import { JsonRejectionLog } from '../shared/adapters/local/json-rejection-log.js';
import { PerTowerFeatureStore } from '../shared/adapters/local/per-tower-feature-store.js';
import { LanceDbIndexCatalog } from '../shared/adapters/local/lancedb-index.js';
import { LocalModelRegistry } from '../shared/adapters/local/local-model-registry.js';
import { openOpenSearchCatalog } from '../shared/adapters/opensearch/index.js';
import { createLogger, type Logger } from '../shared/logger.js';
import { ensureActiveModel } from '../shared/services/model-bootstrap.js';
import { ModelHolder } from '../shared/services/model-holder.js';
import type { BlobStore } from '../shared/ports/blob-store.js';
import type { VectorIndex, VectorIndexCatalog } from '../shared/ports/vector-index.js';
import type { EmbedDeps } from '../shared/handlers/embed-batch.js';
import type { UpsertDeps } from '../shared/handlers/upsert-vectors.js';
import { loadEmbedder } from '../shared/model/load-embedder.js';
import type { LifecycleDeps } from '../shared/services/model-lifecycle.js';

/**
 * Local mode: every port wired to its embedded adapter under one data directory
 * (`IMGSEARCH_HOME`), plus the model. The handlers are the ones the cloud runs.
 */
export interface LocalRuntime {
  config: LocalConfig;
  logger: Logger;
  bucket: FolderBlobStore;
  bus: FileQueue;
  catalog: VectorIndexCatalog;
  registry: LocalModelRegistry;
  rejections: JsonRejectionLog;
  features: PerTowerFeatureStore;
  model: ModelHolder;
  blobsFor(bucket: string): BlobStore;
  /** The live index for the active model (created on first use). */
  liveIndex(): Promise<VectorIndex>;
  embedDeps(): EmbedDeps;
  upsertDeps(): Promise<UpsertDeps>;
  close(): Promise<void>;
}

export async function openLocalRuntime(config: LocalConfig, options: { logger?: Logger } = {}): Promise<LocalRuntime> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  const bucket = new FolderBlobStore(config.bucketDir);
  const bus = new FileQueue(config.paths.queue, { maxDeliveryAttempts: config.maxAttempts, ackDeadlineSeconds: config.ackDeadlineSeconds, logger });
  const catalog: VectorIndexCatalog =
    config.index === 'opensearch'
      ? await openOpenSearchCatalog({ ...config.opensearch, url: config.opensearch.url! })
      : await LanceDbIndexCatalog.open(config.paths.index);
  const registry = new LocalModelRegistry(config.paths.models);
  const rejections = new JsonRejectionLog(config.paths.rejected);
  const features = await PerTowerFeatureStore.open(config.paths.features);
  const model = new ModelHolder(registry, { threads: config.threads, maxPixels: config.maxPixels, logger });
  await ensureActiveModel(registry, path.join(config.paths.cache, 'converted'), logger);

  const stores = new Map<string, BlobStore>([[bucket.bucket, bucket]]);
  const blobsFor = (name: string): BlobStore => {
    let store = stores.get(name);
    if (!store) {
      store = new FolderBlobStore(name);
      stores.set(name, store);
    }
    return store;
  };

  let liveCache: { at: number; value: VectorIndex } | null = null;
  const liveIndex = async (): Promise<VectorIndex> => {
    if (liveCache && Date.now() - liveCache.at < 1000) return liveCache.value;
    const embedder = await model.get();
    const value = await catalog.ensureLive(embedder.modelVersion, embedder.dimension);
    liveCache = { at: Date.now(), value };
    return value;
  };

  return {
    config,
    logger,
    bucket,
    bus,
    catalog,
    registry,
    rejections,
    features,
    model,
    blobsFor,
    liveIndex,
    embedDeps: () => ({
      blobs: blobsFor,
      embedder: model.current(),
      bus,
      rejections,
      features,
      logger,
      index: liveCache?.value ?? null,
      limits: { maxBytes: config.maxBytes },
    }),
    upsertDeps: async () => ({ index: await liveIndex(), bus, rejections, features, logger }),
    async close() {
      await model.close();
      await bus.close();
      await catalog.close();
    },
  };
}

/** What promotion, rollback and retraining need from the local runtime. */
export function lifecycleDeps(runtime: LocalRuntime): LifecycleDeps {
  return {
    registry: runtime.registry,
    catalog: runtime.catalog,
    features: runtime.features,
    logger: runtime.logger,
    loadEmbedder: async (version) => loadEmbedder(await runtime.registry.localPath(version), { maxPixels: runtime.config.maxPixels, threads: runtime.config.threads }),
  };
}

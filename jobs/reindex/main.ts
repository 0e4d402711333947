import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { reindexFromFeatures } from '../../shared/services/reindex.js';
import { cloudConfig } from '../../shared/wiring/cloud-config.js';
import { cloudIndexCatalog, cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';

/**
 * The reindex job (Cloud Run job on the VPC, so it reaches a private OpenSearch): builds a new
 * index version for the active model from the GCS feature store (re-projection, no image
 * decoded), verifies the count, swaps the alias. Started by the retrain job after a promotion.
 */
async function main(): Promise<void> {
  const config = cloudConfig('reindexJob');
  const logger = cloudLogger('reindexJob');
  const storage = storageClient();
  const catalog = await cloudIndexCatalog(config, logger);
  const registry = cloudModelRegistry(storage, config.MODELS_BUCKET, logger);
  const model = new ModelHolder(registry, { maxPixels: config.MAX_PIXELS, executionProvider: config.ONNX_EXECUTION_PROVIDER, logger });
  try {
    const embedder = await model.get();
    const features = new GcsFeatureStore(new GcsBlobStore(storage, config.FEATURES_BUCKET), { logger });
    const started = Date.now();
    const result = await reindexFromFeatures({ catalog, features, embedder, logger });
    logger.info(
      {
        index: result.index,
        previous: result.previous,
        count: result.count,
        needsReembedding: result.needsReembedding.length,
        modelVersion: embedder.modelVersion,
        ms: Date.now() - started,
      },
      'reindex finished',
    );
    if (result.needsReembedding.length > 0) {
      // Their base embeddings come from another image tower: a re-upload re-embeds them.
      logger.warn({ count: result.needsReembedding.length, sample: result.needsReembedding.slice(0, 5).map((r) => r.uri) }, 'some images need re-embedding');
    }
  } finally {
    await model.close();
    await catalog.close();
  }
}

main().catch((err: unknown) => {
  cloudLogger('reindexJob').fatal({ err, code: (err as { code?: unknown }).code }, 'reindex failed');
  process.exitCode = 1;
});

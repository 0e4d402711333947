import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { BlobDriftStateStore, retrainRequestPublisher, runDriftCheck } from '../../shared/services/drift.js';
import { ObjectQueryVectorSource } from '../../shared/services/query-vector-objects.js';
import { cloudConfig, DRIFT_STATE_OBJECT } from '../../shared/wiring/cloud-config.js';
import { cloudEventBus, cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';

/**
 * The scheduled drift check (Cloud Run job in the trainer image, started by startDriftCheck): the
 * active model's drift report against its profile (shared/services/drift.ts); when it calls for a
 * retraining, a request with its reason on retrain-requests. Its state (last report, requests made,
 * the cooldown) lives under drift/ in the models bucket. The queries it compares are the newest
 * DRIFT_QUERY_SAMPLE the search service sampled under query-vectors/ of the features bucket in the
 * last 7 days (0: none); a listing that fails there is logged by the source and rethrown.
 */
async function main(): Promise<void> {
  const config = cloudConfig('driftJob');
  const logger = cloudLogger('driftJob');
  const storage = storageClient();
  const bus = cloudEventBus({ projectId: config.GCP_PROJECT, topics: {}, logger });
  const features = new GcsBlobStore(storage, config.FEATURES_BUCKET);
  const queries = config.DRIFT_QUERY_SAMPLE > 0 ? new ObjectQueryVectorSource(features, { capacity: config.DRIFT_QUERY_SAMPLE, logger }) : undefined;
  try {
    const report = await runDriftCheck(
      {
        registry: cloudModelRegistry(storage, config.MODELS_BUCKET, logger),
        features: new GcsFeatureStore(features, { logger }),
        state: new BlobDriftStateStore(new GcsBlobStore(storage, config.MODELS_BUCKET), DRIFT_STATE_OBJECT),
        requestRetrain: retrainRequestPublisher(bus, config.TOPIC_RETRAIN_REQUESTS, logger),
        queries,
        logger,
      },
      {
        recentUploads: config.DRIFT_RECENT,
        minSample: config.DRIFT_MIN_SAMPLE,
        psiThreshold: config.DRIFT_PSI,
        ksThreshold: config.DRIFT_KS,
        minNewLabelled: config.DRIFT_MIN_NEW_LABELLED,
        recallDrop: config.DRIFT_RECALL_DROP,
        cooldownHours: config.DRIFT_COOLDOWN_HOURS,
        servedBaseline: config.DRIFT_SERVED_BASELINE,
      },
    );
    logger.info(
      {
        modelVersion: report.modelVersion,
        uploads: report.signals?.uploads,
        queries: report.signals?.queries,
        servedQueries: report.signals?.servedQueries,
        recall: report.recall,
        decision: report.decision,
        note: report.note,
      },
      'drift check finished',
    );
  } finally {
    await bus.close();
  }
}

main().catch((err: unknown) => {
  cloudLogger('driftJob').fatal({ err }, 'drift check failed');
  process.exitCode = 1;
});

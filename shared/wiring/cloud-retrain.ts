import type { Storage } from '@google-cloud/storage';
import { GcsBlobStore } from '../adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../adapters/gcp/gcs-feature-store.js';
import type { Logger } from '../logger.js';
import { readFeedbackObjects } from '../services/feedback.js';
import type { RetrainDeps } from '../services/retrain.js';
import type { CloudConfig } from './cloud-config.js';

/**
 * What the cloud retrain job (jobs/retrain) trains on, from the features bucket: the stored base
 * embeddings under `features/` and the click feedback the search service records under
 * `feedback/` (the newest RETRAIN_MAX_FEEDBACK events, each click once; shared/services/feedback.ts).
 * The trainer's account may only list and read those two prefixes (infra/components/retraining.ts).
 */
export function cloudRetrainSources(
  storage: Storage,
  config: Pick<CloudConfig<'retrainJob'>, 'FEATURES_BUCKET' | 'RETRAIN_MAX_FEEDBACK'>,
  logger: Logger,
): Pick<RetrainDeps, 'features' | 'feedback'> {
  const featuresBucket = new GcsBlobStore(storage, config.FEATURES_BUCKET);
  return {
    features: new GcsFeatureStore(featuresBucket, { logger }),
    feedback: async () => (await readFeedbackObjects(featuresBucket, { prefix: 'feedback/', maxEvents: config.RETRAIN_MAX_FEEDBACK, logger })).pairs,
  };
}

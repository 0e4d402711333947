import os from 'node:os';
import path from 'node:path';
import { errorMessage } from '../../shared/errors.js';
import { bootstrapModel } from '../../shared/services/model-bootstrap.js';
import { cloudConfig } from '../../shared/wiring/cloud-config.js';
import { cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';

/**
 * The bootstrap job (Cloud Run job in the trainer image, run once by `pulumi up`): registers and
 * promotes the first model (INITIAL_MODEL: `default` = the offline MobileNetV2 converted from
 * nsfwjs, or `clip-vit-b32` = the pinned, SHA-256-checked CLIP download) when the registry in
 * MODELS_BUCKET has no active model. The only workload besides the trainer that writes the models
 * bucket; the search service and the embed job only read it.
 *
 * Logs one JSON result line. Exit code 0 on success, including "a model was already active"
 * (status `present`: running it again changes nothing); 1 on failure, with the error logged.
 */
async function main(): Promise<0 | 1> {
  const logger = cloudLogger('bootstrapModel');
  try {
    const config = cloudConfig('bootstrapModel');
    const registry = cloudModelRegistry(storageClient(), config.MODELS_BUCKET, logger);
    const result = await bootstrapModel(registry, { initial: config.INITIAL_MODEL, cacheDir: path.join(os.tmpdir(), 'iss-bootstrap'), logger });
    logger.info(
      { ...result, bucket: config.MODELS_BUCKET },
      result.status === 'present' ? `model ${result.version} is already active; nothing to do` : `model ${result.version} registered and active`,
    );
    return 0;
  } catch (err) {
    logger.error({ err, code: (err as { code?: unknown }).code }, `bootstrap of the first model failed: ${errorMessage(err)}`);
    return 1;
  }
}

void main().then((code) => {
  process.exitCode = code;
});

import type { Storage } from '@google-cloud/storage';
import { z } from 'zod';
import { GcsBlobStore } from '../adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../adapters/gcp/gcs-feature-store.js';
import { ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import { readFeedbackObjects } from '../services/feedback.js';
import type { RetrainDeps, RetrainOptions } from '../services/retrain.js';
import { parseWith } from '../validation.js';
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

const flagsSchema = z
  .object({
    seed: z.coerce
      .number()
      .int()
      .min(0)
      .max(2 ** 31 - 1),
    epochs: z.coerce.number().int().min(0).max(10_000),
    margin: z.coerce.number().min(0).max(1),
    heldOut: z.coerce.number().gt(0).lt(1),
    /** Hidden units of the projection head (wider learns more from large collections, trains slower). */
    hidden: z.coerce.number().int().min(1).max(8192),
  })
  .partial();
const FLAGS = Object.keys(flagsSchema.shape).join(', ');

/**
 * The retrain job's options: `--epochs=20 --held-out=0.2` (kebab or camel case; a retrain
 * request's `args`) over RETRAIN_* variables; the service defaults the rest. Not `unlockBlocks`:
 * the cloud feature shards do not keep the block activations (README "Fine-tuning the image
 * tower's top blocks").
 */
export function retrainArgs(
  argv: string[],
  config: Pick<CloudConfig<'retrainJob'>, 'RETRAIN_SEED' | 'RETRAIN_EPOCHS' | 'RETRAIN_MARGIN' | 'RETRAIN_HELD_OUT' | 'RETRAIN_HIDDEN'>,
): RetrainOptions {
  const raw: Record<string, string> = {};
  for (const arg of argv) {
    const m = /^--([a-zA-Z-]+)=(.*)$/.exec(arg);
    if (!m) throw new ParseError(`unexpected argument ${JSON.stringify(arg)}: pass options as --key=value (${FLAGS})`);
    const key = m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!(key in flagsSchema.shape)) throw new ParseError(`unknown option --${m[1]}; known: ${FLAGS}`);
    if (m[2] !== '') raw[key] = m[2]!;
  }
  const flags = parseWith(flagsSchema, raw, 'invalid retraining options', { root: 'flags' });
  const seed = flags.seed ?? config.RETRAIN_SEED;
  const epochs = flags.epochs ?? config.RETRAIN_EPOCHS;
  const margin = flags.margin ?? config.RETRAIN_MARGIN;
  const heldOutFraction = flags.heldOut ?? config.RETRAIN_HELD_OUT;
  const hidden = flags.hidden ?? config.RETRAIN_HIDDEN;
  return {
    ...(seed !== undefined ? { seed } : {}),
    ...(epochs !== undefined ? { epochs } : {}),
    ...(margin !== undefined ? { margin } : {}),
    ...(heldOutFraction !== undefined ? { heldOutFraction } : {}),
    ...(hidden !== undefined ? { training: { hidden } } : {}),
  };
}

/**
 * The retrain job (Vertex AI custom job on the trainer image, started by functions/start-retraining):
 * one run of the retrain service (shared/services/retrain.ts) on the GCS feature store, the GCS
 * model registry and the click feedback under `feedback/` of the features bucket. A winning
 * candidate goes live the cloud way (shared/services/model-lifecycle.ts): promoted in the
 * registry, then the reindex job (REINDEX_JOB_NAME, on the VPC) started to build its index and
 * swap the alias. Settings come from the cloud config (`retrainJob`); options are `--key=value`
 * flags (a retrain request's `args`: seed, epochs, margin, heldOut, hidden) over RETRAIN_* variables.
 * Prints the result as one JSON line; exit code 0 whether or not the candidate was promoted.
 * Local retraining is `imgsearch retrain` (same service, local adapters).
 */
import { v2 } from '@google-cloud/run';
import { z } from 'zod';
import { CloudRunJobLauncher } from '../../shared/adapters/gcp/cloud-run-job-launcher.js';
import { ParseError } from '../../shared/errors.js';
import { promoteThenStartReindexJob } from '../../shared/services/model-lifecycle.js';
import { retrain, type RetrainOptions } from '../../shared/services/retrain.js';
import { parseWith } from '../../shared/validation.js';
import { cloudConfig, type CloudConfig } from '../../shared/wiring/cloud-config.js';
import { cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';
import { cloudRetrainSources } from '../../shared/wiring/cloud-retrain.js';

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

/** `--epochs=20 --held-out=0.2` (or `--heldOut=0.2`) over RETRAIN_EPOCHS / RETRAIN_HELD_OUT; the service defaults the rest. */
function retrainArgs(
  argv: string[],
  config: Pick<CloudConfig<'retrainJob'>, 'RETRAIN_SEED' | 'RETRAIN_EPOCHS' | 'RETRAIN_MARGIN' | 'RETRAIN_HELD_OUT' | 'RETRAIN_HIDDEN'>,
): RetrainOptions {
  const raw: Record<string, string> = {};
  for (const arg of argv) {
    const m = /^--([a-zA-Z-]+)=(.*)$/.exec(arg);
    if (!m) throw new ParseError(`unexpected argument ${JSON.stringify(arg)}: pass options as --key=value (seed, epochs, margin, heldOut, hidden)`);
    const key = m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!(key in flagsSchema.shape)) throw new ParseError(`unknown option --${m[1]}; known: seed, epochs, margin, heldOut, hidden`);
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

async function main(): Promise<void> {
  const config = cloudConfig('retrainJob');
  const logger = cloudLogger('retrainJob');
  const options = retrainArgs(process.argv.slice(2), config);
  const storage = storageClient();
  const registry = cloudModelRegistry(storage, config.MODELS_BUCKET, logger);
  const reindexJob = config.REINDEX_JOB_NAME;
  const launcher = reindexJob
    ? new CloudRunJobLauncher({
        jobs: new v2.JobsClient(),
        executions: new v2.ExecutionsClient(),
        projectId: config.GCP_PROJECT,
        region: config.GCP_REGION,
        jobNameFor: () => reindexJob,
        // Container args would replace the job's own command: the reindex job takes no arguments.
        overridesFor: () => ({}),
        logger,
      })
    : null;
  const result = await retrain(
    {
      ...cloudRetrainSources(storage, config, logger),
      registry,
      logger,
      activate: promoteThenStartReindexJob({ registry, launcher, logger }),
    },
    options,
    (p) => logger.info({ progress: p }, `retrain ${p.stage}`),
  );
  const { promoted, decision, candidate, current, activation } = result;
  process.stdout.write(
    `${JSON.stringify({ promoted, decision, candidate: candidate.metrics, current: current.metrics, reindex: activation?.reindex ?? null })}\n`,
  );
}

main().catch((err: unknown) => {
  cloudLogger('retrainJob').fatal({ err, code: (err as { code?: unknown }).code }, 'retraining failed');
  process.exitCode = 1;
});

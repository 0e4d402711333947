/**
 * Container entry point of the retraining job (Vertex AI custom job / Cloud Run job, or locally).
 * Options come as `--key=value` flags (what functions/start-retraining.ts passes: seed, epochs,
 * margin, heldOut) or RETRAIN_* variables; flags win.
 *  - Cloud (MODELS_BUCKET and FEATURES_BUCKET set): GCS registry + GCS feature store; a winning
 *    candidate is promoted in the registry, then the reindex job (REINDEX_JOB_NAME) is started to
 *    build its index and swap the alias.
 *  - Local (IMGSEARCH_HOME): the same flow as `imgsearch retrain` — promote only together with a
 *    re-projected index, plot refreshed.
 * Prints the result as one JSON line; exit code 0 whether or not the candidate was promoted.
 */
import path from 'node:path';
import { z } from 'zod';
import { ParseError, errorMessage } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import type { RetrainOptions } from './retrain-job.js';

const optionsSchema = z.object({
  seed: z.coerce.number().int().default(42),
  epochs: z.coerce.number().int().min(0).default(30),
  margin: z.coerce.number().min(0).max(1).default(0.005),
  heldOut: z.coerce.number().gt(0).lt(1).default(0.1),
  /** Hidden units of the projection head (wider learns more from large collections, trains slower). */
  hidden: z.coerce.number().int().min(1).max(8192).optional(),
});

/** `--epochs=20 --held-out=0.2` (and `--heldOut=0.2`) over RETRAIN_EPOCHS / RETRAIN_HELD_OUT. */
export function retrainArgs(argv: string[], env: NodeJS.ProcessEnv): RetrainOptions {
  const raw: Record<string, string | undefined> = { seed: env.RETRAIN_SEED, epochs: env.RETRAIN_EPOCHS, margin: env.RETRAIN_MARGIN, heldOut: env.RETRAIN_HELD_OUT, hidden: env.RETRAIN_HIDDEN };
  for (const arg of argv) {
    const m = /^--([a-zA-Z-]+)=(.*)$/.exec(arg);
    if (!m) throw new ParseError(`unexpected argument ${JSON.stringify(arg)}: pass options as --key=value (seed, epochs, margin, heldOut, hidden)`);
    const key = m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    if (!(key in optionsSchema.shape)) throw new ParseError(`unknown option --${m[1]}; known: seed, epochs, margin, heldOut, hidden`);
    raw[key] = m[2];
  }
  const parsed = optionsSchema.safeParse(Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined && v !== '')));
  if (!parsed.success) throw new ParseError(`invalid retraining options: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const { seed, epochs, margin, heldOut, hidden } = parsed.data;
  return { seed, epochs, margin, heldOutFraction: heldOut, ...(hidden !== undefined ? { training: { hidden } } : {}) };
}

async function runCloud(options: RetrainOptions, logger: Logger): Promise<unknown> {
  const [{ GcsBlobStore }, { GcsFeatureStore }, { cloudModelRegistry, storageClient }, { runRetraining }] = await Promise.all([
    import('../../shared/adapters/gcp/gcs-blob-store.js'),
    import('../../shared/adapters/gcp/gcs-feature-store.js'),
    import('../../functions/runtime.js'),
    import('./retrain-job.js'),
  ]);
  const storage = storageClient();
  const registry = cloudModelRegistry(storage, process.env.MODELS_BUCKET!, logger);
  const features = new GcsFeatureStore(new GcsBlobStore(storage, process.env.FEATURES_BUCKET!), { logger });
  const result = await runRetraining({ features, registry, logger }, options, (p) => logger.info({ progress: p }, `retrain ${p.stage}`));
  let reindex: unknown = null;
  const job = process.env.REINDEX_JOB_NAME;
  if (result.promoted && job) {
    const { v2 } = await import('@google-cloud/run');
    const { CloudRunJobLauncher } = await import('../../shared/adapters/gcp/cloud-run-job-launcher.js');
    const launcher = new CloudRunJobLauncher({
      jobs: new v2.JobsClient(),
      executions: new v2.ExecutionsClient(),
      projectId: process.env.GCP_PROJECT ?? '',
      region: process.env.GCP_REGION ?? '',
      jobNameFor: () => job,
      // Container args would replace the job's own command: the reindex job takes no arguments.
      overridesFor: () => ({}),
      logger,
    });
    reindex = await launcher.run('reindex', {});
    logger.info({ execution: reindex }, 'reindex job started for the promoted model');
  }
  return { promoted: result.promoted, decision: result.decision, candidate: result.candidate.metrics, current: result.current.metrics, reindex };
}

async function runLocal(options: RetrainOptions, logger: Logger): Promise<unknown> {
  const [{ runRetraining }, { loadConfig }, { openLocalRuntime, lifecycleDeps }, { readFeedbackFile }, { retrainAndActivate }] = await Promise.all([
    import('./retrain-job.js'),
    import('../../shared/config.js'),
    import('../../cli/runtime.js'),
    import('../../shared/services/feedback.js'),
    import('../../shared/services/retrain-flow.js'),
  ]);
  const runtime = await openLocalRuntime(loadConfig(), { logger });
  try {
    const feedback = await readFeedbackFile(path.join(runtime.config.paths.feedback, 'feedback.jsonl'));
    const result = await retrainAndActivate({ ...lifecycleDeps(runtime), runRetraining, feedback: async () => feedback.pairs, reportsDir: runtime.config.paths.reports }, options, (p) =>
      logger.info({ progress: p }, `retrain ${p.stage}`),
    );
    return { promoted: result.promoted, decision: result.decision, candidate: result.candidate.metrics, current: result.current.metrics, index: result.index };
  } finally {
    await runtime.close();
  }
}

const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'info', name: 'retrain' });
try {
  const options = retrainArgs(process.argv.slice(2), process.env);
  const cloud = Boolean(process.env.MODELS_BUCKET && process.env.FEATURES_BUCKET);
  const out = await (cloud ? runCloud(options, logger) : runLocal(options, logger));
  process.stdout.write(`${JSON.stringify(out)}\n`);
} catch (err) {
  logger.fatal({ err: errorMessage(err) }, 'retraining failed');
  process.exitCode = 1;
}

/**
 * The retrain job (Vertex AI custom job on the trainer image, started by functions/start-retraining):
 * one run of the retrain service (shared/services/retrain.ts) on the GCS feature store, the GCS
 * model registry and the click feedback under `feedback/` of the features bucket. A winning
 * candidate goes live the cloud way (shared/services/model-lifecycle.ts): promoted in the
 * registry, then the reindex job (REINDEX_JOB_NAME, on the VPC) started to build its index and
 * swap the alias. Settings come from the cloud config (`retrainJob`); options are `--key=value`
 * flags (a retrain request's `args`: seed, epochs, margin, heldOut, hidden) over RETRAIN_*
 * variables (shared/wiring/cloud-retrain.ts `retrainArgs`).
 * Prints the result as one JSON line; exit code 0 whether or not the candidate was promoted.
 * Local retraining is `imgsearch retrain` (same service, local adapters).
 *
 * Hyperparameter search (stack config `iss:retrain.tune`; shared/services/tuning.ts):
 *  - `--tune=true [--trials=8 --parallel=2 --space=<json>]`: creates a Vertex AI hyperparameter
 *    tuning job whose trials run this image, waits for it, then promotes the best trial's candidate
 *    only if the gate `retrain()` applied to it passed (finishStudy);
 *  - `--trial-of=<study> --seed= --margin= --held-out= --space=` plus the `--<parameter>=<value>`
 *    Vertex AI appends: one trial — `retrain()` without activation, its experiment run written to
 *    `runs/` of the models bucket, its validation Recall@1 reported the cloudml-hypertune way.
 */
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { VertexTuningLauncher } from '../../shared/adapters/gcp/vertex-tuning-launcher.js';
import { ParseError } from '../../shared/errors.js';
import { promoteThenStartReindexJob, REINDEX_JOB } from '../../shared/services/model-lifecycle.js';
import { BlobExperimentRunStore } from '../../shared/services/experiment-runs.js';
import { retrain } from '../../shared/services/retrain.js';
import { HypertuneReporter, parseTuningJobArgs, runStudyTrial, runVertexStudy } from '../../shared/services/tuning.js';
import { cloudConfig, RETRAIN_JOB_SPEC_ENV } from '../../shared/wiring/cloud-config.js';
import { cloudLogger, cloudModelRegistry, cloudRunJobLauncher, storageClient } from '../../shared/wiring/cloud.js';
import { cloudRetrainSources, retrainArgs } from '../../shared/wiring/cloud-retrain.js';

async function main(): Promise<void> {
  const config = cloudConfig('retrainJob');
  const logger = cloudLogger('retrainJob');
  const tuning = parseTuningJobArgs(process.argv.slice(2));
  const options = tuning ? {} : retrainArgs(process.argv.slice(2), config);
  const storage = storageClient();
  const registry = cloudModelRegistry(storage, config.MODELS_BUCKET, logger);
  // Experiment runs of tuning, beside the registry in the models bucket.
  const runs = new BlobExperimentRunStore(new GcsBlobStore(storage, config.MODELS_BUCKET), 'runs/');
  if (tuning?.mode === 'trial') {
    // One trial of a Vertex AI hyperparameter tuning job: train, record, report the metric.
    const run = await runStudyTrial(
      { ...cloudRetrainSources(storage, config, logger), registry, runs, logger, reporter: new HypertuneReporter() },
      {
        study: tuning.study,
        trial: Number(process.env.CLOUD_ML_TRIAL_ID ?? '1') || 1,
        params: tuning.params,
        seed: tuning.seed,
        margin: tuning.margin,
        heldOutFraction: tuning.heldOutFraction,
      },
    );
    process.stdout.write(`${JSON.stringify({ run: run.id, status: run.status, objective: run.objective, heldOut: run.heldOut?.imageToImage ?? null })}\n`);
    return;
  }
  const reindexJob = config.REINDEX_JOB_NAME;
  const launcher = reindexJob
    ? // The reindex job takes no arguments.
      await cloudRunJobLauncher({ projectId: config.GCP_PROJECT, region: config.GCP_REGION, port: REINDEX_JOB, jobName: reindexJob, args: 'none', logger })
    : null;
  if (tuning?.mode === 'study') {
    if (!config.TRAINER_IMAGE || !config.TRAINER_MACHINE_TYPE || !config.TRAINER_SERVICE_ACCOUNT)
      throw new ParseError('a tuning run needs TRAINER_IMAGE, TRAINER_MACHINE_TYPE and TRAINER_SERVICE_ACCOUNT (startRetraining passes them)');
    const { v1: aiplatformV1 } = await import('@google-cloud/aiplatform');
    const study = await runVertexStudy(
      {
        launcher: new VertexTuningLauncher({
          client: new aiplatformV1.JobServiceClient({ apiEndpoint: `${config.GCP_REGION}-aiplatform.googleapis.com` }),
          projectId: config.GCP_PROJECT,
          region: config.GCP_REGION,
          trial: {
            imageUri: config.TRAINER_IMAGE,
            machineType: config.TRAINER_MACHINE_TYPE,
            serviceAccount: config.TRAINER_SERVICE_ACCOUNT,
            env: Object.fromEntries(RETRAIN_JOB_SPEC_ENV.flatMap((name) => (config[name] ? [[name, config[name]]] : []))),
          },
          logger,
        }),
        registry,
        runs,
        logger,
        activate: promoteThenStartReindexJob({ registry, launcher, logger }),
      },
      tuning,
    );
    process.stdout.write(
      `${JSON.stringify({ study: study.study, job: study.job, trials: study.runs.length, best: study.best?.id ?? null, promoted: study.best?.promoted ?? false, gate: study.best?.gate ?? null })}\n`,
    );
    return;
  }
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

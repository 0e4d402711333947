import type { protos, v1 } from '@google-cloud/aiplatform';
import { AppError, ConfigError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { TuningJobLauncher } from '../../services/tuning.js';
import { envList } from './job-args.js';

type TuningJob = protos.google.cloud.aiplatform.v1.IHyperparameterTuningJob;

export interface VertexTuningLauncherOptions {
  /** Built for the region's endpoint: `new v1.JobServiceClient({ apiEndpoint: '<region>-aiplatform.googleapis.com' })`. */
  client: Pick<v1.JobServiceClient, 'createHyperparameterTuningJob' | 'getHyperparameterTuningJob'>;
  projectId: string;
  region: string;
  /** The trial container: the same trainer image and identity as the retrain job. */
  trial: { imageUri: string; machineType: string; serviceAccount: string; command?: string[]; env?: Record<string, string> };
  /** Trials allowed to fail before Vertex AI fails the job. */
  maxFailedTrialCount?: number;
  pollMs?: number;
  /** Give up waiting after this long (the job keeps running; default 24 h). */
  timeoutMs?: number;
  logger?: Logger;
  sleep?: (ms: number) => Promise<void>;
}

const DONE: Record<string, 'succeeded' | 'failed' | 'cancelled'> = {
  JOB_STATE_SUCCEEDED: 'succeeded',
  JOB_STATE_FAILED: 'failed',
  JOB_STATE_CANCELLED: 'cancelled',
  JOB_STATE_EXPIRED: 'failed',
};

/**
 * {@link TuningJobLauncher} on Vertex AI HyperparameterTuningJobs (aiplatform v1): one worker pool
 * of one replica per trial, the trainer image run with the study's arguments, Vertex AI appending
 * each trial's `--<parameter>=<value>`; polls until the job ends.
 */
export class VertexTuningLauncher implements TuningJobLauncher {
  private readonly logger: Logger;

  constructor(private readonly options: VertexTuningLauncherOptions) {
    if (!options.projectId || !options.region) throw new ConfigError('VertexTuningLauncher needs projectId and region');
    if (!options.trial.imageUri || !options.trial.machineType || !options.trial.serviceAccount)
      throw new ConfigError('Vertex AI tuning trials need TRAINER_IMAGE, TRAINER_MACHINE_TYPE and TRAINER_SERVICE_ACCOUNT');
    this.logger = options.logger ?? silentLogger;
  }

  async run(request: Parameters<TuningJobLauncher['run']>[0]): ReturnType<TuningJobLauncher['run']> {
    const { trial } = this.options;
    const [created] = await this.options.client.createHyperparameterTuningJob({
      parent: `projects/${this.options.projectId}/locations/${this.options.region}`,
      hyperparameterTuningJob: {
        displayName: request.displayName,
        studySpec: request.studySpec as protos.google.cloud.aiplatform.v1.IStudySpec,
        maxTrialCount: request.maxTrialCount,
        parallelTrialCount: request.parallelTrialCount,
        maxFailedTrialCount: this.options.maxFailedTrialCount ?? Math.max(1, Math.floor(request.maxTrialCount / 2)),
        labels: { component: 'retrain', 'iss-job': 'tune' },
        trialJobSpec: {
          serviceAccount: trial.serviceAccount,
          workerPoolSpecs: [
            {
              machineSpec: { machineType: trial.machineType },
              replicaCount: 1,
              containerSpec: {
                imageUri: trial.imageUri,
                ...(trial.command ? { command: trial.command } : {}),
                args: request.trialArgs,
                env: envList(trial.env),
              },
            },
          ],
        },
      },
    });
    const name = created.name;
    if (!name) throw new AppError('Vertex AI created a hyperparameter tuning job without a name');
    this.logger.info({ job: name, trials: request.maxTrialCount, parallel: request.parallelTrialCount }, 'hyperparameter tuning job created');
    const sleep = this.options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const deadline = Date.now() + (this.options.timeoutMs ?? 24 * 3600 * 1000);
    let job: TuningJob = created;
    while (!DONE[String(job.state)]) {
      if (Date.now() > deadline) throw new AppError(`hyperparameter tuning job ${name} still ${String(job.state)} after the wait limit`);
      await sleep(this.options.pollMs ?? 60_000);
      [job] = await this.options.client.getHyperparameterTuningJob({ name });
    }
    return { name, state: DONE[String(job.state)]!, ...(job.error?.message ? { detail: job.error.message } : {}) };
  }
}

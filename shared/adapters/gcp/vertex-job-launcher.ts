import { SingleFlight } from '../single-flight.js';
import type { protos, v1 } from '@google-cloud/aiplatform';
import { ConfigError, AppError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { JobExecution, JobLauncher } from '../../ports/job-launcher.js';
import { argsToFlags, checkJobName, envList, timestampIso } from './job-args.js';

type CustomJob = protos.google.cloud.aiplatform.v1.ICustomJob;

/** How one port job (e.g. `retrain`) runs as a Vertex AI custom job. */
export interface VertexJobSpec {
  imageUri: string;
  /** e.g. `n1-standard-8`. */
  machineType: string;
  /** e.g. `NVIDIA_TESLA_T4` (an `AcceleratorType` enum name). */
  acceleratorType?: string;
  acceleratorCount?: number;
  /** The job's own service account (least privilege), e.g. `retrain@project.iam.gserviceaccount.com`. */
  serviceAccount?: string;
  command?: string[];
  env?: Record<string, string>;
  labels?: Record<string, string>;
}

export interface VertexJobLauncherOptions {
  /** Must be built for the region's endpoint: `new v1.JobServiceClient({ apiEndpoint: '<region>-aiplatform.googleapis.com' })`. */
  client: v1.JobServiceClient;
  projectId: string;
  region: string;
  jobs: Record<string, VertexJobSpec>;
  /** Port job → custom job display name (what `running` filters on). Default `iss-<job>`. */
  displayNameFor?(job: string): string;
  /** Job arguments → container args. Default `--key=value`. */
  argsFor?(job: string, args: Record<string, string>): string[];
  logger?: Logger;
}

const ACTIVE_STATES = ['JOB_STATE_QUEUED', 'JOB_STATE_PENDING', 'JOB_STATE_RUNNING'];
const LABEL = /^[a-z][a-z0-9_-]{0,62}$/;

/**
 * {@link JobLauncher} on Vertex AI custom jobs (one worker pool, one replica): used for retraining,
 * which wants a GPU machine for minutes to hours. A second `run` while a job of the same display
 * name is queued, pending or running returns that job instead of creating another.
 */
export class VertexJobLauncher implements JobLauncher {
  private readonly options: VertexJobLauncherOptions;
  private readonly logger: Logger;
  /** Two concurrent run() calls in this process share one start. */
  private readonly starting = new SingleFlight<JobExecution>();

  constructor(options: VertexJobLauncherOptions) {
    if (!options.projectId || !options.region) throw new AppError('VertexJobLauncher needs projectId and region');
    for (const [job, spec] of Object.entries(options.jobs)) {
      checkJobName(job);
      if (!spec.imageUri || !spec.machineType) throw new ConfigError(`Vertex job ${job}: imageUri and machineType are required`);
      for (const [k, v] of Object.entries(spec.labels ?? {})) {
        if (!LABEL.test(k) || !/^[a-z0-9_-]{0,63}$/.test(v)) {
          throw new ConfigError(`Vertex job ${job}: label ${k}=${v} must be lowercase letters, digits, _ and - (max 63)`);
        }
      }
    }
    this.options = options;
    this.logger = options.logger ?? silentLogger;
  }

  run(job: string, args: Record<string, string>): Promise<JobExecution> {
    return this.starting.run(job, () => this.start(job, args));
  }

  async running(job: string): Promise<JobExecution | null> {
    const displayName = this.displayName(job);
    const filter = `display_name="${displayName}" AND (${ACTIVE_STATES.map((s) => `state="${s}"`).join(' OR ')})`;
    for await (const custom of this.options.client.listCustomJobsAsync({ parent: this.parent(), filter, pageSize: 10 })) {
      // The server filters; checking again keeps a lax filter implementation from starting duplicates.
      if (custom.displayName === displayName && ACTIVE_STATES.includes(String(custom.state))) return toJobExecution(job, custom);
    }
    return null;
  }

  private async start(job: string, args: Record<string, string>): Promise<JobExecution> {
    const spec = this.options.jobs[job];
    if (!spec) {
      throw new ConfigError(`No Vertex AI job named ${JSON.stringify(job)}; configured: ${Object.keys(this.options.jobs).join(', ') || 'none'}`);
    }
    const containerArgs = this.options.argsFor?.(job, args) ?? argsToFlags(job, args);
    const current = await this.running(job);
    if (current) {
      this.logger.info({ job, executionId: current.executionId }, 'Vertex AI job already active, not creating another');
      return current;
    }
    const [created] = await this.options.client.createCustomJob({
      parent: this.parent(),
      customJob: {
        displayName: this.displayName(job),
        labels: { ...spec.labels, 'iss-job': job },
        jobSpec: {
          workerPoolSpecs: [
            {
              machineSpec: {
                machineType: spec.machineType,
                ...(spec.acceleratorType
                  ? {
                      acceleratorType: spec.acceleratorType as protos.google.cloud.aiplatform.v1.MachineSpec['acceleratorType'],
                      acceleratorCount: spec.acceleratorCount ?? 1,
                    }
                  : {}),
              },
              replicaCount: 1,
              containerSpec: {
                imageUri: spec.imageUri,
                ...(spec.command ? { command: spec.command } : {}),
                args: containerArgs,
                env: envList(spec.env),
              },
            },
          ],
          ...(spec.serviceAccount ? { serviceAccount: spec.serviceAccount } : {}),
        },
      },
    });
    this.logger.info({ job, executionId: created.name }, 'Vertex AI job created');
    return toJobExecution(job, created);
  }

  private parent(): string {
    return `projects/${this.options.projectId}/locations/${this.options.region}`;
  }

  private displayName(job: string): string {
    const name = this.options.displayNameFor?.(job) ?? `iss-${job}`;
    if (!/^[\w.-]{1,128}$/.test(name)) throw new AppError(`Invalid Vertex AI display name ${JSON.stringify(name)}`);
    return name;
  }
}

function toJobExecution(job: string, custom: CustomJob): JobExecution {
  const state = String(custom.state ?? 'JOB_STATE_QUEUED');
  return {
    job,
    executionId: custom.name ?? '',
    state: state === 'JOB_STATE_SUCCEEDED' ? 'succeeded' : ACTIVE_STATES.includes(state) ? 'running' : 'failed',
    startedAt: timestampIso(custom.startTime) ?? timestampIso(custom.createTime) ?? new Date().toISOString(),
  };
}

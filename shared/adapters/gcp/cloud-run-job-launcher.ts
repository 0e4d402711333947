import { SingleFlight } from '../single-flight.js';
import type { protos, v2 } from '@google-cloud/run';
import { AppError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { JobExecution, JobLauncher } from '../../ports/job-launcher.js';
import { argsToFlags, checkJobName, envList, timestampIso } from './job-args.js';

type Execution = protos.google.cloud.run.v2.IExecution;

export interface CloudRunOverrides {
  /** Container arguments (replace the job's `args`). Default: `--key=value` per job argument. */
  args?: string[];
  env?: Record<string, string>;
  /** Parallel tasks of this execution (each takes a share of the backlog). Default: the job's own. */
  taskCount?: number;
}

export interface CloudRunJobLauncherOptions {
  jobs: v2.JobsClient;
  executions: v2.ExecutionsClient;
  projectId: string;
  region: string;
  /** Port job name (`embed`) → Cloud Run job id. Default: the same name. */
  jobNameFor?(job: string): string;
  /** How a run's arguments become container overrides. */
  overridesFor?(job: string, args: Record<string, string>): CloudRunOverrides;
  logger?: Logger;
}

/** Executions newer than this many are not looked at: a running one is always among the newest. */
const EXECUTIONS_TO_CHECK = 20;

/**
 * {@link JobLauncher} on Cloud Run jobs (v2 API). `run` starts an execution with per-run
 * overrides, unless an execution of that job is still running — then that one is returned, so a
 * scheduler tick every minute never stacks executions. Within one process, concurrent `run` calls
 * for the same job share one start; across processes a narrow race remains (two dispatchers
 * listing at the same instant), which the job tolerates: executions share the backlog via Pub/Sub.
 */
export class CloudRunJobLauncher implements JobLauncher {
  private readonly options: CloudRunJobLauncherOptions;
  private readonly logger: Logger;
  /** Two concurrent run() calls in this process share one start. */
  private readonly starting = new SingleFlight<JobExecution>();

  constructor(options: CloudRunJobLauncherOptions) {
    if (!options.projectId || !options.region) throw new AppError('CloudRunJobLauncher needs projectId and region');
    this.options = options;
    this.logger = options.logger ?? silentLogger;
  }

  run(job: string, args: Record<string, string>): Promise<JobExecution> {
    return this.starting.run(job, () => this.start(job, args));
  }

  async running(job: string): Promise<JobExecution | null> {
    const parent = this.jobPath(job);
    let seen = 0;
    // Listed newest first; stop early instead of paging through the whole history.
    for await (const execution of this.options.executions.listExecutionsAsync({ parent, pageSize: EXECUTIONS_TO_CHECK })) {
      if (isRunning(execution)) return toJobExecution(job, execution);
      seen += 1;
      if (seen >= EXECUTIONS_TO_CHECK) break;
    }
    return null;
  }

  private async start(job: string, args: Record<string, string>): Promise<JobExecution> {
    const overrides = this.options.overridesFor?.(job, args) ?? { args: argsToFlags(job, args) };
    if (overrides.taskCount !== undefined && !(Number.isInteger(overrides.taskCount) && overrides.taskCount >= 1)) {
      throw new AppError(`Job ${job}: taskCount must be a positive integer, got ${overrides.taskCount}`);
    }
    const current = await this.running(job);
    if (current) {
      this.logger.info({ job, executionId: current.executionId }, 'job already running, not starting another');
      return current;
    }
    // A run with nothing to override sends no `overrides`: jobs.run then needs run.jobs.run only, not
    // run.jobs.runWithOverrides (cloud.google.com/run/docs/reference/iam/permissions), so its caller can
    // hold roles/run.jobsExecutor (access.ts runWithoutOverrides). Empty args/env would change nothing anyway.
    const env = envList(overrides.env);
    const none = (overrides.args ?? []).length === 0 && env.length === 0 && overrides.taskCount === undefined;
    const [operation] = await this.options.jobs.runJob({
      name: this.jobPath(job),
      ...(none
        ? {}
        : {
            overrides: {
              containerOverrides: [{ args: overrides.args ?? [], env }],
              ...(overrides.taskCount === undefined ? {} : { taskCount: overrides.taskCount }),
            },
          }),
    });
    // The operation completes when the execution does (minutes to hours): do not wait for it.
    // Its metadata is the Execution being started.
    const execution = (operation.metadata ?? {}) as Execution;
    if (!execution.name) throw new AppError(`Cloud Run did not return the execution of job ${job} (operation ${operation.name})`);
    this.logger.info({ job, executionId: execution.name }, 'job started');
    return toJobExecution(job, { ...execution, completionTime: null });
  }

  private jobPath(job: string): string {
    const id = checkJobName(this.options.jobNameFor?.(job) ?? job);
    return `projects/${this.options.projectId}/locations/${this.options.region}/jobs/${id}`;
  }
}

function isRunning(execution: Execution): boolean {
  return !execution.completionTime && !execution.deleteTime;
}

function toJobExecution(job: string, execution: Execution): JobExecution {
  let state: JobExecution['state'] = 'running';
  if (execution.completionTime) {
    const failed = (execution.failedCount ?? 0) > 0 || (execution.cancelledCount ?? 0) > 0;
    state = failed ? 'failed' : 'succeeded';
  }
  return {
    job,
    executionId: execution.name ?? '',
    state,
    startedAt: timestampIso(execution.startTime) ?? timestampIso(execution.createTime) ?? new Date().toISOString(),
  };
}

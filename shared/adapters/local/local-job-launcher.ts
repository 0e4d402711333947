import { randomUUID } from 'node:crypto';
import { AppError, errorMessage } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { JobExecution, JobLauncher } from '../../ports/job-launcher.js';

/**
 * Runs jobs in this process (the local stand-in for Cloud Run jobs / Vertex AI custom jobs).
 * At most one execution per job name at a time: a second `run` returns the running one.
 */
export type JobFn = (args: Record<string, string>) => Promise<void>;

export interface LocalJobExecution extends JobExecution {
  finishedAt?: string;
  error?: string;
}

export class LocalJobLauncher implements JobLauncher {
  private readonly runningByJob = new Map<string, { execution: LocalJobExecution; done: Promise<void> }>();
  private readonly history: LocalJobExecution[] = [];

  constructor(
    private readonly jobs: Record<string, JobFn>,
    private readonly logger: Logger = silentLogger,
  ) {}

  async run(job: string, args: Record<string, string>): Promise<JobExecution> {
    const fn = this.jobs[job];
    if (!fn) throw new AppError(`Unknown job ${JSON.stringify(job)}; known jobs: ${Object.keys(this.jobs).join(', ') || '(none)'}`);
    const current = this.runningByJob.get(job);
    if (current) return { ...current.execution };
    const execution: LocalJobExecution = { job, executionId: `${job}-${randomUUID().slice(0, 8)}`, state: 'running', startedAt: new Date().toISOString() };
    this.history.push(execution);
    const done = (async () => {
      try {
        await fn(args);
        execution.state = 'succeeded';
      } catch (err) {
        execution.state = 'failed';
        execution.error = errorMessage(err);
        this.logger.error({ job, executionId: execution.executionId, err: execution.error }, 'job failed');
      } finally {
        execution.finishedAt = new Date().toISOString();
        this.runningByJob.delete(job);
      }
    })();
    this.runningByJob.set(job, { execution, done });
    return { ...execution };
  }

  async running(job: string): Promise<JobExecution | null> {
    const current = this.runningByJob.get(job);
    return current ? { ...current.execution } : null;
  }

  /** Waits for the execution to finish and returns its final record (tests, CLI `--wait`). */
  async wait(executionId: string): Promise<LocalJobExecution> {
    const record = this.history.find((e) => e.executionId === executionId);
    if (!record) throw new AppError(`Unknown job execution ${executionId}`);
    const current = this.runningByJob.get(record.job);
    if (current?.execution === record) await current.done;
    return { ...record };
  }

  /** Executions started by this launcher, newest last. */
  executions(): LocalJobExecution[] {
    return this.history.map((e) => ({ ...e }));
  }
}

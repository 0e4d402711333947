export interface JobExecution {
  job: string;
  executionId: string;
  state: 'running' | 'succeeded' | 'failed';
  startedAt: string;
}

/** Starts a batch job (embed, retrain, reindex): in-process locally, Cloud Run jobs / Vertex AI in the cloud. */
export interface JobLauncher {
  /** Starts the job unless one of the same name is running (then returns that one). */
  run(job: string, args: Record<string, string>): Promise<JobExecution>;
  running(job: string): Promise<JobExecution | null>;
}

import * as functions from '@google-cloud/functions-framework';
import { errorMessage } from '../shared/errors.js';
import { withTrace, type Logger } from '../shared/logger.js';
import type { JobExecution, JobLauncher } from '../shared/ports/job-launcher.js';
import { cloudConfig } from '../shared/wiring/cloud-config.js';
import { cloudLogger, cloudRunJobLauncher, LazyDeps } from '../shared/wiring/cloud.js';

/** The port name of the drift check job; the launcher maps it to DRIFT_JOB_NAME. */
export const DRIFT_JOB = 'drift-check';

export interface StartDriftCheckDeps {
  launcher: JobLauncher;
  logger: Logger;
  projectId?: string;
}

export interface StartDriftCheckResult {
  started: boolean;
  execution: JobExecution;
}

const deps = new LazyDeps<StartDriftCheckDeps>(async () => {
  const config = cloudConfig('startDriftCheck');
  const logger = cloudLogger('startDriftCheck');
  const launcher = await cloudRunJobLauncher({
    projectId: config.GCP_PROJECT,
    region: config.GCP_REGION,
    port: DRIFT_JOB,
    jobName: config.DRIFT_JOB_NAME,
    // It is started with none, so the run carries no overrides (roles/run.jobsExecutor suffices).
    args: 'env',
    logger,
  });
  return { launcher, logger, projectId: config.GCP_PROJECT };
});

export function setDepsForTesting(value: StartDriftCheckDeps | null): void {
  deps.setForTesting(value);
}

/**
 * One scheduler tick: start the drift check job (jobs/drift-check, in the trainer image, which
 * holds the model runtime a function must not ship) unless an execution is still running.
 */
export async function startDriftCheck(d: StartDriftCheckDeps, logger: Logger = d.logger): Promise<StartDriftCheckResult> {
  const running = await d.launcher.running(DRIFT_JOB);
  if (running) {
    logger.info({ executionId: running.executionId }, 'drift check already running');
    return { started: false, execution: running };
  }
  const execution = await d.launcher.run(DRIFT_JOB, {});
  logger.info({ executionId: execution.executionId }, 'drift check started');
  return { started: true, execution };
}

functions.http('startDriftCheck', async (req, res) => {
  let d: StartDriftCheckDeps | undefined;
  try {
    d = await deps.get();
    const logger = withTrace(d.logger, req.header('traceparent') ?? req.header('x-cloud-trace-context'), d.projectId);
    res.status(200).json(await startDriftCheck(d, logger));
  } catch (err) {
    (d?.logger ?? cloudLogger('startDriftCheck')).error({ err }, 'could not start the drift check');
    // 500: Cloud Scheduler records the failed tick; the next tick tries again.
    res.status(500).json({ error: errorMessage(err) });
  }
});

import * as functions from '@google-cloud/functions-framework';
import { v1 as pubsubV1 } from '@google-cloud/pubsub';
import { errorMessage } from '../shared/errors.js';
import { withTrace, type Logger } from '../shared/logger.js';
import type { JobExecution, JobLauncher } from '../shared/ports/job-launcher.js';
import { MonitoringBacklogProbe, PullBacklogProbe, type BacklogProbe } from './backlog.js';
import { cloudConfig } from '../shared/wiring/cloud-config.js';
import { cloudLogger, cloudRunJobLauncher, LazyDeps, pubSubClient } from '../shared/wiring/cloud.js';

/** The port name of the embed job; the launcher maps it to EMBED_JOB_NAME. */
export const EMBED_JOB = 'embed';

export interface DispatchEmbedDeps {
  backlog: BacklogProbe;
  launcher: JobLauncher;
  logger: Logger;
  projectId?: string;
}

export interface DispatchResult {
  backlog: number;
  started: boolean;
  execution: JobExecution | null;
}

const deps = new LazyDeps<DispatchEmbedDeps>(async () => {
  const config = cloudConfig('dispatchEmbed');
  const logger = cloudLogger('dispatchEmbed');
  const pubsub = pubSubClient(config.GCP_PROJECT);
  const subscription = config.SUBSCRIPTION_IMAGE_EVENTS.startsWith('projects/')
    ? config.SUBSCRIPTION_IMAGE_EVENTS
    : `projects/${config.GCP_PROJECT}/subscriptions/${config.SUBSCRIPTION_IMAGE_EVENTS}`;
  const backlog: BacklogProbe =
    config.BACKLOG_PROBE === 'pull'
      ? new PullBacklogProbe({ subscriber: new pubsubV1.SubscriberClient(), subscription })
      : new MonitoringBacklogProbe({ auth: pubsub.auth, projectId: config.GCP_PROJECT, subscriptionId: subscription });
  // Container args would replace the job's own (`--import tsx jobs/embed/main.ts`): env only.
  const launcher = await cloudRunJobLauncher({
    projectId: config.GCP_PROJECT,
    region: config.GCP_REGION,
    port: EMBED_JOB,
    jobName: config.EMBED_JOB_NAME,
    args: 'env',
    logger,
  });
  return { backlog, launcher, logger, projectId: config.GCP_PROJECT };
});

export function setDepsForTesting(value: DispatchEmbedDeps | null): void {
  deps.setForTesting(value);
}

/**
 * One scheduler tick: start the embed job when image events are waiting and no execution is
 * running (the launcher also refuses a second one). An idle pipeline costs no GPU time.
 */
export async function dispatch(d: DispatchEmbedDeps, logger: Logger = d.logger): Promise<DispatchResult> {
  const backlog = await d.backlog.undelivered();
  if (backlog <= 0) {
    logger.debug({ backlog }, 'no image events waiting');
    return { backlog, started: false, execution: null };
  }
  const running = await d.launcher.running(EMBED_JOB);
  if (running) {
    logger.info({ backlog, executionId: running.executionId }, 'embed job already running');
    return { backlog, started: false, execution: running };
  }
  const execution = await d.launcher.run(EMBED_JOB, {});
  logger.info({ backlog, executionId: execution.executionId }, 'embed job started');
  return { backlog, started: true, execution };
}

functions.http('dispatchEmbed', async (req, res) => {
  let d: DispatchEmbedDeps | undefined;
  try {
    d = await deps.get();
    const logger = withTrace(d.logger, req.header('traceparent') ?? req.header('x-cloud-trace-context'), d.projectId);
    res.status(200).json(await dispatch(d, logger));
  } catch (err) {
    (d?.logger ?? cloudLogger('dispatchEmbed')).error({ err }, 'dispatch failed');
    // 500: Cloud Scheduler records the failed tick; the next tick tries again.
    res.status(500).json({ error: errorMessage(err) });
  }
});

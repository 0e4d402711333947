import * as functions from '@google-cloud/functions-framework';
import { z } from 'zod';
import { VertexJobLauncher } from '../shared/adapters/gcp/vertex-job-launcher.js';
import { ParseError } from '../shared/errors.js';
import { withTrace, type Logger } from '../shared/logger.js';
import type { EventBus } from '../shared/ports/event-bus.js';
import type { JobExecution, JobLauncher } from '../shared/ports/job-launcher.js';
import { parseWith } from '../shared/validation.js';
import { attributeValue, deliveryFromPubSubCloudEvent, type CloudEventLike } from './cloud-events.js';
import { cloudConfig, deadLetterTopicOf, RETRAIN_JOB_SPEC_ENV, topicFromPubSubSource } from '../shared/wiring/cloud-config.js';
import { cloudEventBus, cloudLogger, LazyDeps } from '../shared/wiring/cloud.js';

/** The port name of the retraining job (Vertex AI display name `iss-retrain`). */
export const RETRAIN_JOB = 'retrain';

/**
 * A retrain request: Cloud Scheduler publishes `{ "reason": "scheduled" }`; a person may add
 * job arguments (`--key=value` flags of jobs/retrain), e.g. `{ "reason": "manual", "args": { "epochs": "20" } }`.
 */
export const retrainRequestSchema = z
  .object({
    reason: z.string().max(200).default('unspecified'),
    args: z
      .record(z.string(), z.string().max(1000))
      .superRefine((args, ctx) => {
        for (const key of Object.keys(args)) {
          if (!/^[a-zA-Z][a-zA-Z0-9-]*$/.test(key))
            ctx.addIssue({ code: 'custom', path: [key], message: `argument name ${JSON.stringify(key)} must be letters, digits and dashes` });
        }
      })
      .default({}),
  })
  .strict();
export type RetrainRequest = z.infer<typeof retrainRequestSchema>;

export interface StartRetrainingDeps {
  launcher: JobLauncher;
  /** Publishes malformed requests to `<retrain-requests topic>-dead-letter`. */
  bus: EventBus;
  logger: Logger;
  projectId?: string;
}

export type StartRetrainingResult =
  { status: 'started' | 'already-running'; execution: JobExecution; reason: string } | { status: 'dead-lettered'; reason: string };

const deps = new LazyDeps<StartRetrainingDeps>(async () => {
  const config = cloudConfig('startRetraining');
  const logger = cloudLogger('startRetraining');
  // Loaded here, not at module load: the Vertex AI client library is large (tests never need it).
  const { v1: aiplatformV1 } = await import('@google-cloud/aiplatform');
  const launcher = new VertexJobLauncher({
    client: new aiplatformV1.JobServiceClient({ apiEndpoint: `${config.GCP_REGION}-aiplatform.googleapis.com` }),
    projectId: config.GCP_PROJECT,
    region: config.GCP_REGION,
    // Running jobs are found by display name: the stack's prefix keeps two stacks apart.
    displayNameFor: () => config.RETRAIN_JOB_DISPLAY_NAME,
    jobs: {
      [RETRAIN_JOB]: {
        imageUri: config.TRAINER_IMAGE,
        machineType: config.TRAINER_MACHINE_TYPE,
        serviceAccount: config.TRAINER_SERVICE_ACCOUNT,
        // Plain settings only: OpenSearch credentials never travel in a job spec. The trainer
        // starts REINDEX_JOB_NAME (a Cloud Run job on the VPC, holding the secrets) to reindex.
        env: Object.fromEntries(RETRAIN_JOB_SPEC_ENV.flatMap((name) => (config[name] ? [[name, config[name]]] : []))),
        labels: { component: 'retrain' },
      },
    },
    logger,
  });
  return { launcher, bus: cloudEventBus({ projectId: config.GCP_PROJECT, topics: {}, logger }), logger, projectId: config.GCP_PROJECT };
});

export function setDepsForTesting(value: StartRetrainingDeps | null): void {
  deps.setForTesting(value);
}

/**
 * `retrain-requests` message → a Vertex AI custom job running jobs/retrain, unless one is already
 * queued or running (then the request is acknowledged: the running job covers it). A malformed
 * request is dead-lettered with the reason; a failure to reach Vertex AI throws (redelivered).
 */
export async function startRetraining(event: CloudEventLike): Promise<StartRetrainingResult> {
  const d = await deps.get();
  const logger = withTrace(d.logger, event.traceparent, d.projectId).child({ eventId: event.id });
  let request: RetrainRequest;
  let data: unknown = event.data;
  try {
    const delivery = deliveryFromPubSubCloudEvent(event);
    data = delivery.data;
    request = parseWith(retrainRequestSchema, delivery.data, 'malformed retrain request');
  } catch (err) {
    if (!(err instanceof ParseError)) throw err;
    const topic = topicFromPubSubSource(event.source);
    if (!topic) throw new ParseError(`${err.message} (and the CloudEvent source names no topic to dead-letter it to)`);
    const deadLetterTopic = deadLetterTopicOf(topic);
    await d.bus.publish(deadLetterTopic, data ?? null, { reason: attributeValue(err.message), sourceEventId: attributeValue(event.id ?? '') });
    logger.warn({ reason: err.message, deadLetterTopic }, 'malformed retrain request dead-lettered');
    return { status: 'dead-lettered', reason: err.message };
  }

  try {
    const running = await d.launcher.running(RETRAIN_JOB);
    if (running) {
      logger.info({ executionId: running.executionId, reason: request.reason }, 'retraining already running; request covered by it');
      return { status: 'already-running', execution: running, reason: request.reason };
    }
    const execution = await d.launcher.run(RETRAIN_JOB, request.args);
    logger.info({ executionId: execution.executionId, reason: request.reason, args: request.args }, 'retraining started');
    return { status: 'started', execution, reason: request.reason };
  } catch (err) {
    logger.error({ err }, 'could not start retraining; Pub/Sub will redeliver');
    throw err;
  }
}

functions.cloudEvent('startRetraining', startRetraining);

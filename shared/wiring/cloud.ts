import os from 'node:os';
import path from 'node:path';
import { CloudLoggingSearchEvents } from '../adapters/gcp/cloud-logging-search-events.js';
import { GcsModelRegistry } from '../adapters/gcp/gcs-model-registry.js';
import { openOpenSearchCatalog, type OpenSearchIndexCatalog } from '../adapters/opensearch/index.js';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import { PubSubEventBus } from '../adapters/gcp/pubsub-event-bus.js';
import { AppError } from '../errors.js';
import { createGcpLoggingPinoConfig } from '@google-cloud/pino-logging-gcp-config';
import { pino } from 'pino';
import { defaultLogLevel, errorSerializers, type Logger } from '../logger.js';
import { deadLetterInboxOf, deadLetterTopicOf } from '../adapters/gcp/pubsub-names.js';
import { CloudRunJobLauncher } from '../adapters/gcp/cloud-run-job-launcher.js';

/**
 * What every cloud entry point shares: a dependency slot (built once per instance, replaceable in
 * tests), the Google clients (one per process: they hold connection pools and credentials), the
 * Pub/Sub EventBus with the project's topic names, and a logger writing Cloud Logging JSON lines.
 */

/**
 * Dependencies built lazily on the first invocation and kept for the instance's life. A failed
 * build is forgotten, so a transient fault (a cluster not answering yet) is retried next time.
 */
export class LazyDeps<T> {
  private built: Promise<T> | null = null;
  private override: T | null = null;

  constructor(private readonly build: () => Promise<T>) {}

  get(): Promise<T> {
    if (this.override) return Promise.resolve(this.override);
    if (!this.built) {
      const pending = this.build();
      pending.catch(() => {
        if (this.built === pending) this.built = null;
      });
      this.built = pending;
    }
    return this.built;
  }

  /** Replaces the dependencies (fakes, local adapters); `null` goes back to the real ones. */
  setForTesting(deps: T | null): void {
    this.override = deps;
    this.built = null;
  }
}

let storage: Storage | undefined;
let pubsub: PubSub | undefined;

export function storageClient(): Storage {
  storage ??= new Storage();
  return storage;
}

export function pubSubClient(projectId: string): PubSub {
  pubsub ??= new PubSub({ projectId });
  return pubsub;
}

/**
 * One JSON object per line on stdout, with `severity` and `message` as Cloud Logging reads them.
 * `level` overrides LOG_LEVEL (the monitoring events' logger is always at info); `destination` is for tests.
 */
export function cloudLogger(name: string, options: { level?: string; destination?: NodeJS.WritableStream } = {}): Logger {
  // Google's pino config: severity, message, insertId order, trace/span keys, and `stack_trace`
  // from an `err` Error so Error Reporting groups it. The service context and project are given
  // so it never asks the metadata server (no network at start-up, none in tests).
  const project = process.env.GCP_PROJECT ?? process.env.GOOGLE_CLOUD_PROJECT ?? '';
  return pino(
    createGcpLoggingPinoConfig(
      { serviceContext: { service: name }, traceGoogleCloudProjectId: project, inihibitDiagnosticMessage: true },
      { level: options.level ?? defaultLogLevel(), name, base: undefined, serializers: errorSerializers },
    ),
    options.destination ?? process.stdout,
  );
}

/**
 * Prediction-monitoring events of a cloud workload as Cloud Logging entries (the log-based metrics
 * of infra/components/monitoring.ts count them), at level info whatever LOG_LEVEL says.
 */
export function cloudSearchEvents(name: string, destination?: NodeJS.WritableStream): CloudLoggingSearchEvents {
  return new CloudLoggingSearchEvents(cloudLogger(name, { level: 'info', destination }));
}

/**
 * Pub/Sub EventBus where the port topics (`image-events`, `embeddings`, …) map to the deployed
 * topic ids; any other name (a dead-letter topic id, a full `projects/…` name) is used as is.
 * Each port topic's dead-letter topic is `<topic>-dead-letter`, and its dead letters are read from
 * the inbox `<topic>-dead-letter-inbox` (the names the stack creates, shared/adapters/gcp/pubsub-names.ts).
 */
export function cloudEventBus(options: {
  projectId: string;
  topics: Record<string, string>;
  subscriptions?: Record<string, string>;
  logger: Logger;
  pubsub?: PubSub;
}): PubSubEventBus {
  const topicFor = (topic: string): string => options.topics[topic] ?? topic;
  return new PubSubEventBus({
    pubsub: options.pubsub ?? pubSubClient(options.projectId),
    projectId: options.projectId,
    topicFor,
    subscriptionFor(topic) {
      const subscription = options.subscriptions?.[topic];
      if (!subscription) throw new AppError(`This process does not pull from ${topic}: no subscription configured for it`);
      return subscription;
    },
    deadLetterTopicFor: (topic) => deadLetterTopicOf(topicFor(topic)),
    deadLetterSubscriptionFor: (topic) => deadLetterInboxOf(topicFor(topic)),
    logger: options.logger,
  });
}

/** The OpenSearch index catalog from an entry point's OPENSEARCH_* settings. */
export function cloudIndexCatalog(
  config: { OPENSEARCH_URL: string; OPENSEARCH_USERNAME?: string; OPENSEARCH_PASSWORD?: string; OPENSEARCH_CA_CERT?: string; OPENSEARCH_INDEX_ALIAS: string },
  logger: Logger,
): Promise<OpenSearchIndexCatalog> {
  return openOpenSearchCatalog({
    url: config.OPENSEARCH_URL,
    username: config.OPENSEARCH_USERNAME,
    password: config.OPENSEARCH_PASSWORD,
    // The `vm` cluster's own CA (TLS inside the VPC), pinned; absent for a cluster with a public CA.
    caPem: config.OPENSEARCH_CA_CERT,
    alias: config.OPENSEARCH_INDEX_ALIAS,
    logger,
  });
}

/** The GCS model registry, its files cached under the OS temp folder. */
export function cloudModelRegistry(storage: Storage, bucket: string, logger: Logger): GcsModelRegistry {
  return new GcsModelRegistry({ storage, bucket, cacheDir: path.join(os.tmpdir(), 'iss-models'), logger });
}

/**
 * The launcher of one of the stack's Cloud Run jobs: the port's job name (`port`) maps to the
 * deployed job (`jobName`). Container args would replace the job's own command, so a run's
 * arguments travel as environment variables (`env`), or not at all (`none`: the job takes none,
 * and a run without overrides needs only `run.jobs.run`, not `run.jobs.runWithOverrides`).
 */
export async function cloudRunJobLauncher(options: {
  projectId: string;
  region: string;
  port: string;
  jobName: string;
  args: 'env' | 'none';
  logger: Logger;
}): Promise<CloudRunJobLauncher> {
  const { v2: runV2 } = await import('@google-cloud/run');
  return new CloudRunJobLauncher({
    jobs: new runV2.JobsClient(),
    executions: new runV2.ExecutionsClient(),
    projectId: options.projectId,
    region: options.region,
    jobNameFor: (job) => (job === options.port ? options.jobName : job),
    overridesFor: options.args === 'env' ? (_job, args) => ({ env: args }) : () => ({}),
    logger: options.logger,
  });
}

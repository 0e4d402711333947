import { ADAPTER_ACCESS, type Access, type AdapterName, type ResourceKind } from '../adapters/gcp/access.js';

/**
 * What each cloud workload calls, on which configured resource: the adapters its entry point wires
 * (functions/*.ts, jobs/*\/main.ts) and the methods it uses. The IAM permissions follow from the
 * adapters' own tables (shared/adapters/gcp/access.ts); the deploy check (infra/deploy-check)
 * resolves each resource from the workload's deployed environment and proves that the identity
 * running the workload holds every permission there through the roles the stack grants.
 *
 * Resources are named by the environment variable that carries them, so the check reads the same
 * value the code does: `{ env: 'MODELS_BUCKET' }` is the bucket the workload's MODELS_BUCKET names.
 */
export const CLOUD_WORKLOADS = [
  'onObjectEvent',
  'dispatchEmbed',
  'embedJob',
  'upsertVectors',
  'startRetraining',
  'retrainJob',
  'reindexJob',
  'bootstrapModel',
  'search',
  'startDriftCheck',
  'driftJob',
] as const;
export type CloudWorkload = (typeof CLOUD_WORKLOADS)[number];

/** A resource named by an environment variable of the workload (an object prefix; a topic's dead-letter topic). */
export type ResourceRef =
  /** `prefixEnv`: objects under the prefix this variable of the workload holds (IMAGE_PREFIX), when it is not empty. */
  | { kind: 'bucket'; env: string; prefix?: string; prefixEnv?: string }
  | { kind: 'topic'; env: string; deadLetter?: true }
  /** The topic of the push subscription that delivers to this function (CloudEvent `source`). */
  | { kind: 'topic'; pushSource: true; deadLetter?: true }
  | { kind: 'subscription'; env: string }
  | { kind: 'runJob'; env: string }
  | { kind: 'serviceAccount'; env: string }
  /** The workload's own service account (it signs as itself: signed upload URLs). */
  | { kind: 'serviceAccount'; self: true }
  | { kind: 'project' };

export interface WorkloadCall {
  adapter: AdapterName;
  method: string;
  /** Where each kind of access of that method lands (the project needs no entry). */
  on: Partial<Record<Exclude<ResourceKind, 'project'>, ResourceRef>>;
  why: string;
  /**
   * Made only when this variable has this value (`is`), or any value but this one (`isNot`);
   * `orUnset`: also when it is not set (the schema's default applies).
   */
  when?: { env: string; is: string; orUnset?: boolean } | { env: string; isNot: string; orUnset?: boolean };
}

/** Whether a call is made with this environment. */
export function callApplies(call: WorkloadCall, env: Readonly<Record<string, string | undefined>>): boolean {
  if (!call.when) return true;
  const value = env[call.when.env];
  if (value === undefined || value === '') return call.when.orUnset === true;
  return 'is' in call.when ? value === call.when.is : value !== call.when.isNot;
}

const bucket = (env: string, prefix?: string): ResourceRef => ({ kind: 'bucket', env, ...(prefix ? { prefix } : {}) });
const topic = (env: string): ResourceRef => ({ kind: 'topic', env });
/** The dead-letter topic of a topic (named by shared/adapters/gcp/pubsub-names.ts). */
const deadLetterOf = (env: string): ResourceRef => ({ kind: 'topic', env, deadLetter: true });

const registryReads = (why: string): WorkloadCall[] =>
  (['active', 'get', 'list', 'localPath'] as const).map((method) => ({
    adapter: 'GcsModelRegistry',
    method,
    on: { bucket: bucket('MODELS_BUCKET', 'models/') },
    why,
  }));

export const WORKLOAD_CALLS: Record<CloudWorkload, WorkloadCall[]> = {
  startDriftCheck: [
    {
      adapter: 'CloudRunJobLauncher',
      // functions/drift-check.ts passes no arguments: the request carries no overrides.
      method: 'runWithoutOverrides',
      on: { runJob: { kind: 'runJob', env: 'DRIFT_JOB_NAME' } },
      why: 'starts the drift check job unless it is running',
    },
  ],
  driftJob: [
    ...registryReads('reads the active model, its head and its drift profile'),
    { adapter: 'GcsFeatureStore', method: 'scan', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 'compares recent uploads with the profile' },
    ...(['stat', 'read', 'write'] as const).map((method): WorkloadCall => ({
      adapter: 'GcsBlobStore',
      method,
      on: { bucket: bucket('MODELS_BUCKET', 'drift/') },
      why: 'keeps the last report and the retraining requests (cooldown)',
    })),
    { adapter: 'PubSubEventBus', method: 'publish', on: { topic: topic('TOPIC_RETRAIN_REQUESTS') }, why: 'requests a retraining, with its reason' },
    ...(['list', 'read'] as const).map((method): WorkloadCall => ({
      adapter: 'GcsBlobStore',
      method,
      on: { bucket: bucket('FEATURES_BUCKET', 'query-vectors/') },
      why: 'compares the image queries the search service sampled (the newest DRIFT_QUERY_SAMPLE)',
    })),
  ],
  onObjectEvent: [
    { adapter: 'PubSubEventBus', method: 'publish', on: { topic: topic('TOPIC_IMAGE_EVENTS') }, why: 'publishes the validated image event' },
    { adapter: 'PubSubEventBus', method: 'publish', on: { topic: deadLetterOf('TOPIC_IMAGE_EVENTS') }, why: 'dead-letters malformed storage events' },
    {
      adapter: 'GcsRejectionLog',
      method: 'record',
      on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') },
      why: 'records rejected uploads (too large, empty)',
    },
    {
      adapter: 'GcsRejectionLog',
      method: 'clear',
      on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') },
      why: 'clears a rejection when a good version replaces it',
    },
  ],
  dispatchEmbed: [
    {
      adapter: 'MonitoringBacklog',
      method: 'backlog',
      on: {},
      why: 'reads num_undelivered_messages of the image-events subscription',
      when: { env: 'BACKLOG_PROBE', is: 'monitoring', orUnset: true },
    },
    {
      adapter: 'PullBacklog',
      method: 'backlog',
      on: { subscription: { kind: 'subscription', env: 'SUBSCRIPTION_IMAGE_EVENTS' } },
      why: 'peeks at one image event to see whether there is a backlog',
      when: { env: 'BACKLOG_PROBE', is: 'pull' },
    },
    {
      adapter: 'CloudRunJobLauncher',
      method: 'run',
      on: { runJob: { kind: 'runJob', env: 'EMBED_JOB_NAME' } },
      why: 'starts the embed job sized to the backlog',
    },
  ],
  embedJob: [
    ...registryReads('loads the active model'),
    { adapter: 'GcsBlobStore', method: 'read', on: { bucket: bucket('IMAGES_BUCKET') }, why: 'reads the uploaded image at its generation' },
    { adapter: 'GcsFeatureStore', method: 'put', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 'stores base embeddings for retraining' },
    { adapter: 'GcsFeatureStore', method: 'delete', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 'writes delete tombstones' },
    { adapter: 'EmbeddingShards', method: 'write', on: { bucket: bucket('FEATURES_BUCKET', 'embeddings/shards/') }, why: 'sends large batches by reference' },
    { adapter: 'GcsRejectionLog', method: 'record', on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') }, why: 'records images that cannot be decoded' },
    { adapter: 'GcsRejectionLog', method: 'clear', on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') }, why: 'clears a rejection once the image embeds' },
    ...(['pull', 'ack', 'nack', 'extendDeadline'] as const).map((method): WorkloadCall => ({
      adapter: 'PubSubEventBus',
      method,
      on: { subscription: { kind: 'subscription', env: 'SUBSCRIPTION_IMAGE_EVENTS' } },
      why: 'works the image-events backlog',
    })),
    { adapter: 'PubSubEventBus', method: 'publishBatch', on: { topic: topic('TOPIC_EMBEDDINGS') }, why: 'publishes embeddings' },
    {
      adapter: 'PubSubEventBus',
      method: 'deadLetter',
      on: { topic: deadLetterOf('TOPIC_IMAGE_EVENTS'), subscription: { kind: 'subscription', env: 'SUBSCRIPTION_IMAGE_EVENTS' } },
      why: 'dead-letters unusable image events',
    },
  ],
  upsertVectors: [
    { adapter: 'EmbeddingShards', method: 'read', on: { bucket: bucket('FEATURES_BUCKET', 'embeddings/shards/') }, why: 'reads vectors sent by reference' },
    { adapter: 'GcsFeatureStore', method: 'delete', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 'writes delete tombstones' },
    {
      adapter: 'GcsRejectionLog',
      method: 'clear',
      on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') },
      why: 'clears a rejection when the image is indexed',
    },
    { adapter: 'PubSubEventBus', method: 'publish', on: { topic: topic('TOPIC_IMAGE_EVENTS') }, why: 're-queues images embedded with a superseded model' },
    {
      adapter: 'PubSubEventBus',
      method: 'publish',
      on: { topic: { kind: 'topic', pushSource: true, deadLetter: true } },
      why: 'dead-letters malformed embedding messages',
    },
  ],
  startRetraining: [
    {
      adapter: 'VertexJobLauncher',
      method: 'run',
      on: { serviceAccount: { kind: 'serviceAccount', env: 'TRAINER_SERVICE_ACCOUNT' } },
      why: 'creates the Vertex AI custom job that runs as the trainer account',
    },
    {
      adapter: 'PubSubEventBus',
      method: 'publish',
      on: { topic: { kind: 'topic', pushSource: true, deadLetter: true } },
      why: 'dead-letters malformed retrain requests',
    },
  ],
  // The Vertex AI job: its environment is the one startRetraining puts in the job spec.
  retrainJob: [
    ...registryReads('loads the current model and compares with it'),
    ...(['register', 'setMetrics', 'promote'] as const).map((method): WorkloadCall => ({
      adapter: 'GcsModelRegistry',
      method,
      on: { bucket: bucket('MODELS_BUCKET', 'models/') },
      why: 'registers and promotes the candidate',
    })),
    {
      adapter: 'GcsModelRegistry',
      method: 'rollback',
      on: { bucket: bucket('MODELS_BUCKET', 'models/') },
      why: 'undoes the promotion when the reindex job cannot start',
    },
    { adapter: 'GcsFeatureStore', method: 'scan', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 'trains on stored base embeddings' },
    { adapter: 'GcsBlobStore', method: 'list', on: { bucket: bucket('FEATURES_BUCKET', 'feedback/') }, why: 'finds the newest click-feedback events' },
    { adapter: 'GcsBlobStore', method: 'read', on: { bucket: bucket('FEATURES_BUCKET', 'feedback/') }, why: 'reads click feedback for training' },
    {
      adapter: 'CloudRunJobLauncher',
      method: 'run',
      on: { runJob: { kind: 'runJob', env: 'REINDEX_JOB_NAME' } },
      why: 'starts the reindex job after a promotion',
    },
  ],
  reindexJob: [
    ...registryReads('loads the promoted model'),
    { adapter: 'GcsFeatureStore', method: 'scan', on: { bucket: bucket('FEATURES_BUCKET', 'features/') }, why: 're-projects stored base embeddings' },
  ],
  bootstrapModel: [
    ...registryReads('looks for an active model'),
    ...(['register', 'promote'] as const).map((method): WorkloadCall => ({
      adapter: 'GcsModelRegistry',
      method,
      on: { bucket: bucket('MODELS_BUCKET', 'models/') },
      why: 'registers and activates the first model',
    })),
  ],
  search: [
    ...registryReads('loads the model the live index was built with'),
    { adapter: 'GcsBlobStore', method: 'read', on: { bucket: bucket('IMAGES_BUCKET') }, why: 'serves thumbnails' },
    { adapter: 'GcsRejectionLog', method: 'list', on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') }, why: 'shows rejected uploads in the status' },
    { adapter: 'GcsRejectionLog', method: 'count', on: { bucket: bucket('FEATURES_BUCKET', 'rejected/') }, why: 'counts rejected uploads in the status' },
    { adapter: 'GcsBlobStore', method: 'writeNew', on: { bucket: bucket('FEATURES_BUCKET', 'feedback/') }, why: 'records click feedback as new objects' },
    {
      adapter: 'GcsBlobStore',
      method: 'writeNew',
      on: { bucket: bucket('FEATURES_BUCKET', 'query-vectors/') },
      why: 'samples image-query vectors for the drift check, in new objects',
      // The stack sets QUERY_SAMPLE_RATE=0 when sampling is off (iss:search.querySampleRate): no sink, no grant.
      when: { env: 'QUERY_SAMPLE_RATE', isNot: '0', orUnset: true },
    },
    {
      adapter: 'GcsSignedUploads',
      method: 'sign',
      // Names are always under IMAGE_PREFIX (shared/http/upload.ts uploadObjectName): the grant is conditioned on it.
      on: { bucket: { kind: 'bucket', env: 'IMAGES_BUCKET', prefixEnv: 'IMAGE_PREFIX' }, serviceAccount: { kind: 'serviceAccount', self: true } },
      why: 'signs upload URLs for the page (as itself), which create new images under IMAGE_PREFIX in the bucket',
      // Never with public access: the stack sets UPLOADS=off there (security review, finding 1).
      when: { env: 'UPLOADS', is: 'signed-url' },
    },
  ],
};

/** One permission a workload needs on one resource, with the call that needs it. */
export interface AccessNeed extends Access {
  workload: CloudWorkload;
  call: string;
  resource: ResourceRef;
  why: string;
}

/** Every permission a workload needs, derived from the adapters' tables. */
export function accessNeeds(workload: CloudWorkload, calls: readonly WorkloadCall[] = WORKLOAD_CALLS[workload]): AccessNeed[] {
  const needs: AccessNeed[] = [];
  for (const call of calls) {
    const table = ADAPTER_ACCESS[call.adapter] as Record<string, readonly Access[]>;
    const accesses = table[call.method];
    if (!accesses) throw new Error(`${workload}: ${call.adapter} has no method ${call.method} in its access table`);
    for (const access of accesses) {
      const resource: ResourceRef | undefined = access.on === 'project' ? { kind: 'project' } : call.on[access.on];
      if (!resource) throw new Error(`${workload}: ${call.adapter}.${call.method} needs ${access.permission} on a ${access.on}, but the call names none`);
      needs.push({ ...access, workload, call: `${call.adapter}.${call.method}`, resource, why: call.why });
    }
  }
  return needs;
}

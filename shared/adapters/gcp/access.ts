/**
 * The IAM permissions each Google Cloud adapter call needs, declared beside the adapters so that
 * the deploy check (infra/deploy-check) can prove every identity that runs a workload holds them
 * on the right resource. Permission names and which call needs which come from Google's API
 * reference pages, named on each table:
 *  - Cloud Storage JSON API, "Required permissions" of each method
 *    (https://cloud.google.com/storage/docs/json_api/v1/objects): objects.get/list/insert/delete;
 *    an insert that overwrites an existing object also needs `storage.objects.delete`
 *    (https://cloud.google.com/storage/docs/access-control/iam-json).
 *  - Pub/Sub access control (https://cloud.google.com/pubsub/docs/access-control): publish needs
 *    `pubsub.topics.publish` on the topic; pull, acknowledge and modifyAckDeadline need
 *    `pubsub.subscriptions.consume` on the subscription.
 *  - Cloud Run IAM permissions (https://cloud.google.com/run/docs/reference/iam/permissions):
 *    `run.jobs.run` / `run.jobs.runWithOverrides` on the job, `run.executions.list` to list its
 *    executions.
 *  - Vertex AI IAM permissions (https://cloud.google.com/vertex-ai/docs/general/access-control):
 *    `aiplatform.customJobs.create` / `.list` on the project; a job that runs as another service
 *    account needs `iam.serviceAccounts.actAs` on that account.
 *  - Cloud Monitoring: `monitoring.timeSeries.list` on the project.
 *  - Signed URLs (https://cloud.google.com/storage/docs/access-control/signed-urls): the URL acts as
 *    its signer, who must hold the permission of the request it allows; signing without a key calls
 *    IAM Credentials signBlob, which needs `iam.serviceAccounts.signBlob` on the signing account
 *    (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob).
 *
 * A table maps each method of an adapter to the accesses it makes. A test
 * (test/unit/gcp-adapter-access.unit.test.ts) runs every method against recording SDK doubles
 * and fails when a call issues a request its entry does not declare.
 */

/** What a permission is checked on. */
export type ResourceKind = 'bucket' | 'topic' | 'subscription' | 'runJob' | 'project' | 'serviceAccount';

export interface Access {
  permission: string;
  on: ResourceKind;
}

export type AccessTable<M extends string = string> = Readonly<Record<M, readonly Access[]>>;

const gcs = (...permissions: string[]): Access[] => permissions.map((permission) => ({ permission: `storage.objects.${permission}`, on: 'bucket' }));

/** Union of several access lists, without repeats. */
export function accessUnion(...lists: (readonly Access[])[]): Access[] {
  const seen = new Map<string, Access>();
  for (const list of lists) for (const a of list) seen.set(`${a.on}:${a.permission}`, a);
  return [...seen.values()];
}

/**
 * {@link GcsBlobStore}: one entry per method. `write` may replace an existing object (insert with
 * overwrite needs delete too); `writeNew` is `write` of a name that never existed before (unique
 * names: feedback events, feature shards), where create alone is enough.
 */
export const GCS_BLOB_STORE_ACCESS = {
  read: gcs('get'),
  stat: gcs('get'),
  readVersioned: gcs('get'),
  list: gcs('list'),
  write: gcs('create', 'delete'),
  writeNew: gcs('create'),
  delete: gcs('delete'),
} as const satisfies AccessTable;

const blob = GCS_BLOB_STORE_ACCESS;

/** {@link GcsModelRegistry}: files under `models/<version>/`, the active pointer `models/active.json`. */
export const GCS_MODEL_REGISTRY_ACCESS = {
  list: accessUnion(blob.list, blob.read, blob.readVersioned),
  get: accessUnion(blob.read, blob.readVersioned),
  active: accessUnion(blob.read, blob.readVersioned),
  localPath: accessUnion(blob.stat, blob.list, blob.read),
  // Version folders are new names; meta.json is written last and never replaced.
  register: accessUnion(blob.stat, blob.writeNew),
  setMetrics: accessUnion(blob.readVersioned, blob.write),
  promote: accessUnion(blob.stat, blob.readVersioned, blob.write),
  rollback: accessUnion(blob.stat, blob.readVersioned, blob.write),
  // Used by `imgsearch model rm/prune` (local registries); no cloud workload removes versions.
  remove: accessUnion(blob.stat, blob.readVersioned, blob.list, blob.delete),
} as const satisfies AccessTable;

/** {@link GcsFeatureStore}: shards under `features/`, each a new object; compaction deletes old ones. */
export const GCS_FEATURE_STORE_ACCESS = {
  put: accessUnion(blob.list, blob.read, blob.writeNew),
  delete: accessUnion(blob.list, blob.read, blob.writeNew),
  get: accessUnion(blob.list, blob.read),
  count: accessUnion(blob.list, blob.read),
  scan: accessUnion(blob.list, blob.read),
  compact: accessUnion(blob.list, blob.read, blob.writeNew, blob.delete),
} as const satisfies AccessTable;

/** {@link GcsRejectionLog}: one record per image under `rejected/`, replaced in place. */
export const GCS_REJECTION_LOG_ACCESS = {
  record: accessUnion(blob.stat, blob.read, blob.write),
  clear: accessUnion(blob.stat, blob.read, blob.delete),
  list: accessUnion(blob.list, blob.read),
  count: blob.list,
} as const satisfies AccessTable;

/** Embedding shards (`embeddings/shards/`): written once by the embed job, read by upsertVectors. */
export const EMBEDDING_SHARDS_ACCESS = {
  write: blob.writeNew,
  read: blob.read,
} as const satisfies AccessTable;

/**
 * {@link PubSubEventBus}. Topic accesses are on the topic the call names; `deadLetter` publishes to
 * the topic's dead-letter topic and acknowledges on the subscription the message came from.
 */
export const PUBSUB_EVENT_BUS_ACCESS = {
  publish: [{ permission: 'pubsub.topics.publish', on: 'topic' }],
  publishBatch: [{ permission: 'pubsub.topics.publish', on: 'topic' }],
  pull: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
  ack: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
  nack: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
  extendDeadline: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
  /** Publish on the dead-letter topic, then acknowledge on the source subscription. */
  deadLetter: [
    { permission: 'pubsub.topics.publish', on: 'topic' },
    { permission: 'pubsub.subscriptions.consume', on: 'subscription' },
  ],
  listDeadLetters: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
} as const satisfies AccessTable;

/**
 * {@link CloudRunJobLauncher}: `run` lists executions first (one at a time), then runs with overrides;
 * `runWithoutOverrides` is `run` of a run with no args, env or task count, whose request carries no
 * overrides and so needs run.jobs.run only (roles/run.jobsExecutor, not …WithOverrides).
 */
export const CLOUD_RUN_JOB_LAUNCHER_ACCESS = {
  running: [{ permission: 'run.executions.list', on: 'runJob' }],
  run: [
    { permission: 'run.executions.list', on: 'runJob' },
    { permission: 'run.jobs.runWithOverrides', on: 'runJob' },
  ],
  runWithoutOverrides: [
    { permission: 'run.executions.list', on: 'runJob' },
    { permission: 'run.jobs.run', on: 'runJob' },
  ],
} as const satisfies AccessTable;

/** {@link VertexJobLauncher}: custom jobs have no resource-level IAM; the job runs as the trainer account. */
export const VERTEX_JOB_LAUNCHER_ACCESS = {
  running: [{ permission: 'aiplatform.customJobs.list', on: 'project' }],
  run: [
    { permission: 'aiplatform.customJobs.list', on: 'project' },
    { permission: 'aiplatform.customJobs.create', on: 'project' },
    { permission: 'iam.serviceAccounts.actAs', on: 'serviceAccount' },
  ],
} as const satisfies AccessTable;

/** The Cloud Monitoring backlog probe of dispatchEmbed (functions/backlog.ts). */
export const MONITORING_BACKLOG_ACCESS = {
  backlog: [{ permission: 'monitoring.timeSeries.list', on: 'project' }],
} as const satisfies AccessTable;

/** The pull backlog probe (functions/backlog.ts, `BACKLOG_PROBE=pull`): one pull, released at once. */
export const PULL_BACKLOG_ACCESS = {
  backlog: [{ permission: 'pubsub.subscriptions.consume', on: 'subscription' }],
} as const satisfies AccessTable;

/**
 * {@link GcsSignedUploads}: `sign` checks that no object has the name (objects.get), signs through
 * signBlob as the service's own account, and the browser's PUT with that URL is an objects.create
 * by the signer (never a replace: `x-goog-if-generation-match: 0` is signed into it).
 */
export const GCS_SIGNED_UPLOADS_ACCESS = {
  sign: [...gcs('get', 'create'), { permission: 'iam.serviceAccounts.signBlob', on: 'serviceAccount' }],
} as const satisfies AccessTable;

/** Every adapter's table by name, for the deploy check and the recording test. */
export const ADAPTER_ACCESS = {
  GcsBlobStore: GCS_BLOB_STORE_ACCESS,
  GcsModelRegistry: GCS_MODEL_REGISTRY_ACCESS,
  GcsFeatureStore: GCS_FEATURE_STORE_ACCESS,
  GcsRejectionLog: GCS_REJECTION_LOG_ACCESS,
  EmbeddingShards: EMBEDDING_SHARDS_ACCESS,
  PubSubEventBus: PUBSUB_EVENT_BUS_ACCESS,
  CloudRunJobLauncher: CLOUD_RUN_JOB_LAUNCHER_ACCESS,
  VertexJobLauncher: VERTEX_JOB_LAUNCHER_ACCESS,
  MonitoringBacklog: MONITORING_BACKLOG_ACCESS,
  PullBacklog: PULL_BACKLOG_ACCESS,
  GcsSignedUploads: GCS_SIGNED_UPLOADS_ACCESS,
} as const;
export type AdapterName = keyof typeof ADAPTER_ACCESS;
export type AdapterMethod<A extends AdapterName> = keyof (typeof ADAPTER_ACCESS)[A] & string;

import * as pulumi from '@pulumi/pulumi';

/**
 * The environment each workload gets, in one table: a workload sees only the names it uses, and
 * the OpenSearch credentials come from Secret Manager, never as plain values. Each list must cover
 * every required variable of the workload's schema in shared/wiring/cloud-config.ts (`entryPointSchemas`)
 * and name nothing that schema does not read; `test/unit/infra-policies.unit.test.ts` checks the
 * deployed env against those schemas, so the two cannot drift apart.
 */
export type Workload = 'onObjectEvent' | 'dispatchEmbed' | 'embedJob' | 'upsertVectors' | 'startRetraining' | 'reindexJob' | 'bootstrapModel' | 'search';

/** Names whose values are Secret Manager references, not plain values. */
export const SECRET_ENV = ['OPENSEARCH_URL', 'OPENSEARCH_USERNAME', 'OPENSEARCH_PASSWORD'] as const;
export type SecretEnvName = (typeof SECRET_ENV)[number];

const OPENSEARCH = [...SECRET_ENV, 'OPENSEARCH_INDEX_ALIAS'] as const;

export const WORKLOAD_ENV = {
  // FEATURES_BUCKET: rejected uploads (too large, empty) are recorded under rejected/ there.
  onObjectEvent: ['GCP_PROJECT', 'IMAGES_BUCKET', 'FEATURES_BUCKET', 'IMAGE_PREFIX', 'TOPIC_IMAGE_EVENTS', 'MAX_BYTES'],
  // BACKLOG_PROBE is left unset: the default Cloud Monitoring probe needs only monitoring.viewer,
  // while `pull` would need pubsub.subscriber and spend a delivery attempt of a waiting message.
  dispatchEmbed: ['GCP_PROJECT', 'GCP_REGION', 'SUBSCRIPTION_IMAGE_EVENTS', 'EMBED_JOB_NAME'],
  embedJob: [
    'GCP_PROJECT',
    'IMAGES_BUCKET',
    'MODELS_BUCKET',
    'FEATURES_BUCKET',
    // Names the dead-letter topic `<TOPIC_IMAGE_EVENTS>-dead-letter` for unusable payloads.
    'TOPIC_IMAGE_EVENTS',
    'SUBSCRIPTION_IMAGE_EVENTS',
    'TOPIC_EMBEDDINGS',
    'ONNX_EXECUTION_PROVIDER',
    'MAX_PIXELS',
    'MAX_BYTES',
    'BATCH_SIZE',
    // Named in the "no model yet" error with the command that runs it.
    'BOOTSTRAP_JOB_NAME',
    'GCP_REGION',
  ],
  // TOPIC_EMBEDDINGS: where malformed messages are dead-lettered when a CloudEvent names no source topic.
  upsertVectors: ['GCP_PROJECT', ...OPENSEARCH, 'FEATURES_BUCKET', 'TOPIC_IMAGE_EVENTS', 'TOPIC_EMBEDDINGS'],
  // No OpenSearch settings: startRetraining only creates the Vertex AI job, whose spec carries
  // plain settings; the trainer reindexes by starting REINDEX_JOB_NAME (on the VPC, with secrets).
  startRetraining: [
    'GCP_PROJECT',
    'GCP_REGION',
    'TRAINER_IMAGE',
    'TRAINER_MACHINE_TYPE',
    'TRAINER_SERVICE_ACCOUNT',
    'MODELS_BUCKET',
    'FEATURES_BUCKET',
    'REINDEX_JOB_NAME',
    'RETRAIN_JOB_DISPLAY_NAME',
  ],
  // INITIAL_MODEL: which first model to register (iss:model.initial).
  bootstrapModel: ['GCP_PROJECT', 'MODELS_BUCKET', 'INITIAL_MODEL'],
  reindexJob: ['GCP_PROJECT', 'MODELS_BUCKET', 'FEATURES_BUCKET', ...OPENSEARCH],
  // MAX_PIXELS/MAX_BYTES: query uploads obey the same limits as the pipeline (iss:embed.*).
  search: [...OPENSEARCH, 'MODELS_BUCKET', 'FEATURES_BUCKET', 'IMAGES_BUCKET', 'MAX_PIXELS', 'MAX_BYTES', 'BOOTSTRAP_JOB_NAME', 'GCP_REGION'],
} as const satisfies Record<Workload, readonly string[]>;

/** Every value any workload may receive; each workload picks its own names from it. */
export type EnvValues = Partial<Record<string, pulumi.Input<string>>>;

/** Secret Manager secret ids (not values) for the OpenSearch connection. */
export type SecretIds = Record<SecretEnvName, pulumi.Input<string>>;

function isSecretName(name: string): name is SecretEnvName {
  return (SECRET_ENV as readonly string[]).includes(name);
}

/** Plain variables of a workload; throws when the program forgot a value, so no variable is silently empty. */
export function plainEnv(workload: Workload, values: EnvValues): Record<string, pulumi.Input<string>> {
  const out: Record<string, pulumi.Input<string>> = {};
  for (const name of WORKLOAD_ENV[workload]) {
    if (isSecretName(name)) continue;
    const value = values[name];
    if (value === undefined) throw new Error(`no value for ${name}, which ${workload} needs`);
    out[name] = value;
  }
  return out;
}

/** The secret-backed names a workload gets (empty for workloads that never talk to OpenSearch). */
export function secretEnvNames(workload: Workload): SecretEnvName[] {
  return (WORKLOAD_ENV[workload] as readonly string[]).filter(isSecretName);
}

/** Cloud Run v2 container env: plain values plus `secretKeyRef`s. */
export function cloudRunEnv(workload: Workload, values: EnvValues, secrets?: SecretIds) {
  const secretRefs = secretEnvNames(workload).map((name) => {
    if (!secrets) throw new Error(`${workload} needs the OpenSearch secrets (${name})`);
    return { name, valueSource: { secretKeyRef: { secret: secrets[name], version: 'latest' } } };
  });
  return [...Object.entries(plainEnv(workload, values)).map(([name, value]) => ({ name, value })), ...secretRefs];
}

/** Cloud Functions gen2 `secretEnvironmentVariables`. */
export function functionSecretEnv(workload: Workload, project: string, secrets: SecretIds) {
  return secretEnvNames(workload).map((key) => ({ key, projectId: project, secret: secrets[key], version: 'latest' }));
}

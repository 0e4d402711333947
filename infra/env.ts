import * as pulumi from '@pulumi/pulumi';
import { entryPointSchemas } from '../shared/wiring/cloud-config.js';

/**
 * The environment each workload gets: every variable its entry point's schema reads
 * (`entryPointSchemas` in shared/wiring/cloud-config.ts, the one list of names), except those the
 * stack deliberately leaves to their defaults or to the platform (below, each with the reason).
 * The OpenSearch credentials come from Secret Manager, never as plain values.
 * `test/unit/infra-policies.unit.test.ts` checks the deployed env against the schemas.
 */
export type Workload = 'onObjectEvent' | 'dispatchEmbed' | 'embedJob' | 'upsertVectors' | 'startRetraining' | 'reindexJob' | 'bootstrapModel' | 'search';

/** Names whose values are Secret Manager references, not plain values. */
export const SECRET_ENV = ['OPENSEARCH_URL', 'OPENSEARCH_USERNAME', 'OPENSEARCH_PASSWORD'] as const;
export type SecretEnvName = (typeof SECRET_ENV)[number];

/** Variables a workload's schema reads that the stack does not set. */
const NOT_SET_BY_THE_STACK: Partial<Record<Workload, readonly string[]>> = {
  // The default Cloud Monitoring probe needs only monitoring.viewer; `pull` would need
  // pubsub.subscriber and spend a delivery attempt of a waiting message.
  dispatchEmbed: ['BACKLOG_PROBE'],
  // Cloud Run sets the task index and count; the time budget and empty pulls keep their defaults.
  embedJob: ['EMBED_MAX_RUNTIME_SECONDS', 'EMBED_EMPTY_PULLS', 'CLOUD_RUN_TASK_INDEX', 'CLOUD_RUN_TASK_COUNT'],
  // Reindexing re-projects stored embeddings on CPU and decodes no image.
  reindexJob: ['ONNX_EXECUTION_PROVIDER', 'MAX_PIXELS'],
  // Cloud Run sets PORT.
  search: ['PORT'],
};

const WORKLOADS: readonly Workload[] = [
  'onObjectEvent',
  'dispatchEmbed',
  'embedJob',
  'upsertVectors',
  'startRetraining',
  'reindexJob',
  'bootstrapModel',
  'search',
];

export const WORKLOAD_ENV: Record<Workload, readonly string[]> = Object.fromEntries(
  WORKLOADS.map((w) => [w, Object.keys(entryPointSchemas[w].shape).filter((name) => !(NOT_SET_BY_THE_STACK[w] ?? []).includes(name))]),
) as unknown as Record<Workload, readonly string[]>;

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

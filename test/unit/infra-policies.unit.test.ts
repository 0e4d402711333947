import { beforeAll, describe, expect, test } from 'vitest';
// Only the schema module: zod and shared/errors, none of the entry points' cloud clients.
import { entryPointSchemas, RETRAIN_JOB_SPEC_ENV } from '../../shared/wiring/cloud-config.js';
import { WORKLOAD_ENV, type Workload } from '../../infra/env.js';
import { ALLOWED_ROLES, PROJECT_LEVEL_ROLES } from '../../infra/iam.js';
import { buildStack, ofType, type RecordedResource } from '../../infra/testing/mocks.js';
import type { RawStackConfig } from '../../infra/config.js';
import { retrainRequestSchema } from '../../functions/start-retraining.js';

/** Policies the deployed stack must satisfy, checked on everything the program registers. */
const SUB = 'gcp:pubsub/subscription:Subscription';
const IAM_TYPES = [
  'gcp:storage/bucketIAMMember:BucketIAMMember',
  'gcp:pubsub/topicIAMMember:TopicIAMMember',
  'gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember',
  'gcp:secretmanager/secretIamMember:SecretIamMember',
  'gcp:serviceaccount/iAMMember:IAMMember',
  'gcp:artifactregistry/repositoryIamMember:RepositoryIamMember',
  'gcp:cloudrunv2/serviceIamMember:ServiceIamMember',
  'gcp:cloudrunv2/jobIamMember:JobIamMember',
  'gcp:projects/iAMMember:IAMMember',
];

const envOf = (r: RecordedResource): string[] =>
  [
    ...Object.keys(r.inputs.serviceConfig?.environmentVariables ?? {}),
    ...(r.inputs.serviceConfig?.secretEnvironmentVariables ?? []).map((s: { key: string }) => s.key),
  ].sort();

/** Set by the platform layer of the program (source-mapped stack traces), not read by the entry point's config. */
const PLATFORM_ENV = ['NODE_OPTIONS'];

const containerEnv = (r: RecordedResource): { name: string; value?: string; valueSource?: unknown }[] =>
  r.inputs.template.template?.containers?.[0]?.envs ?? r.inputs.template.containers[0].envs;

/** The variable names each workload receives in the deployed stack, read from its resource. */
function deployedEnv(all: RecordedResource[]): Record<Workload | 'retrainJob', string[]> {
  const fns = Object.fromEntries(ofType(all, 'gcp:cloudfunctionsv2/function:Function').map((f) => [f.inputs.buildConfig.entryPoint, f]));
  const job = (name: string) => ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === name)!;
  const names = (r: RecordedResource) =>
    containerEnv(r)
      .map((e) => e.name)
      .sort();
  const fnEnv = (target: string) => envOf(fns[target]).filter((n) => !PLATFORM_ENV.includes(n));
  return {
    onObjectEvent: fnEnv('onObjectEvent'),
    dispatchEmbed: fnEnv('dispatchEmbed'),
    upsertVectors: fnEnv('upsertVectors'),
    startRetraining: fnEnv('startRetraining'),
    embedJob: names(job('iss-embed')),
    reindexJob: names(job('iss-reindex')),
    bootstrapModel: names(job('iss-bootstrap-model')),
    search: names(ofType(all, 'gcp:cloudrunv2/service:Service')[0]),
    startDriftCheck: fnEnv('startDriftCheck'),
    driftJob: names(job('iss-drift-check')),
    // The Vertex AI job's env is not a Pulumi resource: startRetraining puts these names in its spec.
    retrainJob: [...RETRAIN_JOB_SPEC_ENV].sort(),
  };
}

/** Every role a member holds, as `role on resource` (buckets, topics, subscriptions, jobs, secrets, accounts, project). */
function rolesOf(all: RecordedResource[], email: string): string[] {
  const member = `serviceAccount:${email}`;
  const on: Record<string, (i: Record<string, string>) => string> = {
    'gcp:storage/bucketIAMMember:BucketIAMMember': (i: Record<string, any>) =>
      `bucket ${i.bucket.replace('iss-test-project-iss-', '')}${i.condition ? ` (${/objects\/([^"]*)"/.exec(i.condition.expression)![1]})` : ''}`,
    'gcp:pubsub/topicIAMMember:TopicIAMMember': (i) => `topic ${i.topic}`,
    'gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember': (i) => `subscription ${i.subscription}`,
    'gcp:cloudrunv2/jobIamMember:JobIamMember': (i) => `job ${i.name}`,
    'gcp:secretmanager/secretIamMember:SecretIamMember': (i) => `secret ${i.secretId}`,
    'gcp:serviceaccount/iAMMember:IAMMember': (i) => `account ${i.serviceAccountId.split('/').pop()!.split('@')[0]}`,
    'gcp:projects/iAMMember:IAMMember': () => 'project',
  };
  return Object.entries(on)
    .flatMap(([type, where]) =>
      ofType(all, type)
        .filter((g) => g.inputs.member === member)
        .map((g) => `${g.inputs.role.replace(/^roles\//, '')} on ${where(g.inputs)}`),
    )
    .sort();
}

describe('the default stack (GPU embed, OpenSearch on a private VM)', () => {
  let all: RecordedResource[];
  beforeAll(async () => {
    all = await buildStack({
      embed: { taskCount: 6, parallelism: 3, dispatchSchedule: '*/2 * * * *' },
      retrain: { schedule: '15 4 * * 1', args: { epochs: '8', hidden: '1024' } },
    });
  });

  test('the embed job has GPU limits and the L4 node selector', () => {
    const job = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-embed')!;
    const task = job.inputs.template.template;
    expect(task.nodeSelector).toEqual({ accelerator: 'nvidia-l4' });
    expect(task.gpuZonalRedundancyDisabled).toBe(true);
    expect(task.containers[0].resources.limits).toEqual({ cpu: '8', memory: '32Gi', 'nvidia.com/gpu': '1' });
    expect(job.inputs.template.taskCount).toBe(6);
    expect(job.inputs.template.parallelism).toBe(3);
    expect(task.containers[0].envs).toContainEqual({ name: 'ONNX_EXECUTION_PROVIDER', value: 'cuda' });
    // Compiled JavaScript from the image's bundle (infra/packaging.ts), no TypeScript loader.
    expect(task.containers[0].args).toEqual(['--enable-source-maps', '/app/dist/embed.js']);
  });

  test('every subscription has a dead-letter policy and bounded retries, and every dead-letter topic an inbox', () => {
    const subs = ofType(all, SUB);
    const inboxes = subs.filter((s) => s.inputs.labels?.role === 'dead-letter-inbox');
    const working = subs.filter((s) => s.inputs.labels?.role !== 'dead-letter-inbox');
    expect(working.map((s) => s.inputs.name).sort()).toEqual(['iss-embeddings-upsert', 'iss-image-events-embed', 'iss-retrain-requests-start']);
    for (const s of working) {
      expect(s.inputs.deadLetterPolicy, s.inputs.name).toMatchObject({ maxDeliveryAttempts: 5 });
      expect(s.inputs.deadLetterPolicy.deadLetterTopic).toBe(`${s.inputs.topic}-dead-letter`);
      expect(s.inputs.retryPolicy).toEqual({ minimumBackoff: '10s', maximumBackoff: '600s' });
    }
    const deadLetterTopics = ofType(all, 'gcp:pubsub/topic:Topic').filter((t) => t.inputs.name.endsWith('-dead-letter'));
    expect(deadLetterTopics).toHaveLength(3);
    for (const t of deadLetterTopics) {
      expect(
        inboxes.some((i) => i.inputs.topic.endsWith(`/${t.inputs.name}`)),
        t.inputs.name,
      ).toBe(true);
    }
  });

  test('the Pub/Sub service agent may publish to each dead-letter topic and consume each source subscription', () => {
    const agent = 'serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com';
    const publishes = ofType(all, 'gcp:pubsub/topicIAMMember:TopicIAMMember').filter((m) => m.inputs.member === agent);
    expect(publishes.map((m) => m.inputs.topic).sort()).toEqual([
      'iss-embeddings-dead-letter',
      'iss-image-events-dead-letter',
      'iss-retrain-requests-dead-letter',
    ]);
    expect(publishes.every((m) => m.inputs.role === 'roles/pubsub.publisher')).toBe(true);
    const consumes = ofType(all, 'gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember').filter((m) => m.inputs.member === agent);
    expect(consumes.map((m) => m.inputs.subscription).sort()).toEqual(['iss-embeddings-upsert', 'iss-image-events-embed', 'iss-retrain-requests-start']);
  });

  test("every service account's roles are from the allow-list, none primitive, project-wide only where unavoidable", () => {
    const grants = IAM_TYPES.flatMap((t) => ofType(all, t));
    expect(grants.length).toBeGreaterThan(40);
    // The stack's own custom roles (a few permissions each) are bound on the project too.
    const custom = new Set(ofType(all, 'gcp:projects/iAMCustomRole:IAMCustomRole').map((r) => `projects/iss-test-project/roles/${r.inputs.roleId}`));
    for (const g of grants) {
      if (custom.has(g.inputs.role)) continue;
      expect(ALLOWED_ROLES as readonly string[], `${g.name}: ${g.inputs.role}`).toContain(g.inputs.role);
      expect(['roles/owner', 'roles/editor', 'roles/viewer']).not.toContain(g.inputs.role);
      expect(g.inputs.member, g.name).toMatch(/^serviceAccount:/);
    }
    for (const g of ofType(all, 'gcp:projects/iAMMember:IAMMember')) {
      if (custom.has(g.inputs.role)) continue;
      expect(PROJECT_LEVEL_ROLES as readonly string[], g.name).toContain(g.inputs.role);
    }
    // The only project-wide publisher is Cloud Storage's service agent (Eventarc GCS triggers).
    const projectPublishers = ofType(all, 'gcp:projects/iAMMember:IAMMember').filter((g) => g.inputs.role === 'roles/pubsub.publisher');
    expect(projectPublishers.map((g) => g.inputs.member)).toEqual(['serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com']);
  });

  test('each component runs as its own service account', () => {
    const runAs = [
      ...ofType(all, 'gcp:cloudfunctionsv2/function:Function').map((f) => f.inputs.serviceConfig.serviceAccountEmail),
      ...ofType(all, 'gcp:cloudrunv2/job:Job').map((j) => j.inputs.template.template.serviceAccount),
      ...ofType(all, 'gcp:cloudrunv2/service:Service').map((s) => s.inputs.template.serviceAccount),
    ];
    expect(runAs).toHaveLength(10);
    expect(new Set(runAs).size).toBe(10);
  });

  test('no bucket is public', () => {
    const buckets = ofType(all, 'gcp:storage/bucket:Bucket');
    expect(buckets.map((b) => b.inputs.name).sort()).toEqual(['features', 'images', 'models', 'sources'].map((s) => `iss-test-project-iss-${s}`));
    for (const b of buckets) {
      expect(b.inputs.uniformBucketLevelAccess, b.inputs.name).toBe(true);
      expect(b.inputs.publicAccessPrevention, b.inputs.name).toBe('enforced');
    }
    for (const m of ofType(all, 'gcp:storage/bucketIAMMember:BucketIAMMember')) {
      expect(m.inputs.member).not.toMatch(/allUsers|allAuthenticatedUsers/);
    }
    const models = buckets.find((b) => b.inputs.name.endsWith('-models'))!;
    expect(models.inputs.versioning).toEqual({ enabled: true });
  });

  test('the images bucket admits the page’s signed PUTs from the search service’s own origin only (CORS)', () => {
    const buckets = ofType(all, 'gcp:storage/bucket:Bucket');
    const images = buckets.find((b) => b.inputs.name.endsWith('-images'))!;
    // The deterministic Cloud Run URL, https://SERVICE-PROJECT_NUMBER.REGION.run.app (project number from the mocks).
    expect(images.inputs.cors).toEqual([
      {
        origins: ['https://iss-search-123456789012.us-central1.run.app'],
        methods: ['PUT'],
        responseHeaders: ['Content-Type', 'x-goog-content-length-range', 'x-goog-if-generation-match'],
        maxAgeSeconds: 3600,
      },
    ]);
    for (const b of buckets.filter((x) => x !== images)) expect(b.inputs.cors, b.inputs.name).toBeUndefined();
  });

  test('scheduler crons come from config', () => {
    const jobs = Object.fromEntries(ofType(all, 'gcp:cloudscheduler/job:Job').map((j) => [j.inputs.name, j.inputs]));
    expect(jobs['iss-embed-dispatch'].schedule).toBe('*/2 * * * *');
    expect(jobs['iss-embed-dispatch'].httpTarget.oidcToken.serviceAccountEmail).toBe('iss-embed-tick@iss-test-project.iam.gserviceaccount.com');
    expect(jobs['iss-retrain'].schedule).toBe('15 4 * * 1');
    expect(jobs['iss-retrain'].pubsubTarget.topicName).toBe('projects/iss-test-project/topics/iss-retrain-requests');
    // The scheduled request is one startRetraining accepts, with the job flags from config.
    const request = retrainRequestSchema.parse(JSON.parse(Buffer.from(jobs['iss-retrain'].pubsubTarget.data, 'base64').toString('utf8')));
    expect(request).toEqual({ reason: 'scheduled', args: { epochs: '8', hidden: '1024' } });
  });

  test('functions get exactly the env they need, OpenSearch credentials only from Secret Manager', () => {
    const fns = Object.fromEntries(ofType(all, 'gcp:cloudfunctionsv2/function:Function').map((f) => [f.inputs.buildConfig.entryPoint, f]));
    const os = ['OPENSEARCH_CA_CERT', 'OPENSEARCH_INDEX_ALIAS', 'OPENSEARCH_PASSWORD', 'OPENSEARCH_URL', 'OPENSEARCH_USERNAME'];
    const expected: Record<string, string[]> = {
      onObjectEvent: ['FEATURES_BUCKET', 'GCP_PROJECT', 'IMAGES_BUCKET', 'IMAGE_PREFIX', 'MAX_BYTES', 'TOPIC_IMAGE_EVENTS'],
      dispatchEmbed: ['EMBED_JOB_NAME', 'GCP_PROJECT', 'GCP_REGION', 'SUBSCRIPTION_IMAGE_EVENTS'],
      upsertVectors: ['FEATURES_BUCKET', 'GCP_PROJECT', 'TOPIC_EMBEDDINGS', 'TOPIC_IMAGE_EVENTS', ...os],
      // No OpenSearch settings: the trainer never gets credentials; the reindex job holds them.
      startRetraining: [
        'FEATURES_BUCKET',
        'GCP_PROJECT',
        'GCP_REGION',
        'MODELS_BUCKET',
        'REINDEX_JOB_NAME',
        'RETRAIN_JOB_DISPLAY_NAME',
        'TRAINER_IMAGE',
        'TRAINER_MACHINE_TYPE',
        'TRAINER_SERVICE_ACCOUNT',
      ],
      // Starts the drift job only; the job reads the registry and features itself.
      startDriftCheck: ['DRIFT_JOB_NAME', 'GCP_PROJECT', 'GCP_REGION'],
    };
    expect(Object.keys(fns).sort()).toEqual(Object.keys(expected).sort());
    for (const [target, names] of Object.entries(expected)) {
      expect(envOf(fns[target]), target).toEqual([...names, 'NODE_OPTIONS'].sort());
      expect(fns[target].inputs.serviceConfig.environmentVariables.NODE_OPTIONS, target).toBe('--enable-source-maps');
      const plain = fns[target].inputs.serviceConfig.environmentVariables;
      expect(plain.OPENSEARCH_PASSWORD, target).toBeUndefined();
      expect(plain.OPENSEARCH_URL, target).toBeUndefined();
    }
    expect(fns.upsertVectors.inputs.serviceConfig.secretEnvironmentVariables).toContainEqual({
      key: 'OPENSEARCH_PASSWORD',
      projectId: 'iss-test-project',
      secret: 'iss-opensearch-password',
      version: 'latest',
    });

    const embed = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-embed')!;
    expect(
      containerEnv(embed)
        .map((e: { name: string }) => e.name)
        .sort(),
    ).toEqual([
      'BATCH_SIZE',
      'BOOTSTRAP_JOB_NAME',
      'FEATURES_BUCKET',
      'GCP_PROJECT',
      'GCP_REGION',
      'IMAGES_BUCKET',
      'MAX_BYTES',
      'MAX_PIXELS',
      'MODELS_BUCKET',
      'ONNX_EXECUTION_PROVIDER',
      'SUBSCRIPTION_IMAGE_EVENTS',
      'TOPIC_EMBEDDINGS',
      'TOPIC_IMAGE_EVENTS',
    ]);
    const search = ofType(all, 'gcp:cloudrunv2/service:Service')[0];
    const searchEnv = containerEnv(search);
    expect(searchEnv.map((e) => e.name).sort()).toEqual(
      [
        'BOOTSTRAP_JOB_NAME',
        'FEATURES_BUCKET',
        'FEEDBACK_TOKEN_KEY',
        'GCP_REGION',
        'IMAGES_BUCKET',
        'IMAGE_PREFIX',
        'MAX_BYTES',
        'MAX_PIXELS',
        'MODELS_BUCKET',
        'QUERY_SAMPLE_RATE',
        'TRUSTED_PROXY_HOPS',
        'UPLOADS',
        ...os,
      ].sort(),
    );
    // Not public: the page's uploads go through signed URLs.
    expect(searchEnv).toContainEqual({ name: 'UPLOADS', value: 'signed-url' });
    expect(searchEnv.find((e) => e.name === 'OPENSEARCH_PASSWORD')).toEqual({
      name: 'OPENSEARCH_PASSWORD',
      valueSource: { secretKeyRef: { secret: 'iss-opensearch-password', version: 'latest' } },
    });
  });

  test("every workload's env covers each required variable of its entry point's schema and nothing the schema does not read", () => {
    const deployed = deployedEnv(all);
    expect(Object.keys(deployed).sort()).toEqual(Object.keys(entryPointSchemas).sort());
    expect(Object.keys(WORKLOAD_ENV).sort()).toEqual(
      Object.keys(entryPointSchemas)
        .filter((w) => w !== 'retrainJob')
        .sort(),
    );
    for (const [workload, schema] of Object.entries(entryPointSchemas)) {
      const shape = schema.shape as Record<string, { isOptional(): boolean }>;
      const required = Object.keys(shape).filter((name) => !shape[name]!.isOptional());
      const given = deployed[workload as Workload | 'retrainJob'];
      expect(
        required.filter((name) => !given.includes(name)),
        `${workload}: required by shared/wiring/cloud-config.ts but not set`,
      ).toEqual([]);
      expect(
        given.filter((name) => !(name in shape)),
        `${workload}: set but not read by shared/wiring/cloud-config.ts`,
      ).toEqual([]);
      // The table and the deployed resource agree (no component adds or drops a name on its own).
      if (workload !== 'retrainJob') expect(given, workload).toEqual([...WORKLOAD_ENV[workload as Workload]].sort());
    }
  });

  test('each workload holds exactly the roles its code needs, on the resources it touches', () => {
    const dlq = (t: string) => `topic iss-${t}-dead-letter`;
    const secrets = ['ca', 'password', 'url', 'username'].map((s) => `secretmanager.secretAccessor on secret iss-opensearch-${s}`);
    const expected: Record<string, string[]> = {
      // Metadata arrives in the event: no role on the images bucket. Rejections go to rejected/.
      'iss-object-events': [
        'pubsub.publisher on topic iss-image-events',
        `pubsub.publisher on ${dlq('image-events')}`,
        'storage.objectUser on bucket features (rejected/)',
      ],
      'iss-embed': [
        'pubsub.publisher on topic iss-embeddings',
        `pubsub.publisher on ${dlq('image-events')}`,
        'pubsub.subscriber on subscription iss-image-events-embed',
        'storage.objectUser on bucket features (embeddings/shards/)',
        'storage.objectUser on bucket features (features/)',
        'storage.objectUser on bucket features (rejected/)',
        'storage.objectViewer on bucket images',
        'storage.objectViewer on bucket models',
      ],
      // Backlog from Cloud Monitoring (BACKLOG_PROBE unset): nothing on the subscription. run.viewer
      // lists the job's executions (one at a time); jobsExecutorWithOverrides holds no list permission.
      'iss-dispatch': ['monitoring.viewer on project', 'run.jobsExecutorWithOverrides on job iss-embed', 'run.viewer on job iss-embed'],
      // Delete tombstones in the feature store and cleared rejection records need write; no model reads.
      'iss-upsert': [
        'pubsub.publisher on topic iss-image-events',
        `pubsub.publisher on ${dlq('embeddings')}`,
        ...secrets,
        'storage.objectUser on bucket features (features/)',
        'storage.objectUser on bucket features (rejected/)',
        'storage.objectViewer on bucket features (embeddings/shards/)',
      ],
      // Only the Vertex AI API, through a custom role of three permissions: no secrets, no Cloud Run job.
      'iss-retrain-start': [
        'iam.serviceAccountUser on account iss-trainer',
        'projects/iss-test-project/roles/iss_retrain_starter on project',
        `pubsub.publisher on ${dlq('retrain-requests')}`,
      ],
      'iss-trainer': [
        'run.jobsExecutorWithOverrides on job iss-reindex',
        'run.viewer on job iss-reindex',
        'storage.objectUser on bucket models',
        'storage.objectViewer on bucket features (features/)',
        'storage.objectViewer on bucket features (feedback/)',
      ],
      'iss-reindex': [...secrets, 'storage.objectViewer on bucket features (features/)', 'storage.objectViewer on bucket models'],
      // Drift: the job reads models/, features/ and the sampled queries (query-vectors/), replaces only
      // its state under drift/, publishes retrain requests; its starter only runs (and lists) the drift job.
      'iss-drift': [
        'pubsub.publisher on topic iss-retrain-requests',
        'storage.objectUser on bucket models (drift/)',
        'storage.objectViewer on bucket features (features/)',
        'storage.objectViewer on bucket features (query-vectors/)',
        'storage.objectViewer on bucket models (models/)',
      ],
      // It passes no overrides (security review, finding 10): run.jobs.run alone, not runWithOverrides.
      'iss-drift-start': ['run.jobsExecutor on job iss-drift-check', 'run.viewer on job iss-drift-check'],
      // The only writer of the registry besides the trainer: it registers the first model.
      'iss-bootstrap': ['storage.objectUser on bucket models (models/)'],
      // Feedback objects and sampled query batches are created, never overwritten: objectCreator, not objectUser.
      // Its feedback-token key is its own secret: no other workload can mint tokens.
      // Page uploads: it signs URLs as itself (signBlob: tokenCreator on its own account only) that
      // create new images (objectCreator on the images bucket, never the project; no overwrite, no delete).
      'iss-search': [
        ...secrets,
        'iam.serviceAccountTokenCreator on account iss-search',
        'secretmanager.secretAccessor on secret iss-feedback-token-key',
        'storage.objectCreator on bucket features (feedback/)',
        'storage.objectCreator on bucket features (query-vectors/)',
        'storage.objectCreator on bucket images',
        'storage.objectViewer on bucket features (rejected/)',
        'storage.objectViewer on bucket images',
        'storage.objectViewer on bucket models',
      ],
    };
    for (const [account, roles] of Object.entries(expected)) {
      expect(rolesOf(all, `${account}@iss-test-project.iam.gserviceaccount.com`), account).toEqual([...roles].sort());
    }
  });

  test('OpenSearch VM has no public IP and the firewall admits only the connector range', () => {
    const [vm] = ofType(all, 'gcp:compute/instance:Instance');
    for (const nic of vm.inputs.networkInterfaces) {
      expect(nic.accessConfigs ?? []).toEqual([]);
      expect(nic.ipv6AccessConfigs ?? []).toEqual([]);
    }
    expect(vm.inputs.attachedDisks[0]).toMatchObject({ deviceName: 'opensearch-data', mode: 'READ_WRITE' });
    expect(vm.inputs.metadata['startup-script']).not.toContain('correct-horse-battery-staple');
    const [connector] = ofType(all, 'gcp:vpcaccess/connector:Connector');
    const firewalls = ofType(all, 'gcp:compute/firewall:Firewall');
    expect(firewalls).toHaveLength(1);
    expect(firewalls[0].inputs).toMatchObject({
      direction: 'INGRESS',
      sourceRanges: [connector.inputs.ipCidrRange],
      targetTags: vm.inputs.tags,
      allows: [{ protocol: 'tcp', ports: ['9200'] }],
    });
    // Everything that talks to OpenSearch goes through the connector.
    const connectorId = `projects/iss-test-project/locations/us-central1/connectors/iss-conn`;
    for (const f of ofType(all, 'gcp:cloudfunctionsv2/function:Function')) {
      // Only functions that talk to OpenSearch get the connector (startRetraining only calls Vertex AI).
      expect(f.inputs.serviceConfig.vpcConnector, f.inputs.name).toBe(envOf(f).includes('OPENSEARCH_URL') ? connectorId : undefined);
    }
    expect(
      ofType(all, 'gcp:cloudfunctionsv2/function:Function')
        .filter((f) => f.inputs.serviceConfig.vpcConnector)
        .map((f) => f.inputs.name),
    ).toEqual(['iss-upsert-vectors']);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search.inputs.template.vpcAccess.connector).toBe(connectorId);
    const reindex = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-reindex')!;
    expect(reindex.inputs.template.template.vpcAccess.connector).toBe(connectorId);
  });

  test("functions accept only internal traffic, pushed with OIDC to the framework's Pub/Sub path", () => {
    for (const f of ofType(all, 'gcp:cloudfunctionsv2/function:Function')) {
      expect(f.inputs.serviceConfig.ingressSettings, f.inputs.name).toBe('ALLOW_INTERNAL_ONLY');
    }
    const upsert = ofType(all, SUB).find((s) => s.inputs.name === 'iss-embeddings-upsert')!;
    const fn = ofType(all, 'gcp:cloudfunctionsv2/function:Function').find((f) => f.inputs.name === 'iss-upsert-vectors')!;
    expect(fn.outputs.url).toMatch(/^https:\/\/us-central1-iss-test-project\.cloudfunctions\.net\/iss-upsert-vectors$/);
    expect(upsert.inputs.pushConfig).toEqual({
      pushEndpoint: `${fn.outputs.url}/projects/iss-test-project/topics/iss-embeddings`,
      oidcToken: { serviceAccountEmail: 'iss-push-upsert@iss-test-project.iam.gserviceaccount.com', audience: fn.outputs.url },
    });
    const triggers = ofType(all, 'gcp:eventarc/trigger:Trigger');
    expect(triggers.map((t) => t.inputs.matchingCriterias[0].value).sort()).toEqual([
      'google.cloud.storage.object.v1.deleted',
      'google.cloud.storage.object.v1.finalized',
    ]);
    for (const t of triggers) expect(t.inputs.destination.cloudRunService.service).toBe('iss-on-object-event');
  });

  test('the search service is IAM-protected unless configured public', () => {
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search.inputs.invokerIamDisabled).toBe(false);
    expect(search.inputs.iapEnabled).toBe(false);
    expect(ofType(all, 'gcp:compute/securityPolicy:SecurityPolicy')).toHaveLength(0);
  });

  test('clients reach the OpenSearch VM over HTTPS and pin the stack CA (issue 11, point 9)', () => {
    const urlVersion = ofType(all, 'gcp:secretmanager/secretVersion:SecretVersion').find((v) => v.name.includes('-url-'))!;
    expect(JSON.stringify(urlVersion.inputs.secretData)).toContain('https://10.10.0.5:9200');
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(containerEnv(search)).toContainEqual({
      name: 'OPENSEARCH_CA_CERT',
      valueSource: { secretKeyRef: { secret: 'iss-opensearch-ca', version: 'latest' } },
    });
    const csr = ofType(all, 'tls:index/certRequest:CertRequest')[0]!;
    expect(csr.inputs.ipAddresses).toEqual(['10.10.0.5']);
    const [vm] = ofType(all, 'gcp:compute/instance:Instance');
    const script = String(vm.inputs.metadata['startup-script']);
    expect(script).toContain('plugins.security.ssl.http.enabled=true');
    expect(script).not.toContain('plugins.security.ssl.http.enabled=false');
    for (const id of ['iss-opensearch-tls-key', 'iss-opensearch-tls-cert', 'iss-opensearch-ca'])
      expect(script).toContain(`/secrets/${id}/versions/latest:access`);
  });

  test('feedback objects expire (lifecycle on feedback/ of the features bucket)', () => {
    const features = ofType(all, 'gcp:storage/bucket:Bucket').find((b) => b.inputs.name.endsWith('-features'))!;
    expect(features.inputs.lifecycleRules).toContainEqual({ action: { type: 'Delete' }, condition: { age: 90, matchesPrefixes: ['feedback/'] } });
  });

  test('sampled query vectors expire (lifecycle on query-vectors/ of the features bucket, 7 days by default)', () => {
    const features = ofType(all, 'gcp:storage/bucket:Bucket').find((b) => b.inputs.name.endsWith('-features'))!;
    expect(features.inputs.lifecycleRules).toContainEqual({ action: { type: 'Delete' }, condition: { age: 7, matchesPrefixes: ['query-vectors/'] } });
  });

  test('the search service samples one image query in ten by default (QUERY_SAMPLE_RATE); at 0 it gets no create grant on query-vectors/', async () => {
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(containerEnv(search)).toContainEqual({ name: 'QUERY_SAMPLE_RATE', value: '0.1' });
    const off = await buildStack({ search: { querySampleRate: 0 } } as Partial<RawStackConfig>);
    const [offSearch] = ofType(off, 'gcp:cloudrunv2/service:Service');
    expect(containerEnv(offSearch)).toContainEqual({ name: 'QUERY_SAMPLE_RATE', value: '0' });
    const roles = rolesOf(off, 'iss-search@iss-test-project.iam.gserviceaccount.com');
    expect(roles.filter((r) => r.includes('query-vectors/'))).toEqual([]);
    expect(roles).toContain('storage.objectCreator on bucket features (feedback/)');
    // The drift job keeps its read grant: it still lists there, and earlier batches live until they expire.
    expect(rolesOf(off, 'iss-drift@iss-test-project.iam.gserviceaccount.com')).toContain('storage.objectViewer on bucket features (query-vectors/)');
  });

  test('query vectors: the search service may only create under query-vectors/, the drift job only list and read there', () => {
    const grants = ofType(all, 'gcp:storage/bucketIAMMember:BucketIAMMember').filter((g) => String(g.inputs.condition?.title) === 'only query-vectors/');
    expect(grants.map((g) => [g.inputs.member, g.inputs.role]).sort()).toEqual([
      ['serviceAccount:iss-drift@iss-test-project.iam.gserviceaccount.com', 'roles/storage.objectViewer'],
      ['serviceAccount:iss-search@iss-test-project.iam.gserviceaccount.com', 'roles/storage.objectCreator'],
    ]);
    for (const g of grants) {
      expect(g.inputs.bucket).toBe('iss-test-project-iss-features');
      // Objects by name, and listing (checked on the bucket) only with a prefix under query-vectors/.
      expect(g.inputs.condition.expression).toBe(
        'resource.name.startsWith("projects/_/buckets/iss-test-project-iss-features/objects/query-vectors/") || ' +
          'api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("query-vectors/")',
      );
    }
  });

  test('the search service gets one feedback-token key for all its instances, from Secret Manager', () => {
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(containerEnv(search)).toContainEqual({
      name: 'FEEDBACK_TOKEN_KEY',
      valueSource: { secretKeyRef: { secret: 'iss-feedback-token-key', version: 'latest' } },
    });
  });
});

describe('variants', () => {
  test('embed.gpu: false deploys a CPU job without GPU limits or node selector', async () => {
    const all = await buildStack({ embed: { gpu: false, cpu: 4, memory: '8Gi' } });
    const job = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-embed')!;
    const task = job.inputs.template.template;
    expect(task.nodeSelector).toBeUndefined();
    expect(task.containers[0].resources.limits).toEqual({ cpu: '4', memory: '8Gi' });
    expect(task.containers[0].envs).toContainEqual({ name: 'ONNX_EXECUTION_PROVIDER', value: 'cpu' });
  });

  test('external OpenSearch: no VM, no connector, no firewall; URL kept in Secret Manager', async () => {
    const all = await buildStack({
      opensearch: { mode: 'external' },
      opensearchUrl: 'https://search.example.com:9200',
      search: { access: 'public', domain: 'search.example.com' },
    } as Partial<RawStackConfig>);
    expect(ofType(all, 'gcp:compute/instance:Instance')).toHaveLength(0);
    expect(ofType(all, 'gcp:vpcaccess/connector:Connector')).toHaveLength(0);
    expect(ofType(all, 'gcp:compute/firewall:Firewall')).toHaveLength(0);
    const urlVersion = ofType(all, 'gcp:secretmanager/secretVersion:SecretVersion').find((v) => v.name.includes('-url-'))!;
    expect(JSON.stringify(urlVersion.inputs.secretData)).toContain('https://search.example.com:9200');
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search.inputs.invokerIamDisabled).toBe(true);
    // No CA secret for an external cluster (a public CA): the clients get no OPENSEARCH_CA_CERT.
    expect(containerEnv(search).map((e: { name: string }) => e.name)).not.toContain('OPENSEARCH_CA_CERT');
  });

  test('public search: only through the HTTPS load balancer, whose backend carries a Cloud Armor per-IP rate limit', async () => {
    const all = await buildStack({ search: { access: 'public', domain: 'search.example.com', rateLimitPerMinute: 120 } } as Partial<RawStackConfig>);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search.inputs).toMatchObject({ invokerIamDisabled: true, ingress: 'INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER' });
    const [policy] = ofType(all, 'gcp:compute/securityPolicy:SecurityPolicy');
    expect(policy!.inputs.rules[0]).toMatchObject({
      action: 'throttle',
      rateLimitOptions: { exceedAction: 'deny(429)', enforceOnKey: 'IP', rateLimitThreshold: { count: 120, intervalSec: 60 } },
    });
    const [backend] = ofType(all, 'gcp:compute/backendService:BackendService');
    expect(backend!.inputs.securityPolicy).toContain('/securityPolicies/iss-search-armor');
    expect(ofType(all, 'gcp:compute/managedSslCertificate:ManagedSslCertificate')[0]!.inputs.managed.domains).toEqual(['search.example.com']);
  });

  test('public search (security review): client IP two hops back, TLS 1.2+ only, run.app URL off', async () => {
    const all = await buildStack({ search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    // The LB's X-Forwarded-For is `<client-supplied…>, <client-ip>, <lb-ip>`: trust Cloud Run's hop and the LB's.
    expect(containerEnv(search)).toContainEqual({ name: 'TRUSTED_PROXY_HOPS', value: '2' });
    // Internal VPC traffic to the run.app URL would pass ingress INTERNAL_LOAD_BALANCER with no identity.
    expect(search.inputs.defaultUriDisabled).toBe(true);
    expect(search.inputs.launchStage).toBe('BETA');
    const [ssl] = ofType(all, 'gcp:compute/sSLPolicy:SSLPolicy');
    expect(ssl?.inputs).toMatchObject({ profile: 'MODERN', minTlsVersion: 'TLS_1_2' });
    const [proxy] = ofType(all, 'gcp:compute/targetHttpsProxy:TargetHttpsProxy');
    expect(String(proxy!.inputs.sslPolicy)).toContain(`/sslPolicies/${ssl!.inputs.name}`);
  });

  test('public search (security review, finding 1): no uploads from the page — nothing signed, no create grant, no bucket CORS', async () => {
    const all = await buildStack({ search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    // The service builds no GcsSignedUploads (functions/search-server.ts pageUploads): the page says uploads are unavailable.
    expect(containerEnv(search)).toContainEqual({ name: 'UPLOADS', value: 'off' });
    // Images are added with `gcloud storage cp` by whoever holds a role on the bucket; the service only reads them.
    expect(rolesOf(all, 'iss-search@iss-test-project.iam.gserviceaccount.com')).toEqual(
      [
        ...['ca', 'password', 'url', 'username'].map((s) => `secretmanager.secretAccessor on secret iss-opensearch-${s}`),
        'secretmanager.secretAccessor on secret iss-feedback-token-key',
        'storage.objectCreator on bucket features (feedback/)',
        'storage.objectCreator on bucket features (query-vectors/)',
        'storage.objectViewer on bucket features (rejected/)',
        'storage.objectViewer on bucket images',
        'storage.objectViewer on bucket models',
      ].sort(),
    );
    for (const b of ofType(all, 'gcp:storage/bucket:Bucket')) expect(b.inputs.cors, b.inputs.name).toBeUndefined();
  });

  test('with embed.imagePrefix the search service may create images under that prefix only (security review, finding 4)', async () => {
    const all = await buildStack({ embed: { imagePrefix: 'incoming/' } } as Partial<RawStackConfig>);
    const roles = rolesOf(all, 'iss-search@iss-test-project.iam.gserviceaccount.com');
    expect(roles).toContain('storage.objectCreator on bucket images (incoming/)');
    expect(roles).not.toContain('storage.objectCreator on bucket images');
    const [grant] = ofType(all, 'gcp:storage/bucketIAMMember:BucketIAMMember').filter(
      (g) => g.inputs.role === 'roles/storage.objectCreator' && g.inputs.bucket === 'iss-test-project-iss-images',
    );
    expect(grant!.inputs.condition.expression).toContain('resource.name.startsWith("projects/_/buckets/iss-test-project-iss-images/objects/incoming/")');
  });

  test.each([
    ['private', {}],
    ['iap', { search: { access: 'iap', iapMembers: ['group:team@example.com'] } }],
  ])('%s search: one trusted proxy hop (Cloud Run front end), run.app URL kept', async (_mode, raw) => {
    const all = await buildStack(raw as Partial<RawStackConfig>);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(containerEnv(search)).toContainEqual({ name: 'TRUSTED_PROXY_HOPS', value: '1' });
    expect(search.inputs.defaultUriDisabled ?? false).toBe(false);
    expect(search.inputs.launchStage).toBeUndefined();
    expect(ofType(all, 'gcp:compute/sSLPolicy:SSLPolicy')).toHaveLength(0);
  });

  test('IAP search: IAP on the service, its agent may invoke it, the listed members may pass IAP', async () => {
    const all = await buildStack({ search: { access: 'iap', iapMembers: ['group:team@example.com'] } } as Partial<RawStackConfig>);
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search.inputs).toMatchObject({ iapEnabled: true, invokerIamDisabled: false });
    expect(ofType(all, 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember').map((m) => [m.inputs.role, m.inputs.member])).toContainEqual([
      'roles/run.invoker',
      'serviceAccount:service-123456789012@gcp-sa-iap.iam.gserviceaccount.com',
    ]);
    expect(ofType(all, 'gcp:iap/webCloudRunServiceIamMember:WebCloudRunServiceIamMember').map((m) => [m.inputs.role, m.inputs.member])).toEqual([
      ['roles/iap.httpsResourceAccessor', 'group:team@example.com'],
    ]);
  });

  test('prebuilt images skip the build', async () => {
    const all = await buildStack({
      images: { build: false, embed: 'example/embed:1', trainer: 'example/trainer:1', search: 'example/search:1' },
    });
    expect(ofType(all, 'docker-build:index:Image')).toHaveLength(0);
    const job = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-embed')!;
    expect(job.inputs.template.template.containers[0].image).toBe('example/embed:1');
  });
});

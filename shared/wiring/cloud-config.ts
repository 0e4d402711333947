import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { envProblems } from '../validation.js';

/**
 * Settings of the cloud entry points (functions, Cloud Run service and jobs), read once from the
 * environment the Pulumi program sets (infra/env.ts lists what each workload receives). Each entry
 * point validates only the names it uses, so a function never fails for a variable it does not
 * need; one ConfigError lists every missing or bad variable with the fix.
 *
 * Dead-letter topics are not configured: each topic `<t>` has the dead-letter topic
 * `<t>-dead-letter` (the naming rule of shared/adapters/gcp/pubsub-names.ts, which infra creates
 * them by), see {@link deadLetterTopicOf}.
 */
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bucket = z.string().regex(/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/, 'must be a bare bucket name such as "my-images" (no gs://)');
const resourceId = z
  .string()
  .regex(/^[A-Za-z][\w.~+%-]{2,254}$/, 'must be a Pub/Sub id (or a full projects/… name)')
  .or(z.string().regex(/^projects\/[^/]+\/(topics|subscriptions)\/[^/]+$/));
const jobName = z.string().regex(/^[a-z][a-z0-9-]{0,48}[a-z0-9]$/, 'must be a Cloud Run job name (lowercase letters, digits, dashes)');

export const cloudEnvShape = {
  GCP_PROJECT: z.string().regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'must be a project id such as "my-project-123"'),
  GCP_REGION: z.string().regex(/^[a-z]+-[a-z]+\d+$/, 'must be a region such as "europe-west1"'),
  IMAGES_BUCKET: bucket,
  MODELS_BUCKET: bucket,
  FEATURES_BUCKET: bucket,
  /** Only objects under this prefix are indexed ('' = the whole bucket). */
  IMAGE_PREFIX: z.string().default(''),
  TOPIC_IMAGE_EVENTS: resourceId,
  SUBSCRIPTION_IMAGE_EVENTS: resourceId,
  TOPIC_EMBEDDINGS: resourceId,
  TOPIC_RETRAIN_REQUESTS: resourceId,
  EMBED_JOB_NAME: jobName,
  REINDEX_JOB_NAME: jobName,
  /** The Cloud Run job of the scheduled drift check (`<prefix>-drift-check`). */
  DRIFT_JOB_NAME: jobName,
  /** The job that registers the first model (`<prefix>-bootstrap-model`); named in "no model yet" errors. */
  BOOTSTRAP_JOB_NAME: jobName,
  /** What the bootstrap job registers into an empty registry (shared/services/model-bootstrap.ts). */
  INITIAL_MODEL: z.enum(['default', 'clip-vit-b32']).default('default'),
  TRAINER_IMAGE: z
    .string()
    .min(3)
    .regex(/^[^\s]+$/, 'must be a container image URI without spaces'),
  TRAINER_MACHINE_TYPE: z.string().regex(/^[a-z0-9]+-[a-z0-9-]+$/, 'must be a machine type such as "n1-standard-8"'),
  TRAINER_SERVICE_ACCOUNT: z.string().email('must be a service account email'),
  OPENSEARCH_URL: z
    .string()
    .url('must be a URL such as https://10.0.0.5:9200')
    .refine((u) => /^https?:/.test(u), 'must start with http:// or https://'),
  OPENSEARCH_USERNAME: z.string().min(1).optional(),
  OPENSEARCH_PASSWORD: z.string().optional(),
  /** PEM of the CA that signed the cluster's certificate, pinned by the clients (the `vm` cluster's own CA). */
  OPENSEARCH_CA_CERT: z.string().includes('-----BEGIN CERTIFICATE-----', { message: 'must be a PEM certificate (-----BEGIN CERTIFICATE-----)' }).optional(),
  OPENSEARCH_INDEX_ALIAS: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/, 'must be lower-case letters, digits, "-" or "_"')
    .default('images'),
  ONNX_EXECUTION_PROVIDER: z.enum(['cpu', 'cuda']).default('cpu'),
  /** Decompression-bomb guard: images above this many pixels are rejected before decoding. */
  MAX_PIXELS: int(1, 2_000_000_000).default(50_000_000),
  MAX_BYTES: int(1, 5_000_000_000).default(100 * 1024 * 1024),
  /** Images per pull and per batched ONNX run in the embed job. */
  BATCH_SIZE: int(1, 1000).default(32),
  /**
   * Proxies in front of the search service that append to X-Forwarded-For (its client address and
   * rate-limit key is that many entries from the end): 1 = Cloud Run's front end; 2 = behind the
   * public load balancer too. Set by infra/components/search.ts from `search.access`.
   */
  TRUSTED_PROXY_HOPS: int(1, 10).default(1),
  /**
   * Whether the search page takes uploads: `signed-url` (the browser PUTs to the images bucket with a
   * URL the service signs) or `off`. Set by infra/components/search.ts: `off` with `search.access: public`.
   */
  UPLOADS: z.enum(['off', 'signed-url']).default('off'),
} as const;

type Shape = typeof cloudEnvShape;
type Key = keyof Shape;

/** Every variable any entry point reads (the shared shape and each entry point's own additions). */
type EnvName = { [E in EntryPoint]: keyof CloudConfig<E> & string }[EntryPoint];

const hints: Partial<Record<EnvName, string>> = {
  GCP_PROJECT: 'set the project id, e.g. GCP_PROJECT=my-project-123',
  GCP_REGION: 'set the region of the jobs, e.g. GCP_REGION=europe-west1',
  IMAGES_BUCKET: 'set the bucket that receives the images, e.g. IMAGES_BUCKET=my-images',
  MODELS_BUCKET: 'set the model registry bucket, e.g. MODELS_BUCKET=my-models',
  FEATURES_BUCKET: 'set the feature-store bucket (also holds rejected/, feedback/ and query-vectors/), e.g. FEATURES_BUCKET=my-features',
  TOPIC_IMAGE_EVENTS: 'set the image-events topic id, e.g. TOPIC_IMAGE_EVENTS=iss-image-events',
  SUBSCRIPTION_IMAGE_EVENTS: 'set the embed job subscription id, e.g. SUBSCRIPTION_IMAGE_EVENTS=iss-image-events-embed',
  TOPIC_EMBEDDINGS: 'set the embeddings topic id, e.g. TOPIC_EMBEDDINGS=iss-embeddings',
  EMBED_JOB_NAME: 'set the Cloud Run job id of the embed job, e.g. EMBED_JOB_NAME=iss-embed',
  DRIFT_JOB_NAME: 'set the Cloud Run job id of the drift check, e.g. DRIFT_JOB_NAME=iss-drift-check',
  BOOTSTRAP_JOB_NAME: 'set the Cloud Run job id of the bootstrap job, e.g. BOOTSTRAP_JOB_NAME=iss-bootstrap-model',
  INITIAL_MODEL: 'use INITIAL_MODEL=default (offline MobileNetV2, no download) or INITIAL_MODEL=clip-vit-b32 (downloads about 600 MB, text search)',
  TRAINER_IMAGE: 'set the trainer container image, e.g. TRAINER_IMAGE=europe-docker.pkg.dev/p/r/trainer:1',
  TRAINER_MACHINE_TYPE: 'set a Vertex AI machine type, e.g. TRAINER_MACHINE_TYPE=n1-standard-8',
  TRAINER_SERVICE_ACCOUNT: 'set the trainer service account email',
  OPENSEARCH_URL: 'set the cluster URL, e.g. OPENSEARCH_URL=https://10.0.0.5:9200',
  ONNX_EXECUTION_PROVIDER: 'use ONNX_EXECUTION_PROVIDER=cpu or ONNX_EXECUTION_PROVIDER=cuda',
  MAX_PIXELS: 'set a whole number of pixels, e.g. MAX_PIXELS=50000000',
  MAX_BYTES: 'set a whole number of bytes, e.g. MAX_BYTES=104857600',
  BATCH_SIZE: 'set a whole number from 1 to 1000, e.g. BATCH_SIZE=32',
  TRUSTED_PROXY_HOPS: 'use TRUSTED_PROXY_HOPS=1 on Cloud Run alone, TRUSTED_PROXY_HOPS=2 behind the public load balancer',
  UPLOADS: 'use UPLOADS=off (no uploads from the page) or UPLOADS=signed-url (the page PUTs to the images bucket with signed URLs)',
  QUERY_SAMPLE_RATE:
    'set the share of image queries sampled for the drift check, from 0 (none) to 1 (all), e.g. QUERY_SAMPLE_RATE=0.1 (stack setting iss:search.querySampleRate)',
  DRIFT_QUERY_SAMPLE: 'set a whole number of image queries from 0 (compare none) to 100000, e.g. DRIFT_QUERY_SAMPLE=1000',
  DRIFT_SERVED_BASELINE: 'set a whole number of queries from 10 to 1000000, e.g. DRIFT_SERVED_BASELINE=500',
};

function pick<K extends Key>(...keys: K[]) {
  return z.object(Object.fromEntries(keys.map((k) => [k, cloudEnvShape[k]])) as { [P in K]: Shape[P] });
}

const OPENSEARCH = ['OPENSEARCH_URL', 'OPENSEARCH_USERNAME', 'OPENSEARCH_PASSWORD', 'OPENSEARCH_CA_CERT', 'OPENSEARCH_INDEX_ALIAS'] as const;

/** Optional: lets a "no model yet" error name the bootstrap job and the exact command that runs it. */
const BOOTSTRAP_HINT = { BOOTSTRAP_JOB_NAME: cloudEnvShape.BOOTSTRAP_JOB_NAME.optional(), GCP_REGION: cloudEnvShape.GCP_REGION.optional() };

/** As locally (IMGSEARCH_DRIFT_QUERY_SAMPLE): a sample smaller than the reference plus a judged sample never compares a query with it. */
function servedBaselineFits(env: { DRIFT_QUERY_SAMPLE: number; DRIFT_SERVED_BASELINE: number; DRIFT_MIN_SAMPLE: number }, ctx: z.RefinementCtx): void {
  const needed = env.DRIFT_SERVED_BASELINE + env.DRIFT_MIN_SAMPLE;
  if (env.DRIFT_QUERY_SAMPLE === 0 || env.DRIFT_QUERY_SAMPLE >= needed) return;
  ctx.addIssue({
    code: 'custom',
    path: ['DRIFT_QUERY_SAMPLE'],
    message:
      `keeps too few queries to compare any with the served-query reference: it needs DRIFT_SERVED_BASELINE (${env.DRIFT_SERVED_BASELINE}) + ` +
      `DRIFT_MIN_SAMPLE (${env.DRIFT_MIN_SAMPLE}) = ${needed}; raise it or lower DRIFT_SERVED_BASELINE`,
  });
}

/** What each entry point reads. */
export const entryPointSchemas = {
  // FEATURES_BUCKET: rejected images (too large, empty) are recorded under rejected/ there.
  onObjectEvent: pick('GCP_PROJECT', 'IMAGES_BUCKET', 'FEATURES_BUCKET', 'IMAGE_PREFIX', 'TOPIC_IMAGE_EVENTS', 'MAX_BYTES'),
  dispatchEmbed: pick('GCP_PROJECT', 'GCP_REGION', 'SUBSCRIPTION_IMAGE_EVENTS', 'EMBED_JOB_NAME').extend({
    /** How the backlog is measured (functions/backlog.ts): a Monitoring metric, or a pull of one message. */
    BACKLOG_PROBE: z.enum(['monitoring', 'pull']).default('monitoring'),
  }),
  // TOPIC_EMBEDDINGS is optional: the dead-letter topic is read from the CloudEvent's source topic.
  upsertVectors: pick('GCP_PROJECT', ...OPENSEARCH, 'FEATURES_BUCKET', 'TOPIC_IMAGE_EVENTS').extend({
    TOPIC_EMBEDDINGS: cloudEnvShape.TOPIC_EMBEDDINGS.optional(),
  }),
  startRetraining: pick(
    'GCP_PROJECT',
    'GCP_REGION',
    'TRAINER_IMAGE',
    'TRAINER_MACHINE_TYPE',
    'TRAINER_SERVICE_ACCOUNT',
    'MODELS_BUCKET',
    'FEATURES_BUCKET',
  ).extend({
    /** Vertex AI display name of the retraining job (`<prefix>-retrain`): keeps two stacks in one project apart. */
    RETRAIN_JOB_DISPLAY_NAME: z
      .string()
      .regex(/^[\w.-]{1,128}$/, 'must be 1-128 letters, digits, "_", "." or "-"')
      .default('iss-retrain'),
    REINDEX_JOB_NAME: cloudEnvShape.REINDEX_JOB_NAME.optional(),
  }),
  // TOPIC_IMAGE_EVENTS names the dead-letter topic `<TOPIC_IMAGE_EVENTS>-dead-letter` for malformed events.
  embedJob: pick(
    'GCP_PROJECT',
    'IMAGES_BUCKET',
    'MODELS_BUCKET',
    'FEATURES_BUCKET',
    'TOPIC_IMAGE_EVENTS',
    'SUBSCRIPTION_IMAGE_EVENTS',
    'TOPIC_EMBEDDINGS',
    'ONNX_EXECUTION_PROVIDER',
    'MAX_PIXELS',
    'MAX_BYTES',
    'BATCH_SIZE',
  ).extend({
    /** Stop pulling after this long (Cloud Run task timeout minus a margin). */
    EMBED_MAX_RUNTIME_SECONDS: int(10, 7 * 24 * 3600).default(50 * 60),
    /** Consecutive empty pulls (each waits up to 10 s) before the task ends. */
    EMBED_EMPTY_PULLS: int(1, 100).default(3),
    CLOUD_RUN_TASK_INDEX: int(0, 100_000).default(0),
    CLOUD_RUN_TASK_COUNT: int(1, 100_000).default(1),
    ...BOOTSTRAP_HINT,
  }),
  // The Vertex AI retrain job (jobs/retrain): its environment is the one startRetraining puts in
  // the job spec. FEATURES_BUCKET holds features/ and the click feedback under feedback/. Without
  // REINDEX_JOB_NAME a promoted model waits for the reindex job to be run by hand. RETRAIN_* are
  // defaults of the job's `--key=value` flags (flags win).
  retrainJob: pick('GCP_PROJECT', 'GCP_REGION', 'MODELS_BUCKET', 'FEATURES_BUCKET').extend({
    REINDEX_JOB_NAME: cloudEnvShape.REINDEX_JOB_NAME.optional(),
    RETRAIN_SEED: int(0, 2 ** 31 - 1).optional(),
    RETRAIN_EPOCHS: int(0, 10_000).optional(),
    /** Held-out recall@1 gain a candidate needs to be promoted. */
    RETRAIN_MARGIN: z.coerce.number().min(0).max(1).optional(),
    /** Share of labelled images held out for evaluation. */
    RETRAIN_HELD_OUT: z.coerce.number().gt(0).lt(1).optional(),
    /** Hidden units of the projection head. */
    RETRAIN_HIDDEN: int(1, 8192).optional(),
    /** Newest click events (objects under feedback/) read for one run. */
    RETRAIN_MAX_FEEDBACK: int(0, 10_000_000).default(100_000),
    /** A tuning run (`--tune=true`, stack config `iss:retrain.tune`) runs its trials on these. */
    TRAINER_IMAGE: cloudEnvShape.TRAINER_IMAGE.optional(),
    TRAINER_MACHINE_TYPE: cloudEnvShape.TRAINER_MACHINE_TYPE.optional(),
    TRAINER_SERVICE_ACCOUNT: cloudEnvShape.TRAINER_SERVICE_ACCOUNT.optional(),
  }),
  reindexJob: pick('GCP_PROJECT', 'MODELS_BUCKET', 'FEATURES_BUCKET', ...OPENSEARCH, 'ONNX_EXECUTION_PROVIDER', 'MAX_PIXELS'),
  search: pick(
    ...OPENSEARCH,
    'MODELS_BUCKET',
    'FEATURES_BUCKET',
    'IMAGES_BUCKET',
    'IMAGE_PREFIX',
    'MAX_PIXELS',
    'MAX_BYTES',
    'TRUSTED_PROXY_HOPS',
    'UPLOADS',
  ).extend({
    PORT: int(1, 65535).default(8080),
    /**
     * HMAC key of feedback tokens, shared by every instance (a Secret Manager secret the stack
     * generates). Without it each instance signs with its own random key, and a click that reaches
     * another instance than the search is refused.
     */
    FEEDBACK_TOKEN_KEY: z.string().min(32, 'must be at least 32 characters (the stack generates it as a secret)').optional(),
    /**
     * Share of image queries whose vector is kept for the drift check (query-vectors/ of
     * FEATURES_BUCKET, shared/services/query-vector-objects.ts); 0: none, and no sample is written.
     * Set by infra/components/search.ts from `iss:search.querySampleRate`.
     */
    QUERY_SAMPLE_RATE: z.coerce.number().min(0).max(1).default(0.1),
    ...BOOTSTRAP_HINT,
  }),
  // The only cloud entry point that writes a first model (the others read the registry): run once
  // during `pulumi up`, idempotent (exit 0 when a model is already active).
  bootstrapModel: pick('GCP_PROJECT', 'MODELS_BUCKET', 'INITIAL_MODEL'),
  // Scheduler tick → startDriftCheck (functions/drift-check.ts) → the drift job (jobs/drift-check,
  // in the trainer image: it runs the model's head). The job reads the registry and the features,
  // keeps its state under drift/ in the models bucket, publishes retrain requests. DRIFT_* are the
  // thresholds of shared/services/drift.ts (README "Drift"), the same defaults as IMGSEARCH_DRIFT_* locally.
  // The queries it compares are the ones the search service samples under query-vectors/ of FEATURES_BUCKET.
  startDriftCheck: pick('GCP_PROJECT', 'GCP_REGION', 'DRIFT_JOB_NAME'),
  driftJob: pick('GCP_PROJECT', 'MODELS_BUCKET', 'FEATURES_BUCKET', 'TOPIC_RETRAIN_REQUESTS')
    .extend({
      DRIFT_RECENT: int(10, 1_000_000).default(1000),
      DRIFT_MIN_SAMPLE: int(10, 1_000_000).default(200),
      DRIFT_PSI: z.coerce.number().positive().max(100).default(0.25),
      DRIFT_KS: z.coerce.number().gt(0).lt(1).default(0.2),
      DRIFT_MIN_NEW_LABELLED: int(0, 100_000_000).default(200),
      DRIFT_RECALL_DROP: z.coerce.number().gt(0).lt(1).default(0.05),
      DRIFT_COOLDOWN_HOURS: z.coerce.number().min(0).max(8760).default(24),
      /** Newest sampled image queries compared (query-vectors/ of the features bucket); 0: queries are not compared. */
      DRIFT_QUERY_SAMPLE: int(0, 100_000).default(1000),
      /** A model's first this-many served queries form its served-query reference. */
      DRIFT_SERVED_BASELINE: int(10, 1_000_000).default(500),
    })
    .superRefine(servedBaselineFits),
} as const;

/** Where the cloud drift check keeps its state in the models bucket (beside `models/`). */
export const DRIFT_STATE_OBJECT = 'drift/drift-state.json';

export type EntryPoint = keyof typeof entryPointSchemas;
export type CloudConfig<E extends EntryPoint> = z.infer<(typeof entryPointSchemas)[E]>;

/** Parses `env` for one entry point; throws one ConfigError naming every bad variable and its fix. */
export function parseCloudConfig<E extends EntryPoint>(entryPoint: E, env: NodeJS.ProcessEnv): CloudConfig<E> {
  const schema = entryPointSchemas[entryPoint] as unknown as z.ZodType<CloudConfig<E>>;
  // An empty string is "not set" (Pulumi and shells often pass VAR= for absent values).
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const result = schema.safeParse(cleaned);
  if (result.success) return result.data;
  const lines = envProblems(result.error, env, hints);
  throw new ConfigError(`Invalid configuration of ${entryPoint}:\n${lines.join('\n')}`, {
    cause: result.error,
    meta: { entryPoint, variables: result.error.issues.map((i) => String(i.path[0])) },
  });
}

const cache = new Map<EntryPoint, unknown>();

/** The entry point's settings from `process.env`, parsed once per process. */
export function cloudConfig<E extends EntryPoint>(entryPoint: E): CloudConfig<E> {
  if (!cache.has(entryPoint)) cache.set(entryPoint, parseCloudConfig(entryPoint, process.env));
  return cache.get(entryPoint) as CloudConfig<E>;
}

/** Forgets parsed settings (tests change the environment between cases). */
export function resetCloudConfigForTesting(): void {
  cache.clear();
}

/**
 * What a process that found no active model tells the operator: the bootstrap job registers the
 * first one during `pulumi up`; if it has not (failed, or the stack predates it), run it.
 */
export function bootstrapJobHint(config: { BOOTSTRAP_JOB_NAME?: string; GCP_REGION?: string }): string {
  const job = config.BOOTSTRAP_JOB_NAME ?? '<prefix>-bootstrap-model';
  const region = config.GCP_REGION ?? '<region>';
  return (
    `the bootstrap job ${job} has not registered the first model (it runs once during \`pulumi up\`); ` +
    `run it with \`gcloud run jobs execute ${job} --region ${region} --wait\` and read its logs if it fails`
  );
}

/** Dead-letter topic of a topic (id or full name): `<topic>-dead-letter`, the rule infra names them by. */
export { deadLetterTopicOf } from '../adapters/gcp/pubsub-names.js';

/** `//pubsub.googleapis.com/projects/p/topics/t` (a Pub/Sub CloudEvent source) → `projects/p/topics/t`. */
export function topicFromPubSubSource(source: string | undefined): string | null {
  const match = /projects\/[^/]+\/topics\/[^/?]+/.exec(source ?? '');
  return match ? match[0] : null;
}

/**
 * What startRetraining puts in the Vertex AI job spec for the trainer (the `retrainJob` entry
 * point): plain settings only, never OpenSearch credentials. The deploy check resolves the
 * trainer's resources from these names.
 */
export const RETRAIN_JOB_SPEC_ENV = [
  'GCP_PROJECT',
  'GCP_REGION',
  'MODELS_BUCKET',
  'FEATURES_BUCKET',
  'REINDEX_JOB_NAME',
  // A tuning run (`--tune=true`) starts its trials on the same image, machine and identity.
  'TRAINER_IMAGE',
  'TRAINER_MACHINE_TYPE',
  'TRAINER_SERVICE_ACCOUNT',
] as const;

import * as pulumi from '@pulumi/pulumi';
import { z } from 'zod';
import { ConfigError } from '../shared/errors.js';

/**
 * Every stack setting, read once and validated with zod so `pulumi up` stops before creating
 * anything when a value is wrong, with a message naming the setting and the command that fixes
 * it. Structured settings live under the `iss` namespace as objects
 * (`pulumi config set --path iss:embed.taskCount 8`); the project and region come from the
 * provider's own `gcp:project` / `gcp:region` so the provider and the program always agree.
 * Pulumi.example.yaml is a documented sample of all of them.
 */
export const CONFIG_NAMESPACE = 'iss';

const cron = z
  .string()
  .trim()
  // unix-cron as Cloud Scheduler takes it: five fields of digits, names, `*`, `,`, `-`, `/`.
  .regex(/^([\d*,/A-Za-z-]+\s+){4}[\d*,/A-Za-z-]+$/, 'must be a 5-field unix-cron expression, e.g. "*/5 * * * *"');
const duration = z.string().regex(/^\d+(\.\d+)?s$/, 'must be a duration in seconds with an "s" suffix, e.g. "10s"');
const seconds = (d: string) => Number(d.slice(0, -1));
const memory = z.string().regex(/^\d+(Mi|Gi)$/, 'must be a size like "512Mi" or "16Gi"');
const gib = (m: string) => (m.endsWith('Gi') ? Number(m.slice(0, -2)) : Number(m.slice(0, -2)) / 1024);

const storageSchema = z
  .object({
    /** Bucket location (a region keeps egress free for the jobs in it). Default: the stack region. */
    location: z.string().min(2).optional(),
    /** Feature-store shards older than this are deleted (they can be rebuilt from images). */
    featuresRetentionDays: z.number().int().min(1).max(3650).default(180),
    /** Superseded model files (non-current object versions) kept per object. */
    modelVersionsToKeep: z.number().int().min(1).max(100).default(5),
    /** Let `pulumi destroy` delete non-empty buckets. Off: images are the one thing not rebuildable. */
    forceDestroy: z.boolean().default(false),
  })
  .strict()
  .default({ featuresRetentionDays: 180, modelVersionsToKeep: 5, forceDestroy: false });

const messagingSchema = z
  .object({
    /** Deliveries before Pub/Sub moves a message to the topic's dead-letter topic (5..100). */
    maxDeliveryAttempts: z.number().int().min(5).max(100).default(5),
    /** Retry backoff bounds for nacked / failed deliveries (Pub/Sub allows 0s..600s). */
    minBackoff: duration.default('10s'),
    maxBackoff: duration.default('600s'),
    /** Lease of a pulled message; the embed job extends it while a batch is being worked on. */
    ackDeadlineSeconds: z.number().int().min(10).max(600).default(300),
    /** How long undelivered and dead-lettered messages are kept (max 7 days = 604800s). */
    messageRetention: duration.default('604800s'),
  })
  .strict()
  .refine((m) => seconds(m.maxBackoff) <= 600, { message: 'maxBackoff must be at most 600s', path: ['maxBackoff'] })
  .refine((m) => seconds(m.minBackoff) <= seconds(m.maxBackoff), {
    message: 'minBackoff must not exceed maxBackoff',
    path: ['minBackoff'],
  })
  .refine((m) => seconds(m.messageRetention) >= 600 && seconds(m.messageRetention) <= 604800, {
    message: 'messageRetention must be between 600s and 604800s',
    path: ['messageRetention'],
  })
  .default({ maxDeliveryAttempts: 5, minBackoff: '10s', maxBackoff: '600s', ackDeadlineSeconds: 300, messageRetention: '604800s' });

const embedSchema = z
  .object({
    /** Run the embed job on a GPU. `false` deploys a CPU-only job (no GPU quota needed, slower). */
    gpu: z.boolean().default(true),
    /** Cloud Run GPU type, set as the `accelerator` node selector. */
    gpuType: z.enum(['nvidia-l4']).default('nvidia-l4'),
    /** Tasks per execution; each takes a share of the backlog. */
    taskCount: z.number().int().min(1).max(10000).default(4),
    /** Tasks running at once (bounded by GPU quota). */
    parallelism: z.number().int().min(1).max(1000).default(2),
    /** Per-task CPU and memory. Cloud Run requires at least 4 CPU and 16Gi with a GPU. */
    cpu: z.number().int().min(1).max(8).default(8),
    memory: memory.default('32Gi'),
    /** Task timeout and retries of a failed task. */
    taskTimeout: duration.default('3600s'),
    maxRetries: z.number().int().min(0).max(10).default(3),
    /** Images per ONNX batch; decode guards (pixels, bytes) against decompression bombs. */
    batchSize: z.number().int().min(1).max(512).default(32),
    maxPixels: z.number().int().min(1).max(2_000_000_000).default(50_000_000),
    maxBytes: z.number().int().min(1).max(5_000_000_000).default(100 * 1024 * 1024),
    /** Only objects under this prefix of the images bucket are indexed. */
    imagePrefix: z.string().default(''),
    /** How often Scheduler calls dispatchEmbed, which starts the job when there is a backlog. */
    dispatchSchedule: cron.default('*/5 * * * *'),
  })
  .strict()
  .refine((e) => e.parallelism <= e.taskCount, { message: 'parallelism must not exceed taskCount', path: ['parallelism'] })
  .refine((e) => !e.gpu || e.cpu >= 4, { message: 'a GPU task needs cpu >= 4 (Cloud Run minimum)', path: ['cpu'] })
  .refine((e) => !e.gpu || gib(e.memory) >= 16, { message: 'a GPU task needs memory >= 16Gi (Cloud Run minimum)', path: ['memory'] })
  .default({
    gpu: true,
    gpuType: 'nvidia-l4',
    taskCount: 4,
    parallelism: 2,
    cpu: 8,
    memory: '32Gi',
    taskTimeout: '3600s',
    maxRetries: 3,
    batchSize: 32,
    maxPixels: 50_000_000,
    maxBytes: 100 * 1024 * 1024,
    imagePrefix: '',
    dispatchSchedule: '*/5 * * * *',
  });

const opensearchSchema = z
  .object({
    /**
     * `external`: a cluster you run elsewhere (Aiven, Elastic-compatible managed, self-hosted);
     * its URL comes from `iss:opensearchUrl`, credentials from the secrets
     * `iss:opensearchUsername` / `iss:opensearchPassword`.
     * `vm`: one private Compute Engine VM running the OpenSearch container (dev / small scale).
     */
    mode: z.enum(['external', 'vm']).default('vm'),
    /** Alias the search API reads and reindexing swaps. */
    indexAlias: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'must be lowercase letters, digits, "_" or "-"').default('images'),
    /** vm mode: zone, machine type, data disk, container image (pulled through Artifact Registry). */
    zone: z.string().regex(/^[a-z]+-[a-z]+\d+-[a-z]$/, 'must be a zone such as "us-central1-a"').optional(),
    machineType: z.string().min(1).default('e2-standard-4'),
    diskSizeGb: z.number().int().min(10).max(65536).default(100),
    image: z.string().min(1).default('opensearchproject/opensearch:2.19.1'),
    /** JVM heap; half of the machine's memory is the usual rule. */
    heap: z.string().regex(/^\d+[mg]$/, 'must be a JVM size like "8g"').default('8g'),
    /** Range of the Serverless VPC Access connector (a /28 unused in the network). */
    connectorCidr: z
      .string()
      .regex(/^\d{1,3}(\.\d{1,3}){3}\/28$/, 'must be an unused /28 range, e.g. "10.8.0.0/28"')
      .default('10.8.0.0/28'),
    /** Range of the subnet the VM lives in. */
    subnetCidr: z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be a CIDR range, e.g. "10.10.0.0/24"').default('10.10.0.0/24'),
  })
  .strict()
  .default({
    mode: 'vm',
    indexAlias: 'images',
    machineType: 'e2-standard-4',
    diskSizeGb: 100,
    image: 'opensearchproject/opensearch:2.19.1',
    heap: '8g',
    connectorCidr: '10.8.0.0/28',
    subnetCidr: '10.10.0.0/24',
  });

const retrainSchema = z
  .object({
    /** When Scheduler asks for a retraining run (published to retrain-requests). */
    schedule: cron.default('0 3 * * 0'),
    /** Vertex AI custom job machine (retraining reads stored embeddings: CPU is enough). */
    machineType: z.string().min(1).default('n1-standard-8'),
    /** Flags of jobs/retrain the scheduled request carries, e.g. `{ epochs: "8", hidden: "1024" }`. */
    args: z
      .partialRecord(z.enum(['seed', 'epochs', 'margin', 'heldOut', 'hidden']), z.string().regex(/^[0-9.]+$/, 'a number'))
      .default({}),
  })
  .strict()
  .default({ schedule: '0 3 * * 0', machineType: 'n1-standard-8', args: {} });

const searchSchema = z
  .object({
    /** Anyone may call the search API and open the page; otherwise callers need roles/run.invoker. */
    public: z.boolean().default(false),
    minInstances: z.number().int().min(0).max(100).default(0),
    maxInstances: z.number().int().min(1).max(1000).default(5),
    cpu: z.number().int().min(1).max(8).default(2),
    memory: memory.default('2Gi'),
  })
  .strict()
  .default({ public: false, minInstances: 0, maxInstances: 5, cpu: 2, memory: '2Gi' });

const imagesSchema = z
  .object({
    /** Build and push the container images with `pulumi up` (needs Docker + buildx locally). */
    build: z.boolean().default(true),
    /** Prebuilt image references; each one set skips that build. */
    embed: z.string().min(1).optional(),
    trainer: z.string().min(1).optional(),
    search: z.string().min(1).optional(),
  })
  .strict()
  .default({ build: true });

const stackSchema = z.object({
  /** Google Cloud project id (`gcp:project`). */
  project: z.string().regex(/^[a-z][a-z0-9-]{4,28}[a-z0-9]$/, 'must be a Google Cloud project id'),
  /** Region of every regional resource (`gcp:region`); it must offer Cloud Run GPUs when embed.gpu is on. */
  region: z.string().regex(/^[a-z]+-[a-z]+\d+$/, 'must be a region such as "us-central1"').default('us-central1'),
  /** Prefix of every resource name; short because connector and account ids are short. */
  prefix: z.string().regex(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/, 'must be 2-12 lowercase letters, digits or "-"').default('iss'),
  /** Where alerts go; no channel is made when unset. */
  alertEmail: z.email('must be an email address').optional(),
  /** Protect Cloud Run jobs and services from deletion (turn off before `pulumi destroy`). */
  deletionProtection: z.boolean().default(false),
  storage: storageSchema,
  messaging: messagingSchema,
  embed: embedSchema,
  opensearch: opensearchSchema,
  retrain: retrainSchema,
  search: searchSchema,
  images: imagesSchema,
  /** external mode only: the cluster URL (stored in Secret Manager like the credentials). */
  opensearchUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL, e.g. "https://search.example.com:9200"' }).optional(),
});

export type ParsedStackConfig = z.infer<typeof stackSchema>;
export type RawStackConfig = z.input<typeof stackSchema>;

/** The parsed settings plus the secrets, which stay `Output`s so they never reach the state in clear. */
export interface StackConfig extends ParsedStackConfig {
  opensearchUsername: pulumi.Output<string>;
  opensearchPassword: pulumi.Output<string>;
}

/** Where each setting is set, for error messages: `gcp:project` or `iss:embed.taskCount`. */
function settingName(path: readonly PropertyKey[]): string {
  const [head, ...rest] = path.map(String);
  if (head === 'project' || head === 'region') return `gcp:${head}`;
  return `${CONFIG_NAMESPACE}:${[head, ...rest].join('.')}`;
}

const fixes: Record<string, string> = {
  'gcp:project': 'pulumi config set gcp:project <your-project-id>',
  'gcp:region': 'pulumi config set gcp:region us-central1',
  'iss:opensearchUrl': 'pulumi config set iss:opensearchUrl https://<host>:9200',
};

/** Validates raw settings; one error lists every bad setting with the command that fixes it. */
export function parseStackConfig(raw: Record<string, unknown>): ParsedStackConfig {
  const result = stackSchema.safeParse(raw);
  const problems: string[] = [];
  if (!result.success) {
    for (const issue of result.error.issues) {
      const name = settingName(issue.path);
      const fix = fixes[name] ?? `pulumi config set --path ${name} <value>`;
      problems.push(`- ${name}: ${issue.message} (fix: ${fix})`);
    }
  } else if (result.data.opensearch.mode === 'external' && !result.data.opensearchUrl) {
    problems.push(`- iss:opensearchUrl: required when iss:opensearch.mode is "external" (fix: ${fixes['iss:opensearchUrl']})`);
  }
  if (problems.length > 0 || !result.success) {
    throw new ConfigError(`Invalid stack configuration:\n${problems.join('\n')}`);
  }
  return result.data;
}

/** Reads the stack's settings from Pulumi config (once per program run). */
export function loadStackConfig(): StackConfig {
  const iss = new pulumi.Config(CONFIG_NAMESPACE);
  const gcp = new pulumi.Config('gcp');
  const raw: Record<string, unknown> = {
    project: gcp.get('project'),
    region: gcp.get('region'),
    prefix: iss.get('prefix'),
    alertEmail: iss.get('alertEmail'),
    deletionProtection: iss.getBoolean('deletionProtection'),
    storage: iss.getObject('storage'),
    messaging: iss.getObject('messaging'),
    embed: iss.getObject('embed'),
    opensearch: iss.getObject('opensearch'),
    retrain: iss.getObject('retrain'),
    search: iss.getObject('search'),
    images: iss.getObject('images'),
    opensearchUrl: iss.get('opensearchUrl'),
  };
  for (const key of Object.keys(raw)) if (raw[key] === undefined) delete raw[key];
  const parsed = parseStackConfig(raw);
  return {
    ...parsed,
    // vm mode runs the cluster itself, with the built-in admin user; external clusters name theirs.
    opensearchUsername: parsed.opensearch.mode === 'vm' ? pulumi.secret('admin') : iss.requireSecret('opensearchUsername'),
    opensearchPassword: iss.requireSecret('opensearchPassword'),
  };
}

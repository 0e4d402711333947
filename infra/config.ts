import * as pulumi from '@pulumi/pulumi';
import { z } from 'zod';
import { ConfigError } from '../shared/errors.js';
import { issuePath } from '../shared/validation.js';
import { checkOpenSearchAdminPassword } from './opensearch-password.js';
import { deadLetterInboxOf, deadLetterTopicOf } from '../shared/adapters/gcp/pubsub-names.js';
import { TOPICS } from '../shared/contracts.js';

/**
 * Every stack setting, read once and validated with zod so `pulumi up` stops before creating
 * anything when a value is wrong, with a message naming the setting and the command that fixes
 * it. Structured settings live under the `iss` namespace as objects
 * (`pulumi config set --path iss:embed.taskCount 8`); the project and region come from the
 * provider's own `gcp:project` / `gcp:region` so the provider and the program always agree.
 * Pulumi.example.yaml is a documented sample of all of them.
 */
export const CONFIG_NAMESPACE = 'iss';

/**
 * Regions where a Cloud Run JOB can have an NVIDIA L4 GPU (the embed job is a job).
 * Source: "Configure GPUs for Cloud Run jobs", https://cloud.google.com/run/docs/configuring/jobs/gpu
 * (read 2026-11-27): us-central1, asia-southeast1, europe-west1, europe-west4, and asia-south1
 * "available by invitation only". Update this list when Google adds regions.
 */
export const CLOUD_RUN_GPU_JOB_REGIONS = ['us-central1', 'europe-west1', 'europe-west4', 'asia-southeast1', 'asia-south1'] as const;
/**
 * The same for Cloud Run SERVICES and worker pools, which Google lists separately and which
 * already include us-east4: https://cloud.google.com/run/docs/configuring/services/gpu and
 * .../workerpools/gpu (read 2026-11-27). No service of this stack has a GPU today.
 */
export const CLOUD_RUN_GPU_SERVICE_REGIONS = [...CLOUD_RUN_GPU_JOB_REGIONS, 'us-east4'] as const;
/** Regions of CLOUD_RUN_GPU_JOB_REGIONS a project only gets by invitation from Google. */
export const CLOUD_RUN_GPU_INVITATION_ONLY = ['asia-south1'] as const;
/**
 * `accelerator` node-selector values this stack offers. Cloud Run also has the NVIDIA RTX PRO
 * 6000 Blackwell (Preview, at least 20 CPU and 80 GiB per instance); its regions are not in the
 * pages above, so it is not offered here.
 */
export const CLOUD_RUN_GPU_TYPES = ['nvidia-l4'] as const;
/**
 * Per-instance bounds with one L4 (same pages): at least 4 CPU and 16 GiB; at most Cloud Run's own
 * maximum of 8 CPU and 32 GiB ("Configure CPU limits" / "Configure memory limits",
 * https://cloud.google.com/run/docs/configuring/services/cpu and .../memory-limits).
 */
export const L4_INSTANCE_LIMITS = { minCpu: 4, maxCpu: 8, minMemoryGiB: 16, maxMemoryGiB: 32 } as const;
/** Cloud Run's largest instance, with or without a GPU (same pages). */
export const CLOUD_RUN_MAX_MEMORY_GIB = 32;
/**
 * Cloud Run's CPU/memory table (same CPU and memory pages, read 2026-11-27): whole CPUs may be 1,
 * 2, 4, 6 or 8; memory is at most 4 GiB per CPU (4 CPU: 2-16 GiB, 6: 4-24 GiB, 8: 4-32 GiB), at
 * most 32 GiB, at least 512 MiB in the second-generation environment jobs use.
 */
export const CLOUD_RUN_CPU_VALUES = [1, 2, 4, 6, 8] as const;
const CLOUD_RUN_MAX_MEMORY_GIB_PER_CPU = 4;
const CLOUD_RUN_MIN_MEMORY_GIB_BY_CPU: Record<number, number> = { 4: 2, 6: 4, 8: 4 };

/**
 * Every physical name the stack derives from `iss:prefix` (and, for buckets, `gcp:project`), with
 * Google's length limit for that kind of resource. Components build the names as
 * `${prefix}-${suffix}` (buckets: `${project}-${prefix}-${suffix}`); keeping the suffixes here lets
 * `pulumi up` refuse a prefix that would overflow one before anything is created.
 * Limits (read 2026-11-27):
 * - service account ids 6-30: @pulumi/gcp serviceaccount.Account `accountId` ("must be 6-30
 *   characters long"), https://cloud.google.com/iam/docs/service-accounts-create
 * - Cloud Run service names (Cloud Functions gen2 run as a service of the same name) and job
 *   names at most 49: Google's rule for service names (https://cloud.google.com/run/docs/deploying);
 *   not found verbatim in the indexed pages on 2026-11-27 (the Compute Engine NEG reference says
 *   1-63), so 49 is kept as the conservative bound, for jobs too
 * - Serverless VPC Access connector at most 25: @pulumi/gcp vpcaccess.Connector `name`
 *   ("Max 25 characters"), https://cloud.google.com/vpc/docs/configure-serverless-vpc-access
 * - bucket names 3-63: https://cloud.google.com/storage/docs/buckets#naming
 * - Pub/Sub topic and subscription ids 3-255: Topic.name in
 *   https://cloud.google.com/pubsub/docs/reference/rest/v1/projects.topics ("between 3 and 255 characters")
 * - Compute Engine names (network, subnet, firewall, address, disk, instance) at most 63 (RFC 1035):
 *   https://cloud.google.com/compute/docs/naming-resources
 */
export const DERIVED_NAMES = {
  serviceAccount: {
    resource: 'service account id',
    min: 6,
    max: 30,
    suffixes: [
      'embed',
      'dispatch',
      'embed-tick',
      'upsert',
      'push-upsert',
      'object-events',
      'eventarc',
      'fn-build',
      'opensearch',
      'trainer',
      'reindex',
      'retrain-start',
      'push-retrain',
      'search',
    ],
  },
  cloudRunJob: { resource: 'Cloud Run job name', min: 1, max: 49, suffixes: ['embed', 'reindex'] },
  cloudRunService: {
    resource: 'Cloud Run service name',
    min: 1,
    max: 49,
    suffixes: ['search', 'dispatch-embed', 'upsert-vectors', 'on-object-event', 'start-retraining'],
  },
  vpcConnector: { resource: 'Serverless VPC Access connector name', min: 1, max: 25, suffixes: ['conn'] },
  bucket: { resource: 'bucket name', min: 3, max: 63, suffixes: ['images', 'models', 'features', 'sources'] },
  pubsub: {
    resource: 'Pub/Sub topic or subscription id',
    min: 3,
    max: 255,
    // Each topic, its dead-letter topic and inbox (named by shared/adapters/gcp/pubsub-names.ts), and the subscriptions.
    suffixes: [
      ...Object.values(TOPICS).flatMap((t) => [t, deadLetterTopicOf(t), deadLetterInboxOf(t)]),
      'image-events-embed',
      'embeddings-upsert',
      'retrain-requests-start',
    ],
  },
  compute: {
    resource: 'Compute Engine resource name',
    min: 1,
    max: 63,
    suffixes: ['private', 'opensearch-from-connector', 'opensearch', 'opensearch-data'],
  },
} as const satisfies Record<string, { resource: string; min: number; max: number; suffixes: readonly string[] }>;

/** The physical name of a derived resource (the rule DERIVED_NAMES is checked with). */
export function derivedName(kind: keyof typeof DERIVED_NAMES, at: { project: string; prefix: string }, suffix: string): string {
  return kind === 'bucket' ? `${at.project}-${at.prefix}-${suffix}` : `${at.prefix}-${suffix}`;
}

/**
 * The derived names that do not fit Google's limits, one sentence per kind of resource, e.g.
 * `service account id must be 6-30 characters: "my-long-prefix-retrain-start" has 31`.
 */
export function derivedNameProblems(at: { project: string; prefix: string }): string[] {
  const problems: string[] = [];
  for (const [kind, rule] of Object.entries(DERIVED_NAMES) as [keyof typeof DERIVED_NAMES, (typeof DERIVED_NAMES)[keyof typeof DERIVED_NAMES]][]) {
    const bad = rule.suffixes.map((suffix) => derivedName(kind, at, suffix)).filter((name) => name.length > rule.max || name.length < rule.min);
    if (bad.length > 0) problems.push(`${rule.resource} must be ${rule.min}-${rule.max} characters: ${bad.map((n) => `"${n}" has ${n.length}`).join(', ')}`);
  }
  return problems;
}

/** The longest prefix whose derived names all fit, for this project id. */
export function maxPrefixLength(project: string): number {
  return Math.min(
    ...Object.entries(DERIVED_NAMES).flatMap(([kind, rule]) =>
      rule.suffixes.map((suffix) => rule.max - suffix.length - 1 - (kind === 'bucket' ? project.length + 1 : 0)),
    ),
  );
}

const cron = z
  .string()
  .trim()
  // unix-cron as Cloud Scheduler takes it: five fields of digits, names, `*`, `,`, `-`, `/`.
  .regex(/^([\d*,/A-Za-z-]+\s+){4}[\d*,/A-Za-z-]+$/, 'must be a 5-field unix-cron expression, e.g. "*/5 * * * *"');
const duration = z.string().regex(/^\d+(\.\d+)?s$/, 'must be a duration in seconds with an "s" suffix, e.g. "10s"');
const seconds = (d: string) => Number(d.slice(0, -1));
const memory = z.string().regex(/^\d+(Mi|Gi)$/, 'must be a size like "512Mi" or "16Gi"');
const gib = (m: string) => (m.endsWith('Gi') ? Number(m.slice(0, -2)) : Number(m.slice(0, -2)) / 1024);

/** What Cloud Run refuses in a CPU/memory pair (the table behind CLOUD_RUN_CPU_VALUES). */
function cloudRunShapeIssues(cpu: number, memory: string): { path: 'cpu' | 'memory'; message: string }[] {
  const issues: { path: 'cpu' | 'memory'; message: string }[] = [];
  const mem = gib(memory);
  if (!(CLOUD_RUN_CPU_VALUES as readonly number[]).includes(cpu)) {
    issues.push({ path: 'cpu', message: `Cloud Run takes ${CLOUD_RUN_CPU_VALUES.join(', ')} CPUs, not ${cpu}` });
  }
  if (mem > CLOUD_RUN_MAX_MEMORY_GIB) issues.push({ path: 'memory', message: `Cloud Run allows at most ${CLOUD_RUN_MAX_MEMORY_GIB}Gi per instance` });
  else if (mem > cpu * CLOUD_RUN_MAX_MEMORY_GIB_PER_CPU) {
    const needed = CLOUD_RUN_CPU_VALUES.find((c) => c * CLOUD_RUN_MAX_MEMORY_GIB_PER_CPU >= mem);
    issues.push({ path: 'memory', message: `${memory} needs at least ${needed} CPUs (Cloud Run allows ${CLOUD_RUN_MAX_MEMORY_GIB_PER_CPU}Gi per CPU)` });
  }
  if (mem < 0.5) issues.push({ path: 'memory', message: 'Cloud Run needs at least 512Mi' });
  else if (mem < (CLOUD_RUN_MIN_MEMORY_GIB_BY_CPU[cpu] ?? 0)) {
    issues.push({ path: 'memory', message: `${cpu} CPUs need at least ${CLOUD_RUN_MIN_MEMORY_GIB_BY_CPU[cpu]}Gi on Cloud Run` });
  }
  return issues;
}

const storageSchema = z
  .object({
    /**
     * Bucket location; it must be gcp:region (the default), because the images bucket's Eventarc
     * triggers are created there and a trigger only sees buckets in its own location.
     */
    location: z.string().min(2).optional(),
    /** Feature-store shards older than this are deleted (they can be rebuilt from images). */
    featuresRetentionDays: z.number().int().min(1).max(3650).default(180),
    /** Superseded model files (non-current object versions) kept per object. */
    modelVersionsToKeep: z.number().int().min(1).max(100).default(5),
    /** Click-feedback objects (feedback/ of the features bucket) older than this are deleted: old clicks add little and cost a read each. */
    feedbackRetentionDays: z.number().int().min(1).max(3650).default(90),
    /**
     * Sampled image-query vectors (query-vectors/ of the features bucket) older than this are
     * deleted: the drift check reads only the newest (the last 7 days). The bucket's soft-delete
     * policy (Cloud Storage's default, 7 days: this stack sets none) keeps deleted objects restorable that much longer.
     */
    querySampleRetentionDays: z.number().int().min(1).max(3650).default(7),
    /** Let `pulumi destroy` delete non-empty buckets. Off: images are the one thing not rebuildable. */
    forceDestroy: z.boolean().default(false),
  })
  .strict()
  .default({ featuresRetentionDays: 180, modelVersionsToKeep: 5, feedbackRetentionDays: 90, querySampleRetentionDays: 7, forceDestroy: false });

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
    /** Cloud Run GPU type, set as the `accelerator` node selector (see CLOUD_RUN_GPU_TYPES). */
    gpuType: z.enum(CLOUD_RUN_GPU_TYPES).default('nvidia-l4'),
    /** Tasks per execution; each takes a share of the backlog. */
    taskCount: z.number().int().min(1).max(10000).default(4),
    /** Tasks running at once (bounded by GPU quota). */
    parallelism: z.number().int().min(1).max(1000).default(2),
    /**
     * Per-task CPU and memory. Cloud Run takes 1, 2, 4, 6 or 8 CPUs and up to 4Gi per CPU (32Gi
     * at most); with an L4 GPU at least 4 CPU and 16Gi (L4_INSTANCE_LIMITS).
     */
    cpu: z.number().int().min(1).max(8).default(8),
    memory: memory.default('32Gi'),
    /** Task timeout and retries of a failed task. */
    taskTimeout: duration.default('3600s'),
    maxRetries: z.number().int().min(0).max(10).default(3),
    /** Images per ONNX batch; decode guards (pixels, bytes) against decompression bombs. */
    batchSize: z.number().int().min(1).max(512).default(32),
    maxPixels: z.number().int().min(1).max(2_000_000_000).default(50_000_000),
    maxBytes: z
      .number()
      .int()
      .min(1)
      .max(5_000_000_000)
      .default(100 * 1024 * 1024),
    /** Only objects under this prefix of the images bucket are indexed. */
    imagePrefix: z.string().default(''),
    /** How often Scheduler calls dispatchEmbed, which starts the job when there is a backlog. */
    dispatchSchedule: cron.default('*/5 * * * *'),
  })
  .strict()
  .refine((e) => e.parallelism <= e.taskCount, { message: 'parallelism must not exceed taskCount', path: ['parallelism'] })
  .refine((e) => !e.gpu || e.cpu >= 4, { message: 'a GPU task needs cpu >= 4 (Cloud Run minimum)', path: ['cpu'] })
  .refine((e) => !e.gpu || gib(e.memory) >= 16, { message: 'a GPU task needs memory >= 16Gi (Cloud Run minimum)', path: ['memory'] })
  .superRefine((e, ctx) => {
    for (const issue of cloudRunShapeIssues(e.cpu, e.memory)) ctx.addIssue({ code: 'custom', message: issue.message, path: [issue.path] });
  })
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
    indexAlias: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]*$/, 'must be lowercase letters, digits, "_" or "-"')
      .default('images'),
    /** vm mode: zone, machine type, data disk, container image (pulled through Artifact Registry). */
    zone: z
      .string()
      .regex(/^[a-z]+-[a-z]+\d+-[a-z]$/, 'must be a zone such as "us-central1-a"')
      .optional(),
    machineType: z.string().min(1).default('e2-standard-4'),
    diskSizeGb: z.number().int().min(10).max(65536).default(100),
    image: z.string().min(1).default('opensearchproject/opensearch:2.19.1'),
    /** JVM heap; half of the machine's memory is the usual rule. */
    heap: z
      .string()
      .regex(/^\d+[mg]$/, 'must be a JVM size like "8g"')
      .default('8g'),
    /** Range of the Serverless VPC Access connector (a /28 unused in the network). */
    connectorCidr: z
      .string()
      .regex(/^\d{1,3}(\.\d{1,3}){3}\/28$/, 'must be an unused /28 range, e.g. "10.8.0.0/28"')
      .default('10.8.0.0/28'),
    /** Range of the subnet the VM lives in. */
    subnetCidr: z
      .string()
      .regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'must be a CIDR range, e.g. "10.10.0.0/24"')
      .default('10.10.0.0/24'),
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
    args: z.partialRecord(z.enum(['seed', 'epochs', 'margin', 'heldOut', 'hidden']), z.string().regex(/^[0-9.]+$/, 'a number')).default({}),
    /**
     * Hyperparameter search instead of one retraining (README "Hyperparameter search"): the
     * scheduled run starts a Vertex AI hyperparameter tuning job of `trials` trials, `parallel` at
     * once, on the trainer image, and promotes the best only through the gate. `space`: the search
     * space (as `imgsearch tune --space`; default the built-in one); `args` seed/margin/heldOut apply.
     */
    tune: z
      .object({
        trials: z.number().int().min(1).max(100).default(8),
        parallel: z.number().int().min(1).max(20).default(2),
        algorithm: z.enum(['ALGORITHM_UNSPECIFIED', 'RANDOM_SEARCH']).default('ALGORITHM_UNSPECIFIED'),
        space: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
      })
      .strict()
      .refine((t) => t.parallel <= t.trials, { message: 'parallel must not exceed trials', path: ['parallel'] })
      // It travels as one argument of the retrain request, at most 1,000 characters.
      .refine((t) => !t.space || JSON.stringify(t.space).length <= 1000, { message: 'the space must fit in 1,000 characters of JSON', path: ['space'] })
      .optional(),
  })
  .strict()
  .default({ schedule: '0 3 * * 0', machineType: 'n1-standard-8', args: {} });

const searchSchema = z
  .object({
    /**
     * Who may reach the search page and API (README "Security model"):
     * - `private` (default): callers need roles/run.invoker (e.g. `gcloud run services proxy`);
     * - `iap`: browser users sign in with Google through Identity-Aware Proxy on the service
     *   (the project must belong to an organization); `iapMembers` lists who may;
     * - `public`: anyone, only through an external HTTPS load balancer on `domain` with a Cloud
     *   Armor per-client rate limit (the run.app URL is closed to the internet).
     */
    access: z.enum(['private', 'iap', 'public']).optional(),
    /** Deprecated: `true` is `access: public`. */
    public: z.boolean().optional(),
    /** `iap` only: who may open the page, e.g. ["group:team@example.com", "user:ana@example.com"]. */
    iapMembers: z
      .array(z.string().regex(/^(user|group|domain|serviceAccount):\S+$/, 'must be "user:…", "group:…", "domain:…" or "serviceAccount:…"'))
      .default([]),
    /** `public` only: the DNS name the load balancer's managed certificate is issued for (point its A record at the `searchAddress` output). */
    domain: z
      .string()
      .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$/, 'must be a DNS name such as "search.example.com"')
      .optional(),
    /** `public` only: requests per minute one client IP may send before Cloud Armor answers 429. */
    rateLimitPerMinute: z.number().int().min(10).max(100_000).default(300),
    minInstances: z.number().int().min(0).max(100).default(0),
    maxInstances: z.number().int().min(1).max(1000).default(5),
    /** Per-instance CPU and memory (Cloud Run's table: see CLOUD_RUN_CPU_VALUES). */
    cpu: z.number().int().min(1).max(8).default(2),
    memory: memory.default('2Gi'),
    /**
     * Share of image queries whose vector (derived from the image, never the image or any text) is
     * kept for the drift check under query-vectors/ of the features bucket (README "Drift", "Cloud
     * query sample"): 0.1 keeps one query in ten. 0 turns sampling off: the service keeps none and
     * gets no create permission there.
     */
    querySampleRate: z.number().min(0, 'must be from 0 (off) to 1 (every query)').max(1, 'must be from 0 (off) to 1 (every query)').default(0.1),
  })
  .strict()
  .refine((s) => s.minInstances <= s.maxInstances, { message: 'minInstances must not exceed maxInstances', path: ['minInstances'] })
  .superRefine((s, ctx) => {
    for (const issue of cloudRunShapeIssues(s.cpu, s.memory)) ctx.addIssue({ code: 'custom', message: issue.message, path: [issue.path] });
    if (s.access !== undefined && s.public !== undefined && (s.access === 'public') !== s.public)
      ctx.addIssue({ code: 'custom', message: 'set access only (public is its deprecated form)', path: ['public'] });
    const access = s.access ?? (s.public ? 'public' : 'private');
    if (access === 'iap' && s.iapMembers.length === 0)
      ctx.addIssue({ code: 'custom', message: 'access "iap" needs iapMembers, e.g. ["group:team@example.com"]', path: ['iapMembers'] });
    if (access === 'public' && !s.domain)
      ctx.addIssue({
        code: 'custom',
        message: 'access "public" needs domain (the load balancer with Cloud Armor serves it), e.g. "search.example.com"',
        path: ['domain'],
      });
  })
  .transform(({ public: legacy, ...s }) => ({ ...s, access: s.access ?? (legacy ? 'public' : 'private') }))
  .default({ access: 'private', iapMembers: [], rateLimitPerMinute: 300, minInstances: 0, maxInstances: 5, cpu: 2, memory: '2Gi', querySampleRate: 0.1 });

const modelSchema = z
  .object({
    /**
     * The first model the stack registers and activates (the bootstrap job reads it):
     * - `default`: the built-in MobileNetV2, converted offline from the nsfwjs package (no download);
     * - `clip-vit-b32`: the CLIP ViT-B/32 image and text towers, downloaded by the bootstrap job
     *   from their public files (cloud workloads have internet) and checked against pinned SHA-256
     *   hashes before they are registered.
     * Retraining promotes better versions after that either way.
     */
    initial: z.enum(['default', 'clip-vit-b32']).default('default'),
  })
  .strict()
  .default({ initial: 'default' });

const monitoringSchema = z
  .object({
    /** Alert when the 95th percentile of search latency (ms, end to end in the search service, per query kind over 5 minutes) stays above this for 5 minutes. */
    latencyP95Ms: z.number().positive().max(600_000).default(2000),
    /** Alert when more than this share of searches return no result (over 15 minutes). */
    zeroResultRate: z.number().gt(0).max(1).default(0.2),
    /** Alert when the 95th percentile of freshness lag (upload → searchable, seconds, over 10 minutes) stays above this for 10 minutes. */
    freshnessLagP95Seconds: z.number().positive().max(604_800).default(900),
  })
  .strict()
  .default({ latencyP95Ms: 2000, zeroResultRate: 0.2, freshnessLagP95Seconds: 900 });

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
  region: z
    .string()
    .regex(/^[a-z]+-[a-z]+\d+$/, 'must be a region such as "us-central1"')
    .default('us-central1'),
  /**
   * Prefix of every resource name: lowercase letters, digits and "-". Its length is bounded by the
   * names derived from it (DERIVED_NAMES): service account ids (30) allow up to 16 characters.
   */
  prefix: z
    .string()
    .regex(/^[a-z]([a-z0-9-]*[a-z0-9])?$/, 'must be lowercase letters, digits or "-", starting with a letter and not ending with "-"')
    .min(2, 'must be at least 2 characters')
    .max(30, 'must be at most 30 characters')
    .default('iss'),
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
  model: modelSchema,
  images: imagesSchema,
  /** Prediction-monitoring alert thresholds (`iss:monitoring.*`, infra/components/monitoring.ts). */
  monitoring: monitoringSchema,
  /** external mode only: the cluster URL (stored in Secret Manager like the credentials). */
  opensearchUrl: z
    .url({ protocol: /^https?$/, error: 'must be an http(s) URL, e.g. "https://search.example.com:9200"' })
    // Plain config is stored in clear in Pulumi.<stack>.yaml and the state: credentials go to the secrets.
    .refine(
      (u) => {
        const url = new URL(u);
        return url.username === '' && url.password === '';
      },
      {
        error:
          'must not carry a user name or password (user:pass@), which plain config would keep in clear: give them as secrets ' +
          '(pulumi config set --secret iss:opensearchUsername <user>; pulumi config set --secret iss:opensearchPassword <password>)',
      },
    )
    .optional(),
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
  const [head] = path;
  if (head === 'project' || head === 'region') return `gcp:${head}`;
  // The zod path as Pulumi's `--path` reads it (`embed.taskCount`, `list[0]`).
  return `${CONFIG_NAMESPACE}:${issuePath(path, '')}`;
}

const fixes: Record<string, string> = {
  'gcp:project': 'pulumi config set gcp:project <your-project-id>',
  'gcp:region': 'pulumi config set gcp:region us-central1',
  'iss:opensearchUrl': 'pulumi config set iss:opensearchUrl https://<host>:9200',
};

/** Secrets checked with the settings: plain values held in memory only, never quoted in a message. */
export interface StackSecrets {
  opensearchPassword?: string;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
/** One setting parsed on its own, or undefined when it is invalid (its own error is listed already). */
function part<S extends z.ZodType>(schema: S, value: unknown): z.output<S> | undefined {
  const r = schema.safeParse(value);
  return r.success ? r.data : undefined;
}

const PASSWORD_FIX = 'pulumi config set --secret iss:opensearchPassword <a strong password>';

/**
 * Rules that tie settings together (GPU region, bucket location, name lengths, the admin password).
 * Each reads only the settings it needs, parsed one by one, so they are checked (and listed) even
 * when some unrelated setting is wrong.
 */
function crossSettingProblems(raw: Record<string, unknown>, secrets: StackSecrets | undefined): string[] {
  const problems: string[] = [];
  const shape = stackSchema.shape;
  const project = part(shape.project, raw.project);
  const region = part(shape.region, raw.region);
  const prefix = part(shape.prefix, raw.prefix);
  const embed = isRecord(raw.embed) ? raw.embed : {};
  const storage = isRecord(raw.storage) ? raw.storage : {};
  const opensearch = isRecord(raw.opensearch) ? raw.opensearch : {};

  const gpu = part(z.boolean().default(true), embed.gpu);
  if (gpu && region && !(CLOUD_RUN_GPU_JOB_REGIONS as readonly string[]).includes(region)) {
    const regions = CLOUD_RUN_GPU_JOB_REGIONS.map((r) => ((CLOUD_RUN_GPU_INVITATION_ONLY as readonly string[]).includes(r) ? `${r} (by invitation only)` : r));
    problems.push(
      `- gcp:region: iss:embed.gpu is true but Cloud Run jobs have no GPU (NVIDIA L4) in ${region}; regions that have them: ${regions.join(', ')} ` +
        `(fix: pulumi config set gcp:region us-central1, or run the embed job on CPU: pulumi config set --path iss:embed.gpu false)`,
    );
  }

  // Eventarc: a Cloud Storage trigger must be in the bucket's own location (a bucket in
  // europe-west1 needs a trigger in europe-west1; a dual- or multi-region bucket such as US needs
  // one in that location, e.g. "us"): https://cloud.google.com/eventarc/docs/understand-locations
  // and https://cloud.google.com/blog/topics/developers-practitioners/closer-look-locations-eventarc
  // (read 2026-11-27). The stack creates its triggers in gcp:region, so the images bucket must be
  // exactly there; a bucket in a multi-region "containing" the region is not enough.
  const location = part(z.string().min(2).optional(), storage.location);
  if (location && region && location.toLowerCase() !== region) {
    problems.push(
      `- iss:storage.location: the buckets must be in gcp:region (${region}), not ${location}: the images bucket's Eventarc triggers are created in gcp:region, ` +
        `and a Cloud Storage trigger only sees buckets in its own location (fix: pulumi config rm --path iss:storage.location)`,
    );
  }

  if (project && prefix) {
    const tooLong = derivedNameProblems({ project, prefix });
    if (tooLong.length > 0) {
      problems.push(
        `- iss:prefix: "${prefix}" makes names Google refuses: ${tooLong.join('; ')} (fix: pulumi config set iss:prefix <at most ${maxPrefixLength(project)} characters>)`,
      );
    }
  }

  if (secrets) {
    const pw = secrets.opensearchPassword;
    const mode = part(z.enum(['external', 'vm']).default('vm'), opensearch.mode);
    if (pw === undefined || pw === '') {
      problems.push(`- iss:opensearchPassword: required (fix: ${PASSWORD_FIX})`);
    } else if (mode === 'vm') {
      // vm mode: the password becomes OPENSEARCH_INITIAL_ADMIN_PASSWORD of a new cluster, and
      // OpenSearch (>= 2.12) will not start with one its strength check rejects.
      const weak = checkOpenSearchAdminPassword(pw);
      if (weak.length > 0) {
        problems.push(
          `- iss:opensearchPassword: OpenSearch would refuse it as the admin password of the new cluster: ${weak.join('; ')} ` +
            `(fix: ${PASSWORD_FIX}, e.g. 16 or more random letters, digits and symbols)`,
        );
      }
    }
  }
  return problems;
}

/**
 * Validates raw settings; one error lists every bad setting with the command that fixes it.
 * With `secrets` (as loadStackConfig passes them) the OpenSearch admin password is checked too;
 * messages never contain a secret's value.
 */
export function parseStackConfig(raw: Record<string, unknown>, secrets?: StackSecrets): ParsedStackConfig {
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
  problems.push(...crossSettingProblems(raw, secrets));
  if (problems.length > 0 || !result.success) {
    throw new ConfigError(`Invalid stack configuration:\n${problems.join('\n')}`, result.success ? {} : { cause: result.error });
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
    model: iss.getObject('model'),
    images: iss.getObject('images'),
    monitoring: iss.getObject('monitoring'),
    opensearchUrl: iss.get('opensearchUrl'),
  };
  for (const key of Object.keys(raw)) if (raw[key] === undefined) delete raw[key];
  // Pulumi decrypts secret config before the program starts, so the password is known here
  // synchronously (requireSecret is this same value wrapped in a secret Output). Checking it now,
  // with the other settings, throws before createStack registers a single resource: `pulumi
  // preview` and `pulumi up` both stop with the one ConfigError. (An `.apply` on the Output would
  // also fail preview, but only as an unhandled rejection while resources are being registered.)
  const password = iss.get('opensearchPassword');
  const parsed = parseStackConfig(raw, { opensearchPassword: password });
  return {
    ...parsed,
    // vm mode runs the cluster itself, with the built-in admin user; external clusters name theirs.
    opensearchUsername: parsed.opensearch.mode === 'vm' ? pulumi.secret('admin') : iss.requireSecret('opensearchUsername'),
    opensearchPassword: pulumi.secret(password as string),
  };
}

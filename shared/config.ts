import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { ANN_TYPES, type AnnType } from './ports/vector-index.js';
import { envProblems } from './validation.js';

/**
 * Local-mode configuration, read once from the environment (CLI flags override), validated with
 * zod. One error lists every bad variable and how to fix it. Cloud entry points read their own
 * settings in shared/wiring/cloud-config.ts on the same pattern.
 */
const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const envSchema = z.object({
  IMGSEARCH_HOME: z.string().min(1).default('.imgsearch'),
  IMGSEARCH_BUCKET_DIR: z.string().min(1).default('bucket'),
  IMGSEARCH_HOST: z.string().min(1).default('127.0.0.1'),
  IMGSEARCH_PORT: intFrom(0, 65535).default(8080),
  /** Images per batched ONNX run. */
  IMGSEARCH_BATCH_SIZE: intFrom(1, 512).default(32),
  /** Decompression-bomb guard: images above this many pixels are rejected before decoding. */
  IMGSEARCH_MAX_PIXELS: intFrom(1, 2_000_000_000).default(50_000_000),
  IMGSEARCH_MAX_BYTES: intFrom(1, 5_000_000_000).default(100 * 1024 * 1024),
  /** Largest query image uploaded to the web page / API (refused before it is read). */
  IMGSEARCH_MAX_QUERY_BYTES: intFrom(1, 1_000_000_000).default(10 * 1024 * 1024),
  /** Only objects under this prefix are indexed. */
  IMGSEARCH_PREFIX: z.string().default(''),
  /** Deliveries before a message is dead-lettered. */
  IMGSEARCH_MAX_ATTEMPTS: intFrom(1, 100).default(5),
  /** Lease on a pulled message; extended while a batch is worked on, redelivered after a crash. */
  IMGSEARCH_ACK_DEADLINE_SECONDS: intFrom(2, 600).default(60),
  /** ONNX Runtime intra-op threads (0 = one per core). */
  IMGSEARCH_THREADS: intFrom(0, 256).default(0),
  IMGSEARCH_INDEX: z.enum(['lancedb', 'opensearch']).default('lancedb'),
  /** Embedded index: live rows from which `up` builds an ANN index (below, an exact scan is fast enough). */
  IMGSEARCH_ANN_MIN_ROWS: intFrom(256, 2_000_000_000).default(5_000),
  /** Embedded index: the ANN index kind (picked by measurement, see README "How search scales"). */
  IMGSEARCH_ANN_TYPE: z.enum(ANN_TYPES).default('ivf_hnsw_sq'),
  /** Embedded index: seconds between checks of whether the ANN index needs building, folding in or retraining. */
  IMGSEARCH_ANN_CHECK_SECONDS: intFrom(1, 86_400).default(30),
  /** Drift (shared/services/drift.ts): minutes between `up`'s drift checks (0: off). */
  IMGSEARCH_DRIFT_CHECK_MINUTES: intFrom(0, 10_080).default(60),
  /** Drift: the most recent uploads compared with the model's reference profile. */
  IMGSEARCH_DRIFT_RECENT: intFrom(10, 1_000_000).default(1000),
  /** Drift: query vectors kept (the most recent) for the query signal. */
  IMGSEARCH_DRIFT_QUERY_SAMPLE: intFrom(0, 100_000).default(1000),
  /** Drift: fewer vectors than this in a signal are not judged. */
  IMGSEARCH_DRIFT_MIN_SAMPLE: intFrom(10, 1_000_000).default(200),
  /** Drift: PSI threshold per principal component and for the label mix (0.25 = the "major shift" band). */
  IMGSEARCH_DRIFT_PSI: z.coerce.number().positive().max(100).default(0.25),
  /** Drift: Kolmogorov–Smirnov D threshold on distances to the reference centroid. */
  IMGSEARCH_DRIFT_KS: z.coerce.number().gt(0).lt(1).default(0.2),
  /** Drift: new labelled images needed before drift alone asks for a retraining. */
  IMGSEARCH_DRIFT_MIN_NEW_LABELLED: intFrom(0, 100_000_000).default(200),
  /** Drift: Recall@1 drop on new labelled images (below the active model's recorded figure) that asks for a retraining. */
  IMGSEARCH_DRIFT_RECALL_DROP: z.coerce.number().gt(0).lt(1).default(0.05),
  /** Drift: hours after a retraining request during which no other is made. */
  IMGSEARCH_DRIFT_COOLDOWN_HOURS: z.coerce.number().min(0).max(8760).default(24),
  /** Drift: a model's first this many sampled queries are its served-query reference; later queries are compared with it. */
  IMGSEARCH_DRIFT_SERVED_BASELINE: intFrom(10, 1_000_000).default(500),
  OPENSEARCH_URL: z
    .string()
    .url('must be a URL such as https://localhost:9200')
    .refine((u) => /^https?:\/\//i.test(u), 'must start with http:// or https://')
    .optional(),
  OPENSEARCH_USERNAME: z.string().optional(),
  OPENSEARCH_PASSWORD: z.string().optional(),
  OPENSEARCH_CA_FILE: z.string().optional(),
  OPENSEARCH_INDEX_ALIAS: z
    .string()
    .regex(/^[a-z0-9][a-z0-9_-]*$/)
    .default('images'),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

export type Env = z.infer<typeof envSchema>;

export interface LocalConfig {
  home: string;
  bucketDir: string;
  host: string;
  port: number;
  batchSize: number;
  maxPixels: number;
  maxBytes: number;
  maxQueryBytes: number;
  prefix: string;
  maxAttempts: number;
  ackDeadlineSeconds: number;
  threads: number;
  index: 'lancedb' | 'opensearch';
  /** The embedded index's ANN maintenance (shared/services/ann-maintenance.ts). */
  ann: { minRows: number; type: AnnType; checkSeconds: number };
  /** Drift checks (shared/services/drift.ts): `up`'s period, the query sample's size, the thresholds. */
  drift: {
    checkMinutes: number;
    querySample: number;
    settings: {
      recentUploads: number;
      minSample: number;
      psiThreshold: number;
      ksThreshold: number;
      minNewLabelled: number;
      recallDrop: number;
      cooldownHours: number;
      servedBaseline: number;
    };
  };
  opensearch: { url?: string; username?: string; password?: string; caFile?: string; alias: string };
  logLevel: string;
  paths: {
    queue: string;
    index: string;
    models: string;
    rejected: string;
    features: string;
    feedback: string;
    /** Prediction-monitoring events (JSON lines, rotated; shared/adapters/local/search-event-log.ts). */
    monitoring: string;
    cache: string;
    reports: string;
    drift: string;
  };
}

/** How to fix each variable: every setting has one (the type makes a new setting add its own). */
const hints: Record<keyof Env, string> = {
  IMGSEARCH_PORT: 'set a port number from 0 to 65535, e.g. IMGSEARCH_PORT=8080',
  IMGSEARCH_BATCH_SIZE: 'set a whole number from 1 to 512, e.g. IMGSEARCH_BATCH_SIZE=16',
  IMGSEARCH_ANN_MIN_ROWS: 'set a whole number of rows of at least 256 (an ANN index needs that many to train), e.g. IMGSEARCH_ANN_MIN_ROWS=5000',
  IMGSEARCH_ANN_TYPE: `use one of ${ANN_TYPES.join(', ')}, e.g. IMGSEARCH_ANN_TYPE=ivf_hnsw_sq`,
  IMGSEARCH_INDEX: 'use IMGSEARCH_INDEX=lancedb (embedded) or IMGSEARCH_INDEX=opensearch with OPENSEARCH_URL',
  OPENSEARCH_URL: 'set the cluster URL, e.g. OPENSEARCH_URL=https://localhost:9200',
  IMGSEARCH_HOME: 'set a folder for the data directory, e.g. IMGSEARCH_HOME=.imgsearch',
  IMGSEARCH_BUCKET_DIR: 'set the folder `up` watches, e.g. IMGSEARCH_BUCKET_DIR=bucket',
  IMGSEARCH_HOST: 'set the address to listen on, e.g. IMGSEARCH_HOST=127.0.0.1 (or 0.0.0.0 for every interface)',
  IMGSEARCH_MAX_PIXELS: 'set a whole number of pixels from 1 to 2000000000, e.g. IMGSEARCH_MAX_PIXELS=50000000',
  IMGSEARCH_MAX_BYTES: 'set a whole number of bytes from 1 to 5000000000, e.g. IMGSEARCH_MAX_BYTES=104857600',
  IMGSEARCH_MAX_QUERY_BYTES: 'set a whole number of bytes from 1 to 1000000000, e.g. IMGSEARCH_MAX_QUERY_BYTES=10485760',
  IMGSEARCH_PREFIX: 'set an object-name prefix, e.g. IMGSEARCH_PREFIX=photos/, or leave it unset to index everything',
  IMGSEARCH_MAX_ATTEMPTS: 'set a whole number of deliveries from 1 to 100, e.g. IMGSEARCH_MAX_ATTEMPTS=5',
  IMGSEARCH_ACK_DEADLINE_SECONDS: 'set a whole number of seconds from 2 to 600, e.g. IMGSEARCH_ACK_DEADLINE_SECONDS=60',
  IMGSEARCH_THREADS: 'set a whole number of threads from 0 (one per core) to 256, e.g. IMGSEARCH_THREADS=0',
  IMGSEARCH_ANN_CHECK_SECONDS: 'set a whole number of seconds from 1 to 86400, e.g. IMGSEARCH_ANN_CHECK_SECONDS=30',
  IMGSEARCH_DRIFT_CHECK_MINUTES: 'set a whole number of minutes from 0 (no drift checks in `up`) to 10080, e.g. IMGSEARCH_DRIFT_CHECK_MINUTES=60',
  IMGSEARCH_DRIFT_RECENT: 'set a whole number of uploads of at least 10, e.g. IMGSEARCH_DRIFT_RECENT=1000',
  IMGSEARCH_DRIFT_QUERY_SAMPLE: 'set a whole number of queries from 0 (keep none) to 100000, e.g. IMGSEARCH_DRIFT_QUERY_SAMPLE=1000',
  IMGSEARCH_DRIFT_MIN_SAMPLE: 'set a whole number of at least 10, e.g. IMGSEARCH_DRIFT_MIN_SAMPLE=200',
  IMGSEARCH_DRIFT_PSI: 'set a positive number, e.g. IMGSEARCH_DRIFT_PSI=0.25 (the usual "major shift" band; 0.1 flags moderate shifts)',
  IMGSEARCH_DRIFT_KS: 'set a number between 0 and 1 (exclusive), e.g. IMGSEARCH_DRIFT_KS=0.2',
  IMGSEARCH_DRIFT_MIN_NEW_LABELLED: 'set a whole number of images of at least 0, e.g. IMGSEARCH_DRIFT_MIN_NEW_LABELLED=200',
  IMGSEARCH_DRIFT_RECALL_DROP: 'set a number between 0 and 1 (exclusive), e.g. IMGSEARCH_DRIFT_RECALL_DROP=0.05',
  IMGSEARCH_DRIFT_COOLDOWN_HOURS: 'set a number of hours from 0 to 8760, e.g. IMGSEARCH_DRIFT_COOLDOWN_HOURS=24',
  IMGSEARCH_DRIFT_SERVED_BASELINE: 'set a whole number of queries of at least 10, e.g. IMGSEARCH_DRIFT_SERVED_BASELINE=500',
  OPENSEARCH_USERNAME: 'set the user name of the cluster, e.g. OPENSEARCH_USERNAME=admin',
  OPENSEARCH_PASSWORD: 'set the password of OPENSEARCH_USERNAME',
  OPENSEARCH_CA_FILE: "set the path of a PEM file with the cluster's CA certificate",
  OPENSEARCH_INDEX_ALIAS: "use lower-case letters, digits, '_' or '-', starting with a letter or digit, e.g. OPENSEARCH_INDEX_ALIAS=images",
  LOG_LEVEL: 'use one of trace, debug, info, warn, error, fatal, silent, e.g. LOG_LEVEL=info',
};

/** `IMGSEARCH_*` variables read outside this schema (debug switches). */
const OTHER_VARIABLES = ['IMGSEARCH_DEBUG', 'IMGSEARCH_ORT_SPIN'];

/**
 * `IMGSEARCH_*` variables set in `env` that no setting reads (a typo would otherwise be silently
 * ignored), each with the closest known name: `IMGSEARCH_THREDS is not a setting; did you mean IMGSEARCH_THREADS?`.
 */
export function unknownVariableWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = [...Object.keys(envSchema.shape), ...OTHER_VARIABLES];
  return Object.keys(env)
    .filter((name) => name.startsWith('IMGSEARCH_') && !known.includes(name))
    .sort()
    .map((name) => {
      const closest = known.filter((k) => k.startsWith('IMGSEARCH_')).reduce((best, k) => (editDistance(name, k) < editDistance(name, best) ? k : best));
      return `${name} is not a setting and is ignored; did you mean ${closest}?`;
    });
}

/** Levenshtein distance (insertions, deletions, substitutions). */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

export function parseEnv(env: NodeJS.ProcessEnv): Env {
  const result = envSchema.safeParse(env);
  if (!result.success) {
    const lines = envProblems(result.error, env, hints);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`, { cause: result.error });
  }
  const parsed = result.data;
  if (parsed.IMGSEARCH_INDEX === 'opensearch' && !parsed.OPENSEARCH_URL) {
    throw new ConfigError(`Invalid configuration:\n- OPENSEARCH_URL is required with IMGSEARCH_INDEX=opensearch (${hints.OPENSEARCH_URL})`);
  }
  const sample = parsed.IMGSEARCH_DRIFT_QUERY_SAMPLE;
  const needed = parsed.IMGSEARCH_DRIFT_SERVED_BASELINE + parsed.IMGSEARCH_DRIFT_MIN_SAMPLE;
  if (sample > 0 && sample < needed) {
    throw new ConfigError(
      `Invalid configuration:\n- IMGSEARCH_DRIFT_QUERY_SAMPLE=${sample} keeps too few queries to compare any with the served-query reference: ` +
        `it needs IMGSEARCH_DRIFT_SERVED_BASELINE (${parsed.IMGSEARCH_DRIFT_SERVED_BASELINE}) + IMGSEARCH_DRIFT_MIN_SAMPLE (${parsed.IMGSEARCH_DRIFT_MIN_SAMPLE}) = ${needed}; ` +
        `raise it, e.g. IMGSEARCH_DRIFT_QUERY_SAMPLE=${Math.max(1000, needed)}, or lower IMGSEARCH_DRIFT_SERVED_BASELINE`,
    );
  }
  return parsed;
}

export function configFromEnv(env: Env, cwd = process.cwd()): LocalConfig {
  const home = path.resolve(cwd, env.IMGSEARCH_HOME);
  return {
    home,
    bucketDir: path.resolve(cwd, env.IMGSEARCH_BUCKET_DIR),
    host: env.IMGSEARCH_HOST,
    port: env.IMGSEARCH_PORT,
    batchSize: env.IMGSEARCH_BATCH_SIZE,
    maxPixels: env.IMGSEARCH_MAX_PIXELS,
    maxBytes: env.IMGSEARCH_MAX_BYTES,
    maxQueryBytes: env.IMGSEARCH_MAX_QUERY_BYTES,
    prefix: env.IMGSEARCH_PREFIX,
    maxAttempts: env.IMGSEARCH_MAX_ATTEMPTS,
    ackDeadlineSeconds: env.IMGSEARCH_ACK_DEADLINE_SECONDS,
    threads: env.IMGSEARCH_THREADS,
    index: env.IMGSEARCH_INDEX,
    ann: { minRows: env.IMGSEARCH_ANN_MIN_ROWS, type: env.IMGSEARCH_ANN_TYPE, checkSeconds: env.IMGSEARCH_ANN_CHECK_SECONDS },
    drift: {
      checkMinutes: env.IMGSEARCH_DRIFT_CHECK_MINUTES,
      querySample: env.IMGSEARCH_DRIFT_QUERY_SAMPLE,
      settings: {
        recentUploads: env.IMGSEARCH_DRIFT_RECENT,
        minSample: env.IMGSEARCH_DRIFT_MIN_SAMPLE,
        psiThreshold: env.IMGSEARCH_DRIFT_PSI,
        ksThreshold: env.IMGSEARCH_DRIFT_KS,
        minNewLabelled: env.IMGSEARCH_DRIFT_MIN_NEW_LABELLED,
        recallDrop: env.IMGSEARCH_DRIFT_RECALL_DROP,
        cooldownHours: env.IMGSEARCH_DRIFT_COOLDOWN_HOURS,
        servedBaseline: env.IMGSEARCH_DRIFT_SERVED_BASELINE,
      },
    },
    opensearch: {
      url: env.OPENSEARCH_URL,
      username: env.OPENSEARCH_USERNAME,
      password: env.OPENSEARCH_PASSWORD,
      caFile: env.OPENSEARCH_CA_FILE,
      alias: env.OPENSEARCH_INDEX_ALIAS,
    },
    logLevel: env.LOG_LEVEL,
    paths: {
      queue: path.join(home, 'queue'),
      index: path.join(home, 'index'),
      models: path.join(home, 'models'),
      rejected: path.join(home, 'rejected'),
      features: path.join(home, 'features'),
      feedback: path.join(home, 'feedback'),
      monitoring: path.join(home, 'monitoring'),
      cache: path.join(home, 'cache'),
      reports: path.join(home, 'reports'),
      drift: path.join(home, 'drift'),
    },
  };
}

let cached: LocalConfig | undefined;

/** The configuration, read once. `overrides` (CLI flags) win over the environment. */
export function loadConfig(overrides: Partial<Record<keyof Env, string | undefined>> = {}): LocalConfig {
  if (cached && Object.keys(overrides).length === 0) return cached;
  const merged: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) merged[k] = v;
  cached = configFromEnv(parseEnv(merged));
  return cached;
}

export function resetConfigCache(): void {
  cached = undefined;
}

import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from './errors.js';
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
  /** Only objects under this prefix are indexed. */
  IMGSEARCH_PREFIX: z.string().default(''),
  /** Deliveries before a message is dead-lettered. */
  IMGSEARCH_MAX_ATTEMPTS: intFrom(1, 100).default(5),
  /** Lease on a pulled message; extended while a batch is worked on, redelivered after a crash. */
  IMGSEARCH_ACK_DEADLINE_SECONDS: intFrom(2, 600).default(60),
  /** ONNX Runtime intra-op threads (0 = one per core). */
  IMGSEARCH_THREADS: intFrom(0, 256).default(0),
  IMGSEARCH_INDEX: z.enum(['lancedb', 'opensearch']).default('lancedb'),
  OPENSEARCH_URL: z.string().url().optional(),
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
  prefix: string;
  maxAttempts: number;
  ackDeadlineSeconds: number;
  threads: number;
  index: 'lancedb' | 'opensearch';
  opensearch: { url?: string; username?: string; password?: string; caFile?: string; alias: string };
  logLevel: string;
  paths: {
    queue: string;
    index: string;
    models: string;
    rejected: string;
    features: string;
    feedback: string;
    cache: string;
    reports: string;
  };
}

const hints: Partial<Record<keyof Env, string>> = {
  IMGSEARCH_PORT: 'set a port number from 0 to 65535, e.g. IMGSEARCH_PORT=8080',
  IMGSEARCH_BATCH_SIZE: 'set a whole number from 1 to 512, e.g. IMGSEARCH_BATCH_SIZE=16',
  IMGSEARCH_INDEX: 'use IMGSEARCH_INDEX=lancedb (embedded) or IMGSEARCH_INDEX=opensearch with OPENSEARCH_URL',
  OPENSEARCH_URL: 'set the cluster URL, e.g. OPENSEARCH_URL=https://localhost:9200',
};

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
    prefix: env.IMGSEARCH_PREFIX,
    maxAttempts: env.IMGSEARCH_MAX_ATTEMPTS,
    ackDeadlineSeconds: env.IMGSEARCH_ACK_DEADLINE_SECONDS,
    threads: env.IMGSEARCH_THREADS,
    index: env.IMGSEARCH_INDEX,
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
      cache: path.join(home, 'cache'),
      reports: path.join(home, 'reports'),
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

import { execFile } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { errorMessage, ParseError } from '../../shared/errors.js';
import type { Logger } from '../../shared/logger.js';
import type { Embedder, PreparedImage } from '../../shared/ports/embedder.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { bootstrapJobHint, cloudConfig } from '../../shared/wiring/cloud-config.js';
import { cloudLogger, cloudModelRegistry, storageClient } from '../../shared/wiring/cloud.js';

/**
 * GPU smoke test of a deployed embed job, run once after `pulumi up` as an execution of the embed
 * job with overridden container args. The job runs `node --enable-source-maps /app/dist/embed.js`
 * (command `node` + args); an override replaces the args, so it names this program's own bundle:
 *
 *   gcloud run jobs execute <prefix>-embed --region <region> --tasks 1 \
 *     --args=--enable-source-maps,/app/dist/gpu-smoke.js --wait
 *
 * (or `--args=--enable-source-maps,/app/dist/embed.js,--gpu-smoke-test`: jobs/embed/main.ts
 * dispatches on that flag). It loads the registry's active model with CUDA required (a provider
 * that does not load fails it, exit code 1), embeds seeded synthetic images in batches, and logs
 * one JSON line: provider, batch size, images/s, ms per batch, model version, and the GPUs (name,
 * memory) when `nvidia-smi` is on PATH. Options as `--key=value` after the bundle: batches (20),
 * batch-size (the job's BATCH_SIZE), warmup (2), seed (1), provider (cuda; `cpu` measures the CPU
 * path for comparison). It reads no image events and writes nothing.
 */

export const GPU_SMOKE_FLAG = '--gpu-smoke-test';

export interface SmokeOptions {
  /** Timed batches. */
  batches: number;
  /** Images per batch; default: the job's BATCH_SIZE. */
  batchSize?: number;
  /** Untimed batches first (CUDA kernel selection and memory allocation happen on the first runs). */
  warmup: number;
  /** Seed of the synthetic images: the same seed gives the same pixels. */
  seed: number;
  provider: 'cuda' | 'cpu';
}

const OPTION_NAMES = ['batches', 'batch-size', 'warmup', 'seed', 'provider'] as const;

function wholeNumber(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw new ParseError(`--${name}=${value}: must be a whole number from ${min} to ${max}`);
  return n;
}

/** `--batches=20 --batch-size=32 --warmup=2 --seed=1 --provider=cuda` (every option optional). */
export function parseSmokeArgs(argv: readonly string[]): SmokeOptions {
  const options: SmokeOptions = { batches: 20, warmup: 2, seed: 1, provider: 'cuda' };
  for (const arg of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m) throw new ParseError(`unexpected argument ${JSON.stringify(arg)}: pass options as --key=value (${OPTION_NAMES.join(', ')})`);
    const [, name, value] = m as unknown as [string, string, string];
    switch (name) {
      case 'batches':
        options.batches = wholeNumber(name, value, 1, 10_000);
        break;
      case 'batch-size':
        options.batchSize = wholeNumber(name, value, 1, 1000);
        break;
      case 'warmup':
        options.warmup = wholeNumber(name, value, 0, 100);
        break;
      case 'seed':
        options.seed = wholeNumber(name, value, 0, 2 ** 32 - 1);
        break;
      case 'provider':
        if (value !== 'cuda' && value !== 'cpu') throw new ParseError(`--provider=${value}: use --provider=cuda or --provider=cpu`);
        options.provider = value;
        break;
      default:
        throw new ParseError(`unknown option --${name}; known: ${OPTION_NAMES.join(', ')}`);
    }
  }
  return options;
}

export interface GpuInfo {
  name: string;
  memoryTotalMiB: number;
  memoryUsedMiB: number;
  driverVersion: string;
}

/** `nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader,nounits` → one entry per GPU. */
export function parseNvidiaSmi(csv: string): GpuInfo[] {
  return csv
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const [name = '', total = '', used = '', driver = ''] = line.split(',').map((c) => c.trim());
      return { name, memoryTotalMiB: Number(total), memoryUsedMiB: Number(used), driverVersion: driver };
    });
}

/** The GPUs `nvidia-smi` reports, or null when it is not on PATH (or fails). */
export function nvidiaSmi(): Promise<GpuInfo[] | null> {
  return new Promise((resolve) => {
    execFile(
      'nvidia-smi',
      ['--query-gpu=name,memory.total,memory.used,driver_version', '--format=csv,noheader,nounits'],
      { timeout: 10_000 },
      (err, stdout) => {
        resolve(err ? null : parseNvidiaSmi(stdout));
      },
    );
  });
}

export interface SmokeReport {
  ok: true;
  provider: 'cuda' | 'cpu';
  modelVersion: string;
  batchSize: number;
  batches: number;
  warmupBatches: number;
  imagesPerSecond: number;
  msPerBatch: { mean: number; p50: number; min: number; max: number };
  loadMs: number;
  gpus: GpuInfo[] | null;
}

export interface SmokeDeps {
  /** The active model on `provider`; with 'cuda' it must throw when CUDA does not load (no fallback). */
  loadModel(provider: 'cuda' | 'cpu'): Promise<Embedder>;
  gpuInfo(): Promise<GpuInfo[] | null>;
  /** Batch size when no --batch-size is given (the job's BATCH_SIZE). */
  defaultBatchSize: number;
  now?: () => number;
}

/** `count` distinct seeded noise images of the model's input size, decoded and prepared once (untimed). */
async function syntheticImages(embedder: Embedder, count: number, seed: number): Promise<PreparedImage[]> {
  const random = mulberry32(seed);
  const { width, height } = embedder.manifest.image;
  const prepared: PreparedImage[] = [];
  for (let i = 0; i < count; i += 1) {
    const pixels = Buffer.alloc(width * height * 3);
    for (let p = 0; p < pixels.length; p += 1) pixels[p] = Math.floor(random() * 256);
    const png = await sharp(pixels, { raw: { width, height, channels: 3 } })
      .png()
      .toBuffer();
    prepared.push(await embedder.prepare(png));
  }
  return prepared;
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

/** Loads the model, runs warm-up then timed batches, and reports the throughput. */
export async function runGpuSmoke(options: SmokeOptions, deps: SmokeDeps): Promise<SmokeReport> {
  const now = deps.now ?? (() => performance.now());
  const batchSize = options.batchSize ?? deps.defaultBatchSize;
  const loadStart = now();
  const embedder = await deps.loadModel(options.provider);
  const loadMs = now() - loadStart;
  try {
    const images = await syntheticImages(embedder, batchSize, options.seed);
    for (let i = 0; i < options.warmup; i += 1) await embedder.embedDecoded(images);
    const times: number[] = [];
    for (let i = 0; i < options.batches; i += 1) {
      const start = now();
      const { vectors } = await embedder.embedDecoded(images);
      times.push(now() - start);
      if (vectors.length !== batchSize) throw new Error(`the model returned ${vectors.length} vectors for a batch of ${batchSize}`);
    }
    const total = times.reduce((s, t) => s + t, 0);
    const sorted = [...times].sort((a, b) => a - b);
    return {
      ok: true,
      provider: options.provider,
      modelVersion: embedder.modelVersion,
      batchSize,
      batches: options.batches,
      warmupBatches: options.warmup,
      imagesPerSecond: round(total > 0 ? (batchSize * options.batches * 1000) / total : 0, 1),
      msPerBatch: {
        mean: round(total / times.length),
        p50: round(sorted[Math.floor((sorted.length - 1) / 2)]!),
        min: round(sorted[0]!),
        max: round(sorted[sorted.length - 1]!),
      },
      loadMs: round(loadMs, 0),
      // Asked after the runs, so "used" includes the loaded model and its buffers.
      gpus: await deps.gpuInfo(),
    };
  } finally {
    await embedder.close();
  }
}

/** The embed job's configuration and GCS registry: the active model, CUDA required when asked for. */
function cloudSmokeDeps(logger: Logger): SmokeDeps {
  const config = cloudConfig('embedJob');
  const registry = cloudModelRegistry(storageClient(), config.MODELS_BUCKET, logger);
  return {
    defaultBatchSize: config.BATCH_SIZE,
    gpuInfo: nvidiaSmi,
    loadModel: (provider) =>
      new ModelHolder(registry, { maxPixels: config.MAX_PIXELS, executionProvider: provider, logger, absentHint: bootstrapJobHint(config) }).get(),
  };
}

/**
 * Parses the options, runs the smoke test and logs its one JSON result line; returns the exit
 * code (1 when CUDA does not load, the options are bad or anything else fails).
 */
export async function gpuSmokeMain(argv: readonly string[], overrides: { deps?: SmokeDeps; logger?: Logger } = {}): Promise<0 | 1> {
  const logger = overrides.logger ?? cloudLogger('gpuSmoke');
  let provider: string | undefined;
  try {
    const options = parseSmokeArgs(argv);
    provider = options.provider;
    const report = await runGpuSmoke(options, overrides.deps ?? cloudSmokeDeps(logger));
    logger.info(
      report,
      `gpu smoke test passed: ${report.imagesPerSecond} images/s on ${report.provider} (batch ${report.batchSize}, ${report.msPerBatch.mean} ms per batch)`,
    );
    return 0;
  } catch (err) {
    logger.error({ ok: false, provider, err, code: (err as { code?: unknown }).code }, `gpu smoke test failed: ${errorMessage(err)}`);
    return 1;
  }
}

// Its own entry (bundle jobs/embed/gpu-smoke.js) as well as a mode of jobs/embed/main.ts: runs
// only when started as gpu-smoke itself, never when imported (bundled into main.js, or by tests).
if (/^gpu-smoke\.(?:js|mjs|cjs|ts)$/.test(path.basename(process.argv[1] ?? ''))) {
  void gpuSmokeMain(process.argv.slice(2).filter((a) => a !== GPU_SMOKE_FLAG)).then((code) => {
    process.exitCode = code;
  });
}

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ConfigError, errorMessage, AppError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import { invalid } from '../validation.js';
import { modelManifestSchema, type ModelManifest } from './manifest.js';
import { OnnxEmbedder } from './onnx-embedder.js';
import { InThreadRunner, WorkerRunner, type TensorRunner } from './tensor-runner.js';
import { loadHead, loadTextTower } from './towers.js';
import { loadProjection } from './projection.js';

export interface LoadEmbedderOptions {
  /** Threads for one inference (intra-op); default: onnxruntime's choice. */
  threads?: number;
  /** 'cuda' requires the CUDA provider: see {@link LoadEmbedderOptions.cudaFallback}. */
  executionProvider?: 'cpu' | 'cuda';
  /**
   * When 'cuda' is asked for and the CUDA provider does not load: 'fail' (default) throws
   * {@link CudaUnavailableError}, so a GPU job never runs on CPU unnoticed; 'cpu' is an explicit
   * opt-in to run on CPU with a warning (for a caller that merely prefers a GPU).
   */
  cudaFallback?: 'fail' | 'cpu';
  /** Largest width×height accepted by prepare(). */
  maxPixels: number;
  logger?: Logger;
  /**
   * Where the image tower runs: 'worker' (default) keeps the event loop free during inference so
   * the pipeline overlaps decoding and I/O with it; 'main' runs in the calling thread.
   */
  inferenceThread?: 'worker' | 'main';
}

/**
 * CUDA was required (executionProvider 'cuda') but its provider did not load: no GPU attached,
 * no CUDA libraries, or the CPU build of onnxruntime-node. The loader's error is the `cause`.
 */
export class CudaUnavailableError extends AppError {
  override readonly code = 'CUDA_UNAVAILABLE';
  constructor(model: string, cause: unknown) {
    super(
      `the CUDA execution provider was required (ONNX_EXECUTION_PROVIDER=cuda) but did not load for ${model}: ${errorMessage(cause)}. ` +
        'Check that the job has a GPU attached (Cloud Run job with an nvidia-l4 GPU) and that its image was built with ' +
        'ONNXRUNTIME_NODE_INSTALL=cuda12 (the default npm install of onnxruntime-node has no CUDA provider); ' +
        'or deploy a CPU-only embed job (iss:embed gpu: false), which sets ONNX_EXECUTION_PROVIDER=cpu',
      { cause, meta: { model } },
    );
  }
}

/** Reads `<dir>/manifest.json` and opens the model it describes. */
export async function loadEmbedder(dir: string, options: LoadEmbedderOptions): Promise<Embedder> {
  const manifest = await readManifest(dir);
  const logger = options.logger ?? silentLogger;
  const { session: imageSession, sessionOptions } = await createSession(join(dir, manifest.image.file), options, logger);
  const check = (names: readonly string[], name: string, what: string) => {
    if (!names.includes(name)) {
      throw new ConfigError(`${join(dir, manifest.image.file)} has no ${what} named "${name}" (it has: ${names.join(', ')}); fix manifest.json`);
    }
  };
  check(imageSession.inputNames, manifest.image.inputName, 'input');
  check(imageSession.outputNames, manifest.image.outputName, 'output');
  if (manifest.image.activation) check(imageSession.outputNames, manifest.image.activation.outputName, 'output');
  const head = await loadHead(manifest, dir, { sessionOptions });
  const text = await loadTextTower(manifest, dir, { sessionOptions });
  const projection = await loadProjection(manifest, dir, sessionOptions);
  return new OnnxEmbedder(manifest, imageSession, { maxPixels: options.maxPixels }, head, text, projection);
}

export async function readManifest(dir: string): Promise<ModelManifest> {
  const path = join(dir, 'manifest.json');
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`cannot read the model manifest ${path}: ${(err as Error).message}`, { cause: err });
  }
  const parsed = modelManifestSchema.safeParse(json);
  if (!parsed.success) throw invalid(`invalid model manifest ${path}`, parsed.error, { as: ConfigError });
  const m = parsed.data;
  const beforeProjection = m.head ? m.head.outputDimension : m.image.dimension;
  const expected = m.projection ? m.projection.outputDimension : beforeProjection;
  if (m.dimension !== expected) {
    throw new ConfigError(
      `invalid model manifest ${path}: dimension ${m.dimension} should be ${expected} (${m.projection ? 'projection output' : m.head ? 'head output' : 'image tower'})`,
    );
  }
  if (m.projection && m.projection.inputDimension !== beforeProjection) {
    throw new ConfigError(
      `invalid model manifest ${path}: projection input ${m.projection.inputDimension} ≠ ${m.head ? 'head output' : 'image dimension'} ${beforeProjection}`,
    );
  }
  if (m.head && m.head.inputDimension !== m.image.dimension) {
    throw new ConfigError(`invalid model manifest ${path}: head input ${m.head.inputDimension} ≠ image dimension ${m.image.dimension}`);
  }
  return m;
}

/**
 * The CPU build of onnxruntime-node fails outright when asked for CUDA (instead of falling back),
 * as a CUDA build does without a usable GPU. A CUDA request that fails throws CudaUnavailableError,
 * unless the caller opted in to `cudaFallback: 'cpu'` (then CPU with a warning). The options that
 * worked are reused for the head and text tower.
 */
async function createSession(
  path: string,
  options: LoadEmbedderOptions,
  logger: Logger,
): Promise<{ session: TensorRunner; sessionOptions: ort.InferenceSession.SessionOptions }> {
  const create = (opts: ort.InferenceSession.SessionOptions) =>
    (options.inferenceThread ?? 'worker') === 'worker' ? WorkerRunner.create(path, opts) : InThreadRunner.create(path, opts);
  if (options.executionProvider === 'cuda') {
    const sessionOptions = sessionOptionsFor(options, ['cuda', 'cpu']);
    try {
      return { session: await create(sessionOptions), sessionOptions };
    } catch (err) {
      if ((options.cudaFallback ?? 'fail') === 'fail') throw new CudaUnavailableError(path, err);
      logger.warn({ err, model: path }, 'CUDA execution provider unavailable; running on CPU (cudaFallback: cpu)');
    }
  }
  const sessionOptions = sessionOptionsFor(options, ['cpu']);
  return { session: await create(sessionOptions), sessionOptions };
}

function sessionOptionsFor(options: LoadEmbedderOptions, executionProviders: string[]): ort.InferenceSession.SessionOptions {
  return {
    executionProviders,
    ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
    graphOptimizationLevel: 'all',
    // Idle ORT threads would otherwise spin for a while after each run, taking the cores that
    // sharp needs to decode the next batch in the pipeline.
    extra: { session: { intra_op: { allow_spinning: process.env.IMGSEARCH_ORT_SPIN === '1' ? '1' : '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

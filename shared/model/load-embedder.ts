import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ConfigError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import { modelManifestSchema, type ModelManifest } from './manifest.js';
import { OnnxEmbedder } from './onnx-embedder.js';
import { InThreadRunner, WorkerRunner, type TensorRunner } from './tensor-runner.js';
import { loadHead, loadTextTower } from './towers.js';

export interface LoadEmbedderOptions {
  /** Threads for one inference (intra-op); default: onnxruntime's choice. */
  threads?: number;
  /** 'cuda' falls back to CPU when the CUDA provider is unavailable. */
  executionProvider?: 'cpu' | 'cuda';
  /** Largest width×height accepted by prepare(). */
  maxPixels: number;
  logger?: Logger;
  /**
   * Where the image tower runs: 'worker' (default) keeps the event loop free during inference so
   * the pipeline overlaps decoding and I/O with it; 'main' runs in the calling thread.
   */
  inferenceThread?: 'worker' | 'main';
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
  const head = await loadHead(manifest, dir, { sessionOptions });
  const text = await loadTextTower(manifest, dir, { sessionOptions });
  return new OnnxEmbedder(manifest, imageSession, { maxPixels: options.maxPixels }, head, text);
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
  if (!parsed.success) {
    throw new ConfigError(`invalid model manifest ${path}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  const m = parsed.data;
  const expected = m.head ? m.head.outputDimension : m.image.dimension;
  if (m.dimension !== expected) {
    throw new ConfigError(`invalid model manifest ${path}: dimension ${m.dimension} should be ${expected} (${m.head ? 'head output' : 'image tower'})`);
  }
  if (m.head && m.head.inputDimension !== m.image.dimension) {
    throw new ConfigError(`invalid model manifest ${path}: head input ${m.head.inputDimension} ≠ image dimension ${m.image.dimension}`);
  }
  return m;
}

/**
 * The CPU build of onnxruntime-node fails outright when asked for CUDA (instead of falling back),
 * so a CUDA request that fails is retried on CPU with a warning; the options that worked are
 * reused for the head and text tower.
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
      logger.warn({ err: errorMessage(err), model: path }, 'CUDA execution provider unavailable; running on CPU');
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

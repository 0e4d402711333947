import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gpuSmokeMain, type SmokeDeps } from '../../jobs/embed/gpu-smoke.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { silentLogger } from '../../shared/logger.js';
import { DEFAULT_MODEL_VERSION } from '../../shared/model/default-model.js';
import { CudaUnavailableError, loadEmbedder } from '../../shared/model/load-embedder.js';
import { bootstrapModel, ensureActiveModel } from '../../shared/services/model-bootstrap.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { captureLogger } from '../unit/functions-fakes.js';

/**
 * The real default model (converted from nsfwjs, no network) through the bootstrap service, and
 * the CUDA-required path on this machine's CPU build of onnxruntime-node.
 */
let work: string;
let registry: LocalModelRegistry;
let modelDir: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'iss-bootstrap-it-'));
  registry = new LocalModelRegistry(join(work, 'registry'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('bootstrapModel: default', () => {
  it('converts, registers and promotes the offline default model once; then finds it present', async () => {
    const { logger } = captureLogger();
    const result = await bootstrapModel(registry, { initial: 'default', cacheDir: join(work, 'convert'), logger });
    expect(result).toEqual({ status: 'promoted', version: DEFAULT_MODEL_VERSION, initial: 'default', registered: true });
    expect((await registry.active())?.version).toBe(DEFAULT_MODEL_VERSION);
    expect(await bootstrapModel(registry, { initial: 'default', cacheDir: join(work, 'convert'), logger })).toEqual({
      status: 'present',
      version: DEFAULT_MODEL_VERSION,
    });
    // The local composition root (shared/wiring/local.ts) still returns the active version.
    expect((await ensureActiveModel(registry, join(work, 'convert'), logger)).version).toBe(DEFAULT_MODEL_VERSION);
    modelDir = await registry.localPath(DEFAULT_MODEL_VERSION);
  });
});

describe('CUDA required (ONNX_EXECUTION_PROVIDER=cuda) on a machine without CUDA', () => {
  it('loading the default model with executionProvider cuda rejects with CudaUnavailableError, keeping the cause and naming the fix', async () => {
    const attempt = loadEmbedder(modelDir, { maxPixels: 1e7, executionProvider: 'cuda' });
    await expect(attempt).rejects.toThrow(CudaUnavailableError);
    const err = (await attempt.catch((e: unknown) => e)) as CudaUnavailableError;
    expect(err.code).toBe('CUDA_UNAVAILABLE');
    expect(err.cause).toBeInstanceOf(Error);
    expect(err.message).toMatch(/CUDA execution provider was required \(ONNX_EXECUTION_PROVIDER=cuda\) but did not load for .*image\.onnx/);
    expect(err.message).toMatch(/GPU attached/);
    expect(err.message).toMatch(/ONNXRUNTIME_NODE_INSTALL=cuda12/);
    expect(err.message).toMatch(/gpu: false/);
  });

  it('ModelHolder with executionProvider cuda fails the same way (the embed job path)', async () => {
    const holder = new ModelHolder(registry, { maxPixels: 1e7, executionProvider: 'cuda', logger: silentLogger });
    await expect(holder.get()).rejects.toThrow(CudaUnavailableError);
  });

  it("runs on CPU only with the explicit opt-in cudaFallback: 'cpu' (with a warning)", async () => {
    const { logger, lines } = captureLogger();
    const embedder = await loadEmbedder(modelDir, { maxPixels: 1e7, executionProvider: 'cuda', cudaFallback: 'cpu', logger });
    try {
      expect(embedder.modelVersion).toBe(DEFAULT_MODEL_VERSION);
      expect(lines().some((l) => l.severity === 'WARNING' && /running on CPU/.test(String(l.message)))).toBe(true);
    } finally {
      await embedder.close();
    }
  });
});

describe('gpu smoke test with the real model', () => {
  const deps = (): SmokeDeps => ({
    defaultBatchSize: 2,
    gpuInfo: async () => null,
    loadModel: (provider) => new ModelHolder(registry, { maxPixels: 1e7, executionProvider: provider, threads: 2, logger: silentLogger }).get(),
  });

  it('exits 1 when CUDA does not load', async () => {
    const { logger, lines } = captureLogger();
    expect(await gpuSmokeMain(['--batches=1'], { deps: deps(), logger })).toBe(1);
    expect(lines()).toMatchObject([{ severity: 'ERROR', ok: false, provider: 'cuda', code: 'CUDA_UNAVAILABLE' }]);
  });

  it('measures the CPU path when asked for --provider=cpu', async () => {
    const { logger, lines } = captureLogger();
    expect(await gpuSmokeMain(['--provider=cpu', '--batches=2', '--warmup=1'], { deps: deps(), logger })).toBe(0);
    const [report] = lines();
    expect(report).toMatchObject({ ok: true, provider: 'cpu', modelVersion: DEFAULT_MODEL_VERSION, batchSize: 2, batches: 2, gpus: null });
    expect(report!.imagesPerSecond).toBeGreaterThan(0);
  });
});

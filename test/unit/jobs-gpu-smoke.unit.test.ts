import { describe, expect, it } from 'vitest';
import { gpuSmokeMain, parseNvidiaSmi, parseSmokeArgs, type SmokeDeps } from '../../jobs/embed/gpu-smoke.js';
import { ParseError } from '../../shared/errors.js';
import { CudaUnavailableError } from '../../shared/model/load-embedder.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, ImageEmbeddings, PreparedImage } from '../../shared/ports/embedder.js';
import { captureLogger } from './functions-fakes.js';

/** A model of 8×8 input whose "inference" takes exactly 5 ticks of the injected clock. */
class TimedFakeEmbedder implements Embedder {
  readonly dimension = 3;
  readonly hasTextTower = false;
  readonly manifest = { name: 'fake', version: 'm3', image: { width: 8, height: 8, dimension: 3 } } as unknown as ModelManifest;
  readonly modelVersion = 'm3';
  readonly prepared: Buffer[] = [];
  batches = 0;
  closed = false;
  constructor(private readonly clock: { t: number }) {}
  async prepare(image: Buffer): Promise<PreparedImage> {
    this.prepared.push(image);
    return { pixels: new Float32Array(8 * 8 * 3), width: 8, height: 8, format: 'png' };
  }
  async embedDecoded(images: PreparedImage[]): Promise<ImageEmbeddings> {
    this.batches += 1;
    this.clock.t += 5;
    const vectors = images.map(() => Float32Array.from([1, 0, 0]));
    return { base: vectors, vectors };
  }
  async project(base: Float32Array[]) {
    return base;
  }
  async embedTexts(): Promise<Float32Array[]> {
    throw new Error('no text tower');
  }
  async close() {
    this.closed = true;
  }
}

describe('gpu smoke test: options', () => {
  it('has defaults and reads --key=value options', () => {
    expect(parseSmokeArgs([])).toEqual({ batches: 20, warmup: 2, seed: 1, provider: 'cuda' });
    expect(parseSmokeArgs(['--batches=5', '--batch-size=64', '--warmup=0', '--seed=7', '--provider=cpu'])).toEqual({
      batches: 5,
      batchSize: 64,
      warmup: 0,
      seed: 7,
      provider: 'cpu',
    });
  });

  it('refuses unknown options, bad numbers and providers with the fix', () => {
    expect(() => parseSmokeArgs(['--batches'])).toThrow(ParseError);
    expect(() => parseSmokeArgs(['--batches'])).toThrow(/pass options as --key=value \(batches, batch-size, warmup, seed, provider\)/);
    expect(() => parseSmokeArgs(['--batches=0'])).toThrow(/--batches=0: must be a whole number from 1 to 10000/);
    expect(() => parseSmokeArgs(['--batch-size=2.5'])).toThrow(/--batch-size=2.5/);
    expect(() => parseSmokeArgs(['--provider=tpu'])).toThrow(/use --provider=cuda or --provider=cpu/);
    expect(() => parseSmokeArgs(['--gpus=2'])).toThrow(/unknown option --gpus/);
  });

  it('reads nvidia-smi CSV (one line per GPU)', () => {
    expect(parseNvidiaSmi('NVIDIA L4, 23034, 1203, 535.104.05\n')).toEqual([
      { name: 'NVIDIA L4', memoryTotalMiB: 23034, memoryUsedMiB: 1203, driverVersion: '535.104.05' },
    ]);
    expect(parseNvidiaSmi('')).toEqual([]);
  });
});

describe('gpu smoke test: run', () => {
  it('logs one JSON line with provider, batch size, images/s, ms per batch, model version and the GPU', async () => {
    const clock = { t: 0 };
    const embedder = new TimedFakeEmbedder(clock);
    const asked: string[] = [];
    const deps: SmokeDeps = {
      defaultBatchSize: 4,
      now: () => clock.t,
      loadModel: async (provider) => {
        asked.push(provider);
        clock.t += 100;
        return embedder;
      },
      gpuInfo: async () => [{ name: 'NVIDIA L4', memoryTotalMiB: 23034, memoryUsedMiB: 1203, driverVersion: '535.104.05' }],
    };
    const { logger, lines } = captureLogger();
    expect(await gpuSmokeMain(['--batches=3', '--warmup=1', '--seed=9'], { deps, logger })).toBe(0);
    expect(asked).toEqual(['cuda']);
    expect(embedder.batches).toBe(4); // 1 warm-up + 3 timed
    expect(embedder.closed).toBe(true);
    // Seeded synthetic images: 4 distinct PNGs.
    expect(new Set(embedder.prepared.map((b) => b.toString('base64'))).size).toBe(4);
    const out = lines();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      severity: 'INFO',
      ok: true,
      provider: 'cuda',
      modelVersion: 'm3',
      batchSize: 4,
      batches: 3,
      warmupBatches: 1,
      imagesPerSecond: 800, // 4 images per 5 ms
      msPerBatch: { mean: 5, p50: 5, min: 5, max: 5 },
      loadMs: 100,
      gpus: [{ name: 'NVIDIA L4', memoryTotalMiB: 23034 }],
    });
    expect(out[0]!.message).toBe('gpu smoke test passed: 800 images/s on cuda (batch 4, 5 ms per batch)');
  });

  it('the same seed gives the same images', async () => {
    const run = async (seed: number) => {
      const clock = { t: 0 };
      const embedder = new TimedFakeEmbedder(clock);
      await gpuSmokeMain([`--seed=${seed}`, '--batches=1', '--warmup=0', '--batch-size=2'], {
        deps: { defaultBatchSize: 4, now: () => clock.t, loadModel: async () => embedder, gpuInfo: async () => null },
        logger: captureLogger().logger,
      });
      return embedder.prepared.map((b) => b.toString('base64'));
    };
    expect(await run(3)).toEqual(await run(3));
    expect(await run(3)).not.toEqual(await run(4));
  });

  it('exits 1 with an ERROR line when CUDA does not load', async () => {
    const { logger, lines } = captureLogger();
    const deps: SmokeDeps = {
      defaultBatchSize: 4,
      loadModel: () => Promise.reject(new CudaUnavailableError('/tmp/m/image.onnx', new Error('no CUDA provider in this build'))),
      gpuInfo: async () => null,
    };
    expect(await gpuSmokeMain([], { deps, logger })).toBe(1);
    const out = lines();
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({
      severity: 'ERROR',
      ok: false,
      provider: 'cuda',
      code: 'CUDA_UNAVAILABLE',
      err: { cause: { message: 'no CUDA provider in this build' } },
    });
    expect(out[0]!.message).toMatch(/^gpu smoke test failed: the CUDA execution provider was required/);
  });

  it('exits 1 on bad options without loading anything', async () => {
    const { logger, lines } = captureLogger();
    const deps = { defaultBatchSize: 4, loadModel: () => Promise.reject(new Error('must not load')), gpuInfo: async () => null } satisfies SmokeDeps;
    expect(await gpuSmokeMain(['--batches=x'], { deps, logger })).toBe(1);
    expect(lines()[0]!.message).toMatch(/--batches=x: must be a whole number/);
  });
});

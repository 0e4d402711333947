import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { silentLogger } from '../../shared/logger.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import { BlobExperimentRunStore } from '../../shared/services/experiment-runs.js';
import { promoteThenStartReindexJob } from '../../shared/services/model-lifecycle.js';
import { threadTrialRunner } from '../../shared/services/tuning-threads.js';
import { SnapshotFeatureStore, parseSearchSpace, tune, type TuneOptions } from '../../shared/services/tuning.js';
import { mulberry32 } from '../../shared/training/prng.js';

/**
 * `tune()` with real trials: every trial is a real `retrain()` (real trainer, evaluation, gate,
 * registration) on synthetic base embeddings — class signal in 6 of 24 dimensions under stronger
 * noise in the rest, so a trained head clearly beats the identity projection of the base model.
 * Runs one trial at a time in this thread, and two at a time in worker threads.
 */
const CLASSES = ['dress', 'trouser', 'sneaker', 'bag'];
const BASE = 'synthetic-base-1';

function records(n: number, seed: number): FeatureRecord[] {
  const random = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const centres = CLASSES.map(() => Array.from({ length: 6 }, () => gauss()));
  return Array.from({ length: n }, (_, i) => {
    const c = i % CLASSES.length;
    const v = new Float32Array(24);
    for (let j = 0; j < 6; j++) v[j] = centres[c]![j]! + gauss() * 0.6;
    for (let j = 6; j < 24; j++) v[j] = gauss() * 1.4;
    const norm = Math.hypot(...v);
    return {
      id: `img-${i}`,
      uri: `file:///b/img-${i}.png`,
      generation: String(1000 + i),
      baseModel: BASE,
      vector: v.map((x) => x / norm),
      labels: [CLASSES[c]!],
    };
  });
}

const baseManifest: ModelManifest = {
  name: 'synthetic',
  version: BASE,
  image: {
    file: 'image.onnx',
    inputName: 'pixels',
    outputName: 'embedding',
    width: 8,
    height: 8,
    layout: 'NHWC',
    scale: 1 / 255,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resize: 'cover',
    dimension: 24,
  },
  dimension: 24,
  normalize: true,
};

/** Small and quick: a narrow head, few epochs, two searched options. */
const SPACE = parseSearchSpace({
  hidden: { type: 'int', min: 16, max: 64, log: true },
  learningRate: { type: 'float', min: 1e-3, max: 1e-2, log: true },
});
const FIXED = { epochs: 5, training: { batchSize: 64, outputDimension: 16, buckets: 512 } };

describe('tune with real retraining trials', () => {
  let dir: string;
  let registry: LocalModelRegistry;
  let runs: BlobExperimentRunStore;
  const data = records(480, 4);
  const features = new SnapshotFeatureStore(data);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tuning-flow-'));
    registry = new LocalModelRegistry(join(dir, 'models'));
    runs = new BlobExperimentRunStore(new FolderBlobStore(join(dir, 'runs')));
    await registry.register({ version: BASE, parent: null, manifest: baseManifest, files: { 'image.onnx': Buffer.from('fake image tower') } });
    await registry.promote(BASE);
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  const deps = () => ({
    features,
    registry,
    runs,
    logger: silentLogger,
    activate: promoteThenStartReindexJob({ registry, launcher: null, logger: silentLogger }),
  });
  const options = (o: TuneOptions): TuneOptions => ({ space: SPACE, fixed: FIXED, seed: 7, stopping: 'none', ...o });

  it('records every trial and promotes the best through the gate', async () => {
    const result = await tune(deps(), options({ trials: 3, margin: 0.02 }));
    const stored = await runs.list();
    expect(stored).toHaveLength(3);
    for (const r of stored) {
      expect(r.status).toBe('completed');
      expect(Object.keys(r.params).sort()).toEqual(['hidden', 'learningRate']);
      expect(r.curve.length).toBeGreaterThan(0);
      expect(r.heldOut!.imageToImage['recall@1']).toBeGreaterThan(0);
      expect(r.heldOut!.textToImage).not.toBeNull();
      expect(r.dataSnapshot).toMatch(/^480:[0-9a-f]{16}$/);
    }
    // The gate compared the winner with the base model on held-out images: a trained head wins by far.
    expect(result.decision!.promote, result.decision!.reasons.join('; ')).toBe(true);
    expect(result.best!.heldOut!.imageToImage['recall@1']).toBeGreaterThan(result.current!.metrics.imageToImage['recall@1'] + 0.02);
    expect((await registry.active())!.version).toBe(result.best!.modelVersion);
    // Losing candidates are gone from the registry; their runs keep their figures.
    expect((await registry.list()).map((v) => v.version).sort()).toEqual([BASE, result.best!.modelVersion!].sort());
    expect(stored.find((r) => r.id === result.best!.id)!.promoted).toBe(true);
  }, 120_000);

  it('promotes nothing when the gate refuses the best trial', async () => {
    const result = await tune(deps(), options({ trials: 2, margin: 1 }));
    expect(result.decision!.promote).toBe(false);
    expect(result.decision!.reasons[0]).toMatch(/< margin 1/);
    expect(result.promoted).toBe(false);
    expect((await registry.active())!.version).toBe(BASE);
    const kept = (await registry.get(result.best!.modelVersion!))!;
    expect(kept.everActive ?? kept.active).toBe(false);
    expect((await runs.list()).every((r) => !r.promoted)).toBe(true);
  }, 120_000);

  it('runs trials two at a time in worker threads, with the same results as one at a time', async () => {
    // The first four trials draw their parameters at random (TPE starts modelling after four), so
    // both modes try the same parameters; the same trainer, seed and data give the same metrics.
    const inThread = await tune(deps(), options({ trials: 2, margin: 1 }));
    const parallel = await tune({ ...deps(), runner: (setup) => threadTrialRunner(setup), cores: 2 }, options({ trials: 2, parallel: 2, margin: 1 }));
    expect(parallel.runs.map((r) => r.status)).toEqual(['completed', 'completed']);
    expect(parallel.runs.map((r) => r.params)).toEqual(inThread.runs.map((r) => r.params));
    expect(parallel.runs.map((r) => r.heldOut!.imageToImage)).toEqual(inThread.runs.map((r) => r.heldOut!.imageToImage));
    expect(parallel.runs.map((r) => r.curve.length)).toEqual(inThread.runs.map((r) => r.curve.length));
    expect(await runs.list()).toHaveLength(4);
  }, 120_000);
});

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import { loadHead, loadTextTower } from '../../shared/model/towers.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { silentLogger } from '../../shared/logger.js';
import { promoteThenStartReindexJob } from '../../shared/services/model-lifecycle.js';
import { dataSnapshot, retrain, type RetrainDeps, type RetrainOptions, type RetrainProgress } from '../../shared/services/retrain.js';
import { renderMetricsPlot } from '../../shared/evaluation/evaluate.js';
import { NotFoundError } from '../../shared/errors.js';

const CLASSES = ['dress', 'trouser', 'sneaker', 'bag'];
const BASE = 'synthetic-base-1';

/** Feature store fake over an array: enough for the job, which only scans. */
class ArrayFeatureStore implements FeatureStore {
  constructor(private readonly records: FeatureRecord[]) {}
  async put(): Promise<void> {
    throw new Error('not used by retraining');
  }
  async delete(): Promise<void> {
    throw new Error('not used by retraining');
  }
  async get(id: string) {
    return this.records.find((r) => r.id === id) ?? null;
  }
  async count() {
    return this.records.length;
  }
  async *scan(batchSize = 100) {
    for (let i = 0; i < this.records.length; i += batchSize) yield this.records.slice(i, i + batchSize);
  }
}

function records(n: number, seed: number): FeatureRecord[] {
  const random = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const centres = CLASSES.map(() => Array.from({ length: 6 }, () => gauss()));
  const out = Array.from({ length: n }, (_, i) => {
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
  // One vector of another base model: must be ignored, not crash training.
  out.push({ id: 'other', uri: 'file:///b/other.png', generation: '1', baseModel: 'other-model', vector: new Float32Array(24).fill(0.2), labels: ['dress'] });
  return out;
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

describe('retrain (registry-side activation, as in the cloud without a reindex job)', () => {
  let dir: string;
  let registry: LocalModelRegistry;
  const features = new ArrayFeatureStore(records(500, 4));
  const training = { batchSize: 64, hidden: 32, outputDimension: 16, buckets: 512, learningRate: 3e-3 };
  const runRetraining = (deps: Pick<RetrainDeps, 'features' | 'registry' | 'feedback'>, options: RetrainOptions, onProgress?: (p: RetrainProgress) => void) =>
    retrain({ ...deps, activate: promoteThenStartReindexJob({ registry: deps.registry, launcher: null, logger: silentLogger }) }, options, onProgress);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'retrain-'));
    registry = new LocalModelRegistry(dir);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses to run without an active model', async () => {
    await expect(runRetraining({ features, registry }, { epochs: 1 })).rejects.toThrow(NotFoundError);
  });

  it('trains, evaluates against the base model, registers with lineage and promotes a better candidate', async () => {
    await registry.register({ version: BASE, parent: null, manifest: baseManifest, files: { 'image.onnx': Buffer.from('fake image tower') } });
    await registry.promote(BASE);
    const progress: RetrainProgress[] = [];
    const result = await runRetraining(
      { features, registry, feedback: async () => [{ kind: 'text', query: 'long gown', openedId: 'img-0' }] },
      { seed: 1, epochs: 20, margin: 0.02, version: 'synthetic-lit-a', training },
      (p) => progress.push(p),
    );
    expect(result.current.metrics.textToImage).toBeNull();
    expect(result.candidate.metrics.imageToImage['recall@1']).toBeGreaterThan(result.current.metrics.imageToImage['recall@1'] + 0.02);
    expect(result.decision.promote).toBe(true);
    expect(result.promoted).toBe(true);
    expect((await registry.active())!.version).toBe('synthetic-lit-a');
    expect(progress.filter((p) => p.stage === 'train').length).toBeGreaterThan(0);
    expect(progress.at(-1)).toEqual({ stage: 'register', version: 'synthetic-lit-a', promoted: true });

    const registered = (await registry.get('synthetic-lit-a'))!;
    expect(registered.parent).toBe(BASE);
    expect(registered.lineage.baseModel).toBe(BASE);
    expect(registered.lineage.dataSnapshot).toBe(dataSnapshot(records(500, 4).filter((r) => r.baseModel === BASE)));
    expect(registered.metrics?.imageToImage).toEqual(result.candidate.metrics.imageToImage);
    expect((await registry.get(BASE))!.metrics?.imageToImage).toEqual(result.current.metrics.imageToImage);
    const versionDir = await registry.localPath('synthetic-lit-a');
    expect(await readFile(join(versionDir, 'image.onnx'), 'utf8')).toBe('fake image tower');
    const head = (await loadHead(registered.manifest, versionDir))!;
    expect((await head.apply([(await features.get('img-1'))!.vector]))[0]).toHaveLength(16);
    await head.close();
    const text = (await loadTextTower(registered.manifest, versionDir))!;
    expect((await text.embed(['bag']))[0]).toHaveLength(16);
    await text.close();

    const png = await renderMetricsPlot([
      { version: BASE, metrics: (await registry.get(BASE))!.metrics },
      { version: 'synthetic-lit-a', metrics: registered.metrics },
    ]);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  }, 180_000);

  it('evaluates the active LiT model through its ONNX head and text tower, and refuses a candidate that is no better', async () => {
    const result = await runRetraining({ features, registry }, { seed: 1, epochs: 0, margin: 0.02, version: 'synthetic-lit-b', training });
    expect(result.current.version).toBe('synthetic-lit-a');
    expect(result.current.metrics.textToImage).not.toBeNull();
    expect(result.promoted).toBe(false);
    expect(result.decision.reasons.join(' ')).toMatch(/< margin/);
    expect((await registry.active())!.version).toBe('synthetic-lit-a');
    expect(await registry.get('synthetic-lit-b')).not.toBeNull();
  }, 120_000);

  it('rejects invalid options with a clear error', async () => {
    await expect(runRetraining({ features, registry }, { heldOutFraction: 1.5 })).rejects.toThrow(/retraining options/);
  });
});

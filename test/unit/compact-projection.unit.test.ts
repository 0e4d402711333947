import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { explainedVariance, fitPca, openProjection, projectionManifest, projectionToOnnx, PROJECTION_FILE } from '../../shared/model/compact-projection.js';
import { loadEmbedder, readManifest } from '../../shared/model/load-embedder.js';
import { modelManifestSchema, type ModelManifest } from '../../shared/model/manifest.js';
import { OnnxDataType, OnnxGraphBuilder } from '../../shared/model/onnx/graph-builder.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';
import { registerCompactVariant } from '../../shared/services/model-variants.js';
import { registeredTowers } from '../../shared/services/retrain.js';
import { documentsFromFeatures } from '../../shared/services/reindex.js';
import { mulberry32 } from '../../shared/training/prng.js';

const random = mulberry32(5);
const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
const dotOf = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i]!, 0);

/** Orthonormal directions (Gram–Schmidt of Gaussian vectors). */
function orthonormal(count: number, dim: number): Float32Array[] {
  const out: Float32Array[] = [];
  while (out.length < count) {
    const v = Float64Array.from({ length: dim }, gauss);
    for (const u of out) {
      const d = dotOf(v, u);
      for (let i = 0; i < dim; i++) v[i]! -= d * u[i]!;
    }
    const n = Math.sqrt(dotOf(v, v));
    out.push(Float32Array.from(v, (x) => x / n));
  }
  return out;
}

describe('fitPca on data of known structure', () => {
  // 40-d vectors around an offset: four planted directions with standard deviations 5, 4, 3, 2
  // (given in shuffled order), plus isotropic noise of 0.1.
  const dim = 40;
  const directions = orthonormal(4, dim);
  const stds = [3, 5, 2, 4];
  const offset = Float32Array.from({ length: dim }, () => gauss() * 3);
  const data = Array.from({ length: 3000 }, () => {
    const v = Float32Array.from(offset, (o) => o + gauss() * 0.1);
    directions.forEach((u, k) => {
      const a = gauss() * stds[k]!;
      for (let i = 0; i < dim; i++) v[i]! += a * u[i]!;
    });
    return v;
  });

  it('recovers the directions in order of variance, with their variances and the mean', async () => {
    const pca = await fitPca(data, { dims: 4, whiten: false, seed: 3 });
    const expectedOrder = [1, 3, 0, 2]; // std 5, 4, 3, 2
    pca.components.forEach((c, k) => expect(Math.abs(dotOf(c, directions[expectedOrder[k]!]!))).toBeGreaterThan(0.99));
    const expectedVariances = [25, 16, 9, 4];
    pca.eigenvalues.forEach((v, k) => expect(v / expectedVariances[k]!).toBeGreaterThan(0.9));
    pca.eigenvalues.forEach((v, k) => expect(v / expectedVariances[k]!).toBeLessThan(1.1));
    for (let i = 0; i < dim; i++) expect(Math.abs(pca.mean[i]! - offset[i]!)).toBeLessThan(0.3);
    // Four of 40 coordinates hold almost everything: 54 of 54 + 40·0.01.
    expect(explainedVariance(pca)).toBeGreaterThan(0.98);
  });

  it('the ONNX step computes (x − mean)·components (÷ √variance when whitening), L2-normalised', async () => {
    for (const whiten of [false, true]) {
      const pca = await fitPca(data, { dims: 4, whiten, seed: 3 });
      const projection = await openProjection(projectionToOnnx(pca), projectionManifest(pca));
      const sample = data.slice(0, 5);
      const got = await projection.apply(sample);
      await projection.close();
      sample.forEach((x, r) => {
        const y = pca.components.map((c, k) => {
          const centred = Array.from(x, (v, i) => v - pca.mean[i]!);
          return dotOf(centred, c) / (whiten ? Math.sqrt(pca.eigenvalues[k]!) : 1);
        });
        const n = Math.sqrt(dotOf(y, y));
        y.forEach((v, k) => expect(got[r]![k]).toBeCloseTo(v / n, 4));
      });
    }
  });

  it('refuses a projection that is not smaller, or too few vectors, naming the numbers', async () => {
    await expect(fitPca(data, { dims: 40, whiten: false })).rejects.toThrow(/not smaller: choose fewer than 40/);
    await expect(fitPca(data.slice(0, 4), { dims: 4, whiten: false })).rejects.toThrow(/more than 4 vectors; the collection has 4/);
  });
});

describe('a compact model: queries, ingest and reindex go through the same ONNX step', () => {
  // A tiny image tower (4×4 RGB bytes → 32-d) and an 8-d projection fitted on its vectors.
  let dir: string;
  let manifest: ModelManifest;
  const images: Buffer[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iss-compact-'));
    const g = new OnnxGraphBuilder();
    g.input('pixels', ['batch', 4, 4, 3], OnnxDataType.UINT8);
    const floats = g.node('Cast', ['pixels'], { to: OnnxDataType.FLOAT });
    const flat = g.node('Reshape', [floats, g.int64s([-1, 48])]);
    const mixed = g.tensor('MatMul', [flat, g.floats(Array.from({ length: 48 * 32 }, gauss), [48, 32])], [-1, 32]);
    g.output(g.l2Normalise(mixed, 'embedding').name, ['batch', 32]);
    await writeFile(join(dir, 'image.onnx'), g.encode({ graphName: 'tiny', producerName: 'test', docString: '' }));
    for (let i = 0; i < 60; i++) {
      const raw = Buffer.from(Array.from({ length: 48 }, () => Math.floor(random() * 256)));
      images.push(
        await sharp(raw, { raw: { width: 4, height: 4, channels: 3 } })
          .png()
          .toBuffer(),
      );
    }
    const base: ModelManifest = modelManifestSchema.parse({
      name: 'tiny',
      version: 'tiny-1',
      image: {
        file: 'image.onnx',
        inputName: 'pixels',
        outputName: 'embedding',
        width: 4,
        height: 4,
        layout: 'NHWC',
        inputType: 'uint8',
        scale: 1,
        mean: [0, 0, 0],
        std: [1, 1, 1],
        resize: 'fill',
        dimension: 32,
      },
      dimension: 32,
      normalize: true,
    });
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(base));
    const full = await loadEmbedder(dir, { maxPixels: 1e6, inferenceThread: 'main' });
    const { base: vectors } = await full.embedDecoded(await Promise.all(images.map((b) => full.prepare(b))));
    await full.close();
    const pca = await fitPca(vectors, { dims: 8, whiten: true, seed: 1 });
    await writeFile(join(dir, PROJECTION_FILE), projectionToOnnx(pca));
    manifest = modelManifestSchema.parse({ ...base, version: 'tiny-1-pca8w', projection: projectionManifest(pca), dimension: 8 });
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(manifest));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('an image query, its ingested document and its document rebuilt from the feature store are the same 8-d vector', async () => {
    const embedder = await loadEmbedder(dir, { maxPixels: 1e6, inferenceThread: 'main' });
    const direct = await ort.InferenceSession.create(join(dir, PROJECTION_FILE));
    try {
      expect(embedder.dimension).toBe(8);
      // Query path (SearchService.byImage) and ingest path (embedBatch) both call embedDecoded.
      const { base, vectors } = await embedder.embedDecoded([await embedder.prepare(images[3]!)]);
      // The feature store keeps the full base embedding.
      expect(base[0]).toHaveLength(32);
      expect(vectors[0]).toHaveLength(8);
      // Reindex path: documents re-projected from the stored base embedding.
      const [doc] = await documentsFromFeatures(
        [{ id: 'a', uri: 'file:///a.png', generation: '1', baseModel: 'tiny', vector: base[0]!, labels: [] }],
        embedder,
        'now',
      );
      // Both equal projection.onnx run on the base embedding: neither side skipped or replaced the step.
      const expected = (await direct.run({ base: new ort.Tensor('float32', base[0]!, [1, 32]) })).projected!.data as Float32Array;
      for (let k = 0; k < 8; k++) {
        expect(vectors[0]![k]).toBeCloseTo(expected[k]!, 5);
        expect(doc!.vector[k]).toBeCloseTo(expected[k]!, 5);
      }
    } finally {
      await embedder.close();
      await direct.release();
    }
  });

  it('a manifest whose dimensions do not chain is refused, naming what is wrong', async () => {
    const bad = join(dir, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'manifest.json'), JSON.stringify({ ...manifest, dimension: 32 }));
    await expect(readManifest(bad)).rejects.toThrow(/dimension 32 should be 8 \(projection output\)/);
    await writeFile(join(bad, 'manifest.json'), JSON.stringify({ ...manifest, projection: { ...manifest.projection!, inputDimension: 16 } }));
    await expect(readManifest(bad)).rejects.toThrow(/projection input 16 ≠ image dimension 32/);
  });
});

describe('registerCompactVariant (what `imgsearch model compact` runs)', () => {
  let dir: string;
  const tower = {
    file: 'image.onnx',
    inputName: 'pixels',
    outputName: 'embedding',
    width: 4,
    height: 4,
    layout: 'NHWC',
    inputType: 'uint8',
    scale: 1,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resize: 'fill',
    dimension: 32,
  };
  /** Strict in-memory feature store: scan only, as the service reads it. */
  const store = (records: FeatureRecord[]): FeatureStore => ({
    async *scan(batch = 2) {
      for (let i = 0; i < records.length; i += batch) yield records.slice(i, i + batch);
    },
    put: () => Promise.reject(new Error('not expected')),
    delete: () => Promise.reject(new Error('not expected')),
    get: () => Promise.reject(new Error('not expected')),
    count: () => Promise.resolve(records.length),
  });
  // Three labelled clusters in 32 dimensions.
  const centres = Array.from({ length: 3 }, () => Float32Array.from({ length: 32 }, gauss));
  const records: FeatureRecord[] = Array.from({ length: 240 }, (_, i) => {
    const v = Float32Array.from(centres[i % 3]!, (c) => c + gauss() * 0.5);
    const n = Math.sqrt(dotOf(v, v));
    return { id: `img-${i}`, uri: `file:///b/${i}.png`, generation: '1', baseModel: 'tiny', vector: v.map((x) => x / n), labels: [`class-${i % 3}`] };
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iss-compact-registry-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('registers an inactive <version>-pca<k> with the projection, the same tower and the base embeddings lineage', async () => {
    const registry = new LocalModelRegistry(join(dir, 'a'));
    const manifest = modelManifestSchema.parse({ name: 'tiny', version: 'tiny-1', image: tower, dimension: 32, normalize: true });
    await registry.register({ version: 'tiny-1', parent: null, manifest, files: { 'image.onnx': Buffer.from('tower bytes') } });
    await registry.promote('tiny-1');
    const r = await registerCompactVariant({ registry, features: store(records) }, { dims: 8, whiten: false });
    expect(r.version).toBe('tiny-1-pca8');
    expect(r.fittedOn).toBeLessThan(240); // the held-out images are not fitted on
    expect(r.recallAt1!.queries).toBe(240 - r.fittedOn);
    // Three well-separated clusters: both spaces find the class of every query.
    expect(r.recallAt1!.full).toBe(1);
    expect(r.recallAt1!.compact).toBe(1);
    const v = (await registry.get('tiny-1-pca8'))!;
    expect(v.active).toBe(false);
    expect(v.manifest).toMatchObject({
      name: 'tiny',
      dimension: 8,
      image: { file: 'image.onnx', dimension: 32 },
      projection: { file: PROJECTION_FILE, inputDimension: 32, outputDimension: 8 },
    });
    expect(v.lineage).toMatchObject({ baseModel: 'tiny-1', parent: 'tiny-1' });
    await expect(readManifest(await registry.localPath('tiny-1-pca8'))).resolves.toMatchObject({ dimension: 8 });
    // Evaluation (`imgsearch eval`, the retraining gate) scores a compact version in its compact space.
    const towers = await registeredTowers(registry, v);
    expect((await towers.project([records[0]!.vector]))[0]).toHaveLength(8);
    await towers.close();
    // Compacting it again, or the same version twice, is refused with the way out.
    await expect(registerCompactVariant({ registry, features: store(records) }, { from: 'tiny-1-pca8', dims: 4, whiten: false })).rejects.toThrow(
      /already has a projection .* compact its parent tiny-1/,
    );
    await expect(registerCompactVariant({ registry, features: store(records) }, { dims: 8, whiten: false })).rejects.toThrow(
      /tiny-1-pca8 already exists: remove it first/,
    );
  });

  it('refuses a collection too small for the dimensions asked, and a model with a text tower', async () => {
    const registry = new LocalModelRegistry(join(dir, 'b'));
    const manifest = modelManifestSchema.parse({ name: 'tiny', version: 'tiny-1', image: tower, dimension: 32, normalize: true });
    await registry.register({ version: 'tiny-1', parent: null, manifest, files: { 'image.onnx': Buffer.from('tower bytes') } });
    await registry.promote('tiny-1');
    await expect(registerCompactVariant({ registry, features: store(records.slice(0, 10)) }, { dims: 16, whiten: false })).rejects.toThrow(
      /a 16-dimension projection needs more than 16 images embedded by tiny-1; the feature store has 10/,
    );
    const withText = modelManifestSchema.parse({
      ...manifest,
      version: 'tiny-2',
      text: { kind: 'hashed-ngram', file: 'text.onnx', buckets: 8, dimension: 32 },
    });
    await registry.register({ version: 'tiny-2', parent: null, manifest: withText, files: { 'image.onnx': Buffer.from('x'), 'text.onnx': Buffer.from('x') } });
    await expect(registerCompactVariant({ registry, features: store(records) }, { from: 'tiny-2', dims: 8, whiten: false })).rejects.toThrow(
      /has a text tower/,
    );
  });
});

import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { CapabilityError, ConfigError, ImageRejectedError } from '../../shared/errors.js';
import { DEFAULT_MODEL_VERSION, ensureDefaultModel } from '../../shared/model/default-model.js';
import { loadEmbedder } from '../../shared/model/load-embedder.js';
import { modelManifestSchema, type ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { silentLogger } from '../../shared/logger.js';
import { ModelHolder } from '../../shared/services/model-holder.js';

const { onnx } = onnxProto;
let cacheDir: string;
let modelDir: string;
let manifest: ModelManifest;
let embedder: Embedder;
let files: Buffer[];

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), 'iss-model-'));
  ({ dir: modelDir, manifest } = await ensureDefaultModel(cacheDir));
  embedder = await loadEmbedder(modelDir, { maxPixels: 50_000_000, threads: 2 });
  const fashion = await readFashionMnist({ split: 'test', limit: 4 });
  files = await Promise.all(fashion.images.map((img) => fashionMnistPng(img)));
});

afterAll(async () => {
  await embedder?.close();
  await rm(cacheDir, { recursive: true, force: true });
});

const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const cosine = (a: Float32Array, b: Float32Array) => a.reduce((s, x, i) => s + x * b[i]!, 0);

describe('ensureDefaultModel', () => {
  it('converts once into <cache>/<version>-<hash>/ and reuses the cache afterwards', async () => {
    expect(modelDir.startsWith(join(cacheDir, `${DEFAULT_MODEL_VERSION}-`))).toBe(true);
    const onDisk = modelManifestSchema.parse(JSON.parse(await readFile(join(modelDir, 'manifest.json'), 'utf8')));
    expect(onDisk).toEqual(manifest);
    expect(manifest.version).toBe(DEFAULT_MODEL_VERSION);
    expect(manifest.image).toMatchObject({ width: 224, height: 224, layout: 'NHWC', file: 'image.onnx' });
    const before = await stat(join(modelDir, 'image.onnx'));
    const again = await ensureDefaultModel(cacheDir);
    expect(again.dir).toBe(modelDir);
    expect((await stat(join(modelDir, 'image.onnx'))).mtimeMs).toBe(before.mtimeMs);
  });

  it('replaces a damaged cache folder', async () => {
    const options = { features: [{ layer: 'block_1_project_BN' }], thumbnail: undefined };
    const first = await ensureDefaultModel(cacheDir, options);
    await writeFile(join(first.dir, 'manifest.json'), '{ not json');
    const second = await ensureDefaultModel(cacheDir, options);
    expect(second.dir).toBe(first.dir);
    expect(modelManifestSchema.parse(JSON.parse(await readFile(join(first.dir, 'manifest.json'), 'utf8'))).dimension).toBe(24);
  });

  it('converts again into another folder when the layers change', async () => {
    const other = await ensureDefaultModel(cacheDir, { features: [{ layer: 'block_12_add' }], thumbnail: undefined });
    expect(other.dir).not.toBe(modelDir);
    expect(other.manifest.dimension).toBe(96);
  });
});

describe('OnnxEmbedder on the default model', () => {
  it('embeds a batch of N images into N unit vectors of the manifest dimension', async () => {
    const prepared = await Promise.all(files.map((f) => embedder.prepare(f)));
    const { base, vectors } = await embedder.embedDecoded(prepared);
    expect(base).toHaveLength(files.length);
    expect(vectors).toHaveLength(files.length);
    for (const v of vectors) {
      expect(v).toHaveLength(embedder.dimension);
      expect(norm(v)).toBeCloseTo(1, 5);
    }
    // Different garments are different vectors.
    expect(cosine(vectors[0]!, vectors[1]!)).toBeLessThan(0.999);
    expect(embedder.modelVersion).toBe(DEFAULT_MODEL_VERSION);
    expect(embedder.hasTextTower).toBe(false);
  });

  it('is deterministic: the same image alone, twice in a batch, or in another batch gives the same vector', async () => {
    const [a, b] = await Promise.all([embedder.prepare(files[2]!), embedder.prepare(files[3]!)]);
    const alone = (await embedder.embedDecoded([a!])).vectors[0]!;
    const twice = (await embedder.embedDecoded([a!, b!, a!])).vectors;
    expect(cosine(alone, twice[0]!)).toBeCloseTo(1, 5);
    expect(Math.max(...twice[0]!.map((x, i) => Math.abs(x - twice[2]![i]!)))).toBeLessThan(1e-5);
    expect(Math.max(...alone.map((x, i) => Math.abs(x - twice[0]![i]!)))).toBeLessThan(1e-4);
  });

  it('finds a JPEG re-encoded, upscaled copy nearest to its original', async () => {
    const prepared = await Promise.all(files.map((f) => embedder.prepare(f)));
    const { vectors } = await embedder.embedDecoded(prepared);
    const copy = await sharp(files[1]!).resize(56, 56).jpeg({ quality: 90 }).toBuffer();
    const q = (await embedder.embedDecoded([await embedder.prepare(copy)])).vectors[0]!;
    const scores = vectors.map((v) => cosine(q, v));
    expect(scores.indexOf(Math.max(...scores))).toBe(1);
  });

  it('project() is the identity without a head; embedTexts needs a text tower', async () => {
    const { base } = await embedder.embedDecoded([await embedder.prepare(files[0]!)]);
    expect(await embedder.project(base)).toEqual(base);
    await expect(embedder.embedTexts(['a red dress'])).rejects.toBeInstanceOf(CapabilityError);
    await expect(embedder.project([new Float32Array(3)])).rejects.toThrow(/dimension 3/);
  });

  it('prepare() rejects bad input with ImageRejectedError', async () => {
    await expect(embedder.prepare(Buffer.from('not an image'))).rejects.toBeInstanceOf(ImageRejectedError);
  });

  it('applies a trained head from the manifest, then L2-normalises', async () => {
    const dir = await mkdtemp(join(cacheDir, 'with-head-'));
    const inDim = manifest.image.dimension;
    const outDim = 3;
    // Head = MatMul by a matrix picking base components 0, 1 and 2 scaled ×2.
    const w = new Float32Array(inDim * outDim);
    for (let j = 0; j < outDim; j++) w[j * outDim + j] = 2; // row j, column j
    await writeFile(join(dir, 'head.onnx'), matMulModel(w, inDim, outDim));
    await writeFile(join(dir, 'image.onnx'), await readFile(join(modelDir, 'image.onnx')));
    const withHead: ModelManifest = { ...manifest, head: { file: 'head.onnx', inputDimension: inDim, outputDimension: outDim }, dimension: outDim };
    await writeFile(join(dir, 'manifest.json'), JSON.stringify(withHead));
    const headed = await loadEmbedder(dir, { maxPixels: 1e7 });
    try {
      const { base, vectors } = await headed.embedDecoded([await headed.prepare(files[0]!)]);
      expect(base[0]).toHaveLength(inDim);
      expect(vectors[0]).toHaveLength(outDim);
      const expected = base[0]!.slice(0, 3);
      const n = norm(expected);
      expect(Array.from(vectors[0]!)).toEqual(Array.from(expected).map((x) => expect.closeTo(x / n, 5)));
    } finally {
      await headed.close();
    }
  });

  it('loadEmbedder reports a bad manifest clearly', async () => {
    const dir = await mkdtemp(join(cacheDir, 'bad-'));
    await writeFile(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, dimension: 7 }));
    await expect(loadEmbedder(dir, { maxPixels: 1e7 })).rejects.toThrow(ConfigError);
    await expect(loadEmbedder(join(dir, 'missing'), { maxPixels: 1e7 })).rejects.toThrow(/cannot read the model manifest/);
  });

  it('falls back to CPU when CUDA is unavailable only when the caller opts in', async () => {
    const cuda = await loadEmbedder(modelDir, { maxPixels: 1e7, executionProvider: 'cuda', cudaFallback: 'cpu' });
    try {
      const { vectors } = await cuda.embedDecoded([await cuda.prepare(files[0]!)]);
      expect(norm(vectors[0]!)).toBeCloseTo(1, 5);
    } finally {
      await cuda.close();
    }
  });
});

function matMulModel(weights: Float32Array, inDim: number, outDim: number): Uint8Array {
  const info = (name: string, dim: number) => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: dim }] } } },
  });
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'head',
        node: [{ opType: 'MatMul', input: ['base', 'w'], output: ['projected'] }],
        initializer: [{ name: 'w', dims: [inDim, outDim], dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(weights.buffer) }],
        input: [info('base', inDim)],
        output: [info('projected', outDim)],
      },
    }),
  ).finish();
}

describe('ModelHolder.forVersion (a search-only process follows the live index)', () => {
  it('starts with the active version, switches to the one asked for, and refuses an unknown one', async () => {
    const registryDir = await mkdtemp(join(tmpdir(), 'iss-holder-'));
    const registry = new LocalModelRegistry(registryDir);
    try {
      const imageBytes = await readFile(join(modelDir, manifest.image.file));
      await registry.register({ version: 'v1', parent: null, manifest: { ...manifest, version: 'v1' }, files: { [manifest.image.file]: imageBytes } });
      await registry.promote('v1');
      await registry.register({ version: 'v2', parent: 'v1', manifest: { ...manifest, version: 'v2' }, files: { [manifest.image.file]: imageBytes } });
      const holder = new ModelHolder(registry, { maxPixels: 1e7, threads: 1, logger: silentLogger });
      try {
        expect((await holder.get()).modelVersion).toBe('v1');
        const [a, b] = await Promise.all([holder.forVersion('v2'), holder.forVersion('v2')]);
        expect(a).toBe(b); // one load for concurrent requests
        expect(holder.current().modelVersion).toBe('v2');
        const { vectors } = await a.embedDecoded([await a.prepare(files[0]!)]);
        expect(norm(vectors[0]!)).toBeCloseTo(1, 5);
        expect(await holder.forVersion('v2')).toBe(a);
        await expect(holder.forVersion('v9')).rejects.toThrow(/built with model v9, which is not in the registry/);
        expect((await registry.active())?.version).toBe('v1'); // the registry is not touched
      } finally {
        await holder.close();
      }
    } finally {
      await rm(registryDir, { recursive: true, force: true });
    }
  });
});

import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { DEFAULT_FEATURE_LAYERS, DEFAULT_IMAGE_TOWER, DEFAULT_THUMBNAIL } from '../../shared/model/default-model.js';
import { prepareImage } from '../../shared/model/image-preprocessor.js';
import { kerasToOnnx, type KerasModelArtifacts } from '../../shared/model/keras-to-onnx.js';
import { loadNsfwjsMobilenetV2 } from '../../shared/model/nsfwjs-mobilenet.js';

/**
 * The converted ONNX graph must compute what the ORIGINAL Keras model computes: the same
 * preprocessed tensors go through tfjs (the reference implementation of the Keras layers) and
 * through onnxruntime, and the embeddings — pooled, normalised, weighted, concatenated as the
 * graph does — must agree to 1e-3.
 */
const PHOTO_DIR = '/usr/share/backgrounds/mate/nature';
const tower = { ...DEFAULT_IMAGE_TOWER, inputType: 'float32' as const, dimension: 1 };

let artifacts: KerasModelArtifacts;
let keras: tf.LayersModel;
let inputs: Float32Array;
/** The same images as the default model receives them: raw RGB bytes, scaled inside the graph. */
let bytes: Uint8Array;
let count = 0;

beforeAll(async () => {
  // wasm is ~20× faster than the pure-JS cpu backend; fall back if it cannot start here.
  if (!(await tf.setBackend('wasm').catch(() => false))) await tf.setBackend('cpu');
  await tf.ready();
  artifacts = loadNsfwjsMobilenetV2();
  keras = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: artifacts.modelTopology as tf.io.ModelArtifacts['modelTopology'],
      weightSpecs: artifacts.weightsManifest.flatMap((g) => g.weights) as tf.io.WeightsManifestEntry[],
      weightData: artifacts.weightData,
    }),
  );
  const fashion = await readFashionMnist({ split: 'test', limit: 3 });
  const files = await Promise.all(fashion.images.map((img) => fashionMnistPng(img)));
  const photoNames = (await readdir(PHOTO_DIR))
    .filter((n) => n.endsWith('.jpg'))
    .sort()
    .slice(0, 2);
  for (const name of photoNames) files.push(await readFile(join(PHOTO_DIR, name)));
  const prepared = await Promise.all(files.map((f) => prepareImage(f, tower, { maxPixels: 50_000_000 })));
  count = prepared.length;
  inputs = new Float32Array(count * 224 * 224 * 3);
  prepared.forEach((p, i) => inputs.set(p.pixels, i * p.pixels.length));
  const raw = await Promise.all(files.map((f) => prepareImage(f, { ...DEFAULT_IMAGE_TOWER, dimension: 1 }, { maxPixels: 50_000_000 })));
  bytes = new Uint8Array(count * 224 * 224 * 3);
  raw.forEach((p, i) => {
    expect(p.pixels).toBeInstanceOf(Uint8Array);
    bytes.set(p.pixels, i * p.pixels.length);
  });
});

/** The reference: Keras layers in tfjs, then pool → L2 → ×weight → concat → L2 in tfjs ops. */
async function tfjsEmbedding(layers: Array<{ layer: string; weight?: number }>, thumbnail?: typeof DEFAULT_THUMBNAIL): Promise<Float32Array> {
  const outputs = layers.map((l) => keras.getLayer(l.layer).output as tf.SymbolicTensor);
  const sub = tf.model({ inputs: keras.inputs, outputs });
  const result = tf.tidy(() => {
    const x = tf.tensor4d(inputs, [count, 224, 224, 3]);
    const raw = sub.predict(x);
    const maps = Array.isArray(raw) ? raw : [raw];
    const l2 = (t: tf.Tensor) => t.div(t.norm('euclidean', 1, true).maximum(1e-12));
    const parts = maps.map((m, i) => l2(m.rank === 4 ? m.mean([1, 2]) : m).mul(layers[i]!.weight ?? 1));
    if (thumbnail) {
      const k = 224 / thumbnail.size;
      let t = tf.avgPool(x, k, k, 'valid'); // [N,s,s,3]
      if (thumbnail.colour === 'grey') t = t.mean(3, true);
      t = t.transpose([0, 3, 1, 2]).reshape([count, -1]); // channel-major, as the NCHW graph flattens
      if (thumbnail.centre) t = t.sub(t.mean(1, true));
      parts.push(l2(t).mul(thumbnail.weight));
    }
    return l2(tf.concat(parts, 1));
  });
  const data = (await result.data()) as Float32Array;
  result.dispose();
  return data;
}

async function onnxEmbedding(layers: Array<{ layer: string; weight?: number }>, thumbnail?: typeof DEFAULT_THUMBNAIL, uint8 = false): Promise<Float32Array> {
  const converted = kerasToOnnx(artifacts, { features: layers, thumbnail, ...(uint8 ? { uint8Input: { scale: DEFAULT_IMAGE_TOWER.scale } } : {}) });
  const session = await ort.InferenceSession.create(converted.bytes);
  const input = uint8 ? new ort.Tensor('uint8', bytes, [count, 224, 224, 3]) : new ort.Tensor('float32', inputs, [count, 224, 224, 3]);
  const out = await session.run({ [converted.inputName]: input });
  await session.release();
  return out[converted.outputNames[0]!]!.data as Float32Array;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe('Keras → ONNX parity on real images (3 Fashion-MNIST, 2 photographs)', () => {
  it('the default model embedding (uint8 input, scaled in the graph) matches the Keras model to 1e-3', async () => {
    const features = [...DEFAULT_FEATURE_LAYERS];
    const reference = await tfjsEmbedding(features, DEFAULT_THUMBNAIL);
    const [converted, fromFloats] = [await onnxEmbedding(features, DEFAULT_THUMBNAIL, true), await onnxEmbedding(features, DEFAULT_THUMBNAIL)];
    expect(converted.length).toBe(reference.length);
    expect(maxAbsDiff(reference, converted)).toBeLessThanOrEqual(1e-3);
    // Scaling inside the graph changes nothing but rounding.
    expect(maxAbsDiff(fromFloats, converted)).toBeLessThanOrEqual(1e-5);
  });

  it('an early layer (stem conv + folded BN + padding + ReLU6) and the flattened head input match too', async () => {
    const layers = [{ layer: 'Conv1_relu' }, { layer: 'block_1_project_BN', weight: 0.5 }, { layer: 'flatten_1' }];
    expect(maxAbsDiff(await tfjsEmbedding(layers), await onnxEmbedding(layers))).toBeLessThanOrEqual(1e-3);
  });
});

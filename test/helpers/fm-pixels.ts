import type { ModelManifest } from '../../shared/model/manifest.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import { l2Normalise } from '../../shared/vector-math.js';

/**
 * A base model whose image embedding is the Fashion-MNIST pixels (a real image representation:
 * exact cosine on them finds the same class 86% of the time, docs FACTS), for tests that need
 * stored base embeddings without decoding images: its tower file is never run.
 */
export const fmPixelsManifest = {
  name: 'fm-pixels',
  version: 'fm-pixels-1',
  description: 'Fashion-MNIST pixels as the base embedding (test)',
  image: {
    file: 'image.onnx',
    inputName: 'input',
    outputName: 'pixels',
    width: 28,
    height: 28,
    layout: 'NHWC',
    scale: 1 / 255,
    mean: [0, 0, 0],
    std: [1, 1, 1],
    resize: 'fill',
    dimension: 784,
  },
  dimension: 784,
  normalize: true,
} as ModelManifest;

/** Image `i` as the feature store holds it under {@link fmPixelsManifest}: its unit pixel vector (a tower with `normalize: true` stores unit vectors). */
export function fmPixelsRecord(i: number, pixels: Uint8Array, label: string, generation: number, bucketUri = 'file:///bucket'): FeatureRecord {
  return {
    id: `fm-${i}`,
    uri: `${bucketUri}/fm-${i}.png`,
    generation: String(generation),
    baseModel: fmPixelsManifest.name,
    vector: l2Normalise(Float32Array.from(pixels, (p) => p / 255)),
    labels: [label],
  };
}

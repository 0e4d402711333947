import { CapabilityError } from '../errors.js';
import type { Embedder, ImageEmbeddings, PreparedImage } from '../ports/embedder.js';
import { l2Normalise, l2NormaliseInPlace } from '../vector-math.js';
import { toFloat16Bits } from './float16.js';
import { prepareImage, type PrepareLimits } from './image-preprocessor.js';
import type { ModelManifest } from './manifest.js';
import type { TensorRunner } from './tensor-runner.js';
import type { Head, TextTower } from './towers.js';
import type { Projection } from './projection.js';

/**
 * The Embedder port on onnxruntime: one session for the image tower, an optional head and text
 * tower. A batch of images is one ONNX run; every vector that leaves here is L2-normalised.
 */
export class OnnxEmbedder implements Embedder {
  readonly modelVersion: string;
  readonly dimension: number;
  readonly hasTextTower: boolean;

  constructor(
    readonly manifest: ModelManifest,
    private readonly imageSession: TensorRunner,
    private readonly limits: PrepareLimits,
    private readonly head?: Head,
    private readonly textTower?: TextTower,
    /** Compact vectors: applied after the head (or to the base) on every path (compact-projection.ts). */
    private readonly projection?: Projection,
  ) {
    this.modelVersion = manifest.version;
    this.dimension = manifest.dimension;
    this.hasTextTower = textTower !== undefined;
  }

  prepare(image: Buffer): Promise<PreparedImage> {
    return prepareImage(image, this.manifest.image, this.limits);
  }

  async embedDecoded(images: PreparedImage[]): Promise<ImageEmbeddings> {
    if (images.length === 0) return { base: [], vectors: [] };
    const tower = this.manifest.image;
    const size = tower.width * tower.height * 3;
    const bytes = tower.inputType === 'uint8';
    const input = bytes ? new Uint8Array(images.length * size) : new Float32Array(images.length * size);
    images.forEach((image, i) => {
      if (image.pixels.length !== size) {
        throw new Error(`prepared image ${i} has ${image.pixels.length} values, the model takes ${size}`);
      }
      if (image.pixels instanceof Uint8Array !== bytes) {
        throw new Error(`prepared image ${i} holds ${bytes ? 'floats' : 'bytes'}, the model takes ${tower.inputType ?? 'float32'}`);
      }
      input.set(image.pixels, i * size);
    });
    const dims = tower.layout === 'NHWC' ? [images.length, tower.height, tower.width, 3] : [images.length, 3, tower.height, tower.width];
    const activation = tower.activation;
    const output = await this.imageSession.run(tower.inputName, input, dims, tower.outputName, activation ? [activation.outputName] : []);
    const dim = output.dims[output.dims.length - 1] as number;
    if (dim !== tower.dimension || output.dims[0] !== images.length) {
      throw new Error(`the image model returned [${output.dims.join(',')}], the manifest says [${images.length},${tower.dimension}]`);
    }
    const values = output.data as Float32Array;
    const base = images.map((_, i) => l2NormaliseInPlace(values.slice(i * dim, (i + 1) * dim)));
    if (!activation) return { base, vectors: await this.project(base) };
    const actSize = activation.shape[0] * activation.shape[1] * activation.shape[2];
    const act = output.extra?.[activation.outputName];
    if (!act || act.dims[0] !== images.length || act.dims[act.dims.length - 1] !== actSize) {
      throw new Error(`the image model's ${activation.outputName} output is [${act?.dims.join(',') ?? ''}], the manifest says [${images.length},${actSize}]`);
    }
    const activations = images.map((_, i) => toFloat16Bits(act.data.subarray(i * actSize, (i + 1) * actSize)));
    return { base, vectors: await this.project(base), activations };
  }

  async project(base: Float32Array[]): Promise<Float32Array[]> {
    for (const [i, v] of base.entries()) {
      if (v.length !== this.manifest.image.dimension) {
        throw new Error(`base embedding ${i} has dimension ${v.length}, the model's base dimension is ${this.manifest.image.dimension}`);
      }
    }
    const vectors = this.head ? (await this.head.apply(base)).map(l2Normalise) : base;
    return this.projection ? (await this.projection.apply(vectors)).map(l2Normalise) : vectors;
  }

  async embedTexts(texts: string[]): Promise<Float32Array[]> {
    if (!this.textTower) {
      throw new CapabilityError(`model ${this.manifest.version} has no text tower: text search needs a model with one`, {
        meta: { modelVersion: this.manifest.version },
      });
    }
    if (texts.length === 0) return [];
    const vectors = (await this.textTower.embed(texts)).map(l2Normalise);
    return this.projection ? (await this.projection.apply(vectors)).map(l2Normalise) : vectors;
  }

  async close(): Promise<void> {
    await Promise.all([this.imageSession.release(), this.head?.close(), this.textTower?.close(), this.projection?.close()]);
  }
}

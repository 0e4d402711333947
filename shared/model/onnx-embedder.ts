import { CapabilityError } from '../errors.js';
import type { Embedder, ImageEmbeddings, PreparedImage } from '../ports/embedder.js';
import { l2Normalise, l2NormaliseInPlace } from '../vector-math.js';
import { prepareImage, type PrepareLimits } from './image-preprocessor.js';
import type { ModelManifest } from './manifest.js';
import type { TensorRunner } from './tensor-runner.js';
import type { Head, TextTower } from './towers.js';

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
    const output = await this.imageSession.run(tower.inputName, input, dims, tower.outputName);
    const dim = output.dims[output.dims.length - 1] as number;
    if (dim !== tower.dimension || output.dims[0] !== images.length) {
      throw new Error(`the image model returned [${output.dims.join(',')}], the manifest says [${images.length},${tower.dimension}]`);
    }
    const values = output.data as Float32Array;
    const base = images.map((_, i) => l2NormaliseInPlace(values.slice(i * dim, (i + 1) * dim)));
    return { base, vectors: await this.project(base) };
  }

  async project(base: Float32Array[]): Promise<Float32Array[]> {
    for (const [i, v] of base.entries()) {
      if (v.length !== this.manifest.image.dimension) {
        throw new Error(`base embedding ${i} has dimension ${v.length}, the model's base dimension is ${this.manifest.image.dimension}`);
      }
    }
    if (!this.head) return base;
    return (await this.head.apply(base)).map(l2Normalise);
  }

  async embedTexts(texts: string[]): Promise<Float32Array[]> {
    if (!this.textTower) {
      throw new CapabilityError(`model ${this.manifest.version} has no text tower: text search needs a model with one`, {
        meta: { modelVersion: this.manifest.version },
      });
    }
    if (texts.length === 0) return [];
    return (await this.textTower.embed(texts)).map(l2Normalise);
  }

  async close(): Promise<void> {
    await Promise.all([this.imageSession.release(), this.head?.close(), this.textTower?.close()]);
  }
}

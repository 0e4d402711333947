import type { ModelManifest } from '../model/manifest.js';

/** One image decoded and resized into the model's input layout. */
export interface PreparedImage {
  /**
   * width*height*3 values laid out per the manifest (NHWC or NCHW): normalised floats, or raw
   * 0–255 bytes for a model whose manifest says `inputType: uint8`.
   */
  pixels: Float32Array | Uint8Array;
  /** Original size, before resizing. */
  width: number;
  height: number;
  format: string;
}

export interface ImageEmbeddings {
  /** Frozen-tower output, L2-normalised (what the feature store keeps). */
  base: Float32Array[];
  /** What the index stores: the head's projection of `base` (or `base` itself without head). */
  vectors: Float32Array[];
  /**
   * The tower's intermediate activation per image as IEEE half-precision bits (channels-last),
   * when its manifest declares one (`image.activation`): kept in the feature store for tuning the
   * blocks above it.
   */
  activations?: Uint16Array[];
}

/**
 * Image batch → vectors (one batched ONNX run), text batch → vectors (when the model has a text
 * tower). Built from a model manifest.
 */
export interface Embedder {
  readonly manifest: ModelManifest;
  readonly modelVersion: string;
  readonly dimension: number;
  readonly hasTextTower: boolean;
  /** Decodes and resizes with sharp; throws ImageRejectedError for bad input. */
  prepare(image: Buffer): Promise<PreparedImage>;
  embedDecoded(images: PreparedImage[]): Promise<ImageEmbeddings>;
  /** Projects stored base embeddings with this model's head (reindexing without decoding). */
  project(base: Float32Array[]): Promise<Float32Array[]>;
  /** Throws CapabilityError when the model has no text tower. */
  embedTexts(texts: string[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

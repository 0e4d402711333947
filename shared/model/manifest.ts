import { z } from 'zod';

/**
 * A model manifest describes an ONNX model so that any model plugs in unchanged: where its files
 * are, how images are laid out for it, what comes out, and optional text tower / trained head.
 * Files are relative to the manifest's folder (a model registry version directory).
 */
export const imageTowerSchema = z.object({
  file: z.string(),
  inputName: z.string(),
  outputName: z.string(),
  width: z.number().int().positive(),
  height: z.number().int().positive(),
  layout: z.enum(['NHWC', 'NCHW']),
  /**
   * `float32`: the preprocessor normalises (below) and feeds floats. `uint8`: the model takes raw
   * 0–255 RGB and normalises inside its graph; scale/mean/std then document what the graph does.
   * Absent means `float32`.
   */
  inputType: z.enum(['float32', 'uint8']).optional(),
  /** Pixel value v in [0,255] becomes ((v * scale) - mean[c]) / std[c]. */
  scale: z.number().positive(),
  mean: z.tuple([z.number(), z.number(), z.number()]),
  std: z.tuple([z.number(), z.number(), z.number()]),
  /** How an image is fitted to width×height: `cover` crops, `contain` pads, `fill` stretches. */
  resize: z.enum(['cover', 'contain', 'fill']),
  /** Dimension of the tower's output (the base embedding stored in the feature store). */
  dimension: z.number().int().positive(),
  /**
   * A second output: an intermediate layer's activation (channels-last, flattened [N, H·W·C]),
   * stored fp16 beside the base embedding so the blocks above it can be fine-tuned and the index
   * rebuilt without decoding an image (shared/training/tower-blocks.ts).
   */
  activation: z
    .object({
      outputName: z.string(),
      /** Keras layer whose output this is, e.g. `block_13_project_BN`. */
      layer: z.string(),
      /** [height, width, channels]. */
      shape: z.tuple([z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
    })
    .optional(),
  /**
   * The feature layers the base embedding concatenates (shared/model/base-embedding.ts), when they
   * are not the default model's (`block_15_add`, `out_relu`): a tower adapted with regional pooling
   * (`imgsearch retrain --region-grid N`) records its layout here, which the blocks rebuilt for
   * the next fine-tuning read its stored base embeddings by.
   */
  features: z
    .array(
      z.object({
        layer: z.string().min(1),
        weight: z.number().positive().optional(),
        grid: z.number().int().min(1).max(64).optional(),
      }),
    )
    .min(1)
    .optional(),
  /**
   * Numeric variant of the file: `fp32`, or `int8` (static QDQ quantisation of an fp32 tower,
   * shared/model/quantize.ts). Absent means `fp32`.
   */
  precision: z.enum(['fp32', 'int8']).optional(),
});

export const textTowerSchema = z.discriminatedUnion('kind', [
  z.object({
    /** CLIP-class text tower: BPE tokenizer + ONNX encoder. */
    kind: z.literal('clip'),
    file: z.string(),
    tokenizerFile: z.string(),
    inputName: z.string(),
    outputName: z.string(),
    contextLength: z.number().int().positive(),
    dimension: z.number().int().positive(),
  }),
  z.object({
    /** Hashed word + character n-gram embedding with a trained projection (for towers without text). */
    kind: z.literal('hashed-ngram'),
    file: z.string(),
    buckets: z.number().int().positive(),
    dimension: z.number().int().positive(),
  }),
]);

export const headSchema = z.object({
  /** Trained projection head applied to the base image embedding (locked-image tuning). */
  file: z.string(),
  inputDimension: z.number().int().positive(),
  outputDimension: z.number().int().positive(),
});

export const projectionSchema = z.object({
  /**
   * Compact vectors (shared/model/compact-projection.ts): an ONNX step applied to the model's
   * vectors (base, or head output) on every path, before they reach the index.
   */
  file: z.string(),
  kind: z.literal('pca'),
  inputDimension: z.number().int().positive(),
  outputDimension: z.number().int().positive(),
  whiten: z.boolean(),
  /** Share of the variance the kept components hold, on the vectors it was fitted on. */
  explainedVariance: z.number().min(0).max(1).optional(),
});

export const modelManifestSchema = z.object({
  /** Model family name, e.g. `mobilenet_v2-nsfwjs` or `clip-vit-b32`. */
  name: z.string(),
  /** Registry version this manifest belongs to, recorded on every vector it produces. */
  version: z.string(),
  description: z.string().optional(),
  image: imageTowerSchema,
  text: textTowerSchema.optional(),
  head: headSchema.optional(),
  projection: projectionSchema.optional(),
  /** Dimension of the vectors written to the index (projection output, else head output, else the tower's). */
  dimension: z.number().int().positive(),
  /** Vectors are L2-normalised, so cosine similarity = inner product. */
  normalize: z.literal(true),
});

export type ModelManifest = z.infer<typeof modelManifestSchema>;
export type ImageTower = z.infer<typeof imageTowerSchema>;

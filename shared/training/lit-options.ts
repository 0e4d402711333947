import { z } from 'zod';
import { DEFAULT_BUCKETS } from '../text/hashed-ngram.js';
import { parseWith } from '../validation.js';

/** Weight of the regional part of a base embedding (`regionGrid`) in its concatenation; the other parts weigh 1, the thumbnail 1.5. */
export const DEFAULT_REGION_WEIGHT = 2;

/** Hyperparameters of LiT training (shared/training/lit-trainer.ts); every one has a default. */
export const litTrainOptionsSchema = z.object({
  seed: z.number().int().default(42),
  epochs: z.number().int().min(0).max(10_000).default(30),
  batchSize: z.number().int().min(2).max(8192).default(256),
  learningRate: z.number().positive().default(1e-3),
  hidden: z.number().int().positive().default(512),
  outputDimension: z.number().int().positive().default(128),
  /** Softmax temperature of the cosine logits; learnable starts here and is clamped to [0.01, 1]. */
  temperature: z.number().positive().default(0.1),
  learnableTemperature: z.boolean().default(false),
  buckets: z.number().int().min(2).default(DEFAULT_BUCKETS),
  /** Weight of the image↔image SupCon term against the image↔text term. */
  imageImageWeight: z.number().min(0).default(1),
  imageTextWeight: z.number().min(0).default(1),
  /** Share of training examples kept aside (by id hash) to pick the best epoch. */
  validationFraction: z.number().min(0).max(0.5).default(0.1),
  /** Epochs without validation improvement before stopping. */
  patience: z.number().int().min(1).default(5),
  /** Cap on validation queries / corpus per epoch (keeps the check to about a second). */
  validationQueries: z.number().int().positive().default(1000),
  validationCorpus: z.number().int().positive().default(10_000),
  /** Feedback pairs mixed into each batch. */
  feedbackPerBatch: z.number().int().min(0).default(32),
  /**
   * Partial fine-tuning of the image tower: how many of its top units (block_14, block_15,
   * block_16, Conv_1 — counted from the top, see shared/training/tower-blocks.ts) train with the
   * head, from the block activations stored at ingest. 0 = locked image tower (head only). A
   * search-space option for `imgsearch tune`, and `imgsearch retrain --unlock-blocks N`.
   */
  unlockBlocks: z.number().int().min(0).max(4).default(0),
  /**
   * Adapting the image tower's top by layout: the stored block activation (block 13, 7×7×160) is
   * also average-pooled over grid×grid overlapping regions and that part (160·grid² values) joins
   * the base embedding (shared/model/base-embedding.ts `grid`) — where a garment's parts are, which
   * global pooling throws away. The new tower is exported to ONNX and
   * every stored image's base embedding is recomputed from its activation (no image is decoded);
   * combines with `unlockBlocks`. 0 keeps the active tower's layout (a regional part it has stays),
   * 1 is the default layout (global pooling only). A search-space option for `imgsearch tune`, and
   * `imgsearch retrain --region-grid N`.
   */
  regionGrid: z.number().int().min(0).max(7).default(0),
  /** Weight of the regional part in the base embedding's concatenation (the other parts weigh 1, the thumbnail 1.5). */
  regionWeight: z.number().positive().max(100).default(DEFAULT_REGION_WEIGHT),
  /** Adam learning rate of the unlocked tower weights (pretrained: smaller than the head's). */
  towerLearningRate: z.number().positive().default(1e-4),
  /**
   * With unlocked blocks: the first N epochs train the head alone on the stored base embeddings
   * (cheap: no block runs), then the blocks join (linear probe, then fine-tune). A head that starts
   * trained sends the pretrained blocks useful gradients from the first tower step, and the
   * expensive epochs go to refining rather than to the head's early ones. `epochs` counts both.
   */
  headOnlyEpochs: z.number().int().min(0).default(0),
});
export type LitTrainOptions = z.input<typeof litTrainOptionsSchema>;
/** Options with every default filled in. */
export type LitOptions = z.output<typeof litTrainOptionsSchema>;

export function parseLitOptions(input: LitTrainOptions): LitOptions {
  return parseWith(litTrainOptionsSchema, input, 'Invalid training options', { root: 'options' });
}

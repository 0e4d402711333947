import type { HashedNgramFeaturizer } from '../text/hashed-ngram.js';
import type { TrainingExample } from './lit-batches.js';
import { tf } from './tf-backend.js';
import { l2NormaliseRows, mm } from './tf-math.js';

/**
 * The two towers LiT trains and their contrastive loss (TensorFlow.js):
 *  - image head: standardise → [MLP D→H→E + linear D→E skip] → L2-normalise;
 *  - text tower: embedding-bag over hashed word/char n-grams (a [buckets × E] matrix) → L2-normalise;
 *  - loss on cosine logits / temperature: image↔image multi-positive InfoNCE (SupCon) plus
 *    image↔text multi-positive InfoNCE in both directions (CLIP's loss with many positives).
 */
export interface HeadWeights {
  inputDimension: number;
  hidden: number;
  outputDimension: number;
  /** Input standardisation is folded into w1/b1/wSkip/b2, so inference is x·W + b only. */
  w1: Float32Array; // [D,H]
  b1: Float32Array; // [H]
  w2: Float32Array; // [H,E]
  wSkip: Float32Array; // [D,E]
  b2: Float32Array; // [E]
}

export interface TextTowerWeights {
  buckets: number;
  outputDimension: number;
  w: Float32Array; // [buckets,E]
}

/**
 * Mean over rows with ≥1 positive of −Σ_j P_ij·logsoftmax(logits)_ij / Σ_j P_ij — multi-positive
 * InfoNCE. `exclude` masks logits (e.g. the diagonal for image↔image) out of the softmax.
 */
function multiPositiveNce(logits: tf.Tensor2D, positives: tf.Tensor2D, exclude?: tf.Tensor2D): tf.Scalar {
  const masked = exclude ? tf.add(logits, tf.mul(exclude, -1e4)) : logits;
  const logProb = tf.logSoftmax(masked, 1);
  const count = tf.sum(positives, 1);
  const has = tf.cast(tf.greater(count, 0), 'float32');
  const perRow = tf.div(tf.neg(tf.sum(tf.mul(positives, logProb), 1)), tf.maximum(count, 1));
  return tf.div(tf.sum(tf.mul(perRow, has)), tf.maximum(tf.sum(has), 1)) as tf.Scalar;
}

export class LitModel {
  readonly w1: tf.Variable;
  readonly b1: tf.Variable;
  readonly w2: tf.Variable;
  readonly wSkip: tf.Variable;
  readonly b2: tf.Variable;
  readonly wText: tf.Variable;
  readonly logTemp: tf.Variable;
  readonly mean: tf.Tensor1D;
  readonly invStd: tf.Tensor1D;

  constructor(
    readonly d: number,
    readonly h: number,
    readonly e: number,
    readonly buckets: number,
    seed: number,
    stats: { mean: Float32Array; invStd: Float32Array },
    temperature: number,
    learnableTemperature: boolean,
  ) {
    // Glorot-uniform limits; tf seeds make initialisation reproducible. tidy() frees the initial
    // tensors, the variables keep their data.
    const glorot = (fanIn: number, fanOut: number, s: number) =>
      tf.randomUniform([fanIn, fanOut], -Math.sqrt(6 / (fanIn + fanOut)), Math.sqrt(6 / (fanIn + fanOut)), 'float32', s);
    this.w1 = tf.tidy(() => tf.variable(glorot(d, h, seed + 1), true, 'w1'));
    this.b1 = tf.tidy(() => tf.variable(tf.zeros([h]), true, 'b1'));
    this.w2 = tf.tidy(() => tf.variable(glorot(h, e, seed + 2), true, 'w2'));
    this.wSkip = tf.tidy(() => tf.variable(glorot(d, e, seed + 3), true, 'wSkip'));
    this.b2 = tf.tidy(() => tf.variable(tf.zeros([e]), true, 'b2'));
    this.wText = tf.tidy(() => tf.variable(tf.randomNormal([buckets, e], 0, 1 / Math.sqrt(e), 'float32', seed + 4), true, 'wText'));
    this.logTemp = tf.tidy(() => tf.variable(tf.scalar(Math.log(temperature)), learnableTemperature, 'logTemp'));
    this.mean = tf.tensor1d(stats.mean);
    this.invStd = tf.tensor1d(stats.invStd);
  }

  trainable(): tf.Variable[] {
    return [this.w1, this.b1, this.w2, this.wSkip, this.b2, this.wText, this.logTemp].filter((v) => v.trainable);
  }

  image(x: tf.Tensor2D): tf.Tensor2D {
    const xs = tf.mul(tf.sub(x, this.mean), this.invStd) as tf.Tensor2D;
    const hidden = tf.relu(tf.add(mm(xs, this.w1 as tf.Tensor2D), this.b1)) as tf.Tensor2D;
    return l2NormaliseRows(tf.add(tf.add(mm(hidden, this.w2 as tf.Tensor2D), mm(xs, this.wSkip as tf.Tensor2D)), this.b2) as tf.Tensor2D);
  }

  text(dense: tf.Tensor2D): tf.Tensor2D {
    return l2NormaliseRows(mm(dense, this.wText as tf.Tensor2D));
  }

  temperature(): tf.Scalar {
    return tf.clipByValue(tf.exp(this.logTemp), 0.01, 1) as tf.Scalar;
  }

  /** Weights with the standardisation folded in: x·(invStd∘W) + (b − (mean∘invStd)·W). */
  async export(): Promise<{ head: HeadWeights; text: TextTowerWeights }> {
    const [w1, b1, w2, wSkip, b2, wText] = tf.tidy(() => {
      const scale = tf.reshape(this.invStd, [this.d, 1]);
      const shift = tf.reshape(tf.mul(this.mean, this.invStd), [1, this.d]);
      const w1f = tf.mul(this.w1, scale);
      const wSf = tf.mul(this.wSkip, scale);
      const b1f = tf.sub(this.b1, tf.reshape(tf.matMul(shift, this.w1), [this.h]));
      const b2f = tf.sub(this.b2, tf.reshape(tf.matMul(shift, this.wSkip), [this.e]));
      return [w1f, b1f, this.w2.clone(), wSf, b2f, this.wText.clone()];
    });
    const data = await Promise.all([w1, b1, w2, wSkip, b2, wText].map((t) => t!.data() as Promise<Float32Array>));
    for (const t of [w1, b1, w2, wSkip, b2, wText]) t!.dispose();
    return {
      head: { inputDimension: this.d, hidden: this.h, outputDimension: this.e, w1: data[0]!, b1: data[1]!, w2: data[2]!, wSkip: data[3]!, b2: data[4]! },
      text: { buckets: this.buckets, outputDimension: this.e, w: data[5]! },
    };
  }

  snapshot(): tf.Tensor[] {
    return [this.w1, this.b1, this.w2, this.wSkip, this.b2, this.wText, this.logTemp].map((v) => v.clone());
  }

  restore(saved: tf.Tensor[]): void {
    [this.w1, this.b1, this.w2, this.wSkip, this.b2, this.wText, this.logTemp].forEach((v, i) => v.assign(saved[i]!));
  }

  dispose(): void {
    for (const t of [this.w1, this.b1, this.w2, this.wSkip, this.b2, this.wText, this.logTemp, this.mean, this.invStd]) t.dispose();
  }
}

/** Per-dimension mean and 1/std of the training vectors (the head's input standardisation). */
export function featureStats(examples: TrainingExample[], d: number): { mean: Float32Array; invStd: Float32Array } {
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (const e of examples)
    for (let j = 0; j < d; j++) {
      const v = e.vector[j]!;
      mean[j]! += v;
      sq[j]! += v * v;
    }
  const n = Math.max(1, examples.length);
  const m = new Float32Array(d);
  const inv = new Float32Array(d);
  for (let j = 0; j < d; j++) {
    m[j] = mean[j]! / n;
    const variance = Math.max(0, sq[j]! / n - m[j]! * m[j]!);
    // Constant features (e.g. always-zero activations) keep scale 1 instead of exploding.
    inv[j] = variance > 1e-12 ? 1 / Math.sqrt(variance) : 1;
  }
  return { mean: m, invStd: inv };
}

/** Dense hashed-n-gram rows for the given texts (the text tower's input). */
export function denseTexts(featurizer: HashedNgramFeaturizer, texts: string[]): tf.Tensor2D {
  return tf.tensor2d(featurizer.dense(texts), [texts.length, featurizer.buckets]);
}

/** One batch as tensors (see lit-batches.ts `batchTargets`). */
export interface BatchTensors {
  /** Base vectors [n × d]. */
  xs: tf.Tensor2D;
  imagePositives: tf.Tensor2D;
  /** The identity [n × n]: a row is never its own image↔image candidate. */
  eye: tf.Tensor2D;
  /** Null when the batch has no texts. */
  textPositives: tf.Tensor2D | null;
  /** Text-tower input rows of every label text (shared by all batches); null without labels. */
  labelTextDense: tf.Tensor2D | null;
  /** Text-tower input rows of the batch's other texts (captions, feedback queries); null when none. */
  extraTextDense: tf.Tensor2D | null;
}

/**
 * The training loss of one batch (call inside `optimizer.minimize`): weighted image↔image SupCon
 * plus the mean of image→text and text→image multi-positive InfoNCE.
 */
export function litLoss(
  model: LitModel,
  batch: BatchTensors,
  weights: { imageImageWeight: number; imageTextWeight: number },
): { total: tf.Scalar; imageImage: tf.Scalar; imageText: tf.Scalar } {
  const z = model.image(batch.xs);
  const invT = tf.div(1, model.temperature());
  const imageImage = multiPositiveNce(tf.mul(mm(z, tf.transpose(z) as tf.Tensor2D), invT) as tf.Tensor2D, batch.imagePositives, batch.eye);
  let total = tf.mul(imageImage, weights.imageImageWeight) as tf.Scalar;
  let imageText: tf.Scalar = tf.scalar(0);
  const { labelTextDense, extraTextDense } = batch;
  if (batch.textPositives && (labelTextDense || extraTextDense) && weights.imageTextWeight > 0) {
    const dense = labelTextDense && extraTextDense ? (tf.concat([labelTextDense, extraTextDense], 0) as tf.Tensor2D) : (labelTextDense ?? extraTextDense)!;
    const u = model.text(dense);
    const logits = tf.mul(mm(z, tf.transpose(u) as tf.Tensor2D), invT) as tf.Tensor2D;
    const imageToText = multiPositiveNce(logits, batch.textPositives);
    const textToImage = multiPositiveNce(tf.transpose(logits) as tf.Tensor2D, tf.transpose(batch.textPositives) as tf.Tensor2D);
    imageText = tf.div(tf.add(imageToText, textToImage), 2) as tf.Scalar;
    total = tf.add(total, tf.mul(imageText, weights.imageTextWeight)) as tf.Scalar;
  }
  return { total, imageImage, imageText };
}

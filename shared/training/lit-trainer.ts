import { z } from 'zod';
import { ParseError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { HashedNgramFeaturizer, DEFAULT_BUCKETS } from '../text/hashed-ngram.js';
import { idFraction } from '../evaluation/split.js';
import { initTf, tf } from './tf-backend.js';
import { mulberry32, shuffledIndices } from './prng.js';

/**
 * Locked-image tuning (LiT) on stored base embeddings: the image tower stays frozen; we train
 *  - an image head: standardise → [MLP D→H→E + linear D→E skip] → L2-normalise, and
 *  - a text tower: embedding-bag over hashed word/char n-grams (a [buckets × E] matrix) → L2-normalise,
 * with three losses on cosine logits / temperature:
 *  - image↔text multi-positive InfoNCE (CLIP's loss, where an image's positives are its labels,
 *    caption and feedback query texts). Every label text takes part in every batch, so the
 *    image→text direction is also a softmax classifier over labels with text-tower prototypes;
 *  - image↔image supervised contrastive loss (SupCon): same label or feedback pair = positive,
 *    which is what image→image Recall@1 rewards directly.
 * Seeded (init via tf seeds, shuffles via mulberry32), Adam, mini-batches, early stopping on the
 * Recall@1 of a deterministic internal validation split.
 */
export interface TrainingExample {
  id: string;
  /** L2-normalised base embedding. */
  vector: Float32Array;
  labels: string[];
  caption?: string;
}

export type FeedbackPair = { kind: 'image'; queryId: string; openedId: string } | { kind: 'text'; query: string; openedId: string };

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
});
export type LitTrainOptions = z.input<typeof litTrainOptionsSchema>;

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

export interface EpochStats {
  epoch: number;
  loss: number;
  imageImageLoss: number;
  imageTextLoss: number;
  /** Internal validation image→image Recall@1 (null without a validation split). */
  validationRecallAt1: number | null;
  temperature: number;
  seconds: number;
}

export interface LitTrainingResult {
  head: HeadWeights;
  text: TextTowerWeights;
  history: EpochStats[];
  bestEpoch: number;
  backend: string;
  trainedExamples: number;
  validationExamples: number;
  seconds: number;
}

interface Prepared {
  examples: TrainingExample[];
  /** Per example: indices into `texts` of its positive texts. */
  textsOf: number[][];
  /** Per example: label ids (for image↔image positives). */
  labelIds: number[][];
  texts: string[];
  labelTextCount: number;
  pairs: [number, number][];
}

function prepare(examples: TrainingExample[], feedback: FeedbackPair[]): Prepared {
  const byId = new Map(examples.map((e, i) => [e.id, i]));
  const labelIndex = new Map<string, number>();
  for (const e of examples) for (const l of e.labels) if (!labelIndex.has(l)) labelIndex.set(l, labelIndex.size);
  // Label texts come first: they take part in every batch (the classifier over labels).
  const texts = [...labelIndex.keys()];
  const textIndex = new Map(texts.map((t, i) => [t, i]));
  const textId = (t: string) => {
    let i = textIndex.get(t);
    if (i === undefined) {
      i = texts.length;
      texts.push(t);
      textIndex.set(t, i);
    }
    return i;
  };
  const textsOf = examples.map((e) => {
    const ids = e.labels.map((l) => textIndex.get(l)!);
    if (e.caption && e.caption.trim()) ids.push(textId(e.caption.trim()));
    return ids;
  });
  const pairs: [number, number][] = [];
  for (const f of feedback) {
    const opened = byId.get(f.openedId);
    if (opened === undefined) continue;
    if (f.kind === 'text') {
      const t = f.query.trim();
      if (t && !textsOf[opened]!.includes(textId(t))) textsOf[opened]!.push(textId(t));
    } else {
      const q = byId.get(f.queryId);
      if (q !== undefined && q !== opened) pairs.push([q, opened]);
    }
  }
  return {
    examples,
    textsOf,
    labelIds: examples.map((e) => [...new Set(e.labels.map((l) => labelIndex.get(l)!))]),
    texts,
    labelTextCount: labelIndex.size,
    pairs,
  };
}

/**
 * matMul whose gradient uses explicit transposes: the wasm backend's transposed BatchMatMul (what
 * tfjs' own matMul gradient calls) is about 10× slower than transpose + plain matMul (measured).
 */
const mm = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
      tf.matMul(dy as tf.Tensor2D, tf.transpose(saved[1]!) as tf.Tensor2D),
      tf.matMul(tf.transpose(saved[0]!) as tf.Tensor2D, dy as tf.Tensor2D),
    ],
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

function l2normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), 1, true), 1e-12))) as tf.Tensor2D;
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

class LitModel {
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
    return l2normalize(tf.add(tf.add(mm(hidden, this.w2 as tf.Tensor2D), mm(xs, this.wSkip as tf.Tensor2D)), this.b2) as tf.Tensor2D);
  }

  text(dense: tf.Tensor2D): tf.Tensor2D {
    return l2normalize(mm(dense, this.wText as tf.Tensor2D));
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

function featureStats(examples: TrainingExample[], d: number): { mean: Float32Array; invStd: Float32Array } {
  const mean = new Float64Array(d);
  const sq = new Float64Array(d);
  for (const e of examples) for (let j = 0; j < d; j++) {
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

function validate(examples: TrainingExample[], options: z.output<typeof litTrainOptionsSchema>): void {
  if (examples.length < 2) throw new ParseError(`LiT training needs at least 2 examples, got ${examples.length}`);
  const d = examples[0]!.vector.length;
  if (d === 0) throw new ParseError('training vectors are empty');
  examples.forEach((e, i) => {
    if (e.vector.length !== d) throw new ParseError(`example ${i} (${e.id}) has dimension ${e.vector.length}, expected ${d}`);
    if (!e.vector.every(Number.isFinite)) throw new ParseError(`example ${i} (${e.id}) has a non-finite value`);
  });
  if (!examples.some((e) => e.labels.length > 0 || e.caption)) {
    throw new ParseError('no training example has a label or caption: nothing to learn from');
  }
  void options;
}

/** Dense hashed-n-gram rows for the given texts (the text tower's input). */
function denseTexts(featurizer: HashedNgramFeaturizer, texts: string[]): tf.Tensor2D {
  return tf.tensor2d(featurizer.dense(texts), [texts.length, featurizer.buckets]);
}

export async function trainLit(
  allExamples: TrainingExample[],
  feedback: FeedbackPair[] = [],
  optionsInput: LitTrainOptions = {},
  hooks: { onEpoch?: (stats: EpochStats) => void; logger?: Logger } = {},
): Promise<LitTrainingResult> {
  const parsed = litTrainOptionsSchema.safeParse(optionsInput);
  if (!parsed.success) throw new ParseError(`Invalid training options: ${parsed.error.message}`, { cause: parsed.error });
  const options = parsed.data;
  const logger = hooks.logger ?? silentLogger;
  validate(allExamples, options);
  const backend = await initTf(logger);
  const started = performance.now();

  // Examples with nothing to learn from (no label, caption or feedback) are left out.
  const feedbackIds = new Set(feedback.flatMap((f) => (f.kind === 'image' ? [f.queryId, f.openedId] : [f.openedId])));
  const usable = allExamples.filter((e) => e.labels.length > 0 || e.caption || feedbackIds.has(e.id));
  const isVal = (e: TrainingExample) => options.validationFraction > 0 && idFraction(e.id, `validation-${options.seed}`) < options.validationFraction && e.labels.length > 0;
  let train = usable.filter((e) => !isVal(e));
  let val = usable.filter(isVal);
  if (train.length < 2) {
    train = usable;
    val = [];
  }
  const data = prepare(train, feedback);
  const d = train[0]!.vector.length;
  const featurizer = new HashedNgramFeaturizer({ buckets: options.buckets });
  const model = new LitModel(d, options.hidden, options.outputDimension, options.buckets, options.seed, featureStats(train, d), options.temperature, options.learnableTemperature);
  const optimizer = tf.train.adam(options.learningRate);
  const random = mulberry32(options.seed);
  const labelTextDense = data.labelTextCount > 0 ? denseTexts(featurizer, data.texts.slice(0, data.labelTextCount)) : null;
  const history: EpochStats[] = [];
  let best: { recall: number; epoch: number; weights: tf.Tensor[] } | null = null;
  let sinceBest = 0;

  try {
    for (let epoch = 1; epoch <= options.epochs; epoch++) {
      const t0 = performance.now();
      const order = shuffledIndices(train.length, random);
      const pairOrder = shuffledIndices(data.pairs.length, random);
      let pairCursor = 0;
      let sums = [0, 0, 0];
      let steps = 0;
      for (let start = 0; start < order.length; start += options.batchSize) {
        const batch = Array.from(order.subarray(start, Math.min(order.length, start + options.batchSize)));
        // Feedback pairs ride along with the batch as explicit positives.
        const extraPairs: [number, number][] = [];
        for (let f = 0; f < options.feedbackPerBatch && data.pairs.length > 0 && f < data.pairs.length; f++) {
          const pair = data.pairs[pairOrder[pairCursor++ % data.pairs.length]!]!;
          extraPairs.push(pair);
          batch.push(pair[0], pair[1]);
        }
        if (batch.length < 2) continue;
        const losses = stepOnBatch(model, optimizer, data, batch, extraPairs, featurizer, labelTextDense, options);
        sums = sums.map((s, i) => s + losses[i]!);
        steps++;
      }
      const recall = val.length > 0 ? await validationRecall(model, train, val, options) : null;
      const stats: EpochStats = {
        epoch,
        loss: sums[0]! / Math.max(1, steps),
        imageImageLoss: sums[1]! / Math.max(1, steps),
        imageTextLoss: sums[2]! / Math.max(1, steps),
        validationRecallAt1: recall,
        temperature: tf.tidy(() => model.temperature().dataSync()[0]!),
        seconds: (performance.now() - t0) / 1000,
      };
      history.push(stats);
      hooks.onEpoch?.(stats);
      logger.info({ ...stats }, 'LiT epoch');
      const score = recall ?? -stats.loss;
      if (!best || score > best.recall) {
        for (const t of best?.weights ?? []) t.dispose();
        best = { recall: score, epoch, weights: model.snapshot() };
        sinceBest = 0;
      } else if (++sinceBest >= options.patience) {
        logger.info({ epoch, bestEpoch: best.epoch }, 'early stopping');
        break;
      }
    }
    if (best) model.restore(best.weights);
    const weights = await model.export();
    return {
      ...weights,
      history,
      bestEpoch: best?.epoch ?? 0,
      backend,
      trainedExamples: train.length,
      validationExamples: val.length,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    for (const t of best?.weights ?? []) t.dispose();
    labelTextDense?.dispose();
    optimizer.dispose();
    model.dispose();
  }
}

function stepOnBatch(
  model: LitModel,
  optimizer: tf.Optimizer,
  data: Prepared,
  batch: number[],
  extraPairs: [number, number][],
  featurizer: HashedNgramFeaturizer,
  labelTextDense: tf.Tensor2D | null,
  options: z.output<typeof litTrainOptionsSchema>,
): [number, number, number] {
  const n = batch.length;
  const d = model.d;
  const x = new Float32Array(n * d);
  batch.forEach((ei, r) => x.set(data.examples[ei]!.vector, r * d));

  // Image↔image positives: shared label, or a feedback pair (by batch position).
  const pos = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const li = data.labelIds[batch[i]!]!;
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      const ei = batch[i]!;
      const ej = batch[j]!;
      if (ei === ej || (li.length > 0 && data.labelIds[ej]!.some((l) => li.includes(l)))) pos[i * n + j] = 1;
    }
  }
  const base = n - extraPairs.length * 2;
  extraPairs.forEach((_, p) => {
    const a = base + 2 * p;
    pos[a * n + a + 1] = 1;
    pos[(a + 1) * n + a] = 1;
  });

  // Texts of this batch: every label text, then captions/feedback texts of the batch's images.
  const extraTexts = new Map<number, number>();
  for (const ei of batch) for (const t of data.textsOf[ei]!) if (t >= data.labelTextCount && !extraTexts.has(t)) extraTexts.set(t, data.labelTextCount + extraTexts.size);
  const textCount = data.labelTextCount + extraTexts.size;
  const textPos = new Float32Array(n * textCount);
  batch.forEach((ei, r) => {
    for (const t of data.textsOf[ei]!) textPos[r * textCount + (t < data.labelTextCount ? t : extraTexts.get(t)!)] = 1;
  });

  const xs = tf.tensor2d(x, [n, d]);
  const posT = tf.tensor2d(pos, [n, n]);
  const eye = tf.eye(n) as tf.Tensor2D;
  const textPosT = textCount > 0 ? tf.tensor2d(textPos, [n, textCount]) : null;
  const extraDense = extraTexts.size > 0 ? denseTexts(featurizer, [...extraTexts.keys()].map((t) => data.texts[t]!)) : null;
  let parts: [number, number, number] = [0, 0, 0];
  try {
    const lossValue = optimizer.minimize(
      () => {
        const z = model.image(xs);
        const invT = tf.div(1, model.temperature());
        let total: tf.Scalar = tf.scalar(0);
        const ii = multiPositiveNce(tf.mul(mm(z, tf.transpose(z) as tf.Tensor2D), invT) as tf.Tensor2D, posT, eye);
        total = tf.add(total, tf.mul(ii, options.imageImageWeight));
        let it: tf.Scalar = tf.scalar(0);
        if (textPosT && options.imageTextWeight > 0) {
          const dense = labelTextDense && extraDense ? tf.concat([labelTextDense, extraDense], 0) : (labelTextDense ?? extraDense)!;
          const u = model.text(dense as tf.Tensor2D);
          const logits = tf.mul(mm(z, tf.transpose(u) as tf.Tensor2D), invT) as tf.Tensor2D;
          const imageToText = multiPositiveNce(logits, textPosT);
          const textToImage = multiPositiveNce(tf.transpose(logits) as tf.Tensor2D, tf.transpose(textPosT) as tf.Tensor2D);
          it = tf.div(tf.add(imageToText, textToImage), 2) as tf.Scalar;
          total = tf.add(total, tf.mul(it, options.imageTextWeight));
        }
        parts = [0, ii.dataSync()[0]!, it.dataSync()[0]!];
        return total;
      },
      true,
      model.trainable(),
    );
    parts[0] = lossValue!.dataSync()[0]!;
    lossValue!.dispose();
  } finally {
    for (const t of [xs, posT, eye, textPosT, extraDense]) t?.dispose();
  }
  return parts;
}

async function validationRecall(model: LitModel, train: TrainingExample[], val: TrainingExample[], options: z.output<typeof litTrainOptionsSchema>): Promise<number> {
  // Deterministic subsamples: the first ids by hash, so every epoch checks the same images.
  const pick = (items: TrainingExample[], cap: number, salt: string) =>
    items.length <= cap ? items : [...items].sort((a, b) => idFraction(a.id, salt) - idFraction(b.id, salt)).slice(0, cap);
  const queries = pick(val, options.validationQueries, 'vq');
  const corpus = pick(train.filter((e) => e.labels.length > 0), options.validationCorpus, 'vc');
  const project = (items: TrainingExample[]) =>
    tf.tidy(() => {
      const x = new Float32Array(items.length * model.d);
      items.forEach((e, i) => x.set(e.vector, i * model.d));
      return model.image(tf.tensor2d(x, [items.length, model.d]));
    });
  const top = tf.tidy(() => {
    const q = project(queries);
    const c = project(corpus);
    return tf.topk(tf.matMul(q, tf.transpose(c)), 1).indices;
  });
  const idx = (await top.data()) as Int32Array;
  top.dispose();
  let hits = 0;
  queries.forEach((q, i) => {
    if (corpus[idx[i]!]!.labels.some((l) => q.labels.includes(l))) hits++;
  });
  return hits / queries.length;
}

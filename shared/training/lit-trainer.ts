import { silentLogger, type Logger } from '../logger.js';
import { HashedNgramFeaturizer } from '../text/hashed-ngram.js';
import { idFraction } from '../evaluation/split.js';
import {
  batchTargets,
  epochBatches,
  prepare,
  validateExamples,
  type Batch,
  type FeedbackPair,
  type PreparedData,
  type TrainingExample,
} from './lit-batches.js';
import { denseTexts, featureStats, LitModel, litLoss, type HeadWeights, type TextTowerWeights } from './lit-model.js';
import { parseLitOptions, type LitOptions, type LitTrainOptions } from './lit-options.js';
import { initTf, tf } from './tf-backend.js';
import { mulberry32 } from './prng.js';

// The training API in one import (what the retrain service, the bench and the ONNX export use).
export { litTrainOptionsSchema, type LitTrainOptions } from './lit-options.js';
export type { FeedbackPair, TrainingExample } from './lit-batches.js';
export type { HeadWeights, TextTowerWeights } from './lit-model.js';

/**
 * Locked-image tuning (LiT) on stored base embeddings: the image tower stays frozen; an image
 * head and a hashed n-gram text tower (lit-model.ts) are trained contrastively on labels,
 * captions and click feedback (lit-batches.ts), with the options of lit-options.ts:
 *  - image↔text multi-positive InfoNCE (CLIP's loss, where an image's positives are its labels,
 *    caption and feedback query texts). Every label text takes part in every batch, so the
 *    image→text direction is also a softmax classifier over labels with text-tower prototypes;
 *  - image↔image supervised contrastive loss (SupCon): same label or feedback pair = positive,
 *    which is what image→image Recall@1 rewards directly.
 * Seeded (init via tf seeds, shuffles via mulberry32), Adam, mini-batches, early stopping on the
 * Recall@1 of a deterministic internal validation split. This file is the loop and that check.
 */
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

export async function trainLit(
  allExamples: TrainingExample[],
  feedback: FeedbackPair[] = [],
  optionsInput: LitTrainOptions = {},
  hooks: { onEpoch?: (stats: EpochStats) => void; logger?: Logger } = {},
): Promise<LitTrainingResult> {
  const options = parseLitOptions(optionsInput);
  const logger = hooks.logger ?? silentLogger;
  validateExamples(allExamples);
  const backend = await initTf(logger);
  const started = performance.now();

  // Examples with nothing to learn from (no label, caption or feedback) are left out.
  const feedbackIds = new Set(feedback.flatMap((f) => (f.kind === 'image' ? [f.queryId, f.openedId] : [f.openedId])));
  const usable = allExamples.filter((e) => e.labels.length > 0 || e.caption || feedbackIds.has(e.id));
  const isVal = (e: TrainingExample) =>
    options.validationFraction > 0 && idFraction(e.id, `validation-${options.seed}`) < options.validationFraction && e.labels.length > 0;
  let train = usable.filter((e) => !isVal(e));
  let val = usable.filter(isVal);
  if (train.length < 2) {
    train = usable;
    val = [];
  }
  const data = prepare(train, feedback);
  const d = train[0]!.vector.length;
  const featurizer = new HashedNgramFeaturizer({ buckets: options.buckets });
  const model = new LitModel(
    d,
    options.hidden,
    options.outputDimension,
    options.buckets,
    options.seed,
    featureStats(train, d),
    options.temperature,
    options.learnableTemperature,
  );
  const optimizer = tf.train.adam(options.learningRate);
  const random = mulberry32(options.seed);
  const labelTextDense = data.labelTextCount > 0 ? denseTexts(featurizer, data.texts.slice(0, data.labelTextCount)) : null;
  const history: EpochStats[] = [];
  let best: { recall: number; epoch: number; weights: tf.Tensor[] } | null = null;
  let sinceBest = 0;

  try {
    for (let epoch = 1; epoch <= options.epochs; epoch++) {
      const t0 = performance.now();
      let sums = [0, 0, 0];
      let steps = 0;
      for (const batch of epochBatches(data, random, options)) {
        const losses = stepOnBatch(model, optimizer, data, batch, featurizer, labelTextDense, options);
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

/** One optimiser step; returns [total, image↔image, image↔text] losses of the batch. */
function stepOnBatch(
  model: LitModel,
  optimizer: tf.Optimizer,
  data: PreparedData,
  batch: Batch,
  featurizer: HashedNgramFeaturizer,
  labelTextDense: tf.Tensor2D | null,
  options: LitOptions,
): [number, number, number] {
  const n = batch.rows.length;
  const targets = batchTargets(data, batch, model.d);
  const xs = tf.tensor2d(targets.x, [n, model.d]);
  const imagePositives = tf.tensor2d(targets.imagePositives, [n, n]);
  const eye = tf.eye(n) as tf.Tensor2D;
  const textPositives = targets.textCount > 0 ? tf.tensor2d(targets.textPositives, [n, targets.textCount]) : null;
  const extraTextDense = targets.extraTexts.length > 0 ? denseTexts(featurizer, targets.extraTexts) : null;
  let parts: [number, number, number] = [0, 0, 0];
  try {
    const lossValue = optimizer.minimize(
      () => {
        const { total, imageImage, imageText } = litLoss(model, { xs, imagePositives, eye, textPositives, labelTextDense, extraTextDense }, options);
        parts = [0, imageImage.dataSync()[0]!, imageText.dataSync()[0]!];
        return total;
      },
      true,
      model.trainable(),
    );
    parts[0] = lossValue!.dataSync()[0]!;
    lossValue!.dispose();
  } finally {
    for (const t of [xs, imagePositives, eye, textPositives, extraTextDense]) t?.dispose();
  }
  return parts;
}

/** Image→image Recall@1 of the validation images against the labelled training images. */
async function validationRecall(model: LitModel, train: TrainingExample[], val: TrainingExample[], options: LitOptions): Promise<number> {
  // Deterministic subsamples: the first ids by hash, so every epoch checks the same images.
  const pick = (items: TrainingExample[], cap: number, salt: string) =>
    items.length <= cap ? items : [...items].sort((a, b) => idFraction(a.id, salt) - idFraction(b.id, salt)).slice(0, cap);
  const queries = pick(val, options.validationQueries, 'vq');
  const corpus = pick(
    train.filter((e) => e.labels.length > 0),
    options.validationCorpus,
    'vc',
  );
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

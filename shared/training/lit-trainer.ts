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
import { ConfigError, ParseError } from '../errors.js';
import { fromFloat16Bits } from '../model/float16.js';
import { packBatch, towerEmbeddings, type TowerBlocks } from './tower-blocks.js';

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
  /** With a tower (`unlockBlocks` > 0): the units trained and their parameter count; the tuned weights stay in the caller's TowerBlocks. */
  tower?: { unlocked: string[]; parameters: number };
}

export async function trainLit(
  allExamples: TrainingExample[],
  feedback: FeedbackPair[] = [],
  optionsInput: LitTrainOptions = {},
  hooks: {
    onEpoch?: (stats: EpochStats) => void;
    logger?: Logger;
    /**
     * The tower's top blocks (tower-blocks.ts), needed when `unlockBlocks` > 0: its unlocked
     * units train with the head on the examples' stored activations. The caller owns it (and
     * exports the tuned weights from it afterwards: the best epoch's are restored into it).
     */
    tower?: TowerBlocks;
  } = {},
): Promise<LitTrainingResult> {
  const options = parseLitOptions(optionsInput);
  const logger = hooks.logger ?? silentLogger;
  validateExamples(allExamples);
  const tower = options.unlockBlocks > 0 ? hooks.tower : undefined;
  if (options.unlockBlocks > 0) {
    if (!tower) throw new ConfigError(`unlockBlocks ${options.unlockBlocks} needs the image tower's top blocks (TowerBlocks) to train`);
    if (options.headOnlyEpochs > 0 && options.headOnlyEpochs >= options.epochs) {
      throw new ConfigError(
        `headOnlyEpochs (${options.headOnlyEpochs}) must be fewer than epochs (${options.epochs}) when unlocking blocks: otherwise the blocks never train`,
      );
    }
    if (tower.unlocked.length !== options.unlockBlocks) {
      throw new ConfigError(`unlockBlocks is ${options.unlockBlocks} but the tower given unlocks ${tower.unlocked.length} (${tower.unlocked.join(', ')})`);
    }
    const missing = allExamples.filter((e) => !e.activation).length;
    if (missing > 0) {
      throw new ParseError(
        `unlocking tower blocks needs the block activations stored at ingest, and ${missing} of ${allExamples.length} images have none: ` +
          're-ingest them with a model whose image tower has an activation output (the default model has one)',
      );
    }
  }
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
  const towerOptimizer = tower ? tf.train.adam(options.towerLearningRate) : null;
  const towerStep = tower ? { tower, optimizer: towerOptimizer! } : null;
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
      // Head-first epochs: the blocks are unchanged, so the stored base embeddings are their output.
      const withTower = epoch > options.headOnlyEpochs ? towerStep : null;
      // Patience counts from the blocks' first epoch: a plateau of the head alone must not end the run there.
      if (tower && epoch === options.headOnlyEpochs + 1) sinceBest = 0;
      for (const batch of epochBatches(data, random, options)) {
        const losses = stepOnBatch(model, optimizer, data, batch, featurizer, labelTextDense, options, withTower);
        sums = sums.map((s, i) => s + losses[i]!);
        steps++;
      }
      const recall = val.length > 0 ? await validationRecall(model, train, val, options, withTower?.tower) : null;
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
        best = { recall: score, epoch, weights: [...model.snapshot(), ...(tower?.snapshot() ?? [])] };
        sinceBest = 0;
      } else if (++sinceBest >= options.patience && epoch > options.headOnlyEpochs) {
        // (Head-first epochs never stop the run: the blocks' epochs are what it is for.)
        logger.info({ epoch, bestEpoch: best.epoch }, 'early stopping');
        break;
      }
    }
    if (best) {
      const headCount = best.weights.length - (tower?.trainable().length ?? 0);
      model.restore(best.weights.slice(0, headCount));
      tower?.restore(best.weights.slice(headCount));
    }
    const weights = await model.export();
    return {
      ...weights,
      history,
      bestEpoch: best?.epoch ?? 0,
      backend,
      trainedExamples: train.length,
      validationExamples: val.length,
      seconds: (performance.now() - started) / 1000,
      // Only when the kept weights include trained blocks (a head-first epoch may be the best one).
      ...(tower && (best?.epoch ?? options.epochs) > options.headOnlyEpochs
        ? { tower: { unlocked: [...tower.unlocked], parameters: tower.tunedParameterCount() } }
        : {}),
    };
  } finally {
    for (const t of best?.weights ?? []) t.dispose();
    labelTextDense?.dispose();
    optimizer.dispose();
    towerOptimizer?.dispose();
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
  towerStep: { tower: TowerBlocks; optimizer: tf.Optimizer } | null = null,
): [number, number, number] {
  const n = batch.rows.length;
  const targets = batchTargets(data, batch, model.d);
  const xs = tf.tensor2d(targets.x, [n, model.d]);
  if (towerStep) {
    try {
      return towerStepOnBatch(model, optimizer, data, batch, targets, featurizer, labelTextDense, options, towerStep);
    } finally {
      xs.dispose();
    }
  }
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

/**
 * One step with unlocked tower blocks: the batch's stored activations go through the blocks, then
 * the head; one gradient computation, applied by the head's optimiser to the head's variables and
 * by the tower's (smaller learning rate) to the tower's.
 */
function towerStepOnBatch(
  model: LitModel,
  optimizer: tf.Optimizer,
  data: PreparedData,
  batch: Batch,
  targets: ReturnType<typeof batchTargets>,
  featurizer: HashedNgramFeaturizer,
  labelTextDense: tf.Tensor2D | null,
  options: LitOptions,
  { tower, optimizer: towerOptimizer }: { tower: TowerBlocks; optimizer: tf.Optimizer },
): [number, number, number] {
  const n = batch.rows.length;
  const [h, w, c] = tower.spec.activation.shape;
  const { act, thumbs, thumbDim } = packBatch(
    tower,
    batch.rows.map((ei) => towerItem(data.examples[ei]!)),
    h * w * c,
  );
  const actT = tf.tensor4d(act, [n, h, w, c]);
  const thumbT = thumbDim > 0 ? tf.tensor2d(thumbs, [n, thumbDim]) : null;
  const imagePositives = tf.tensor2d(targets.imagePositives, [n, n]);
  const eye = tf.eye(n) as tf.Tensor2D;
  const textPositives = targets.textCount > 0 ? tf.tensor2d(targets.textPositives, [n, targets.textCount]) : null;
  const extraTextDense = targets.extraTexts.length > 0 ? denseTexts(featurizer, targets.extraTexts) : null;
  const headVars = model.trainable();
  const towerVars = tower.trainable();
  let parts: [number, number, number] = [0, 0, 0];
  try {
    const { value, grads } = tf.variableGrads(() => {
      const xs = tower.forward(actT, thumbT);
      const { total, imageImage, imageText } = litLoss(model, { xs, imagePositives, eye, textPositives, labelTextDense, extraTextDense }, options);
      parts = [0, imageImage.dataSync()[0]!, imageText.dataSync()[0]!];
      return total;
    }, [...headVars, ...towerVars]);
    const pick = (vars: tf.Variable[]) => Object.fromEntries(vars.map((v) => [v.name, grads[v.name]!]));
    optimizer.applyGradients(pick(headVars));
    towerOptimizer.applyGradients(pick(towerVars));
    parts[0] = value.dataSync()[0]!;
    value.dispose();
    for (const g of Object.values(grads)) g.dispose();
  } finally {
    for (const t of [actT, thumbT, imagePositives, eye, textPositives, extraTextDense]) t?.dispose();
  }
  return parts;
}

/** An example as the tower reads it: the activation decoded from fp16 straight into the batch buffer. */
function towerItem(e: TrainingExample): { activation: (out: Float32Array, offset: number) => void; base: Float32Array } {
  return { activation: (out, offset) => fromFloat16Bits(e.activation!, out, offset), base: e.vector };
}

/** Image→image Recall@1 of the validation images against the labelled training images. */
async function validationRecall(model: LitModel, train: TrainingExample[], val: TrainingExample[], options: LitOptions, tower?: TowerBlocks): Promise<number> {
  // Deterministic subsamples: the first ids by hash, so every epoch checks the same images.
  const pick = (items: TrainingExample[], cap: number, salt: string) =>
    items.length <= cap ? items : [...items].sort((a, b) => idFraction(a.id, salt) - idFraction(b.id, salt)).slice(0, cap);
  const queries = pick(val, options.validationQueries, 'vq');
  const corpus = pick(
    train.filter((e) => e.labels.length > 0),
    options.validationCorpus,
    'vc',
  );
  // With a tower, base vectors come from the blocks as they are now (batched: the maps are large).
  const bases = async (items: TrainingExample[]) => (tower ? await towerEmbeddings(tower, items.map(towerItem)) : items.map((e) => e.vector));
  const [queryBases, corpusBases] = [await bases(queries), await bases(corpus)];
  const project = (vectors: Float32Array[]) =>
    tf.tidy(() => {
      const x = new Float32Array(vectors.length * model.d);
      vectors.forEach((v, i) => x.set(v, i * model.d));
      return model.image(tf.tensor2d(x, [vectors.length, model.d]));
    });
  const top = tf.tidy(() => {
    const q = project(queryBases);
    const c = project(corpusBases);
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

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluateModel, type LabelledVector } from '../../shared/evaluation/evaluate.js';
import { isHeldOut } from '../../shared/evaluation/split.js';
import { gateDecision } from '../../shared/training/gate.js';
import { embedTextsWithTower, reprojectBatch } from '../../shared/training/lit-inference.js';
import { trainLit, type LitTrainingResult, type TrainingExample } from '../../shared/training/lit-trainer.js';
import { headToOnnx, textTowerToOnnx } from '../../shared/training/onnx-export.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { loadHead, loadTextTower } from '../../shared/model/towers.js';
import { HashedNgramFeaturizer } from '../../shared/text/hashed-ngram.js';
import { ParseError } from '../../shared/errors.js';
import { tf } from '../../shared/training/tf-backend.js';
import type { ModelManifest } from '../../shared/model/manifest.js';

const CLASSES = ['red dress', 'blue trouser', 'green sneaker', 'black bag', 'white shirt'];
const SMALL = { batchSize: 64, hidden: 32, outputDimension: 16, buckets: 1024, learningRate: 3e-3, validationFraction: 0.15, patience: 4 };

/**
 * Clustered synthetic "base embeddings": 6 informative dimensions carry the class, 26 nuisance
 * dimensions carry large class-independent noise, so raw cosine retrieval is mediocre and a
 * trained projection can do much better by learning which directions matter.
 */
function syntheticDataset(n: number, seed: number): TrainingExample[] {
  const random = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(random() + 1e-12)) * Math.cos(2 * Math.PI * random());
  const centres = CLASSES.map(() => Array.from({ length: 6 }, () => gauss() * 1.2));
  return Array.from({ length: n }, (_, i) => {
    const c = i % CLASSES.length;
    const v = new Float32Array(32);
    for (let j = 0; j < 6; j++) v[j] = centres[c]![j]! + gauss() * 0.6;
    for (let j = 6; j < 32; j++) v[j] = gauss() * 1.5;
    const norm = Math.hypot(...v);
    return { id: `doc-${i}`, vector: v.map((x) => x / norm), labels: [CLASSES[c]!] };
  });
}

const data = syntheticDataset(700, 11);
const heldOut = data.filter((e) => isHeldOut(e.id, 0.15));
const rest = data.filter((e) => !isHeldOut(e.id, 0.15));

async function evaluateTrained(result: LitTrainingResult) {
  const project = async (items: TrainingExample[]): Promise<LabelledVector[]> => {
    const v = await reprojectBatch(
      result.head,
      items.map((e) => e.vector),
    );
    return items.map((e, i) => ({ id: e.id, vector: v[i]!, labels: e.labels }));
  };
  const textVectors = await embedTextsWithTower(result.text, CLASSES);
  return evaluateModel({
    modelVersion: 'candidate',
    heldOut: await project(heldOut),
    rest: await project(rest),
    labelVectors: new Map(textVectors.map((v, i) => [CLASSES[i]!, v])),
  });
}

describe('LiT trainer on a clustered synthetic dataset', () => {
  let trained: LitTrainingResult;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lit-'));
    trained = await trainLit(rest, [], { ...SMALL, seed: 3, epochs: 25 });
  }, 120_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('beats the base embedding and a random head on held-out Recall@1, and answers text queries', async () => {
    const base = await evaluateModel({ modelVersion: 'base', heldOut, rest });
    const untrained = await evaluateTrained(await trainLit(rest, [], { ...SMALL, seed: 3, epochs: 0 }));
    const candidate = await evaluateTrained(trained);
    expect(candidate.imageToImage['recall@1']).toBeGreaterThan(base.imageToImage['recall@1'] + 0.1);
    expect(candidate.imageToImage['recall@1']).toBeGreaterThan(untrained.imageToImage['recall@1'] + 0.1);
    expect(candidate.textToImage!['precision@10']).toBeGreaterThanOrEqual(0.8);
    expect(trained.history.length).toBeGreaterThan(0);
    expect(trained.history.every((h) => Number.isFinite(h.loss))).toBe(true);
    expect(trained.history.at(-1)!.loss).toBeLessThan(trained.history[0]!.loss);

    // The gate accepts the trained model over the base and refuses the untrained one.
    expect(gateDecision(candidate, base, { margin: 0.02 }).promote).toBe(true);
    expect(gateDecision(untrained, base, { margin: 0.02 }).promote).toBe(false);
  }, 120_000);

  it('is reproducible with a seed', async () => {
    const small = rest.slice(0, 200);
    const tensorsBefore = tf.memory().numTensors;
    const a = await trainLit(small, [], { ...SMALL, seed: 5, epochs: 3, validationFraction: 0 });
    const b = await trainLit(small, [], { ...SMALL, seed: 5, epochs: 3, validationFraction: 0 });
    const c = await trainLit(small, [], { ...SMALL, seed: 6, epochs: 3, validationFraction: 0 });
    expect(Array.from(a.head.w1)).toEqual(Array.from(b.head.w1));
    expect(a.history.map((h) => h.loss)).toEqual(b.history.map((h) => h.loss));
    expect(Array.from(a.head.w1)).not.toEqual(Array.from(c.head.w1));
    expect(tf.memory().numTensors).toBe(tensorsBefore); // no tensor leaks across runs
  }, 60_000);

  it('gate refuses a model trained on shuffled labels', async () => {
    const random = mulberry32(9);
    const shuffled = rest.map((e) => ({ ...e, labels: [CLASSES[Math.floor(random() * CLASSES.length)]!] }));
    const poor = await evaluateTrained(await trainLit(shuffled, [], { ...SMALL, seed: 3, epochs: 10 }));
    const good = await evaluateTrained(trained);
    expect(gateDecision(poor, good, { margin: 0.01 }).promote).toBe(false);
    expect(gateDecision(good, poor, { margin: 0.01 }).promote).toBe(true);
  }, 120_000);

  it('exports head and text tower to ONNX that onnxruntime runs like tfjs (max abs diff ≤ 1e-4)', async () => {
    await writeFile(join(dir, 'head.onnx'), headToOnnx(trained.head));
    await writeFile(join(dir, 'text.onnx'), textTowerToOnnx(trained.text));
    const inputs = heldOut.slice(0, 40).map((e) => e.vector);
    const reference = await reprojectBatch(trained.head, inputs);
    const session = await ort.InferenceSession.create(join(dir, 'head.onnx'));
    const flat = new Float32Array(inputs.length * 32);
    inputs.forEach((v, i) => flat.set(v, i * 32));
    const out = (await session.run({ base: new ort.Tensor('float32', flat, [inputs.length, 32]) })).embedding!.data as Float32Array;
    let maxDiff = 0;
    reference.forEach((v, i) => v.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - out[i * 16 + j]!)))));
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
    await session.release();

    // Through the shared tower loaders, as the embedder uses them.
    const manifest = {
      name: 'synthetic',
      version: 'synthetic-lit-1',
      image: {
        file: 'image.onnx',
        inputName: 'x',
        outputName: 'y',
        width: 4,
        height: 4,
        layout: 'NHWC',
        scale: 1,
        mean: [0, 0, 0],
        std: [1, 1, 1],
        resize: 'fill',
        dimension: 32,
      },
      head: { file: 'head.onnx', inputDimension: 32, outputDimension: 16 },
      text: { kind: 'hashed-ngram', file: 'text.onnx', buckets: 1024, dimension: 16 },
      dimension: 16,
      normalize: true,
    } satisfies ModelManifest;
    const head = (await loadHead(manifest, dir))!;
    const viaLoader = await head.apply(inputs);
    expect(Math.max(...viaLoader.flatMap((v, i) => Array.from(v, (x, j) => Math.abs(x - reference[i]![j]!))))).toBeLessThanOrEqual(1e-4);
    await head.close();
    const tower = (await loadTextTower(manifest, dir))!;
    const texts = [...CLASSES, 'a red dress for summer'];
    const onnxText = await tower.embed(texts);
    const tfText = await embedTextsWithTower(trained.text, texts);
    expect(Math.max(...onnxText.flatMap((v, i) => Array.from(v, (x, j) => Math.abs(x - tfText[i]![j]!))))).toBeLessThanOrEqual(1e-4);
    await expect(tower.embed(['!!!'])).rejects.toThrow(/no letters or digits/);
    await tower.close();
  }, 60_000);

  it('uses feedback pairs and rejects bad input', async () => {
    const feedback = [
      { kind: 'text' as const, query: 'crimson gown', openedId: rest[0]!.id },
      { kind: 'image' as const, queryId: rest[1]!.id, openedId: rest[6]!.id },
      { kind: 'image' as const, queryId: 'unknown', openedId: rest[2]!.id },
    ];
    const withFeedback = await trainLit(rest.slice(0, 150), feedback, { ...SMALL, seed: 1, epochs: 2 });
    expect(withFeedback.history).toHaveLength(2);
    await expect(trainLit([rest[0]!], [], SMALL)).rejects.toThrow(ParseError);
    await expect(trainLit([rest[0]!, { ...rest[1]!, vector: new Float32Array(3) }], [], SMALL)).rejects.toThrow(/dimension 3/);
    await expect(
      trainLit(
        rest.slice(0, 5).map((e) => ({ ...e, labels: [] })),
        [],
        SMALL,
      ),
    ).rejects.toThrow(/nothing to learn/);
    await expect(trainLit(rest, [], { epochs: -1 })).rejects.toThrow(/training options/);
    expect(new HashedNgramFeaturizer({ buckets: 1024 }).buckets).toBe(trained.text.buckets);
  }, 60_000);
});

/**
 * Does retraining (LiT head + hashed-n-gram text tower) measurably improve search? On Fashion-MNIST
 * train images (N ingested, 10% held out by id hash), image→image Recall@1 of raw pixels, the base
 * embedding and the trained head, plus text→image precision@10 over the 10 class names and the
 * training time.
 *
 *   node --import tsx bench/retrain-experiment.ts --n 6000 [--features base|pixels] [--epochs 30]
 *
 * Base embeddings (and the fp16 block activations ingest stores) are computed once with the
 * default ONNX model and cached under /tmp. `--unlock N` fine-tunes the image tower's top N units
 * with the head from those activations (`imgsearch retrain --unlock-blocks N`), then recomputes
 * every base vector with the tuned blocks before evaluating; `--store-size` writes the records to a
 * LanceDB feature store with and without activations and reports the bytes on disk.
 * Figures: BENCHMARKS.md, "Fine-tuning the top blocks".
 *
 * Measured (2 shared cores, load average ≈ 10–15 from other jobs, tfjs wasm backend, seed 7,
 * 10% held out by id hash, queries = held-out images vs the rest; Recall@1 same label):
 *   6k,  base = default model (block_12_add + out_relu + 8×8 thumbnail, D=2160), H=512, E=128:
 *        raw pixels 0.820 · base 0.852 · LiT head 0.886 (mAP@10 0.705 / 0.733 / 0.868);
 *        text→image precision@10 over the 10 class names 0.99; training 330 s (13 epochs,
 *        early-stopped, best 8); embedding the 6k images 508 s.
 *   6k,  base = later default (block_15_add + out_relu + 8×8 RGB thumbnail, D=1632):
 *        base 0.838 → LiT head 0.857 (τ=0.1, 74 s) / 0.852 (τ=0.05); text precision@10 0.97–0.98.
 *        The block_12_add + grey-thumbnail base trains to a better head (0.886 vs 0.857, ~2 s.e.).
 *   60k, features = raw pixels (base embeddings of 60k would take ~85 min to compute here),
 *        H=256, 6 epochs (still improving: val 0.886 at epoch 6): raw pixels 0.854 → LiT head
 *        0.884 (mAP@10 0.770 → 0.839); text precision@10 0.99; training 510 s under load.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readFashionMnist, fashionMnistPng } from '../shared/datasets/fashion-mnist.js';
import { evaluateModel, isHeldOut, type LabelledVector } from '../shared/evaluation/evaluate.js';
import { trainLit, type LitTrainOptions } from '../shared/training/lit-trainer.js';
import { embedTextsWithTower, reprojectBatch } from '../shared/training/lit-inference.js';
import { l2NormaliseInPlace } from '../shared/vector-math.js';

const { values: args } = parseArgs({
  options: {
    n: { type: 'string', default: '6000' },
    features: { type: 'string', default: 'base' },
    epochs: { type: 'string', default: '30' },
    hidden: { type: 'string', default: '512' },
    cache: { type: 'string', default: '/tmp/lit-bench' },
    'image-text-weight': { type: 'string', default: '1' },
    'image-image-weight': { type: 'string', default: '1' },
    temperature: { type: 'string', default: '0.1' },
    lr: { type: 'string', default: '0.001' },
    batch: { type: 'string', default: '256' },
    /** Partial fine-tuning: train the top N units of the image tower with the head (needs --features base). */
    unlock: { type: 'string', default: '0' },
    'tower-lr': { type: 'string', default: '0.0001' },
    /** Also write the records to a LanceDB feature store with and without activations and report its size. */
    'store-size': { type: 'boolean', default: false },
  },
});
const n = Number(args.n);
const cacheDir = args.cache!;

/** Base embeddings and the fp16 block activations (what ingest stores), computed once and cached. */
async function baseFeatures(images: Uint8Array[]): Promise<{ base: Float32Array[]; activations: Uint16Array[] }> {
  const { ensureDefaultModel } = await import('../shared/model/default-model.js');
  const { loadEmbedder } = await import('../shared/model/load-embedder.js');
  const { dir, manifest } = await ensureDefaultModel(join(cacheDir, 'models'));
  const file = join(cacheDir, `base-${manifest.version}-${dir.split('-').pop()}-${images.length}.f32`);
  const actFile = join(cacheDir, `activation-${manifest.version}-${dir.split('-').pop()}-${images.length}.f16`);
  const dim = manifest.image.dimension;
  const [h, w, c] = manifest.image.activation?.shape ?? [0, 0, 0];
  const size = h * w * c;
  if (existsSync(file) && existsSync(actFile)) {
    const buf = await readFile(file);
    const all = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
    const abuf = await readFile(actFile);
    const acts = new Uint16Array(abuf.buffer, abuf.byteOffset, abuf.byteLength / 2);
    return { base: images.map((_, i) => all.slice(i * dim, (i + 1) * dim)), activations: images.map((_, i) => acts.slice(i * size, (i + 1) * size)) };
  }
  const embedder = await loadEmbedder(dir, { maxPixels: 1e8, threads: 2 });
  const out: Float32Array[] = [];
  const activations: Uint16Array[] = [];
  const t0 = performance.now();
  for (let s = 0; s < images.length; s += 64) {
    const prepared = await Promise.all(images.slice(s, s + 64).map(async (img) => embedder.prepare(await fashionMnistPng(img))));
    const embedded = await embedder.embedDecoded(prepared);
    out.push(...embedded.base);
    activations.push(...(embedded.activations ?? []));
    if (s % 1024 === 0) console.error(`embedded ${s + prepared.length}/${images.length} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  }
  await embedder.close();
  const all = new Float32Array(images.length * dim);
  out.forEach((v, i) => all.set(v, i * dim));
  await writeFile(file, Buffer.from(all.buffer));
  const acts = new Uint16Array(images.length * size);
  activations.forEach((v, i) => acts.set(v, i * size));
  await writeFile(actFile, Buffer.from(acts.buffer));
  return { base: out, activations };
}

/** On-disk bytes of a folder (recursive). */
async function folderBytes(dir: string): Promise<number> {
  const { readdir, stat } = await import('node:fs/promises');
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

/** Feature-store size of these records in a LanceDB feature store, with and without the activations. */
async function storeSizes(ids: string[], base: Float32Array[], activations: Uint16Array[]): Promise<{ withActivation: number; baseOnly: number }> {
  const { LanceDbFeatureStore } = await import('../shared/adapters/local/lancedb-feature-store.js');
  const { rm } = await import('node:fs/promises');
  const sizes: number[] = [];
  for (const withActivation of [true, false]) {
    const dir = join(cacheDir, `store-${withActivation ? 'act' : 'base'}`);
    await rm(dir, { recursive: true, force: true });
    const store = await LanceDbFeatureStore.open(dir);
    for (let s = 0; s < ids.length; s += 1000) {
      await store.put(
        ids.slice(s, s + 1000).map((id, j) => ({
          id,
          uri: `file:///train/${id}.png`,
          generation: '1',
          baseModel: 'bench',
          vector: base[s + j]!,
          labels: [],
          ...(withActivation ? { activation: activations[s + j]! } : {}),
        })),
      );
    }
    await store.close();
    sizes.push(await folderBytes(dir));
    await rm(dir, { recursive: true, force: true });
  }
  return { withActivation: sizes[0]!, baseOnly: sizes[1]! };
}

async function main(): Promise<void> {
  await mkdir(cacheDir, { recursive: true });
  const data = await readFashionMnist({ split: 'train', limit: n });
  const ids = data.images.map((_, i) => `fashion-train-${i}`);
  const labels = data.labels.map((l) => [data.classNames[l]!]);
  const heldOut = ids.map((id) => isHeldOut(id, 0.1));
  const pixels = data.images.map((img) => l2NormaliseInPlace(Float32Array.from(img, (v) => v / 255)));
  const split = (vectors: Float32Array[]) => {
    const items: LabelledVector[] = ids.map((id, i) => ({ id, vector: vectors[i]!, labels: labels[i]! }));
    return { heldOut: items.filter((_, i) => heldOut[i]), rest: items.filter((_, i) => !heldOut[i]) };
  };
  const report: Record<string, unknown> = { n, heldOut: heldOut.filter(Boolean).length };
  const pixelEval = await evaluateModel({ modelVersion: 'raw-pixels', ...split(pixels) });
  report.pixels = pixelEval.imageToImage;
  console.error('pixels', pixelEval.imageToImage);

  let features = pixels;
  let activations: Uint16Array[] = [];
  if (args.features === 'base') {
    const t0 = performance.now();
    ({ base: features, activations } = await baseFeatures(data.images));
    if (args['store-size']) report.featureStoreBytes = await storeSizes(ids, features, activations);
    report.baseEmbedSeconds = (performance.now() - t0) / 1000;
    report.baseDimension = features[0]!.length;
    const baseEval = await evaluateModel({ modelVersion: 'base', ...split(features) });
    report.base = baseEval.imageToImage;
    console.error('base', baseEval.imageToImage);
  }

  const options: LitTrainOptions = {
    seed: 7,
    epochs: Number(args.epochs),
    hidden: Number(args.hidden),
    imageTextWeight: Number(args['image-text-weight']),
    imageImageWeight: Number(args['image-image-weight']),
    temperature: Number(args.temperature),
    learningRate: Number(args.lr),
    batchSize: Number(args.batch),
    unlockBlocks: Number(args.unlock),
    towerLearningRate: Number(args['tower-lr']),
  };
  const unlock = Number(args.unlock);
  if (unlock > 0 && args.features !== 'base') throw new Error('--unlock needs --features base (the blocks read the stored activations)');
  const { DEFAULT_ACTIVATION, DEFAULT_FEATURE_LAYERS } = await import('../shared/model/default-model.js');
  const { loadNsfwjsMobilenetV2 } = await import('../shared/model/nsfwjs-mobilenet.js');
  const { TowerBlocks, towerEmbeddings } = await import('../shared/training/tower-blocks.js');
  const { fromFloat16Bits } = await import('../shared/model/float16.js');
  const { initTf } = await import('../shared/training/tf-backend.js');
  await initTf();
  const tower =
    unlock > 0
      ? new TowerBlocks(loadNsfwjsMobilenetV2(), {
          activation: { layer: DEFAULT_ACTIVATION.layer, shape: [7, 7, 160] },
          features: DEFAULT_FEATURE_LAYERS,
          unlock,
        })
      : undefined;
  const training = ids
    .map((id, i) => ({ id, vector: features[i]!, labels: labels[i]!, ...(tower ? { activation: activations[i]! } : {}) }))
    .filter((_, i) => !heldOut[i]);
  const result = await trainLit(training, [], options, {
    tower,
    onEpoch: (s) =>
      console.error(
        `epoch ${s.epoch} loss ${s.loss.toFixed(4)} (ii ${s.imageImageLoss.toFixed(3)} it ${s.imageTextLoss.toFixed(3)}) val R@1 ${s.validationRecallAt1?.toFixed(3)} ${s.seconds.toFixed(1)} s`,
      ),
  });
  // A tuned tower changes the base vectors: recompute them from the activations (as retrain does).
  const t1 = performance.now();
  const tunedBase = tower
    ? await towerEmbeddings(
        tower,
        activations.map((a, i) => ({ activation: (out: Float32Array, offset: number) => fromFloat16Bits(a, out, offset), base: features[i]! })),
      )
    : features;
  if (tower) report.tunedBaseSeconds = (performance.now() - t1) / 1000;
  const projected = await reprojectBatch(result.head, tunedBase);
  const labelVectors = new Map((await embedTextsWithTower(result.text, data.classNames)).map((v, i) => [data.classNames[i]!, v]));
  const headEval = await evaluateModel({ modelVersion: 'lit-head', ...split(projected), labelVectors });
  report.head = headEval.imageToImage;
  report.textToImage = headEval.textToImage;
  report.training = {
    seconds: result.seconds,
    bestEpoch: result.bestEpoch,
    epochsRun: result.history.length,
    backend: result.backend,
    options,
    ...(result.tower ? { tower: result.tower } : {}),
  };
  console.log(JSON.stringify(report, null, 2));
}

await main();

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { LocalModelRegistry } from '../shared/adapters/local/local-model-registry.js';
import { fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import { evaluateImageToImage } from '../shared/evaluation/evaluate.js';
import { ensureDefaultModel } from '../shared/model/default-model.js';
import { loadEmbedder } from '../shared/model/load-embedder.js';
import { registerInt8Variant } from '../shared/services/model-variants.js';
import { dot } from '../shared/vector-math.js';
import { benchImages, benchVectors, nearDuplicatesFirst } from './fashion-embeddings.js';

/**
 * int8 vs float32 image tower, same process, same batch, same threads, same session options as
 * the product (load-embedder.ts): bare inference images/s and CPU per image (rounds alternate
 * between the two models so a busy neighbour hurts both alike), where the time goes per operator
 * (onnxruntime's profiler), and parity: Fashion-MNIST Recall@1 (every test image queried against
 * the others), mean cosine, and near-duplicate photographs found first.
 */
const CALIBRATION_PHOTOS = '/usr/share/backgrounds/mate/abstract';

export interface SpeedFigures {
  imagesPerSecond: number;
  cpuMsPerImage: number;
}

export interface Int8BenchResult {
  batch: number;
  threads: number;
  fp32: SpeedFigures;
  int8: SpeedFigures;
  speedup: number;
  cpuRatio: number;
  /** ms per image by operator type, from onnxruntime's profiler. */
  opsFp32: Record<string, number>;
  opsInt8: Record<string, number>;
  calibrationImages: number;
  fashionImages: number;
  recallAt1: { fp32: number; int8: number };
  meanCosine: { fashion: number; photos: number };
  nearDuplicates: { photos: number; fp32: number; int8: number };
  bytes: { fp32: number; int8: number };
}

function sessionOptions(threads: number, profile?: string): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    ...(profile ? { enableProfiling: true, profileFilePrefix: profile } : {}),
  };
}

async function opProfile(
  model: Uint8Array,
  input: ort.Tensor,
  inputName: string,
  threads: number,
  prefix: string,
  images: number,
): Promise<Record<string, number>> {
  const session = await ort.InferenceSession.create(model, sessionOptions(threads, prefix));
  for (let i = 0; i < 3; i++) await session.run({ [inputName]: input });
  session.endProfiling();
  await session.release();
  const dir = path.dirname(prefix);
  const file = (await readdir(dir))
    .filter((f) => f.startsWith(path.basename(prefix)) && f.endsWith('.json'))
    .sort()
    .pop()!;
  const events = JSON.parse(await readFile(path.join(dir, file), 'utf8')) as Array<{ cat: string; name: string; dur: number; args?: { op_name?: string } }>;
  const byOp: Record<string, number> = {};
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    byOp[e.args.op_name] = (byOp[e.args.op_name] ?? 0) + e.dur / 1000 / (3 * images);
  }
  return byOp;
}

export async function benchInt8(work: string, options: { fashion: number; batch: number; threads: number; rounds?: number }): Promise<Int8BenchResult> {
  const { dir, manifest } = await ensureDefaultModel(path.join(work, 'int8-cache'));
  const registry = new LocalModelRegistry(path.join(work, 'int8-registry'));
  await registry.register({
    version: manifest.version,
    parent: null,
    manifest,
    files: { [manifest.image.file]: await readFile(path.join(dir, manifest.image.file)) },
  });
  // Calibration: Fashion-MNIST train images (disjoint from the test images measured) + wallpapers
  // that are not the photographs measured.
  const calibrationFashion = await readFashionMnist({ split: 'train', limit: 128, offset: 50_000 });
  const wallpapers = (await readdir(CALIBRATION_PHOTOS)).filter((f) => /\.(jpg|png)$/.test(f));
  const images = [
    ...calibrationFashion.images.map((im, i) => ({ name: `fm-${i}`, read: () => fashionMnistPng(im) })),
    ...wallpapers.map((f) => ({ name: f, read: () => readFile(path.join(CALIBRATION_PHOTOS, f)) })),
  ];
  const variant = await registerInt8Variant(
    { registry },
    { from: manifest.version, images, calibrationCount: images.length, maxPixels: 50_000_000, threads: options.threads },
  );
  const fp32Bytes = await readFile(path.join(await registry.localPath(manifest.version), 'image.onnx'));
  const int8Bytes = await readFile(path.join(await registry.localPath(variant.version), 'image.onnx'));

  const fp32 = await loadEmbedder(await registry.localPath(manifest.version), { maxPixels: 50_000_000, threads: options.threads, inferenceThread: 'main' });
  const int8 = await loadEmbedder(await registry.localPath(variant.version), { maxPixels: 50_000_000, threads: options.threads, inferenceThread: 'main' });
  try {
    const bench = await benchImages(fp32, options.fashion);
    // Bare inference: one batch of real prepared images (Fashion-MNIST and photographs mixed).
    const sample = [...bench.photos, ...bench.fashion].slice(0, options.batch);
    const size = manifest.image.width * manifest.image.height * 3;
    const data = new Uint8Array(sample.length * size);
    sample.forEach((p, i) => data.set(p.pixels as Uint8Array, i * size));
    const input = new ort.Tensor('uint8', data, [sample.length, manifest.image.height, manifest.image.width, 3]);
    const sessions = {
      fp32: await ort.InferenceSession.create(fp32Bytes, sessionOptions(options.threads)),
      int8: await ort.InferenceSession.create(int8Bytes, sessionOptions(options.threads)),
    };
    const rounds: Record<'fp32' | 'int8', { ips: number; cpu: number }[]> = { fp32: [], int8: [] };
    for (const s of Object.values(sessions)) await s.run({ [manifest.image.inputName]: input }); // warm-up
    for (let r = 0; r < (options.rounds ?? 5); r++) {
      for (const name of ['fp32', 'int8'] as const) {
        const runs = 3;
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < runs; i++) await sessions[name].run({ [manifest.image.inputName]: input });
        const seconds = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        rounds[name].push({ ips: (runs * sample.length) / seconds, cpu: (cpu.user + cpu.system) / 1000 / (runs * sample.length) });
      }
    }
    await Promise.all(Object.values(sessions).map((s) => s.release()));
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const speed = (name: 'fp32' | 'int8'): SpeedFigures => ({
      imagesPerSecond: median(rounds[name].map((x) => x.ips)),
      cpuMsPerImage: median(rounds[name].map((x) => x.cpu)),
    });
    const opsFp32 = await opProfile(fp32Bytes, input, manifest.image.inputName, options.threads, path.join(work, 'profile-fp32'), sample.length);
    const opsInt8 = await opProfile(int8Bytes, input, manifest.image.inputName, options.threads, path.join(work, 'profile-int8'), sample.length);

    const [a, b] = [await benchVectors(fp32, bench), await benchVectors(int8, bench)];
    const recall = async (v: Float32Array[]) => {
      const labelled = v.map((vector, i) => ({ id: `fm-${i}`, vector, labels: [bench.labels[i]!] }));
      return (await evaluateImageToImage(labelled, labelled)).metrics['recall@1'];
    };
    const meanCosine = (x: Float32Array[], y: Float32Array[]) => x.reduce((s, v, i) => s + dot(v, y[i]!), 0) / x.length;
    const f = speed('fp32');
    const q = speed('int8');
    return {
      batch: sample.length,
      threads: options.threads,
      fp32: f,
      int8: q,
      speedup: q.imagesPerSecond / f.imagesPerSecond,
      cpuRatio: f.cpuMsPerImage / q.cpuMsPerImage,
      opsFp32,
      opsInt8,
      calibrationImages: variant.calibration.images,
      fashionImages: bench.fashion.length,
      recallAt1: { fp32: await recall(a.fashion), int8: await recall(b.fashion) },
      meanCosine: { fashion: meanCosine(a.fashion, b.fashion), photos: meanCosine([...a.photos, ...a.altered], [...b.photos, ...b.altered]) },
      nearDuplicates: { photos: bench.altered.length, fp32: nearDuplicatesFirst(a, dot), int8: nearDuplicatesFirst(b, dot) },
      bytes: { fp32: fp32Bytes.length, int8: int8Bytes.length },
    };
  } finally {
    await fp32.close();
    await int8.close();
  }
}

export function formatInt8(r: Int8BenchResult): string[] {
  const top = (ops: Record<string, number>) =>
    Object.entries(ops)
      .sort((x, y) => y[1] - x[1])
      .slice(0, 6)
      .map(([op, ms]) => `${op} ${ms.toFixed(2)}`)
      .join(', ');
  const total = (ops: Record<string, number>) => Object.values(ops).reduce((s, x) => s + x, 0);
  return [
    `  bare inference, batch ${r.batch}, ${r.threads} threads (median of alternating rounds):`,
    `    float32: ${r.fp32.imagesPerSecond.toFixed(1)} images/s, CPU ${r.fp32.cpuMsPerImage.toFixed(2)} ms/image`,
    `    int8:    ${r.int8.imagesPerSecond.toFixed(1)} images/s, CPU ${r.int8.cpuMsPerImage.toFixed(2)} ms/image`,
    `    speed-up ${r.speedup.toFixed(2)}× images/s, ${r.cpuRatio.toFixed(2)}× less CPU per image (target ≥ 1.8×)`,
    `  kernel time by operator, ms per image (onnxruntime profiler):`,
    `    float32 (${total(r.opsFp32).toFixed(2)}): ${top(r.opsFp32)}`,
    `    int8    (${total(r.opsInt8).toFixed(2)}): ${top(r.opsInt8)}`,
    `  parity (calibrated on ${r.calibrationImages} images; measured on ${r.fashionImages} Fashion-MNIST test images, each queried against the others):`,
    `    Recall@1 float32 ${r.recallAt1.fp32.toFixed(4)}, int8 ${r.recallAt1.int8.toFixed(4)} (Δ ${(r.recallAt1.int8 - r.recallAt1.fp32).toFixed(4)})`,
    `    mean cosine int8·float32: Fashion-MNIST ${r.meanCosine.fashion.toFixed(4)}, photographs ${r.meanCosine.photos.toFixed(4)}`,
    `    altered photographs finding their original first: float32 ${r.nearDuplicates.fp32}/${r.nearDuplicates.photos}, int8 ${r.nearDuplicates.int8}/${r.nearDuplicates.photos}`,
    `    model file: ${(r.bytes.fp32 / 1e6).toFixed(1)} MB → ${(r.bytes.int8 / 1e6).toFixed(1)} MB`,
  ];
}

/**
 * Chooses the default model's base embedding by measurement.
 *
 *   node --import tsx bench/select-feature-layer.ts [--large 5000] [--batch 32]
 *
 * Candidates: pooled MobileNetV2 layers (block_12_add … out_relu), a "thumbnail" of the input
 * itself (average-pooled pixels, grey or colour, optionally centred) and weighted concatenations.
 * Criteria, both must hold:
 *  (a) near-duplicates: 200 Fashion-MNIST images + the Debian mate nature photographs indexed;
 *      queries = each Fashion image upscaled ×1.5–×2 and re-encoded JPEG q90, and each photograph
 *      centre-cropped 90%, resized ×0.5–×2 and re-encoded JPEG q70–90; the original must be top-1
 *      (Fashion ≥ 95%, photos 100%);
 *  (b) same-class top-1 on Fashion-MNIST (1k images, 100 queries; and 5k, 500 queries), cosine,
 *      the query itself excluded.
 * Features are computed once per image (one ONNX run with one output per layer); combinations are
 * formed here exactly as the converter's graph forms them, and the chosen one is re-checked with
 * the real converted default model at the end.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import { DEFAULT_FEATURE_LAYERS, DEFAULT_IMAGE_TOWER, DEFAULT_THUMBNAIL, describeLayers } from '../shared/model/default-model.js';
import { prepareImage } from '../shared/model/image-preprocessor.js';
import { kerasToOnnx, separateOutputName, type FeatureLayer, type ThumbnailBranch } from '../shared/model/keras-to-onnx.js';
import { loadNsfwjsMobilenetV2 } from '../shared/model/nsfwjs-mobilenet.js';
import { dot, l2NormaliseInPlace, mean } from '../shared/vector-math.js';

const { values: args } = parseArgs({
  options: {
    large: { type: 'string', default: '5000' },
    batch: { type: 'string', default: '32' },
    photos: { type: 'string', default: '/usr/share/backgrounds/mate/nature' },
  },
});
const LARGE = Number(args.large);
const BATCH = Number(args.batch);
const LAYERS = ['block_12_add', 'block_13_project_BN', 'block_14_add', 'block_15_add', 'block_16_project_BN', 'out_relu'];
const THUMBS: Array<Omit<ThumbnailBranch, 'weight'>> = [
  { size: 8, colour: 'grey', centre: true },
  { size: 8, colour: 'grey', centre: false },
  { size: 16, colour: 'grey', centre: true },
  { size: 28, colour: 'grey', centre: true },
  { size: 28, colour: 'grey', centre: false },
  { size: 8, colour: 'rgb', centre: true },
];
const thumbKey = (t: Omit<ThumbnailBranch, 'weight'>) => `thumb${t.size}${t.colour === 'grey' ? 'g' : 'c'}${t.centre ? 'c' : ''}`;
const tower = { ...DEFAULT_IMAGE_TOWER, inputType: 'float32' as const, dimension: 1 };
const LIMITS = { maxPixels: 100_000_000 };

type Features = Map<string, Float32Array>; // branch key → L2-normalised vector

const converted = kerasToOnnx(loadNsfwjsMobilenetV2(), { features: LAYERS.map((layer) => ({ layer })), separateOutputs: true });
const session = await ort.InferenceSession.create(converted.bytes, { intraOpNumThreads: 2 });

async function featuresOf(files: Buffer[]): Promise<Features[]> {
  const out: Features[] = [];
  for (let start = 0; start < files.length; start += BATCH) {
    const batch = await Promise.all(files.slice(start, start + BATCH).map((f) => prepareImage(f, tower, LIMITS)));
    const input = new Float32Array(batch.length * 224 * 224 * 3);
    batch.forEach((p, i) => input.set(p.pixels, i * p.pixels.length));
    const result = await session.run({ pixels: new ort.Tensor('float32', input, [batch.length, 224, 224, 3]) });
    batch.forEach((p, i) => {
      const f: Features = new Map();
      for (const layer of LAYERS) {
        const t = result[separateOutputName(layer)]!;
        const d = t.dims[1] as number;
        f.set(layer, (t.data as Float32Array).slice(i * d, (i + 1) * d));
      }
      for (const th of THUMBS) f.set(thumbKey(th), thumbnail(p.pixels as Float32Array, th));
      out.push(f);
    });
  }
  return out;
}

/** Same as the converter's thumbnail branch: average-pool, grey = channel mean, centre, normalise. */
function thumbnail(nhwc: Float32Array, t: Omit<ThumbnailBranch, 'weight'>): Float32Array {
  const k = 224 / t.size;
  const channels = t.colour === 'grey' ? 1 : 3;
  const v = new Float32Array(t.size * t.size * channels);
  for (let y = 0; y < 224; y++) {
    for (let x = 0; x < 224; x++) {
      const cell = Math.floor(y / k) * t.size + Math.floor(x / k);
      for (let c = 0; c < 3; c++) {
        const value = nhwc[(y * 224 + x) * 3 + c]!;
        // NCHW flatten order in the graph: channel-major.
        if (channels === 1) v[cell] += value / 3;
        else v[c * t.size * t.size + cell] += value;
      }
    }
  }
  for (let i = 0; i < v.length; i++) v[i] /= k * k;
  if (t.centre) {
    const centre = mean(v);
    for (let i = 0; i < v.length; i++) v[i] -= centre;
  }
  return l2NormaliseInPlace(v);
}

interface Candidate {
  name: string;
  parts: Array<{ key: string; weight: number }>;
}

/**
 * Cosine scores of every query against every index entry, per branch. A combination's score is
 * then Σ w²·s_branch / (‖q‖·‖x‖) with ‖v‖² = Σ w²·‖v_branch‖² (branches are unit vectors, or zero),
 * which equals the cosine of the concatenated vectors the ONNX graph builds: every candidate is
 * scored without recomputing dot products.
 */
interface Similarities {
  queries: number;
  entries: number;
  sims: Map<string, Float32Array>; // queries × entries
  queryNorms: Map<string, Float32Array>;
  entryNorms: Map<string, Float32Array>;
}

function similarities(queries: Features[], index: Features[], keys: string[]): Similarities {
  const sims = new Map<string, Float32Array>();
  const queryNorms = new Map<string, Float32Array>();
  const entryNorms = new Map<string, Float32Array>();
  for (const key of keys) {
    const m = new Float32Array(queries.length * index.length);
    queries.forEach((q, i) => {
      const qv = q.get(key)!;
      index.forEach((x, j) => (m[i * index.length + j] = dot(qv, x.get(key)!)));
    });
    sims.set(key, m);
    queryNorms.set(
      key,
      Float32Array.from(queries, (q) => dot(q.get(key)!, q.get(key)!)),
    );
    entryNorms.set(
      key,
      Float32Array.from(index, (x) => dot(x.get(key)!, x.get(key)!)),
    );
  }
  return { queries: queries.length, entries: index.length, sims, queryNorms, entryNorms };
}

/** Top-1 index entry per query for a weighted combination (exclude(q) = entry to skip, or -1). */
function top1s(s: Similarities, c: Candidate, exclude: (q: number) => number = () => -1): number[] {
  const w2 = c.parts.map((p) => p.weight * p.weight);
  const entryNorm = new Float32Array(s.entries);
  c.parts.forEach((p, k) => s.entryNorms.get(p.key)!.forEach((n, j) => (entryNorm[j] += w2[k]! * n)));
  const out: number[] = [];
  for (let q = 0; q < s.queries; q++) {
    let best = -1;
    let bestScore = -Infinity;
    for (let j = 0; j < s.entries; j++) {
      if (j === exclude(q)) continue;
      let score = 0;
      c.parts.forEach((p, k) => (score += w2[k]! * s.sims.get(p.key)![q * s.entries + j]!));
      score /= Math.sqrt(Math.max(entryNorm[j]!, 1e-24));
      if (score > bestScore) {
        bestScore = score;
        best = j;
      }
    }
    out.push(best);
  }
  return out;
}

// ---- data -----------------------------------------------------------------------------------
const t0 = Date.now();
const fashion = await readFashionMnist({ split: 'train', limit: LARGE });
const fashionPngs = await Promise.all(fashion.images.map((img) => fashionMnistPng(img)));
const NEAR = 200;
const scales = [1.5, 1.75, 2];
const nearQueries = await Promise.all(
  fashionPngs.slice(0, NEAR).map((png, i) => {
    const side = Math.round(28 * scales[i % scales.length]!);
    return sharp(png).resize(side, side).jpeg({ quality: 90 }).toBuffer();
  }),
);
const photoNames = (await readdir(args.photos!)).filter((n) => /\.jpe?g$/i.test(n)).sort();
const photos = await Promise.all(photoNames.map((n) => readFile(join(args.photos!, n))));
const photoVariants = [
  { factor: 0.5, quality: 70 },
  { factor: 1.25, quality: 80 },
  { factor: 2, quality: 90 },
];
const photoQueries: Array<{ of: number; file: Buffer }> = [];
for (const [i, photo] of photos.entries()) {
  const meta = await sharp(photo).metadata();
  const [w, h] = [meta.width!, meta.height!];
  const [cw, ch] = [Math.round(w * 0.9), Math.round(h * 0.9)];
  for (const v of photoVariants) {
    const file = await sharp(photo)
      .extract({ left: Math.floor((w - cw) / 2), top: Math.floor((h - ch) / 2), width: cw, height: ch })
      .resize(Math.round(cw * v.factor), Math.round(ch * v.factor))
      .jpeg({ quality: v.quality })
      .toBuffer();
    photoQueries.push({ of: i, file });
  }
}
console.log(`data ready in ${Date.now() - t0} ms: ${fashionPngs.length} Fashion-MNIST, ${photos.length} photos, ${photoQueries.length} photo queries`);

const t1 = Date.now();
const fashionF = await featuresOf(fashionPngs);
const nearF = await featuresOf(nearQueries);
const photoF = await featuresOf(photos);
const photoQF = await featuresOf(photoQueries.map((q) => q.file));
const images = fashionPngs.length + nearQueries.length + photos.length + photoQueries.length;
console.log(`features of ${images} images in ${Date.now() - t1} ms (${((Date.now() - t1) / images).toFixed(1)} ms/image incl. decode)`);

// ---- candidates -------------------------------------------------------------------------------
const candidates: Candidate[] = [];
for (const layer of LAYERS) candidates.push({ name: layer, parts: [{ key: layer, weight: 1 }] });
for (const th of THUMBS) candidates.push({ name: thumbKey(th), parts: [{ key: thumbKey(th), weight: 1 }] });
const mids = ['block_12_add', 'block_14_add', 'block_15_add'];
for (const mid of mids)
  candidates.push({
    name: `${mid}+out_relu`,
    parts: [
      { key: mid, weight: 1 },
      { key: 'out_relu', weight: 1 },
    ],
  });
for (const mid of mids) {
  for (const th of THUMBS) {
    for (const w of [0.5, 1, 1.5, 2]) {
      candidates.push({
        name: `${mid}+out_relu+${thumbKey(th)}×${w}`,
        parts: [
          { key: mid, weight: 1 },
          { key: 'out_relu', weight: 1 },
          { key: thumbKey(th), weight: w },
        ],
      });
    }
  }
}
for (const th of THUMBS.slice(0, 2)) {
  for (const w of [1, 2])
    candidates.push({
      name: `out_relu+${thumbKey(th)}×${w}`,
      parts: [
        { key: 'out_relu', weight: 1 },
        { key: thumbKey(th), weight: w },
      ],
    });
}

interface Score {
  name: string;
  fashionNear: number;
  photoNear: number;
  class1k: number;
  class5k: number;
}

const t2 = Date.now();
const keys = [...LAYERS, ...THUMBS.map(thumbKey)];
const nearIndex = [...fashionF.slice(0, NEAR), ...photoF];
const nearSims = similarities(nearF, nearIndex, keys);
const photoSims = similarities(photoQF, nearIndex, keys);
const class1kSims = similarities(fashionF.slice(0, 100), fashionF.slice(0, 1000), keys);
const class5kSims = fashionF.length >= 5000 ? similarities(fashionF.slice(0, 500), fashionF.slice(0, 5000), keys) : undefined;
console.log(`similarities in ${Date.now() - t2} ms`);

function evaluate(c: Candidate, sets = { nearSims, photoSims, class1kSims, class5kSims }, labels = fashion.labels): Omit<Score, 'name'> {
  const near = top1s(sets.nearSims, c).filter((hit, q) => hit === q).length / sets.nearSims.queries;
  const photo = top1s(sets.photoSims, c).filter((hit, q) => hit === NEAR + photoQueries[q]!.of).length / sets.photoSims.queries;
  const classTop1 = (s: Similarities | undefined) => (s ? top1s(s, c, (q) => q).filter((hit, q) => labels[hit] === labels[q]).length / s.queries : NaN);
  return { fashionNear: near, photoNear: photo, class1k: classTop1(sets.class1kSims), class5k: classTop1(sets.class5kSims) };
}

const scores: Score[] = candidates.map((c) => ({ name: c.name, ...evaluate(c) }));
const pct = (x: number) => (Number.isNaN(x) ? '  -  ' : `${(x * 100).toFixed(1).padStart(5)}`);
const ok = (s: Omit<Score, 'name'>) => s.fashionNear >= 0.95 && s.photoNear === 1;
console.log('\ncandidate'.padEnd(52), 'near-F%', 'near-P%', 'class1k', 'class5k', 'ok');
for (const s of scores) {
  console.log(s.name.padEnd(52), pct(s.fashionNear), '  ', pct(s.photoNear), '  ', pct(s.class1k), '  ', pct(s.class5k), ok(s) ? ' ✓' : '');
}
const passing = scores.filter(ok).sort((a, b) => b.class1k + (b.class5k || 0) - (a.class1k + (a.class5k || 0)));
console.log('\nbest passing (by class1k + class5k):');
for (const s of passing.slice(0, 10)) console.log(' ', s.name.padEnd(50), pct(s.fashionNear), pct(s.photoNear), pct(s.class1k), pct(s.class5k));

// ---- the configured default, through the real converted graph ---------------------------------
const features: FeatureLayer[] = [...DEFAULT_FEATURE_LAYERS];
const real = kerasToOnnx(loadNsfwjsMobilenetV2(), { features, thumbnail: DEFAULT_THUMBNAIL });
const realSession = await ort.InferenceSession.create(real.bytes, { intraOpNumThreads: 2 });
const byFile = new Map<Features, Float32Array>();
async function realEmbed(files: Buffer[], feats: Features[]): Promise<void> {
  for (let s = 0; s < files.length; s += BATCH) {
    const batch = await Promise.all(files.slice(s, s + BATCH).map((f) => prepareImage(f, tower, LIMITS)));
    const input = new Float32Array(batch.length * 224 * 224 * 3);
    batch.forEach((p, i) => input.set(p.pixels, i * p.pixels.length));
    const r = (await realSession.run({ pixels: new ort.Tensor('float32', input, [batch.length, 224, 224, 3]) }))[real.outputNames[0]!]!;
    const d = real.outputDimensions[0]!;
    batch.forEach((_, i) => byFile.set(feats[s + i]!, (r.data as Float32Array).slice(i * d, (i + 1) * d)));
  }
}
await realEmbed(fashionPngs, fashionF);
await realEmbed(nearQueries, nearF);
await realEmbed(photos, photoF);
await realEmbed(
  photoQueries.map((q) => q.file),
  photoQF,
);
const realF = (fs: Features[]) => fs.map((f) => new Map([['real', byFile.get(f)!]]));
const realSets = {
  nearSims: similarities(realF(nearF), realF(nearIndex), ['real']),
  photoSims: similarities(realF(photoQF), realF(nearIndex), ['real']),
  class1kSims: similarities(realF(fashionF.slice(0, 100)), realF(fashionF.slice(0, 1000)), ['real']),
  class5kSims: fashionF.length >= 5000 ? similarities(realF(fashionF.slice(0, 500)), realF(fashionF.slice(0, 5000)), ['real']) : undefined,
};
const realScore = evaluate({ name: 'real', parts: [{ key: 'real', weight: 1 }] }, realSets);
console.log(`\nconfigured default (real ONNX graph, dim ${real.outputDimensions[0]}): ${describeLayers(features, DEFAULT_THUMBNAIL)}`);
console.log(
  `  near-dup Fashion ${pct(realScore.fashionNear)}%, photos ${pct(realScore.photoNear)}%, class top-1 1k ${pct(realScore.class1k)}%, 5k ${pct(realScore.class5k)}%  ${ok(realScore) ? 'PASSES' : 'FAILS'}`,
);

import { describe, expect, it } from 'vitest';
import { chooseK, kMeans, pairwiseDistances, pcaFit, pcaProject, Reservoir, silhouetteScore, subsampleRows } from '../../shared/map-math.js';
import { mulberry32 } from '../../shared/training/prng.js';

/** Standard normal from a seeded uniform source (Box–Muller). */
function gaussian(random: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** `count` random orthonormal vectors of dimension `d` (Gram–Schmidt on Gaussian vectors). */
function orthonormal(count: number, d: number, seed: number): Float64Array[] {
  const g = gaussian(mulberry32(seed));
  const out: Float64Array[] = [];
  while (out.length < count) {
    const v = Float64Array.from({ length: d }, g);
    for (const u of out) {
      let p = 0;
      for (let j = 0; j < d; j++) p += v[j]! * u[j]!;
      for (let j = 0; j < d; j++) v[j] = v[j]! - p * u[j]!;
    }
    const norm = Math.hypot(...v);
    out.push(v.map((x) => x / norm));
  }
  return out;
}

/** Points around `centres` (std `spread`), `perCluster` each; rows in cluster order. */
function blobs(centres: number[][], perCluster: number, spread: number, seed: number): { data: Float32Array; truth: Int32Array; dim: number } {
  const dim = centres[0]!.length;
  const g = gaussian(mulberry32(seed));
  const n = centres.length * perCluster;
  const data = new Float32Array(n * dim);
  const truth = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = Math.floor(i / perCluster);
    truth[i] = c;
    for (let j = 0; j < dim; j++) data[i * dim + j] = centres[c]![j]! + spread * g();
  }
  return { data, truth, dim };
}

/** Centres at ±`side` on distinct axes of a `dim`-dimensional space: every pair `side·√2` (or 2·side) apart. */
function axisCentres(count: number, dim: number, side: number): number[][] {
  return Array.from({ length: count }, (_, c) => Array.from({ length: dim }, (_, j) => (j === c % dim ? (c < dim ? side : -side) : 0)));
}

/** True when `found` is the planted partition up to renaming the clusters. */
function samePartition(found: Int32Array, truth: Int32Array): boolean {
  const map = new Map<number, number>();
  const back = new Map<number, number>();
  for (let i = 0; i < truth.length; i++) {
    const t = truth[i]!;
    const f = found[i]!;
    if ((map.get(t) ?? f) !== f || (back.get(f) ?? t) !== t) return false;
    map.set(t, f);
    back.set(f, t);
  }
  return true;
}

describe('PCA (randomised subspace iteration)', () => {
  // Data with known principal axes: std 6 along u1, 3 along u2, 0.2 in every other direction.
  const d = 40;
  const n = 1500;
  const [u1, u2] = orthonormal(2, d, 7);
  const g = gaussian(mulberry32(11));
  const offset = Array.from({ length: d }, (_, j) => (j % 3) - 1);
  const data = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const a = 6 * g();
    const b = 3 * g();
    for (let j = 0; j < d; j++) data[i * d + j] = offset[j]! + a * u1![j]! + b * u2![j]! + 0.2 * g();
  }
  const cosine = (v: Float32Array, u: Float64Array) => {
    let p = 0;
    for (let j = 0; j < d; j++) p += v[j]! * u[j]!;
    return p;
  };

  it('recovers the planted axes up to sign, in order of variance, with their variances', () => {
    const fit = pcaFit(data, n, d, { components: 5, random: mulberry32(1) });
    expect(fit.components.length).toBe(5 * d);
    expect(Math.abs(cosine(fit.components.subarray(0, d), u1!))).toBeGreaterThan(0.995);
    expect(Math.abs(cosine(fit.components.subarray(d, 2 * d), u2!))).toBeGreaterThan(0.995);
    // Variance along the axes: 36 and 9 (+0.04 noise); the rest is noise (0.04 each).
    expect(fit.variances[0]).toBeGreaterThan(30);
    expect(fit.variances[0]).toBeLessThan(42);
    expect(fit.variances[1]).toBeGreaterThan(7);
    expect(fit.variances[1]).toBeLessThan(11);
    expect(fit.variances[2]).toBeLessThan(0.1);
    // Total variance: 36 + 9 + 40·0.04 ≈ 46.6.
    expect(fit.totalVariance).toBeGreaterThan(40);
    expect(fit.totalVariance).toBeLessThan(54);
  });

  it('fits on a row subsample and still recovers the axes; projections are centred scores along them', () => {
    const basisRows = subsampleRows(n, 400, mulberry32(3));
    const fit = pcaFit(data, n, d, { components: 3, random: mulberry32(2), basisRows });
    expect(Math.abs(cosine(fit.components.subarray(0, d), u1!))).toBeGreaterThan(0.99);
    const scores = pcaProject(fit, data, n);
    expect(scores.length).toBe(n * 3);
    // Score on PC1 equals ±(x − mean)·u1, i.e. ±a for row i, within the noise.
    const sign = Math.sign(cosine(fit.components.subarray(0, d), u1!));
    let worst = 0;
    for (let i = 0; i < 50; i++) {
      let along = 0;
      for (let j = 0; j < d; j++) along += (data[i * d + j]! - fit.mean[j]!) * u1![j]!;
      worst = Math.max(worst, Math.abs(scores[i * 3]! - sign * along));
    }
    expect(worst).toBeLessThan(0.3);
  });

  it('is deterministic for a seed, and signs are fixed (largest coordinate positive)', () => {
    const a = pcaFit(data, n, d, { components: 2, random: mulberry32(5) });
    const b = pcaFit(data, n, d, { components: 2, random: mulberry32(99) });
    for (let c = 0; c < 2; c++) {
      const v = a.components.subarray(c * d, (c + 1) * d);
      let big = 0;
      for (let j = 0; j < d; j++) if (Math.abs(v[j]!) > Math.abs(v[big]!)) big = j;
      expect(v[big]).toBeGreaterThan(0);
      // Another random start converges to the same axis with the same sign.
      expect(cosine(v, Float64Array.from(b.components.subarray(c * d, (c + 1) * d)))).toBeGreaterThan(0.995);
    }
  });

  it('refuses shapes that do not match the data', () => {
    expect(() => pcaFit(data, n, d + 1, { components: 2, random: mulberry32(1) })).toThrow(/rows/);
    expect(() => pcaFit(data, n, d, { components: 0, random: mulberry32(1) })).toThrow(/components/);
  });
});

describe('k-means++ and the silhouette score', () => {
  it('silhouette of a hand-computed case: points 0, 1 | 10, 11 on a line', () => {
    const data = Float32Array.from([0, 1, 10, 11]);
    const dist = pairwiseDistances(data, 1, Int32Array.from([0, 1, 2, 3]));
    // s = 1 − a/b per point: 1 − 1/10.5, 1 − 1/9.5, 1 − 1/9.5, 1 − 1/10.5.
    const expected = (2 * (1 - 1 / 10.5) + 2 * (1 - 1 / 9.5)) / 4;
    expect(silhouetteScore(dist, Int32Array.from([0, 0, 1, 1]))).toBeCloseTo(expected, 6);
    // A worse split, 0 | 1, 10, 11: s = 0 (singleton), (b − a)/max(a, b) with (a, b) = (9.5, 1), (5, 10), (5.5, 11).
    const bad = (0 + (1 - 9.5) / 9.5 + (10 - 5) / 10 + (11 - 5.5) / 11) / 4;
    expect(silhouetteScore(dist, Int32Array.from([0, 1, 1, 1]))).toBeCloseTo(bad, 6);
  });

  it('finds planted, separated clusters exactly', () => {
    const { data, truth, dim } = blobs(axisCentres(5, 8, 10), 80, 1, 21);
    const found = kMeans(data, truth.length, dim, 5, mulberry32(4));
    expect(samePartition(found.assignments, truth)).toBe(true);
    expect(found.centroids.length).toBe(5 * dim);
  });

  it('picks the planted k = 4 over k = 2..12, with a clear margin over 3 and 5', () => {
    const { data, truth, dim } = blobs(axisCentres(4, 6, 8), 150, 1, 31);
    const choice = chooseK(data, truth.length, dim, { kMin: 2, kMax: 12, silhouetteSample: 2000, random: mulberry32(8) });
    expect(choice.best).toBe(4);
    const score = (k: number) => choice.scores.find((s) => s.k === k)!.score;
    expect(choice.scores.map((s) => s.k)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(score(4)).toBeGreaterThan(score(3) + 0.1);
    expect(score(4)).toBeGreaterThan(score(5) + 0.1);
    expect(samePartition(choice.assignments.get(4)!, truth)).toBe(true);
  });

  it('computes the silhouette on a bounded subsample (size reported), and still picks the planted k', () => {
    const { data, truth, dim } = blobs(axisCentres(3, 5, 8), 400, 1, 41);
    const choice = chooseK(data, truth.length, dim, { kMin: 2, kMax: 6, silhouetteSample: 300, random: mulberry32(9) });
    expect(choice.silhouetteSample).toBe(300);
    expect(choice.best).toBe(3);
  });

  it('fits k-means on a bounded subsample and gives every row its nearest centroid: still the planted partition', () => {
    const { data, truth, dim } = blobs(axisCentres(4, 6, 8), 300, 1, 51);
    const choice = chooseK(data, truth.length, dim, { kMin: 2, kMax: 6, silhouetteSample: 400, fitSample: 200, random: mulberry32(10) });
    expect(choice.fitSample).toBe(200);
    expect(choice.best).toBe(4);
    expect(choice.assignments.get(4)!.length).toBe(1200);
    expect(samePartition(choice.assignments.get(4)!, truth)).toBe(true);
  });

  it('a k larger than the number of distinct points leaves no cluster empty', () => {
    const data = Float32Array.from([0, 0, 0, 0, 5, 5, 5]);
    const found = kMeans(data, 7, 1, 3, mulberry32(1));
    expect(new Set(found.assignments).size).toBe(3);
  });
});

describe('reservoir sampling', () => {
  it('keeps everything while under capacity, then a uniform sample (each item about equally likely)', () => {
    const r = new Reservoir(3, mulberry32(1));
    expect([r.offer(), r.offer(), r.offer()]).toEqual([0, 1, 2]);
    const counts = new Array<number>(20).fill(0);
    for (let trial = 0; trial < 3000; trial++) {
      const res = new Reservoir(5, mulberry32(trial + 1));
      const slots: number[] = [];
      for (let i = 0; i < 20; i++) {
        const slot = res.offer();
        if (slot >= 0) slots[slot] = i;
      }
      for (const i of slots) counts[i]!++;
      expect(res.seen).toBe(20);
    }
    // Each of 20 items is kept with probability 5/20: 750 of 3000 expected, sd ≈ 24.
    for (const c of counts) {
      expect(c).toBeGreaterThan(640);
      expect(c).toBeLessThan(860);
    }
  });
});

/**
 * The collection map's numerics, beside the one vector-math module (shared/vector-math.ts, which
 * points here): PCA by randomised subspace iteration, k-means with k-means++ seeding, the
 * silhouette score and the choice of k by it, and seeded reservoir sampling. Matrices are row-major
 * typed arrays (`n` rows of `dim` values) so that 20,000 × 1,632 floats stay one allocation; every
 * random choice comes from the caller's seeded source (shared/training/prng.ts, mulberry32).
 *
 * Why not a library: ml-pca eigen-decomposes the full d×d covariance (d³ ≈ 4·10⁹ steps at the
 * default model's 1,632 dimensions) and ml-kmeans works on arrays of arrays; here PCA touches the
 * data a few times with a 60-column block, which is what makes the first view fast.
 */
import { shuffledIndices } from './training/prng.js';

export interface PcaFit {
  /** Mean of every column (the data are centred on it before projecting). */
  mean: Float64Array;
  /** `count` unit vectors of `dim` values, row-major, in decreasing order of variance; each one's largest coordinate is positive. */
  components: Float32Array;
  count: number;
  dim: number;
  /** Variance of the data along each component. */
  variances: number[];
  /** Total variance of the data (sum over columns), for the explained share. */
  totalVariance: number;
}

export interface PcaOptions {
  components: number;
  random: () => number;
  /** Rows the basis is fitted on (default all); the mean and total variance always use every row. */
  basisRows?: Int32Array;
  /** Power iterations of the randomised range finder (default 2: ample when the spectrum decays, as embeddings' does). */
  powerIterations?: number;
  /** Extra columns of the random block (default 10). */
  oversampling?: number;
}

/** Standard normal variates from a uniform source (Box–Muller). */
function normal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/**
 * Principal components of `data` (n × dim): randomised subspace iteration (Halko, Martinsson &
 * Tropp 2011, algorithm 4.4) on the centred rows, then the exact eigen-decomposition of the small
 * projected covariance. Cost: about (2·powerIterations + 3) passes of rows × dim × (components +
 * oversampling) multiply-adds.
 */
export function pcaFit(data: Float32Array, n: number, dim: number, options: PcaOptions): PcaFit {
  if (data.length !== n * dim || n < 1) throw new RangeError(`PCA: ${data.length} values are not ${n} rows of ${dim}`);
  if (!Number.isInteger(options.components) || options.components < 1)
    throw new RangeError(`PCA: components must be a positive integer, got ${options.components}`);
  const rows = options.basisRows ?? Int32Array.from({ length: n }, (_, i) => i);
  const m = Math.min(options.components, dim);
  const l = Math.min(m + (options.oversampling ?? 10), dim);
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) mean[j]! += data[i * dim + j]!;
  for (let j = 0; j < dim; j++) mean[j] = mean[j]! / n;
  let totalVariance = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) {
      const x = data[i * dim + j]! - mean[j]!;
      totalVariance += x * x;
    }
  }
  totalVariance /= Math.max(1, n - 1);

  let q: Float64Array = new Float64Array(dim * l);
  for (let t = 0; t < q.length; t++) q[t] = normal(options.random);
  orthonormaliseColumns(q, dim, l);
  const y = new Float64Array(rows.length * l);
  for (let it = 0; it <= (options.powerIterations ?? 2); it++) {
    centredTimes(data, dim, rows, mean, q, l, y);
    q = centredTransposeTimes(data, dim, rows, mean, y, l);
    orthonormaliseColumns(q, dim, l);
  }
  // B = Xc·Q (rows × l); the covariance within span(Q) is BᵀB / (rows − 1), l × l.
  centredTimes(data, dim, rows, mean, q, l, y);
  const cov = new Float64Array(l * l);
  for (let r = 0; r < rows.length; r++) {
    const b = r * l;
    for (let a = 0; a < l; a++) {
      const ya = y[b + a]!;
      if (ya === 0) continue;
      for (let c = a; c < l; c++) cov[a * l + c]! += ya * y[b + c]!;
    }
  }
  const denom = Math.max(1, rows.length - 1);
  for (let a = 0; a < l; a++) {
    for (let c = a; c < l; c++) {
      cov[a * l + c] = cov[a * l + c]! / denom;
      cov[c * l + a] = cov[a * l + c]!;
    }
  }
  const { values, vectors } = symmetricEigen(cov, l);
  const order = Array.from(values.keys()).sort((a, b) => values[b]! - values[a]!);
  const components = new Float32Array(m * dim);
  const variances: number[] = [];
  for (let c = 0; c < m; c++) {
    const e = order[c]!;
    variances.push(Math.max(0, values[e]!));
    const v = components.subarray(c * dim, (c + 1) * dim);
    for (let j = 0; j < dim; j++) {
      let s = 0;
      for (let a = 0; a < l; a++) s += q[j * l + a]! * vectors[a * l + e]!;
      v[j] = s;
    }
    let big = 0;
    for (let j = 1; j < dim; j++) if (Math.abs(v[j]!) > Math.abs(v[big]!)) big = j;
    if (v[big]! < 0) for (let j = 0; j < dim; j++) v[j] = -v[j]!;
  }
  return { mean, components, count: m, dim, variances, totalVariance };
}

/** Scores of each row on the fitted components: n × fit.count, row-major. */
export function pcaProject(fit: PcaFit, data: Float32Array, n: number): Float32Array {
  const { dim, count, mean, components } = fit;
  if (data.length !== n * dim) throw new RangeError(`PCA projection: ${data.length} values are not ${n} rows of ${dim}`);
  const out = new Float32Array(n * count);
  const centred = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) centred[j] = data[i * dim + j]! - mean[j]!;
    for (let c = 0; c < count; c++) {
      let s = 0;
      const o = c * dim;
      for (let j = 0; j < dim; j++) s += centred[j]! * components[o + j]!;
      out[i * count + c] = s;
    }
  }
  return out;
}

/** out (rows × l) = (X[rows] − mean) · Q, with Q dim × l. */
function centredTimes(data: Float32Array, dim: number, rows: Int32Array, mean: Float64Array, q: Float64Array, l: number, out: Float64Array): void {
  const shift = new Float64Array(l);
  for (let j = 0; j < dim; j++) for (let a = 0; a < l; a++) shift[a]! += mean[j]! * q[j * l + a]!;
  const acc = new Float64Array(l);
  for (let r = 0; r < rows.length; r++) {
    acc.fill(0);
    const base = rows[r]! * dim;
    for (let j = 0; j < dim; j++) {
      const x = data[base + j]!;
      const qo = j * l;
      for (let a = 0; a < l; a++) acc[a]! += x * q[qo + a]!;
    }
    for (let a = 0; a < l; a++) out[r * l + a] = acc[a]! - shift[a]!;
  }
}

/** (X[rows] − mean)ᵀ · Y, dim × l, with Y rows × l. */
function centredTransposeTimes(data: Float32Array, dim: number, rows: Int32Array, mean: Float64Array, y: Float64Array, l: number): Float64Array {
  const out = new Float64Array(dim * l);
  const colSum = new Float64Array(l);
  for (let r = 0; r < rows.length; r++) {
    const base = rows[r]! * dim;
    const yo = r * l;
    for (let a = 0; a < l; a++) colSum[a]! += y[yo + a]!;
    for (let j = 0; j < dim; j++) {
      const x = data[base + j]!;
      const oo = j * l;
      for (let a = 0; a < l; a++) out[oo + a]! += x * y[yo + a]!;
    }
  }
  for (let j = 0; j < dim; j++) for (let a = 0; a < l; a++) out[j * l + a]! -= mean[j]! * colSum[a]!;
  return out;
}

/** Modified Gram–Schmidt on the l columns of a dim × l row-major matrix (twice, for stability); a null column becomes zero. */
function orthonormaliseColumns(q: Float64Array, dim: number, l: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let a = 0; a < l; a++) {
      for (let b = 0; b < a; b++) {
        let p = 0;
        for (let j = 0; j < dim; j++) p += q[j * l + a]! * q[j * l + b]!;
        for (let j = 0; j < dim; j++) q[j * l + a]! -= p * q[j * l + b]!;
      }
      let norm = 0;
      for (let j = 0; j < dim; j++) norm += q[j * l + a]! ** 2;
      norm = Math.sqrt(norm);
      for (let j = 0; j < dim; j++) q[j * l + a] = norm > 1e-12 ? q[j * l + a]! / norm : 0;
    }
  }
}

/** Eigen-decomposition of a small symmetric matrix (cyclic Jacobi): values, and vectors as columns of an n × n row-major matrix. */
export function symmetricEigen(matrix: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let r = p + 1; r < n; r++) off += a[p * n + r]! ** 2;
    if (off < 1e-22) break;
    for (let p = 0; p < n; p++) {
      for (let r = p + 1; r < n; r++) {
        const apr = a[p * n + r]!;
        if (Math.abs(apr) < 1e-300) continue;
        const theta = (a[r * n + r]! - a[p * n + p]!) / (2 * apr);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p]!;
          const akr = a[k * n + r]!;
          a[k * n + p] = c * akp - s * akr;
          a[k * n + r] = s * akp + c * akr;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const ark = a[r * n + k]!;
          a[p * n + k] = c * apk - s * ark;
          a[r * n + k] = s * apk + c * ark;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkr = v[k * n + r]!;
          v[k * n + p] = c * vkp - s * vkr;
          v[k * n + r] = s * vkp + c * vkr;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i]!;
  return { values, vectors: v };
}

export interface KMeansResult {
  /** Cluster of each row, 0..k−1; no cluster is empty when there are at least k distinct rows. */
  assignments: Int32Array;
  /** k × dim, row-major. */
  centroids: Float64Array;
  /** Sum of squared distances to the assigned centroid. */
  inertia: number;
  iterations: number;
}

function squaredDistance(data: Float32Array, i: number, centroids: Float64Array, c: number, dim: number): number {
  let s = 0;
  const a = i * dim;
  const b = c * dim;
  for (let j = 0; j < dim; j++) {
    const d = data[a + j]! - centroids[b + j]!;
    s += d * d;
  }
  return s;
}

/** The centroid nearest to row i; its squared distance goes to `distances[i]` when given. */
function nearestCentroid(data: Float32Array, i: number, dim: number, centroids: Float64Array, k: number, distances?: Float64Array): number {
  let best = 0;
  let bestD = Infinity;
  for (let c = 0; c < k; c++) {
    const d = squaredDistance(data, i, centroids, c, dim);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  if (distances) distances[i] = bestD;
  return best;
}

/**
 * Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007) from the seeded `random`,
 * until at most `tolerance` of the rows change cluster in an iteration, or `maxIterations`. A cluster
 * left empty takes the row farthest from its centroid.
 */
export function kMeans(data: Float32Array, n: number, dim: number, k: number, random: () => number, maxIterations = 100, tolerance = 1e-3): KMeansResult {
  if (data.length !== n * dim) throw new RangeError(`k-means: ${data.length} values are not ${n} rows of ${dim}`);
  if (!Number.isInteger(k) || k < 1 || k > n) throw new RangeError(`k-means: k must be an integer in 1..${n}, got ${k}`);
  const centroids = new Float64Array(k * dim);
  const setCentroid = (c: number, row: number) => {
    for (let j = 0; j < dim; j++) centroids[c * dim + j] = data[row * dim + j]!;
  };
  setCentroid(0, Math.floor(random() * n));
  const nearest = new Float64Array(n).fill(Infinity);
  for (let c = 1; c < k; c++) {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const d = squaredDistance(data, i, centroids, c - 1, dim);
      if (d < nearest[i]!) nearest[i] = d;
      total += nearest[i]!;
    }
    let pick = Math.floor(random() * n);
    if (total > 0) {
      let target = random() * total;
      for (let i = 0; i < n; i++) {
        target -= nearest[i]!;
        if (target <= 0) {
          pick = i;
          break;
        }
      }
    }
    setCentroid(c, pick);
  }

  const assignments = new Int32Array(n).fill(-1);
  const distances = new Float64Array(n);
  const counts = new Int32Array(k);
  let iterations = 0;
  for (; iterations < maxIterations; iterations++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const best = nearestCentroid(data, i, dim, centroids, k, distances);
      if (assignments[i] !== best) {
        assignments[i] = best;
        changed++;
      }
    }
    counts.fill(0);
    for (let i = 0; i < n; i++) counts[assignments[i]!]!++;
    for (let c = 0; c < k; c++) {
      if (counts[c]! > 0) continue;
      // An empty cluster takes the row farthest from its own centroid (that row's cluster keeps others).
      let far = -1;
      for (let i = 0; i < n; i++) if (counts[assignments[i]!]! > 1 && (far < 0 || distances[i]! > distances[far]!)) far = i;
      if (far < 0) continue;
      counts[assignments[far]!]!--;
      assignments[far] = c;
      distances[far] = 0;
      counts[c] = 1;
      changed++;
    }
    centroids.fill(0);
    for (let i = 0; i < n; i++) {
      const c = assignments[i]!;
      for (let j = 0; j < dim; j++) centroids[c * dim + j]! += data[i * dim + j]!;
    }
    for (let c = 0; c < k; c++) if (counts[c]! > 0) for (let j = 0; j < dim; j++) centroids[c * dim + j] = centroids[c * dim + j]! / counts[c]!;
    // Converged when (almost) no row moves: at most `tolerance` of them (the partition is then final to that share).
    if (changed <= tolerance * n) break;
  }
  let inertia = 0;
  for (let i = 0; i < n; i++) inertia += squaredDistance(data, i, centroids, assignments[i]!, dim);
  return { assignments, centroids, inertia, iterations };
}

/** The nearest of k centroids (k × dim) for each row. */
export function assignToNearest(data: Float32Array, n: number, dim: number, centroids: Float64Array, k: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = nearestCentroid(data, i, dim, centroids, k);
  return out;
}

/** The given rows of a row-major matrix, as a new contiguous one. */
export function gatherRows(data: Float32Array, dim: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * dim);
  for (let r = 0; r < rows.length; r++) out.set(data.subarray(rows[r]! * dim, (rows[r]! + 1) * dim), r * dim);
  return out;
}

/** Euclidean distances between the given rows: s × s, symmetric, zero diagonal. */
export function pairwiseDistances(data: Float32Array, dim: number, rows: Int32Array): Float32Array {
  const s = rows.length;
  const out = new Float32Array(s * s);
  for (let a = 0; a < s; a++) {
    const ia = rows[a]! * dim;
    for (let b = a + 1; b < s; b++) {
      const ib = rows[b]! * dim;
      let sum = 0;
      for (let j = 0; j < dim; j++) {
        const d = data[ia + j]! - data[ib + j]!;
        sum += d * d;
      }
      out[a * s + b] = out[b * s + a] = Math.sqrt(sum);
    }
  }
  return out;
}

/**
 * Mean silhouette (Rousseeuw 1987) of the points whose distances are given (s × s) with these
 * labels: s(i) = (b − a) / max(a, b), a the mean distance to its own cluster, b the smallest mean
 * distance to another; 0 for a point alone in its cluster (scikit-learn's convention).
 */
export function silhouetteScore(distances: Float32Array, labels: Int32Array): number {
  const s = labels.length;
  if (distances.length !== s * s) throw new RangeError(`silhouette: ${distances.length} distances for ${s} points`);
  let k = 0;
  for (let i = 0; i < s; i++) k = Math.max(k, labels[i]! + 1);
  const sizes = new Int32Array(k);
  for (let i = 0; i < s; i++) sizes[labels[i]!]!++;
  const sums = new Float64Array(k);
  let total = 0;
  for (let i = 0; i < s; i++) {
    const own = labels[i]!;
    if (sizes[own]! <= 1) continue;
    sums.fill(0);
    const row = i * s;
    for (let j = 0; j < s; j++) sums[labels[j]!]! += distances[row + j]!;
    const a = sums[own]! / (sizes[own]! - 1);
    let b = Infinity;
    for (let c = 0; c < k; c++) if (c !== own && sizes[c]! > 0) b = Math.min(b, sums[c]! / sizes[c]!);
    if (b === Infinity) continue;
    const m = Math.max(a, b);
    total += m > 0 ? (b - a) / m : 0;
  }
  return s === 0 ? 0 : total / s;
}

/** `size` distinct row indices of 0..n−1 (all of them, in order, when size ≥ n), from the seeded source. */
export function subsampleRows(n: number, size: number, random: () => number): Int32Array {
  if (size >= n) return Int32Array.from({ length: n }, (_, i) => i);
  return shuffledIndices(n, random).slice(0, size).sort();
}

export interface KChoice {
  /** The k with the best silhouette. */
  best: number;
  scores: { k: number; score: number }[];
  /** The k-means partition of every row for each k tried. */
  assignments: Map<number, Int32Array>;
  /** Points the silhouette was computed on (a seeded subsample, to bound its s² cost). */
  silhouetteSample: number;
  /** Points k-means was fitted on (a seeded subsample; every row is then given its nearest centroid). */
  fitSample: number;
}

/**
 * k-means for every k in kMin..kMax (capped at n − 1), fitted on a seeded subsample of at most
 * `fitSample` rows (default all) and then extended to every row by its nearest centroid; each
 * partition scored by the silhouette on the same seeded subsample of at most `silhouetteSample`
 * rows; the best score wins (the smaller k on a tie).
 */
export function chooseK(
  data: Float32Array,
  n: number,
  dim: number,
  options: { kMin: number; kMax: number; silhouetteSample: number; fitSample?: number; random: () => number; onK?: (k: number) => void },
): KChoice {
  const kMax = Math.min(options.kMax, n - 1);
  const fitRows = subsampleRows(n, options.fitSample ?? n, options.random);
  const fitData = fitRows.length === n ? data : gatherRows(data, dim, fitRows);
  const rows = subsampleRows(n, options.silhouetteSample, options.random);
  const distances = pairwiseDistances(data, dim, rows);
  const scores: { k: number; score: number }[] = [];
  const assignments = new Map<number, Int32Array>();
  const sub = new Int32Array(rows.length);
  let best = Math.min(options.kMin, Math.max(1, kMax));
  let bestScore = -Infinity;
  for (let k = options.kMin; k <= kMax; k++) {
    const fitted = kMeans(fitData, fitRows.length, dim, k, options.random);
    const labels = fitRows.length === n ? fitted.assignments : assignToNearest(data, n, dim, fitted.centroids, k);
    assignments.set(k, labels);
    for (let r = 0; r < rows.length; r++) sub[r] = labels[rows[r]!]!;
    const score = silhouetteScore(distances, sub);
    scores.push({ k, score });
    if (score > bestScore) {
      bestScore = score;
      best = k;
    }
    options.onK?.(k);
  }
  return { best, scores, assignments, silhouetteSample: rows.length, fitSample: fitRows.length };
}

/**
 * Seeded reservoir sampling (Vitter's algorithm R): offer each item of a stream in turn; the answer
 * is the slot (0..capacity−1) to store it in, or −1 to drop it. Every item of the stream ends up
 * kept with the same probability capacity / seen.
 */
export class Reservoir {
  seen = 0;
  constructor(
    readonly capacity: number,
    private readonly random: () => number,
  ) {}

  offer(): number {
    const i = this.seen++;
    if (i < this.capacity) return i;
    const j = Math.floor(this.random() * (i + 1));
    return j < this.capacity ? j : -1;
  }
}

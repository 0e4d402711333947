import { ConfigError } from '../errors.js';
import { pcaFit, subsampleRows } from '../map-math.js';
import { mulberry32 } from '../training/prng.js';
import { l2Normalise } from '../vector-math.js';
import type { ModelManifest } from './manifest.js';
import { OnnxGraphBuilder } from './onnx/graph-builder.js';
import { PROJECTION_FILE } from './projection.js';

export { loadProjection, openProjection, PROJECTION_FILE, type Projection } from './projection.js';

/**
 * Compact vectors: a PCA of the collection's vectors (the model's output before compaction — the
 * base embedding for a model without a head), optionally whitened, stored as a small ONNX model
 *
 *   input [N,D] → Sub(mean) → MatMul(components [D,k]) → (whiten: Div(√λ)) → L2-normalise → [N,k]
 *
 * that the embedder applies after the image tower (and head) on every path — ingest, reindex from
 * the feature store, and queries — so documents and queries always agree. The feature store keeps
 * the full base embedding, so a retraining or another projection starts from it.
 *
 * The fit is the project's one PCA (shared/map-math.ts: randomised subspace iteration, Halko,
 * Martinsson & Tropp 2011, Algorithm 4.4), the same one the collection map uses.
 */

export interface FitPcaOptions {
  /** Output dimension k. */
  dims: number;
  /** Divide each component by its standard deviation (PCA whitening). */
  whiten: boolean;
  /** Seed of the random start of the subspace iteration. */
  seed?: number;
  /** Power iterations (default 4). */
  iterations?: number;
}

export interface PcaProjection {
  inputDimension: number;
  outputDimension: number;
  whiten: boolean;
  mean: Float32Array;
  /** k rows of D, best first (unit length). */
  components: Float32Array[];
  /** Variance along each component, descending. */
  eigenvalues: number[];
  /** Sum of the variances of all D input coordinates. */
  totalVariance: number;
}

/** Share of the total variance the kept components hold. */
export function explainedVariance(p: PcaProjection): number {
  return p.totalVariance > 0 ? p.eigenvalues.reduce((a, b) => a + b, 0) / p.totalVariance : 0;
}

export async function fitPca(vectors: Float32Array[], options: FitPcaOptions): Promise<PcaProjection> {
  const n = vectors.length;
  const d = vectors[0]?.length ?? 0;
  const k = options.dims;
  if (!Number.isInteger(k) || k < 1) throw new ConfigError(`the projection's dimension must be a positive integer, got ${k}`);
  if (k >= d) throw new ConfigError(`a ${k}-dimension projection of ${d}-dimension vectors is not smaller: choose fewer than ${d} dimensions`);
  if (n <= k) throw new ConfigError(`fitting ${k} components needs more than ${k} vectors; the collection has ${n}`);
  for (const [i, v] of vectors.entries()) if (v.length !== d) throw new ConfigError(`vector ${i} has dimension ${v.length}, expected ${d}`);
  const packed = new Float32Array(n * d);
  vectors.forEach((v, i) => packed.set(v, i * d));
  const random = mulberry32(options.seed ?? 1);
  // The one PCA of the project (shared/map-math.ts); the basis from a seeded sample of rows when
  // the collection is large (the mean and total variance always use every row).
  const basisRows = n > MAX_BASIS_ROWS ? subsampleRows(n, MAX_BASIS_ROWS, random) : undefined;
  const fit = pcaFit(packed, n, d, { components: k, random, powerIterations: options.iterations ?? 4, oversampling: 16, ...(basisRows ? { basisRows } : {}) });
  const components = Array.from({ length: fit.count }, (_, c) => l2Normalise(fit.components.slice(c * d, (c + 1) * d)));
  return {
    inputDimension: d,
    outputDimension: k,
    whiten: options.whiten,
    mean: Float32Array.from(fit.mean),
    components,
    eigenvalues: fit.variances,
    totalVariance: fit.totalVariance,
  };
}

/** Rows the basis is fitted on at most: the leading components of 1,632-d embeddings are stable well below this. */
const MAX_BASIS_ROWS = 10_000;

/** Standard deviations below this share of the first one are not amplified further when whitening. */
const WHITEN_FLOOR = 1e-3;

/** The projection as an ONNX model: one input `base` [N,D], one output `projected` [N,k], L2-normalised. */
export function projectionToOnnx(p: PcaProjection): Uint8Array {
  const g = new OnnxGraphBuilder();
  const d = p.inputDimension;
  const k = p.outputDimension;
  g.input('base', ['batch', d]);
  const weights = new Float32Array(d * k);
  p.components.forEach((c, j) => c.forEach((v, i) => (weights[i * k + j] = v)));
  const centred = g.tensor('Sub', ['base', g.floats(p.mean, [d])], [-1, d]);
  let out = g.tensor('MatMul', [centred.name, g.floats(weights, [d, k])], [-1, k]);
  if (p.whiten) {
    const top = Math.sqrt(p.eigenvalues[0] ?? 0);
    const std = p.eigenvalues.map((v) => Math.max(Math.sqrt(v), top * WHITEN_FLOOR, 1e-12));
    out = g.tensor('Div', [out.name, g.floats(std, [k])], [-1, k]);
  }
  const projected = g.l2Normalise(out, 'projected');
  g.output(projected.name, ['batch', k]);
  return g.encode({
    graphName: 'projection',
    producerName: 'image-semantic-search compact-projection',
    docString: `PCA ${d}→${k}${p.whiten ? ', whitened' : ''}, ${(explainedVariance(p) * 100).toFixed(1)}% of the variance`,
  });
}

/** The manifest entry of a projection stored as {@link PROJECTION_FILE}. */
export function projectionManifest(p: PcaProjection): NonNullable<ModelManifest['projection']> {
  return {
    file: PROJECTION_FILE,
    kind: 'pca',
    inputDimension: p.inputDimension,
    outputDimension: p.outputDimension,
    whiten: p.whiten,
    explainedVariance: explainedVariance(p),
  };
}

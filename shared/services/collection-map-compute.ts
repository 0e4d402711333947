import { UMAP } from 'umap-js';
import { chooseK, pcaFit, pcaProject, subsampleRows, type PcaFit } from '../map-math.js';
import { mulberry32 } from '../training/prng.js';
import { DEFAULT_MAP_COMPUTE, type MapComputeSettings } from './collection-map.js';

/**
 * The collection map's computation on one sample of embeddings, with no I/O: PCA (the first view),
 * k-means for every k with its silhouette, then UMAP on the PCA coordinates. It runs inside the map
 * worker (collection-map-worker.ts) so that the event loop keeps answering searches meanwhile; the
 * tests call it directly.
 */
/** UMAP needs more points than neighbours; below this a map is PCA only. */
export const UMAP_MIN_POINTS = 10;

export interface PcaView {
  /** n × 2: each point's scores on the first two components. */
  xy: Float32Array;
  /** n × pca.count: the coordinates k-means, the silhouette and UMAP work on. */
  reduced: Float32Array;
  pca: PcaFit;
  /** The k with the best silhouette (1 when the sample is too small to split). */
  bestK: number;
  silhouette: { k: number; score: number }[];
  silhouetteSample: number;
  /** Cluster of each point for every k tried. */
  clusters: Map<number, Int32Array>;
  timings: { pcaMs: number; clusterMs: number };
}

/** PCA of the sample, then k-means for k = kMin..kMax (capped at n − 1) and the silhouette of each. */
export function computePcaView(vectors: Float32Array, n: number, dim: number, settings: MapComputeSettings = DEFAULT_MAP_COMPUTE): PcaView {
  const random = mulberry32(settings.seed);
  const t0 = performance.now();
  const pca = pcaFit(vectors, n, dim, {
    components: Math.max(2, Math.min(settings.pcaComponents, dim)),
    random,
    basisRows: subsampleRows(n, settings.pcaBasisRows, random),
  });
  const reduced = pcaProject(pca, vectors, n);
  const m = pca.count;
  const xy = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    xy[2 * i] = reduced[i * m]!;
    xy[2 * i + 1] = m > 1 ? reduced[i * m + 1]! : 0;
  }
  const t1 = performance.now();
  let bestK = 1;
  let silhouette: { k: number; score: number }[] = [];
  let silhouetteSample = 0;
  let clusters = new Map<number, Int32Array>([[1, new Int32Array(n)]]);
  if (n > settings.kMin) {
    const choice = chooseK(reduced, n, m, {
      kMin: settings.kMin,
      kMax: settings.kMax,
      silhouetteSample: settings.silhouetteSample,
      fitSample: settings.kMeansSample,
      random,
    });
    bestK = choice.best;
    silhouette = choice.scores;
    silhouetteSample = choice.silhouetteSample;
    clusters = choice.assignments;
  }
  return { xy, reduced, pca, bestK, silhouette, silhouetteSample, clusters, timings: { pcaMs: t1 - t0, clusterMs: performance.now() - t1 } };
}

/**
 * UMAP (umap-js) of the PCA coordinates, seeded with mulberry32; it keeps the fitted model, so
 * new points (a query, a result outside the sample) are placed with umap-js's `transform`.
 */
export class UmapLayout {
  private constructor(
    private readonly umap: UMAP,
    readonly xy: Float32Array,
    readonly dim: number,
    readonly ms: number,
  ) {}

  /** Fits on n × dim rows; `onProgress` gets the share of epochs done, now and then. */
  static fit(
    reduced: Float32Array,
    n: number,
    dim: number,
    settings: MapComputeSettings = DEFAULT_MAP_COMPUTE,
    onProgress?: (done: number) => void,
  ): UmapLayout {
    if (n < UMAP_MIN_POINTS) throw new RangeError(`UMAP needs at least ${UMAP_MIN_POINTS} points, the sample has ${n}`);
    const t0 = performance.now();
    const rows: number[][] = [];
    for (let i = 0; i < n; i++) rows.push(Array.from(reduced.subarray(i * dim, (i + 1) * dim)));
    const umap = new UMAP({
      nComponents: 2,
      nNeighbors: Math.min(settings.umapNeighbors, n - 1),
      // umap-js's transform runs nEpochs / 3 epochs and stops only on exact equality: a count that is
      // not a multiple of 3 never ends (umap-js 1.4.0), so an explicit count is rounded up to one.
      nEpochs: settings.umapEpochs ? Math.ceil(settings.umapEpochs / 3) * 3 : undefined,
      random: mulberry32(settings.seed ^ 0x5eed),
    });
    const epochs = umap.initializeFit(rows);
    const every = Math.max(1, Math.floor(epochs / 20));
    for (let e = 0; e < epochs; e++) {
      umap.step();
      if (onProgress && (e + 1) % every === 0) onProgress((e + 1) / epochs);
    }
    const embedding = umap.getEmbedding();
    const xy = new Float32Array(n * 2);
    for (let i = 0; i < n; i++) {
      xy[2 * i] = embedding[i]![0]!;
      xy[2 * i + 1] = embedding[i]![1]!;
    }
    return new UmapLayout(umap, xy, dim, performance.now() - t0);
  }

  /** 2-D positions of new rows (r × dim) in this layout. */
  transform(rows: Float32Array): Float32Array {
    const r = rows.length / this.dim;
    const input: number[][] = [];
    for (let i = 0; i < r; i++) input.push(Array.from(rows.subarray(i * this.dim, (i + 1) * this.dim)));
    const out = new Float32Array(r * 2);
    if (r === 0) return out;
    const placed = this.umap.transform(input);
    for (let i = 0; i < r; i++) {
      out[2 * i] = placed[i]![0]!;
      out[2 * i + 1] = placed[i]![1]!;
    }
    return out;
  }
}

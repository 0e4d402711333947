import os from 'node:os';
import { silentLogger } from '../shared/logger.js';
import type { VectorDocument, VectorIndex } from '../shared/ports/vector-index.js';
import { CollectionMap, DEFAULT_MAP_COMPUTE, RecentQueryVectors } from '../shared/services/collection-map.js';
import { computePcaView, UmapLayout } from '../shared/services/collection-map-compute.js';
import { mulberry32 } from '../shared/training/prng.js';
import { l2NormaliseInPlace } from '../shared/vector-math.js';

/**
 * `npm run bench -- --only map`: the collection map's computation at each size, on clustered unit
 * vectors of the default model's dimension, beside a baseline measured in the same run: one exact
 * scan of the same vectors (one query's dot product with every vector, what a flat search costs).
 * Phases: PCA (basis fitted on a 3,000-row subsample, every row projected to 50 components),
 * k-means for k = 2..12 (fitted on ≤ 5,000 rows) with the silhouette on ≤ 2,000, UMAP (umap-js) on
 * the PCA coordinates. Then, at the first size, the main thread's longest event-loop stall while
 * the map service computes in its worker, against the same PCA view computed inline (baseline).
 */
export interface MapBenchSize {
  n: number;
  dim: number;
  exactScanMs: number;
  pcaMs: number;
  clusterMs: number;
  umapMs: number | null;
  bestK: number;
}

export interface MapBenchResult {
  sizes: MapBenchSize[];
  eventLoop: { n: number; workerMaxStallMs: number; workerWallMs: number; inlineMaxStallMs: number; inlineWallMs: number } | null;
  loadAverage: { before: number[]; after: number[] };
}

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/** n clustered unit vectors, row-major (the mixture of bench/search-index.ts: 20 blobs, noise ≈ 0.6 of the centre's norm). */
function clusteredRows(n: number, dim: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  const centres = Array.from({ length: 20 }, () => l2NormaliseInPlace(Float32Array.from({ length: dim }, () => gaussian(r))));
  const out = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    const c = centres[Math.floor(r() * centres.length)]!;
    const row = out.subarray(i * dim, (i + 1) * dim);
    for (let j = 0; j < dim; j++) row[j] = c[j]! + (0.6 * gaussian(r)) / Math.sqrt(dim);
    l2NormaliseInPlace(row);
  }
  return out;
}

function exactScanMs(rows: Float32Array, n: number, dim: number): number {
  const queries = 5;
  const t0 = performance.now();
  let sink = 0;
  for (let q = 0; q < queries; q++) {
    const qo = q * dim;
    for (let i = 0; i < n; i++) {
      let s = 0;
      const o = i * dim;
      for (let j = 0; j < dim; j++) s += rows[o + j]! * rows[qo + j]!;
      if (s > sink) sink = s;
    }
  }
  return (performance.now() - t0) / queries;
}

/** The VectorIndex members the map reads, over rows in memory. */
function memoryIndex(rows: Float32Array, n: number, dim: number): VectorIndex {
  return {
    name: 'bench-v1',
    modelVersion: 'bench-model',
    dimension: dim,
    count: async () => n,
    async *scan(batchSize = 1000) {
      for (let i = 0; i < n; i += batchSize) {
        const page: VectorDocument[] = [];
        for (let j = i; j < Math.min(n, i + batchSize); j++) {
          page.push({
            id: `v${j}`,
            uri: `file:///bench/v${j}.png`,
            generation: '1',
            modelVersion: 'bench-model',
            vector: rows.slice(j * dim, (j + 1) * dim),
            labels: [],
            indexedAt: '2026-11-27T00:00:00Z',
          });
        }
        yield page;
      }
    },
  } as Partial<VectorIndex> as VectorIndex;
}

/** The longest gap between ticks of a 10 ms interval timer while `run` goes on: how long the event loop was held. */
async function stallsDuring(run: () => Promise<unknown>): Promise<{ maxStallMs: number; wallMs: number }> {
  const periodMs = 10;
  let last = performance.now();
  let maxStallMs = 0;
  const tick = () => {
    const now = performance.now();
    maxStallMs = Math.max(maxStallMs, now - last - periodMs);
    last = now;
  };
  const timer = setInterval(tick, periodMs);
  const t0 = performance.now();
  await run();
  const wallMs = performance.now() - t0;
  // A stall shows when the timer finally fires: give it the chance before stopping.
  await new Promise((r) => setTimeout(r, 3 * periodMs));
  clearInterval(timer);
  return { maxStallMs: Math.max(0, maxStallMs), wallMs };
}

export async function benchMap(options: { sizes: number[]; dim: number; umapMax: number; log?: (s: string) => void }): Promise<MapBenchResult> {
  const before = os.loadavg();
  const sizes: MapBenchSize[] = [];
  let eventLoop: MapBenchResult['eventLoop'] = null;
  for (const n of options.sizes) {
    const rows = clusteredRows(n, options.dim, n);
    const scan = exactScanMs(rows, n, options.dim);
    const view = computePcaView(rows, n, options.dim, DEFAULT_MAP_COMPUTE);
    let umapMs: number | null = null;
    if (n <= options.umapMax) umapMs = UmapLayout.fit(view.reduced, n, view.pca.count, DEFAULT_MAP_COMPUTE).ms;
    const size = { n, dim: options.dim, exactScanMs: scan, pcaMs: view.timings.pcaMs, clusterMs: view.timings.clusterMs, umapMs, bestK: view.bestK };
    sizes.push(size);
    for (const l of formatSize(size)) options.log?.(l);
    if (!eventLoop && n <= 20_000) {
      const index = memoryIndex(rows, n, options.dim);
      const map = new CollectionMap({ index: async () => index, queries: new RecentQueryVectors(), logger: silentLogger }, { umap: false });
      const worker = await stallsDuring(() => map.map({ sample: n, k: 'auto' }));
      await map.close();
      const inline = await stallsDuring(async () => computePcaView(rows, n, options.dim, DEFAULT_MAP_COMPUTE));
      eventLoop = { n, workerMaxStallMs: worker.maxStallMs, workerWallMs: worker.wallMs, inlineMaxStallMs: inline.maxStallMs, inlineWallMs: inline.wallMs };
      for (const l of formatEventLoop(eventLoop)) options.log?.(l);
    }
  }
  return { sizes, eventLoop, loadAverage: { before, after: os.loadavg() } };
}

const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function formatSize(r: MapBenchSize): string[] {
  const ratio = (ms: number) => `${Math.round(ms / r.exactScanMs)}× the scan`;
  return [
    `  ${r.n} vectors × ${r.dim}: baseline, one exact scan ${r.exactScanMs.toFixed(1)} ms`,
    `    PCA (basis on 3,000 rows, 50 components, all rows projected): ${s(r.pcaMs)} (${ratio(r.pcaMs)})`,
    `    k-means k=2..12 + silhouette (best k ${r.bestK}): ${s(r.clusterMs)} (${ratio(r.clusterMs)})`,
    `    UMAP (umap-js on the PCA-50 coordinates): ${r.umapMs === null ? 'not run at this size (--map-umap-max)' : `${s(r.umapMs)} (${ratio(r.umapMs)})`}`,
  ];
}

function formatEventLoop(e: NonNullable<MapBenchResult['eventLoop']>): string[] {
  return [
    `  main thread while the PCA view of ${e.n} vectors is computed: in the map worker, longest event-loop stall ${e.workerMaxStallMs.toFixed(0)} ms over ${s(e.workerWallMs)};`,
    `    baseline, the same computation inline: ${e.inlineMaxStallMs.toFixed(0)} ms over ${s(e.inlineWallMs)}`,
  ];
}

/** The machine's load around the run (the figures are only comparable on a calm machine). */
export function formatMapLoad(r: MapBenchResult): string {
  return `  load average before/after: ${r.loadAverage.before.map((v) => v.toFixed(1)).join(' ')} / ${r.loadAverage.after.map((v) => v.toFixed(1)).join(' ')}`;
}

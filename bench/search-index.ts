import { promises as fs } from 'node:fs';
import path from 'node:path';
import { LanceDbIndexCatalog } from '../shared/adapters/local/lancedb-catalog.js';
import type { LanceDbVectorIndex } from '../shared/adapters/local/lancedb-index.js';
import type { VectorDocument } from '../shared/ports/vector-index.js';
import { mulberry32 } from '../shared/training/prng.js';
import { dot, l2NormaliseInPlace } from '../shared/vector-math.js';

export interface SearchBenchResult {
  vectors: number;
  dimension: number;
  bulkUpsertDocsPerSecond: number;
  exact: { p50Ms: number; p99Ms: number };
  ann: { p50Ms: number; p99Ms: number; recallAt10: number; buildSeconds: number };
}

function gaussian(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

/**
 * Clustered unit vectors (a mixture of `clusters` Gaussian blobs), closer to real embeddings than
 * uniform noise, where every neighbour is equally far.
 */
function makeVectors(n: number, dim: number, clusters: number, seed: number): Float32Array[] {
  const r = mulberry32(seed);
  const centres = Array.from({ length: clusters }, () => l2NormaliseInPlace(Float32Array.from({ length: dim }, () => gaussian(r))));
  return Array.from({ length: n }, () => {
    const c = centres[Math.floor(r() * clusters)]!;
    // Noise of about 0.6 of the centre's norm: items of a cluster are related (cosine ≈ 0.7), as
    // real neighbours are, without being copies.
    return l2NormaliseInPlace(Float32Array.from(c, (x) => x + (0.6 * gaussian(r)) / Math.sqrt(dim)));
  });
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

function exactTopK(all: Float32Array[], q: Float32Array, k: number): number[] {
  const scores = all.map((v, i) => [dot(v, q), i] as const);
  scores.sort((a, b) => b[0] - a[0]);
  return scores.slice(0, k).map(([, i]) => i);
}

/**
 * The embedded index at scale: bulk upsert rate, exact (flat) search latency, then an ANN index
 * (IVF-PQ with exact re-ranking): its latency and recall@10 against exact search.
 */
export async function benchSearchIndex(work: string, n: number, dim: number, queries: number): Promise<SearchBenchResult> {
  const dir = path.join(work, 'search-bench');
  await fs.rm(dir, { recursive: true, force: true });
  const catalog = await LanceDbIndexCatalog.open(dir);
  try {
    const index = (await catalog.ensureLive('bench-model', dim)) as LanceDbVectorIndex;
    // Queries come from the same distribution as the corpus (held out, not indexed).
    const all = makeVectors(n + queries, dim, 200, 42);
    const vectors = all.slice(0, n);
    const qv = all.slice(n);
    const now = new Date().toISOString();
    const t0 = performance.now();
    const batch = 5000;
    for (let i = 0; i < n; i += batch) {
      const docs: VectorDocument[] = vectors.slice(i, i + batch).map((v, j) => ({
        id: `doc-${i + j}`,
        uri: `file:///bench/doc-${i + j}.png`,
        generation: '1',
        modelVersion: 'bench-model',
        vector: v,
        labels: [`c${(i + j) % 10}`],
        indexedAt: now,
      }));
      await index.upsert(docs);
    }
    const upsertRate = n / ((performance.now() - t0) / 1000);

    const truth = qv.map((q) => exactTopK(vectors, q, 10).map((i) => `doc-${i}`));
    const time = async () => {
      const ms: number[] = [];
      const got: string[][] = [];
      for (const q of qv) {
        const t = performance.now();
        const hits = await index.query(q, { k: 10, numCandidates: 100 });
        ms.push(performance.now() - t);
        got.push(hits.map((h) => h.id));
      }
      ms.sort((a, b) => a - b);
      return { p50Ms: percentile(ms, 50), p99Ms: percentile(ms, 99), got };
    };
    const exact = await time();
    const tb = performance.now();
    await index.createAnnIndex({ type: 'ivf_pq' });
    const buildSeconds = (performance.now() - tb) / 1000;
    const ann = await time();
    let found = 0;
    ann.got.forEach((ids, i) => (found += ids.filter((id) => truth[i]!.includes(id)).length));
    return {
      vectors: n,
      dimension: dim,
      bulkUpsertDocsPerSecond: upsertRate,
      exact: { p50Ms: exact.p50Ms, p99Ms: exact.p99Ms },
      ann: { p50Ms: ann.p50Ms, p99Ms: ann.p99Ms, recallAt10: found / (queries * 10), buildSeconds },
    };
  } finally {
    await catalog.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { LanceDbIndexCatalog } from '../shared/adapters/local/lancedb-catalog.js';
import type { LanceDbVectorIndex } from '../shared/adapters/local/lancedb-index.js';
import type { AnnParams, AnnType, VectorDocument } from '../shared/ports/vector-index.js';
import { chooseAnnParams } from '../shared/services/ann-maintenance.js';
import { mulberry32 } from '../shared/training/prng.js';
import { l2NormaliseInPlace } from '../shared/vector-math.js';

export interface Latency {
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
}

export interface AnnVariant extends Latency {
  nprobes: number;
  ef?: number;
  refineFactor: number;
  recallAt10: number;
}

export interface AnnResult {
  type: AnnType;
  /** The parameters the product chooses for this size (chooseAnnParams). */
  params: AnnParams;
  buildSeconds: number;
  indexBytes: number | null;
  /** The product's query settings first, then the other settings tried. */
  variants: AnnVariant[];
  /** Queries answered while this index was being built (over the previous index or a flat scan). */
  duringBuild: { answered: number; failed: number } & Latency;
}

export interface SearchBenchResult {
  vectors: number;
  dimension: number;
  bulkUpsertDocsPerSecond: number;
  /** Flat-scan latency as the table grows (the ANN threshold is read off this). */
  flatBySize: ({ rows: number } & Latency)[];
  exact: Latency;
  tableBytes: number;
  ann: AnnResult[];
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

function latency(ms: number[]): Latency {
  const s = [...ms].sort((a, b) => a - b);
  return { p50Ms: percentile(s, 50), p95Ms: percentile(s, 95), p99Ms: percentile(s, 99) };
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? await dirBytes(p) : (await fs.stat(p)).size;
  }
  return total;
}

async function timeQueries(index: LanceDbVectorIndex, qv: Float32Array[]): Promise<{ ms: number[]; got: string[][] }> {
  const ms: number[] = [];
  const got: string[][] = [];
  for (const q of qv) {
    const t = performance.now();
    const hits = await index.query(q, { k: 10 });
    ms.push(performance.now() - t);
    got.push(hits.map((h) => h.id));
  }
  return { ms, got };
}

/** Query settings tried beside the product's, per index type: more or fewer probes / candidates, more or less re-ranking. */
function variantsOf(p: AnnParams): Pick<AnnParams, 'nprobes' | 'ef' | 'refineFactor'>[] {
  if (p.type === 'ivf_pq') {
    return [
      { nprobes: p.nprobes, refineFactor: p.refineFactor },
      { nprobes: p.nprobes, refineFactor: 10 },
      { nprobes: p.nprobes, refineFactor: 40 },
      { nprobes: Math.min(p.numPartitions, p.nprobes * 2), refineFactor: p.refineFactor },
    ];
  }
  // The product's setting, then a sweep of the search breadth (ef) with and without exact re-ranking:
  // what recall each costs at this size.
  return [
    { nprobes: p.nprobes, ef: p.ef, refineFactor: p.refineFactor },
    { nprobes: p.nprobes, ef: 100, refineFactor: 0 },
    { nprobes: p.nprobes, ef: 100, refineFactor: 2 },
    { nprobes: p.nprobes, ef: 200, refineFactor: 5 },
    { nprobes: p.nprobes, ef: 400, refineFactor: 5 },
    { nprobes: p.nprobes, ef: 800, refineFactor: 10 },
  ];
}

/**
 * The embedded index at scale: bulk upsert rate; flat-scan latency as the table grows (where the ANN
 * threshold sits); then each ANN type built with the parameters the product chooses for this size,
 * its build time, size, and latency and recall@10 against the exact (flat) search for the product's
 * query settings and a few others. While the second index builds, queries keep running (over the
 * first one) and are counted.
 */
export async function benchSearchIndex(
  work: string,
  n: number,
  dim: number,
  queries: number,
  types: AnnType[] = ['ivf_pq', 'ivf_hnsw_sq'],
): Promise<SearchBenchResult> {
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
    const checkpoints = [5_000, 10_000, 25_000, 50_000].filter((c) => c < n);
    const flatBySize: SearchBenchResult['flatBySize'] = [];
    let upsertMs = 0;
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
      const t0 = performance.now();
      await index.upsert(docs);
      upsertMs += performance.now() - t0;
      const rows = i + docs.length;
      if (checkpoints.includes(rows)) flatBySize.push({ rows, ...latency((await timeQueries(index, qv.slice(0, 20))).ms) });
    }
    await index.compact();
    const exactRun = await timeQueries(index, qv);
    const exact = latency(exactRun.ms);
    flatBySize.push({ rows: n, ...exact });
    const truth = exactRun.got;
    const tableBytes = await dirBytes(dir);

    const ann: AnnResult[] = [];
    for (const type of types) {
      const params = chooseAnnParams(n, dim, type);
      // Queries during the build: over the index built before (or the flat scan for the first).
      const during: number[] = [];
      let failed = 0;
      let building = true;
      const tb = performance.now();
      const build = index.buildAnn(params).finally(() => (building = false));
      for (let i = 0; building; i = (i + 1) % qv.length) {
        const t = performance.now();
        await index.query(qv[i]!, { k: 10 }).then(
          () => during.push(performance.now() - t),
          () => failed++,
        );
        // About one query a second: a user clicking, not a load test stealing the build's CPU.
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
      await build;
      const buildSeconds = (performance.now() - tb) / 1000;
      const status = await index.annStatus();
      const variants: AnnVariant[] = [];
      for (const v of variantsOf(params)) {
        await index.tuneQuery(v);
        const run = await timeQueries(index, qv);
        let found = 0;
        run.got.forEach((ids, i) => (found += ids.filter((id) => truth[i]!.includes(id)).length));
        variants.push({ nprobes: v.nprobes, ef: v.ef, refineFactor: v.refineFactor, ...latency(run.ms), recallAt10: found / (qv.length * 10) });
      }
      await index.tuneQuery(params);
      ann.push({
        type,
        params,
        buildSeconds,
        indexBytes: status.sizeBytes,
        variants,
        duringBuild: { answered: during.length, failed, ...(during.length > 0 ? latency(during) : { p50Ms: NaN, p95Ms: NaN, p99Ms: NaN }) },
      });
    }
    return { vectors: n, dimension: dim, bulkUpsertDocsPerSecond: n / (upsertMs / 1000), flatBySize, exact, tableBytes, ann };
  } finally {
    await catalog.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const f1 = (x: number) => x.toFixed(1);
const lat = (l: Latency) => `p50 ${f1(l.p50Ms)} ms, p95 ${f1(l.p95Ms)} ms, p99 ${f1(l.p99Ms)} ms`;
const mb = (b: number | null) => (b === null ? '?' : `${(b / 1e6).toFixed(0)} MB`);

/** The section's lines for `npm run bench`. */
export function formatSearchIndex(r: SearchBenchResult): string[] {
  const out = [
    `  bulk upsert: ${r.bulkUpsertDocsPerSecond.toFixed(0)} docs/s (${r.dimension}-d); table on disk ${mb(r.tableBytes)}`,
    ...r.flatBySize.map((f) => `  flat (exact) scan at ${f.rows} rows: ${lat(f)}`),
  ];
  for (const a of r.ann) {
    const p = a.params;
    const shape =
      p.type === 'ivf_pq'
        ? `${p.numPartitions} partitions, ${p.numSubVectors} sub-vectors`
        : `${p.numPartitions} graph(s), m ${p.m}, ef_construction ${p.efConstruction}`;
    out.push(`  ${p.type} (${shape}): build ${f1(a.buildSeconds)} s, index ${mb(a.indexBytes)}`);
    out.push(`    queries during the build: ${a.duringBuild.answered} answered, ${a.duringBuild.failed} failed, ${lat(a.duringBuild)}`);
    a.variants.forEach((v, i) => {
      const knobs = `nprobes ${v.nprobes}${v.ef !== undefined ? `, ef ${v.ef}` : ''}, refine ×${v.refineFactor}`;
      out.push(
        `    ${i === 0 ? 'product default' : 'variant        '} (${knobs}): ${lat(v)} (${f1(r.exact.p50Ms / v.p50Ms)}× faster than flat at p50), recall@10 ${v.recallAt10.toFixed(3)}`,
      );
    });
  }
  return out;
}

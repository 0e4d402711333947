import type { Logger } from '../logger.js';
import { isAnnMaintainable, type AnnMaintainable, type AnnParams, type AnnStatus, type AnnType, type VectorIndex } from '../ports/vector-index.js';

/**
 * The embedded index's ANN structure, kept up by the product: below `minRows` live rows every query
 * is an exact flat scan (fast enough there); past it an ANN index is built in the background, rows
 * written after a build stay searchable (LanceDB scans un-indexed rows exactly beside the index) and
 * are folded in once there are `foldInRows` of them, and the index is retrained with parameters
 * chosen again once the collection has grown `rebuildGrowth`-fold since its build. Builds never hold
 * the table's write lock: ingest and search go on meanwhile. One pass at a time (single-flight).
 */
export interface AnnPolicy {
  /** Live rows from which the ANN index is built. */
  minRows: number;
  type: AnnType;
  /** Un-indexed rows that trigger a fold-in (each costs a flat scan of itself in every query). */
  foldInRows: number;
  /** Retrain once the collection has grown by this factor since the build (its partitions were sized for fewer rows). */
  rebuildGrowth: number;
}

/**
 * Defaults, by measurement (/tmp/notes/ann-figures.md, BENCHMARKS.md): at the default model's 1,632
 * dimensions on 2 cores a flat scan costs about 10–20 µs a row, so 5,000 rows answer in 50–100 ms
 * and 100k rows in 1–2 s, while an index over 5,000 rows builds in a few seconds.
 */
export const DEFAULT_ANN_POLICY: AnnPolicy = { minRows: 5_000, type: 'ivf_hnsw_sq', foldInRows: 1_000, rebuildGrowth: 2 };

/** IVF_PQ trains 256 PQ centroids per sub-vector: fewer rows cannot train it. */
export const MIN_TRAINING_ROWS = 256;

/** Re-ranking with exact distances: candidates = k × this. */
const PQ_REFINE = 20;
/** Rows per HNSW graph (one IVF partition each): larger graphs cost memory to build; queries visit every graph. */
const HNSW_ROWS_PER_PARTITION = 1_000_000;
/** Graphs above this many rows are searched wider (see chooseAnnParams). */
const LARGE_GRAPH_ROWS = 250_000;

/**
 * Build and query parameters from the collection's size and dimension (the unit tests pin each case):
 * - IVF_PQ: √rows partitions (LanceDB's own default, clamped to [1, 4096]), a tenth of them probed
 *   (at least 20); about 8 dimensions per PQ sub-vector (coarser codes lose true neighbours before
 *   re-ranking can recover them), and 20 × k candidates re-ranked exactly.
 * - IVF_HNSW_SQ: one graph per million rows, all of them visited; m = 16 links, ef_construction 150;
 *   a candidate list of 100 (at least 10 × k at query time), re-ranked exactly (2 × k) to undo the
 *   8-bit scalar quantisation's ordering errors. Graphs of more than 250k rows search wider (ef 800)
 *   and re-rank 10 × k: at 1M rows ef 100 / 2 × k kept recall@10 at 0.835 (1,632-d) and 0.927
 *   (256-d), ef 400 / 5 × k at 0.972 and 0.996; ef 800 / 10 × k reached 0.992 (1,632-d, p99 16.9 ms)
 *   and 0.999 (256-d, p99 16.0 ms) (BENCHMARKS.md, search at 1M).
 */
export function chooseAnnParams(rows: number, dimension: number, type: AnnType): AnnParams {
  if (!Number.isInteger(rows) || rows < 0) throw new RangeError(`rows must be a whole number ≥ 0, got ${rows}`);
  if (!Number.isInteger(dimension) || dimension < 1) throw new RangeError(`dimension must be a whole number ≥ 1, got ${dimension}`);
  if (type === 'ivf_pq') {
    const numPartitions = Math.max(1, Math.min(4096, Math.round(Math.sqrt(rows))));
    return {
      type,
      rows,
      numPartitions,
      numSubVectors: pqSubVectors(dimension),
      nprobes: Math.min(numPartitions, Math.max(20, Math.ceil(numPartitions / 10))),
      refineFactor: PQ_REFINE,
    };
  }
  const numPartitions = Math.max(1, Math.ceil(rows / HNSW_ROWS_PER_PARTITION));
  const large = rows / numPartitions > LARGE_GRAPH_ROWS;
  return { type, rows, numPartitions, m: 16, efConstruction: 150, nprobes: numPartitions, ef: large ? 800 : 100, refineFactor: large ? 10 : 2 };
}

/** About 8 dimensions per sub-vector: the largest divisor of `dimension` not above dimension / 8 (SIMD wants whole sub-vectors). */
export function pqSubVectors(dimension: number): number {
  const max = Math.max(1, Math.floor(dimension / 8));
  for (let d = max; d > 1; d--) if (dimension % d === 0) return d;
  return 1;
}

export type AnnAction =
  { kind: 'none'; reason: string } | { kind: 'build' | 'rebuild'; reason: string; params: AnnParams } | { kind: 'fold-in'; reason: string };

/** What one maintenance pass does, from the live row count and the index's state. */
export function planAnn(rows: number, dimension: number, status: AnnStatus, policy: AnnPolicy): AnnAction {
  if (status.state === 'building') return { kind: 'none', reason: 'a build is running' };
  const minRows = Math.max(policy.minRows, MIN_TRAINING_ROWS);
  if (status.state === 'none') {
    if (rows < minRows) return { kind: 'none', reason: `${rows} rows, below the ANN threshold of ${minRows}: flat scan` };
    return { kind: 'build', reason: `${rows} rows reached the ANN threshold of ${minRows}`, params: chooseAnnParams(rows, dimension, policy.type) };
  }
  const built = isAnnParams(status.params) ? status.params : null;
  if (!built) return { kind: 'rebuild', reason: 'the index was built without recorded parameters', params: chooseAnnParams(rows, dimension, policy.type) };
  if (built.type !== policy.type) {
    return {
      kind: 'rebuild',
      reason: `the index is ${built.type}, the configured type is ${policy.type}`,
      params: chooseAnnParams(rows, dimension, policy.type),
    };
  }
  if (rows >= Math.max(minRows, built.rows * policy.rebuildGrowth)) {
    return {
      kind: 'rebuild',
      reason: `${rows} rows, ${policy.rebuildGrowth}× the ${built.rows} its parameters were chosen for`,
      params: chooseAnnParams(rows, dimension, policy.type),
    };
  }
  if (status.rowsUnindexed >= policy.foldInRows) return { kind: 'fold-in', reason: `${status.rowsUnindexed} rows written since the last build or fold-in` };
  return { kind: 'none', reason: 'up to date' };
}

export function isAnnParams(p: AnnStatus['params']): p is AnnParams {
  return p !== null && (p.type === 'ivf_pq' || p.type === 'ivf_hnsw_sq') && typeof p.rows === 'number' && typeof p.numPartitions === 'number';
}

/**
 * Runs `planAnn` against the live index every `checkSeconds` (from `start`) or when triggered, one
 * pass at a time: a trigger during a pass returns that pass. A failed pass is logged with its error
 * and tried again at the next check. Indexes the product does not maintain (OpenSearch builds its
 * graphs itself) are skipped.
 */
export class AnnMaintenance {
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<AnnAction> | null = null;
  private stopped = false;

  constructor(
    private readonly liveIndex: () => Promise<VectorIndex | null>,
    private readonly policy: AnnPolicy,
    private readonly logger: Logger,
    private readonly checkSeconds = 30,
  ) {}

  /** Checks now, then every `checkSeconds` (the timer never keeps the process alive). */
  start(): void {
    if (this.timer) return;
    this.stopped = false;
    this.timer = setInterval(() => void this.runOnce(), this.checkSeconds * 1000);
    this.timer.unref();
    void this.runOnce();
  }

  /**
   * Stops scheduling passes. A build already running is not waited for (it cannot be cancelled and
   * may take minutes): if the process exits first it commits nothing and the next start builds again.
   */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The pass running now, if any (tests and `ingest` wait for it). */
  get running(): Promise<AnnAction> | null {
    return this.inFlight;
  }

  /** One maintenance pass (single-flight); resolves to what it did, never rejects. */
  runOnce(): Promise<AnnAction> {
    this.inFlight ??= this.pass().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  private async pass(): Promise<AnnAction> {
    let index: VectorIndex | null = null;
    try {
      index = await this.liveIndex();
      if (!isAnnMaintainable(index)) return { kind: 'none', reason: 'the index engine keeps its own ANN structure' };
      return await this.maintain(index);
    } catch (err) {
      this.logger.error({ err, index: index?.name }, 'ANN index maintenance failed; retried at the next check');
      return { kind: 'none', reason: 'failed' };
    }
  }

  private async maintain(index: VectorIndex & AnnMaintainable): Promise<AnnAction> {
    const plan = planAnn(await index.count(), index.dimension, await index.annStatus(), this.policy);
    if (plan.kind === 'none' || this.stopped) return plan;
    const started = performance.now();
    this.logger.info(
      { index: index.name, action: plan.kind, reason: plan.reason, ...('params' in plan ? { params: plan.params } : {}) },
      'ANN index maintenance',
    );
    if (plan.kind === 'fold-in') await index.foldInAnn();
    else await index.buildAnn(plan.params);
    this.logger.info(
      { index: index.name, action: plan.kind, seconds: Number(((performance.now() - started) / 1000).toFixed(1)) },
      'ANN index maintenance done',
    );
    return plan;
  }
}

/** One line for `imgsearch status`: the ANN index's state, rows indexed and waiting, type, parameters and last build. */
export function describeAnnStatus(s: AnnStatus | null): string {
  if (!s) return 'not reported by this index';
  if (s.maintainedBy === 'engine') return `${s.type ?? 'ANN'} kept by the search engine${s.params ? ` (${describeParams(s.params)})` : ''}`;
  const last = s.lastBuildAt ? `; last built ${s.lastBuildAt}${s.lastBuildSeconds !== null ? ` in ${s.lastBuildSeconds} s` : ''}` : '';
  const building = s.building ? `building ${s.building.params.type} (${describeParams(s.building.params)}) since ${s.building.startedAt}` : '';
  // No index in use yet (none, or the first build running).
  if (s.type === null) {
    return `${building || 'none'}: every search is an exact scan of ${s.rowsUnindexed} rows${building ? ' until it is ready' : ''}`;
  }
  const ready =
    `${s.type} over ${s.rowsIndexed} rows, ${s.rowsUnindexed} not yet folded in (scanned exactly beside it)` +
    `${s.params ? `; ${describeParams(s.params)}` : ''}${s.sizeBytes !== null ? `; ${(s.sizeBytes / 1e6).toFixed(1)} MB` : ''}${last}`;
  return building ? `${building}; meanwhile searches use ${ready}` : `ready: ${ready}`;
}

function describeParams(p: AnnStatus['params']): string {
  if (!p) return '';
  if (!isAnnParams(p))
    return Object.entries(p)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
  const shape =
    p.type === 'ivf_pq'
      ? `${p.numPartitions} partitions, ${p.numSubVectors} sub-vectors`
      : `${p.numPartitions} graph(s), m ${p.m}, ef_construction ${p.efConstruction}, ef ${p.ef}`;
  return `${shape}, ${p.nprobes} probed, exact re-rank of ${p.refineFactor}×k, chosen for ${p.rows} rows`;
}

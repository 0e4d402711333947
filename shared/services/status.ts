import { TOPICS, type RejectedImage } from '../contracts.js';
import type { Embedder } from '../ports/embedder.js';
import type { DeadLetter, EventBus } from '../ports/event-bus.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { AnnStatus, VectorIndex } from '../ports/vector-index.js';
import type { StageFault } from './pipeline-health.js';

export interface PipelineStatus {
  indexed: number;
  pending: number;
  queues: Record<string, { ready: number; inflight: number; deadLettered: number }>;
  rejected: { count: number; byReason: Record<string, number>; items: RejectedImage[] };
  deadLettered: { count: number; items: (DeadLetter & { topic: string })[] };
  model: { version: string; dimension: number; hasTextTower: boolean; name: string };
  index: { name: string; modelVersion: string } | null;
  /** The live index's ANN index: none (flat scan) / building / ready, rows indexed and not yet, type, parameters, last build. */
  ann: AnnStatus | null;
  /** Objects neither indexed nor rejected, each with why (not an image, a sidecar, hidden, a link…). */
  ignored: { count: number; byReason: Record<string, number>; items: RejectedImage[] };
  /** Pipeline stages failing now (retried with backoff), e.g. "index writes failing since …: ENOSPC …". */
  faults: StageFault[];
  /**
   * When the reading of the counts (indexed, pending, queues, rejected, dead letters, ignored,
   * ann) started (ISO 8601): a served {@link StatusSnapshots} figure may be a little older than the answer.
   * Model, index and faults are always as of the answer.
   */
  asOf: string;
}

/** The part of a status that costs I/O to read: listings, the index count, rejection records. */
type StatusCounts = Pick<PipelineStatus, 'indexed' | 'pending' | 'queues' | 'rejected' | 'deadLettered' | 'ann' | 'ignored' | 'asOf'>;

export interface StatusDeps {
  bus: EventBus;
  index: VectorIndex | null;
  rejections: RejectionLog;
  /** The model's identity and shape (a loaded embedder, or the same fields from its manifest). */
  embedder: Pick<Embedder, 'modelVersion' | 'dimension' | 'hasTextTower' | 'manifest'>;
  listLimit?: number;
  ignored?: RejectionLog;
  faults?: StageFault[];
  /**
   * For a status asked for again and again (`GET /api/status`, every page's poll): records are
   * re-read only when their count changed or `maxAgeMs` passed, and at most once per
   * `minIntervalMs`; the count itself is always current. Without it every record is read.
   */
  rejectionCache?: RecordCacheOptions;
  /**
   * For a server answering many polls while the pipeline works: the counts come from this
   * process's last reading, refreshed in the background (see {@link StatusSnapshots}); the model,
   * the index and the faults are read for each answer. Without it every count is read now.
   */
  snapshots?: StatusSnapshots;
}

/** What `imgsearch status`, `GET /api/status` and the web page show. */
export async function pipelineStatus(deps: StatusDeps): Promise<PipelineStatus> {
  const limit = deps.listLimit ?? 100;
  // A count belongs to one index: another live index (a model switch, an index rollback) never shows the previous one's figures.
  const key = deps.index ? `${deps.index.name}\u0000${deps.index.modelVersion}\u0000${limit}` : `\u0000${limit}`;
  const counts = deps.snapshots ? await deps.snapshots.get(key, () => readCounts(deps, limit)) : await readCounts(deps, limit);
  return {
    ...counts,
    model: {
      version: deps.embedder.modelVersion,
      dimension: deps.embedder.dimension,
      hasTextTower: deps.embedder.hasTextTower,
      name: deps.embedder.manifest.name,
    },
    index: deps.index ? { name: deps.index.name, modelVersion: deps.index.modelVersion } : null,
    faults: deps.faults ?? [],
  };
}

/** Every count read now; the parts are read side by side (each waits on I/O: listings, the index, records). */
async function readCounts(deps: StatusDeps, limit: number): Promise<StatusCounts> {
  const asOf = new Date().toISOString();
  const topics = [TOPICS.imageEvents, TOPICS.embeddings];
  const noneIgnored: PipelineStatus['ignored'] = { count: 0, byReason: {}, items: [] };
  const [stats, rejected, dead, indexed, ann, ignored] = await Promise.all([
    Promise.all(topics.map((t) => deps.bus.stats(t))),
    summarize(deps.rejections, limit, deps.rejectionCache),
    Promise.all(topics.map(async (t) => (await deps.bus.listDeadLetters(t, limit)).map((d) => ({ ...d, topic: t })))),
    deps.index ? deps.index.count() : 0,
    deps.index?.annStatus?.() ?? null,
    deps.ignored ? summarize(deps.ignored, limit, deps.rejectionCache) : noneIgnored,
  ]);
  return {
    indexed,
    pending: stats.reduce((n, s) => n + s.ready + s.inflight, 0),
    queues: Object.fromEntries(topics.map((t, i) => [t, stats[i]!])),
    rejected,
    deadLettered: { count: stats.reduce((n, s) => n + s.deadLettered, 0), items: dead.flat() },
    ann: ann ?? null,
    ignored,
    asOf,
  };
}

export interface StatusSnapshotOptions {
  /** Counts younger than this are served as they are (default 1 s). */
  freshMs?: number;
  /**
   * Counts older than `freshMs` but younger than this are served at once while one reading runs
   * in the background (stale-while-revalidate); older ones (a server nobody asked for a while)
   * make the caller wait for the new reading (default 10 s).
   */
  maxStaleMs?: number;
  now?: () => number;
}

interface Snapshot {
  key: string;
  /** When the reading started (ms): a reading taken while things changed is as old as its start. */
  at: number;
  counts: StatusCounts;
}

/**
 * The counts of the last status, kept by a server so that a poll never waits on the pipeline's
 * I/O. Reading them (queue listings, the index count, rejection records) takes from a few ms to
 * a second while an ingest burst keeps the disk, the thread pool and the index busy; a poll is
 * answered from the last reading instead (its age in `asOf`), and at most one reading runs at a
 * time however many polls arrive. A snapshot belongs to one key (the live index): another index
 * waits for its own reading. `invalidate()` makes the next status wait for a new reading.
 */
export class StatusSnapshots {
  private last: Snapshot | null = null;
  private reading: { key: string; generation: number; promise: Promise<Snapshot> } | null = null;
  /** Bumped by invalidate(): a reading started before it is not kept. */
  private generation = 0;

  constructor(private readonly options: StatusSnapshotOptions = {}) {}

  /** The counts for `key`: the last reading when it is recent enough, else a new one (shared by concurrent callers). */
  async get(key: string, read: () => Promise<StatusCounts>): Promise<StatusCounts> {
    const last = this.last?.key === key ? this.last : null;
    const age = last ? this.now() - last.at : Infinity;
    if (last && age < (this.options.freshMs ?? 1_000)) return last.counts;
    const reading = this.refresh(key, read);
    if (last && age < (this.options.maxStaleMs ?? 10_000)) {
      // Served stale: the reading's failure is seen by a later caller that waits for one.
      reading.catch(() => undefined);
      return last.counts;
    }
    return (await reading).counts;
  }

  /** The next status waits for a new reading (the model or the live index just changed). */
  invalidate(): void {
    this.generation += 1;
    this.last = null;
    this.reading = null;
  }

  private refresh(key: string, read: () => Promise<StatusCounts>): Promise<Snapshot> {
    if (this.reading?.key === key && this.reading.generation === this.generation) return this.reading.promise;
    const generation = this.generation;
    const at = this.now();
    const promise = read().then((counts) => {
      const snapshot = { key, at, counts };
      // A reading that started before invalidate(), or before the one kept now, is not kept.
      if (generation === this.generation && (this.last === null || this.last.at <= at)) this.last = snapshot;
      return snapshot;
    });
    const slot = { key, generation, promise };
    this.reading = slot;
    const done = (): void => {
      if (this.reading === slot) this.reading = null;
    };
    promise.then(done, done);
    return promise;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

export interface RecordCacheOptions {
  /** Records are read at most once per this many ms, whatever changed (default 2 s). */
  minIntervalMs?: number;
  /** Records are read again after this many ms even if their count did not change (default 30 s). */
  maxAgeMs?: number;
  now?: () => number;
}

type Summary = PipelineStatus['rejected'];
interface CachedSummary {
  /** When the summary was read (ms), or null before the first read completed. */
  at: number | null;
  summary: Summary;
  refresh: Promise<Summary> | null;
}

/** Per log and list length: the last summary read (see `rejectionCache`); kept only as long as the log is. */
const summaries = new WeakMap<RejectionLog, Map<number, CachedSummary>>();

/** Count, reasons and the newest `limit` records of a log, read with the bound of `cache` when given. */
async function summarize(log: RejectionLog, limit: number, cache?: RecordCacheOptions): Promise<Summary> {
  if (!cache) return readSummary(log, limit);
  const now = cache.now ?? Date.now;
  let perLimit = summaries.get(log);
  if (!perLimit) summaries.set(log, (perLimit = new Map()));
  // The listing is cheap (no record is read): the count is always current.
  const count = await log.count();
  const cached = perLimit.get(limit);
  if (cached && cached.at !== null) {
    const age = now() - cached.at;
    const fresh = age < (cache.minIntervalMs ?? 2_000) || (count === cached.summary.count && age < (cache.maxAgeMs ?? 30_000));
    if (fresh || cached.refresh) return { ...cached.summary, count };
  }
  const entry: CachedSummary = cached ?? { at: null, summary: { count, byReason: {}, items: [] }, refresh: null };
  perLimit.set(limit, entry);
  if (!entry.refresh) {
    // Concurrent callers share one read.
    entry.refresh = readSummary(log, limit).finally(() => (entry.refresh = null));
    entry.refresh.then(
      (summary) => {
        entry.summary = summary;
        entry.at = now();
      },
      () => undefined,
    );
  }
  return { ...(await entry.refresh), count };
}

async function readSummary(log: RejectionLog, limit: number): Promise<Summary> {
  const items = await log.list(100_000);
  const byReason: Record<string, number> = {};
  for (const r of items) byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
  items.sort((a, b) => b.at.localeCompare(a.at));
  return { count: items.length, byReason, items: items.slice(0, limit) };
}

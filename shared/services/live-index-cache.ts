import type { VectorIndex } from '../ports/vector-index.js';

/**
 * How long a process reuses the live index (the alias target) before asking the catalog again:
 * the longest a search, an upsert or the local pipeline keeps using an index after its alias moved
 * (reindex, promotion, rollback). Asking is one small request (OpenSearch `_alias`, the LanceDB
 * catalog file), so a few seconds cost nothing and keep every path within the same bound.
 */
export const LIVE_INDEX_TTL_MS = 5_000;

/**
 * The live index, looked up at most once per {@link LIVE_INDEX_TTL_MS} (concurrent callers share
 * one lookup). "No live index yet" and failed lookups are not kept: the next call asks again.
 * Used by the cloud search service and upsert function and by the local runtime alike.
 */
export class LiveIndexCache {
  private cached: { at: number; index: VectorIndex } | null = null;
  private pending: Promise<VectorIndex | null> | null = null;

  /**
   * @param lookup The alias target (`catalog.live()`), or locally `catalog.ensureLive(…)`, which
   *   also creates the first index.
   */
  constructor(
    private readonly lookup: () => Promise<VectorIndex | null>,
    private readonly options: { now?: () => number } = {},
  ) {}

  async get(): Promise<VectorIndex | null> {
    if (this.cached && this.now() - this.cached.at < LIVE_INDEX_TTL_MS) return this.cached.index;
    this.pending ??= this.lookup()
      .then((index) => {
        this.cached = index ? { at: this.now(), index } : null;
        return index;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }

  /** The last index found, without asking (null before the first lookup found one). */
  peek(): VectorIndex | null {
    return this.cached?.index ?? null;
  }

  /** The next `get()` asks the catalog (the model just changed, so the alias may have moved). */
  invalidate(): void {
    this.cached = null;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

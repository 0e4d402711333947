import { z } from 'zod';
import { ParseError } from '../errors.js';
import type { SearchEventSource } from '../ports/search-events.js';

/**
 * Prediction monitoring: what search does for users, as events, and the figures made of them.
 *
 * **Events.** Every search answered emits one {@link SearchMonitorEvent} (kind, model and index
 * version, latency split, k, result count, top and k-th score, zero-result flag, query id); every
 * click accepted by `/api/feedback` emits a {@link FeedbackMonitorEvent} carrying the same query id
 * (the join that gives click-through); every image that becomes searchable emits a
 * {@link FreshnessMonitorEvent} (object written → vector in the live index). Events hold no query
 * vector, no query text and no image: only what the figures need. Locally they are JSON lines
 * (shared/adapters/local/search-event-log.ts), in the cloud structured log entries that log-based
 * metrics count (shared/adapters/gcp/cloud-logging-search-events.ts, infra/components/monitoring.ts).
 *
 * **Figures** ({@link monitorFigures}): per UTC hour or day, searches by kind, zero-result and
 * low-score counts and rates, latency percentiles (nearest rank: the smallest value with at least
 * p % of the values at or below it, so p50 ≤ p95 ≤ max always), top scores, clicks joined to their
 * search by query id (counted in the search's bucket; click-through = clicks / searches), and
 * freshness lag percentiles.
 */

/** Bumped only when a field is removed or changes meaning (readers skip events of other versions). */
export const MONITOR_EVENT_VERSION = 1 as const;

const kind = z.enum(['image', 'text', 'similar']);
const ms = z.number().finite().min(0);

export const searchMonitorEventSchema = z.object({
  monitor: z.literal('search'),
  v: z.literal(MONITOR_EVENT_VERSION),
  /** When the answer was sent, ISO 8601. */
  at: z.iso.datetime(),
  /** The answer's id (the one its feedback token carries). */
  queryId: z.string().min(1).max(64),
  kind,
  /** The model that made the query vector (the live index's model). */
  modelVersion: z.string(),
  /** The physical index that answered (`images-v3`). */
  indexVersion: z.string(),
  k: z.number().int().min(1),
  resultCount: z.number().int().min(0),
  /** Score of the best result; null when there is none. */
  topScore: z.number().nullable(),
  /** Score of the k-th result; null when fewer than k came back. */
  kthScore: z.number().nullable(),
  zeroResult: z.boolean(),
  /**
   * Milliseconds: `embed` getting the query vector (the model for image and text queries, the
   * stored vector's lookup for `similar`), `index` the nearest-neighbour query, `total` the whole
   * search service call.
   */
  latencyMs: z.object({ embed: ms, index: ms, total: ms }),
});

export const feedbackMonitorEventSchema = z.object({
  monitor: z.literal('feedback'),
  v: z.literal(MONITOR_EVENT_VERSION),
  at: z.iso.datetime(),
  /** The search answer clicked in (joins {@link SearchMonitorEvent.queryId}). */
  queryId: z.string().min(1).max(64),
  kind,
  action: z.enum(['open', 'more-like-this']),
});

export const freshnessMonitorEventSchema = z.object({
  monitor: z.literal('freshness'),
  v: z.literal(MONITOR_EVENT_VERSION),
  /** When the vector was written to the live index. */
  at: z.iso.datetime(),
  /** The document id (a hash of bucket and name, no file name). */
  id: z.string().min(1).max(512),
  modelVersion: z.string(),
  /** Upload → searchable: from the object's write time (its event time) to the upsert. */
  lagMs: ms,
});

export const monitorEventSchema = z.discriminatedUnion('monitor', [searchMonitorEventSchema, feedbackMonitorEventSchema, freshnessMonitorEventSchema]);

export type SearchMonitorEvent = z.infer<typeof searchMonitorEventSchema>;
export type FeedbackMonitorEvent = z.infer<typeof feedbackMonitorEventSchema>;
export type FreshnessMonitorEvent = z.infer<typeof freshnessMonitorEventSchema>;
export type MonitorEvent = z.infer<typeof monitorEventSchema>;

/** The log message of each event kind (the cloud adapter writes it; the console shows it). */
export const MONITOR_EVENT_MESSAGES: Record<MonitorEvent['monitor'], string> = {
  search: 'search answered',
  feedback: 'search result clicked',
  freshness: 'image searchable',
};

/** A search event from what the search service measured (scores are cosine similarities, best first). */
export function searchEvent(fields: {
  at: Date;
  queryId: string;
  kind: SearchMonitorEvent['kind'];
  modelVersion: string;
  indexVersion: string;
  k: number;
  scores: readonly number[];
  latencyMs: SearchMonitorEvent['latencyMs'];
}): SearchMonitorEvent {
  const { scores, k } = fields;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  return {
    monitor: 'search',
    v: MONITOR_EVENT_VERSION,
    at: fields.at.toISOString(),
    queryId: fields.queryId,
    kind: fields.kind,
    modelVersion: fields.modelVersion,
    indexVersion: fields.indexVersion,
    k,
    resultCount: scores.length,
    topScore: scores.length > 0 ? scores[0]! : null,
    kthScore: scores.length >= k ? scores[k - 1]! : null,
    zeroResult: scores.length === 0,
    latencyMs: { embed: round(fields.latencyMs.embed), index: round(fields.latencyMs.index), total: round(fields.latencyMs.total) },
  };
}

// ---------------------------------------------------------------------------------------------
// Figures

export type MonitorGranularity = 'hour' | 'day';

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** The longest window `--since` accepts (retention keeps 30 days by default). */
export const MAX_SINCE_MS = 366 * UNIT_MS.d;
/** Most buckets one answer holds (31 days by hour). */
export const MAX_BUCKETS = 31 * 24 + 1;

/** `90m`, `24h`, `7d` → milliseconds; anything else is a ParseError naming the accepted forms. */
export function parseSince(value: string): number {
  const m = /^(\d{1,6})([mhd])$/.exec(value.trim());
  const n = m ? Number(m[1]) : NaN;
  if (!m || n <= 0) throw new ParseError(`since: expected a duration such as 90m, 24h or 7d (minutes, hours or days), got "${value}"`);
  const out = n * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (out > MAX_SINCE_MS) throw new ParseError(`since: at most 366d, got "${value}"`);
  return out;
}

/** Percentiles by nearest rank, and the maximum; null for no values. */
export interface Spread {
  p50: number;
  p95: number;
  max: number;
}

function spread(values: number[]): Spread | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const rank = (p: number) => sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
  return { p50: rank(0.5), p95: rank(0.95), max: sorted[sorted.length - 1]! };
}

const rate = (n: number, of: number): number | null => (of === 0 ? null : n / of);

/** One row of the figures: a UTC hour or day, or the whole window (`totals`). */
export interface MonitorBucket {
  start: string;
  end: string;
  searches: number;
  byKind: { image: number; text: number; similar: number };
  zeroResults: number;
  /** zeroResults / searches; null without searches. */
  zeroResultRate: number | null;
  /** Searches whose top score is below the low-score threshold (zero-result searches excluded). */
  lowScore: number;
  lowScoreRate: number | null;
  latencyMs: { total: Spread | null; embed: Spread | null; index: Spread | null };
  topScore: { p50: number; mean: number; min: number } | null;
  /** Clicks on results of this bucket's searches (joined by query id). */
  clicks: number;
  /** Searches with at least one click. */
  clickedSearches: number;
  /** clicks / searches; null without searches. */
  clickThroughRate: number | null;
  freshness: { count: number; lagMs: Spread | null };
  /** Searches per model version. */
  modelVersions: Record<string, number>;
}

export interface MonitorFigures {
  since: string;
  until: string;
  by: MonitorGranularity;
  lowScoreThreshold: number;
  totals: MonitorBucket;
  /** Clicks whose search is not in the window (older, or its event lost): not in any rate. */
  unmatchedClicks: number;
  /** Every hour or day of the window, oldest first, empty ones included (charts need the zeros). */
  buckets: MonitorBucket[];
}

class BucketAcc {
  searches = 0;
  byKind = { image: 0, text: 0, similar: 0 };
  zeroResults = 0;
  lowScore = 0;
  total: number[] = [];
  embed: number[] = [];
  index: number[] = [];
  top: number[] = [];
  clicks = 0;
  clicked = new Set<string>();
  lag: number[] = [];
  models = new Map<string, number>();

  constructor(
    readonly start: number,
    readonly end: number,
  ) {}

  addSearch(e: SearchMonitorEvent, lowScore: number): void {
    this.searches++;
    this.byKind[e.kind]++;
    if (e.zeroResult) this.zeroResults++;
    else if (e.topScore !== null && e.topScore < lowScore) this.lowScore++;
    if (e.topScore !== null) this.top.push(e.topScore);
    this.total.push(e.latencyMs.total);
    this.embed.push(e.latencyMs.embed);
    this.index.push(e.latencyMs.index);
    this.models.set(e.modelVersion, (this.models.get(e.modelVersion) ?? 0) + 1);
  }

  merge(o: BucketAcc): void {
    this.searches += o.searches;
    for (const k of ['image', 'text', 'similar'] as const) this.byKind[k] += o.byKind[k];
    this.zeroResults += o.zeroResults;
    this.lowScore += o.lowScore;
    for (const key of ['total', 'embed', 'index', 'top', 'lag'] as const) for (const v of o[key]) this[key].push(v);
    this.clicks += o.clicks;
    for (const q of o.clicked) this.clicked.add(q);
    for (const [m, n] of o.models) this.models.set(m, (this.models.get(m) ?? 0) + n);
  }

  result(): MonitorBucket {
    const top = this.top;
    return {
      start: new Date(this.start).toISOString(),
      end: new Date(this.end).toISOString(),
      searches: this.searches,
      byKind: { ...this.byKind },
      zeroResults: this.zeroResults,
      zeroResultRate: rate(this.zeroResults, this.searches),
      lowScore: this.lowScore,
      lowScoreRate: rate(this.lowScore, this.searches),
      latencyMs: { total: spread(this.total), embed: spread(this.embed), index: spread(this.index) },
      topScore:
        top.length === 0
          ? null
          : { p50: spread(top)!.p50, mean: top.reduce((a, b) => a + b, 0) / top.length, min: top.reduce((a, b) => Math.min(a, b), Infinity) },
      clicks: this.clicks,
      clickedSearches: this.clicked.size,
      clickThroughRate: rate(this.clicks, this.searches),
      freshness: { count: this.lag.length, lagMs: spread(this.lag) },
      modelVersions: Object.fromEntries([...this.models].sort(([a], [b]) => a.localeCompare(b))),
    };
  }
}

export interface MonitorQuery {
  /** Window length, ms (see {@link parseSince}). */
  sinceMs: number;
  by: MonitorGranularity;
  /** A top score below this counts as a low-score search. Default 0.5. */
  lowScoreThreshold?: number;
  now?: Date;
}

/** Figures over the events in `[now - sinceMs, now)`, streamed (only numbers and query ids are kept). */
export async function monitorFigures(source: SearchEventSource, query: MonitorQuery): Promise<MonitorFigures> {
  const until = (query.now ?? new Date()).getTime();
  const since = until - query.sinceMs;
  const unit = query.by === 'hour' ? UNIT_MS.h : UNIT_MS.d;
  const first = Math.floor(since / unit) * unit;
  const count = Math.ceil((until - first) / unit);
  if (count > MAX_BUCKETS) throw new ParseError(`by: ${count} ${query.by}s are too many rows (at most ${MAX_BUCKETS}); use a shorter since or by day`);
  const lowScore = query.lowScoreThreshold ?? 0.5;
  const buckets = Array.from({ length: count }, (_, i) => new BucketAcc(first + i * unit, first + (i + 1) * unit));
  const bucketOf = (at: number) => buckets[Math.floor((at - first) / unit)]!;
  const searchBucket = new Map<string, BucketAcc>();
  const clicks: FeedbackMonitorEvent[] = [];
  for await (const e of source.read({ from: new Date(since), to: new Date(until) })) {
    const at = Date.parse(e.at);
    if (!(at >= since && at < until)) continue;
    if (e.monitor === 'search') {
      const b = bucketOf(at);
      b.addSearch(e, lowScore);
      searchBucket.set(e.queryId, b);
    } else if (e.monitor === 'feedback') clicks.push(e);
    else bucketOf(at).lag.push(e.lagMs);
  }
  let unmatched = 0;
  for (const c of clicks) {
    const b = searchBucket.get(c.queryId);
    if (!b) {
      unmatched++;
      continue;
    }
    b.clicks++;
    b.clicked.add(c.queryId);
  }
  const totals = new BucketAcc(since, until);
  for (const b of buckets) totals.merge(b);
  return {
    since: new Date(since).toISOString(),
    until: new Date(until).toISOString(),
    by: query.by,
    lowScoreThreshold: lowScore,
    totals: totals.result(),
    unmatchedClicks: unmatched,
    buckets: buckets.map((b) => b.result()),
  };
}

/**
 * When an object was written, ms since the epoch: its generation read as microseconds (a local
 * file's generation is its mtime/ctime in µs, folder-blob-store.ts; a GCS generation is the
 * object's creation time in µs) when that is a plausible time (after 2000, not after `nowMs` + 1 day),
 * else its event time; null when neither is usable.
 */
export function objectWrittenAt(generation: string, eventTime: string | undefined, nowMs: number): number | null {
  if (/^\d{1,19}$/.test(generation)) {
    const ms = Number(BigInt(generation) / 1000n);
    if (ms >= Date.UTC(2000, 0, 1) && ms <= nowMs + UNIT_MS.d) return ms;
  }
  const t = eventTime === undefined ? NaN : Date.parse(eventTime);
  return Number.isFinite(t) ? t : null;
}

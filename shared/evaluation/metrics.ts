/**
 * Retrieval metrics over ranked result lists. A query's ranked list is given as relevance flags
 * (true = relevant) in rank order plus the total number of relevant items in the corpus, so the
 * metrics do not care how relevance was decided (same label, click, …).
 *
 * Queries with no relevant item in the corpus are skipped by every metric (they cannot be
 * answered and would only add noise); callers report how many queries counted.
 */
import { mean } from '../vector-math.js';

export interface RankedRelevance {
  /** Relevance of the top results, best first (at least k of them when the corpus allows). */
  flags: boolean[];
  /** Relevant items in the whole corpus (excluding the query itself). */
  totalRelevant: number;
}

function assertK(k: number): void {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
}

function answerable(lists: RankedRelevance[]): RankedRelevance[] {
  return lists.filter((l) => l.totalRelevant > 0);
}

/** Recall@k as used for image retrieval: share of queries with at least one relevant hit in the top k. */
export function recallAtK(lists: RankedRelevance[], k: number): number {
  assertK(k);
  return mean(answerable(lists).map((l) => (l.flags.slice(0, k).some(Boolean) ? 1 : 0)));
}

/** Precision@k: share of the top k that is relevant (divided by k even if fewer results came back). */
export function precisionAtK(lists: RankedRelevance[], k: number): number {
  assertK(k);
  return mean(answerable(lists).map((l) => l.flags.slice(0, k).filter(Boolean).length / k));
}

/** IR recall@k: relevant items in the top k over all relevant items in the corpus. */
export function retrievedShareAtK(lists: RankedRelevance[], k: number): number {
  assertK(k);
  return mean(answerable(lists).map((l) => l.flags.slice(0, k).filter(Boolean).length / l.totalRelevant));
}

/** AP@k = (1 / min(R, k)) · Σ_{i≤k} P@i · rel_i, averaged over queries (mAP@k). */
export function meanAveragePrecisionAtK(lists: RankedRelevance[], k: number): number {
  assertK(k);
  return mean(
    answerable(lists).map((l) => {
      let hits = 0;
      let sum = 0;
      l.flags.slice(0, k).forEach((rel, i) => {
        if (rel) {
          hits += 1;
          sum += hits / (i + 1);
        }
      });
      return sum / Math.min(l.totalRelevant, k);
    }),
  );
}

/** True when two label sets share at least one label (the relevance rule of our evaluation). */
export function sharesLabel(a: readonly string[], b: readonly string[]): boolean {
  if (a.length === 0 || b.length === 0) return false;
  const set = new Set(a);
  return b.some((x) => set.has(x));
}

import { z } from 'zod';
import type { QueryFilter, QueryOptions } from '../../ports/vector-index.js';
import { parseWith } from '../../validation.js';
import { CURRENT_KNN, type KnnBehaviour } from './cluster.js';
import { VECTOR_FIELD } from './index-body.js';
import { cosineToScore, type SpaceType } from './scores.js';

/** OpenSearch's default `index.max_result_window`, and the k-NN plugin's bound on k. */
export const MAX_K = 10_000;

const isoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 date');

const queryOptionsSchema = z.object({
  k: z.number().int().min(1, 'k must be at least 1').max(MAX_K, `k must be at most ${MAX_K}`),
  numCandidates: z.number().int().min(1).max(MAX_K, `numCandidates must be at most ${MAX_K}`).optional(),
  minScore: z.number().min(-1).max(1, 'minScore is a cosine similarity in [-1, 1]').optional(),
  filter: z
    .object({
      labels: z.array(z.string().min(1)).optional(),
      uriPrefix: z.string().min(1).optional(),
      eventTimeFrom: isoDate.optional(),
      eventTimeTo: isoDate.optional(),
      excludeIds: z.array(z.string().min(1)).optional(),
    })
    .optional(),
});

export function parseQueryOptions(options: QueryOptions): QueryOptions {
  return parseWith(queryOptionsSchema, options, 'Invalid k-NN query options', { root: 'options' });
}

/** Clauses for the k-NN `filter`, or undefined when nothing filters. */
export function filterClauses(filter: QueryFilter | undefined): Record<string, unknown> | undefined {
  if (!filter) return undefined;
  const must: Record<string, unknown>[] = [];
  const mustNot: Record<string, unknown>[] = [];
  // Labels: any of them (an OR), the way a user ticks several tags in the web page.
  if (filter.labels && filter.labels.length > 0) must.push({ terms: { labels: filter.labels } });
  if (filter.uriPrefix) {
    // A prefix is either a full URI prefix (gs://bucket/cats/) or an object-name prefix (cats/).
    must.push({
      bool: {
        should: [{ prefix: { uri: filter.uriPrefix } }, { prefix: { name: filter.uriPrefix } }],
        minimum_should_match: 1,
      },
    });
  }
  if (filter.eventTimeFrom || filter.eventTimeTo) {
    const range: Record<string, string> = {};
    if (filter.eventTimeFrom) range.gte = filter.eventTimeFrom;
    if (filter.eventTimeTo) range.lte = filter.eventTimeTo;
    must.push({ range: { eventTime: range } });
  }
  if (filter.excludeIds && filter.excludeIds.length > 0) mustNot.push({ ids: { values: filter.excludeIds } });
  if (must.length === 0 && mustNot.length === 0) return undefined;
  return { bool: { ...(must.length ? { filter: must } : {}), ...(mustNot.length ? { must_not: mustNot } : {}) } };
}

/**
 * The search body of a k-NN query. Where the engine supports it the filter goes inside the `knn`
 * clause (efficient filtering: applied during the graph walk, so k hits come back whenever k
 * documents match). NMSLIB (and Faiss before 2.9) refuse that, so there the filter sits beside the
 * `knn` clause in a `bool` (the boolean post-filter of "k-NN search with filters",
 * https://docs.opensearch.org/latest/vector-search/filter-search-knn/index/): it keeps only the
 * matching ones of the k candidates, so a selective filter can return fewer than k hits; raise
 * `numCandidates` for those. `knn.k` is the number of candidates each shard collects (for lucene
 * it is also the HNSW ef), so `numCandidates` raises it above k while `size` keeps the answer at k.
 */
export function knnSearchBody(vector: Float32Array, options: QueryOptions, space: SpaceType, behaviour: KnnBehaviour = CURRENT_KNN): Record<string, unknown> {
  const candidates = Math.min(MAX_K, Math.max(options.k, options.numCandidates ?? options.k));
  const knn: Record<string, unknown> = { vector: Array.from(vector), k: candidates };
  const filter = filterClauses(options.filter);
  let query: Record<string, unknown> = { knn: { [VECTOR_FIELD]: knn } };
  if (filter && behaviour.efficientFilter) knn.filter = filter;
  else if (filter) query = { bool: { must: [query], filter: [filter] } };
  const body: Record<string, unknown> = {
    size: options.k,
    _source: { excludes: [VECTOR_FIELD] },
    query,
  };
  // The server cuts early; the adapter cuts again on the converted score (the authority).
  if (options.minScore !== undefined) body.min_score = cosineToScore(options.minScore, space, behaviour.legacyNativeCosine) - 1e-6;
  return body;
}

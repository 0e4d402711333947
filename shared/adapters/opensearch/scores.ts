/**
 * OpenSearch turns a k-NN distance into a positive `_score`; the port speaks cosine similarity.
 * Vectors are L2-normalised, so the dot product is the cosine. Per space type ("Spaces",
 * https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/):
 *
 * - `cosinesimil`: d = 1 − cos and score = (2 − d) / 2 = (1 + cos) / 2, so cos = 2·score − 1.
 *   This is Lucene's formula, used by every engine since OpenSearch 2.19. Before that nmslib and
 *   faiss returned 1 / (1 + d) = 1 / (2 − cos), so cos = 2 − 1 / score: `legacyNativeCosine`,
 *   which the index sets from its engine and the cluster's version (`knnBehaviour`).
 * - `innerproduct`: score = dot + 1 when dot ≥ 0, else 1 / (1 − dot) (Lucene's scaled maximum
 *   inner product; faiss and nmslib give the same numbers), so dot = score − 1 when score ≥ 1,
 *   else 1 − 1 / score.
 */
export type SpaceType = 'cosinesimil' | 'innerproduct';

export function scoreToCosine(score: number, space: SpaceType, legacyNativeCosine = false): number {
  if (space === 'cosinesimil') {
    const cos = legacyNativeCosine ? 2 - 1 / score : 2 * score - 1;
    return clamp(cos);
  }
  return clamp(score >= 1 ? score - 1 : 1 - 1 / score);
}

export function cosineToScore(cos: number, space: SpaceType, legacyNativeCosine = false): number {
  const c = clamp(cos);
  if (space === 'cosinesimil') return legacyNativeCosine ? 1 / (2 - c) : (1 + c) / 2;
  return c >= 0 ? c + 1 : 1 / (1 - c);
}

function clamp(x: number): number {
  return Math.max(-1, Math.min(1, x));
}

import type { OpenSearchIndexOptions } from './options.js';

/** `major.minor.patch` of the cluster, from `GET /` (`version.number`). */
export type ClusterVersion = readonly [major: number, minor: number, patch: number];

export function parseClusterVersion(text: string | undefined): ClusterVersion | null {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(text ?? '');
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : null;
}

/** Null (a cluster that would not say) counts as the newest version. */
function atLeast(version: ClusterVersion | null, major: number, minor: number): boolean {
  return version === null || version[0] > major || (version[0] === major && version[1] >= minor);
}

/** What the k-NN plugin does with one index's queries; both depend on engine and version. */
export interface KnnBehaviour {
  /**
   * Whether a `filter` inside the `knn` clause (efficient filtering) is accepted. "k-NN search
   * with filters" (https://docs.opensearch.org/latest/vector-search/filter-search-knn/index/):
   * the Lucene engine with HNSW from 2.4, Faiss with HNSW from 2.9. NMSLIB never: the plugin
   * answers 400 "Engine [NMSLIB] does not support filters".
   */
  efficientFilter: boolean;
  /**
   * Whether cosinesimil scores are 1 / (1 + d) rather than (2 − d) / 2. "Spaces"
   * (https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/) gives
   * (2 − d) / 2 for every engine; before 2.19 NMSLIB and Faiss returned 1 / (1 + d) (the
   * documentation changed with the plugin: "Starting 2.19, Approx search uses same cosine formula
   * for lucene, faiss, and Nmslib", documentation-website commit 36abf7e).
   */
  legacyNativeCosine: boolean;
}

/** The behaviour of the current k-NN plugin for the default (lucene) index. */
export const CURRENT_KNN: KnnBehaviour = { efficientFilter: true, legacyNativeCosine: false };

export function knnBehaviour(
  engine: OpenSearchIndexOptions['engine'],
  space: OpenSearchIndexOptions['spaceType'],
  version: ClusterVersion | null,
): KnnBehaviour {
  const efficientFilter = engine === 'lucene' ? atLeast(version, 2, 4) : engine === 'faiss' ? atLeast(version, 2, 9) : false;
  const legacyNativeCosine = space === 'cosinesimil' && engine !== 'lucene' && !atLeast(version, 2, 19);
  return { efficientFilter, legacyNativeCosine };
}

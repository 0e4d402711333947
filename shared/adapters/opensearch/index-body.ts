import type { OpenSearchIndexOptions } from './options.js';

/** The field holding the embedding. */
export const VECTOR_FIELD = 'vector';

export interface IndexMeta {
  modelVersion: string;
  dimension: number;
  createdAt: string;
  engine: OpenSearchIndexOptions['engine'];
  spaceType: OpenSearchIndexOptions['spaceType'];
  alias: string;
  /** Documents the index was sized for (the live index's count when a new version is created; 0 on the first). */
  expectedDocs?: number;
}

/** The `method` of the vector field: HNSW with its graph sized for `expectedDocs`. */
export interface KnnMethod {
  name: 'hnsw';
  engine: OpenSearchIndexOptions['engine'];
  space_type: OpenSearchIndexOptions['spaceType'];
  parameters: { m: number; ef_construction: number };
}

/**
 * The k-NN method, mirroring what the embedded index chooses by size (shared/services/ann-maintenance.ts).
 * Sources: OpenSearch documentation, "k-NN vector > Methods and engines"
 * (docs.opensearch.org/latest/mappings/supported-field-types/knn-methods-engines/) and "Approximate
 * k-NN search"; checked for OpenSearch 2.x–3.x.
 * - Method: HNSW on every engine. Faiss IVF (and PQ) need a model trained with the Train API before
 *   the index can be created, a step this product does not run; HNSW needs no training, and OpenSearch
 *   builds its graphs per segment as documents are refreshed, so nothing has to be kept up by hand and
 *   new documents are searchable after the refresh interval.
 * - Engine: the configured one (`lucene` by default: efficient filtering, no native memory to size).
 * - Parameters: the configured m / ef_construction (16 / 128 by default) are good to about a million
 *   vectors; larger graphs need more links and a wider build candidate list to keep recall, at the
 *   cost of memory — native HNSW needs about 1.1 × (4 × dimension + 8 × m) bytes per vector (the
 *   docs' memory estimate): m 24 / ef_construction 256 from 1M expected documents, m 32 / 512 from 10M.
 *   A configured value above these wins.
 */
export function knnMethod(options: OpenSearchIndexOptions, expectedDocs = 0): KnnMethod {
  const sized = expectedDocs >= 10_000_000 ? { m: 32, ef: 512 } : expectedDocs >= 1_000_000 ? { m: 24, ef: 256 } : { m: 0, ef: 0 };
  return {
    name: 'hnsw',
    engine: options.engine,
    space_type: options.spaceType,
    parameters: { m: Math.max(options.m, sized.m), ef_construction: Math.max(options.efConstruction, sized.ef) },
  };
}

/** Native memory of the HNSW graphs for `docs` vectors, by the docs' estimate (lucene keeps them in the JVM heap instead). */
export function hnswMemoryBytes(docs: number, dimension: number, m: number): number {
  return Math.round(1.1 * (4 * dimension + 8 * m) * docs);
}

/**
 * Settings and mapping of one physical index `<alias>-v<N>`. The model version sits in the
 * mapping's `_meta` (read back by `open`) and in every document; `dynamic: strict` makes a stray
 * field a loud mapper error instead of a silently widened mapping.
 */
export function indexBody(meta: IndexMeta, options: OpenSearchIndexOptions): Record<string, unknown> {
  return {
    settings: {
      index: {
        knn: true,
        // Read by faiss and nmslib; lucene takes its candidate count from the query's k.
        'knn.algo_param.ef_search': options.efSearch,
        number_of_shards: options.shards,
        number_of_replicas: options.replicas,
      },
    },
    mappings: {
      dynamic: 'strict',
      _meta: { ...meta, schema: 1 },
      properties: {
        [VECTOR_FIELD]: {
          type: 'knn_vector',
          dimension: meta.dimension,
          method: knnMethod(options, meta.expectedDocs),
        },
        id: { type: 'keyword' },
        uri: { type: 'keyword' },
        // Object name (the URI without scheme and bucket), for prefix filters on folders.
        name: { type: 'keyword' },
        // Sent as a decimal string: int64 generations exceed JavaScript's safe integers.
        generation: { type: 'long' },
        modelVersion: { type: 'keyword' },
        labels: { type: 'keyword' },
        caption: { type: 'text' },
        contentType: { type: 'keyword' },
        width: { type: 'integer' },
        height: { type: 'integer' },
        eventTime: { type: 'date' },
        indexedAt: { type: 'date' },
        // Tombstone: a delete keeps the id with its generation so that a late, older upsert is
        // refused by external versioning forever (a real delete forgets after index.gc_deletes).
        deleted: { type: 'boolean' },
      },
    },
  };
}

/** Settings and mapping of `<alias>-catalog`, which remembers the previous alias target. */
export function catalogIndexBody(options: OpenSearchIndexOptions): Record<string, unknown> {
  return {
    settings: { index: { number_of_shards: 1, number_of_replicas: options.replicas } },
    mappings: {
      dynamic: 'strict',
      properties: {
        alias: { type: 'keyword' },
        live: { type: 'keyword' },
        previous: { type: 'keyword' },
        updatedAt: { type: 'date' },
      },
    },
  };
}

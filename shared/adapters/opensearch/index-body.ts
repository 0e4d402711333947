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
          method: {
            name: 'hnsw',
            engine: options.engine,
            space_type: options.spaceType,
            parameters: { m: options.m, ef_construction: options.efConstruction },
          },
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

import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { invalid } from '../../validation.js';

/**
 * Tuning of the OpenSearch vector index, validated once at the edge.
 *
 * Engine default: `lucene`. It supports `cosinesimil` and `innerproduct`, and efficient k-NN
 * filtering (filter applied during the HNSW walk, falling back to exact search for selective
 * filters) on every OpenSearch from 2.4; its graphs live in the JVM heap and segments like any
 * other Lucene field, so a small or medium catalogue (up to a few million images) needs no
 * native-memory tuning. `faiss` is the choice past that (quantisation, memory-optimised search);
 * `nmslib` is deprecated upstream (no new indices on 3.x) and is accepted only for old clusters:
 * it has no efficient filtering, so filtered queries fall back to a post-filter that can return
 * fewer than k hits (see `knnSearchBody`).
 */
export const openSearchIndexOptionsSchema = z
  .object({
    alias: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_-]*$/, 'alias must be lower-case letters, digits, "-" or "_"')
      .max(200)
      .default('images'),
    engine: z.enum(['lucene', 'faiss', 'nmslib']).default('lucene'),
    /** Vectors are L2-normalised, so both give the cosine ranking; cosinesimil is the safe one. */
    spaceType: z.enum(['cosinesimil', 'innerproduct']).default('cosinesimil'),
    /** HNSW links per node. */
    m: z.number().int().min(2).max(512).default(16),
    efConstruction: z.number().int().min(2).max(4096).default(128),
    /** Candidate list at query time (faiss / nmslib index setting; lucene uses the query's k). */
    efSearch: z.number().int().min(2).max(10_000).default(100),
    shards: z.number().int().min(1).max(1024).default(1),
    replicas: z.number().int().min(0).max(16).default(1),
    /** Upper bound on one `_bulk` request body. */
    bulkMaxBytes: z
      .number()
      .int()
      .min(1024)
      .max(100 * 1024 * 1024)
      .default(5 * 1024 * 1024),
    /** Retries after the first attempt (whole request or the failed items of a bulk). */
    maxRetries: z.number().int().min(0).max(20).default(5),
    /** Exponential backoff base: attempt n waits base·2^n ms (capped) with full jitter. */
    backoffBaseMs: z.number().int().min(0).max(60_000).default(200),
    backoffMaxMs: z.number().int().min(0).max(300_000).default(10_000),
    /**
     * `wait_for` makes writes visible to the next search before the call returns (tests, CLI);
     * `false` (default) leaves it to the refresh interval, the throughput-friendly choice: searches
     * see a write within `index.refresh_interval` (1 s), and count()/scan() refresh the indices
     * this process wrote to first, so verifying a write never depends on the interval.
     */
    refresh: z.union([z.literal(false), z.literal('wait_for'), z.literal(true)]).default(false),
  })
  .strict();

export type OpenSearchIndexOptions = z.infer<typeof openSearchIndexOptionsSchema>;
export type OpenSearchIndexOptionsInput = z.input<typeof openSearchIndexOptionsSchema>;

export function parseOpenSearchIndexOptions(input: unknown): OpenSearchIndexOptions {
  const result = openSearchIndexOptionsSchema.safeParse(input ?? {});
  if (!result.success) throw invalid('Invalid OpenSearch index options', result.error, { as: ConfigError, list: true, root: '(options)' });
  return result.data;
}

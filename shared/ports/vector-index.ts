import type { ImageMetadata } from '../contracts.js';

export interface VectorDocument {
  id: string;
  uri: string;
  generation: string;
  modelVersion: string;
  vector: Float32Array;
  labels: string[];
  caption?: string;
  contentType?: string;
  width?: number;
  height?: number;
  /** When the object was written (event time), ISO 8601. */
  eventTime?: string;
  /** When the vector was indexed, ISO 8601. */
  indexedAt: string;
}

export type UpsertOutcome = 'created' | 'updated' | 'unchanged' | 'stale';
export type DeleteOutcome = 'deleted' | 'stale' | 'absent';

export interface QueryFilter {
  labels?: string[];
  /** Object name / URI prefix. */
  uriPrefix?: string;
  eventTimeFrom?: string;
  eventTimeTo?: string;
  excludeIds?: string[];
}

export interface QueryOptions {
  k: number;
  filter?: QueryFilter;
  /** Hits scoring below this (cosine similarity, higher is closer) are cut off. */
  minScore?: number;
  /** ANN candidates to consider (OpenSearch k-NN `k` / HNSW ef); ignored by exact engines. */
  numCandidates?: number;
}

export interface Hit {
  id: string;
  uri: string;
  /** Cosine similarity in [-1, 1] (vectors are L2-normalised). */
  score: number;
  generation: string;
  labels: string[];
  caption?: string;
  modelVersion: string;
}

export interface IndexVersionInfo {
  /** Physical index / table name, e.g. `images-v3`. */
  name: string;
  modelVersion: string;
  dimension: number;
  createdAt: string;
  count: number;
  /** Whether the alias points here. */
  live: boolean;
}

/**
 * One physical index (a LanceDB table, an OpenSearch index) holding vectors of exactly one model
 * version. Upserts are idempotent and ordered by generation: a stale generation never overwrites
 * a newer one, and a delete removes only generations it has seen (a tombstone remembers it).
 */
export interface VectorIndex {
  readonly name: string;
  readonly modelVersion: string;
  readonly dimension: number;
  /** Throws ModelMismatchError if a document's modelVersion is not this index's. */
  upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]>;
  delete(items: { id: string; generation: string }[]): Promise<DeleteOutcome[]>;
  query(vector: Float32Array, options: QueryOptions): Promise<Hit[]>;
  get(id: string): Promise<VectorDocument | null>;
  /** Generations of the live (not deleted) documents among `ids`, in one round trip. */
  generations(ids: string[]): Promise<Map<string, string>>;
  count(): Promise<number>;
  /** Every live document (for reindexing and evaluation), in pages. */
  scan(batchSize?: number): AsyncIterable<VectorDocument[]>;
}

/**
 * Versioned physical indices behind an alias: build a new version beside the live one, swap the
 * alias atomically, keep the previous for rollback.
 */
export interface VectorIndexCatalog {
  /** The index the alias points at, or null before the first one is created. */
  live(): Promise<VectorIndex | null>;
  /** Creates the live index if none exists (first start). */
  ensureLive(modelVersion: string, dimension: number): Promise<VectorIndex>;
  createVersion(modelVersion: string, dimension: number): Promise<VectorIndex>;
  open(name: string): Promise<VectorIndex>;
  versions(): Promise<IndexVersionInfo[]>;
  /** Points the alias at `name` atomically; returns the previous target. */
  swapAlias(name: string): Promise<string | null>;
  /** Points the alias back at the previous target. */
  rollback(): Promise<string>;
  dropVersion(name: string): Promise<void>;
  close(): Promise<void>;
}

export type { ImageMetadata };

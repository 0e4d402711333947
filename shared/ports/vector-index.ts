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

/** Where a live document stands, without its vector. */
export interface DocumentGeneration {
  id: string;
  uri: string;
  generation: string;
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
  /**
   * Throws ModelMismatchError if a document's modelVersion is not this index's. A write refused for
   * some documents (OpenSearch `_bulk` item errors) throws an AppError whose `meta.ids` names those;
   * the rest may have been applied, and writing them again tells which (an applied one comes back
   * `unchanged`): handlers/upsert-vectors.ts retries only the named ones. Same for delete.
   */
  upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]>;
  delete(items: { id: string; generation: string }[]): Promise<DeleteOutcome[]>;
  query(vector: Float32Array, options: QueryOptions): Promise<Hit[]>;
  get(id: string): Promise<VectorDocument | null>;
  /** Generations of the live (not deleted) documents among `ids`, in one round trip. */
  generations(ids: string[]): Promise<Map<string, string>>;
  count(): Promise<number>;
  /** Every live document (for reindexing and evaluation), in pages. */
  scan(batchSize?: number): AsyncIterable<VectorDocument[]>;
  /**
   * Id, uri and generation of every live document, in pages, without vectors: what a restart
   * compares the bucket's listing with (services/reconcile.ts). Absent: `scan` is used instead.
   */
  scanGenerations?(batchSize?: number): AsyncIterable<DocumentGeneration[]>;
  /** The state of the approximate-nearest-neighbour index behind `query` (status and page); absent on fakes. */
  annStatus?(): Promise<AnnStatus>;
}

/** ANN index kinds the embedded index builds (LanceDB's IVF_PQ and IVF_HNSW_SQ). */
export const ANN_TYPES = ['ivf_pq', 'ivf_hnsw_sq'] as const;
export type AnnType = (typeof ANN_TYPES)[number];

/** Build and query parameters of one ANN index, chosen from the collection's size and dimension. */
export interface AnnParams {
  type: AnnType;
  /** Rows in the table when the parameters were chosen. */
  rows: number;
  /** IVF partitions (k-means clusters); a query visits `nprobes` of them. */
  numPartitions: number;
  /** IVF_PQ: product-quantisation sub-vectors. */
  numSubVectors?: number;
  /** IVF_HNSW_SQ: graph links per node and the candidate list while building. */
  m?: number;
  efConstruction?: number;
  nprobes: number;
  /** IVF_HNSW_SQ: candidate list while searching (at least `limit × refineFactor`). */
  ef?: number;
  /** Candidates re-ranked with exact distances: `k × refineFactor` (0 = none). */
  refineFactor: number;
}

/**
 * What `imgsearch status` and `/api/status` show about the ANN index: `none` means every query is a
 * flat (exact) scan; `building` that a build is running (queries use the previous index, or a flat
 * scan, meanwhile); `ready` that queries use the index, and rows written since it was built or last
 * folded in (`rowsUnindexed`) are scanned exactly beside it until the next fold-in.
 */
export interface AnnStatus {
  state: 'none' | 'building' | 'ready';
  /** The engine's own name for the index in use (`IVF_PQ`, `IVF_HNSW_SQ`, `hnsw/lucene`…), null with none. */
  type: string | null;
  params: AnnParams | Record<string, number | string> | null;
  rowsIndexed: number;
  rowsUnindexed: number;
  /** Index files on disk, when the engine reports it. */
  sizeBytes: number | null;
  lastBuildAt: string | null;
  lastBuildSeconds: number | null;
  /** The build running now (started when, with which parameters), if any. */
  building: { startedAt: string; params: AnnParams } | null;
  /** `product`: built and kept by imgsearch's background maintenance; `engine`: the search engine keeps it (OpenSearch). */
  maintainedBy: 'product' | 'engine';
}

/** An index whose ANN structure the product builds and keeps up (the embedded LanceDB index). */
export interface AnnMaintainable {
  annStatus(): Promise<AnnStatus>;
  /** Trains and writes a new ANN index, replacing any earlier one when done; upserts and queries go on meanwhile. */
  buildAnn(params: AnnParams): Promise<void>;
  /** Adds rows written since the last build to the index (and compacts), without retraining. */
  foldInAnn(): Promise<void>;
}

export function isAnnMaintainable(index: VectorIndex | null): index is VectorIndex & AnnMaintainable {
  const i = index as Partial<AnnMaintainable> | null;
  return typeof i?.buildAnn === 'function' && typeof i.foldInAnn === 'function' && typeof i.annStatus === 'function';
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

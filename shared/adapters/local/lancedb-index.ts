import * as lancedb from '@lancedb/lancedb';
import { Field, Float64, Int32, Schema, Utf8 } from 'apache-arrow';
import { AppError, ModelMismatchError } from '../../errors.js';
import type { DeleteOutcome, Hit, QueryOptions, UpsertOutcome, VectorDocument, VectorIndex } from '../../ports/vector-index.js';
import {
  GenerationOrderedTable,
  checkVector,
  optionalNumber,
  optionalString,
  orderedColumns,
  orderedFields,
  orderedValues,
  sqlString,
  toStrings,
  type RowValues,
} from './lancedb-ordered-table.js';

/**
 * One version of the embedded vector index: a LanceDB table holding vectors of exactly one model
 * version, generation-ordered with tombstones (GenerationOrderedTable). The versions and the alias in front
 * of them are kept by LanceDbIndexCatalog (lancedb-catalog.ts).
 */
const MAX_K = 10_000;

/** The table schema of an index version. */
export function indexTableSchema(dimension: number): Schema {
  return new Schema([
    ...orderedColumns(dimension),
    new Field('modelVersion', new Utf8(), false),
    new Field('caption', new Utf8(), true),
    new Field('contentType', new Utf8(), true),
    new Field('width', new Int32(), true),
    new Field('height', new Int32(), true),
    new Field('eventTime', new Utf8(), true),
    /** eventTime as epoch ms, for range filters. */
    new Field('eventMs', new Float64(), true),
    new Field('indexedAt', new Utf8(), false),
  ]);
}

function parseTime(value: string, what: string): number {
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new AppError(`${what} is not a valid date/time: ${JSON.stringify(value)}`);
  return ms;
}

export interface AnnIndexOptions {
  /** `ivf_pq` (default) or `hnsw_sq`. */
  type?: 'ivf_pq' | 'hnsw_sq';
  numPartitions?: number;
  numSubVectors?: number;
}

export class LanceDbVectorIndex implements VectorIndex {
  private readonly ordered: GenerationOrderedTable;
  private hasAnn: boolean;

  constructor(
    readonly name: string,
    readonly modelVersion: string,
    readonly dimension: number,
    private readonly table: lancedb.Table,
    lockKey: string,
    hasAnn: boolean,
  ) {
    this.ordered = new GenerationOrderedTable(table, lockKey, dimension);
    this.hasAnn = hasAnn;
  }

  private toRow(doc: VectorDocument): RowValues {
    if (doc.modelVersion !== this.modelVersion) {
      throw new ModelMismatchError(
        `Document ${doc.id} was embedded by model ${doc.modelVersion}, but index ${this.name} holds vectors of model ${this.modelVersion}`,
        { meta: { id: doc.id, documentModel: doc.modelVersion, indexModel: this.modelVersion, index: this.name } },
      );
    }
    return {
      ...orderedValues(doc, this.dimension, 'document'),
      modelVersion: doc.modelVersion,
      caption: doc.caption ?? null,
      contentType: doc.contentType ?? null,
      width: doc.width ?? null,
      height: doc.height ?? null,
      eventTime: doc.eventTime ?? null,
      eventMs: doc.eventTime ? parseTime(doc.eventTime, `document ${doc.id} eventTime`) : null,
      indexedAt: doc.indexedAt,
    };
  }

  async upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]> {
    if (docs.length === 0) return [];
    // Validate everything before writing anything: a bad batch changes nothing.
    const rows = docs.map((d) => this.toRow(d));
    return this.ordered.upsert(rows);
  }

  async delete(items: { id: string; generation: string }[]): Promise<DeleteOutcome[]> {
    if (items.length === 0) return [];
    return this.ordered.delete(items, {
      modelVersion: this.modelVersion,
      caption: null,
      contentType: null,
      width: null,
      height: null,
      eventTime: null,
      eventMs: null,
      indexedAt: new Date().toISOString(),
    });
  }

  async query(vector: Float32Array, options: QueryOptions): Promise<Hit[]> {
    checkVector(vector, this.dimension, 'query');
    if (!Number.isInteger(options.k) || options.k < 1 || options.k > MAX_K) {
      throw new AppError(`k must be a whole number from 1 to ${MAX_K}, got ${options.k}`);
    }
    if (options.minScore !== undefined && !(options.minScore >= -1 && options.minScore <= 1)) {
      throw new AppError(`minScore must be within [-1, 1], got ${options.minScore}`);
    }
    const where = ['deleted = false'];
    const f = options.filter ?? {};
    if (f.labels && f.labels.length > 0) where.push(`array_has_any(labels, make_array(${f.labels.map(sqlString).join(',')}))`);
    if (f.uriPrefix) where.push(`starts_with(uri, ${sqlString(f.uriPrefix)})`);
    if (f.eventTimeFrom) where.push(`eventMs >= ${parseTime(f.eventTimeFrom, 'eventTimeFrom')}`);
    if (f.eventTimeTo) where.push(`eventMs <= ${parseTime(f.eventTimeTo, 'eventTimeTo')}`);
    if (f.excludeIds && f.excludeIds.length > 0) where.push(`id NOT IN (${f.excludeIds.map(sqlString).join(',')})`);

    let q = this.table.vectorSearch(vector).distanceType('cosine').where(where.join(' AND ')).limit(options.k);
    if (this.hasAnn) {
      // Re-rank ANN candidates with exact distances so recall stays close to the flat search.
      q = q.nprobes(Math.max(32, Math.ceil((options.numCandidates ?? 0) / 10))).refineFactor(20);
    } else {
      q = q.bypassVectorIndex();
    }
    const rows = await q.select(['id', 'uri', 'generation', 'labels', 'caption', 'modelVersion', '_distance']).toArray();
    const hits: Hit[] = rows.map((r) => ({
      id: String(r.id),
      uri: String(r.uri),
      // Cosine distance is 1 − cosine similarity.
      score: Math.max(-1, Math.min(1, 1 - Number(r._distance))),
      generation: String(r.generation),
      labels: toStrings(r.labels),
      caption: optionalString(r.caption),
      modelVersion: String(r.modelVersion),
    }));
    return options.minScore === undefined ? hits : hits.filter((h) => h.score >= options.minScore!);
  }

  async get(id: string): Promise<VectorDocument | null> {
    const row = await this.ordered.liveRow(id);
    return row ? rowToDocument(row) : null;
  }

  async generations(ids: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [id, state] of await this.ordered.states(ids)) if (!state.deleted) out.set(id, state.generation);
    return out;
  }

  async count(): Promise<number> {
    return this.ordered.countLive();
  }

  async *scan(batchSize = 500): AsyncIterable<VectorDocument[]> {
    for await (const page of this.ordered.scanRows(batchSize)) yield page.map(rowToDocument);
  }

  /** Builds an ANN index for large tables; queries then re-rank candidates exactly (refine). */
  async createAnnIndex(options: AnnIndexOptions = {}): Promise<void> {
    const rows = await this.table.countRows();
    const type = options.type ?? 'ivf_pq';
    if (type === 'ivf_pq' && rows < 256) {
      throw new AppError(`An IVF_PQ index needs at least 256 rows to train, index ${this.name} has ${rows}; exact search is fast at this size`);
    }
    const numPartitions = options.numPartitions ?? Math.max(1, Math.min(256, Math.round(Math.sqrt(rows))));
    const config =
      type === 'hnsw_sq'
        ? lancedb.Index.hnswSq({ distanceType: 'cosine', numPartitions })
        : lancedb.Index.ivfPq({
            distanceType: 'cosine',
            numPartitions, // ~8 dimensions per PQ sub-vector: coarser codes (e.g. 16 sub-vectors for 1632-d) lose the
            // neighbours before re-ranking can recover them.
            numSubVectors: options.numSubVectors ?? largestDivisorAtMost(this.dimension, Math.max(1, Math.floor(this.dimension / 8))),
          });
    await this.ordered.withLock(() => this.table.createIndex('vector', { config, replace: true }));
    this.hasAnn = true;
  }

  /** Compacts the table's fragments (also done automatically every few hundred writes). */
  async compact(): Promise<void> {
    await this.ordered.compact();
  }

  get annIndexed(): boolean {
    return this.hasAnn;
  }

  closeTable(): void {
    this.table.close();
  }
}

function largestDivisorAtMost(n: number, max: number): number {
  for (let d = Math.min(n, max); d > 1; d--) if (n % d === 0) return d;
  return 1;
}

function rowToDocument(r: Record<string, unknown>): VectorDocument {
  return {
    ...orderedFields(r),
    modelVersion: String(r.modelVersion),
    caption: optionalString(r.caption),
    contentType: optionalString(r.contentType),
    width: optionalNumber(r.width),
    height: optionalNumber(r.height),
    eventTime: optionalString(r.eventTime),
    indexedAt: String(r.indexedAt),
  };
}

// Importers of the catalog from this module keep working (the catalog lives in lancedb-catalog.ts).
export { LanceDbIndexCatalog } from './lancedb-catalog.js';

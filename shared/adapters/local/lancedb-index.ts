import os from 'node:os';
import * as lancedb from '@lancedb/lancedb';
import { Field, Float64, Int32, Schema, Utf8 } from 'apache-arrow';
import { z } from 'zod';
import { AppError, ModelMismatchError } from '../../errors.js';
import {
  ANN_TYPES,
  type AnnMaintainable,
  type AnnParams,
  type AnnStatus,
  type DeleteOutcome,
  type DocumentGeneration,
  type Hit,
  type QueryOptions,
  type UpsertOutcome,
  type VectorDocument,
  type VectorIndex,
} from '../../ports/vector-index.js';
import { chooseAnnParams, MIN_TRAINING_ROWS } from '../../services/ann-maintenance.js';
import { readJsonFile, writeJsonAtomic } from './atomic-file.js';
import { isAlive } from './home-lock.js';
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
/** At most this many rows to skip (tombstones + excluded ids) are filtered after an ANN search rather than before. */
const POSTFILTER_MAX_SKIPPED = 64;

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

const annParamsSchema = z.object({
  type: z.enum(ANN_TYPES),
  rows: z.number().int().min(0),
  numPartitions: z.number().int().min(1),
  numSubVectors: z.number().int().min(1).optional(),
  m: z.number().int().min(2).optional(),
  efConstruction: z.number().int().min(1).optional(),
  nprobes: z.number().int().min(1),
  ef: z.number().int().min(1).optional(),
  refineFactor: z.number().int().min(0),
});

/**
 * `<table>.ann.json` beside the table: the parameters of the ANN index in use (LanceDB records the
 * index type and codes, not the partition count or the query-side settings), the last build, and
 * the build running now (with its process, so a build cut short by an exit is not reported forever).
 */
const annFileSchema = z.object({
  params: annParamsSchema.nullable(),
  lastBuildAt: z.string().nullable(),
  lastBuildSeconds: z.number().nullable(),
  building: z.object({ pid: z.number().int(), host: z.string(), startedAt: z.string(), params: annParamsSchema }).nullable(),
});
type AnnFile = z.infer<typeof annFileSchema>;
const NO_ANN_FILE: AnnFile = { params: null, lastBuildAt: null, lastBuildSeconds: null, building: null };

export class LanceDbVectorIndex implements VectorIndex, AnnMaintainable {
  private readonly ordered: GenerationOrderedTable;
  private hasAnn: boolean;
  /** Query-side settings of the index in use, read from the ANN file once. */
  private annParams: Promise<AnnParams | null> | null = null;
  private building: Promise<void> | null = null;
  private tombstoneCount: { version: number; rows: Promise<number> } | undefined;

  constructor(
    readonly name: string,
    readonly modelVersion: string,
    readonly dimension: number,
    private readonly table: lancedb.Table,
    private readonly lockKey: string,
    hasAnn: boolean,
  ) {
    this.ordered = new GenerationOrderedTable(table, lockKey, dimension);
    this.hasAnn = hasAnn;
  }

  private get annFile(): string {
    return `${this.lockKey}.ann.json`;
  }

  private readAnnFile(): Promise<AnnFile> {
    return readJsonFile(this.annFile, NO_ANN_FILE, {
      schema: annFileSchema,
      fix: `delete it: the next \`imgsearch up\` builds the ANN index of ${this.name} again`,
    });
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
    const excluded = f.excludeIds ?? [];
    if (excluded.length > 0) where.push(`id NOT IN (${excluded.map(sqlString).join(',')})`);

    const rows = await this.search(vector, options, where, excluded.length);
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

  scanGenerations(batchSize = 5000): AsyncIterable<DocumentGeneration[]> {
    return this.ordered.scanStates(batchSize);
  }

  /** The rows of a query: filtered after the search when that is cheaper and safe, else before. */
  private async search(vector: Float32Array, options: QueryOptions, where: string[], excluded: number): Promise<Record<string, unknown>[]> {
    const columns = ['id', 'uri', 'generation', 'labels', 'caption', 'modelVersion', '_distance'];
    // Filtering before the search (LanceDB's default) evaluates the filter over every row: at
    // 100k rows that doubled an ANN query (BENCHMARKS.md). With no filter of the user's and few
    // rows to skip (tombstones, the ids excluded), the search runs unfiltered for k + those rows
    // and they are dropped after: the k best live rows are among them.
    const userFilter = where.length - (excluded > 0 ? 1 : 0) > 1;
    // Counted only where it decides something: a flat scan filters first anyway.
    const skippable = userFilter || !this.hasAnn ? Infinity : (await this.tombstones()) + excluded;
    const params = this.hasAnn ? await this.queryParams() : null;
    const run = (q: lancedb.VectorQuery, limit: number) =>
      (this.hasAnn ? annQuery(q.limit(limit), options, params, limit) : q.limit(limit).bypassVectorIndex()).select(columns).toArray() as Promise<
        Record<string, unknown>[]
      >;
    const base = () => this.table.vectorSearch(vector).distanceType('cosine');
    // The filter is always applied (after, or before): a delete committed after the count must not
    // let its tombstone through.
    if (skippable <= POSTFILTER_MAX_SKIPPED) {
      const limit = options.k + skippable;
      const rows = await run(base().where(where.join(' AND ')).postfilter(), limit);
      // Rows deleted between the count and the search can leave fewer than k: ask again, filtering first.
      if (rows.length >= options.k) return rows.slice(0, options.k);
    }
    return run(base().where(where.join(' AND ')), options.k);
  }

  /** Tombstone rows, counted once per table version (LanceDB versions every write, ours or another process's). */
  private async tombstones(): Promise<number> {
    const version = await this.table.version();
    // The count in flight is shared: queries arriving together after a write count once.
    if (this.tombstoneCount?.version !== version) this.tombstoneCount = { version, rows: this.table.countRows('deleted = true') };
    return this.tombstoneCount.rows;
  }

  private queryParams(): Promise<AnnParams | null> {
    this.annParams ??= this.readAnnFile().then(
      (f) => f.params,
      () => null,
    );
    return this.annParams;
  }

  /**
   * Trains an ANN index with `params` and swaps it in when done (LanceDB commits it as a new table
   * version; queries use the previous index, or a flat scan, until then). It does not take the
   * table's write lock: upserts go on, and rows they add land as un-indexed rows, searched exactly
   * beside the index until the next fold-in. One build at a time per handle.
   */
  buildAnn(params: AnnParams): Promise<void> {
    this.building ??= this.build(params).finally(() => {
      this.building = null;
    });
    return this.building;
  }

  private async build(params: AnnParams): Promise<void> {
    const rows = await this.table.countRows();
    if (rows < MIN_TRAINING_ROWS) {
      throw new AppError(`An ANN index needs at least ${MIN_TRAINING_ROWS} rows to train, index ${this.name} has ${rows}; exact search is fast at this size`);
    }
    const before = await this.readAnnFile();
    const startedAt = new Date();
    await writeJsonAtomic(this.annFile, { ...before, building: { pid: process.pid, host: os.hostname(), startedAt: startedAt.toISOString(), params } });
    try {
      await this.table.createIndex('vector', { config: annConfig(params), replace: true });
    } catch (err) {
      await writeJsonAtomic(this.annFile, { ...before, building: null });
      throw err;
    }
    const done: AnnFile = {
      params,
      lastBuildAt: new Date().toISOString(),
      lastBuildSeconds: Number(((Date.now() - startedAt.getTime()) / 1000).toFixed(1)),
      building: null,
    };
    await writeJsonAtomic(this.annFile, done);
    this.annParams = Promise.resolve(params);
    this.hasAnn = true;
    // After the ANN index is recorded: if this fails, the vector index stands and the next fold-in tries again.
    await this.ensureIdIndex();
  }

  /**
   * A B-tree over the ids, for what looks documents up by id at this size: "more like this" (the
   * vector of an id), the generation check of each ingested batch, upserts' merge on id. Rows added
   * later are looked up beside it until a fold-in (LanceDB's optimize) takes them in.
   */
  private async ensureIdIndex(): Promise<void> {
    if ((await this.table.listIndices()).some((i) => i.columns.length === 1 && i.columns[0] === 'id')) return;
    await this.table.createIndex('id', { config: lancedb.Index.btree() });
  }

  /** Folds rows written since the build into the index and compacts fragments (LanceDB's optimize), under the write lock. */
  async foldInAnn(): Promise<void> {
    await this.ordered.compact();
    await this.ensureIdIndex();
  }

  async annStatus(): Promise<AnnStatus> {
    const file = await this.readAnnFile();
    const b = file.building;
    // A build of this process is known exactly; another process's only while it runs.
    const running =
      b && (b.pid === process.pid && b.host === os.hostname() ? this.building !== null : isAlive({ ...b, command: '', token: '', procStart: null }));
    const building = running && b ? { startedAt: b.startedAt, params: b.params } : null;
    const vectorIndex = (await this.table.listIndices()).find((i) => i.columns.includes('vector'));
    const common = { lastBuildAt: file.lastBuildAt, lastBuildSeconds: file.lastBuildSeconds, building, maintainedBy: 'product' as const };
    if (!vectorIndex) {
      return {
        state: building ? 'building' : 'none',
        type: null,
        params: null,
        rowsIndexed: 0,
        rowsUnindexed: await this.table.countRows(),
        sizeBytes: null,
        ...common,
      };
    }
    const stats = await this.table.indexStats(vectorIndex.name);
    return {
      state: building ? 'building' : 'ready',
      type: stats?.indexType ?? vectorIndex.indexType,
      params: file.params,
      rowsIndexed: stats?.numIndexedRows ?? vectorIndex.numIndexedRows ?? 0,
      rowsUnindexed: stats?.numUnindexedRows ?? vectorIndex.numUnindexedRows ?? 0,
      sizeBytes: vectorIndex.sizeBytes ?? null,
      ...common,
      lastBuildAt: file.lastBuildAt ?? vectorIndex.createdAt?.toISOString() ?? null,
    };
  }

  /** Overrides the query-side settings of the index in use, in this handle only (benches measuring recall against latency). */
  async tuneQuery(overrides: Partial<Pick<AnnParams, 'nprobes' | 'ef' | 'refineFactor'>>): Promise<void> {
    const current = await this.queryParams();
    if (!current) throw new AppError(`index ${this.name} has no ANN index to tune`);
    this.annParams = Promise.resolve({ ...current, ...overrides });
  }

  /** Builds an ANN index now with parameters chosen from the table's size (benches; the product uses AnnMaintenance). */
  async createAnnIndex(options: { type?: AnnParams['type'] } & Partial<AnnParams> = {}): Promise<AnnParams> {
    const chosen = chooseAnnParams(await this.count(), this.dimension, options.type ?? 'ivf_pq');
    const merged = { ...chosen, ...options } as AnnParams;
    const params = { ...merged, nprobes: Math.min(merged.nprobes, merged.numPartitions) };
    await this.buildAnn(params);
    return params;
  }

  /** Compacts the table's fragments (also done automatically every few hundred writes). */
  async compact(): Promise<void> {
    await this.ordered.compact();
  }

  get annIndexed(): boolean {
    return this.hasAnn;
  }

  closeTable(): void {
    void this.ordered.dispose();
    this.table.close();
  }
}

function annConfig(p: AnnParams): lancedb.Index {
  if (p.type === 'ivf_hnsw_sq') {
    return lancedb.Index.hnswSq({ distanceType: 'cosine', numPartitions: p.numPartitions, m: p.m, efConstruction: p.efConstruction });
  }
  return lancedb.Index.ivfPq({ distanceType: 'cosine', numPartitions: p.numPartitions, numSubVectors: p.numSubVectors });
}

/**
 * The query-side settings of the index in use: partitions probed, the HNSW candidate list, and exact
 * re-ranking of `k × refineFactor` candidates (recall close to the flat scan's). `numCandidates`
 * raises both the probes and the candidate list. Without recorded parameters (an index built by an
 * older version) the settings that version used.
 */
export function annQuery(q: lancedb.VectorQuery, options: QueryOptions, params: AnnParams | null, limit = options.k): lancedb.VectorQuery {
  const refine = params?.refineFactor ?? 20;
  const extra = options.numCandidates ?? 0;
  let out = q.nprobes(Math.max(params?.nprobes ?? 32, Math.ceil(extra / 10)));
  // LanceDB refuses an ef below the candidates it must return (limit × refineFactor).
  if (params?.type === 'ivf_hnsw_sq') out = out.ef(Math.max(params.ef ?? 100, 10 * options.k, limit * Math.max(1, refine), extra));
  return refine > 0 ? out.refineFactor(refine) : out;
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

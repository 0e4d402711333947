import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { Field, Float64, Int32, Schema, Utf8 } from 'apache-arrow';
import { z } from 'zod';
import { IssError, ModelMismatchError, NotFoundError } from '../../errors.js';
import type {
  DeleteOutcome,
  Hit,
  IndexVersionInfo,
  QueryOptions,
  UpsertOutcome,
  VectorDocument,
  VectorIndex,
  VectorIndexCatalog,
} from '../../ports/vector-index.js';
import { KeyedMutex, SAFE_NAME, readJsonFile, writeJsonAtomic } from './atomic-file.js';
import {
  OrderedTable,
  checkVector,
  optionalNumber,
  optionalString,
  orderedColumns,
  sqlString,
  toFloat32,
  toStrings,
  type RowValues,
} from './lancedb-ordered-table.js';

/**
 * The embedded vector index: one LanceDB table per index version (`<alias>-v<N>`), each holding
 * vectors of exactly one model version, behind an alias kept in a small JSON file so a new
 * version can be built beside the live one and swapped in (and rolled back) atomically.
 */
const MAX_K = 10_000;

const aliasFileSchema = z.object({
  current: z.string().nullable(),
  previous: z.string().nullable(),
  history: z.array(z.object({ name: z.string(), at: z.string() })),
});
type AliasFile = z.infer<typeof aliasFileSchema>;

const catalogFileSchema = z.object({
  tables: z.record(z.string(), z.object({ modelVersion: z.string(), dimension: z.number().int().positive(), createdAt: z.string() })),
});
type CatalogFile = z.infer<typeof catalogFileSchema>;

function indexSchema(dimension: number): Schema {
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
  if (Number.isNaN(ms)) throw new IssError(`${what} is not a valid date/time: ${JSON.stringify(value)}`);
  return ms;
}

export interface AnnIndexOptions {
  /** `ivf_pq` (default) or `hnsw_sq`. */
  type?: 'ivf_pq' | 'hnsw_sq';
  numPartitions?: number;
  numSubVectors?: number;
}

export class LanceDbVectorIndex implements VectorIndex {
  private readonly ordered: OrderedTable;
  private hasAnn: boolean;

  constructor(
    readonly name: string,
    readonly modelVersion: string,
    readonly dimension: number,
    private readonly table: lancedb.Table,
    lockKey: string,
    hasAnn: boolean,
  ) {
    this.ordered = new OrderedTable(table, lockKey, dimension);
    this.hasAnn = hasAnn;
  }

  private toRow(doc: VectorDocument): RowValues {
    const what = `document ${doc.id}`;
    if (typeof doc.id !== 'string' || doc.id.length === 0) throw new IssError('document id must be a non-empty string');
    if (doc.modelVersion !== this.modelVersion) {
      throw new ModelMismatchError(
        `Document ${doc.id} was embedded by model ${doc.modelVersion}, but index ${this.name} holds vectors of model ${this.modelVersion}`,
        { meta: { id: doc.id, documentModel: doc.modelVersion, indexModel: this.modelVersion, index: this.name } },
      );
    }
    return {
      id: doc.id,
      uri: doc.uri,
      generation: doc.generation,
      vector: checkVector(doc.vector, this.dimension, what),
      labels: doc.labels ?? [],
      modelVersion: doc.modelVersion,
      caption: doc.caption ?? null,
      contentType: doc.contentType ?? null,
      width: doc.width ?? null,
      height: doc.height ?? null,
      eventTime: doc.eventTime ?? null,
      eventMs: doc.eventTime ? parseTime(doc.eventTime, `${what} eventTime`) : null,
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
    return this.ordered.delete(items, (id, generation, uri) => ({
      id,
      uri,
      generation,
      vector: this.ordered.placeholderVector(),
      labels: [],
      modelVersion: this.modelVersion,
      caption: null,
      contentType: null,
      width: null,
      height: null,
      eventTime: null,
      eventMs: null,
      indexedAt: new Date().toISOString(),
    }));
  }

  async query(vector: Float32Array, options: QueryOptions): Promise<Hit[]> {
    checkVector(vector, this.dimension, 'query');
    if (!Number.isInteger(options.k) || options.k < 1 || options.k > MAX_K) {
      throw new IssError(`k must be a whole number from 1 to ${MAX_K}, got ${options.k}`);
    }
    if (options.minScore !== undefined && !(options.minScore >= -1 && options.minScore <= 1)) {
      throw new IssError(`minScore must be within [-1, 1], got ${options.minScore}`);
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
    const rows = await this.table.query().where(`id = ${sqlString(id)} AND deleted = false`).limit(1).toArray();
    return rows[0] ? rowToDocument(rows[0]) : null;
  }

  async generations(ids: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [id, state] of await this.ordered.states(ids)) if (!state.deleted) out.set(id, state.generation);
    return out;
  }

  async count(): Promise<number> {
    return this.table.countRows('deleted = false');
  }

  async *scan(batchSize = 500): AsyncIterable<VectorDocument[]> {
    for await (const page of this.ordered.scanRows(batchSize)) yield page.map(rowToDocument);
  }

  /** Builds an ANN index for large tables; queries then re-rank candidates exactly (refine). */
  async createAnnIndex(options: AnnIndexOptions = {}): Promise<void> {
    const rows = await this.table.countRows();
    const type = options.type ?? 'ivf_pq';
    if (type === 'ivf_pq' && rows < 256) {
      throw new IssError(`An IVF_PQ index needs at least 256 rows to train, index ${this.name} has ${rows}; exact search is fast at this size`);
    }
    const numPartitions = options.numPartitions ?? Math.max(1, Math.min(256, Math.round(Math.sqrt(rows))));
    const config =
      type === 'hnsw_sq'
        ? lancedb.Index.hnswSq({ distanceType: 'cosine', numPartitions })
        : lancedb.Index.ivfPq({ distanceType: 'cosine', numPartitions, // ~8 dimensions per PQ sub-vector: coarser codes (e.g. 16 sub-vectors for 1632-d) lose the
        // neighbours before re-ranking can recover them.
        numSubVectors: options.numSubVectors ?? largestDivisorAtMost(this.dimension, Math.max(1, Math.floor(this.dimension / 8))) });
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
    id: String(r.id),
    uri: String(r.uri),
    generation: String(r.generation),
    modelVersion: String(r.modelVersion),
    vector: toFloat32(r.vector),
    labels: toStrings(r.labels),
    caption: optionalString(r.caption),
    contentType: optionalString(r.contentType),
    width: optionalNumber(r.width),
    height: optionalNumber(r.height),
    eventTime: optionalString(r.eventTime),
    indexedAt: String(r.indexedAt),
  };
}

const catalogMutex = new KeyedMutex();

export class LanceDbIndexCatalog implements VectorIndexCatalog {
  private readonly handles = new Map<string, LanceDbVectorIndex>();

  private constructor(
    readonly dir: string,
    readonly alias: string,
    private readonly db: lancedb.Connection,
  ) {}

  static async open(dir: string, options: { alias?: string } = {}): Promise<LanceDbIndexCatalog> {
    const alias = options.alias ?? 'images';
    if (!SAFE_NAME.test(alias)) throw new IssError(`Invalid index alias ${JSON.stringify(alias)}: use letters, digits, '.', '_' or '-'`);
    const abs = path.resolve(dir);
    // Strong read consistency: the API, the upserter and jobs may write from other processes.
    return new LanceDbIndexCatalog(abs, alias, await lancedb.connect(abs, { readConsistencyInterval: 0 }));
  }

  private get aliasFile(): string {
    return path.join(this.dir, `${this.alias}.alias.json`);
  }

  private get catalogFile(): string {
    return path.join(this.dir, `${this.alias}.catalog.json`);
  }

  private async readAlias(): Promise<AliasFile> {
    return aliasFileSchema.parse(await readJsonFile(this.aliasFile, { current: null, previous: null, history: [] }));
  }

  private async readCatalog(): Promise<CatalogFile> {
    return catalogFileSchema.parse(await readJsonFile(this.catalogFile, { tables: {} }));
  }

  /** Catalog and alias changes are read-modify-write: one at a time per catalog directory. */
  private locked<T>(work: () => Promise<T>): Promise<T> {
    return catalogMutex.run(this.catalogFile, work);
  }

  async live(): Promise<VectorIndex | null> {
    const { current } = await this.readAlias();
    return current ? this.open(current) : null;
  }

  async ensureLive(modelVersion: string, dimension: number): Promise<VectorIndex> {
    const live = await this.live();
    if (live) return live;
    const created = await this.createVersion(modelVersion, dimension);
    await this.swapAlias(created.name);
    return created;
  }

  async createVersion(modelVersion: string, dimension: number): Promise<LanceDbVectorIndex> {
    if (!modelVersion) throw new IssError('createVersion: modelVersion is required');
    if (!Number.isInteger(dimension) || dimension < 1 || dimension > 65_536) {
      throw new IssError(`createVersion: dimension must be a whole number from 1 to 65536, got ${dimension}`);
    }
    const name = await this.locked(async () => {
      const catalog = await this.readCatalog();
      const existing = new Set([...Object.keys(catalog.tables), ...(await this.db.tableNames())]);
      let n = 1;
      const re = new RegExp(`^${this.alias.replace(/[.]/g, '\\.')}-v(\\d+)$`);
      for (const t of existing) {
        const m = re.exec(t);
        if (m) n = Math.max(n, Number(m[1]) + 1);
      }
      const tableName = `${this.alias}-v${n}`;
      await this.db.createEmptyTable(tableName, indexSchema(dimension));
      catalog.tables[tableName] = { modelVersion, dimension, createdAt: new Date().toISOString() };
      await writeJsonAtomic(this.catalogFile, catalog);
      return tableName;
    });
    return this.open(name);
  }

  async open(name: string): Promise<LanceDbVectorIndex> {
    const cached = this.handles.get(name);
    if (cached) return cached;
    const meta = (await this.readCatalog()).tables[name];
    if (!meta) throw new NotFoundError(`Index version ${name} does not exist in ${this.dir}`, { meta: { name } });
    const table = await this.db.openTable(name);
    const hasAnn = (await table.listIndices()).some((i) => i.columns.includes('vector'));
    const handle = new LanceDbVectorIndex(name, meta.modelVersion, meta.dimension, table, path.join(this.dir, name), hasAnn);
    this.handles.set(name, handle);
    return handle;
  }

  async versions(): Promise<IndexVersionInfo[]> {
    const [catalog, alias] = [await this.readCatalog(), await this.readAlias()];
    const out: IndexVersionInfo[] = [];
    for (const [name, meta] of Object.entries(catalog.tables)) {
      const index = await this.open(name);
      out.push({ name, modelVersion: meta.modelVersion, dimension: meta.dimension, createdAt: meta.createdAt, count: await index.count(), live: alias.current === name });
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name, undefined, { numeric: true }));
  }

  async swapAlias(name: string): Promise<string | null> {
    return this.locked(async () => {
      if (!(await this.readCatalog()).tables[name]) throw new NotFoundError(`Cannot point alias ${this.alias} at ${name}: no such index version`);
      const alias = await this.readAlias();
      const previous = alias.current;
      if (previous === name) return previous;
      await writeJsonAtomic(this.aliasFile, {
        current: name,
        previous,
        history: [...alias.history, { name, at: new Date().toISOString() }].slice(-100),
      } satisfies AliasFile);
      return previous;
    });
  }

  async rollback(): Promise<string> {
    return this.locked(async () => {
      const alias = await this.readAlias();
      if (!alias.previous) throw new IssError(`Cannot roll back alias ${this.alias}: there is no previous index version`);
      if (!(await this.readCatalog()).tables[alias.previous]) {
        throw new IssError(`Cannot roll back alias ${this.alias}: the previous version ${alias.previous} was dropped`);
      }
      await writeJsonAtomic(this.aliasFile, {
        current: alias.previous,
        previous: alias.current,
        history: [...alias.history, { name: alias.previous, at: new Date().toISOString() }].slice(-100),
      } satisfies AliasFile);
      return alias.previous;
    });
  }

  async dropVersion(name: string): Promise<void> {
    await this.locked(async () => {
      const alias = await this.readAlias();
      if (alias.current === name) throw new IssError(`Cannot drop ${name}: alias ${this.alias} points at it (swap the alias first)`);
      const catalog = await this.readCatalog();
      if (!catalog.tables[name]) throw new NotFoundError(`Index version ${name} does not exist`);
      this.handles.get(name)?.closeTable();
      this.handles.delete(name);
      await this.db.dropTable(name);
      delete catalog.tables[name];
      await writeJsonAtomic(this.catalogFile, catalog);
      if (alias.previous === name) await writeJsonAtomic(this.aliasFile, { ...alias, previous: null } satisfies AliasFile);
    });
  }

  async close(): Promise<void> {
    for (const h of this.handles.values()) h.closeTable();
    this.handles.clear();
    this.db.close();
  }
}

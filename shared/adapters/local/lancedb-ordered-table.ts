import type { Table } from '@lancedb/lancedb';
import { createRequire } from 'node:module';
import { Bool, Field, FixedSizeList, Float32, Int64, List, Utf8, type Schema, type Table as ArrowTable } from 'apache-arrow';
import { compareGenerations } from '../../contracts.js';
import { AppError } from '../../errors.js';
import type { DeleteOutcome, UpsertOutcome } from '../../ports/vector-index.js';
import { KeyedMutex } from './atomic-file.js';

/**
 * The generation-ordering core shared by the LanceDB vector index and feature store. Each id has
 * one row: a live document or a tombstone (`deleted = true`) remembering the generation a delete
 * saw. Outcomes are decided in JS (BigInt comparison) under a per-table mutex, and the write is
 * also guarded in the merge (`target.gen < source.gen`) so a concurrent writer in another process
 * still cannot replace a newer row with an older one.
 */
export const INT64_MAX = (1n << 63n) - 1n;

/** Columns every ordered table has. */
export function orderedColumns(dimension: number): Field[] {
  return [
    new Field('id', new Utf8(), false),
    new Field('uri', new Utf8(), false),
    new Field('generation', new Utf8(), false),
    new Field('gen', new Int64(), false),
    new Field('vector', new FixedSizeList(dimension, new Field('item', new Float32(), true)), false),
    new Field('labels', new List(new Field('item', new Utf8(), true)), false),
    new Field('deleted', new Bool(), false),
  ];
}

export function generationToBigInt(generation: string, what: string): bigint {
  if (typeof generation !== 'string' || !/^\d{1,19}$/.test(generation)) {
    throw new AppError(`${what}: generation must be a non-negative integer string, got ${JSON.stringify(generation)}`);
  }
  const gen = BigInt(generation);
  if (gen > INT64_MAX) throw new AppError(`${what}: generation ${generation} exceeds int64`);
  return gen;
}

export function checkVector(vector: unknown, dimension: number, what: string): Float32Array {
  if (!(vector instanceof Float32Array)) {
    throw new AppError(`${what}: vector must be a Float32Array, got ${Array.isArray(vector) ? 'an array' : typeof vector}`);
  }
  if (vector.length !== dimension) {
    throw new AppError(`${what}: vector has dimension ${vector.length}, expected ${dimension}`, {
      meta: { expected: dimension, actual: vector.length },
    });
  }
  for (const v of vector) if (!Number.isFinite(v)) throw new AppError(`${what}: vector contains a non-finite value`);
  return vector;
}

/** SQL string literal for LanceDB (DataFusion) filters. */
export function sqlString(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

const mutex = new KeyedMutex();

interface StoredState {
  generation: string;
  deleted: boolean;
  uri: string;
}

/** A row ready for LanceDB (without `gen`/`deleted`, which are added here). */
export type RowValues = Record<string, unknown> & { id: string; uri: string; generation: string };

/** The values of the ordered columns, as documents and feature records both carry them. */
export interface OrderedFields {
  id: string;
  uri: string;
  generation: string;
  vector: Float32Array;
  labels: string[];
}

/** The ordered columns of a document or record about to be written, checked (`kind` names it in errors). */
export function orderedValues(
  doc: { id: string; uri: string; generation: string; vector: unknown; labels?: string[] },
  dimension: number,
  kind: string,
): OrderedFields {
  if (typeof doc.id !== 'string' || doc.id.length === 0) throw new AppError(`${kind} id must be a non-empty string`);
  return { id: doc.id, uri: doc.uri, generation: doc.generation, vector: checkVector(doc.vector, dimension, `${kind} ${doc.id}`), labels: doc.labels ?? [] };
}

/** The ordered columns of a stored row, as plain values. */
export function orderedFields(r: Record<string, unknown>): OrderedFields {
  return { id: String(r.id), uri: String(r.uri), generation: String(r.generation), vector: toFloat32(r.vector), labels: toStrings(r.labels) };
}

/** Merges between compactions: each merge adds a fragment, and many small ones slow reads. */
const COMPACT_EVERY = 200;
/** A cleanup keeps table versions younger than this: a reader in another process may be scanning one. */
const CLEANUP_GRACE_MS = 60_000;

export interface OrderedTableOptions {
  /** Merges between automatic compactions (tests lower it). */
  compactEvery?: number;
  /** Table versions younger than this survive a cleanup (tests lower it). */
  cleanupGraceMs?: number;
}

/**
 * Rows → one Arrow record batch in the table's schema, with vector columns laid out from one
 * Float32Array. LanceDB's row-object conversion appends every float through an Arrow builder,
 * which cost more main-thread time per image than the rest of the index write.
 */
export function rowsToArrowTable(rows: Record<string, unknown>[], schema: Schema): ArrowTable {
  const { DataType, Precision, RecordBatch, Struct, Table, makeData, vectorFromArray } = cjsArrow;
  const children = schema.fields.map((field) => {
    const type = field.type as unknown as import('apache-arrow').FixedSizeList;
    const item = DataType.isFixedSizeList(type) ? (type.children[0]?.type as unknown) : null;
    // A schema read back from a table has plain `Float` (single precision), not `Float32`, items.
    if (DataType.isFloat(item) && (item as import('apache-arrow').Float).precision === Precision.SINGLE) {
      const size = type.listSize;
      const flat = new Float32Array(rows.length * size);
      rows.forEach((row, i) => {
        const v = row[field.name];
        if (!(v instanceof Float32Array) || v.length !== size) {
          throw new AppError(`column ${field.name}: row ${String(row.id)} needs a Float32Array of ${size} values`);
        }
        flat.set(v, i * size);
      });
      const child = makeData({ type: item as import('apache-arrow').Float32, length: flat.length, nullCount: 0, data: flat });
      return makeData({ type, length: rows.length, nullCount: 0, child });
    }
    const values = rows.map((row) => row[field.name]);
    if (!field.nullable && values.some((v) => v === undefined || v === null)) {
      throw new AppError(`column ${field.name} may not be empty`);
    }
    const column = vectorFromArray(values, field.type);
    // Stryker disable next-line ConditionalExpression,StringLiteral: unreachable guard, vectorFromArray over one plain array always yields one chunk
    if (column.data.length !== 1) throw new AppError(`column ${field.name}: expected one Arrow chunk, got ${column.data.length}`);
    return column.data[0]!;
  });
  const struct = makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children });
  return new Table(new RecordBatch(schema, struct));
}

/**
 * LanceDB (CommonJS) loads Arrow's CommonJS build, and a schema read from a table carries that
 * build's classes; Arrow's builders recognise types by class, so the batch is built with the same
 * build (the ESM import is a second copy of every class).
 */
const cjsArrow = createRequire(import.meta.url)('apache-arrow') as typeof import('apache-arrow');

export class GenerationOrderedTable {
  private mergesSinceCompaction = 0;
  /** When this handle last compacted (ms), null before its first compaction. */
  private lastCompactedAt: number | null = null;
  private cleanupTimer: NodeJS.Timeout | null = null;
  private pendingPass: Promise<void> = Promise.resolve();
  private disposed = false;
  private readonly compactEvery: number;
  private readonly cleanupGraceMs: number;
  private schema: Promise<Schema> | null = null;

  /** Rows as an Arrow table in this table's schema (read once). */
  private async arrow(rows: Record<string, unknown>[]): Promise<ArrowTable> {
    this.schema ??= this.table.schema();
    return rowsToArrowTable(rows, await this.schema);
  }

  constructor(
    readonly table: Table,
    /** Process-wide key (the table's path) so two handles on one table share the lock. */
    private readonly lockKey: string,
    private readonly dimension: number,
    options: OrderedTableOptions = {},
  ) {
    this.compactEvery = options.compactEvery ?? COMPACT_EVERY;
    this.cleanupGraceMs = options.cleanupGraceMs ?? CLEANUP_GRACE_MS;
  }

  async withLock<T>(work: () => Promise<T>): Promise<T> {
    return mutex.run(this.lockKey, work);
  }

  /** Stored generation, tombstone flag and uri of each id that has a row (one query per 500 ids). */
  async states(ids: string[]): Promise<Map<string, StoredState>> {
    const out = new Map<string, StoredState>();
    const unique = [...new Set(ids)];
    for (let i = 0; i < unique.length; i += 500) {
      // Stryker disable next-line MethodExpression: equivalent, querying every id in each round returns the same rows (only the SQL size bound is lost)
      const chunk = unique.slice(i, i + 500);
      const rows = await this.table
        .query()
        .where(`id IN (${chunk.map(sqlString).join(',')})`)
        .select(['id', 'generation', 'deleted', 'uri'])
        .toArray();
      for (const r of rows) out.set(String(r.id), { generation: String(r.generation), deleted: Boolean(r.deleted), uri: String(r.uri) });
    }
    return out;
  }

  /** Writes rows whose generation is newer than what is stored; reports an outcome per input. */
  async upsert(rows: RowValues[]): Promise<UpsertOutcome[]> {
    for (const r of rows) generationToBigInt(r.generation, `document ${r.id}`);
    return this.withLock(async () => {
      const current = await this.states(rows.map((r) => r.id));
      const toWrite = new Map<string, RowValues>();
      const outcomes = rows.map((row): UpsertOutcome => {
        const stored = current.get(row.id);
        let outcome: UpsertOutcome;
        if (!stored) outcome = 'created';
        else {
          const cmp = compareGenerations(row.generation, stored.generation);
          // A tombstone's generation is one a delete has seen: only something newer revives the id.
          if (stored.deleted) outcome = cmp > 0 ? 'created' : 'stale';
          else outcome = cmp > 0 ? 'updated' : cmp === 0 ? 'unchanged' : 'stale';
        }
        if (outcome === 'created' || outcome === 'updated') {
          current.set(row.id, { generation: row.generation, deleted: false, uri: row.uri });
          toWrite.set(row.id, row);
        }
        return outcome;
      });
      if (toWrite.size > 0) {
        const data = await this.arrow([...toWrite.values()].map((r) => ({ ...r, gen: BigInt(r.generation), deleted: false })));
        await this.table.mergeInsert('id').whenMatchedUpdateAll({ where: 'target.gen < source.gen' }).whenNotMatchedInsertAll().execute(data);
        await this.afterMerge();
      }
      return outcomes;
    });
  }

  /**
   * Removes documents whose stored generation ≤ the delete's, leaving a tombstone at the delete's
   * generation; an absent id also gets a tombstone so a late (stale) upsert cannot create it.
   * `columns` fills the table's other columns of a tombstone.
   */
  async delete(items: { id: string; generation: string }[], columns: Record<string, unknown>): Promise<DeleteOutcome[]> {
    for (const it of items) generationToBigInt(it.generation, `delete of ${it.id}`);
    return this.withLock(async () => {
      const current = await this.states(items.map((i) => i.id));
      const toWrite = new Map<string, RowValues>();
      const outcomes = items.map((item): DeleteOutcome => {
        const stored = current.get(item.id);
        const cmp = stored ? compareGenerations(item.generation, stored.generation) : 1;
        let outcome: DeleteOutcome;
        if (!stored || stored.deleted) outcome = 'absent';
        else outcome = cmp >= 0 ? 'deleted' : 'stale';
        if (outcome === 'deleted' || (outcome === 'absent' && cmp > 0)) {
          current.set(item.id, { generation: item.generation, deleted: true, uri: stored?.uri ?? '' });
          const tombstone: OrderedFields = { id: item.id, uri: stored?.uri ?? '', generation: item.generation, vector: this.placeholderVector(), labels: [] };
          toWrite.set(item.id, { ...columns, ...tombstone });
        }
        return outcome;
      });
      if (toWrite.size > 0) {
        const data = await this.arrow([...toWrite.values()].map((r) => ({ ...r, gen: BigInt(r.generation), deleted: true })));
        await this.table.mergeInsert('id').whenMatchedUpdateAll({ where: 'target.gen <= source.gen' }).whenNotMatchedInsertAll().execute(data);
        await this.afterMerge();
      }
      return outcomes;
    });
  }

  private async afterMerge(): Promise<void> {
    if (++this.mergesSinceCompaction < this.compactEvery) {
      // After a compaction, each write pushes the quiet-time pass back (debounced from the last write).
      if (this.lastCompactedAt !== null) this.scheduleCleanup();
      return;
    }
    await this.compactUnlocked();
  }

  private async compactUnlocked(): Promise<void> {
    this.mergesSinceCompaction = 0;
    // Merges small fragments and drops table versions older than the grace (readers in other
    // processes re-check the latest version on every read).
    await this.cleanupUnlocked();
    this.lastCompactedAt = Date.now();
    this.scheduleCleanup();
  }

  /** LanceDB's optimize: compaction of small fragments (none when the table is one compacted run), then the cleanup. */
  private async cleanupUnlocked(): Promise<void> {
    await this.table.optimize({ cleanupOlderThan: new Date(Date.now() - this.cleanupGraceMs) });
  }

  /**
   * A compaction rewrites the small fragments into one, but the files it replaced stay while a
   * version younger than the grace still names them, so the cleanup inside each compaction frees
   * only the previous one's: after the last compaction of a write burst, a whole copy of the table
   * stays on disk (measured: 2.64 GB for a 1.34 GB feature store after a 60k ingest). Once writes
   * have been quiet for the grace, this pass frees it: when the table is one fragment, a cleanup
   * only (Lance's planner skips a lone fragment: nothing is rewritten); when writes followed the
   * last compaction (from any handle or process), a compaction first, which schedules the next
   * pass, then cleanup-only. In a long-running process (`up`); a command that ends sooner calls
   * {@link reclaim}.
   */
  private scheduleCleanup(): void {
    if (this.cleanupTimer) clearTimeout(this.cleanupTimer);
    this.cleanupTimer = setTimeout(() => {
      this.cleanupTimer = null;
      // A failed pass loses nothing: the next compaction's cleanup frees the same files.
      this.pendingPass = this.withLock(async () => {
        if (this.disposed) return;
        if ((await this.table.stats()).fragmentStats.numFragments > 1) await this.compactUnlocked();
        else await this.cleanupUnlocked();
      }).catch(() => undefined);
    }, this.cleanupGraceMs + 1_000);
    this.cleanupTimer.unref();
  }

  /** Compacts fragments now (after a bulk load, or from a maintenance command). */
  async compact(): Promise<void> {
    await this.withLock(() => this.compactUnlocked());
  }

  /**
   * After a bulk load that compacted (`imgsearch ingest`): compacts what was written since, waits
   * out the grace (at most {@link CLEANUP_GRACE_MS} + 1 s) and frees the files the compactions
   * replaced ({@link scheduleCleanup}). Nothing to do (and no wait) when this handle never compacted.
   * Returns the milliseconds waited.
   */
  async reclaim(): Promise<number> {
    if (this.lastCompactedAt === null) return 0;
    if (this.mergesSinceCompaction > 0) await this.compact();
    if (this.cleanupTimer) clearTimeout(this.cleanupTimer);
    this.cleanupTimer = null;
    const wait = Math.max(0, this.lastCompactedAt! + this.cleanupGraceMs + 1_000 - Date.now());
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    await this.withLock(() => this.cleanupUnlocked());
    this.lastCompactedAt = null;
    return wait;
  }

  /** Whether {@link reclaim} has files to free (this handle compacted). */
  get compacted(): boolean {
    return this.lastCompactedAt !== null;
  }

  /** Stops the pending pass and waits for one under way (the table is about to be closed). */
  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.cleanupTimer) clearTimeout(this.cleanupTimer);
    this.cleanupTimer = null;
    await this.pendingPass;
  }

  /** The live row of `id` (not a tombstone), or null. */
  async liveRow(id: string): Promise<Record<string, unknown> | null> {
    const rows = await this.table
      .query()
      .where(`id = ${sqlString(id)} AND deleted = false`)
      .limit(1)
      .toArray();
    return (rows[0] as Record<string, unknown> | undefined) ?? null;
  }

  /** Rows that are not tombstones. */
  countLive(): Promise<number> {
    return this.table.countRows('deleted = false');
  }

  /** A unit vector for tombstones: never matched (filtered out) but harmless to ANN training. */
  private placeholderVector(): Float32Array {
    const v = new Float32Array(this.dimension);
    v[0] = 1;
    return v;
  }

  /** Id, uri and generation of the live rows in pages of `batchSize` (no vectors read), from one consistent read. */
  async *scanStates(batchSize: number): AsyncIterable<{ id: string; uri: string; generation: string }[]> {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new AppError(`batchSize must be a whole number ≥ 1, got ${batchSize}`);
    let page: { id: string; uri: string; generation: string }[] = [];
    for await (const batch of this.table.query().where('deleted = false').select(['id', 'uri', 'generation'])) {
      // Column by column: Arrow's row objects cost several times more per row, and `up`'s catch-up
      // reads every id of a large index while it answers searches.
      const [ids, uris, generations] = (['id', 'uri', 'generation'] as const).map((c) => batch.getChild(c)!);
      for (let i = 0; i < batch.numRows; i++) {
        page.push({ id: String(ids!.get(i)), uri: String(uris!.get(i)), generation: String(generations!.get(i)) });
        if (page.length >= batchSize) {
          yield page;
          page = [];
        }
      }
    }
    if (page.length > 0) yield page;
  }

  /** Live rows in pages of `batchSize`, from one consistent read. */
  async *scanRows(batchSize: number): AsyncIterable<Record<string, unknown>[]> {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new AppError(`batchSize must be a whole number ≥ 1, got ${batchSize}`);
    let page: Record<string, unknown>[] = [];
    for await (const batch of this.table.query().where('deleted = false')) {
      for (const row of batch.toArray()) {
        page.push(row as Record<string, unknown>);
        if (page.length >= batchSize) {
          yield page;
          page = [];
        }
      }
    }
    if (page.length > 0) yield page;
  }
}

/** Arrow list / vector cells to plain JS values. */
export function toFloat32(cell: unknown): Float32Array {
  const c = cell as { toArray?: () => ArrayLike<number> } | ArrayLike<number>;
  const arr = typeof (c as { toArray?: unknown }).toArray === 'function' ? (c as { toArray: () => ArrayLike<number> }).toArray() : (c as ArrayLike<number>);
  return Float32Array.from(arr);
}

export function toStrings(cell: unknown): string[] {
  if (cell == null) return [];
  const c = cell as { toArray?: () => unknown[] } | unknown[];
  const arr = typeof (c as { toArray?: unknown }).toArray === 'function' ? (c as { toArray: () => unknown[] }).toArray() : (c as unknown[]);
  return Array.from(arr, (x) => String(x));
}

export function optionalString(cell: unknown): string | undefined {
  return cell == null ? undefined : String(cell);
}

export function optionalNumber(cell: unknown): number | undefined {
  return cell == null ? undefined : Number(cell);
}

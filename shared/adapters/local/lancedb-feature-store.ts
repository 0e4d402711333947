import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { Binary, Field, Schema, Utf8 } from 'apache-arrow';
import { AppError } from '../../errors.js';
import { translatingLanceDbErrors } from './lancedb-errors.js';
import { float16BitsFromBytes, float16BitsToBytes } from '../../model/float16.js';
import type { FeatureRecord, FeatureStore } from '../../ports/feature-store.js';
import {
  GenerationOrderedTable,
  type OrderedTableOptions,
  optionalString,
  orderedColumns,
  orderedFields,
  orderedValues,
  type RowValues,
} from './lancedb-ordered-table.js';

/**
 * Base (frozen-tower) embeddings in one LanceDB table, generation-ordered with tombstones like the
 * vector index, so retraining and reindexing read vectors instead of decoding images again.
 * The dimension is fixed by the first write (or `options.dimension`).
 */
const TABLE = 'features';

function featureSchema(dimension: number): Schema {
  return new Schema([
    ...orderedColumns(dimension),
    new Field('baseModel', new Utf8(), false),
    new Field('caption', new Utf8(), true),
    new Field('eventTime', new Utf8(), true),
    new Field(ACTIVATION, new Binary(), true),
  ]);
}

/**
 * The block activation (FeatureRecord.activation): IEEE half-precision values as little-endian
 * bytes, null when the tower has none. Tables written before the column existed get it on open.
 */
const ACTIVATION = 'activation';

function activationBytes(bits: Uint16Array | undefined): Uint8Array | null {
  return bits ? float16BitsToBytes(bits) : null;
}

function activationBits(bytes: unknown): Uint16Array | undefined {
  return bytes instanceof Uint8Array && bytes.length > 0 ? float16BitsFromBytes(bytes) : undefined;
}

export class LanceDbFeatureStore implements FeatureStore {
  private ordered: GenerationOrderedTable | null = null;
  private dim: number | null = null;

  private constructor(
    readonly dir: string,
    private readonly db: lancedb.Connection,
    private readonly tableOptions: OrderedTableOptions,
  ) {}

  static async open(dir: string, options: { dimension?: number } & OrderedTableOptions = {}): Promise<LanceDbFeatureStore> {
    const abs = path.resolve(dir);
    const { dimension, ...tableOptions } = options;
    return translatingLanceDbErrors('open the feature store', abs, async () => {
      const store = new LanceDbFeatureStore(abs, await lancedb.connect(abs, { readConsistencyInterval: 0 }), tableOptions);
      await store.attach(dimension);
      return store;
    });
  }

  /** Dimension of stored vectors, or null before the first write. */
  get dimension(): number | null {
    return this.dim;
  }

  private async attach(dimension?: number): Promise<GenerationOrderedTable | null> {
    if (this.ordered) return this.ordered;
    let table: lancedb.Table | null = null;
    if ((await this.db.tableNames()).includes(TABLE)) {
      table = await this.db.openTable(TABLE);
      if (!(await table.schema()).fields.some((f) => f.name === ACTIVATION)) {
        await table.addColumns([{ name: ACTIVATION, valueSql: 'CAST(NULL AS BINARY)' }]);
      }
      const field = (await table.schema()).fields.find((f) => f.name === 'vector');
      this.dim = (field?.type as { listSize?: number } | undefined)?.listSize ?? null;
    } else if (dimension !== undefined) {
      if (!Number.isInteger(dimension) || dimension < 1) throw new AppError(`feature dimension must be a whole number ≥ 1, got ${dimension}`);
      table = await this.db.createEmptyTable(TABLE, featureSchema(dimension), { mode: 'create', existOk: true });
      this.dim = dimension;
    }
    if (table && this.dim) this.ordered = new GenerationOrderedTable(table, path.join(this.dir, TABLE), this.dim, this.tableOptions);
    return this.ordered;
  }

  private toRow(r: FeatureRecord, dimension: number): RowValues {
    const fields = orderedValues(r, dimension, 'feature record');
    if (!r.baseModel) throw new AppError(`feature record ${r.id}: baseModel is required`);
    return {
      ...fields,
      baseModel: r.baseModel,
      caption: r.caption ?? null,
      eventTime: r.eventTime ?? null,
      [ACTIVATION]: activationBytes(r.activation),
    };
  }

  async put(records: FeatureRecord[]): Promise<void> {
    if (records.length === 0) return;
    const ordered = await this.attach(records[0]!.vector?.length);
    if (!ordered || !this.dim) throw new AppError('feature store: cannot determine the vector dimension');
    const rows = records.map((r) => this.toRow(r, this.dim!));
    await translatingLanceDbErrors('write to the feature store', this.dir, () => ordered.upsert(rows));
  }

  async delete(items: { id: string; generation: string }[]): Promise<void> {
    if (items.length === 0) return;
    // Before the first put there is no table and no dimension: nothing stored can be removed, and
    // without a table there is nowhere to keep a tombstone either.
    const ordered = await this.attach();
    if (!ordered) return;
    await translatingLanceDbErrors('write to the feature store', this.dir, () =>
      ordered.delete(items, { baseModel: '', caption: null, eventTime: null, [ACTIVATION]: null }),
    );
  }

  async get(id: string): Promise<FeatureRecord | null> {
    const ordered = await this.attach();
    if (!ordered) return null;
    const row = await ordered.liveRow(id);
    return row ? rowToRecord(row) : null;
  }

  async count(): Promise<number> {
    const ordered = await this.attach();
    return ordered ? ordered.countLive() : 0;
  }

  async *scan(batchSize = 1000): AsyncIterable<FeatureRecord[]> {
    const ordered = await this.attach();
    if (!ordered) return;
    for await (const page of ordered.scanRows(batchSize)) yield page.map(rowToRecord);
  }

  /**
   * Rows beyond one per id (left by two writers merging at once, before the data directory had a
   * writer lock), tombstones included; with `remove` they are deleted, keeping the newest
   * generation (a tombstone wins a tie, as it does against an upsert), in deletes by row id: the
   * store is never without the kept row.
   */
  async duplicates(options: { remove: boolean }): Promise<DuplicateRows> {
    const ordered = await this.attach();
    if (!ordered) return { ids: 0, extraRows: 0, examples: [], removed: 0 };
    return ordered.withLock(async () => {
      const best = new Map<string, { gen: bigint; deleted: boolean; rowId: bigint }>();
      const extra: bigint[] = [];
      const dupIds = new Set<string>();
      for await (const batch of ordered.table.query().select(['id', 'gen', 'deleted']).withRowId()) {
        for (const r of batch.toArray() as unknown as { id: string; gen: bigint; deleted: boolean; _rowid: bigint }[]) {
          const row = { gen: BigInt(r.gen), deleted: Boolean(r.deleted), rowId: BigInt(r._rowid) };
          const had = best.get(r.id);
          if (!had) {
            best.set(r.id, row);
            continue;
          }
          dupIds.add(r.id);
          const newer = row.gen > had.gen || (row.gen === had.gen && row.deleted && !had.deleted);
          extra.push(newer ? had.rowId : row.rowId);
          if (newer) best.set(r.id, row);
        }
      }
      if (options.remove) for (let i = 0; i < extra.length; i += 1000) await ordered.table.delete(`_rowid IN (${extra.slice(i, i + 1000).join(',')})`);
      return { ids: dupIds.size, extraRows: extra.length, examples: [...dupIds].slice(0, 3), removed: options.remove ? extra.length : 0 };
    });
  }

  /** After a bulk load: frees what its compactions replaced (GenerationOrderedTable.reclaim); the ms waited. */
  async reclaim(): Promise<number> {
    return this.ordered ? this.ordered.reclaim() : 0;
  }

  /** Whether {@link reclaim} has anything to free. */
  get reclaimable(): boolean {
    return this.ordered?.compacted ?? false;
  }

  async close(): Promise<void> {
    await this.ordered?.dispose();
    this.ordered?.table.close();
    this.db.close();
  }
}

/** What `duplicates()` found (and removed). */
export interface DuplicateRows {
  /** Ids with more than one row. */
  ids: number;
  /** Rows beyond one per id. */
  extraRows: number;
  examples: string[];
  removed: number;
}

function rowToRecord(r: Record<string, unknown>): FeatureRecord {
  const activation = activationBits(r[ACTIVATION]);
  return {
    ...orderedFields(r),
    baseModel: String(r.baseModel),
    caption: optionalString(r.caption),
    eventTime: optionalString(r.eventTime),
    ...(activation ? { activation } : {}),
  };
}

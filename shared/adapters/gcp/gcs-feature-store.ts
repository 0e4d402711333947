import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { z } from 'zod';
import { compareGenerations, generationSchema } from '../../contracts.js';
import { AppError, NotFoundError, ParseError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { BlobStore } from '../../ports/blob-store.js';
import type { FeatureRecord, FeatureStore } from '../../ports/feature-store.js';

export { EmbeddingShardReader, readEmbeddingShard, writeEmbeddingShard, type EmbeddingShardRef } from './embedding-shards.js';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/**
 * {@link FeatureStore} as immutable shards in a bucket: each `put` / `delete` writes one
 * `<prefix>/shards/<time>-<random>.jsonl.gz` (header line, then one JSON row per record with the
 * vector as base64 float32, or a tombstone row). Any number of writers (embed job tasks) can
 * append without coordination. Reading merges shards by the same rule as the vector index:
 * the highest generation wins, and at equal generations a tombstone beats a put.
 *
 * The store keeps a small in-memory view (id → winning generation and where its row is), built
 * from the shard list and refreshed incrementally (only new shards are read), so `count` and
 * `get` are cheap after the first call and `scan` streams one shard at a time.
 * `compact()` (optional, e.g. after retraining) folds all shards into one and deletes the old ones.
 * Built on the {@link BlobStore} port: GCS in the cloud, but any blob store works.
 */
const FORMAT = 'iss-features/1';

const headerSchema = z.object({ format: z.literal(FORMAT), dimension: z.number().int().nonnegative().nullable(), rows: z.number().int() });
const putRowSchema = z.object({
  op: z.literal('put'),
  id: z.string().min(1),
  uri: z.string(),
  generation: z.string(),
  baseModel: z.string(),
  labels: z.array(z.string()),
  caption: z.string().optional(),
  eventTime: z.string().optional(),
  vector: z.string(),
});
const deleteRowSchema = z.object({ op: z.literal('delete'), id: z.string().min(1), generation: z.string() });
const rowSchema = z.discriminatedUnion('op', [putRowSchema, deleteRowSchema]);
type Row = z.infer<typeof rowSchema>;

interface Entry {
  generation: string;
  deleted: boolean;
  shard: string;
  row: number;
}

export interface GcsFeatureStoreOptions {
  /** Folder of the store in the bucket. Default `features`. */
  prefix?: string;
  /** Decoded shards kept in memory for `get`. Default 2. */
  cachedShards?: number;
  logger?: Logger;
}

export class GcsFeatureStore implements FeatureStore {
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly cachedShards: number;
  private view = new Map<string, Entry>();
  private seen = new Set<string>();
  private dim: number | null = null;
  private readonly shardCache = new Map<string, Row[]>();

  constructor(
    private readonly blobs: BlobStore,
    options: GcsFeatureStoreOptions = {},
  ) {
    this.prefix = `${(options.prefix ?? 'features').replace(/^\/+|\/+$/g, '')}/shards/`;
    this.logger = options.logger ?? silentLogger;
    this.cachedShards = options.cachedShards ?? 2;
  }

  /** Dimension of stored vectors, or null before the first write. */
  get dimension(): number | null {
    return this.dim;
  }

  async put(records: FeatureRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.refresh();
    const dimension = this.dim ?? records[0]!.vector.length;
    const rows: Row[] = [];
    for (const [i, r] of records.entries()) {
      if (!r.id) throw new AppError(`Feature record ${i} has no id`);
      const generation = checkGeneration(r.generation, r.id);
      if (!(r.vector instanceof Float32Array) || r.vector.length !== dimension || dimension === 0) {
        throw new AppError(`Feature record ${r.id}: vector dimension ${r.vector?.length} does not match the store's dimension ${dimension}`);
      }
      if (this.supersedes(this.view.get(r.id), generation)) {
        rows.push({
          op: 'put',
          id: r.id,
          uri: r.uri,
          generation,
          baseModel: r.baseModel,
          labels: r.labels,
          ...(r.caption === undefined ? {} : { caption: r.caption }),
          ...(r.eventTime === undefined ? {} : { eventTime: r.eventTime }),
          vector: Buffer.from(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength).toString('base64'),
        });
      }
    }
    await this.writeShard(rows, dimension);
  }

  async delete(items: { id: string; generation: string }[]): Promise<void> {
    if (items.length === 0) return;
    await this.refresh();
    const rows: Row[] = [];
    for (const item of items) {
      const generation = checkGeneration(item.generation, item.id);
      // A tombstone is kept even for unknown ids: it guards against a late, stale put.
      if (this.supersedes(this.view.get(item.id), generation)) rows.push({ op: 'delete', id: item.id, generation });
    }
    await this.writeShard(rows, this.dim);
  }

  async get(id: string): Promise<FeatureRecord | null> {
    return this.withShardRetry(async () => {
      await this.refresh();
      const entry = this.view.get(id);
      if (!entry || entry.deleted) return null;
      const row = (await this.readShard(entry.shard, true))[entry.row];
      return row?.op === 'put' ? toRecord(row) : null;
    });
  }

  async count(): Promise<number> {
    await this.refresh();
    let n = 0;
    for (const e of this.view.values()) if (!e.deleted) n += 1;
    return n;
  }

  /** Live records in pages of `batchSize`, reading one shard at a time. */
  async *scan(batchSize = 500): AsyncIterable<FeatureRecord[]> {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new AppError(`batchSize must be a positive integer, got ${batchSize}`);
    await this.refresh();
    const byShard = new Map<string, number[]>();
    for (const e of this.view.values()) {
      if (e.deleted) continue;
      const rows = byShard.get(e.shard) ?? [];
      rows.push(e.row);
      byShard.set(e.shard, rows);
    }
    let page: FeatureRecord[] = [];
    for (const shard of [...byShard.keys()].sort()) {
      const rows = await this.readShard(shard, false);
      for (const index of byShard.get(shard)!.sort((a, b) => a - b)) {
        const row = rows[index];
        if (row?.op !== 'put') continue;
        page.push(toRecord(row));
        if (page.length === batchSize) {
          yield page;
          page = [];
        }
      }
    }
    if (page.length > 0) yield page;
  }

  /**
   * Folds every shard into one (winners and tombstones) and deletes the shards it read. Safe with
   * concurrent writers: shards written meanwhile are not touched and still merge by generation.
   */
  async compact(): Promise<{ shardsBefore: number; rows: number }> {
    await this.refresh();
    const old = [...this.seen];
    const rows: Row[] = [];
    for (const [id, e] of this.view) {
      if (e.deleted) {
        rows.push({ op: 'delete', id, generation: e.generation });
        continue;
      }
      const row = (await this.readShard(e.shard, false))[e.row];
      if (row) rows.push(row);
    }
    const written = await this.writeShard(rows, this.dim);
    for (const shard of old) if (shard !== written) await this.blobs.delete(shard);
    this.logger.info({ shardsBefore: old.length, rows: rows.length }, 'feature store compacted');
    this.resetView();
    return { shardsBefore: old.length, rows: rows.length };
  }

  /** Reads shards written since the last refresh into the view. */
  private async refresh(): Promise<void> {
    const fresh: string[] = [];
    for await (const blob of this.blobs.list(this.prefix)) {
      if (blob.name.endsWith('.jsonl.gz') && !this.seen.has(blob.name)) fresh.push(blob.name);
    }
    for (const shard of fresh.sort()) {
      let rows: Row[];
      try {
        rows = await this.readShard(shard, false);
      } catch (err) {
        // Deleted by a compaction between list and read: its rows live on in the compacted shard.
        if (err instanceof NotFoundError) continue;
        throw err;
      }
      rows.forEach((row, index) => this.apply(row, shard, index));
      this.seen.add(shard);
    }
  }

  private apply(row: Row, shard: string, index: number): void {
    const deleted = row.op === 'delete';
    if (this.supersedes(this.view.get(row.id), row.generation)) {
      this.view.set(row.id, { generation: row.generation, deleted, shard, row: index });
    }
  }

  /** Whether a row (put or tombstone) of `generation` replaces the current entry. */
  private supersedes(current: Entry | undefined, generation: string): boolean {
    if (!current) return true;
    const order = compareGenerations(generation, current.generation);
    if (order !== 0) return order > 0;
    // Equal generations: nothing replaces a tombstone; a tombstone beats a put, and a repeated
    // put refreshes labels/caption.
    return !current.deleted;
  }

  private async writeShard(rows: Row[], dimension: number | null): Promise<string | null> {
    if (rows.length === 0) return null;
    const name = `${this.prefix}${Date.now().toString().padStart(15, '0')}-${randomBytes(6).toString('hex')}.jsonl.gz`;
    const lines = [JSON.stringify({ format: FORMAT, dimension, rows: rows.length }), ...rows.map((r) => JSON.stringify(r))];
    await this.blobs.write(name, await gzipAsync(Buffer.from(`${lines.join('\n')}\n`)), { contentType: 'application/gzip' });
    rows.forEach((row, index) => this.apply(row, name, index));
    this.seen.add(name);
    if (this.dim === null && dimension !== null) this.dim = dimension;
    return name;
  }

  private async readShard(name: string, cache: boolean): Promise<Row[]> {
    const hit = this.shardCache.get(name);
    if (hit) return hit;
    const text = (await gunzipAsync(await this.blobs.read(name))).toString('utf8');
    const lines = text.split('\n').filter((l) => l.length > 0);
    const header = headerSchema.safeParse(safeJson(lines[0] ?? '', name));
    if (!header.success) throw new ParseError(`${name} is not an ${FORMAT} shard`, { cause: header.error });
    if (header.data.dimension !== null) {
      if (this.dim !== null && this.dim !== header.data.dimension) {
        throw new AppError(`${name} holds vectors of dimension ${header.data.dimension}, the store has ${this.dim}`);
      }
      this.dim = header.data.dimension;
    }
    const rows = lines.slice(1).map((line, i) => {
      const parsed = rowSchema.safeParse(safeJson(line, name));
      if (!parsed.success) throw new ParseError(`${name} row ${i} is malformed`, { cause: parsed.error });
      return parsed.data;
    });
    if (cache) {
      this.shardCache.set(name, rows);
      while (this.shardCache.size > this.cachedShards) this.shardCache.delete(this.shardCache.keys().next().value!);
    }
    return rows;
  }

  /** A compaction elsewhere may delete a shard the view points at: rebuild the view once. */
  private async withShardRetry<T>(read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      this.resetView();
      return read();
    }
  }

  private resetView(): void {
    this.view = new Map();
    this.seen = new Set();
    this.shardCache.clear();
  }
}

function checkGeneration(generation: string, id: string): string {
  const parsed = generationSchema.safeParse(generation);
  if (!parsed.success) throw new AppError(`Feature record ${id}: generation ${JSON.stringify(generation)} is not an int64 string`);
  return parsed.data;
}

function toRecord(row: z.infer<typeof putRowSchema>): FeatureRecord {
  const bytes = Buffer.from(row.vector, 'base64');
  // Copy into an aligned buffer: Float32Array needs a 4-byte-aligned offset.
  const vector = new Float32Array(bytes.length / 4);
  new Uint8Array(vector.buffer).set(bytes);
  return {
    id: row.id,
    uri: row.uri,
    generation: row.generation,
    baseModel: row.baseModel,
    vector,
    labels: row.labels,
    ...(row.caption === undefined ? {} : { caption: row.caption }),
    ...(row.eventTime === undefined ? {} : { eventTime: row.eventTime }),
  };
}

function safeJson(line: string, name: string): unknown {
  try {
    return JSON.parse(line);
  } catch (err) {
    throw new ParseError(`${name} has a line that is not JSON`, { cause: err });
  }
}

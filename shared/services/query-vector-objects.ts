import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { silentLogger, type Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { QueryVectorSink, QueryVectorSource, SampledQuery } from './drift.js';
import type { CreateOnlyStore } from './feedback.js';

/**
 * The cloud query sample of the drift check, as objects in a bucket (the features bucket): the
 * search service's instances write, the drift job reads.
 *
 * **Writing** ({@link ObjectQueryVectorSink}). Many instances serve at once and GCS objects cannot
 * be appended to, so each instance buffers the image-query vectors it serves and writes each batch
 * as one new object, `query-vectors/<model version>/<ms of its first query, 15 digits>-<random>.json`
 * — names sort by time, and the object is created only if absent (`ifGenerationMatch: '0'`, as
 * click feedback is): no instance can overwrite another's batch, and create is the only permission
 * needed. A batch is written when it holds `batchSize` vectors, or by the first `add` after its
 * oldest query is `flushMs` old (no timer: Cloud Run throttles the CPU between requests), and by
 * {@link ObjectQueryVectorSink.flush} on shutdown. Sampling never slows or fails a search: `add` is
 * synchronous, the buffer is bounded (oldest dropped), and a failed write is logged and its batch
 * dropped, never retried.
 *
 * **Reading** ({@link ObjectQueryVectorSource}): the newest objects of one model version, newest
 * first, until `capacity` queries are collected; an object that cannot be read or does not hold a
 * valid batch is skipped (counted and logged once per read), never fatal to the check. A lifecycle
 * rule expires the objects (infra/components/storage.ts).
 */

export const QUERY_VECTORS_PREFIX = 'query-vectors/';
const BATCH_FORMAT = 1;
/** Milliseconds since the epoch, zero-padded: name order is time order until the year 33658. */
const STAMP_DIGITS = 15;
/** A batch of 100 vectors of 4,096 floats is about 2.2 MB as JSON: anything larger is not one. */
export const MAX_QUERY_BATCH_BYTES = 4 * 1024 * 1024;

const base64 = /^[A-Za-z0-9+/]*={0,2}$/;
const queryBatchSchema = z.object({
  format: z.literal(BATCH_FORMAT),
  modelVersion: z.string().min(1),
  entries: z.array(z.object({ at: z.number().int().nonnegative(), vector: z.string().min(1).regex(base64, 'must be base64') })).min(1),
});
type QueryBatch = z.infer<typeof queryBatchSchema>;

/** The folder of one model version's batches (the version is URI-encoded: one path segment). */
export function queryBatchFolder(modelVersion: string, prefix = QUERY_VECTORS_PREFIX): string {
  return `${prefix}${encodeURIComponent(modelVersion)}/`;
}

/** A new batch's object name: sorting by name sorts by the time of its first query. */
export function queryBatchObjectName(modelVersion: string, firstAt: number, prefix: string, unique: string): string {
  const stamp = String(Math.max(0, Math.floor(firstAt))).padStart(STAMP_DIGITS, '0');
  return `${queryBatchFolder(modelVersion, prefix)}${stamp}-${unique}.json`;
}

/** Float32 little-endian, base64 (the same bytes on every platform). */
export function encodeQueryVector(vector: Float32Array): string {
  const bytes = Buffer.allocUnsafe(vector.length * 4);
  vector.forEach((x, i) => bytes.writeFloatLE(x, i * 4));
  return bytes.toString('base64');
}

/** The vector, or null when the bytes are not whole finite float32s. */
function decodeQueryVector(text: string): Float32Array | null {
  const bytes = Buffer.from(text, 'base64');
  if (bytes.length === 0 || bytes.length % 4 !== 0) return null;
  const vector = new Float32Array(bytes.length / 4);
  for (let i = 0; i < vector.length; i++) vector[i] = bytes.readFloatLE(i * 4);
  return vector.every(Number.isFinite) ? vector : null;
}

/** A batch object's queries, or null when it is not a valid batch of `modelVersion` (one dimension throughout). */
export function parseQueryBatch(text: string, modelVersion: string): SampledQuery[] | null {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = queryBatchSchema.safeParse(json);
  if (!parsed.success || parsed.data.modelVersion !== modelVersion) return null;
  const queries: SampledQuery[] = [];
  for (const entry of parsed.data.entries) {
    const vector = decodeQueryVector(entry.vector);
    if (!vector || vector.length !== (queries[0]?.vector.length ?? vector.length)) return null;
    queries.push({ at: entry.at, vector });
  }
  return queries;
}

interface Buffered {
  modelVersion: string;
  at: number;
  vector: string;
}

export interface ObjectQueryVectorSinkOptions {
  /** Vectors per object: a batch is written as soon as this many are buffered (default 100). */
  batchSize?: number;
  /** The next `add` writes the buffer once its oldest query is this old (default 5 minutes). */
  flushMs?: number;
  /** Vectors held at most while writes are slow or refused; the oldest are dropped beyond (default 1,000). */
  maxBuffered?: number;
  /** Writes in flight at once; a due batch waits in the buffer beyond that (default 2). */
  maxWrites?: number;
  prefix?: string;
  logger?: Logger;
  now?: () => number;
  /** The random part of each object name (default 16 hex digits). */
  unique?: () => string;
}

/** The search service's end: batches of query vectors as new, create-only objects (see the module comment). */
export class ObjectQueryVectorSink implements QueryVectorSink {
  private buffer: Buffered[] = [];
  private readonly writes = new Set<Promise<void>>();
  private dropped = 0;
  private readonly batchSize: number;
  private readonly flushMs: number;
  private readonly maxBuffered: number;
  private readonly maxWrites: number;
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly unique: () => string;

  constructor(
    private readonly blobs: CreateOnlyStore,
    options: ObjectQueryVectorSinkOptions = {},
  ) {
    this.batchSize = options.batchSize ?? 100;
    this.flushMs = options.flushMs ?? 5 * 60_000;
    this.maxBuffered = Math.max(options.maxBuffered ?? 1000, this.batchSize);
    this.maxWrites = options.maxWrites ?? 2;
    this.prefix = options.prefix ?? QUERY_VECTORS_PREFIX;
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.unique = options.unique ?? (() => randomBytes(8).toString('hex'));
  }

  /** Called in the search path: never throws, never waits. */
  add(modelVersion: string, vector: Float32Array): void {
    try {
      this.buffer.push({ modelVersion, at: this.now(), vector: encodeQueryVector(vector) });
      this.dropOldest();
      this.startWrites(false);
    } catch (err) {
      this.logger.warn({ err }, 'query sample: vector not kept');
    }
  }

  /** Writes everything buffered and waits for every write in flight (shutdown). Never rejects. */
  async flush(): Promise<void> {
    this.startWrites(true);
    await Promise.all([...this.writes]);
  }

  /** Vectors waiting to be written. */
  get pending(): number {
    return this.buffer.length;
  }

  private dropOldest(): void {
    const excess = this.buffer.length - this.maxBuffered;
    if (excess <= 0) return;
    this.buffer.splice(0, excess);
    this.dropped += excess;
  }

  private due(): boolean {
    const oldest = this.buffer[0];
    if (!oldest || this.writes.size >= this.maxWrites) return false;
    return this.buffer.length >= this.batchSize || this.now() - oldest.at >= this.flushMs;
  }

  private startWrites(all: boolean): void {
    while (this.buffer.length > 0 && (all || this.due())) {
      const chunk = this.buffer.splice(0, this.batchSize);
      for (const [modelVersion, entries] of byVersion(chunk)) this.track(this.write(modelVersion, entries));
    }
  }

  private track(write: Promise<void>): void {
    this.writes.add(write);
    void write.finally(() => this.writes.delete(write));
  }

  private async write(modelVersion: string, entries: Buffered[]): Promise<void> {
    const batch: QueryBatch = { format: BATCH_FORMAT, modelVersion, entries: entries.map(({ at, vector }) => ({ at, vector })) };
    let name: string | undefined;
    try {
      name = queryBatchObjectName(modelVersion, entries[0]!.at, this.prefix, this.unique());
      await this.blobs.write(name, JSON.stringify(batch), { contentType: 'application/json', ifGenerationMatch: '0' });
    } catch (err) {
      // A name collision (GenerationMismatchError) included: the other object stays, this batch goes.
      // Caught here, always: a write never rejects (flush awaits them all, nothing awaits them otherwise).
      this.logger.warn({ err, name, queries: entries.length }, 'query sample batch not saved: dropped');
      return;
    }
    if (this.dropped > 0) {
      this.logger.warn({ dropped: this.dropped, maxBuffered: this.maxBuffered }, 'query sample: oldest vectors dropped while writes were slow');
      this.dropped = 0;
    }
  }
}

function byVersion(entries: Buffered[]): Map<string, Buffered[]> {
  const groups = new Map<string, Buffered[]>();
  for (const e of entries) {
    const group = groups.get(e.modelVersion);
    if (group) group.push(e);
    else groups.set(e.modelVersion, [e]);
  }
  return groups;
}

export interface ObjectQueryVectorSourceOptions {
  /** Queries returned at most: the newest. */
  capacity: number;
  /** Largest object read (default {@link MAX_QUERY_BATCH_BYTES}); a larger one is skipped. */
  maxBytes?: number;
  /** Objects read at once (default 8). */
  concurrency?: number;
  prefix?: string;
  logger?: Logger;
}

interface Skipped {
  name: string;
  err?: unknown;
}

/** The drift job's end: the newest sampled queries of a model version, across every instance's objects. */
export class ObjectQueryVectorSource implements QueryVectorSource {
  private readonly maxBytes: number;
  private readonly concurrency: number;
  private readonly prefix: string;
  private readonly logger: Logger;

  constructor(
    private readonly blobs: Pick<BlobStore, 'list' | 'read' | 'uri'>,
    private readonly options: ObjectQueryVectorSourceOptions,
  ) {
    this.maxBytes = options.maxBytes ?? MAX_QUERY_BATCH_BYTES;
    this.concurrency = options.concurrency ?? 8;
    this.prefix = options.prefix ?? QUERY_VECTORS_PREFIX;
    this.logger = options.logger ?? silentLogger;
  }

  async recent(modelVersion: string): Promise<SampledQuery[]> {
    const { capacity } = this.options;
    const names = await this.newestNames(modelVersion);
    const found: SampledQuery[] = [];
    const skipped: Skipped[] = [];
    // Newest objects first, a few at a time, until enough queries are in hand.
    for (let end = names.length; end > 0 && found.length < capacity; end -= this.concurrency) {
      const wave = names.slice(Math.max(0, end - this.concurrency), end);
      for (const read of await Promise.all(wave.map((name) => this.readBatch(name, modelVersion)))) {
        if (Array.isArray(read)) found.push(...read);
        else skipped.push(read);
      }
    }
    if (skipped.length > 0) this.reportSkipped(modelVersion, skipped);
    return found.sort((a, b) => a.at - b.at).slice(-capacity);
  }

  /** The newest `capacity` batch names (each holds at least one query), oldest first, never more held while listing. */
  private async newestNames(modelVersion: string): Promise<string[]> {
    const { capacity } = this.options;
    let names: string[] = [];
    const keepNewest = () => {
      names.sort();
      if (names.length > capacity) names = names.slice(names.length - capacity);
    };
    for await (const info of this.blobs.list(queryBatchFolder(modelVersion, this.prefix))) {
      if (!info.name.endsWith('.json')) continue;
      names.push(info.name);
      if (names.length >= 2 * capacity) keepNewest();
    }
    keepNewest();
    return names;
  }

  private async readBatch(name: string, modelVersion: string): Promise<SampledQuery[] | Skipped> {
    let text: string;
    try {
      text = (await this.blobs.read(name, { maxBytes: this.maxBytes })).toString('utf8');
    } catch (err) {
      // Expired since listing, too large, or refused: the check goes on with the others.
      return { name, err };
    }
    return parseQueryBatch(text, modelVersion) ?? { name };
  }

  private reportSkipped(modelVersion: string, skipped: Skipped[]): void {
    const firstError = skipped.find((s) => s.err !== undefined)?.err;
    this.logger.warn(
      {
        modelVersion,
        folder: this.blobs.uri(queryBatchFolder(modelVersion, this.prefix)),
        skipped: skipped.length,
        unreadable: skipped.filter((s) => s.err !== undefined).length,
        names: skipped.slice(0, 5).map((s) => s.name),
        ...(firstError === undefined ? {} : { err: firstError }),
      },
      'query sample: objects that are not valid batches were skipped',
    );
  }
}

import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { GenerationMismatchError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { QueryVectorSink, QueryVectorSource, SampledQuery } from './drift.js';
import type { CreateOnlyStore } from './feedback.js';

/**
 * The cloud query sample of the drift check, as objects in a bucket (the features bucket): the
 * search service's instances write, the drift job reads.
 *
 * **What is kept.** Only a sample: each image query is kept with probability `rate` (the stack's
 * `iss:search.querySampleRate`, default 0.1; the service builds no sink at 0). Per kept query, its
 * vector in the model's search space (derived from the image, never the image, its name or any
 * text) and when it was served, rounded down to whole seconds (a millisecond stamp would let a
 * vector be joined to one request in the request logs). A lifecycle rule expires the objects
 * (infra/components/storage.ts, `iss:storage.querySampleRetentionDays`).
 *
 * **Writing** ({@link ObjectQueryVectorSink}). Many instances serve at once and GCS objects cannot
 * be appended to, so each instance buffers the vectors it keeps and writes each batch as one new
 * object, `query-vectors/<model version>/<ms of its first query, 15 digits>-<random>.json` — names
 * sort by time, and the object is created only if absent (`ifGenerationMatch: '0'`, as click
 * feedback is): no instance can overwrite another's batch, and create is the only permission
 * needed. A batch is due when it holds `batchSize` vectors or its oldest query is `flushMs` old; it
 * is written by the first `add` that finds it due (no timer), and by
 * {@link ObjectQueryVectorSink.flush} on shutdown. The `add` that starts a write keeps no query of
 * its own: an object's creation time (milliseconds) falls just after that request, so the request it
 * dates has its query in no batch (a query kept by that request would be in that object or the next
 * one, and joinable to the request log). Which request starts a write depends on timing, never on
 * its query, so the sample stays unbiased (it only keeps a little less than `rate`).
 * Cloud Run gives the service CPU only while a request is open (`cpuIdle`), so the `add` that
 * starts a write returns a promise the request awaits: it settles when the write is done or after
 * `awaitMs` (2 s), whichever is first, and never rejects; the write goes on past that only as far
 * as the CPU allows. Sampling never fails a search: the buffer is bounded (oldest dropped), a write
 * gives up its slot after `writeTimeoutMs`, and a failed write is logged and its batch dropped,
 * never retried here (the storage client retries; a 412 on our own random name is that retry
 * meeting the object its first attempt created, so it counts as saved).
 *
 * **Reading** ({@link ObjectQueryVectorSource}): the newest objects of one model version from the
 * last `windowMs` (the listing starts at that time's name, `startOffset`), newest first, until
 * `capacity` queries are collected; an object that cannot be read or does not hold a valid batch is
 * skipped (counted and logged once per read), never fatal to the check. A listing that fails is
 * logged here once, with the folder, and rethrown as it is.
 */

export const QUERY_VECTORS_PREFIX = 'query-vectors/';
const BATCH_FORMAT = 1;
/** Milliseconds since the epoch, zero-padded: name order is time order until the year 33658. */
const STAMP_DIGITS = 15;
/** How far back the drift job lists batches by default: the default lifetime of a batch. */
const DEFAULT_READ_WINDOW_MS = 7 * 24 * 3600_000;
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
export function decodeQueryVector(text: string): Float32Array | null {
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
  /** Share of the queries kept, in [0, 1] (default 1: every query; the service passes QUERY_SAMPLE_RATE). */
  rate?: number;
  /** Uniform in [0, 1): a query is kept when it is below `rate` (default Math.random). */
  random?: () => number;
  /** Longest an `add` that started a write keeps its request waiting (default 2 s); the write goes on after. */
  awaitMs?: number;
  /** A write still running after this long gives up its slot among `maxWrites` (default 30 s), logged as unsure. */
  writeTimeoutMs?: number;
  /** Vectors per object: a batch is written by the next `add` once this many are buffered (default 100). */
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
  private readonly rate: number;
  private readonly random: () => number;
  private readonly awaitMs: number;
  private readonly writeTimeoutMs: number;
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
    this.rate = options.rate ?? 1;
    if (!(this.rate >= 0 && this.rate <= 1)) throw new RangeError(`query sample rate must be in [0, 1], got ${this.rate}`);
    this.random = options.random ?? Math.random;
    this.awaitMs = options.awaitMs ?? 2000;
    this.writeTimeoutMs = options.writeTimeoutMs ?? 30_000;
    this.batchSize = options.batchSize ?? 100;
    this.flushMs = options.flushMs ?? 5 * 60_000;
    this.maxBuffered = Math.max(options.maxBuffered ?? 1000, this.batchSize);
    this.maxWrites = options.maxWrites ?? 2;
    this.prefix = options.prefix ?? QUERY_VECTORS_PREFIX;
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
    this.unique = options.unique ?? (() => randomBytes(8).toString('hex'));
  }

  /**
   * Called in the search path; never throws, never rejects. First writes what is due: a call that
   * starts a write returns a promise that settles when the write is done or after `awaitMs`,
   * whichever is first (the request awaits it: Cloud Run's CPU is there only while the request is
   * open), and keeps no query. Otherwise it keeps the query with probability `rate` and returns
   * nothing.
   */
  add(modelVersion: string, vector: Float32Array): void | Promise<void> {
    try {
      // Writes first, and the request that starts one contributes no query: the object's creation
      // time dates this request, so its query must be in no batch (not this one, not the next).
      // Whether a call starts a write depends on timing (buffer size, age, free slots), never on
      // its query, so leaving these queries out keeps the sample unbiased.
      const started = this.startWrites(false);
      if (started.length > 0) return this.awaitAtMost(started, this.awaitMs);
      if (!(this.random() < this.rate)) return;
      // Whole seconds only: a millisecond stamp could single out one request in the request logs.
      const at = Math.floor(this.now() / 1000) * 1000;
      this.buffer.push({ modelVersion, at, vector: encodeQueryVector(vector) });
      this.dropOldest();
    } catch (err) {
      this.logger.warn({ err }, 'query sample: vector not kept');
    }
  }

  /**
   * Writes everything buffered and waits for every write in flight (shutdown), at most `maxWaitMs`
   * when given (the writes go on after that). Never rejects.
   */
  async flush(maxWaitMs?: number): Promise<void> {
    this.startWrites(true);
    const all = [...this.writes];
    if (maxWaitMs === undefined) await Promise.all(all);
    else await this.awaitAtMost(all, maxWaitMs);
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

  /** Starts the writes that are due (all of the buffer with `all`); the writes it started. */
  private startWrites(all: boolean): Promise<void>[] {
    const started: Promise<void>[] = [];
    while (this.buffer.length > 0 && (all || this.due())) {
      const chunk = this.buffer.splice(0, this.batchSize);
      for (const [modelVersion, entries] of byVersion(chunk)) started.push(this.track(this.write(modelVersion, entries)));
    }
    return started;
  }

  /** The write, holding its slot until it settles or `writeTimeoutMs` passed (it never rejects). */
  private track(write: Promise<void>): Promise<void> {
    const held = this.awaitAtMost([write], this.writeTimeoutMs, () =>
      this.logger.warn({ timeoutMs: this.writeTimeoutMs }, 'query sample: a batch write is still running; its slot is freed (it may or may not be saved)'),
    );
    this.writes.add(held);
    void held.finally(() => this.writes.delete(held));
    return held;
  }

  /** Resolves when all `writes` settle or after `ms`, whichever is first (the timer does not hold the process). */
  private awaitAtMost(writes: Promise<void>[], ms: number, onTimeout?: () => void): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        onTimeout?.();
        resolve();
      }, ms);
      timer.unref();
      void Promise.all(writes).then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async write(modelVersion: string, entries: Buffered[]): Promise<void> {
    const batch: QueryBatch = { format: BATCH_FORMAT, modelVersion, entries: entries.map(({ at, vector }) => ({ at, vector })) };
    let name: string | undefined;
    try {
      name = queryBatchObjectName(modelVersion, entries[0]!.at, this.prefix, this.unique());
      await this.blobs.write(name, JSON.stringify(batch), { contentType: 'application/json', ifGenerationMatch: '0' });
    } catch (err) {
      if (err instanceof GenerationMismatchError) {
        // The name carries 64 random bits: an object already there is this batch, created by an
        // attempt whose response was lost before the storage client retried. Saved.
        this.logger.debug({ name, queries: entries.length }, 'query sample batch already saved (a retried upload met its own object)');
      } else {
        // Caught here, always: a write never rejects (flush and the requests await them).
        this.logger.warn({ err, name, queries: entries.length }, 'query sample batch not saved: dropped');
        return;
      }
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
  /**
   * Only batches whose first query is at most this old are listed (default 7 days, the default
   * retention): the listing starts at that time's name instead of walking the whole folder.
   */
  windowMs?: number;
  prefix?: string;
  logger?: Logger;
  now?: () => number;
}

interface Skipped {
  name: string;
  err?: unknown;
}

/** The drift job's end: the newest sampled queries of a model version, across every instance's objects. */
export class ObjectQueryVectorSource implements QueryVectorSource {
  private readonly maxBytes: number;
  private readonly concurrency: number;
  private readonly windowMs: number;
  private readonly prefix: string;
  private readonly logger: Logger;
  private readonly now: () => number;

  constructor(
    private readonly blobs: Pick<BlobStore, 'list' | 'read' | 'uri'>,
    private readonly options: ObjectQueryVectorSourceOptions,
  ) {
    this.maxBytes = options.maxBytes ?? MAX_QUERY_BATCH_BYTES;
    this.concurrency = options.concurrency ?? 8;
    this.windowMs = options.windowMs ?? DEFAULT_READ_WINDOW_MS;
    this.prefix = options.prefix ?? QUERY_VECTORS_PREFIX;
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
  }

  /** Rejects when the folder cannot be listed (refused, unavailable): logged here once, rethrown as it is. */
  async recent(modelVersion: string): Promise<SampledQuery[]> {
    const { capacity } = this.options;
    let names: string[];
    try {
      names = await this.newestNames(modelVersion);
    } catch (err) {
      this.logger.warn(
        { err, modelVersion, folder: this.blobs.uri(queryBatchFolder(modelVersion, this.prefix)) },
        'query sample: the batches could not be listed',
      );
      throw err;
    }
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
    // Names sort by the time of their first query: start at the window's (as a name, it sorts before any of that millisecond).
    const folder = queryBatchFolder(modelVersion, this.prefix);
    const startOffset = `${folder}${String(Math.max(0, Math.floor(this.now() - this.windowMs))).padStart(STAMP_DIGITS, '0')}`;
    for await (const info of this.blobs.list(folder, { startOffset })) {
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

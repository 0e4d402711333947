import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { z } from 'zod';
import { AppError, GenerationMismatchError, NotFoundError, ParseError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { SearchEventSink } from '../ports/search-events.js';
import type { FeedbackPair } from '../training/lit-batches.js';
import { MONITOR_EVENT_VERSION } from './monitoring.js';

/**
 * Click feedback, from the click to the training pair.
 *
 * **Only what was served is accepted.** Every search answer carries a query id and a feedback
 * token: an HMAC-SHA256 over (query id, query, issue time, a 64-bit hash of each result id served),
 * signed with the service's key. A click is accepted only with a valid, unexpired token whose
 * hashes include the clicked id, and the event recorded takes its query from the token, never from
 * the client. The token *is* the memory of what was served, so it works across Cloud Run instances
 * (they share the key through Secret Manager, `FEEDBACK_TOKEN_KEY`) and needs no shared store;
 * locally the key is random per process (a page older than a restart re-searches before its clicks
 * count). Each service also remembers, in a bounded LRU with the token's lifetime, which
 * (query id, result id) it has recorded, so a repeated click is counted once.
 *
 * **Storage.** The page records one JSON event per accepted click
 * ({queryId, query:{kind,value?}, resultId, action, at}): locally a line of feedback.jsonl, in the
 * cloud one object per (query id, result id) under `feedback/<day>/` of the features bucket,
 * created only if absent ({@link blobFeedbackWriter}), so instances cannot count a click twice
 * either; a lifecycle rule expires those objects (infra/components/storage.ts).
 *
 * **Reading for retraining.** Both readers keep only the newest {@link MAX_FEEDBACK_EVENTS} events,
 * count a (query id, result id) once, and never hold more than one bounded line or object at a time:
 * the local file is split into lines from a byte stream, and a line longer than
 * {@link MAX_EVENT_BYTES} (no event is) is skipped without being held, counted as invalid. A click on
 * a result of a 'similar' query pairs the query image with the opened one, a click on a text result
 * pairs the text with the image. Image uploads have no stored id to pair, so they are skipped. Bad
 * events are counted, never fatal: one torn write must not stop retraining.
 */

/** Longest result id accepted (ids are document ids: a hash, or a bucket-relative name). */
export const MAX_RESULT_ID_CHARS = 512;
/** Longest query value kept (the API accepts text queries up to 500 characters). */
export const MAX_QUERY_VALUE_CHARS = 1024;
/** Longest feedback token: 200 result hashes (≈ 5 kB in base64) plus a 500-character text query (≤ 2.7 kB) and the signature fit below. */
export const MAX_TOKEN_CHARS = 12 * 1024;
/** Largest feedback request body: the token and a result id, with room to spare. */
export const MAX_FEEDBACK_BODY_BYTES = 16 * 1024;

const queryShape = z.object({ kind: z.enum(['image', 'similar', 'text']), value: z.string().max(MAX_QUERY_VALUE_CHARS).optional() });
const feedbackEventSchema = z.object({
  /** Absent in events recorded before tokens existed: those are not deduplicated. */
  queryId: z.string().min(1).max(64).optional(),
  query: queryShape,
  resultId: z.string().min(1).max(MAX_RESULT_ID_CHARS),
  action: z.enum(['open', 'more-like-this']),
  at: z.string().max(64),
});

export type FeedbackQuery = z.infer<typeof queryShape>;
export type FeedbackEvent = z.infer<typeof feedbackEventSchema> & { queryId: string };

/** What the page posts to `/api/feedback`: the token of the answer clicked in, and the result. */
export const feedbackRequestSchema = z.strictObject({
  token: z.string().min(1).max(MAX_TOKEN_CHARS),
  resultId: z.string().min(1).max(MAX_RESULT_ID_CHARS),
  action: z.enum(['open', 'more-like-this']),
});
export type FeedbackRequest = z.infer<typeof feedbackRequestSchema>;

/** A query as its token proves it was served. */
export interface ServedQuery {
  queryId: string;
  query: FeedbackQuery;
  /** When the answer was served (ms since the epoch). */
  issuedAt: number;
}

export interface ServedQueriesOptions {
  /** HMAC key shared by every instance that may receive the clicks (≥ 32 bytes); random when absent. */
  key?: string | Buffer;
  /** How long after a search its results may be clicked. Default: 1 hour. */
  ttlMs?: number;
  /** Recorded (query id, result id) pairs remembered for deduplication. Default: 50,000. */
  maxRemembered?: number;
  now?: () => number;
}

const tokenPayloadSchema = z.object({
  v: z.literal(1),
  q: z.string().min(1).max(64),
  k: queryShape.shape.kind,
  val: z.string().max(MAX_QUERY_VALUE_CHARS).optional(),
  t: z.number().int(),
  h: z.array(z.string().regex(/^[0-9a-f]{16}$/)).max(1000),
});

/** 64 bits of SHA-256 of a result id: what a token lists (bounded size whatever the ids). */
const idHash = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 16);

/**
 * Issues and checks feedback tokens, and remembers which clicks were recorded (see the module
 * comment). One per search service.
 */
export class ServedQueries {
  private readonly key: Buffer;
  readonly ttlMs: number;
  private readonly maxRemembered: number;
  private readonly now: () => number;
  /** `queryId\0resultId` → expiry, in insertion order (oldest first): a bounded LRU with TTL. */
  private readonly recorded = new Map<string, number>();

  constructor(options: ServedQueriesOptions = {}) {
    const key = options.key === undefined ? randomBytes(32) : Buffer.from(options.key);
    if (key.length < 32) throw new AppError('the feedback token key must be at least 32 bytes (FEEDBACK_TOKEN_KEY)');
    this.key = key;
    this.ttlMs = options.ttlMs ?? 60 * 60 * 1000;
    this.maxRemembered = options.maxRemembered ?? 50_000;
    this.now = options.now ?? Date.now;
  }

  /** A new query id and the token proving that `resultIds` were served for `query`. */
  issue(query: FeedbackQuery, resultIds: readonly string[]): { queryId: string; token: string } {
    const queryId = randomBytes(12).toString('base64url');
    const payload = {
      v: 1,
      q: queryId,
      k: query.kind,
      ...(query.value !== undefined ? { val: query.value.slice(0, MAX_QUERY_VALUE_CHARS) } : {}),
      t: this.now(),
      h: resultIds.map(idHash),
    };
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return { queryId, token: `${body}.${this.sign(body)}` };
  }

  /** The served query behind `token`, if it is genuine, unexpired and `resultId` was among its results; ParseError otherwise. */
  accept(token: string, resultId: string): ServedQuery {
    const [body, signature, extra] = token.split('.');
    if (!body || !signature || extra !== undefined) throw new ParseError('feedback refused: malformed token');
    const expected = Buffer.from(this.sign(body));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      throw new ParseError('feedback refused: the token was not issued by this service');
    let payload: z.infer<typeof tokenPayloadSchema>;
    try {
      payload = tokenPayloadSchema.parse(JSON.parse(Buffer.from(body, 'base64url').toString('utf8')));
    } catch (err) {
      throw new ParseError('feedback refused: malformed token', { cause: err });
    }
    const age = this.now() - payload.t;
    if (age > this.ttlMs || age < -60_000) throw new ParseError('feedback refused: the search answer is too old; search again');
    if (!payload.h.includes(idHash(resultId))) throw new ParseError('feedback refused: that result was not served for this query');
    return { queryId: payload.q, query: { kind: payload.k, ...(payload.val !== undefined ? { value: payload.val } : {}) }, issuedAt: payload.t };
  }

  /** True the first time (query id, result id) is seen within the token lifetime; false for a repeat. */
  firstTime(queryId: string, resultId: string): boolean {
    const now = this.now();
    const key = `${queryId}\0${resultId}`;
    const until = this.recorded.get(key);
    if (until !== undefined && until > now) return false;
    this.recorded.delete(key);
    this.recorded.set(key, now + this.ttlMs);
    // Oldest first: drop expired entries and anything beyond the bound.
    for (const [k, expiry] of this.recorded) {
      if (this.recorded.size <= this.maxRemembered && expiry > now) break;
      this.recorded.delete(k);
    }
    return true;
  }

  /** Forgets a pair marked by {@link firstTime} whose recording failed, so a retry counts. */
  forget(queryId: string, resultId: string): void {
    this.recorded.delete(`${queryId}\0${resultId}`);
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}

/**
 * `record` that also queues a monitoring event for each click it recorded (prediction monitoring:
 * the event carries the query id of the search clicked in, which joins the two for click-through;
 * services/monitoring.ts). A click `record` refused is not counted.
 */
export function monitoredFeedback(
  record: (event: FeedbackEvent, served: ServedQuery) => Promise<void>,
  events: SearchEventSink,
): (event: FeedbackEvent, served: ServedQuery) => Promise<void> {
  return async (event, served) => {
    await record(event, served);
    try {
      events.append({ monitor: 'feedback', v: MONITOR_EVENT_VERSION, at: event.at, queryId: event.queryId, kind: event.query.kind, action: event.action });
    } catch {
      // Monitoring never fails a click that was recorded.
    }
  };
}

/** Cloud object name of one click: per (query id, result id), under the day the answer was served, sorting by time. */
export function feedbackObjectName(event: FeedbackEvent, issuedAt: number, prefix = 'feedback'): string {
  const stamp = new Date(issuedAt).toISOString();
  return `${prefix}/${stamp.slice(0, 10)}/${stamp.replace(/[:.]/g, '-')}-${event.queryId}-${idHash(event.resultId)}.json`;
}

/** A store that can create an object only if absent (GcsBlobStore: `ifGenerationMatch: '0'`). */
export interface CreateOnlyStore {
  write(name: string, data: string, options: { contentType?: string; ifGenerationMatch?: string }): Promise<unknown>;
}

/**
 * Feedback as one small JSON object per (query id, result id) under `feedback/<day>/` (GCS objects
 * cannot be appended to). Created only if absent: a click already recorded by another instance is
 * not written again (and the writer needs only create, never overwrite).
 */
export function blobFeedbackWriter(blobs: CreateOnlyStore, prefix = 'feedback'): (event: FeedbackEvent, served: ServedQuery) => Promise<void> {
  return async (event, served) => {
    try {
      await blobs.write(feedbackObjectName(event, served.issuedAt, prefix), JSON.stringify(event), { contentType: 'application/json', ifGenerationMatch: '0' });
    } catch (err) {
      if (err instanceof GenerationMismatchError) return;
      throw err;
    }
  };
}

export interface FeedbackParse {
  pairs: FeedbackPair[];
  /** Lines that are not a valid feedback event (torn, not JSON, wrongly shaped, or too long to be one). */
  invalid: number;
  /** Valid events that cannot become a pair (uploads, self-clicks, empty text). */
  skipped: number;
  /** Repeated clicks of one result for one query, counted once. */
  duplicates: number;
}

/** Newest events read for one retraining: older clicks add little and cost a read each. */
export const MAX_FEEDBACK_EVENTS = 100_000;

/** An event is a few hundred bytes; a line or object near this is not one. */
export const MAX_EVENT_BYTES = 64 * 1024;

type Parsed = z.infer<typeof feedbackEventSchema>;

/** One line → an event, or null (counted invalid). */
function parseLine(line: string): Parsed | null | undefined {
  if (line.trim() === '') return undefined;
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return null;
  }
  const parsed = feedbackEventSchema.safeParse(json);
  return parsed.success ? parsed.data : null;
}

/** Events (oldest first) → pairs, each (query id, result id) once. */
function toPairs(events: Iterable<Parsed>, into: FeedbackParse): FeedbackParse {
  const seen = new Set<string>();
  for (const { queryId, query, resultId } of events) {
    if (queryId !== undefined) {
      const key = `${queryId}\0${resultId}`;
      if (seen.has(key)) {
        into.duplicates++;
        continue;
      }
      seen.add(key);
    }
    const value = query.value?.trim();
    if (query.kind === 'similar' && value && value !== resultId) into.pairs.push({ kind: 'image', queryId: value, openedId: resultId });
    else if (query.kind === 'text' && value) into.pairs.push({ kind: 'text', query: value, openedId: resultId });
    else into.skipped++;
  }
  return into;
}

const emptyParse = (): FeedbackParse => ({ pairs: [], invalid: 0, skipped: 0, duplicates: 0 });

export function feedbackPairsFromLines(text: string): FeedbackParse {
  const out = emptyParse();
  const events: Parsed[] = [];
  for (const line of text.split('\n')) {
    const e = parseLine(line);
    if (e === null) out.invalid++;
    else if (e) events.push(e);
  }
  return toPairs(events, out);
}

/**
 * The lines of a byte stream, each at most `maxBytes` long: a longer line is never held (its bytes
 * are dropped as they arrive) and comes out as `null`. Memory stays near one chunk plus one line.
 */
export async function* boundedLines(chunks: AsyncIterable<Buffer>, maxBytes: number): AsyncGenerator<string | null> {
  let parts: Buffer[] = [];
  let length = 0;
  let overlong = false;
  for await (const chunk of chunks) {
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      if (!overlong && length + (nl - start) <= maxBytes) {
        parts.push(chunk.subarray(start, nl));
        yield Buffer.concat(parts).toString('utf8');
      } else yield null;
      parts = [];
      length = 0;
      overlong = false;
      start = nl + 1;
    }
    if (start < chunk.length && !overlong) {
      length += chunk.length - start;
      if (length > maxBytes) {
        overlong = true;
        parts = [];
      } else parts.push(Buffer.from(chunk.subarray(start)));
    }
  }
  if (overlong) yield null;
  else if (length > 0) yield Buffer.concat(parts).toString('utf8');
}

/**
 * Reads a feedback.jsonl file (appended in time order) as a stream of bounded lines, keeping the
 * newest `maxEvents` events (parsed, so a few hundred bytes each); a missing file is no feedback.
 */
export async function readFeedbackFile(file: string, options: { maxEvents?: number; maxLineBytes?: number; logger?: Logger } = {}): Promise<FeedbackParse> {
  const maxEvents = options.maxEvents ?? MAX_FEEDBACK_EVENTS;
  const out = emptyParse();
  let newest: Parsed[] = [];
  let dropped = 0;
  try {
    for await (const line of boundedLines(createReadStream(file, { highWaterMark: 1024 * 1024 }), options.maxLineBytes ?? MAX_EVENT_BYTES)) {
      const e = line === null ? null : parseLine(line);
      if (e === null) out.invalid++;
      else if (e) {
        newest.push(e);
        // Trimmed in chunks, so memory stays near 2 × maxEvents events without a shift per line.
        if (newest.length >= 2 * maxEvents) {
          dropped += newest.length - maxEvents;
          newest = newest.slice(newest.length - maxEvents);
        }
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw err;
  }
  if (newest.length > maxEvents) {
    dropped += newest.length - maxEvents;
    newest = newest.slice(newest.length - maxEvents);
  }
  toPairs(newest, out);
  report(options.logger ?? silentLogger, { source: file, ...counts(out), older: dropped });
  return out;
}

export interface FeedbackObjectsRead extends FeedbackParse {
  /** Objects read (the newest `maxEvents` of those listed). */
  objects: number;
  /** Older objects listed but not read. */
  older: number;
  /** Objects gone between listing and reading, or too large to be an event. */
  unreadable: number;
}

/**
 * Reads click feedback from a bucket: one event per object under `prefix` (names sort by time:
 * `feedback/<day>/<timestamp>-<random>.json`). Listing streams; only the names of the newest
 * `maxEvents` objects are kept (about 2 × maxEvents names at most), then those are read
 * `concurrency` at a time, oldest first, so the pairs come out in time order.
 */
export async function readFeedbackObjects(
  blobs: BlobStore,
  options: { prefix?: string; maxEvents?: number; concurrency?: number; logger?: Logger } = {},
): Promise<FeedbackObjectsRead> {
  const prefix = options.prefix ?? 'feedback/';
  const maxEvents = options.maxEvents ?? MAX_FEEDBACK_EVENTS;
  const concurrency = options.concurrency ?? 32;
  const logger = options.logger ?? silentLogger;
  let names: string[] = [];
  let listed = 0;
  const keepNewest = () => {
    names.sort();
    if (names.length > maxEvents) names = names.slice(names.length - maxEvents);
  };
  for await (const info of blobs.list(prefix)) {
    if (!info.name.endsWith('.json')) continue;
    listed++;
    names.push(info.name);
    if (names.length >= 2 * maxEvents) keepNewest();
  }
  keepNewest();

  // Parsed as each object arrives (events are small; the raw text is not kept), in name order.
  const perObject: ((Parsed | null)[] | null)[] = new Array<(Parsed | null)[] | null>(names.length).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const i = next++;
      try {
        const text = (await blobs.read(names[i]!, { maxBytes: MAX_EVENT_BYTES })).toString('utf8');
        perObject[i] = text.split('\n').flatMap((line) => {
          const e = parseLine(line);
          return e === undefined ? [] : [e];
        });
      } catch (err) {
        // Gone since listing (a lifecycle rule) or far too large for an event: not worth failing over.
        const tooLarge = err instanceof AppError && err.meta.maxBytes === MAX_EVENT_BYTES;
        if (!(err instanceof NotFoundError) && !tooLarge) throw err;
        logger.debug({ name: names[i], err }, 'feedback object unreadable');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, names.length) }, worker));

  const out: FeedbackObjectsRead = { ...emptyParse(), objects: names.length, older: listed - names.length, unreadable: 0 };
  const events: Parsed[] = [];
  for (const parsed of perObject) {
    if (parsed === null) out.unreadable++;
    else
      for (const e of parsed) {
        if (e === null) out.invalid++;
        else events.push(e);
      }
  }
  toPairs(events, out);
  report(logger, { source: blobs.uri(prefix), ...counts(out), objects: out.objects, older: out.older, unreadable: out.unreadable });
  return out;
}

function counts(p: FeedbackParse) {
  return { pairs: p.pairs.length, invalid: p.invalid, skipped: p.skipped, duplicates: p.duplicates };
}

function report(logger: Logger, fields: { source: string; pairs: number; invalid: number; skipped: number; older: number; [k: string]: unknown }): void {
  if (fields.invalid > 0) logger.warn(fields, 'unreadable feedback events skipped');
  else logger.info(fields, 'feedback read');
}

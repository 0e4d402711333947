import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { z } from 'zod';
import { AppError, NotFoundError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { FeedbackPair } from '../training/lit-batches.js';

/**
 * Click feedback → training pairs. The page records one JSON event per click
 * ({query:{kind,value?}, resultId, action, at}): locally a line of feedback.jsonl, in the cloud one
 * object under `feedback/<day>/` of the features bucket (functions/search-server.ts
 * `gcsFeedbackWriter`). A click on a result of a 'similar' query pairs the query image with the
 * opened one, a click on a text result pairs the text with the image. Image uploads have no stored
 * id to pair, so they are skipped. Bad events are counted, never fatal: one torn write must not
 * stop retraining. Both readers keep only the newest {@link MAX_FEEDBACK_EVENTS} events.
 */
const feedbackEventSchema = z.object({
  query: z.object({ kind: z.enum(['image', 'similar', 'text']), value: z.string().optional() }),
  resultId: z.string().min(1),
  action: z.enum(['open', 'more-like-this']),
  at: z.string(),
});

export interface FeedbackParse {
  pairs: FeedbackPair[];
  /** Lines that are not a valid feedback event. */
  invalid: number;
  /** Valid events that cannot become a pair (uploads, self-clicks, empty text). */
  skipped: number;
}

/** Newest events read for one retraining: older clicks add little and cost a read each. */
export const MAX_FEEDBACK_EVENTS = 100_000;

/** Adds one line's event to `into`. */
function addLine(into: FeedbackParse, line: string): void {
  if (line.trim() === '') return;
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    into.invalid++;
    return;
  }
  const parsed = feedbackEventSchema.safeParse(json);
  if (!parsed.success) {
    into.invalid++;
    return;
  }
  const { query, resultId } = parsed.data;
  const value = query.value?.trim();
  if (query.kind === 'similar' && value && value !== resultId) into.pairs.push({ kind: 'image', queryId: value, openedId: resultId });
  else if (query.kind === 'text' && value) into.pairs.push({ kind: 'text', query: value, openedId: resultId });
  else into.skipped++;
}

export function feedbackPairsFromLines(text: string): FeedbackParse {
  const out: FeedbackParse = { pairs: [], invalid: 0, skipped: 0 };
  for (const line of text.split('\n')) addLine(out, line);
  return out;
}

/**
 * Reads a feedback.jsonl file (appended in time order) line by line, keeping the newest
 * `maxEvents` lines; a missing file is no feedback.
 */
export async function readFeedbackFile(file: string, options: { maxEvents?: number; logger?: Logger } = {}): Promise<FeedbackParse> {
  const maxEvents = options.maxEvents ?? MAX_FEEDBACK_EVENTS;
  const newest: string[] = [];
  let dropped = 0;
  try {
    const lines = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      newest.push(line);
      // Trimmed in chunks, so memory stays near 2 × maxEvents lines without a shift per line.
      if (newest.length >= 2 * maxEvents) dropped += newest.splice(0, newest.length - maxEvents).length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pairs: [], invalid: 0, skipped: 0 };
    throw err;
  }
  if (newest.length > maxEvents) dropped += newest.splice(0, newest.length - maxEvents).length;
  const out: FeedbackParse = { pairs: [], invalid: 0, skipped: 0 };
  for (const line of newest) addLine(out, line);
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

  const texts: (string | null)[] = new Array<string | null>(names.length).fill(null);
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const i = next++;
      try {
        texts[i] = (await blobs.read(names[i]!, { maxBytes: MAX_EVENT_BYTES })).toString('utf8');
      } catch (err) {
        // Gone since listing (a lifecycle rule) or far too large for an event: not worth failing over.
        const tooLarge = err instanceof AppError && err.meta.maxBytes === MAX_EVENT_BYTES;
        if (!(err instanceof NotFoundError) && !tooLarge) throw err;
        logger.debug({ name: names[i], err }, 'feedback object unreadable');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, names.length) }, worker));

  const out: FeedbackObjectsRead = { pairs: [], invalid: 0, skipped: 0, objects: names.length, older: listed - names.length, unreadable: 0 };
  for (const text of texts) {
    if (text === null) out.unreadable++;
    else for (const line of text.split('\n')) addLine(out, line);
  }
  report(logger, { source: blobs.uri(prefix), ...counts(out), objects: out.objects, older: out.older, unreadable: out.unreadable });
  return out;
}

/** An event is a few hundred bytes; anything near this is not one. */
const MAX_EVENT_BYTES = 64 * 1024;

function counts(p: FeedbackParse) {
  return { pairs: p.pairs.length, invalid: p.invalid, skipped: p.skipped };
}

function report(logger: Logger, fields: { source: string; pairs: number; invalid: number; skipped: number; older: number; [k: string]: unknown }): void {
  if (fields.invalid > 0) logger.warn(fields, 'unreadable feedback events skipped');
  else logger.info(fields, 'feedback read');
}

import { finalizeEvent, recordIgnored, type IgnoredEntry } from '../adapters/local/folder-watcher.js';
import { isMachineFault, retryWithBackoff } from '../backoff.js';
import { TOPICS, type ImageEvent } from '../contracts.js';
import type { Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { EventBus } from '../ports/event-bus.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { VectorIndex } from '../ports/vector-index.js';

export interface RepublishDeps {
  /** The watched bucket (locally the folder). */
  blobs: BlobStore;
  /** Where a storage event goes, as a new object's would (locally: the object-event handler, then the workers are woken). */
  onObject(event: ImageEvent): Promise<void>;
}

export interface ReconcileDeps extends RepublishDeps {
  /** The live index, whose documents of this bucket are checked against the bucket's objects. */
  index: VectorIndex | null;
  /** Where delete events for vanished objects are published (`image-events`). */
  bus: EventBus;
  /**
   * Images rejected for their content (corrupt, not an image…): one still at the generation that
   * was rejected is not sent again. Those rejected for a setting ({@link SETTING_REJECTIONS}) are.
   */
  rejections?: RejectionLog;
  now?: () => Date;
  /**
   * The folder's entries that are not objects (hidden, partial writes, links…) and the log that
   * lists them with their reason: recorded afresh, and records of entries now gone forgotten.
   */
  ignored?: { log: RejectionLog; entries(): AsyncIterable<IgnoredEntry> };
  /** A storage event that could not be handled for a fault of the machine (a full disk) is retried with backoff; each failure is logged here. */
  logger?: Logger;
  /** Once true (the process is stopping), the pass ends early and a failing event is no longer retried: the next start catches up. */
  stopped?: () => boolean;
}

export interface ReconcileResult {
  /** Objects new or changed since the index saw them, published as finalize events. */
  published: number;
  /** Indexed documents whose object is gone, published as delete events. */
  deleted: number;
  /** Entries of the folder that are not objects, listed as ignored with their reason. */
  ignored: number;
  /** Objects already indexed (or rejected for their content) at their generation: nothing sent. */
  unchanged: number;
}

/** Rejection reasons that depend on a setting (IMGSEARCH_MAX_BYTES, the pixel limit): re-examined after a restart. */
export const SETTING_REJECTIONS: ReadonlySet<string> = new Set(['too-large', 'too-many-pixels']);

/**
 * A finalize event for every object of the bucket, through the same path as a new upload: after
 * a switch to another image tower the new index starts empty, and this re-embeds every image
 * (those already indexed at their generation are skipped cheaply by the embed step).
 */
export async function republishBucket(deps: RepublishDeps): Promise<number> {
  let published = 0;
  for await (const info of deps.blobs.list()) {
    await deps.onObject(finalizeEvent(info));
    published += 1;
  }
  return published;
}

/** uri → generation of the index's live documents: ids and generations only when the index can, else a full scan. */
async function indexedGenerations(index: VectorIndex, bucketUri: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const pages: AsyncIterable<{ uri: string; generation: string }[]> = index.scanGenerations ? index.scanGenerations(1000) : index.scan(1000);
  for await (const page of pages) {
    for (const doc of page) if (doc.uri.startsWith(bucketUri)) out.set(doc.uri, doc.generation);
    // Searches are answered on this thread meanwhile: let them in between pages.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return out;
}

/**
 * Catches the index up with the bucket after time away, in one pass over a cheap listing (name,
 * size, generation) against what the index holds (uri → generation, read without vectors): only
 * objects that are new or whose generation differs go through the pipeline; every document of
 * this bucket whose object vanished gets a delete event carrying the generation the index holds,
 * so the delete removes only what it has seen. A restart over an unchanged, indexed folder sends
 * nothing.
 */
export async function reconcileBucket(deps: ReconcileDeps): Promise<ReconcileResult> {
  const bucketUri = deps.blobs.uri('x').slice(0, -1);
  const indexed = deps.index ? await indexedGenerations(deps.index, bucketUri) : new Map<string, string>();
  const rejected = new Map<string, string>();
  if (deps.rejections) {
    for (const record of await deps.rejections.list(Number.MAX_SAFE_INTEGER)) {
      if (record.uri.startsWith(bucketUri) && !SETTING_REJECTIONS.has(record.reason)) rejected.set(record.uri, record.generation);
    }
  }
  const present = new Set<string>();
  const stopped = deps.stopped ?? (() => false);
  // A full disk while catching up: each event is retried (with backoff) until it is queued, never skipped.
  const handle = (event: ImageEvent): Promise<void> =>
    retryWithBackoff(() => deps.onObject(event), {
      stopped,
      retryable: isMachineFault,
      onFailure: (err, attempt, delayMs) => deps.logger?.error({ err, object: event.name, attempt, delayMs }, 'could not queue a storage event; trying again'),
    });
  let published = 0;
  let unchanged = 0;
  for await (const info of deps.blobs.list()) {
    if (stopped()) return { published, deleted: 0, ignored: 0, unchanged };
    const uri = deps.blobs.uri(info.name);
    present.add(uri);
    if (indexed.get(uri) === info.generation || rejected.get(uri) === info.generation) {
      unchanged += 1;
      continue;
    }
    await handle(finalizeEvent(info));
    published += 1;
  }
  let ignored = 0;
  const listedIgnored = new Set<string>();
  if (deps.ignored) {
    const { log, entries } = deps.ignored;
    for await (const entry of entries()) {
      listedIgnored.add(deps.blobs.uri(entry.name));
      await retryWithBackoff(() => recordIgnored(log, deps.blobs.bucket, entry), { stopped, retryable: isMachineFault });
      ignored += 1;
    }
    // Records of files that are gone (removed while nothing watched) are forgotten.
    for (const record of await log.list(Number.MAX_SAFE_INTEGER)) {
      if (record.uri.startsWith(bucketUri) && !present.has(record.uri) && !listedIgnored.has(record.uri)) await log.clear(record.id);
    }
  }
  let deleted = 0;
  const now = deps.now ?? (() => new Date());
  for (const [uri, generation] of indexed) {
    if (present.has(uri)) continue;
    await deps.bus.publish(TOPICS.imageEvents, {
      bucket: deps.blobs.bucket,
      name: uri.slice(bucketUri.length),
      generation,
      // The handlers do not read it for a delete; the index forgets the document by id and generation.
      contentType: 'application/octet-stream',
      size: 0,
      eventType: 'delete',
      eventTime: now().toISOString(),
    } satisfies ImageEvent);
    deleted += 1;
  }
  return { published, deleted, ignored, unchanged };
}

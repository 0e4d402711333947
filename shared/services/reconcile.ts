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
  now?: () => Date;
  /**
   * The folder's entries that are not objects (hidden, partial writes, links…) and the log that
   * lists them with their reason: recorded afresh, and records of entries now gone forgotten.
   */
  ignored?: { log: RejectionLog; entries(): AsyncIterable<IgnoredEntry> };
  /** A storage event that could not be handled for a fault of the machine (a full disk) is retried with backoff; each failure is logged here. */
  logger?: Logger;
}

export interface ReconcileResult {
  /** Objects re-published as finalize events. */
  published: number;
  /** Indexed documents whose object is gone, published as delete events. */
  deleted: number;
  /** Entries of the folder that are not objects, listed as ignored with their reason. */
  ignored: number;
}

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

/**
 * Catches the index up with the bucket after time away (objects added or removed while nothing
 * watched it): every object is re-published ({@link republishBucket}) and every document of this
 * bucket whose object vanished gets a delete event carrying the generation the index holds, so
 * the delete removes only what it has seen.
 */
export async function reconcileBucket(deps: ReconcileDeps): Promise<ReconcileResult> {
  const present = new Set<string>();
  // A full disk while catching up: each event is retried (with backoff) until it is queued, never skipped.
  const handle = (event: ImageEvent): Promise<void> =>
    retryWithBackoff(() => deps.onObject(event), {
      retryable: isMachineFault,
      onFailure: (err, attempt, delayMs) => deps.logger?.error({ err, object: event.name, attempt, delayMs }, 'could not queue a storage event; trying again'),
    });
  const published = await republishBucket({
    blobs: deps.blobs,
    onObject: (event) => {
      present.add(deps.blobs.uri(event.name));
      return handle(event);
    },
  });
  let ignored = 0;
  const listedIgnored = new Set<string>();
  if (deps.ignored) {
    const { log, entries } = deps.ignored;
    for await (const entry of entries()) {
      listedIgnored.add(deps.blobs.uri(entry.name));
      await retryWithBackoff(() => recordIgnored(log, deps.blobs.bucket, entry), { retryable: isMachineFault });
      ignored += 1;
    }
  }
  const bucketUri = deps.blobs.uri('x').slice(0, -1);
  if (deps.ignored) {
    // Records of files that are gone (removed while nothing watched) are forgotten.
    for (const record of await deps.ignored.log.list(Number.MAX_SAFE_INTEGER)) {
      if (record.uri.startsWith(bucketUri) && !present.has(record.uri) && !listedIgnored.has(record.uri)) await deps.ignored.log.clear(record.id);
    }
  }
  let deleted = 0;
  if (!deps.index) return { published, deleted, ignored };
  const now = deps.now ?? (() => new Date());
  for await (const docs of deps.index.scan(1000)) {
    for (const doc of docs) {
      if (!doc.uri.startsWith(bucketUri) || present.has(doc.uri)) continue;
      await deps.bus.publish(TOPICS.imageEvents, {
        bucket: deps.blobs.bucket,
        name: doc.uri.slice(bucketUri.length),
        generation: doc.generation,
        contentType: doc.contentType ?? 'application/octet-stream',
        size: 0,
        eventType: 'delete',
        eventTime: now().toISOString(),
      } satisfies ImageEvent);
      deleted += 1;
    }
  }
  return { published, deleted, ignored };
}

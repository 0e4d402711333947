import { finalizeEvent } from '../adapters/local/folder-watcher.js';
import { TOPICS, type ImageEvent } from '../contracts.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { EventBus } from '../ports/event-bus.js';
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
}

export interface ReconcileResult {
  /** Objects re-published as finalize events. */
  published: number;
  /** Indexed documents whose object is gone, published as delete events. */
  deleted: number;
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
  const published = await republishBucket({
    blobs: deps.blobs,
    onObject: (event) => {
      present.add(deps.blobs.uri(event.name));
      return deps.onObject(event);
    },
  });
  let deleted = 0;
  if (!deps.index) return { published, deleted };
  const bucketUri = deps.blobs.uri('x').slice(0, -1);
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
  return { published, deleted };
}

import { documentId, imageEventSchema, objectUri, TOPICS, type ImageEvent } from '../contracts.js';
import type { Logger } from '../logger.js';
import type { EventBus } from '../ports/event-bus.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import { parseWith } from '../validation.js';
import { isSidecar, looksLikeImage } from './image-types.js';
import type { ObjectEventOutcome } from './results.js';

export interface ObjectEventDeps {
  bus: EventBus;
  rejections: RejectionLog;
  logger: Logger;
  settings: { prefix: string; maxBytes: number };
  /**
   * Where objects that are not indexed for a reason other than a rejection are listed (not an
   * image type, a caption sidecar, outside the prefix), so that every object shows up somewhere:
   * indexed, rejected or ignored. A delete or a later indexable generation forgets the entry.
   */
  ignored?: RejectionLog;
}

/** Parses the event payload; throws ParseError (the entry point dead-letters it) when malformed. */
export function parseImageEvent(payload: unknown): ImageEvent {
  return parseWith(imageEventSchema, payload, 'malformed image event');
}

/**
 * Storage event → validate → publish to `image-events`. Cheap checks only (no read): the embed
 * worker decodes and rejects bad content. Deletes always pass so the index forgets the object.
 */
export async function handleObjectEvent(payload: unknown, deps: ObjectEventDeps): Promise<ObjectEventOutcome> {
  const event = parseImageEvent(payload);
  const id = documentId(event.bucket, event.name);
  const log = deps.logger.child({ id, object: event.name, generation: event.generation, eventType: event.eventType });
  const skip = async (reason: string, detail: string): Promise<ObjectEventOutcome> => {
    if (event.eventType === 'delete') {
      await deps.ignored?.clear(id);
    } else {
      await deps.ignored?.record({ id, uri: objectUri(event.bucket, event.name), generation: event.generation, reason, detail, at: new Date().toISOString() });
    }
    log.info({ reason }, `ignored: ${event.name}: ${detail}`);
    return { status: 'skipped', id, reason };
  };
  if (!event.name.startsWith(deps.settings.prefix)) {
    return skip('outside-prefix', `outside the prefix "${deps.settings.prefix}" that is indexed`);
  }
  if (event.eventType === 'finalize') {
    if (!looksLikeImage(event.name, event.contentType)) {
      return isSidecar(event.name)
        ? skip('sidecar', 'a caption/label sidecar (.json/.txt): read with the image of the same name, not indexed itself')
        : skip('not-an-image-type', `content type ${event.contentType} is not an image type that is decoded`);
    }
    await deps.ignored?.clear(id);
    const reject =
      event.size === 0
        ? { reason: 'empty-file', detail: 'the object is 0 bytes' }
        : event.size > deps.settings.maxBytes
          ? { reason: 'too-large', detail: `${event.size} bytes exceeds the limit of ${deps.settings.maxBytes}` }
          : null;
    if (reject) {
      await deps.rejections.record({
        id,
        uri: objectUri(event.bucket, event.name),
        generation: event.generation,
        ...reject,
        at: new Date().toISOString(),
      });
      log.warn({ reason: reject.reason }, `rejected ${event.name}: ${reject.detail}`);
      return { status: 'rejected', id, ...reject };
    }
  } else {
    await deps.ignored?.clear(id);
  }
  await deps.bus.publish(TOPICS.imageEvents, event, { id, eventType: event.eventType, generation: event.generation });
  // Stryker disable next-line StringLiteral: debug log wording only, no caller reads it
  log.debug('published image event');
  return { status: 'published', id, eventType: event.eventType };
}

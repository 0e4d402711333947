import * as functions from '@google-cloud/functions-framework';
import { GcsBlobStore } from '../shared/adapters/gcp/gcs-blob-store.js';
import { GcsRejectionLog } from '../shared/adapters/gcp/gcs-rejection-log.js';
import { TOPICS } from '../shared/contracts.js';
import { ParseError } from '../shared/errors.js';
import { handleObjectEvent } from '../shared/handlers/on-object-event.js';
import type { ObjectEventOutcome } from '../shared/handlers/results.js';
import { withTrace, type Logger } from '../shared/logger.js';
import type { EventBus } from '../shared/ports/event-bus.js';
import type { RejectionLog } from '../shared/ports/rejection-log.js';
import { attributeValue, deadLetterBody, imageEventFromStorageCloudEvent, type CloudEventLike } from './cloud-events.js';
import { cloudConfig, deadLetterTopicOf } from '../shared/wiring/cloud-config.js';
import { cloudEventBus, cloudLogger, LazyDeps, storageClient } from '../shared/wiring/cloud.js';

export interface OnObjectEventDeps {
  bus: EventBus;
  rejections: RejectionLog;
  logger: Logger;
  settings: { prefix: string; maxBytes: number };
  /** Where malformed CloudEvents go (`<image-events topic>-dead-letter`). */
  deadLetterTopic: string;
  /** For the trace id in logs (`projects/<id>/traces/<trace>`). */
  projectId?: string;
}

export type OnObjectEventResult = ObjectEventOutcome | { status: 'dead-lettered'; reason: string };

const deps = new LazyDeps<OnObjectEventDeps>(async () => {
  const config = cloudConfig('onObjectEvent');
  const logger = cloudLogger('onObjectEvent');
  return {
    bus: cloudEventBus({ projectId: config.GCP_PROJECT, topics: { [TOPICS.imageEvents]: config.TOPIC_IMAGE_EVENTS }, logger }),
    rejections: new GcsRejectionLog(new GcsBlobStore(storageClient(), config.FEATURES_BUCKET)),
    logger,
    settings: { prefix: config.IMAGE_PREFIX, maxBytes: config.MAX_BYTES },
    deadLetterTopic: deadLetterTopicOf(config.TOPIC_IMAGE_EVENTS),
    projectId: config.GCP_PROJECT,
  };
});

export function setDepsForTesting(value: OnObjectEventDeps | null): void {
  deps.setForTesting(value);
}

/**
 * Eventarc GCS `object.v1.finalized` / `object.v1.deleted` → validate → `image-events`.
 * A malformed or unexpected CloudEvent is published to the dead-letter topic with the reason and
 * the function returns normally (retrying cannot fix it); a transient fault (Pub/Sub, GCS) throws,
 * so Eventarc delivers the event again.
 */
export async function onObjectEvent(event: CloudEventLike): Promise<OnObjectEventResult> {
  const d = await deps.get();
  const logger = withTrace(d.logger, event.traceparent, d.projectId).child({ eventId: event.id, eventType: event.type });
  try {
    const payload = imageEventFromStorageCloudEvent(event);
    return await handleObjectEvent(payload, { ...d, logger });
  } catch (err) {
    if (!(err instanceof ParseError)) {
      logger.error({ err }, 'object event failed; Eventarc will retry');
      throw err;
    }
    const reason = err.message;
    await d.bus.publish(d.deadLetterTopic, deadLetterBody(event, reason), {
      reason: attributeValue(reason),
      sourceEventId: attributeValue(event.id ?? ''),
      sourceType: attributeValue(String(event.type ?? '')),
    });
    logger.warn({ reason, deadLetterTopic: d.deadLetterTopic }, 'malformed object event dead-lettered');
    return { status: 'dead-lettered', reason };
  }
}

functions.cloudEvent('onObjectEvent', onObjectEvent);

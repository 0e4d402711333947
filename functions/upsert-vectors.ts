import * as functions from '@google-cloud/functions-framework';
import { EmbeddingShardReader } from '../shared/adapters/gcp/embedding-shards.js';
import { GcsBlobStore } from '../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../shared/adapters/gcp/gcs-feature-store.js';
import { GcsRejectionLog } from '../shared/adapters/gcp/gcs-rejection-log.js';
import { TOPICS } from '../shared/contracts.js';
import { errorMessage, ParseError, TransientError } from '../shared/errors.js';
import type { UpsertHandlerOutcome } from '../shared/handlers/results.js';
import { upsertEmbeddings, type UpsertDeps } from '../shared/handlers/upsert-vectors.js';
import { withTrace, type Logger } from '../shared/logger.js';
import { LiveIndexCache } from '../shared/services/live-index-cache.js';
import { UpsertBatcher } from '../shared/services/upsert-batcher.js';
import type { Delivery, EventBus } from '../shared/ports/event-bus.js';
import type { FeatureStore } from '../shared/ports/feature-store.js';
import type { RejectionLog } from '../shared/ports/rejection-log.js';
import type { VectorIndex } from '../shared/ports/vector-index.js';
import { attributeValue, deliveryFromPubSubCloudEvent, type CloudEventLike } from './cloud-events.js';
import { cloudConfig, deadLetterTopicOf, topicFromPubSubSource } from '../shared/wiring/cloud-config.js';
import { cloudEventBus, cloudIndexCatalog, cloudLogger, cloudSearchEvents, LazyDeps, storageClient } from '../shared/wiring/cloud.js';

export interface UpsertVectorsDeps {
  /** The index behind the alias; null when none exists yet (the message is retried, never lost). */
  liveIndex(): Promise<VectorIndex | null>;
  bus: EventBus;
  rejections: RejectionLog;
  features?: FeatureStore;
  logger: Logger;
  readShardRow?: UpsertDeps['readShardRow'];
  /** Freshness events (upload → searchable) for the log-based metrics. */
  events?: UpsertDeps['events'];
  /** The embeddings topic, used when the CloudEvent's source names no topic. */
  embeddingsTopic?: string;
  projectId?: string;
}

export type UpsertVectorsResult =
  { status: 'done'; outcome: UpsertHandlerOutcome['status'] } | { status: 'dead-lettered'; reason: string; deadLetterTopic: string };

const deps = new LazyDeps<UpsertVectorsDeps>(async () => {
  const config = cloudConfig('upsertVectors');
  const logger = cloudLogger('upsertVectors');
  const catalog = await cloudIndexCatalog(config, logger);
  const features = new GcsBlobStore(storageClient(), config.FEATURES_BUCKET);
  const shards = new EmbeddingShardReader(features);
  // Looked up again every few seconds, so an alias swap (reindex) is followed.
  const live = new LiveIndexCache(() => catalog.live());
  return {
    liveIndex: () => live.get(),
    bus: cloudEventBus({ projectId: config.GCP_PROJECT, topics: { [TOPICS.imageEvents]: config.TOPIC_IMAGE_EVENTS }, logger }),
    rejections: new GcsRejectionLog(features),
    features: new GcsFeatureStore(features, { logger }),
    logger,
    readShardRow: (shard, row) => shards.read({ shard, row }),
    events: cloudSearchEvents('upsertVectors'),
    embeddingsTopic: config.TOPIC_EMBEDDINGS,
    projectId: config.GCP_PROJECT,
  };
});

export function setDepsForTesting(value: UpsertVectorsDeps | null): void {
  deps.setForTesting(value);
}

/** The outcome of one message of a batch, and the index it was written to. */
interface Written {
  outcome: UpsertHandlerOutcome;
  index: string;
}

/**
 * One batch of the messages in flight on this instance (shared/services/upsert-batcher.ts): one
 * index write for all of them (one `_bulk`), one outcome per message. A message delivered twice at
 * once (Pub/Sub is at-least-once) carries the same ack id twice, so positions stand in for ack ids.
 */
async function writeBatch(d: UpsertVectorsDeps, deliveries: Delivery[]): Promise<Written[]> {
  const index = await d.liveIndex().catch((err: unknown) => {
    throw new TransientError(`OpenSearch is unreachable: ${errorMessage(err)}`, { cause: err });
  });
  if (!index) throw new TransientError('OpenSearch has no live index yet (the alias points nowhere); the message will be retried');
  const tagged = deliveries.map((delivery, i) => ({ ...delivery, ackId: String(i) }));
  const outcomes = await upsertEmbeddings(tagged, { ...d, index, logger: d.logger.child({ batch: deliveries.length }) });
  const written: (Written | undefined)[] = deliveries.map(() => undefined);
  for (const outcome of outcomes)
    written[Number(outcome.ackId)] = { outcome: { ...outcome, ackId: deliveries[Number(outcome.ackId)]!.ackId }, index: index.name };
  if (written.some((w) => w === undefined)) throw new TransientError('the upsert handler returned no outcome for a message');
  return written as Written[];
}

/** One batcher per instance and set of dependencies. */
let batcher: { deps: UpsertVectorsDeps; batcher: UpsertBatcher<Delivery, Written> } | null = null;
function batcherFor(d: UpsertVectorsDeps): UpsertBatcher<Delivery, Written> {
  if (batcher?.deps !== d) batcher = { deps: d, batcher: new UpsertBatcher((deliveries) => writeBatch(d, deliveries)) };
  return batcher.batcher;
}

/**
 * Pub/Sub `embeddings` message (push) → the live OpenSearch index, idempotent and ordered by
 * generation. The HTTP status settles the message: returning acks it, throwing makes Pub/Sub
 * redeliver (with backoff, until the subscription's dead-letter policy moves it). A malformed
 * message is published to the dead-letter topic with the reason and acked: retrying cannot fix it.
 * Messages in flight on the instance at once are written together (one `_bulk` per batch); each
 * request still answers for its own message, so a refused document fails only its own request.
 */
export async function upsertVectors(event: CloudEventLike): Promise<UpsertVectorsResult> {
  const d = await deps.get();
  const logger = withTrace(d.logger, event.traceparent, d.projectId).child({ eventId: event.id });
  const sourceTopic = topicFromPubSubSource(event.source) ?? d.embeddingsTopic;
  let delivery: Delivery;
  try {
    delivery = deliveryFromPubSubCloudEvent(event);
  } catch (err) {
    if (!(err instanceof ParseError)) throw err;
    return deadLetter(d, logger, sourceTopic, { data: event.data, attributes: {}, messageId: event.id ?? '' }, err.message);
  }
  const log = logger.child({ messageId: delivery.messageId, deliveryAttempt: delivery.deliveryAttempt });
  const { outcome, index } = await batcherFor(d).submit(delivery);
  switch (outcome.status) {
    case 'retry':
      log.warn({ detail: outcome.detail }, 'upsert failed; Pub/Sub will redeliver');
      throw new TransientError(`upsert of ${outcome.id} failed: ${outcome.detail}`);
    case 'dead-lettered':
      return deadLetter(d, log, sourceTopic, delivery, outcome.detail);
    default:
      log.info({ id: outcome.id, outcome: outcome.status, index }, `embedding ${outcome.status}`);
      return { status: 'done', outcome: outcome.status };
  }
}

async function deadLetter(
  d: UpsertVectorsDeps,
  logger: Logger,
  sourceTopic: string | undefined,
  message: { data: unknown; attributes: Record<string, string>; messageId: string },
  reason: string,
): Promise<UpsertVectorsResult> {
  if (!sourceTopic) {
    // Without a topic there is nowhere to park it: let Pub/Sub's own dead-letter policy end it.
    throw new ParseError(`${reason} (and no dead-letter topic: the CloudEvent source names no topic and TOPIC_EMBEDDINGS is unset)`);
  }
  const deadLetterTopic = deadLetterTopicOf(sourceTopic);
  // Pub/Sub reserves `goog*` attribute names; the rest of the original attributes travel along.
  const kept = Object.fromEntries(
    Object.entries(message.attributes)
      .filter(([k]) => !k.startsWith('goog'))
      .map(([k, v]) => [k, attributeValue(v)]),
  );
  await d.bus.publish(deadLetterTopic, message.data ?? null, {
    ...kept,
    reason: attributeValue(reason),
    sourceMessageId: attributeValue(message.messageId),
    deadLetteredAt: new Date().toISOString(),
  });
  logger.warn({ reason, deadLetterTopic }, 'malformed embedding message dead-lettered');
  return { status: 'dead-lettered', reason, deadLetterTopic };
}

functions.cloudEvent('upsertVectors', upsertVectors);

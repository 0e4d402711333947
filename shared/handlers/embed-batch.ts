import { documentId, imageEventSchema, objectUri, compareGenerations, TOPICS, vectorToBase64, type EmbeddingMessage, type ImageEvent } from '../contracts.js';
import { GenerationMismatchError, ImageRejectedError, NotFoundError, errorMessage } from '../errors.js';
import type { Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { Embedder, PreparedImage } from '../ports/embedder.js';
import type { Delivery, EventBus } from '../ports/event-bus.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { VectorIndex } from '../ports/vector-index.js';
import { describeIssues } from '../validation.js';
import type { EmbedOutcome } from './results.js';
import { readImageMetadata, type SidecarMetadata } from './sidecar.js';

export interface EmbedDeps {
  blobs: (bucket: string) => BlobStore;
  embedder: Embedder;
  bus: EventBus;
  rejections: RejectionLog;
  features: FeatureStore;
  logger: Logger;
  /** When given, images already indexed at this generation are skipped without decoding. */
  index?: VectorIndex | null;
  limits: { maxBytes: number };
  /** Concurrent decodes (sharp runs them on libuv's pool). */
  decodeConcurrency?: number;
}

interface Prepared {
  delivery: Delivery;
  event: ImageEvent;
  id: string;
  image: PreparedImage;
  meta: SidecarMetadata;
}

/**
 * Embed worker step: a pulled batch of image events → read + decode/resize (sharp) → ONE batched
 * ONNX run → base embeddings to the feature store, vectors to `embeddings`. Every message ends
 * acked (embedded, deleted, unchanged, superseded, rejected), dead-lettered (malformed) or nacked
 * (transient fault); one bad image never stops the others.
 */
export async function embedBatch(deliveries: Delivery[], deps: EmbedDeps): Promise<EmbedOutcome[]> {
  const outcomes: EmbedOutcome[] = [];
  const toPrepare: { delivery: Delivery; event: ImageEvent; id: string }[] = [];
  const deletes: { delivery: Delivery; event: ImageEvent; id: string }[] = [];

  for (const delivery of deliveries) {
    if (delivery.deliveryAttempt > 1) {
      deps.logger.warn(
        { messageId: delivery.messageId, deliveryAttempt: delivery.deliveryAttempt },
        `image event redelivered (attempt ${delivery.deliveryAttempt})`,
      );
    }
    const parsed = imageEventSchema.safeParse(delivery.data);
    if (!parsed.success) {
      outcomes.push({ status: 'dead-lettered', ackId: delivery.ackId, detail: `malformed image event: ${describeIssues(parsed.error)}` });
      continue;
    }
    const event = parsed.data;
    const id = documentId(event.bucket, event.name);
    if (event.eventType === 'delete') deletes.push({ delivery, event, id });
    else toPrepare.push({ delivery, event, id });
  }

  // Already indexed at this generation (a rescan, a duplicate event): skipped without decoding.
  const known = deps.index && toPrepare.length > 0 ? await deps.index.generations(toPrepare.map((p) => p.id)) : new Map<string, string>();
  const fresh = toPrepare.filter((item) => {
    const stored = known.get(item.id);
    if (stored !== undefined && compareGenerations(stored, item.event.generation) >= 0) {
      outcomes.push({ status: 'unchanged', id: item.id, ackId: item.delivery.ackId });
      return false;
    }
    return true;
  });

  const prepared: Prepared[] = [];
  await mapLimit(fresh, deps.decodeConcurrency ?? 4, async (item) => {
    const outcome = await prepareOne(item, deps);
    if ('image' in outcome) prepared.push(outcome);
    else outcomes.push(outcome);
  });

  const messages: EmbeddingMessage[] = [];
  let featuresWritten: Promise<void> = Promise.resolve();
  if (prepared.length > 0) {
    const { base, vectors, activations } = await deps.embedder.embedDecoded(prepared.map((p) => p.image));
    featuresWritten = deps.features.put(
      prepared.map((p, i) => ({
        id: p.id,
        uri: objectUri(p.event.bucket, p.event.name),
        generation: p.event.generation,
        baseModel: deps.embedder.manifest.name,
        vector: base[i]!,
        labels: p.meta.labels,
        caption: p.meta.caption,
        eventTime: p.event.eventTime,
        ...(activations?.[i] ? { activation: activations[i] } : {}),
      })),
    );
    prepared.forEach((p, i) => {
      messages.push({
        op: 'upsert',
        id: p.id,
        uri: objectUri(p.event.bucket, p.event.name),
        bucket: p.event.bucket,
        name: p.event.name,
        generation: p.event.generation,
        modelVersion: deps.embedder.modelVersion,
        vectorBase64: vectorToBase64(vectors[i]!),
        metadata: {
          labels: p.meta.labels,
          caption: p.meta.caption,
          contentType: p.event.contentType,
          size: p.event.size,
          width: p.image.width,
          height: p.image.height,
          eventTime: p.event.eventTime,
        },
      });
      outcomes.push({ status: 'embedded', id: p.id, ackId: p.delivery.ackId });
    });
  }
  for (const d of deletes) {
    messages.push({ op: 'delete', id: d.id, uri: objectUri(d.event.bucket, d.event.name), generation: d.event.generation });
    outcomes.push({ status: 'deleted', id: d.id, ackId: d.delivery.ackId });
  }
  // The feature store and the embeddings topic are written side by side; both are durable before
  // the caller acks the image events.
  await Promise.all([
    featuresWritten,
    messages.length > 0
      ? deps.bus.publishBatch(
          TOPICS.embeddings,
          messages.map((m) => ({ data: m, attributes: { id: m.id, op: m.op, generation: m.generation } })),
        )
      : null,
  ]);
  return outcomes;
}

async function prepareOne(item: { delivery: Delivery; event: ImageEvent; id: string }, deps: EmbedDeps): Promise<Prepared | EmbedOutcome> {
  const { delivery, event, id } = item;
  const ackId = delivery.ackId;
  try {
    const store = deps.blobs(event.bucket);
    const bytes = await store.read(event.name, { generation: event.generation, maxBytes: deps.limits.maxBytes });
    const image = await deps.embedder.prepare(bytes);
    const meta = await readImageMetadata(store, event.name);
    return { delivery, event, id, image, meta };
  } catch (err) {
    if (err instanceof ImageRejectedError) {
      await deps.rejections.record({
        id,
        uri: objectUri(event.bucket, event.name),
        generation: event.generation,
        reason: err.reason,
        detail: err.detail,
        at: new Date().toISOString(),
      });
      deps.logger.warn({ id, object: event.name, reason: err.reason }, `rejected ${event.name}: ${err.detail}`);
      return { status: 'rejected', id, ackId, reason: err.reason, detail: err.detail };
    }
    if (err instanceof GenerationMismatchError || err instanceof NotFoundError) {
      // The object was replaced or deleted after this event: the newer event carries the truth.
      return { status: 'superseded', id, ackId, detail: errorMessage(err) };
    }
    deps.logger.error({ id, object: event.name, err }, 'embedding failed; will retry');
    return { status: 'retry', id, ackId, detail: errorMessage(err) };
  }
}

/** Runs `fn` over items with at most `limit` in flight. */
export async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  });
  await Promise.all(workers);
}

/** Acks/nacks/dead-letters a batch according to its outcomes. */
export async function settleEmbedOutcomes(bus: EventBus, outcomes: EmbedOutcome[]): Promise<void> {
  const ack = outcomes.filter((o) => o.status !== 'retry' && o.status !== 'dead-lettered').map((o) => o.ackId);
  const retry = outcomes.filter((o) => o.status === 'retry');
  const dead = outcomes.filter((o): o is Extract<EmbedOutcome, { status: 'dead-lettered' }> => o.status === 'dead-lettered');
  if (ack.length) await bus.ack(TOPICS.imageEvents, ack);
  for (const r of retry) await bus.nack(TOPICS.imageEvents, [r.ackId], r.detail);
  for (const d of dead) await bus.deadLetter(TOPICS.imageEvents, [d.ackId], d.detail);
}

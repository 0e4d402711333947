import {
  compareGenerations,
  embeddingMessageSchema,
  vectorFromBase64,
  TOPICS,
  type EmbeddingDelete,
  type EmbeddingUpsert,
  type ImageEvent,
} from '../contracts.js';
import { errorMessage, ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Delivery, EventBus } from '../ports/event-bus.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { VectorDocument, VectorIndex } from '../ports/vector-index.js';
import { describeIssues } from '../validation.js';
import type { UpsertHandlerOutcome } from './results.js';

export interface UpsertDeps {
  /** The live index (behind the alias). */
  index: VectorIndex;
  bus: EventBus;
  rejections: RejectionLog;
  features?: FeatureStore;
  logger: Logger;
  /** Resolves `vectorRef` messages (vectors stored in a feature-store shard). */
  readShardRow?: (shard: string, row: number) => Promise<Float32Array>;
}

/**
 * Upsert step: embedding messages → the live vector index, idempotent and ordered by generation
 * (the index decides stale vs newer). A vector made by another model version than the index's is
 * never mixed in: the image is sent back to be embedded by the current model.
 */
export async function upsertEmbeddings(deliveries: Delivery[], deps: UpsertDeps): Promise<UpsertHandlerOutcome[]> {
  const outcomes: UpsertHandlerOutcome[] = [];
  const upserts: { delivery: Delivery; msg: EmbeddingUpsert; vector: Float32Array }[] = [];
  const deletes: { delivery: Delivery; msg: EmbeddingDelete }[] = [];
  const requeue: { delivery: Delivery; msg: EmbeddingUpsert }[] = [];

  for (const delivery of deliveries) {
    const parsed = embeddingMessageSchema.safeParse(delivery.data);
    if (!parsed.success) {
      outcomes.push({ status: 'dead-lettered', ackId: delivery.ackId, detail: `malformed embedding message: ${describeIssues(parsed.error)}` });
      continue;
    }
    const msg = parsed.data;
    if (msg.op === 'delete') {
      deletes.push({ delivery, msg });
      continue;
    }
    if (msg.modelVersion !== deps.index.modelVersion) {
      requeue.push({ delivery, msg });
      continue;
    }
    try {
      const vector = await resolveVector(msg, deps);
      if (vector.length !== deps.index.dimension) {
        outcomes.push({
          status: 'dead-lettered',
          ackId: delivery.ackId,
          detail: `vector has ${vector.length} dimensions, the index expects ${deps.index.dimension}`,
        });
        continue;
      }
      upserts.push({ delivery, msg, vector });
    } catch (err) {
      // A payload that cannot be decoded never will be; a shard that cannot be read may be later.
      if (err instanceof ParseError) outcomes.push({ status: 'dead-lettered', ackId: delivery.ackId, detail: `bad vector: ${err.message}` });
      else outcomes.push({ status: 'retry', id: msg.id, ackId: delivery.ackId, detail: `cannot read vector: ${errorMessage(err)}` });
    }
  }

  // Several messages for one id in a batch: only the newest generation is written, the rest are stale.
  const newest = new Map<string, (typeof upserts)[number]>();
  for (const u of upserts) {
    const seen = newest.get(u.msg.id);
    if (!seen || compareGenerations(u.msg.generation, seen.msg.generation) > 0) newest.set(u.msg.id, u);
  }
  for (const u of upserts) if (newest.get(u.msg.id) !== u) outcomes.push({ status: 'stale', id: u.msg.id, ackId: u.delivery.ackId });
  upserts.splice(0, upserts.length, ...newest.values());
  if (upserts.length > 0) {
    const now = new Date().toISOString();
    try {
      const results = await deps.index.upsert(upserts.map(({ msg, vector }) => toDocument(msg, vector, now)));
      upserts.forEach((u, i) => outcomes.push({ status: results[i]!, id: u.msg.id, ackId: u.delivery.ackId }));
      await Promise.all(
        upserts.filter((_, i) => results[i] === 'created' || results[i] === 'updated').map((u) => deps.rejections.clear(u.msg.id, u.msg.generation)),
      );
    } catch (err) {
      deps.logger.error({ err, count: upserts.length }, 'index upsert failed; will retry');
      for (const u of upserts) outcomes.push({ status: 'retry', id: u.msg.id, ackId: u.delivery.ackId, detail: errorMessage(err) });
    }
  }

  if (deletes.length > 0) {
    try {
      const results = await deps.index.delete(deletes.map(({ msg }) => ({ id: msg.id, generation: msg.generation })));
      await deps.features?.delete(deletes.map(({ msg }) => ({ id: msg.id, generation: msg.generation })));
      await Promise.all(deletes.map(({ msg }) => deps.rejections.clear(msg.id, msg.generation)));
      deletes.forEach((d, i) => {
        const r = results[i]!;
        outcomes.push({ status: r === 'stale' ? 'stale-delete' : r, id: d.msg.id, ackId: d.delivery.ackId });
      });
    } catch (err) {
      deps.logger.error({ err, count: deletes.length }, 'index delete failed; will retry');
      for (const d of deletes) outcomes.push({ status: 'retry', id: d.msg.id, ackId: d.delivery.ackId, detail: errorMessage(err) });
    }
  }

  for (const { delivery, msg } of requeue) {
    const event: ImageEvent = {
      bucket: msg.bucket,
      name: msg.name,
      generation: msg.generation,
      contentType: msg.metadata.contentType ?? 'application/octet-stream',
      size: msg.metadata.size ?? 1,
      eventType: 'finalize',
      eventTime: msg.metadata.eventTime ?? new Date().toISOString(),
    };
    await deps.bus.publish(TOPICS.imageEvents, event, { id: msg.id, eventType: 'finalize', generation: msg.generation, reason: 'model-version-changed' });
    deps.logger.info({ id: msg.id, from: msg.modelVersion, to: deps.index.modelVersion }, 'vector of another model version sent back for re-embedding');
    outcomes.push({ status: 'requeued', id: msg.id, ackId: delivery.ackId, detail: `made by ${msg.modelVersion}, index holds ${deps.index.modelVersion}` });
  }
  return outcomes;
}

async function resolveVector(msg: EmbeddingUpsert, deps: UpsertDeps): Promise<Float32Array> {
  if (msg.vectorBase64 !== undefined) return vectorFromBase64(msg.vectorBase64);
  if (msg.vector) return Float32Array.from(msg.vector);
  if (msg.vectorRef && deps.readShardRow) return deps.readShardRow(msg.vectorRef.shard, msg.vectorRef.row);
  throw new Error('message has no inline vector (vectorBase64 or vector) nor a readable vectorRef');
}

function toDocument(msg: EmbeddingUpsert, vector: Float32Array, indexedAt: string): VectorDocument {
  return {
    id: msg.id,
    uri: msg.uri,
    generation: msg.generation,
    modelVersion: msg.modelVersion,
    vector,
    labels: msg.metadata.labels,
    caption: msg.metadata.caption,
    contentType: msg.metadata.contentType,
    width: msg.metadata.width,
    height: msg.metadata.height,
    eventTime: msg.metadata.eventTime,
    indexedAt,
  };
}

export async function settleUpsertOutcomes(bus: EventBus, outcomes: UpsertHandlerOutcome[]): Promise<void> {
  const ack = outcomes.filter((o) => o.status !== 'retry' && o.status !== 'dead-lettered').map((o) => o.ackId);
  if (ack.length) await bus.ack(TOPICS.embeddings, ack);
  for (const o of outcomes) {
    if (o.status === 'retry') await bus.nack(TOPICS.embeddings, [o.ackId], o.detail);
    else if (o.status === 'dead-lettered') await bus.deadLetter(TOPICS.embeddings, [o.ackId], o.detail);
  }
}

import {
  compareGenerations,
  embeddingMessageSchema,
  vectorFromBase64,
  TOPICS,
  type EmbeddingDelete,
  type EmbeddingUpsert,
  type ImageEvent,
} from '../contracts.js';
import { AppError, errorMessage, ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Delivery, EventBus } from '../ports/event-bus.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { SearchEventSink } from '../ports/search-events.js';
import { MONITOR_EVENT_VERSION, objectWrittenAt } from '../services/monitoring.js';
import type { UpsertOutcome, VectorDocument, VectorIndex } from '../ports/vector-index.js';
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
  /** Prediction monitoring: a freshness event (upload → searchable) per image created or updated. */
  events?: SearchEventSink;
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
    const written = await writeIsolatingFailures(
      upserts,
      (u) => u.msg.id,
      (batch) => deps.index.upsert(batch.map(({ msg, vector }) => toDocument(msg, vector, now))),
      (err, count) => deps.logger.error({ err, count }, 'index upsert failed; will retry'),
    );
    const applied: { u: (typeof upserts)[number]; result: UpsertOutcome }[] = [];
    for (const { item: u, result, err, rewritten } of written) {
      if (result === undefined) {
        outcomes.push({ status: 'retry', id: u.msg.id, ackId: u.delivery.ackId, detail: errorMessage(err) });
        continue;
      }
      outcomes.push({ status: result, id: u.msg.id, ackId: u.delivery.ackId });
      // After a partial failure, `unchanged` means written by the first attempt.
      applied.push({ u, result: rewritten && result === 'unchanged' ? 'created' : result });
    }
    if (deps.events)
      recordFreshness(
        deps.events,
        applied.map((a) => a.u),
        applied.map((a) => a.result),
        now,
      );
    await Promise.all(
      applied.filter((a) => a.result === 'created' || a.result === 'updated').map(({ u }) => deps.rejections.clear(u.msg.id, u.msg.generation)),
    );
  }

  if (deletes.length > 0) {
    const written = await writeIsolatingFailures(
      deletes,
      (d) => d.msg.id,
      (batch) => deps.index.delete(batch.map(({ msg }) => ({ id: msg.id, generation: msg.generation }))),
      (err, count) => deps.logger.error({ err, count }, 'index delete failed; will retry'),
    );
    const done = written.filter((w) => w.result !== undefined).map((w) => w.item);
    let featuresFailed: unknown = null;
    try {
      if (done.length > 0) await deps.features?.delete(done.map(({ msg }) => ({ id: msg.id, generation: msg.generation })));
      await Promise.all(done.map(({ msg }) => deps.rejections.clear(msg.id, msg.generation)));
    } catch (err) {
      featuresFailed = err;
      deps.logger.error({ err, count: done.length }, 'feature store delete failed; will retry');
    }
    for (const { item: d, result, err } of written) {
      if (result === undefined || featuresFailed) {
        outcomes.push({ status: 'retry', id: d.msg.id, ackId: d.delivery.ackId, detail: errorMessage(err ?? featuresFailed) });
      } else outcomes.push({ status: result === 'stale' ? 'stale-delete' : result, id: d.msg.id, ackId: d.delivery.ackId });
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

/** One freshness event per image that became searchable (created or updated); never throws. */
function recordFreshness(events: SearchEventSink, upserts: { msg: EmbeddingUpsert }[], results: string[], indexedAt: string): void {
  const at = Date.parse(indexedAt);
  upserts.forEach(({ msg }, i) => {
    if (results[i] !== 'created' && results[i] !== 'updated') return;
    const written = objectWrittenAt(msg.generation, msg.metadata.eventTime, at);
    if (written === null) return;
    try {
      events.append({
        monitor: 'freshness',
        v: MONITOR_EVENT_VERSION,
        at: indexedAt,
        id: msg.id,
        modelVersion: msg.modelVersion,
        lagMs: Math.max(0, at - written),
      });
    } catch {
      // Monitoring never fails an upsert.
    }
  });
}

/**
 * The ids a failed index write names as the ones that failed: an AppError whose `meta.ids` lists
 * them (the OpenSearch adapter's per-item `_bulk` errors, and its items still throttled after its
 * retries); the other documents of that write may have been applied. Null when it names none.
 */
export function failedIdsOf(err: unknown): Set<string> | null {
  if (!(err instanceof AppError)) return null;
  const ids = err.meta.ids;
  return Array.isArray(ids) && ids.length > 0 && ids.every((id) => typeof id === 'string') ? new Set(ids) : null;
}

/** Index writes per batch at most: the first, then re-writes of what partial failures left. */
const MAX_WRITE_ROUNDS = 3;

/**
 * One index write for the whole batch. When it fails for some items only ({@link failedIdsOf}),
 * those are set aside for a retry and the others written again, which finds them at their
 * generation (one `_mget`, nothing re-sent) and gives each its outcome (`rewritten`): one bad
 * document never sends its batch-mates back to Pub/Sub. Any other failure retries every item.
 */
async function writeIsolatingFailures<T, R>(
  items: T[],
  idOf: (item: T) => string,
  write: (batch: T[]) => Promise<R[]>,
  onFailure: (err: unknown, count: number) => void,
): Promise<{ item: T; result?: R; err?: unknown; rewritten: boolean }[]> {
  const out: { item: T; result?: R; err?: unknown; rewritten: boolean }[] = [];
  let pending = items;
  for (let round = 0; pending.length > 0; round++) {
    try {
      const results = await write(pending);
      pending.forEach((item, i) => out.push({ item, result: results[i]!, rewritten: round > 0 }));
      return out;
    } catch (err) {
      const failed = round < MAX_WRITE_ROUNDS - 1 ? failedIdsOf(err) : null;
      const retry = failed ? pending.filter((item) => failed.has(idOf(item))) : pending;
      onFailure(err, retry.length);
      for (const item of retry) out.push({ item, err, rewritten: false });
      pending = failed ? pending.filter((item) => !failed.has(idOf(item))) : [];
    }
  }
  return out;
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

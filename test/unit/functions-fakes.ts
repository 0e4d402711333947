import { Writable } from 'node:stream';
import { compareGenerations, type RejectedImage } from '../../shared/contracts.js';
import { ImageRejectedError } from '../../shared/errors.js';
import { createLogger, type Logger } from '../../shared/logger.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, ImageEmbeddings, PreparedImage } from '../../shared/ports/embedder.js';
import type { DeadLetter, Delivery, EventBus, TopicStats } from '../../shared/ports/event-bus.js';
import type { RejectionLog } from '../../shared/ports/rejection-log.js';
import type { DeleteOutcome, Hit, QueryOptions, UpsertOutcome, VectorDocument, VectorIndex } from '../../shared/ports/vector-index.js';

/**
 * Strict fakes for the cloud entry point tests: each implements its port, records what it was
 * asked, and throws on any call a test did not expect, so a test fails when it touches something
 * it did not set up.
 */

function unexpected(what: string): never {
  throw new Error(`unexpected call: ${what}`);
}

export class RecordingBus implements EventBus {
  readonly published: { topic: string; data: unknown; attributes: Record<string, string> }[] = [];
  /**
   * Topic → the error publishing to it throws (an outage of that topic only), so a test can fail
   * one publish while another (the dead-letter topic) still succeeds.
   */
  readonly failPublishTo = new Map<string, Error>();
  private next = 1;

  async publish(topic: string, data: unknown, attributes: Record<string, string> = {}): Promise<string> {
    const failure = this.failPublishTo.get(topic);
    if (failure) throw failure;
    // What Pub/Sub would carry: JSON text, string attributes.
    this.published.push({ topic, data: JSON.parse(JSON.stringify(data)), attributes: { ...attributes } });
    return String(this.next++);
  }
  async publishBatch(topic: string, items: { data: unknown; attributes?: Record<string, string> }[]): Promise<string[]> {
    const ids: string[] = [];
    for (const item of items) ids.push(await this.publish(topic, item.data, item.attributes));
    return ids;
  }
  on(topic: string) {
    return this.published.filter((p) => p.topic === topic);
  }
  pull<T = unknown>(): Promise<Delivery<T>[]> {
    return unexpected('pull');
  }
  ack(): Promise<void> {
    return unexpected('ack');
  }
  nack(): Promise<void> {
    return unexpected('nack');
  }
  extendDeadline(): Promise<void> {
    return unexpected('extendDeadline');
  }
  deadLetter(): Promise<void> {
    return unexpected('deadLetter');
  }
  listDeadLetters(): Promise<DeadLetter[]> {
    return unexpected('listDeadLetters');
  }
  stats(): Promise<TopicStats> {
    return unexpected('stats');
  }
  async close(): Promise<void> {}
}

export class MemoryRejections implements RejectionLog {
  readonly records = new Map<string, RejectedImage>();
  readonly cleared: { id: string; generation?: string }[] = [];
  async record(r: RejectedImage): Promise<void> {
    this.records.set(r.id, r);
  }
  async clear(id: string, generation?: string): Promise<void> {
    this.cleared.push({ id, generation });
    this.records.delete(id);
  }
  async list(limit = 100): Promise<RejectedImage[]> {
    return [...this.records.values()].slice(0, limit);
  }
  async count(): Promise<number> {
    return this.records.size;
  }
}

/** Logger whose JSON lines are kept for assertions. */
export function captureLogger(): { logger: Logger; lines: () => Record<string, unknown>[] } {
  const chunks: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  const logger = createLogger({ level: 'debug', destination: sink });
  return {
    logger,
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

/** Generation-ordered in-memory index with brute-force cosine search; `failWith` simulates an outage. */
export class MemoryIndex implements VectorIndex {
  readonly docs = new Map<string, VectorDocument>();
  failWith: Error | null = null;
  constructor(
    readonly name: string,
    readonly modelVersion: string,
    readonly dimension: number,
  ) {}
  async upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]> {
    if (this.failWith) throw this.failWith;
    return docs.map((d) => {
      const seen = this.docs.get(d.id);
      if (seen && compareGenerations(seen.generation, d.generation) > 0) return 'stale';
      if (seen && seen.generation === d.generation) return 'unchanged';
      this.docs.set(d.id, d);
      return seen ? 'updated' : 'created';
    });
  }
  async delete(items: { id: string; generation: string }[]): Promise<DeleteOutcome[]> {
    if (this.failWith) throw this.failWith;
    return items.map(({ id, generation }) => {
      const seen = this.docs.get(id);
      if (!seen) return 'absent';
      if (compareGenerations(seen.generation, generation) > 0) return 'stale';
      this.docs.delete(id);
      return 'deleted';
    });
  }
  async query(vector: Float32Array, options: QueryOptions): Promise<Hit[]> {
    if (this.failWith) throw this.failWith;
    const exclude = new Set(options.filter?.excludeIds ?? []);
    return [...this.docs.values()]
      .filter((d) => !exclude.has(d.id))
      .map((d) => ({ d, score: d.vector.reduce((s, x, i) => s + x * vector[i]!, 0) }))
      .sort((a, b) => b.score - a.score)
      .slice(0, options.k)
      .map(({ d, score }) => ({ id: d.id, uri: d.uri, score, generation: d.generation, labels: d.labels, caption: d.caption, modelVersion: d.modelVersion }));
  }
  async get(id: string): Promise<VectorDocument | null> {
    return this.docs.get(id) ?? null;
  }
  async generations(ids: string[]): Promise<Map<string, string>> {
    return new Map(ids.flatMap((id) => (this.docs.has(id) ? [[id, this.docs.get(id)!.generation] as const] : [])));
  }
  async count(): Promise<number> {
    return this.docs.size;
  }
  async *scan(): AsyncIterable<VectorDocument[]> {
    yield [...this.docs.values()];
  }
}

/**
 * A 4-dimensional "model": the vector of an image is its first four bytes, L2-normalised, so two
 * uploads with the same leading bytes match. Empty input is rejected like a real decoder would.
 */
export class FakeEmbedder implements Embedder {
  readonly dimension = 4;
  readonly hasTextTower = false;
  readonly manifest = { name: 'fake-tower', version: 'fake-v1', image: { dimension: 4 } } as unknown as ModelManifest;
  constructor(readonly modelVersion = 'fake-v1') {}
  async prepare(image: Buffer): Promise<PreparedImage> {
    if (image.length < 4) throw new ImageRejectedError('corrupt-image', `only ${image.length} bytes`);
    return { pixels: Float32Array.from(image.subarray(0, 4)), width: 2, height: 2, format: 'raw' };
  }
  async embedDecoded(images: PreparedImage[]): Promise<ImageEmbeddings> {
    const vectors = images.map((i) => normalise(Float32Array.from(i.pixels)));
    return { base: vectors, vectors };
  }
  async project(base: Float32Array[]): Promise<Float32Array[]> {
    return base;
  }
  async embedTexts(): Promise<Float32Array[]> {
    return unexpected('embedTexts');
  }
  async close(): Promise<void> {}
}

export function normalise(v: Float32Array): Float32Array {
  const n = Math.hypot(...v) || 1;
  return v.map((x) => x / n);
}

/**
 * Messages pushed to one `upsertVectors` instance at the same time, written to the index together.
 *
 * Pub/Sub push delivers one message per HTTPS request and settles it by that request's status
 * (cloud.google.com/pubsub/docs/push), so a batch cannot arrive as one request; but one Cloud Run
 * functions instance serves up to its concurrency setting of requests at once
 * (cloud.google.com/run/docs/about-concurrency, at most 1000). This gathers the requests in flight
 * on the instance by group commit: a message arriving while no write is running is written at once
 * (no added latency when the pipeline is quiet); messages arriving during a write wait for it and
 * go together in the next one (at most `maxBatch`), so a backfill becomes one `_bulk` per batch
 * instead of one per message. Each request still answers for its own message only.
 */
export interface UpsertBatcherOptions {
  /** Messages per index write at most. */
  maxBatch: number;
  /** Writes running at once: a further one starts only with a full batch. */
  maxConcurrentBatches: number;
}

/**
 * Messages per write, and the concurrency the stack gives the function (infra/components/indexing.ts):
 * an instance never holds more requests than one batch. 100 documents of 1,632 float32 are about
 * 2.5 MB of `_bulk` body, within the 5–15 MB OpenSearch suggests per bulk request; the adapter
 * splits a larger one by bytes anyway.
 */
export const PUSH_BATCH_MAX = 100;

interface Waiting<I, O> {
  item: I;
  resolve(out: O): void;
  reject(err: unknown): void;
}

export class UpsertBatcher<I, O> {
  private pending: Waiting<I, O>[] = [];
  private running = 0;

  constructor(
    /** Writes a batch; answers one result per item, in order. A throw fails every item of the batch. */
    private readonly write: (items: I[]) => Promise<O[]>,
    private readonly options: UpsertBatcherOptions = { maxBatch: PUSH_BATCH_MAX, maxConcurrentBatches: 2 },
  ) {
    if (!Number.isInteger(options.maxBatch) || options.maxBatch < 1) throw new RangeError(`maxBatch must be a whole number ≥ 1, got ${options.maxBatch}`);
    if (!Number.isInteger(options.maxConcurrentBatches) || options.maxConcurrentBatches < 1) {
      throw new RangeError(`maxConcurrentBatches must be a whole number ≥ 1, got ${options.maxConcurrentBatches}`);
    }
  }

  /** Resolves with this item's result once the batch it joined is written. */
  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    const { maxBatch, maxConcurrentBatches } = this.options;
    while (this.pending.length > 0 && this.running < maxConcurrentBatches && (this.running === 0 || this.pending.length >= maxBatch)) {
      const batch = this.pending.splice(0, maxBatch);
      this.running += 1;
      void this.run(batch).finally(() => {
        this.running -= 1;
        this.pump();
      });
    }
  }

  private async run(batch: Waiting<I, O>[]): Promise<void> {
    try {
      const results = await this.write(batch.map((w) => w.item));
      if (results.length !== batch.length) throw new Error(`a batch write answered ${results.length} results for ${batch.length} items`);
      batch.forEach((w, i) => w.resolve(results[i]!));
    } catch (err) {
      for (const w of batch) w.reject(err);
    }
  }
}

import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOPICS } from '../contracts.js';
import { withLeaseExtension } from '../adapters/lease-extension.js';
import type { EmbedDeps } from '../handlers/embed-batch.js';
import type { EmbedOutcome, UpsertHandlerOutcome } from '../handlers/results.js';
import { settleUpsertOutcomes, upsertEmbeddings, type UpsertDeps } from '../handlers/upsert-vectors.js';
import type { Logger } from '../logger.js';
import type { EventBus } from '../ports/event-bus.js';
import { runEmbedLoop } from './embed-loop.js';

export interface PipelineOptions {
  batchSize: number;
  /** Embed loops pulling side by side: one decodes while the other runs inference. */
  embedConcurrency?: number;
  upsertBatchSize?: number;
  /**
   * While images are still being embedded, the upsert step waits up to `upsertLingerMs` to gather
   * at least `upsertMinBatch` vectors: index writes cost per call far more than per row.
   */
  upsertMinBatch?: number;
  upsertLingerMs?: number;
  ackDeadlineSeconds?: number;
  idlePollMs?: number;
}

export interface PipelineEvents {
  embedded: [EmbedOutcome[]];
  upserted: [UpsertHandlerOutcome[]];
  error: [Error];
}

/**
 * The local pipeline's workers: the same handlers the cloud runs, over the durable queue — the
 * embed job's own loop (embed-loop.ts, `embedConcurrency` of them side by side) and an upsert loop
 * standing in for the push-triggered upsert function. Leases are extended while a batch is worked
 * on (lease-extension.ts); a crash leaves the lease to expire and the queue redelivers. Emits
 * `embedded` / `upserted` with each batch's outcomes (the CLI's progress and summary).
 */
export class PipelineWorkers extends EventEmitter<PipelineEvents> {
  private running = false;
  private loops: Promise<void>[] = [];
  private busy = 0;
  private embedding = 0;
  private readonly waiters = new Set<() => void>();

  constructor(
    private readonly bus: EventBus,
    private readonly embedDeps: () => EmbedDeps,
    private readonly upsertDeps: () => Promise<UpsertDeps>,
    private readonly logger: Logger,
    private readonly options: PipelineOptions,
  ) {
    super();
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const embedLoops = this.options.embedConcurrency ?? 2;
    for (let i = 0; i < embedLoops; i++) this.loops.push(this.embedLoop());
    this.loops.push(this.upsertLoop());
  }

  /** Wakes idle loops at once (a new event was published). */
  notify(): void {
    for (const wake of [...this.waiters]) wake();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.notify();
    await Promise.all(this.loops);
    this.loops = [];
  }

  /** Resolves once both topics are empty and no batch is in flight. */
  async drain(pollMs = 50): Promise<void> {
    for (;;) {
      const [a, b] = await Promise.all([this.bus.stats(TOPICS.imageEvents), this.bus.stats(TOPICS.embeddings)]);
      if (a.ready + a.inflight + b.ready + b.inflight === 0 && this.busy === 0) return;
      await sleep(pollMs);
    }
  }

  /** An embed loop: the one the embed job runs (embed-loop.ts), here until `stop()`. */
  private async embedLoop(): Promise<void> {
    await runEmbedLoop({
      bus: this.bus,
      embed: this.embedDeps,
      logger: this.logger,
      settings: {
        batchSize: this.options.batchSize,
        leaseSeconds: this.options.ackDeadlineSeconds ?? 60,
        failureDelayMs: 500,
        // A fault outside the handlers' own outcomes (e.g. inference crashed): the leases expire
        // and the queue redelivers, so a short outage does not spend the messages' attempts.
        onBatchFailure: 'lease-expiry',
      },
      running: () => this.running,
      idle: () => this.idle(),
      hooks: {
        cycle: (delta) => {
          this.busy += delta;
        },
        embedding: (delta) => {
          this.embedding += delta;
        },
        batch: (outcomes) => {
          this.emit('embedded', outcomes);
          this.notify();
        },
        failure: (err) => this.emitError(err),
      },
    });
  }

  /** The upsert loop: the upsert function's handler over pulled batches of `embeddings`. */
  private async upsertLoop(): Promise<void> {
    const max = this.options.upsertBatchSize ?? 256;
    const deadline = this.options.ackDeadlineSeconds ?? 60;
    while (this.running) {
      let worked = false;
      this.busy++;
      try {
        let batch = await this.bus.pull(TOPICS.embeddings, { maxMessages: max, ackDeadlineSeconds: deadline });
        if (batch.length > 0) batch = await this.gather(batch, max, deadline);
        if (batch.length > 0) {
          worked = true;
          const deliveries = batch;
          await withLeaseExtension(
            this.bus,
            TOPICS.embeddings,
            deliveries.map((d) => d.ackId),
            deadline,
            async () => {
              const outcomes = await upsertEmbeddings(deliveries, await this.upsertDeps());
              await settleUpsertOutcomes(this.bus, outcomes);
              this.emit('upserted', outcomes);
            },
            { logger: this.logger },
          );
        }
      } catch (err) {
        // The index or the queue failed: the leases expire and the queue redelivers; keep going.
        this.logger.error({ err, kind: 'upsert' }, 'pipeline batch failed; messages will be redelivered');
        this.emitError(err instanceof Error ? err : new Error(String(err)));
        await sleep(500);
      } finally {
        this.busy--;
      }
      if (!worked && this.running) await this.idle();
    }
  }

  /** `error` events for whoever listens (an EventEmitter throws an unheard `error`, which would end the loop). */
  private emitError(err: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private async gather<T>(batch: T[], max: number, deadline: number): Promise<T[]> {
    const min = this.options.upsertMinBatch ?? 64;
    const until = Date.now() + (this.options.upsertLingerMs ?? 250);
    while (batch.length < min && this.embedding > 0 && Date.now() < until && this.running) {
      await sleep(20);
      batch = batch.concat((await this.bus.pull(TOPICS.embeddings, { maxMessages: max - batch.length, ackDeadlineSeconds: deadline })) as T[]);
    }
    return batch;
  }

  private async idle(): Promise<void> {
    const ms = this.options.idlePollMs ?? 200;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}

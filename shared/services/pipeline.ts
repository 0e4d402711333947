import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOPICS } from '../contracts.js';
import { errorMessage } from '../errors.js';
import { embedBatch, settleEmbedOutcomes, type EmbedDeps } from '../handlers/embed-batch.js';
import type { EmbedOutcome, UpsertHandlerOutcome } from '../handlers/results.js';
import { settleUpsertOutcomes, upsertEmbeddings, type UpsertDeps } from '../handlers/upsert-vectors.js';
import type { Logger } from '../logger.js';
import type { EventBus } from '../ports/event-bus.js';

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
 * The local pipeline's workers: the same handlers the cloud runs (embed job, upsert function), in
 * loops over the durable queue. Leases are extended while a batch is worked on; a crash leaves the
 * lease to expire and the queue redelivers.
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
    for (let i = 0; i < embedLoops; i++) this.loops.push(this.loop('embed'));
    this.loops.push(this.loop('upsert'));
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

  private async loop(kind: 'embed' | 'upsert'): Promise<void> {
    const topic = kind === 'embed' ? TOPICS.imageEvents : TOPICS.embeddings;
    const max = kind === 'embed' ? this.options.batchSize : (this.options.upsertBatchSize ?? 256);
    const deadline = this.options.ackDeadlineSeconds ?? 60;
    while (this.running) {
      let worked = false;
      this.busy++;
      try {
        let batch = await this.bus.pull(topic, { maxMessages: max, ackDeadlineSeconds: deadline });
        if (kind === 'upsert' && batch.length > 0) batch = await this.gather(batch, max, deadline);
        if (batch.length > 0) {
          worked = true;
          const ackIds = batch.map((d) => d.ackId);
          const timer = setInterval(() => {
            this.bus.extendDeadline(topic, ackIds, deadline).catch((err) => this.logger.warn({ err: errorMessage(err) }, 'lease extension failed'));
          }, (deadline * 1000) / 2);
          try {
            if (kind === 'embed') {
              this.embedding++;
              const outcomes = await embedBatch(batch, this.embedDeps()).finally(() => this.embedding--);
              await settleEmbedOutcomes(this.bus, outcomes);
              this.emit('embedded', outcomes);
              this.notify();
            } else {
              const outcomes = await upsertEmbeddings(batch, await this.upsertDeps());
              await settleUpsertOutcomes(this.bus, outcomes);
              this.emit('upserted', outcomes);
            }
          } finally {
            clearInterval(timer);
          }
        }
      } catch (err) {
        // A fault outside the handlers' own outcomes (e.g. inference crashed): leases expire and
        // the queue redelivers; keep the loop alive.
        this.logger.error({ err: errorMessage(err), kind }, 'pipeline batch failed; messages will be redelivered');
        this.emit('error', err instanceof Error ? err : new Error(String(err)));
        await sleep(500);
      } finally {
        this.busy--;
      }
      if (!worked && this.running) await this.idle();
    }
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

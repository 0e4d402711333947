import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { TOPICS } from '../contracts.js';
import { withLeaseExtension } from '../adapters/lease-extension.js';
import type { EmbedDeps } from '../handlers/embed-batch.js';
import type { EmbedOutcome, UpsertHandlerOutcome } from '../handlers/results.js';
import { settleUpsertOutcomes, upsertEmbeddings, type UpsertDeps } from '../handlers/upsert-vectors.js';
import type { Logger } from '../logger.js';
import { AppError } from '../errors.js';
import type { EventBus } from '../ports/event-bus.js';
import { runEmbedLoop } from './embed-loop.js';
import { backoffMs, isMachineFault } from '../backoff.js';
import { PipelineHealth, type PipelineStage } from './pipeline-health.js';

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
  /** Backoff after a failed batch: from `retryBaseMs` doubling up to `retryMaxMs` (defaults 500 ms, 30 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** `drain()` gives up (PipelineStalledError) when a stage has failed and nothing succeeded for this long (default 120 s). */
  stallTimeoutMs?: number;
  /** Where faults are recorded (shared with the status page); a new one by default. */
  health?: PipelineHealth;
}

/** `drain()` found the pipeline failing with no progress for `stallTimeoutMs`: the messages stay queued. */
export class PipelineStalledError extends AppError {
  override readonly code = 'PIPELINE_STALLED';
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
  readonly health: PipelineHealth;

  constructor(
    private readonly bus: EventBus,
    private readonly embedDeps: () => EmbedDeps,
    private readonly upsertDeps: () => Promise<UpsertDeps>,
    private readonly logger: Logger,
    private readonly options: PipelineOptions,
  ) {
    super();
    this.health = options.health ?? new PipelineHealth();
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

  /**
   * Resolves once both topics are empty and no batch is in flight. While a stage fails the work is
   * retried; when nothing has succeeded for `stallTimeoutMs`, the workers are stopped and
   * PipelineStalledError names what fails (every message stays queued for the next run).
   */
  async drain(pollMs = 50): Promise<void> {
    const stallMs = this.options.stallTimeoutMs ?? 120_000;
    for (;;) {
      const [a, b] = await Promise.all([this.bus.stats(TOPICS.imageEvents), this.bus.stats(TOPICS.embeddings)]);
      const pending = a.ready + a.inflight + b.ready + b.inflight;
      if (pending === 0 && this.busy === 0) return;
      if (this.health.stalledForMs() >= stallMs) {
        const faults = this.health.current();
        await this.stop();
        throw new PipelineStalledError(
          `no progress for ${Math.round(stallMs / 1000)} s: ${faults.map((f) => f.summary).join('; ')}. ` +
            `Nothing was lost: ${a.ready + a.inflight + b.ready + b.inflight} messages stay queued and are worked on by the next run.`,
        );
      }
      // Each check lists both topics (the local queue: a folder read per state): with thousands of
      // messages queued, checking every pollMs cost more than the work waited for. About 1 ms per
      // message still queued, at most a second.
      await sleep(Math.min(1_000, Math.max(pollMs, pending)));
    }
  }

  private retryDelay = (failures: number): number => backoffMs(failures, this.options.retryBaseMs ?? 500, this.options.retryMaxMs ?? 30_000);

  private failed(stage: PipelineStage, err: unknown): void {
    this.health.failed(stage, err);
    this.emitError(err instanceof Error ? err : new Error(String(err)));
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
        failureDelayMs: this.retryDelay,
        // A fault outside the handlers' own outcomes (inference crashed, a full disk, the feature
        // store refusing writes): the batch stays leased and is worked again with backoff, so an
        // outage of any length spends none of the messages' delivery attempts.
        onBatchFailure: 'hold',
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
          this.health.succeeded('embed');
          this.emit('embedded', outcomes);
          this.notify();
        },
        failure: (err) => this.failed('embed', err),
      },
    });
  }

  /**
   * The upsert loop: the upsert function's handler over pulled batches of `embeddings`. A batch
   * whose write fails (the index or the disk) stays leased and is written again with backoff until
   * it succeeds or the workers stop (then the lease expires and the queue redelivers it).
   */
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
              let pending = deliveries;
              for (let held = 1; ; held++) {
                try {
                  const outcomes = await upsertEmbeddings(pending, await this.upsertDeps());
                  // An index write that failed for the whole batch (the store refuses writes, a full
                  // disk) comes back as `retry` outcomes: those are held and written again, not nacked,
                  // so a long outage spends no delivery attempt and dead-letters nothing.
                  // Bounded, so that a message failing for its own reason cannot block the loop for ever:
                  // after MAX_HOLD_ROUNDS (minutes of backoff) it is nacked and spends one attempt.
                  const hold = held < MAX_HOLD_ROUNDS ? heldRetries(outcomes) : new Map<string, string>();
                  const settled = outcomes.filter((o) => !hold.has(o.ackId));
                  await settleUpsertOutcomes(this.bus, settled);
                  if (settled.length > 0) this.emit('upserted', settled);
                  if (hold.size === 0) {
                    this.health.succeeded('upsert');
                    return;
                  }
                  pending = pending.filter((d) => hold.has(d.ackId));
                  throw new AppError(`index writes failed for ${hold.size} messages: ${[...hold.values()][0]}`);
                } catch (err) {
                  if (!this.running) throw err;
                  this.logger.error(
                    { err, kind: 'upsert', size: pending.length, failures: held },
                    'index write failed; keeping the batch leased and trying again',
                  );
                  this.failed('upsert', err);
                  await this.pause(this.retryDelay(held));
                }
              }
            },
            { logger: this.logger },
          );
        }
      } catch (err) {
        // Pulling failed, or the workers stopped mid-retry: the leases expire and the queue redelivers.
        const failures = this.health.failed('upsert', err);
        this.logger.error({ err, kind: 'upsert', failures }, 'upsert cycle failed; its messages will be redelivered');
        this.emitError(err instanceof Error ? err : new Error(String(err)));
        await this.pause(this.retryDelay(failures));
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

  /** Waits `ms`, or less once the workers are stopped. */
  private async pause(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.running && Date.now() < until) await sleep(Math.min(200, until - Date.now()));
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

/** Write attempts of one held upsert batch before its failures are nacked (about 9 minutes at the 30 s backoff cap). */
const MAX_HOLD_ROUNDS = 20;

/**
 * The `retry` outcomes of an upsert batch to hold and write again (ack id → reason): all of them
 * when nothing of the batch could be written (the write failed as a whole), else those failing for
 * a fault of the machine. Others (a message that cannot be read) are nacked as usual.
 */
function heldRetries(outcomes: UpsertHandlerOutcome[]): Map<string, string> {
  const retries = outcomes.filter((o): o is Extract<UpsertHandlerOutcome, { status: 'retry' }> => o.status === 'retry');
  const whole = retries.length > 0 && retries.length === outcomes.length;
  return new Map(retries.filter((o) => whole || isMachineFault({ message: o.detail })).map((o) => [o.ackId, o.detail]));
}

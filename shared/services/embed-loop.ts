import { setTimeout as sleep } from 'node:timers/promises';
import { withLeaseExtension } from '../adapters/lease-extension.js';
import { TOPICS } from '../contracts.js';
import { errorMessage, AppError } from '../errors.js';
import { embedBatch, settleEmbedOutcomes, type EmbedDeps } from '../handlers/embed-batch.js';
import { countBy, type EmbedOutcome } from '../handlers/results.js';
import type { Logger } from '../logger.js';
import type { EventBus } from '../ports/event-bus.js';

export interface EmbedLoopSettings {
  /** Messages per pull = images per batched ONNX run. */
  batchSize: number;
  /** Lease of pulled messages, extended every half of it while the batch is worked on. */
  leaseSeconds: number;
  /** Stop after this many consecutive empty pulls (the backlog is gone). Unset: keep polling. */
  maxEmptyPulls?: number;
  /** No new batch is pulled after this long (stay inside the Cloud Run task timeout). Unset: no budget. */
  maxRuntimeMs?: number;
  /** Cycles in a row that fail as a whole before the loop throws EmbedJobFailedError. Unset: never. */
  maxConsecutiveFailures?: number;
  /** Wait after an empty pull when no `idle` is given (Pub/Sub pull already waits; the local queue answers at once). */
  emptyPullDelayMs?: number;
  /** Wait after a failed cycle before pulling again (or a function of the failures in a row: a backoff). */
  failureDelayMs?: number | ((consecutiveFailures: number) => number);
  /**
   * What becomes of a batch that failed as a whole (model or queue fault): `nack` hands it back at
   * once (Pub/Sub applies the subscription's retry backoff); `lease-expiry` leaves it leased until
   * the lease runs out, which is the backoff of the local queue (its nack redelivers immediately
   * and would spend the delivery attempts of a whole batch during a short inference outage);
   * `hold` keeps the batch leased (extended) and works it again after `failureDelayMs` until it
   * succeeds or the loop is stopped: an outage of any length (a full disk, an index refusing
   * writes) spends no delivery attempt, so nothing is dead-lettered for a fault of the machine.
   */
  onBatchFailure?: 'nack' | 'lease-expiry' | 'hold';
  /** Level of the per-batch log line: `info` in the job (one line per batch is its progress), `debug` locally. */
  batchLogLevel?: 'info' | 'debug';
}

/** Observers of the loop (the local PipelineWorkers turn them into events and counters). */
export interface EmbedLoopHooks {
  /** +1 when a pull-and-work cycle starts, -1 when it ends. */
  cycle?(delta: 1 | -1): void;
  /** +1 while images of a pulled batch are being embedded, -1 after. */
  embedding?(delta: 1 | -1): void;
  /** After a batch was settled. */
  batch?(outcomes: EmbedOutcome[]): void;
  /** After a cycle failed as a whole (already logged). */
  failure?(err: Error): void;
}

export interface EmbedLoopDeps {
  bus: EventBus;
  /** The embed step's dependencies, or a function giving them per batch (the local model can change between batches). */
  embed: EmbedDeps | (() => EmbedDeps);
  logger: Logger;
  settings: EmbedLoopSettings;
  now?: () => number;
  /** Checked before each pull; the loop returns with `stopped` once false. Default: always true. */
  running?: () => boolean;
  /** Waits after an empty pull (locally: until a new event is published or a poll interval passes). */
  idle?: () => Promise<void>;
  hooks?: EmbedLoopHooks;
}

export interface EmbedLoopResult {
  batches: number;
  messages: number;
  outcomes: Record<string, number>;
  stoppedBecause: 'backlog-empty' | 'max-runtime' | 'stopped';
  elapsedMs: number;
}

export class EmbedJobFailedError extends AppError {
  override readonly code = 'EMBED_JOB_FAILED';
}

/**
 * The embed loop, the one both modes run: pull a batch of image events, embed it while keeping
 * the leases alive, settle every message (ack / nack / dead-letter), repeat.
 *
 * - The embed job (jobs/embed) runs it until the subscription stays empty (`maxEmptyPulls`) or the
 *   time budget is spent (`maxRuntimeMs`). Several tasks share the backlog simply by pulling from
 *   the same subscription: Pub/Sub hands each message to one of them at a time. After
 *   `maxConsecutiveFailures` failed cycles it throws (the process exits non-zero and Cloud Run's
 *   task retry, then the next dispatch, take over).
 * - Local `up` / `ingest` run it (through PipelineWorkers) until stopped: an empty pull waits in
 *   `idle` (woken when an event is published), and a loop pulls only once its previous batch is
 *   settled, so the queue holds the backlog while inference is busy.
 *
 * A cycle that fails as a whole (model, feature store or queue fault) releases its batch as
 * `onBatchFailure` says; the loop goes on.
 */
export async function runEmbedLoop(deps: EmbedLoopDeps): Promise<EmbedLoopResult> {
  const { bus, logger, settings, hooks = {} } = deps;
  const now = deps.now ?? Date.now;
  const running = deps.running ?? (() => true);
  const embedDeps = typeof deps.embed === 'function' ? deps.embed : () => deps.embed as EmbedDeps;
  const idle = deps.idle ?? (() => (settings.emptyPullDelayMs ? sleep(settings.emptyPullDelayMs) : Promise.resolve()));
  const logBatch = settings.batchLogLevel === 'info' ? logger.info.bind(logger) : logger.debug.bind(logger);
  const started = now();
  const outcomes: Record<string, number> = {};
  let batches = 0;
  let messages = 0;
  let emptyPulls = 0;
  let failures = 0;
  const result = (stoppedBecause: EmbedLoopResult['stoppedBecause']): EmbedLoopResult => ({
    batches,
    messages,
    outcomes,
    stoppedBecause,
    elapsedMs: now() - started,
  });

  const failureDelay = (n: number): number => (typeof settings.failureDelayMs === 'function' ? settings.failureDelayMs(n) : (settings.failureDelayMs ?? 0));
  /** A wait that ends early once the loop is stopped (a backoff can reach tens of seconds). */
  const pause = async (ms: number): Promise<void> => {
    const until = Date.now() + ms;
    while (running() && Date.now() < until) await sleep(Math.min(200, until - Date.now()));
  };
  /** `hold`: the same leased batch again after each failure, until it works or the loop stops (then the lease expires). */
  const holdUntilDone = async (attempt: () => Promise<EmbedOutcome[]>): Promise<EmbedOutcome[]> => {
    for (let held = 1; ; held++) {
      try {
        return await attempt();
      } catch (err) {
        if (!running()) throw err;
        logger.error({ err, failures: held }, 'embed batch failed; keeping it leased and trying again');
        hooks.failure?.(err instanceof Error ? err : new Error(String(err)));
        await pause(failureDelay(held));
      }
    }
  };

  while (running()) {
    if (settings.maxRuntimeMs !== undefined && now() - started >= settings.maxRuntimeMs) {
      logger.info({ batches, messages }, 'time budget spent; stopping');
      return result('max-runtime');
    }
    let pulled = 0;
    hooks.cycle?.(1);
    try {
      const deliveries = await bus.pull(TOPICS.imageEvents, { maxMessages: settings.batchSize, ackDeadlineSeconds: settings.leaseSeconds });
      pulled = deliveries.length;
      if (deliveries.length > 0) {
        emptyPulls = 0;
        const ackIds = deliveries.map((d) => d.ackId);
        const batchStart = now();
        let settled: EmbedOutcome[];
        try {
          const attempt = async (): Promise<EmbedOutcome[]> => {
            const embed = embedDeps();
            hooks.embedding?.(1);
            const outcomes = await embedBatch(deliveries, embed).finally(() => hooks.embedding?.(-1));
            await settleEmbedOutcomes(bus, outcomes);
            return outcomes;
          };
          if (settings.onBatchFailure === 'hold') {
            settled = await withLeaseExtension(bus, TOPICS.imageEvents, ackIds, settings.leaseSeconds, () => holdUntilDone(attempt), { logger });
          } else {
            const embed = embedDeps();
            hooks.embedding?.(1);
            settled = await withLeaseExtension(bus, TOPICS.imageEvents, ackIds, settings.leaseSeconds, () => embedBatch(deliveries, embed), { logger }).finally(
              () => hooks.embedding?.(-1),
            );
            await settleEmbedOutcomes(bus, settled);
          }
        } catch (err) {
          if (settings.onBatchFailure === 'nack' || settings.onBatchFailure === undefined) {
            await bus.nack(TOPICS.imageEvents, ackIds, errorMessage(err)).catch((nackErr: unknown) => {
              // The lease runs out on its own: the queue redelivers them anyway.
              logger.warn({ err: nackErr }, 'nack failed');
            });
          }
          throw err;
        }
        failures = 0;
        batches += 1;
        messages += deliveries.length;
        const counts = countBy(settled);
        for (const [status, n] of Object.entries(counts)) outcomes[status] = (outcomes[status] ?? 0) + n;
        logBatch({ batch: batches, size: deliveries.length, outcomes: counts, ms: now() - batchStart }, 'batch embedded');
        hooks.batch?.(settled);
      }
    } catch (err) {
      failures += 1;
      logger.error({ err, size: pulled, failures }, pulled > 0 ? 'embed batch failed; its messages will be redelivered' : 'pulling image events failed');
      hooks.failure?.(err instanceof Error ? err : new Error(String(err)));
      if (settings.maxConsecutiveFailures !== undefined && failures >= settings.maxConsecutiveFailures) {
        throw new EmbedJobFailedError(`${failures} batches in a row failed; last error: ${errorMessage(err)}`, { cause: err });
      }
      const delayMs = failureDelay(failures);
      if (delayMs) await pause(delayMs);
      continue;
    } finally {
      hooks.cycle?.(-1);
    }
    if (pulled === 0) {
      emptyPulls += 1;
      if (settings.maxEmptyPulls !== undefined && emptyPulls >= settings.maxEmptyPulls) {
        logger.info({ batches, messages, emptyPulls }, 'no image events left; stopping');
        return result('backlog-empty');
      }
      if (running()) await idle();
    }
  }
  return result('stopped');
}

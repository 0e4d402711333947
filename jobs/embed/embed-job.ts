import { TOPICS } from '../../shared/contracts.js';
import { errorMessage, IssError } from '../../shared/errors.js';
import { withLeaseExtension } from '../../shared/adapters/lease-extension.js';
import { embedBatch, settleEmbedOutcomes, type EmbedDeps } from '../../shared/handlers/embed-batch.js';
import { countBy } from '../../shared/handlers/results.js';
import type { Logger } from '../../shared/logger.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { EventBus } from '../../shared/ports/event-bus.js';

export interface EmbedJobSettings {
  /** Messages per pull = images per batched ONNX run. */
  batchSize: number;
  /** Lease of pulled messages, extended every half of it while the batch is worked on. */
  leaseSeconds: number;
  /** The task ends after this many consecutive empty pulls (the backlog is gone). */
  maxEmptyPulls: number;
  /** No new batch is pulled after this long (stay inside the Cloud Run task timeout). */
  maxRuntimeMs: number;
  /** Batches in a row that fail as a whole before the task gives up (exit code ≠ 0). */
  maxConsecutiveFailures?: number;
  /** Wait after an empty pull (Pub/Sub pull already waits; the local queue answers at once). */
  emptyPullDelayMs?: number;
}

export interface EmbedJobDeps {
  bus: EventBus;
  embed: EmbedDeps;
  logger: Logger;
  settings: EmbedJobSettings;
  now?: () => number;
}

export interface EmbedJobResult {
  batches: number;
  messages: number;
  outcomes: Record<string, number>;
  stoppedBecause: 'backlog-empty' | 'max-runtime';
  elapsedMs: number;
}

export class EmbedJobFailedError extends IssError {
  override readonly code = 'EMBED_JOB_FAILED';
}

/**
 * One embed job task: pull a batch of image events, embed it while keeping the leases alive,
 * settle every message (ack / nack / dead-letter), repeat until the subscription stays empty or
 * the time budget is spent. Several tasks share the backlog simply by pulling from the same
 * subscription: Pub/Sub hands each message to one of them at a time.
 *
 * A batch that fails as a whole (model or Pub/Sub fault) is nacked, so its messages come back;
 * after `maxConsecutiveFailures` such batches the task throws (the process exits non-zero and
 * Cloud Run's task retry, then the next dispatch, take over).
 */
export async function runEmbedJob(deps: EmbedJobDeps): Promise<EmbedJobResult> {
  const { bus, logger, settings } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const outcomes: Record<string, number> = {};
  let batches = 0;
  let messages = 0;
  let emptyPulls = 0;
  let failures = 0;
  const maxFailures = settings.maxConsecutiveFailures ?? 3;

  while (true) {
    if (now() - started >= settings.maxRuntimeMs) {
      logger.info({ batches, messages }, 'time budget spent; stopping');
      return { batches, messages, outcomes, stoppedBecause: 'max-runtime', elapsedMs: now() - started };
    }
    const deliveries = await bus.pull(TOPICS.imageEvents, { maxMessages: settings.batchSize, ackDeadlineSeconds: settings.leaseSeconds });
    if (deliveries.length === 0) {
      emptyPulls += 1;
      if (emptyPulls >= settings.maxEmptyPulls) {
        logger.info({ batches, messages, emptyPulls }, 'no image events left; stopping');
        return { batches, messages, outcomes, stoppedBecause: 'backlog-empty', elapsedMs: now() - started };
      }
      if (settings.emptyPullDelayMs) await new Promise((r) => setTimeout(r, settings.emptyPullDelayMs));
      continue;
    }
    emptyPulls = 0;
    const ackIds = deliveries.map((d) => d.ackId);
    const batchStart = now();
    try {
      const result = await withLeaseExtension(bus, TOPICS.imageEvents, ackIds, settings.leaseSeconds, () => embedBatch(deliveries, deps.embed), { logger });
      await settleEmbedOutcomes(bus, result);
      failures = 0;
      batches += 1;
      messages += deliveries.length;
      const counts = countBy(result);
      for (const [status, n] of Object.entries(counts)) outcomes[status] = (outcomes[status] ?? 0) + n;
      logger.info({ batch: batches, size: deliveries.length, outcomes: counts, ms: now() - batchStart }, 'batch embedded');
    } catch (err) {
      failures += 1;
      logger.error({ err: errorMessage(err), size: deliveries.length, failures }, 'batch failed; its messages are released for redelivery');
      await bus.nack(TOPICS.imageEvents, ackIds, errorMessage(err)).catch((nackErr: unknown) => {
        // The lease runs out on its own: Pub/Sub redelivers them anyway.
        logger.warn({ err: errorMessage(nackErr) }, 'nack failed');
      });
      if (failures >= maxFailures) {
        throw new EmbedJobFailedError(`${failures} batches in a row failed; last error: ${errorMessage(err)}`, { cause: err });
      }
    }
  }
}

export interface EmbedTaskDeps {
  /**
   * The registry's active model (a ModelHolder in the cloud). The embed job never registers one:
   * with none active, `get()` throws NoActiveModelError naming the bootstrap job, and with
   * ONNX_EXECUTION_PROVIDER=cuda a CUDA provider that does not load throws CudaUnavailableError.
   * Either way nothing is pulled, so no image event is consumed.
   */
  model: { get(): Promise<Embedder>; close(): Promise<void> };
  bus: EventBus;
  logger: Logger;
  embed: Omit<EmbedDeps, 'embedder'>;
  settings: EmbedJobSettings;
  executionProvider: 'cpu' | 'cuda';
  now?: () => number;
}

/** One task of the embed job: load the model, work the backlog, release the clients. */
export async function runEmbedTask(deps: EmbedTaskDeps): Promise<EmbedJobResult> {
  const { bus, logger, model } = deps;
  try {
    const loadStart = Date.now();
    const embedder = await model.get();
    logger.info({ modelVersion: embedder.modelVersion, executionProvider: deps.executionProvider, ms: Date.now() - loadStart }, 'model loaded');
    return await runEmbedJob({ bus, logger, settings: deps.settings, now: deps.now, embed: { ...deps.embed, embedder } });
  } finally {
    await bus.close();
    await model.close();
  }
}

/**
 * The process around a task: builds the dependencies (config errors included), runs the task and
 * returns the exit code — 0 when the backlog is done or the time budget is spent; 1 on a fatal
 * error, logged at ERROR with its message (what to do) as the log line's message.
 */
export async function embedTaskMain(build: () => EmbedTaskDeps | Promise<EmbedTaskDeps>, logger: Logger): Promise<0 | 1> {
  try {
    const deps = await build();
    const result = await runEmbedTask(deps);
    deps.logger.info({ ...result }, 'embed task finished');
    return 0;
  } catch (err) {
    const fields: Record<string, unknown> = { code: (err as { code?: unknown }).code, errorName: err instanceof Error ? err.name : undefined };
    if (err instanceof Error && err.cause !== undefined) fields.cause = errorMessage(err.cause);
    logger.error(fields, `embed task failed: ${errorMessage(err)}`);
    return 1;
  }
}

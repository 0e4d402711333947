import { errorMessage } from '../errors.js';
import type { EmbedDeps } from '../handlers/embed-batch.js';
import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { EventBus } from '../ports/event-bus.js';
import { runEmbedLoop, type EmbedLoopResult, type EmbedLoopSettings } from './embed-loop.js';

export { EmbedJobFailedError } from './embed-loop.js';

/** The embed job's settings: the loop's, with the two stop conditions a task always has. */
export type EmbedJobSettings = EmbedLoopSettings & Required<Pick<EmbedLoopSettings, 'maxEmptyPulls' | 'maxRuntimeMs'>>;

export interface EmbedJobDeps {
  bus: EventBus;
  embed: EmbedDeps;
  logger: Logger;
  settings: EmbedJobSettings;
  now?: () => number;
}

export type EmbedJobResult = EmbedLoopResult;

/** Failed batches in a row after which a task gives up (exit code ≠ 0), unless the settings say otherwise. */
const DEFAULT_MAX_CONSECUTIVE_FAILURES = 3;

/**
 * One embed job task's work: the embed loop (shared/services/embed-loop.ts) until the subscription
 * stays empty or the time budget is spent, one info line per batch, failed batches nacked, and
 * after `maxConsecutiveFailures` (default 3) failures in a row an EmbedJobFailedError.
 */
export function runEmbedJob(deps: EmbedJobDeps): Promise<EmbedJobResult> {
  return runEmbedLoop({
    ...deps,
    settings: {
      ...deps.settings,
      maxConsecutiveFailures: deps.settings.maxConsecutiveFailures ?? DEFAULT_MAX_CONSECUTIVE_FAILURES,
      onBatchFailure: deps.settings.onBatchFailure ?? 'nack',
      batchLogLevel: deps.settings.batchLogLevel ?? 'info',
    },
  });
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
    // The Error itself (stack, cause chain) for Error Reporting; its message in the line for people.
    logger.error({ err, code: (err as { code?: unknown }).code }, `embed task failed: ${errorMessage(err)}`);
    return 1;
  }
}

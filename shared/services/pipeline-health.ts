import { errorMessage } from '../errors.js';

/** The steps of the local pipeline whose faults are reported: taking storage events in, embedding, writing the index. */
export type PipelineStage = 'intake' | 'embed' | 'upsert';

const STAGE_WHAT: Record<PipelineStage, string> = {
  intake: 'queueing new files',
  embed: 'embedding',
  upsert: 'index writes',
};

/** A stage failing now: since when, how often in a row, and the last error. */
export interface StageFault {
  stage: PipelineStage;
  since: string;
  failures: number;
  lastError: string;
  lastAt: string;
  /** One line for people: "index writes failing since 2026-…: ENOSPC: no space left on device …". */
  summary: string;
}

/**
 * What is failing in the local pipeline right now, for `/api/status`, `imgsearch status` and
 * `ingest`'s stall check. A stage's fault starts with its first failure and ends with its next
 * success; while it lasts the work is retried with backoff, never dropped.
 */
export class PipelineHealth {
  private readonly faults = new Map<PipelineStage, { since: number; failures: number; lastError: string; lastAt: number }>();
  private lastSuccess: number;

  constructor(private readonly now: () => number = Date.now) {
    this.lastSuccess = now();
  }

  /** Records a failure; returns how many in a row this stage has failed. */
  failed(stage: PipelineStage, err: unknown): number {
    const at = this.now();
    const fault = this.faults.get(stage) ?? { since: at, failures: 0, lastError: '', lastAt: at };
    fault.failures += 1;
    fault.lastError = errorMessage(err);
    fault.lastAt = at;
    this.faults.set(stage, fault);
    return fault.failures;
  }

  succeeded(stage: PipelineStage): void {
    this.faults.delete(stage);
    this.lastSuccess = this.now();
  }

  /** Consecutive failures of a stage (0 when it works). */
  failures(stage: PipelineStage): number {
    return this.faults.get(stage)?.failures ?? 0;
  }

  /** Milliseconds since any stage last succeeded, when some stage is failing now; 0 when all work. */
  stalledForMs(): number {
    return this.faults.size === 0 ? 0 : this.now() - this.lastSuccess;
  }

  current(): StageFault[] {
    return [...this.faults].map(([stage, f]) => {
      const since = new Date(f.since).toISOString();
      return {
        stage,
        since,
        failures: f.failures,
        lastError: f.lastError,
        lastAt: new Date(f.lastAt).toISOString(),
        summary: `${STAGE_WHAT[stage]} failing since ${since} (${f.failures} attempt${f.failures === 1 ? '' : 's'}, retrying): ${f.lastError}`,
      };
    });
  }
}

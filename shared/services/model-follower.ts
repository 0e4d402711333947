import type { Logger } from '../logger.js';

/** How often a long-running local process asks the registry whether the active model changed. */
export const MODEL_POLL_MS = 5_000;

export interface ModelFollowerOptions {
  logger: Logger;
  /** After the model was swapped for the registry's new active version. */
  onChange?: () => Promise<void>;
  intervalMs?: number;
}

/**
 * Follows the registry's active model in a process that embeds (local `up`): another process
 * (`imgsearch retrain`, `model promote`, `model rollback`) may change it, and new images must be
 * embedded with the new model. Polls `refresh()` (one registry read) and, when it swapped the
 * model, runs `onChange` (e.g. re-publish the bucket: after a switch to another image tower the
 * new index starts empty). Queries do not depend on it: they follow the live index.
 */
export class ModelFollower {
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<boolean> | null = null;

  constructor(
    private readonly model: { refresh(): Promise<boolean> },
    private readonly options: ModelFollowerOptions,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.check(), this.options.intervalMs ?? MODEL_POLL_MS);
  }

  /** One poll (a poll already running is joined): true when the model changed. Never throws. */
  check(): Promise<boolean> {
    this.checking ??= this.poll().finally(() => {
      this.checking = null;
    });
    return this.checking;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.checking;
  }

  private async poll(): Promise<boolean> {
    try {
      if (!(await this.model.refresh())) return false;
      await this.options.onChange?.();
      return true;
    } catch (err) {
      this.options.logger.warn({ err }, 'model refresh failed');
      return false;
    }
  }
}

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { NotFoundError } from '../shared/errors.js';
import type { FeedbackEvent } from '../shared/http/search-app.js';
import type { LocalRuntime } from './runtime.js';

/** Local implementations of the page's extra needs: reading originals, feedback, the metrics plot. */
export function localExtras(runtime: LocalRuntime) {
  return {
    async readObject(uri: string): Promise<Buffer> {
      if (!uri.startsWith('file://')) throw new NotFoundError(`cannot read ${uri} in local mode`);
      return fs.readFile(uri.slice('file://'.length));
    },
    async recordFeedback(event: FeedbackEvent): Promise<void> {
      await fs.mkdir(runtime.config.paths.feedback, { recursive: true });
      await fs.appendFile(path.join(runtime.config.paths.feedback, 'feedback.jsonl'), `${JSON.stringify(event)}\n`);
    },
    async metricsPlot(): Promise<Buffer | null> {
      return fs.readFile(path.join(runtime.config.paths.reports, 'metrics.png')).catch(() => null);
    },
  };
}

import type { Command } from 'commander';
import { pipelineStatus } from '../../shared/services/status.js';
import { printJson, withRuntime } from '../options.js';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('counts of indexed, pending and rejected images (with reasons), and the model')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const embedder = await runtime.model.get();
        const status = await pipelineStatus({ bus: runtime.bus, index: await runtime.catalog.live(), rejections: runtime.rejections, embedder });
        if (opts.json) return printJson(status);
        const lines = [
          `model      ${status.model.version} (${status.model.dimension}-d, ${status.model.hasTextTower ? 'text search on' : 'no text tower'})`,
          `index      ${status.index ? `${status.index.name} (${status.index.modelVersion})` : 'none yet'}`,
          `indexed    ${status.indexed}`,
          `pending    ${status.pending}`,
          `rejected   ${status.rejected.count}`,
          ...Object.entries(status.rejected.byReason).map(([reason, n]) => `  ${reason}: ${n}`),
          ...status.rejected.items.slice(0, 20).map((r) => `  - ${r.uri}: ${r.reason} (${r.detail})`),
          `dead-lettered ${status.deadLettered.count}`,
          ...status.deadLettered.items.slice(0, 20).map((d) => `  - [${d.topic}] ${d.reason} (attempts ${d.deliveryAttempt})`),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      });
    });
}

import type { Command } from 'commander';
import { NotFoundError } from '../../shared/errors.js';
import { configFrom, printJson } from '../options.js';
import { openLocalRuntime } from '../runtime.js';

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('model registry: versions, metrics, lineage');
  model
    .command('list')
    .description('model versions, oldest first')
    .option('--json', 'print [{version, active, parent, createdAt, metrics}]')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const versions = await runtime.registry.list();
        if (opts.json) return printJson(versions.map((v) => ({ version: v.version, active: v.active, parent: v.parent, createdAt: v.createdAt, metrics: v.metrics })));
        for (const v of versions) {
          const r1 = v.metrics?.imageToImage?.['recall@1'];
          process.stdout.write(`${v.active ? '*' : ' '} ${v.version}  parent ${v.parent ?? '-'}  ${v.createdAt}${r1 !== undefined ? `  recall@1 ${r1.toFixed(4)}` : ''}\n`);
        }
      } finally {
        await runtime.close();
      }
    });
  model
    .command('show')
    .argument('<version>')
    .description('manifest, metrics and lineage of a version')
    .action(async (version: string, _opts: unknown, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const v = await runtime.registry.get(version);
        if (!v) throw new NotFoundError(`no model version ${version}; see \`imgsearch model list\``);
        printJson(v);
      } finally {
        await runtime.close();
      }
    });
}

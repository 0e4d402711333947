import type { Command } from 'commander';
import { configFrom, printJson } from '../options.js';
import { openLocalRuntime } from '../runtime.js';

export function registerIndexCommands(program: Command): void {
  const index = program.command('index').description('physical index versions behind the alias');
  index
    .command('versions')
    .description('list index versions (the live one marked)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const versions = await runtime.catalog.versions();
        if (opts.json) return printJson(versions);
        for (const v of versions) process.stdout.write(`${v.live ? '*' : ' '} ${v.name}  model ${v.modelVersion}  ${v.count} docs  ${v.createdAt}\n`);
      } finally {
        await runtime.close();
      }
    });
  index
    .command('rollback')
    .description('point the alias back at the previous index version')
    .action(async (_opts: unknown, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        const name = await runtime.catalog.rollback();
        process.stdout.write(`alias now points at ${name}\n`);
      } finally {
        await runtime.close();
      }
    });
}

import type { Command } from 'commander';
import { printJson, withRuntime } from '../options.js';

export function registerIndexCommands(program: Command): void {
  const index = program.command('index').description('physical index versions behind the alias');
  index
    .command('versions')
    .description('list index versions (the live one marked)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const versions = await runtime.catalog.versions();
        if (opts.json) return printJson(versions);
        for (const v of versions) process.stdout.write(`${v.live ? '*' : ' '} ${v.name}  model ${v.modelVersion}  ${v.count} docs  ${v.createdAt}\n`);
      });
    });
  index
    .command('rollback')
    .description('point the alias back at the previous index version')
    .action(async (_opts: unknown, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const name = await runtime.catalog.rollback();
        process.stdout.write(`alias now points at ${name}\n`);
      });
    });
}

import type { Command } from 'commander';
import { printOutput, withRuntime } from '../options.js';

export function registerIndexCommands(program: Command): void {
  const index = program.command('index').description('physical index versions behind the alias');
  index
    .command('versions')
    .description('list index versions (the live one marked)')
    .option('--json', 'print {schemaVersion, versions: [{name, modelVersion, dimension, createdAt, count, live}]}')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(command, async (runtime) => {
        const versions = await runtime.catalog.versions();
        if (opts.json) return printOutput('index versions', { versions });
        for (const v of versions) process.stdout.write(`${v.live ? '*' : ' '} ${v.name}  model ${v.modelVersion}  ${v.count} docs  ${v.createdAt}\n`);
      });
    });
  index
    .command('rollback')
    .description('point the alias back at the previous index version and make its model active with it')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      await withRuntime(
        command,
        async (runtime) => {
          const { rollbackIndex } = await import('../../shared/services/model-lifecycle.js');
          const { lifecycleDeps } = await import('../../shared/wiring/local.js');
          const result = await rollbackIndex(lifecycleDeps(runtime));
          if (opts.json) return printOutput('model promote / model rollback / index rollback', result);
          process.stdout.write(`alias now points at ${result.index}; active model ${result.modelVersion} (${result.documents} documents)\n`);
        },
        { writer: true },
      );
    });
}

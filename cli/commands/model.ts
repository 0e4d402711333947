import type { Command } from 'commander';
import { NotFoundError } from '../../shared/errors.js';
import { activateModel, rollbackModel, type ActivationResult } from '../../shared/services/model-lifecycle.js';
import { configFrom, printJson } from '../options.js';
import { lifecycleDeps, openLocalRuntime } from '../../shared/wiring/local.js';
import { registerModelPullCommand } from './model-pull.js';

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
        if (opts.json)
          return printJson(versions.map((v) => ({ version: v.version, active: v.active, parent: v.parent, createdAt: v.createdAt, metrics: v.metrics })));
        for (const v of versions) {
          const r1 = v.metrics?.imageToImage?.['recall@1'];
          process.stdout.write(
            `${v.active ? '*' : ' '} ${v.version}  parent ${v.parent ?? '-'}  ${v.createdAt}${r1 !== undefined ? `  recall@1 ${r1.toFixed(4)}` : ''}\n`,
          );
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
  model
    .command('promote')
    .argument('<version>')
    .description('make a version active and point the index at vectors of that version (re-projected from the feature store)')
    .option('--json', 'print JSON')
    .action(async (version: string, opts: { json?: boolean }, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        if (!(await runtime.registry.get(version))) throw new NotFoundError(`no model version ${version}; see \`imgsearch model list\``);
        report(await activateModel(lifecycleDeps(runtime), version), opts.json);
      } finally {
        await runtime.close();
      }
    });
  model
    .command('rollback')
    .description('re-activate the previously active version and its index')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        report(await rollbackModel(lifecycleDeps(runtime)), opts.json);
      } finally {
        await runtime.close();
      }
    });
  registerModelPullCommand(model);
}

function report(r: ActivationResult, json?: boolean): void {
  if (json) return printJson(r);
  const how = { reused: 'reused its earlier index', rebuilt: 'rebuilt the index from stored embeddings', unchanged: 'index already live' }[r.how];
  process.stdout.write(
    `active model ${r.modelVersion}; ${how}: ${r.index} (${r.documents} documents)${r.needsReembedding ? `; ${r.needsReembedding} images need re-embedding (they were embedded by another image tower): a running \`imgsearch up\` re-embeds its bucket, or run \`imgsearch ingest <dir>\` again` : ''}\n`,
  );
}

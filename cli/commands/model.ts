import type { Command } from 'commander';
import type { ActivationResult } from '../../shared/services/model-lifecycle.js';
import { openRuntime, printJson, printOutput, withRuntime } from '../options.js';
import { registerModelPullCommand } from './model-pull.js';
import { registerModelVariantCommands } from './model-variants.js';

async function notFound(message: string): Promise<Error> {
  const { NotFoundError } = await import('../../shared/errors.js');
  return new NotFoundError(message);
}

export function registerModelCommands(program: Command): void {
  const model = program.command('model').description('model registry: versions, metrics, lineage');
  model
    .command('list')
    .description('model versions, oldest first')
    .option('--json', 'print {schemaVersion, versions: [{version, active, everActive, parent, createdAt, metrics}]}')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const runtime = await openRuntime(command);
      try {
        const versions = await runtime.registry.list();
        if (opts.json)
          return await printOutput('model list', {
            versions: versions.map((v) => ({
              version: v.version,
              active: v.active,
              everActive: v.everActive ?? v.active,
              parent: v.parent,
              createdAt: v.createdAt,
              metrics: v.metrics,
            })),
          });
        for (const v of versions) {
          const r1 = v.metrics?.imageToImage?.['recall@1'];
          const never = v.everActive === false && v.parent !== null ? '  (never promoted)' : '';
          process.stdout.write(
            `${v.active ? '*' : ' '} ${v.version}  parent ${v.parent ?? '-'}  ${v.createdAt}${r1 !== undefined ? `  recall@1 ${r1.toFixed(4)}` : ''}${never}\n`,
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
      const runtime = await openRuntime(command);
      try {
        const v = await runtime.registry.get(version);
        if (!v) throw await notFound(`no model version ${version}; see \`imgsearch model list\``);
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
      const runtime = await openRuntime(command, { writer: true });
      try {
        if (!(await runtime.registry.get(version))) throw await notFound(`no model version ${version}; see \`imgsearch model list\``);
        const { activateModel } = await import('../../shared/services/model-lifecycle.js');
        const { lifecycleDeps } = await import('../../shared/wiring/local.js');
        await report(await activateModel(lifecycleDeps(runtime), version), opts.json);
      } finally {
        await runtime.close();
      }
    });
  model
    .command('rollback')
    .description('re-activate the previously active version and its index')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const runtime = await openRuntime(command, { writer: true });
      try {
        const { rollbackModel } = await import('../../shared/services/model-lifecycle.js');
        const { lifecycleDeps } = await import('../../shared/wiring/local.js');
        await report(await rollbackModel(lifecycleDeps(runtime)), opts.json);
      } finally {
        await runtime.close();
      }
    });
  model
    .command('rm')
    .argument('<version...>')
    .description('remove model versions and the index versions built for them (refuses the active one and the one `model rollback` returns to)')
    .option('--json', 'print {schemaVersion, versions, droppedIndices, dryRun}')
    .action(async (versions: string[], opts: { json?: boolean }, command: Command) => {
      await withRuntime(
        command,
        async (runtime) => {
          const { removeModel } = await import('../../shared/services/removal.js');
          const droppedIndices: string[] = [];
          for (const version of versions) {
            if (!(await runtime.registry.get(version))) throw await notFound(`no model version ${version}; see \`imgsearch model list\``);
            droppedIndices.push(...(await removeModel(runtime, version)).droppedIndices);
            if (!opts.json) process.stdout.write(`removed ${version}\n`);
          }
          if (opts.json) return printOutput('model rm / model prune', { versions, droppedIndices, dryRun: false });
          if (droppedIndices.length) process.stdout.write(`dropped index versions ${droppedIndices.join(', ')}\n`);
        },
        { writer: true },
      );
    });
  model
    .command('prune')
    .description('remove retraining candidates that were never promoted (a dry run unless --yes); base models stay (`model rm` removes those)')
    .option('--yes', 'remove them (without it, only list them)')
    .option('--json', 'print {schemaVersion, versions, droppedIndices, dryRun}')
    .action(async (opts: { yes?: boolean; json?: boolean }, command: Command) => {
      await withRuntime(
        command,
        async (runtime) => {
          const { pruneCandidates, removeModel } = await import('../../shared/services/removal.js');
          const candidates = pruneCandidates(await runtime.registry.list()).map((v) => v.version);
          const droppedIndices: string[] = [];
          if (opts.yes) for (const version of candidates) droppedIndices.push(...(await removeModel(runtime, version)).droppedIndices);
          if (opts.json) return printOutput('model rm / model prune', { versions: candidates, droppedIndices, dryRun: !opts.yes });
          if (candidates.length === 0) return void process.stdout.write('nothing to prune: every retraining candidate was promoted at some point\n');
          const verb = opts.yes ? 'removed' : 'would remove';
          process.stdout.write(candidates.map((v) => `${verb} ${v}\n`).join(''));
          if (!opts.yes) process.stdout.write(`${candidates.length} never-promoted versions; run \`imgsearch model prune --yes\` to remove them\n`);
        },
        // Only a real removal writes: the dry run is a reader, and may run beside `imgsearch up`.
        { writer: opts.yes === true },
      );
    });
  registerModelPullCommand(model);
  registerModelVariantCommands(model);
}

async function report(r: ActivationResult, json?: boolean): Promise<void> {
  if (json) return printOutput('model promote / model rollback / index rollback', r);
  const how = { reused: 'reused its earlier index', rebuilt: 'rebuilt the index from stored embeddings', unchanged: 'index already live' }[r.how];
  process.stdout.write(
    `active model ${r.modelVersion}; ${how}: ${r.index} (${r.documents} documents)${r.needsReembedding ? `; ${r.needsReembedding} images need re-embedding (they were embedded by another image tower): a running \`imgsearch up\` re-embeds its bucket, or run \`imgsearch ingest <dir>\` again` : ''}\n`,
  );
}

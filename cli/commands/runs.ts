import type { Command } from 'commander';
import type { ExperimentRun } from '../../shared/services/experiment-runs.js';
import { configFrom, printOutput } from '../options.js';
import { runLine } from './tune.js';

async function store(command: Command) {
  // Runs are plain files beside the registry: no model, index or lock is needed to read them.
  const config = await configFrom(command);
  const { localExperimentRuns } = await import('../../shared/wiring/local-tuning.js');
  return localExperimentRuns(config);
}

/** The validation curve in one line (▁…█ per epoch). */
function sparkline(run: ExperimentRun): string {
  const values = run.curve.map((e) => e.validationRecallAt1).filter((v): v is number => v !== null);
  if (values.length === 0) return '';
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return values.map((v) => '▁▂▃▄▅▆▇█'[hi > lo ? Math.round(((v - lo) / (hi - lo)) * 7) : 7]).join('');
}

export function registerRunsCommands(program: Command): void {
  const runs = program
    .command('runs')
    .description('experiment runs recorded by `imgsearch tune`: parameters, curves, held-out metrics, data snapshot, duration');
  runs
    .command('list')
    .description('experiment runs, oldest first')
    .option('--json', 'print {schemaVersion, runs: [{id, study, trial, status, params, curve, objective, heldOut, gate, modelVersion, …}]}')
    .action(async (opts: { json?: boolean }, command: Command) => {
      const all = await (await store(command)).list();
      if (opts.json) return printOutput('runs list', { runs: all });
      if (all.length === 0) return void process.stdout.write('no experiment runs yet: `imgsearch tune` records them\n');
      let study = '';
      for (const r of all) {
        if (r.study !== study) {
          study = r.study;
          process.stdout.write(`${study}  (data ${r.dataSnapshot}, parent ${r.parentModel})\n`);
        }
        process.stdout.write(`  ${r.id}  ${runLine(r)}${r.promoted ? '  [promoted]' : ''}\n`);
      }
    });
  runs
    .command('show')
    .argument('<id>', 'a run id from `imgsearch runs list`')
    .description('one run: parameters, per-epoch curve, held-out metrics, gate decision, data snapshot, duration')
    .option('--json', 'print the run as JSON')
    .action(async (id: string, opts: { json?: boolean }, command: Command) => {
      const run = await (await store(command)).get(id);
      if (!run) {
        const { NotFoundError } = await import('../../shared/errors.js');
        throw new NotFoundError(`no experiment run ${id}; see \`imgsearch runs list\``);
      }
      if (opts.json) return printOutput('runs show', run);
      const lines = [
        `${run.id}  (study ${run.study}, trial ${run.trial})`,
        `status      ${run.status}${run.reason ? `: ${run.reason}` : ''}`,
        `params      ${JSON.stringify(run.params)}`,
        `data        ${run.dataSnapshot}  parent ${run.parentModel}  seed ${run.seed}`,
        `time        ${run.startedAt} → ${run.finishedAt ?? '(running)'}${run.seconds !== null ? `  ${run.seconds.toFixed(1)} s` : ''}`,
        `objective   ${run.objective ? `${run.objective.name} ${run.objective.value.toFixed(4)}` : '-'}`,
        `curve       ${sparkline(run)}  (${run.curve.length} epochs)`,
        ...run.curve.map(
          (e) =>
            `  epoch ${String(e.epoch).padStart(3)}  loss ${e.loss.toFixed(4)}  val r@1 ${e.validationRecallAt1 === null ? '-' : e.validationRecallAt1.toFixed(4)}  ${e.seconds.toFixed(1)} s`,
        ),
      ];
      if (run.heldOut) {
        lines.push(
          `held-out    ${Object.entries(run.heldOut.imageToImage)
            .map(([k, v]) => `${k} ${v.toFixed(4)}`)
            .join('  ')}`,
        );
        if (run.heldOut.textToImage)
          lines.push(
            `text        ${Object.entries(run.heldOut.textToImage)
              .map(([k, v]) => `${k} ${v.toFixed(4)}`)
              .join('  ')}`,
          );
      }
      if (run.gate) lines.push(`gate        ${run.gate.promote ? 'pass' : 'refuse'}`, ...run.gate.reasons.map((r) => `  - ${r}`));
      lines.push(`model       ${run.modelVersion ?? '(not kept)'}${run.promoted ? '  [promoted]' : ''}`);
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}

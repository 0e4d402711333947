import { availableParallelism } from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { ExperimentRun } from '../../shared/services/experiment-runs.js';
import type { TuneProgress } from '../../shared/services/tuning.js';
import { parseIntIn, parseNumberIn, printOutput, withRuntime } from '../options.js';

interface TuneFlags {
  trials: number;
  parallel: number;
  space?: string;
  sampler: 'tpe' | 'random';
  epochs?: number;
  seed: number;
  margin: number;
  heldOut: number;
  json?: boolean;
}

/** `--parallel`: each trial keeps a core busy, so at most the cores of this machine. */
function parseParallel(value: string): number {
  const cores = availableParallelism();
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < 1 || n > cores)
    throw new InvalidArgumentError(`expected a whole number from 1 to ${cores} (the cores of this machine: each trial keeps one busy)`);
  return n;
}

function parseSampler(value: string): 'tpe' | 'random' {
  if (value !== 'tpe' && value !== 'random') throw new InvalidArgumentError('expected tpe or random');
  return value;
}

const fmt = (x: number | null | undefined) => (x === null || x === undefined ? '   -  ' : x.toFixed(4));

/** One line per trial: what it tried and what it got. */
export function runLine(r: ExperimentRun): string {
  const params = Object.entries(r.params)
    .map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toPrecision(3) : String(v)}`)
    .join(' ');
  const heldOut = r.heldOut?.imageToImage['recall@1'];
  const text = r.heldOut?.textToImage?.['precision@10'];
  return (
    `trial ${String(r.trial).padStart(2)}  ${r.status.padEnd(9)}  val r@1 ${fmt(r.objective?.value)}  held-out r@1 ${fmt(heldOut)}  text p@10 ${fmt(text)}  ` +
    `${(r.seconds ?? 0).toFixed(1).padStart(6)} s  ${params}${r.reason ? `  (${r.reason})` : ''}`
  );
}

export function registerTuneCommand(program: Command): void {
  program
    .command('tune')
    .description(
      'hyperparameter search: run `retrain` trials over a search space (TPE sampler, early stopping of bad trials), record each as an experiment run, and promote the best only if it passes the same gate as `retrain`',
    )
    .option('--trials <n>', 'trials to run', parseIntIn(1, 1000), 8)
    .option('--parallel <p>', `trials at once, at most the cores (${availableParallelism()} here)`, parseParallel, 1)
    .option('--space <file>', 'JSON search space: {"hidden": {"type": "int", "min": 128, "max": 1024, "log": true}, …} (README "Hyperparameter search")')
    .option('--sampler <name>', 'tpe (default) or random', parseSampler, 'tpe')
    .option('--epochs <n>', 'training epochs of every trial (early stopping may end sooner; default that of retrain)', parseIntIn(1, 10_000))
    .option('--seed <n>', 'seeds the sampler and every trial (same data + seed = same trials)', parseIntIn(0, 2 ** 31 - 1), 42)
    .option('--margin <x>', 'held-out recall@1 gain the best trial needs to be promoted', parseNumberIn(0, 1), 0.005)
    .option('--held-out <f>', 'share of labelled images held out for evaluation', parseNumberIn(0, 1, { exclusive: true }), 0.1)
    .option('--json', 'print {schemaVersion, study, runs, best, decision, promoted, current, index, …} (progress goes to stderr)')
    .action(async (opts: TuneFlags, command: Command) => {
      // The space is read and checked before any model loads.
      const { parseSearchSpace, tune } = await import('../../shared/services/tuning.js');
      const space = opts.space ? parseSearchSpace(await readJsonFile(opts.space), `search space ${opts.space}`) : undefined;
      const { readFeedbackFile } = await import('../../shared/services/feedback.js');
      const { activateWithIndex } = await import('../../shared/services/model-lifecycle.js');
      const { lifecycleDeps } = await import('../../shared/wiring/local.js');
      const { localExperimentRuns, localTrialRunner } = await import('../../shared/wiring/local-tuning.js');
      const say = (line: string) => process.stderr.write(`${line}\n`);
      const onProgress = (p: TuneProgress) => {
        if (p.stage === 'load') say(`${p.records} stored embeddings; study ${p.study}: ${opts.trials} trials, ${opts.parallel} at a time`);
        else if (p.stage === 'trial-start')
          say(
            `trial ${p.trial} starts: ${Object.entries(p.params)
              .map(([k, v]) => `${k}=${String(v)}`)
              .join(' ')}`,
          );
        else if (p.stage === 'epoch')
          say(
            `trial ${p.trial} epoch ${p.epoch.epoch}: loss ${p.epoch.loss.toFixed(4)}, validation recall@1 ${p.epoch.validationRecallAt1?.toFixed(4) ?? '–'} (${p.epoch.seconds.toFixed(1)} s)`,
          );
        else if (p.stage === 'trial-end') say(runLine(p.run));
        else if (p.stage === 'activate') say(`${p.version} passed the gate: building its index`);
      };
      await withRuntime(
        command,
        async (runtime) => {
          const lifecycle = lifecycleDeps(runtime);
          const feedbackFile = path.join(runtime.config.paths.feedback, 'feedback.jsonl');
          const result = await tune(
            {
              ...lifecycle,
              runs: localExperimentRuns(runtime.config),
              activate: activateWithIndex(lifecycle),
              feedback: async () => (await readFeedbackFile(feedbackFile, { logger: runtime.logger })).pairs,
              runner: localTrialRunner,
              reportsDir: runtime.config.paths.reports,
              logger: runtime.logger,
            },
            {
              trials: opts.trials,
              parallel: opts.parallel,
              sampler: opts.sampler,
              seed: opts.seed,
              margin: opts.margin,
              heldOutFraction: opts.heldOut,
              ...(space ? { space } : {}),
              ...(opts.epochs !== undefined ? { fixed: { epochs: opts.epochs } } : {}),
            },
            onProgress,
          );
          if (opts.json) {
            const { activation: index, best, ...rest } = result;
            return printOutput('tune', { ...rest, best: best?.id ?? null, index });
          }
          const lines = [
            `study ${result.study}: ${result.runs.length} trials (${result.sampler}, ${result.parallel} at a time), ${result.seconds.toFixed(0)} s`,
          ];
          for (const r of result.runs) lines.push(`  ${runLine(r)}`);
          if (!result.best) lines.push('no trial finished: nothing to promote');
          else {
            lines.push(`best: trial ${result.best.trial} (${result.best.objective!.name} ${fmt(result.best.objective!.value)}) → ${result.best.modelVersion}`);
            if (result.current) lines.push(`active ${result.current.version}: held-out recall@1 ${fmt(result.current.metrics.imageToImage['recall@1'])}`);
            for (const reason of result.decision!.reasons) lines.push(`  - ${reason}`);
            lines.push(
              result.promoted
                ? `promoted ${result.best.modelVersion}`
                : `not promoted: ${result.current?.version ?? 'the active model'} stays active (the candidate is kept in \`imgsearch model list\`)`,
            );
          }
          lines.push('see `imgsearch runs list` for every trial');
          process.stdout.write(`${lines.join('\n')}\n`);
        },
        { writer: true },
      );
    });
}

async function readJsonFile(file: string): Promise<unknown> {
  const { promises: fs } = await import('node:fs');
  const { ParseError } = await import('../../shared/errors.js');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new ParseError(`cannot read the search space ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ParseError(`search space ${file} is not JSON: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Does `imgsearch tune` find a model at least as good as `imgsearch retrain` with its defaults, on
 * the same data and held-out split? Through the CLI, as a user runs it:
 *
 *   node --import tsx bench/tune.ts --images 6000 --trials 8 --parallel 2 [--home DIR] [--epochs E] [--skip-retrain]
 *
 * 1. `imgsearch dataset fashion-mnist --split train --limit N` and `imgsearch ingest` (skipped when
 *    `--home` already holds the ingested images);
 * 2. `imgsearch retrain --margin 1 --json`: the defaults, registered but never promoted, so the
 *    base model stays active and both runs are gated against the same model on the same split;
 * 3. `imgsearch tune --trials T --parallel P --json` (the default search space, TPE, median stopping);
 * 4. prints both held-out Recall@1 and text precision@10, and the time ratio tune / retrain.
 * The figures go in BENCHMARKS.md ("Hyperparameter search"). Takes tens of minutes on 2 cores.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { retrainOutputSchema, runsListOutputSchema, tuneOutputSchema } from '../shared/output-schemas.js';

const { values: args } = parseArgs({
  options: {
    images: { type: 'string', default: '6000' },
    trials: { type: 'string', default: '8' },
    parallel: { type: 'string', default: '2' },
    home: { type: 'string' },
    out: { type: 'string' },
    /** Cap on every trial's epochs (`imgsearch tune --epochs`); default: retrain's. */
    epochs: { type: 'string' },
    /** Skip step 2 (at 60k trial 1 is the defaults run anyway: same core, seed and data as `retrain`). */
    'skip-retrain': { type: 'boolean', default: false },
  },
});
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/imgsearch.mjs');
const work = args.home ? path.resolve(args.home) : path.join(os.tmpdir(), `iss-bench-tune-${args.images}`);
const home = path.join(work, 'home');
const line = (s: string) => process.stdout.write(`${s}\n`);

function run(cmd: string[]): Promise<{ stdout: string; seconds: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) =>
    execFile(
      process.execPath,
      [cli, ...cmd],
      { cwd: work, env: { ...process.env, IMGSEARCH_HOME: home, LOG_LEVEL: 'warn' }, maxBuffer: 256 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`imgsearch ${cmd.join(' ')} failed: ${stderr.slice(-2000)}`));
        else resolve({ stdout, seconds: (performance.now() - t0) / 1000 });
      },
    ),
  );
}

await mkdir(work, { recursive: true });
if (!existsSync(path.join(work, 'ingested'))) {
  line(`dataset + ingest of ${args.images} Fashion-MNIST train images into ${home}`);
  await run(['dataset', 'fashion-mnist', '--split', 'train', '--limit', args.images, '--out', 'imgs']);
  const ingest = await run(['ingest', 'imgs', '--json']);
  line(`  ingest: ${ingest.seconds.toFixed(0)} s`);
  await writeFile(path.join(work, 'ingested'), '');
}

const epochs = args.epochs ? ['--epochs', args.epochs] : [];
const retrain = args['skip-retrain'] ? null : await run(['retrain', '--margin', '1', '--json', ...epochs]);
const r = retrain ? retrainOutputSchema.parse(JSON.parse(retrain.stdout)) : null;
if (r && retrain)
  line(
    `retrain (defaults): held-out recall@1 ${r.candidate.metrics.imageToImage['recall@1'].toFixed(4)}, text p@10 ${r.candidate.metrics.textToImage?.['precision@10'].toFixed(4)}, ` +
      `best epoch ${r.candidate.training.bestEpoch}, ${retrain.seconds.toFixed(0)} s; active ${r.current.version} ${r.current.metrics.imageToImage['recall@1'].toFixed(4)}`,
  );

const tuned = await run(['tune', '--trials', args.trials, '--parallel', args.parallel, '--json', ...epochs]);
const t = tuneOutputSchema.parse(JSON.parse(tuned.stdout));
for (const run of t.runs) {
  line(
    `  trial ${run.trial} ${run.status.padEnd(9)} val ${run.objective?.value.toFixed(4) ?? '  -   '} held-out ${run.heldOut?.imageToImage['recall@1'].toFixed(4) ?? '  -   '} ` +
      `text ${run.heldOut?.textToImage?.['precision@10'].toFixed(4) ?? '  -   '} epochs ${run.curve.length} ${run.seconds?.toFixed(0)} s ${JSON.stringify(run.params)}${run.reason ? ` (${run.reason})` : ''}`,
  );
}
const best = t.runs.find((x) => x.id === t.best);
const listed = runsListOutputSchema.parse(JSON.parse((await run(['runs', 'list', '--json'])).stdout)).runs.filter((x) => x.study === t.study);
const bestR1 = best?.heldOut?.imageToImage['recall@1'] ?? NaN;
const defaultR1 = r?.candidate.metrics.imageToImage['recall@1'];
const versus = defaultR1 === undefined ? 'retrain not run' : `retrain defaults ${defaultR1.toFixed(4)}: ${bestR1 >= defaultR1 ? 'at least as good' : 'WORSE'}`;
line(
  `tune: best trial ${best?.trial} held-out recall@1 ${bestR1.toFixed(4)} (${versus}), ` +
    `text p@10 ${best?.heldOut?.textToImage?.['precision@10'].toFixed(4)}; promoted ${t.promoted} (${t.decision?.reasons.join('; ')}); ` +
    `${tuned.seconds.toFixed(0)} s${retrain ? ` = ${(tuned.seconds / retrain.seconds).toFixed(2)} × retrain` : ''}; runs recorded ${listed.length}`,
);
if (args.out)
  await writeFile(
    args.out,
    JSON.stringify({ retrain: r && retrain ? { ...r, seconds: retrain.seconds } : null, tune: { ...t, wall: tuned.seconds }, listed: listed.length }, null, 2),
  );

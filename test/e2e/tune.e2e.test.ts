import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelListOutputSchema, retrainOutputSchema, runShowOutputSchema, runsListOutputSchema, tuneOutputSchema } from '../../shared/output-schemas.js';
import { runCli, tempDir } from '../helpers/cli.js';

/**
 * What a user types: dataset → ingest → retrain (defaults) → tune → runs list/show, on 240
 * Fashion-MNIST images with 3 epochs per run. The acceptance figure is for 6,000 images and full
 * training; 8 trials of that take tens of minutes on 2 cores (BENCHMARKS.md "Hyperparameter
 * search", `node --import tsx bench/tune.ts`), too long for a test, so this test checks what does
 * not depend on the size: the trials run the same core as `retrain` (trial 1, the defaults,
 * reproduces its held-out figures exactly), all 8 are recorded with parameters and metrics, the
 * gate alone decides (margin 1 cannot be met: nothing is promoted), and bad input is refused.
 */
const IMAGES = 240;

describe('imgsearch tune / runs (CLI)', () => {
  let work: string;
  const cli = (...args: string[]) => runCli(args, { cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home') } });

  beforeAll(async () => {
    work = await tempDir('tune-e2e');
    expect((await cli('dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(IMAGES))).code).toBe(0);
    const ingest = await cli('ingest', 'imgs', '--json');
    expect(ingest.code, ingest.stderr).toBe(0);
  }, 120_000);

  afterAll(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('refuses bad flags, spaces and run ids with what to fix', async () => {
    const parallel = await cli('tune', '--parallel', '99');
    expect(parallel.code).toBe(2);
    expect(parallel.stderr).toMatch(/--parallel.*expected a whole number from 1 to \d+ \(the cores of this machine/);
    const missing = await cli('tune', '--space', 'nope.json');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read the search space nope\.json: ENOENT/);
    await fs.writeFile(path.join(work, 'typo.json'), JSON.stringify({ hiden: { type: 'int', min: 64, max: 512 } }));
    const typo = await cli('tune', '--space', 'typo.json');
    expect(typo.code).toBe(1);
    expect(typo.stderr).toMatch(/invalid search space typo\.json: .*"hiden" is not a trainer option; options that can be searched: .*hidden/);
    const run = await cli('runs', 'show', 'tune-0-t1');
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/no experiment run tune-0-t1; see `imgsearch runs list`/);
    const none = await cli('runs', 'list');
    expect(none.stdout).toMatch(/no experiment runs yet/);
  }, 60_000);

  it('runs 8 trials of the retraining core, records them all, and lets only the gate promote', async () => {
    const retrain = await cli('retrain', '--epochs', '3', '--margin', '1', '--json');
    expect(retrain.code, retrain.stderr).toBe(0);
    const defaults = retrainOutputSchema.parse(JSON.parse(retrain.stdout));

    const tune = await cli('tune', '--trials', '8', '--parallel', '2', '--epochs', '3', '--margin', '1', '--json');
    expect(tune.code, tune.stderr).toBe(0);
    expect(tune.stderr).toMatch(/trial 1 starts: hidden=512 learningRate=0.001 temperature=0.1 imageTextWeight=1 batchSize=256/);
    // Progress per epoch while a trial runs (a 60k trial is 25 minutes).
    expect(tune.stderr).toMatch(/trial 1 epoch 1: loss \d+\.\d{4}, validation recall@1 (\d\.\d{4}|–) \(\d+\.\d s\)/);
    const result = tuneOutputSchema.parse(JSON.parse(tune.stdout));
    expect(result.runs).toHaveLength(8);
    // Trial 1 trains with retrain's defaults on the same data, seed and split: the same model.
    const first = result.runs[0]!;
    expect(first.status).toBe('completed');
    expect(first.heldOut!.imageToImage).toEqual(defaults.candidate.metrics.imageToImage);
    expect(first.heldOut!.textToImage).toEqual(defaults.candidate.metrics.textToImage);
    // The winner ranks first on validation recall@1 among finished trials.
    const finished = result.runs.filter((r) => r.status === 'completed');
    const best = result.runs.find((r) => r.id === result.best)!;
    expect(Math.max(...finished.map((r) => r.objective!.value))).toBe(best.objective!.value);
    // Margin 1 cannot be met: the gate refuses, nothing is promoted, the base model stays active.
    expect(result).toMatchObject({ promoted: false, index: null, decision: { promote: false } });
    expect(result.decision!.reasons[0]).toMatch(/< margin 1/);
    const models = modelListOutputSchema.parse(JSON.parse((await cli('model', 'list', '--json')).stdout)).versions;
    expect(models.filter((v) => v.active).map((v) => v.version)).toEqual([defaults.current.version]);
    // Of the trials' candidates only the winner's stays registered (beside retrain's candidate).
    expect(models.map((v) => v.version)).toContain(best.modelVersion);
    expect(models.filter((v) => v.version.includes(result.study))).toHaveLength(1);

    const listed = runsListOutputSchema.parse(JSON.parse((await cli('runs', 'list', '--json')).stdout)).runs;
    expect(listed).toHaveLength(8);
    for (const run of listed) {
      expect(Object.keys(run.params).sort()).toEqual(['batchSize', 'hidden', 'imageTextWeight', 'learningRate', 'temperature']);
      expect(run.curve.length, run.id).toBeGreaterThan(0);
      expect(run.dataSnapshot).toMatch(new RegExp(`^${IMAGES}:`));
      expect(run.seconds).toBeGreaterThan(0);
      if (run.status === 'completed') expect(run.heldOut!.imageToImage['recall@1']).toBeGreaterThanOrEqual(0);
      else expect(run.status).toBe('stopped');
    }
    const shown = await cli('runs', 'show', best.id, '--json');
    expect(shown.code, shown.stderr).toBe(0);
    expect(runShowOutputSchema.parse(JSON.parse(shown.stdout))).toMatchObject({ id: best.id, params: best.params, heldOut: best.heldOut });
    const human = await cli('runs', 'show', best.id);
    expect(human.stdout).toMatch(/gate {8}refuse/);
    expect(human.stdout).toMatch(/curve {7}\S+ {2}\(\d+ epochs\)/);
  }, 600_000);
});

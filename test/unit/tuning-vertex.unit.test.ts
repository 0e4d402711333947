import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { VertexTuningLauncher } from '../../shared/adapters/gcp/vertex-tuning-launcher.js';
import type { ModelRegistry } from '../../shared/ports/model-registry.js';
import { BlobExperimentRunStore, type ExperimentRun } from '../../shared/services/experiment-runs.js';
import {
  DEFAULT_SEARCH_SPACE,
  HypertuneReporter,
  HYPERTUNE_METRIC,
  parseSearchSpace,
  parseTuningJobArgs,
  runVertexStudy,
  vertexStudySpec,
  type TuningJobLauncher,
} from '../../shared/services/tuning.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * The Vertex AI side of tuning, against Google's documented contract ("Create a hyperparameter
 * tuning job", cloud.google.com/vertex-ai/docs/training/using-hyperparameter-tuning): parameters
 * arrive as `--name=value` arguments, metrics are JSON lines in CLOUD_ML_HP_METRIC_FILE (default
 * /tmp/hypertune/output.metrics) in the cloudml-hypertune library's format; the aiplatform v1
 * HyperparameterTuningJob resource (studySpec, maxTrialCount, parallelTrialCount, trialJobSpec).
 */
describe('cloudml-hypertune reporting', () => {
  let dir: string;
  beforeEach(async () => (dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hypertune-'))));
  afterEach(async () => fs.rm(dir, { recursive: true, force: true }));

  it('writes what the Python library writes: JSON lines, values as strings, keys sorted, the trial id', async () => {
    const file = path.join(dir, 'nested', 'output.metrics');
    const reporter = new HypertuneReporter({ CLOUD_ML_HP_METRIC_FILE: file, CLOUD_ML_TRIAL_ID: '3' }, () => 1700000000.5);
    await reporter.report(HYPERTUNE_METRIC, 0.81, 1);
    await reporter.report(HYPERTUNE_METRIC, 0.845, 2);
    const lines = (await fs.readFile(file, 'utf8')).trimEnd().split('\n');
    expect(lines).toEqual([
      '{"global_step":"1","timestamp":1700000000.5,"trial":"3","validation_recall_at_1":"0.81"}',
      '{"global_step":"2","timestamp":1700000000.5,"trial":"3","validation_recall_at_1":"0.845"}',
    ]);
  });

  it('defaults to /tmp/hypertune/output.metrics and trial 0', () => {
    const reporter = new HypertuneReporter({});
    expect(reporter.file).toBe('/tmp/hypertune/output.metrics');
    expect(reporter.trial).toBe('0');
  });
});

describe('search space → Vertex AI study', () => {
  it('keeps scales, turns numeric choices into discrete values and others into categories', () => {
    const space = parseSearchSpace({
      hidden: { type: 'int', min: 128, max: 1024, log: true },
      imageTextWeight: { type: 'float', min: 0.25, max: 2 },
      batchSize: { type: 'categorical', values: [512, 128, 256] },
      learnableTemperature: { type: 'categorical', values: [true, false] },
    });
    expect(vertexStudySpec(space)).toEqual({
      metrics: [{ metricId: 'validation_recall_at_1', goal: 'MAXIMIZE' }],
      parameters: [
        { parameterId: 'hidden', scaleType: 'UNIT_LOG_SCALE', integerValueSpec: { minValue: '128', maxValue: '1024' } },
        { parameterId: 'imageTextWeight', scaleType: 'UNIT_LINEAR_SCALE', doubleValueSpec: { minValue: 0.25, maxValue: 2 } },
        { parameterId: 'batchSize', discreteValueSpec: { values: [128, 256, 512] } },
        { parameterId: 'learnableTemperature', categoricalValueSpec: { values: ['true', 'false'] } },
      ],
      algorithm: 'ALGORITHM_UNSPECIFIED',
      measurementSelectionType: 'LAST_MEASUREMENT',
      medianAutomatedStoppingSpec: { useElapsedDuration: false },
    });
  });
});

describe('jobs/retrain tuning arguments', () => {
  const space = { hidden: { type: 'int', min: 128, max: 1024 }, learnableTemperature: { type: 'categorical', values: [true, false] } };

  it('reads a trial: the study flags, then the parameters Vertex AI appends, typed by the space', () => {
    const args = ['--trial-of=tune-20261127030000-a1b2c3', '--seed=7', '--margin=0.005', '--held-out=0.1', `--space=${JSON.stringify(space)}`];
    expect(parseTuningJobArgs([...args, '--hidden=300', '--learnableTemperature=false'])).toMatchObject({
      mode: 'trial',
      study: 'tune-20261127030000-a1b2c3',
      params: { hidden: 300, learnableTemperature: false },
      seed: 7,
      heldOutFraction: 0.1,
    });
    expect(() => parseTuningJobArgs([...args, '--hidden=3000', '--learnableTemperature=false'])).toThrow(/--hidden=3000 is outside 128..1024/);
    expect(() => parseTuningJobArgs([...args, '--hidden=300'])).toThrow(/miss --learnableTemperature/);
    expect(() => parseTuningJobArgs([...args, '--hidden=300', '--learnableTemperature=false', '--hiden=2'])).toThrow(/--hiden is not in the search space/);
  });

  it('reads a study with defaults, and is null for a plain retraining', () => {
    expect(parseTuningJobArgs(['--tune=true'])).toEqual({
      mode: 'study',
      trials: 8,
      parallel: 2,
      algorithm: 'ALGORITHM_UNSPECIFIED',
      space: DEFAULT_SEARCH_SPACE,
      seed: 42,
      margin: 0.005,
      heldOutFraction: 0.1,
    });
    expect(parseTuningJobArgs(['--epochs=8', '--hidden=1024'])).toBeNull();
    expect(() => parseTuningJobArgs(['--tune=true', '--trials=0'])).toThrow(/trials must be at least 1/);
    expect(() => parseTuningJobArgs(['--tune=true', '--epochs=3'])).toThrow(/epochs/);
    expect(() => parseTuningJobArgs(['--tune=true', '--space={"hidden":'])).toThrow(/--space is not JSON/);
    // Adapting the tower needs block activations the cloud feature shards do not keep: refused, naming the local way.
    for (const key of ['regionGrid', 'unlockBlocks']) {
      const local = JSON.stringify({ [key]: { type: 'categorical', values: [0, 2] } });
      expect(() => parseTuningJobArgs(['--tune=true', `--space=${local}`])).toThrow(
        new RegExp(`${key} cannot be searched by the cloud tuning job.*imgsearch tune`),
      );
    }
  });
});

describe('VertexTuningLauncher', () => {
  it('creates one tuning job running the trainer image as the trainer account, and waits for it to end', async () => {
    const created: unknown[] = [];
    const states = ['JOB_STATE_RUNNING', 'JOB_STATE_SUCCEEDED'];
    const client = {
      createHyperparameterTuningJob: async (req: unknown) => {
        created.push(req);
        return [{ name: 'projects/p/locations/europe-west1/hyperparameterTuningJobs/42', state: 'JOB_STATE_PENDING' }];
      },
      getHyperparameterTuningJob: async () => [{ name: 'projects/p/locations/europe-west1/hyperparameterTuningJobs/42', state: states.shift() }],
    };
    const launcher = new VertexTuningLauncher({
      client: client as never,
      projectId: 'p',
      region: 'europe-west1',
      trial: {
        imageUri: 'europe-docker.pkg.dev/p/r/trainer:1',
        machineType: 'n1-standard-8',
        serviceAccount: 'trainer@p.iam.gserviceaccount.com',
        env: { MODELS_BUCKET: 'm' },
      },
      sleep: async () => {},
    });
    const result = await launcher.run({
      displayName: 'tune-x',
      studySpec: vertexStudySpec(DEFAULT_SEARCH_SPACE),
      maxTrialCount: 8,
      parallelTrialCount: 2,
      trialArgs: ['--trial-of=tune-x'],
    });
    expect(result).toEqual({ name: 'projects/p/locations/europe-west1/hyperparameterTuningJobs/42', state: 'succeeded' });
    expect(created).toEqual([
      {
        parent: 'projects/p/locations/europe-west1',
        hyperparameterTuningJob: expect.objectContaining({
          displayName: 'tune-x',
          maxTrialCount: 8,
          parallelTrialCount: 2,
          maxFailedTrialCount: 4,
          trialJobSpec: {
            serviceAccount: 'trainer@p.iam.gserviceaccount.com',
            workerPoolSpecs: [
              {
                machineSpec: { machineType: 'n1-standard-8' },
                replicaCount: 1,
                containerSpec: { imageUri: 'europe-docker.pkg.dev/p/r/trainer:1', args: ['--trial-of=tune-x'], env: [{ name: 'MODELS_BUCKET', value: 'm' }] },
              },
            ],
          },
        }),
      },
    ]);
  });
});

describe('runVertexStudy', () => {
  let dir: string;
  beforeEach(async () => (dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vertex-study-'))));
  afterEach(async () => fs.rm(dir, { recursive: true, force: true }));

  it('promotes the best trial the runs record only through its gate, and marks trials Vertex AI ended as stopped', async () => {
    const runs = new BlobExperimentRunStore(new FolderBlobStore(dir), 'runs/');
    const removed: string[] = [];
    const activated: string[] = [];
    const registry = strict<ModelRegistry>('registry', { remove: async (v: string) => void removed.push(v) });
    // The fake job "runs" three trials by writing their runs, as jobs/retrain --trial-of would.
    const launcher: TuningJobLauncher = {
      async run(request) {
        const study = request.displayName;
        const run = (trial: number, value: number | null, promote: boolean): ExperimentRun => ({
          id: `${study}-t${trial}`,
          study,
          trial,
          status: value === null ? 'running' : 'completed',
          params: { hidden: 128 * trial },
          curve: [],
          objective: value === null ? null : { name: 'validation recall@1', value },
          heldOut: null,
          gate: value === null ? null : { promote, reasons: [promote ? 'beats' : 'below margin'], deltas: { 'recall@1': 0.01, 'precision@10': null } },
          modelVersion: value === null ? null : `m-${study}-t${trial}`,
          promoted: false,
          dataSnapshot: '10:abc',
          parentModel: 'base-1',
          seed: 42,
          startedAt: `2026-11-27T03:00:0${trial}.000Z`,
          finishedAt: null,
          seconds: null,
          reason: null,
        });
        expect(request.trialArgs[0]).toBe(`--trial-of=${study}`);
        await runs.put(run(1, 0.8, true));
        await runs.put(run(2, 0.85, false));
        await runs.put(run(3, null, false));
        return { name: 'jobs/1', state: 'succeeded' };
      },
    };
    const result = await runVertexStudy(
      { launcher, registry, runs, activate: async (v: string) => void activated.push(v) },
      { space: DEFAULT_SEARCH_SPACE, trials: 3, parallel: 2, seed: 42, margin: 0.005, heldOutFraction: 0.1 },
    );
    // Trial 2 has the best validation recall but its gate refused: nothing is promoted.
    expect(result.best!.trial).toBe(2);
    expect(activated).toEqual([]);
    expect(removed).toEqual([`m-${result.study}-t1`]);
    const stored = await runs.list();
    expect(stored.map((r) => r.status)).toEqual(['completed', 'completed', 'stopped']);
    expect(stored[2]!.reason).toMatch(/ended by Vertex AI/);
  });
});

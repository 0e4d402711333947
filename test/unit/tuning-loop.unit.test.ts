import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { ParseError } from '../../shared/errors.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import { BlobExperimentRunStore } from '../../shared/services/experiment-runs.js';
import { SnapshotFeatureStore, TrialStoppedError, parseSearchSpace, tune, type TrialRunner, type TrialSpec } from '../../shared/services/tuning.js';
import { gateDecision } from '../../shared/training/gate.js';
import type { EpochStats } from '../../shared/training/lit-trainer.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * The trial loop with a scripted runner (the port a trial runs through): what it records, which
 * trial wins, what the stopping rule ends, and that promotion happens only when the gate — the
 * real gateDecision, as retrain() applies it — says so. Real trials: tuning-flow.integration.
 */
const ACTIVE: ModelVersion = {
  version: 'base-1',
  parent: null,
  createdAt: '2026-11-27T00:00:00.000Z',
  manifest: { name: 'base', version: 'base-1', image: { dimension: 2 } } as unknown as ModelVersion['manifest'],
  metrics: null,
  lineage: {},
  active: true,
};
const CURRENT_METRICS = metrics('base-1', 0.8);
const RECORDS = [{ id: 'a', uri: 'file:///a', generation: '1', baseModel: 'base', vector: new Float32Array([1, 0]), labels: ['x'] }];

function metrics(version: string, recall: number) {
  return {
    modelVersion: version,
    imageToImage: { 'recall@1': recall, 'recall@5': recall, 'recall@10': recall, 'mAP@10': recall },
    textToImage: null,
    counts: { queries: 10, answerableQueries: 10, corpus: 90, textQueries: 0 },
  };
}

const epoch = (n: number, v: number): EpochStats => ({
  epoch: n,
  loss: 1 / n,
  imageImageLoss: 0.5 / n,
  imageTextLoss: 0.5 / n,
  validationRecallAt1: v,
  temperature: 0.1,
  seconds: 0.01,
});

/**
 * A trial's curve is a function of its `hidden` (the only searched option here): validation peaks
 * at `hidden / 1000`; held-out recall@1 is `heldOut(hidden)`, deliberately ranked differently so a
 * test can tell which split chose the winner.
 */
function scriptedRunner(heldOut: (hidden: number) => number, log: TrialSpec[] = []): TrialRunner {
  return {
    async run(spec, hooks) {
      log.push(spec);
      const hidden = Number(spec.params.hidden);
      const history: EpochStats[] = [];
      for (let e = 1; e <= 5; e++) {
        const stats = epoch(e, (hidden / 1000) * (0.6 + 0.1 * e));
        history.push(stats);
        hooks.onEpoch(stats);
        if (hooks.shouldStop()) throw new TrialStoppedError(e);
      }
      const candidate = metrics(spec.version, heldOut(hidden));
      return {
        promoted: false,
        decision: gateDecision(candidate, CURRENT_METRICS, { margin: spec.options.margin ?? 0.005 }),
        candidate: {
          version: spec.version,
          metrics: candidate,
          training: { history, bestEpoch: 5, seconds: 0.05, backend: 'scripted', trainedExamples: 90, validationExamples: 10, hidden },
        },
        current: { version: 'base-1', metrics: CURRENT_METRICS },
      };
    },
  };
}

describe('tune: the trial loop', () => {
  let dir: string;
  let runs: BlobExperimentRunStore;
  let removed: string[];
  let activated: string[];
  let registry: ModelRegistry;

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tuning-loop-'));
    runs = new BlobExperimentRunStore(new FolderBlobStore(dir));
    removed = [];
    activated = [];
    registry = strict<ModelRegistry>('registry', {
      active: async () => ACTIVE,
      remove: async (v: string) => void removed.push(v),
    });
  });
  afterEach(async () => fs.rm(dir, { recursive: true, force: true }));

  const deps = (runner: TrialRunner) => ({
    features: new SnapshotFeatureStore(RECORDS),
    registry,
    runs,
    runner: () => runner,
    activate: async (version: string) => {
      activated.push(version);
      return { index: `images-${version}` };
    },
    cores: 2,
  });
  const SPACE = parseSearchSpace({ hidden: { type: 'categorical', values: [100, 300, 500, 700, 900] } });

  it('records every trial with its parameters, curve and metrics, and keeps only the winner registered', async () => {
    const log: TrialSpec[] = [];
    const result = await tune(deps(scriptedRunner(() => 0.9, log)), { trials: 6, space: SPACE, stopping: 'none', sampler: 'random', seed: 3 });
    const stored = await runs.list();
    expect(stored).toHaveLength(6);
    expect(stored.map((r) => r.trial)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const r of stored) {
      expect(r).toMatchObject({ study: result.study, status: 'completed', parentModel: 'base-1', seed: 3, dataSnapshot: expect.stringMatching(/^1:/) });
      expect(r.curve).toHaveLength(5);
      expect(r.heldOut!.imageToImage['recall@1']).toBe(0.9);
      expect(r.params.hidden).toBe(log.find((s) => s.trial === r.trial)!.params.hidden);
      expect(r.seconds).toBeGreaterThanOrEqual(0);
    }
    // Every trial trains with the searched option under `training` and the shared seed and margin.
    expect(log[0]!.options).toMatchObject({ seed: 3, margin: 0.005, heldOutFraction: 0.1, training: { hidden: expect.any(Number) } });
    const best = stored.find((r) => r.modelVersion !== null)!;
    expect(removed.sort()).toEqual(
      stored
        .filter((r) => r.id !== best.id)
        .map((r) => log.find((s) => s.trial === r.trial)!.version)
        .sort(),
    );
    expect(stored.filter((r) => r.modelVersion !== null)).toHaveLength(1);
  });

  it('saves a running trial’s curve after every epoch, and a failed save neither fails the trial nor lands after its final record', async () => {
    const seen: number[] = [];
    const base = scriptedRunner(() => 0.9);
    // Before each next epoch the runner waits for what `imgsearch runs show` would read (≤ 2 s).
    const watching: TrialRunner = {
      run: (spec, hooks) => {
        const pending: Array<Promise<void>> = [];
        return base
          .run(spec, {
            ...hooks,
            onEpoch: (stats) => {
              hooks.onEpoch(stats);
              pending.push(
                (async () => {
                  for (let waited = 0; waited < 2000; waited += 10) {
                    const stored = (await runs.list()).find((r) => r.trial === spec.trial);
                    if (stored?.status === 'running' && stored.curve.length >= stats.epoch) {
                      seen.push(stored.curve.length);
                      return;
                    }
                    await new Promise((r) => setTimeout(r, 10));
                  }
                  seen.push(-1);
                })(),
              );
            },
          })
          .then(async (result) => {
            await Promise.all(pending); // the trial ends only after every epoch's save was seen
            return result;
          });
      },
    };
    await tune(deps(watching), { trials: 1, space: SPACE, stopping: 'none', sampler: 'random', seed: 3 });
    // Each epoch's save is readable before the trial ends: a running record with at least that epoch.
    expect(seen.map((n, i) => n >= i + 1)).toEqual([true, true, true, true, true]);

    // A store that refuses the progress saves: the trial completes and its final record is the one kept.
    const refusing = new BlobExperimentRunStore(new FolderBlobStore(dir));
    const put = refusing.put.bind(refusing);
    refusing.put = async (run) => {
      if (run.status === 'running' && run.curve.length > 0) throw new Error('disk full');
      await put(run);
    };
    const result = await tune(
      { ...deps(scriptedRunner(() => 0.9)), runs: refusing },
      { trials: 1, space: SPACE, stopping: 'none', sampler: 'random', seed: 4 },
    );
    const final = (await refusing.get(result.runs[0]!.id))!;
    expect(final).toMatchObject({ status: 'completed' });
    expect(final.curve).toHaveLength(5);
  });

  it('picks the best validation recall@1, not the best held-out figure', async () => {
    // Held-out is best for the smallest head; validation for the largest.
    const result = await tune(deps(scriptedRunner((h) => 1 - h / 2000)), { trials: 8, space: SPACE, stopping: 'none', sampler: 'random', seed: 5 });
    const hiddens = result.runs.map((r) => Number(r.params.hidden));
    expect(Number(result.best!.params.hidden)).toBe(Math.max(...hiddens));
  });

  it('promotes the winner through the activation only when the gate lets it', async () => {
    const result = await tune(deps(scriptedRunner(() => 0.9)), { trials: 3, space: SPACE, stopping: 'none', seed: 1, margin: 0.05 });
    expect(result.decision!.promote).toBe(true);
    expect(result.promoted).toBe(true);
    expect(activated).toEqual([result.best!.modelVersion]);
    expect((await runs.get(result.best!.id))!.promoted).toBe(true);
  });

  it('promotes nothing when the gate refuses the winner', async () => {
    // Held-out 0.802 vs the active model's 0.8: a gain of 0.002 under the 0.005 margin.
    const result = await tune(deps(scriptedRunner(() => 0.802)), { trials: 3, space: SPACE, stopping: 'none', seed: 1 });
    expect(result.decision!.promote).toBe(false);
    expect(result.decision!.reasons[0]).toMatch(/gain 0\.0020 < margin 0\.005/);
    expect(result.promoted).toBe(false);
    expect(activated).toEqual([]);
    expect((await runs.list()).every((r) => !r.promoted)).toBe(true);
  });

  it('stops trials whose validation falls below the median of finished ones, and records why', async () => {
    // Trial 1 runs the defaults (not in this space, so sampled); the values are ordered so the
    // small heads come after three larger ones have finished.
    const ordered = parseSearchSpace({ hidden: { type: 'categorical', values: [900] } });
    const runner = scriptedRunner(() => 0.9);
    const first = await tune(deps(runner), { trials: 3, space: ordered, stopping: 'median', graceEpochs: 2, minTrials: 3, seed: 1 });
    expect(first.runs.every((r) => r.status === 'completed')).toBe(true);
    // Same store: a second study cannot see the first one's curves; within a study, a poor trial stops.
    const mixed = parseSearchSpace({ hidden: { type: 'categorical', values: [900, 100] } });
    const result = await tune(deps(runner), { trials: 10, space: mixed, stopping: 'median', graceEpochs: 2, minTrials: 3, sampler: 'random', seed: 4 });
    const stopped = result.runs.filter((r) => r.status === 'stopped');
    const finishedLarge = result.runs.filter((r) => r.status === 'completed' && r.params.hidden === 900);
    expect(stopped.length).toBeGreaterThan(0);
    for (const r of stopped) {
      expect(r.params.hidden).toBe(100);
      expect(r.curve).toHaveLength(2);
      expect(r.reason).toMatch(/< median .* at epoch 2 of \d+ finished trials/);
      expect(r.heldOut).toBeNull();
      expect(r.modelVersion).toBeNull();
    }
    expect(finishedLarge.length).toBeGreaterThanOrEqual(3);
  });

  it('refuses more parallel trials than cores, and bad options, before any trial runs', async () => {
    const log: TrialSpec[] = [];
    await expect(tune(deps(scriptedRunner(() => 0.9, log)), { trials: 4, parallel: 3 })).rejects.toThrow(/parallel 3 exceeds the 2 cores/);
    await expect(tune(deps(scriptedRunner(() => 0.9, log)), { trials: 0 })).rejects.toThrow(ParseError);
    expect(log).toEqual([]);
    expect(await runs.list()).toEqual([]);
  });

  it('runs up to `parallel` trials at once', async () => {
    let inFlight = 0;
    let most = 0;
    let release: () => void = () => {};
    const two = new Promise<void>((r) => (release = r));
    const inner = scriptedRunner(() => 0.9);
    const runner: TrialRunner = {
      async run(spec, hooks) {
        inFlight++;
        most = Math.max(most, inFlight);
        if (inFlight === 2) release();
        // The first trial waits for a second to start (run one at a time, it would wait 300 ms in vain).
        await Promise.race([two, new Promise((r) => setTimeout(r, 300))]);
        try {
          return await inner.run(spec, hooks);
        } finally {
          inFlight--;
        }
      },
    };
    await tune(deps(runner), { trials: 5, parallel: 2, space: SPACE, stopping: 'none' });
    expect(most).toBe(2);
    expect(await runs.list()).toHaveLength(5);
  });

  it('stops at the first data problem instead of repeating it in every trial', async () => {
    let calls = 0;
    const runner: TrialRunner = {
      async run() {
        calls++;
        throw new ParseError('Retraining needs labelled images: 1 feature records, 0 labels, 0 held out for evaluation');
      },
    };
    await expect(tune(deps(runner), { trials: 5, space: SPACE })).rejects.toThrow(/needs labelled images/);
    expect(calls).toBe(1);
    expect((await runs.list()).map((r) => r.status)).toEqual(['failed']);
  });

  it('gives every trial the same snapshot to read, and passes its writes (a tuned tower’s vectors) to the real store', async () => {
    const written: string[] = [];
    const snapshot = new SnapshotFeatureStore(RECORDS, { put: async (rs) => void written.push(...rs.map((r) => r.id)), delete: async () => {} });
    await snapshot.put([{ ...RECORDS[0]!, id: 'tuned-a', baseModel: 'base-tune-t1' }]);
    expect(written).toEqual(['tuned-a']);
    expect(await snapshot.count()).toBe(1);
    await expect(new SnapshotFeatureStore(RECORDS).put([])).rejects.toThrow(/read-only/);
  });
});

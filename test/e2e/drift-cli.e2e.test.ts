import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { silentLogger } from '../../shared/logger.js';
import { driftOutputSchema, statusOutputSchema } from '../../shared/output-schemas.js';
import { buildDriftProfile, DRIFT_PROFILE_FILE, runDriftCheck } from '../../shared/services/drift.js';
import { localDriftDeps, openLocalRuntime } from '../../shared/wiring/local.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';
import { l2Normalise } from '../../shared/vector-math.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { fmPixelsManifest, fmPixelsRecord } from '../helpers/fm-pixels.js';

/**
 * `imgsearch drift` as a user runs it, on a data directory whose active model has a profile built
 * on Fashion-MNIST (pixels as the stored base embedding) and where one class then flooded in.
 */
describe('imgsearch drift', () => {
  let work: string;
  const home = () => path.join(work, 'home');
  const manifest = fmPixelsManifest;

  beforeAll(async () => {
    work = await tempDir('drift-cli');
    const fm = await readFashionMnist({ split: 'train', limit: 4000 });
    const order = shuffledIndices(fm.images.length, mulberry32(9));
    const rec = (i: number, generation: number): FeatureRecord => fmPixelsRecord(i, fm.images[i]!, fm.classNames[fm.labels[i]!]!, generation);
    const reference = Array.from(order.subarray(0, 1500), (i, k) => rec(i, 1_000 + k));
    const sneakers = Array.from(order.subarray(1500))
      .filter((i) => fm.labels[i] === 7)
      .slice(0, 250)
      .map((i, k) => rec(i, 100_000 + k));
    const registry = new LocalModelRegistry(path.join(home(), 'models'));
    await registry.register({
      version: manifest.version,
      parent: null,
      manifest,
      files: { 'image.onnx': Buffer.from('not run'), [DRIFT_PROFILE_FILE]: Buffer.from(JSON.stringify(buildDriftProfile(manifest.version, reference))) },
      metrics: { imageToImage: { 'recall@1': 0.8 } },
    });
    await registry.promote(manifest.version);
    const features = await PerTowerFeatureStore.open(path.join(home(), 'features'));
    await features.put([...reference, ...sneakers]);
  }, 60_000);
  afterAll(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  const env = () => ({ IMGSEARCH_HOME: home(), IMGSEARCH_DRIFT_RECENT: '250' });

  it('--json: the report with its statistics and the decision to retrain, with the reason', async () => {
    const r = await runCli(['drift', '--json'], { cwd: work, env: env() });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = driftOutputSchema.parse(JSON.parse(r.stdout));
    expect(out.modelVersion).toBe('fm-pixels-1');
    expect(out.signals!.uploads).toMatchObject({ sample: 250, status: 'drift' });
    expect(out.signals!.uploads.psi!.max).toBeGreaterThan(4 * out.settings.psiThreshold);
    expect(out.signals!.queries).toMatchObject({ sample: 0, status: 'insufficient' });
    expect(out.signals!.servedQueries).toMatchObject({ sample: 0, status: 'insufficient' });
    expect(out.servedReference).toBeNull();
    expect(out.recall).toMatchObject({ newLabelled: 250, recorded: 0.8 });
    expect(out.decision.retrain).toBe(true);
    expect(out.decision.reasons[0]).toMatch(/^drift \(uploads: PSI/);
    // `drift` reports; it requests nothing (that is `up`'s check).
    expect(out.requests).toEqual([]);
    expect(out.lastCheck).toBeNull();
  }, 60_000);

  it('prints a readable report; the thresholds come from IMGSEARCH_DRIFT_*', async () => {
    const r = await runCli(['drift'], { cwd: work, env: { ...env(), IMGSEARCH_DRIFT_MIN_NEW_LABELLED: '100000' } });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/uploads\s+250 vectors: DRIFT — max PSI \d+\.\d{3} \(major; threshold 0\.25\)/);
    expect(r.stdout).toMatch(/queries \(vs training, reported only\) 0 vectors: too few to judge/);
    expect(r.stdout).toMatch(/served-query reference: not yet \(made from the model's first 500 sampled queries, IMGSEARCH_DRIFT_SERVED_BASELINE\)/);
    // Drift, but fewer new labelled images than required: no retraining.
    expect(r.stdout).toMatch(/decision: no retraining needed/);
  }, 60_000);

  it("a check `up` ran (its local wiring) is shown, with the request's reasons, by `drift` and `status`", async () => {
    // Its own copy of the data directory: the other tests see no check recorded, whatever the order.
    const own = path.join(work, 'home-checked');
    await fs.cp(home(), own, { recursive: true });
    const ownEnv = { ...env(), IMGSEARCH_HOME: own };
    const config = configFromEnv(parseEnv({ ...ownEnv, LOG_LEVEL: 'silent' }), work);
    const runtime = await openLocalRuntime(config, { logger: silentLogger });
    const requested: string[] = [];
    try {
      const report = await runDriftCheck({ ...localDriftDeps(runtime), requestRetrain: async (reason) => void requested.push(reason) }, config.drift.settings);
      expect(report.decision.retrain).toBe(true);
    } finally {
      await runtime.close();
    }
    expect(requested).toHaveLength(1);
    const drift = driftOutputSchema.parse(JSON.parse((await runCli(['drift', '--json'], { cwd: work, env: ownEnv })).stdout));
    expect(drift.requests).toMatchObject([{ modelVersion: 'fm-pixels-1', outcome: 'requested', reasons: [requested[0]] }]);
    expect(drift.lastCheck?.decision.retrain).toBe(true);
    // Checked again now: the cooldown holds a second request back.
    expect(drift.decision).toMatchObject({ retrain: false, heldBack: expect.stringMatching(/^cooldown/) });

    const status = statusOutputSchema.parse(JSON.parse((await runCli(['status', '--json'], { cwd: work, env: ownEnv })).stdout));
    expect(status.drift?.lastRequest).toMatchObject({ outcome: 'requested', reasons: [requested[0]] });
    const text = await runCli(['status'], { cwd: work, env: ownEnv });
    expect(text.stdout).toMatch(/drift {6}last check .*: retraining requested\n {2}last retraining request .* \(requested\): drift \(uploads: PSI/);
  }, 120_000);

  it('compares the queries served after the served-query reference with it (the sample `up` keeps)', async () => {
    const own = path.join(work, 'home-queries');
    await fs.cp(home(), own, { recursive: true });
    // What `up`'s search service kept (shared/adapters/local/query-sample-file.ts): 500 queries of
    // every class, one a second, then 250 for sneakers only — vectors in the model's search space (its base vectors: no head).
    const fm = await readFashionMnist({ split: 'test', limit: 4000 });
    const vector = (i: number) => Buffer.from(l2Normalise(Float32Array.from(fm.images[i]!, (p) => p / 255)).buffer).toString('base64');
    const mixed = Array.from({ length: 500 }, (_, i) => i);
    const sneakers = Array.from({ length: fm.images.length }, (_, i) => i)
      .filter((i) => i >= 500 && fm.labels[i] === 7)
      .slice(0, 250);
    expect(sneakers).toHaveLength(250);
    const t0 = Date.parse('2026-11-28T08:00:00.000Z');
    const entries = [...mixed, ...sneakers].map((i, k) => ({ modelVersion: 'fm-pixels-1', at: t0 + k * 1000, vector: vector(i) }));
    await fs.mkdir(path.join(own, 'drift'), { recursive: true });
    await fs.writeFile(path.join(own, 'drift', 'queries.json'), JSON.stringify({ entries }));

    const r = await runCli(['drift', '--json'], { cwd: work, env: { ...env(), IMGSEARCH_HOME: own } });
    expect(r.code).toBe(0);
    const out = driftOutputSchema.parse(JSON.parse(r.stdout));
    expect(out.servedReference).toMatchObject({ count: 500, from: '2026-11-28T08:00:00.000Z', until: '2026-11-28T08:08:19.000Z', kept: false });
    expect(out.signals!.queries.sample).toBe(750);
    expect(out.signals!.servedQueries).toMatchObject({ sample: 250, status: 'drift' });
    expect(out.signals!.servedQueries.psi!.max).toBeGreaterThan(4 * out.settings.psiThreshold);
    expect(out.decision.reasons[0]).toMatch(/queries since the served reference: PSI \d+\.\d{3} on component \d/);
    const text = await runCli(['drift'], { cwd: work, env: { ...env(), IMGSEARCH_HOME: own } });
    expect(text.stdout).toMatch(/served-query reference: the model's first 500 sampled queries \(2026-11-28T08:00:00\.000Z … 2026-11-28T08:08:19\.000Z\)/);
    expect(text.stdout).toMatch(/queries since the served reference 250 vectors: DRIFT — max PSI/);
  }, 60_000);

  it('refuses a bad threshold with the variable and its fix', async () => {
    const r = await runCli(['drift'], { cwd: work, env: { ...env(), IMGSEARCH_DRIFT_KS: '2' } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/IMGSEARCH_DRIFT_KS.*IMGSEARCH_DRIFT_KS=0\.2/);
  }, 60_000);
});

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { FileQueryVectorSample } from '../../shared/adapters/local/query-sample-file.js';
import { readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import {
  BlobDriftStateStore,
  DRIFT_PROFILE_FILE,
  inspectDrift,
  readDriftProfile,
  runDriftCheck,
  type DriftReport,
  type QueryVectorSource,
  type SampledQuery,
} from '../../shared/services/drift.js';
import { registeredTowers, retrain } from '../../shared/services/retrain.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';
import { tempDir } from '../helpers/cli.js';
import { fmPixelsManifest, fmPixelsRecord } from '../helpers/fm-pixels.js';

/**
 * Drift end to end on real data and the real local adapters: a model retrained (the real trainer)
 * on one seeded sample of Fashion-MNIST saves its reference profile in the registry; then
 *  - a different seeded sample of the same size from the same distribution is ingested: not flagged,
 *    no retraining requested;
 *  - one class (Bag) floods in instead: flagged, a retraining requested with its reason, recorded;
 *    a second check at once is held back by the cooldown.
 * The base embeddings are the images' pixels (a real image representation: exact cosine on them
 * finds the same class 86% of the time, docs FACTS) stored as the feature store holds a tower's
 * output, so the test needs no image decoding; the image tower itself is never run here.
 */
const POOL = 6000;
const REFERENCE = 1500;
const NEW = 300;
const SETTINGS = { recentUploads: NEW, minNewLabelled: 200 };
/** Served-query reference size in the query-stream cases; one class alone: TROUSERS as the reference, TROUSERS after. */
const SERVED = 300;
const TROUSERS = 300;

const baseManifest = fmPixelsManifest;

describe('drift check on a retrained model (real trainer, real registry and feature store)', () => {
  let work: string;
  let registry: LocalModelRegistry;
  let reference: FeatureRecord[];
  let unshifted: FeatureRecord[];
  let flooding: FeatureRecord[];
  /** Query streams: every class, and one class (Trouser) alone. */
  let mixedQueries: FeatureRecord[];
  let trouserQueries: FeatureRecord[];
  let trainedVersion: string;

  const record = fmPixelsRecord;

  async function storeWith(name: string, extra: FeatureRecord[]): Promise<PerTowerFeatureStore> {
    const store = await PerTowerFeatureStore.open(path.join(work, name));
    await store.put([...reference, ...extra]);
    return store;
  }

  beforeAll(async () => {
    work = await tempDir('drift-check');
    const fm = await readFashionMnist({ split: 'train', limit: POOL });
    const order = shuffledIndices(POOL, mulberry32(11));
    const all = Array.from(order, (i, rank) => record(i, fm.images[i]!, fm.classNames[fm.labels[i]!]!, rank < REFERENCE ? 1_000_000 + rank : 2_000_000 + rank));
    reference = all.slice(0, REFERENCE);
    unshifted = all.slice(REFERENCE, REFERENCE + NEW);
    flooding = all
      .slice(REFERENCE + NEW)
      .filter((r) => r.labels[0] === 'Bag')
      .slice(0, NEW);
    expect(flooding).toHaveLength(NEW);
    // Queries may be indexed images too: these streams draw on the whole pool, in its shuffled order.
    mixedQueries = all.slice(REFERENCE + NEW, REFERENCE + NEW + 3 * SERVED);
    trouserQueries = all.filter((r) => r.labels[0] === 'Trouser').slice(0, 2 * TROUSERS);
    expect(trouserQueries).toHaveLength(2 * TROUSERS);

    registry = new LocalModelRegistry(path.join(work, 'models'));
    await registry.register({
      version: baseManifest.version,
      parent: null,
      manifest: baseManifest,
      files: { 'image.onnx': Buffer.from('not run in this test') },
    });
    await registry.promote(baseManifest.version);
    const result = await retrain(
      { features: await storeWith('features-train', []), registry },
      { epochs: 4, seed: 3, heldOutFraction: 0.2, margin: 0, training: { hidden: 64, validationFraction: 0 } },
    );
    trainedVersion = result.candidate.version;
    await registry.promote(trainedVersion);
  }, 120_000);

  afterAll(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  const figures = (r: DriftReport) => {
    const u = r.signals!.uploads;
    return `max PSI ${u.psi!.max.toFixed(4)} (${u.psi!.band}), KS D ${u.centroidKs!.d.toFixed(4)}, label PSI ${u.labelPsi?.toFixed(4)}, Recall@1 new ${r.recall?.recallAt1?.toFixed(3)} vs recorded ${r.recall?.recorded?.toFixed(3)}`;
  };

  it('saved a reference profile with the retrained version, keyed on the images it saw', async () => {
    const profile = JSON.parse(await fs.readFile(path.join(await registry.localPath(trainedVersion), DRIFT_PROFILE_FILE), 'utf8')) as {
      modelVersion: string;
      trainingKeys: string[];
      labelled: number;
    };
    expect(profile.modelVersion).toBe(trainedVersion);
    expect(profile.trainingKeys).toHaveLength(REFERENCE);
    // Profiled on the training part (held-out images are left out of training).
    expect(profile.labelled).toBeGreaterThan(REFERENCE * 0.7);
    expect(profile.labelled).toBeLessThan(REFERENCE);
  });

  it('does not flag a different sample of the same distribution, nor request a retraining', async () => {
    const requested: string[] = [];
    const state = new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-unshifted')));
    const report = await runDriftCheck(
      { registry, features: await storeWith('features-unshifted', unshifted), state, requestRetrain: async (reason) => void requested.push(reason) },
      SETTINGS,
    );
    console.log(`unshifted (${NEW} images): ${figures(report)}`);
    expect(report.modelVersion).toBe(trainedVersion);
    expect(report.recall!.newLabelled).toBe(NEW);
    expect(report.signals!.uploads.status).toBe('no-shift');
    expect(report.signals!.uploads.psi!.max).toBeLessThan(report.settings.psiThreshold / 2);
    expect(report.signals!.uploads.labelPsi!).toBeLessThan(report.settings.psiThreshold / 2);
    expect(report.decision).toEqual({ retrain: false, reasons: [] });
    expect(requested).toEqual([]);
    expect((await state.read()).requests).toEqual([]);
  });

  it('flags one class flooding in and requests a retraining with its reason, recorded; the cooldown holds a second one back', async () => {
    const requested: string[] = [];
    const state = new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-shifted')));
    const deps = {
      registry,
      features: await storeWith('features-shifted', flooding),
      state,
      requestRetrain: async (reason: string) => void requested.push(reason),
    };
    const report = await runDriftCheck(deps, SETTINGS);
    console.log(`shifted (${NEW} bags): ${figures(report)}`);
    expect(report.signals!.uploads.status).toBe('drift');
    expect(report.signals!.uploads.psi!.max).toBeGreaterThan(4 * report.settings.psiThreshold);
    expect(report.decision.retrain).toBe(true);
    expect(requested).toHaveLength(1);
    expect(requested[0]).toMatch(/^drift \(uploads: PSI \d+\.\d+ on component \d+ ≥ 0\.25.*\) with 300 new labelled images \(≥ 200\)/);
    const recorded = await state.read();
    expect(recorded.requests).toEqual([{ at: report.checkedAt, modelVersion: trainedVersion, reasons: report.decision.reasons, outcome: 'requested' }]);
    expect(recorded.lastReport?.decision.retrain).toBe(true);

    const again = await runDriftCheck(deps, SETTINGS);
    expect(again.decision.retrain).toBe(false);
    expect(again.decision.heldBack).toMatch(/^cooldown: a retraining was requested/);
    expect(requested).toHaveLength(1);
  });

  it('records a request that failed, with the error, rethrows it, and asks again at the next check (no cooldown)', async () => {
    const state = new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-failed')));
    const features = await storeWith('features-failed', flooding);
    const failing = async () => {
      throw new Error('topic retrain-requests not found');
    };
    await expect(runDriftCheck({ registry, features, state, requestRetrain: failing }, SETTINGS)).rejects.toThrow('topic retrain-requests not found');
    expect((await state.read()).requests).toMatchObject([{ outcome: 'failed', error: 'topic retrain-requests not found', modelVersion: trainedVersion }]);
    const requested: string[] = [];
    const again = await runDriftCheck({ registry, features, state, requestRetrain: async (r) => void requested.push(r) }, SETTINGS);
    expect(again.decision.retrain).toBe(true);
    expect(requested).toHaveLength(1);
    expect((await state.read()).requests.map((r) => r.outcome)).toEqual(['failed', 'requested']);
  });

  it('requests a retraining when Recall@1 on newly labelled images drops, with no drift in the images', async () => {
    // The same distribution of images, but labelled another way: each class under the next class's
    // name (a changed labelling the model never learned), so their nearest neighbours disagree.
    const names = [...new Set(reference.map((r) => r.labels[0]!))].sort();
    const relabelled = unshifted.map((r) => ({ ...r, labels: [names[(names.indexOf(r.labels[0]!) + 1) % names.length]!] }));
    const requested: string[] = [];
    const report = await runDriftCheck(
      {
        registry,
        features: await storeWith('features-relabelled', relabelled),
        state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-relabelled'))),
        requestRetrain: async (reason) => void requested.push(reason),
      },
      { ...SETTINGS, minNewLabelled: 10_000 },
    );
    console.log(`relabelled (${NEW} images): ${figures(report)}`);
    expect(report.signals!.uploads.psi!.max).toBeLessThan(report.settings.psiThreshold / 2);
    expect(report.recall!.drop!).toBeGreaterThan(4 * report.settings.recallDrop);
    expect(requested).toHaveLength(1);
    expect(requested[0]).toMatch(/^Recall@1 on 300 new labelled images 0\.\d{3} is 0\.\d{3} below the recorded 0\.\d{3} \(> 0\.05\)/);
  });

  it('compares recent image queries with the profile: the same distribution passes, one class flags', async () => {
    const sample = new FileQueryVectorSample(path.join(work, 'queries', 'queries.json'), { capacity: NEW });
    const project = (await import('../../shared/services/retrain.js')).registeredTowers;
    const towers = await project(registry, (await registry.get(trainedVersion))!);
    const deps = (features: PerTowerFeatureStore) => ({
      registry,
      features,
      state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-q'))),
      queries: sample,
    });
    try {
      for (const v of await towers.project(unshifted.map((r) => r.vector))) sample.add(trainedVersion, v);
      await sample.flush();
      // Read back by another instance, as `imgsearch drift` reads what `up` kept.
      const reread = new FileQueryVectorSample(path.join(work, 'queries', 'queries.json'), { capacity: NEW });
      const { report: calm } = await inspectDrift({ ...deps(await storeWith('features-q1', [])), queries: reread }, SETTINGS);
      for (const v of await towers.project(flooding.map((r) => r.vector))) sample.add(trainedVersion, v);
      const { report: shifted } = await inspectDrift(deps(await storeWith('features-q2', [])), SETTINGS);
      const q = (r: DriftReport) => r.signals!.queries;
      console.log(`queries: same distribution max PSI ${q(calm).psi!.max.toFixed(4)}; bags max PSI ${q(shifted).psi!.max.toFixed(4)}`);
      expect(q(calm)).toMatchObject({ sample: NEW, status: 'no-shift' });
      expect(q(calm).psi!.max).toBeLessThan(calm.settings.psiThreshold / 2);
      // The capacity keeps the most recent NEW: only bags now.
      expect(q(shifted)).toMatchObject({ sample: NEW, status: 'drift' });
      expect(q(shifted).psi!.max).toBeGreaterThan(4 * shifted.settings.psiThreshold);
    } finally {
      await towers.close();
    }
  });

  describe("the served-query reference (the model's first sampled queries)", () => {
    const T0 = Date.parse('2026-11-28T08:00:00.000Z');
    /** A sample as the search service keeps it: oldest first, one query a second from T0 + offset seconds. */
    async function stream(records: FeatureRecord[], offset = 0): Promise<SampledQuery[]> {
      const towers = await registeredTowers(registry, (await registry.get(trainedVersion))!);
      try {
        return (await towers.project(records.map((r) => r.vector))).map((vector, i) => ({ at: T0 + (offset + i) * 1000, vector }));
      } finally {
        await towers.close();
      }
    }
    const source = (queries: SampledQuery[]): QueryVectorSource => ({ recent: async (v) => (v === trainedVersion ? queries : []) });

    it('does not flag users who only ever search one class (the training profile does), until what they search changes', async () => {
      const trousers = await stream(trouserQueries);
      const settings = { ...SETTINGS, servedBaseline: TROUSERS };
      const { report } = await inspectDrift(
        {
          registry,
          features: await storeWith('features-s1', []),
          state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-s1'))),
          queries: source(trousers),
        },
        settings,
      );
      const { queries, servedQueries } = report.signals!;
      console.log(
        `one class: vs training max PSI ${queries.psi!.max.toFixed(4)}; vs served reference max PSI ${servedQueries.psi!.max.toFixed(4)}, KS D ${servedQueries.centroidKs!.d.toFixed(4)}`,
      );
      expect(report.servedReference).toMatchObject({
        count: TROUSERS,
        from: new Date(T0).toISOString(),
        until: new Date(T0 + (TROUSERS - 1) * 1000).toISOString(),
      });
      expect(queries).toMatchObject({ sample: 2 * TROUSERS, status: 'drift' });
      expect(queries.psi!.max).toBeGreaterThan(4 * report.settings.psiThreshold);
      // Only the queries after the reference are compared with it.
      expect(servedQueries).toMatchObject({ sample: TROUSERS, status: 'no-shift' });
      expect(servedQueries.psi!.max).toBeLessThan(0.6 * report.settings.psiThreshold);

      // Then the same users start searching for bags: the served reference flags it.
      const bags = await stream(flooding.slice(0, TROUSERS), TROUSERS);
      const { report: changed } = await inspectDrift(
        {
          registry,
          features: await storeWith('features-s1b', []),
          state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-s1'))),
          queries: source([...trousers.slice(0, TROUSERS), ...bags]),
        },
        settings,
      );
      expect(changed.signals!.servedQueries).toMatchObject({ sample: TROUSERS, status: 'drift' });
      expect(changed.signals!.servedQueries.psi!.max).toBeGreaterThan(4 * report.settings.psiThreshold);
    });

    it('acts on uploads and the served reference only: queries unlike the training images alone request nothing', async () => {
      const requested: string[] = [];
      const trousers = await stream(trouserQueries);
      const report = await runDriftCheck(
        {
          registry,
          // 300 new labelled images from the training distribution: enough for drift to act on.
          features: await storeWith('features-s3', unshifted),
          state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-s3'))),
          queries: source(trousers),
          requestRetrain: async (reason) => void requested.push(reason),
        },
        { ...SETTINGS, servedBaseline: TROUSERS },
      );
      expect(report.signals!.queries.status).toBe('drift');
      expect(report.signals!.uploads.status).toBe('no-shift');
      expect(report.signals!.servedQueries.status).toBe('no-shift');
      expect(report.decision).toEqual({ retrain: false, reasons: [] });
      expect(requested).toEqual([]);
    });

    it('still checks uploads and Recall@1 when the query sample cannot be read, and says why the query signals are missing', async () => {
      const failing: QueryVectorSource = {
        recent: async () => {
          throw new Error('storage.objects.list denied on query-vectors/');
        },
      };
      const requested: string[] = [];
      const report = await runDriftCheck(
        {
          registry,
          features: await storeWith('features-s4', flooding),
          state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-s4'))),
          queries: failing,
          requestRetrain: async (reason) => void requested.push(reason),
        },
        SETTINGS,
      );
      expect(report.signals!.uploads.status).toBe('drift');
      expect(report.signals!.queries).toMatchObject({
        status: 'insufficient',
        error: expect.stringMatching(/query sample could not be read: storage\.objects\.list denied/),
      });
      expect(report.signals!.servedQueries.error).toBe(report.signals!.queries.error);
      expect(requested).toHaveLength(1);
    });

    it('is kept by the first check that sees enough queries, compares only later ones, and a shift after it requests a retraining', async () => {
      const mixed = await stream(mixedQueries);
      const state = new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-s2')));
      const settings = { ...SETTINGS, servedBaseline: SERVED };
      const requested: string[] = [];
      const deps = async (queries: SampledQuery[], name: string) => ({
        registry,
        features: await storeWith(name, unshifted),
        state,
        queries: source(queries),
        requestRetrain: async (reason: string) => void requested.push(reason),
      });
      // A reference kept for a version since removed from the registry: pruned by the next check.
      const training = (await readDriftProfile(registry, (await registry.get(trainedVersion))!))!;
      await state.write({
        lastReport: null,
        requests: [],
        servedReferences: [{ modelVersion: 'removed-version', createdAt: '2026-11-01T00:00:00.000Z', from: 0, until: 0, profile: training }],
      });
      expect((await state.read()).servedReferences).toHaveLength(1);
      // Too few: no reference yet, nothing kept.
      const early = await runDriftCheck(await deps(mixed.slice(0, SERVED - 1), 'features-s2a'), settings);
      expect(early.servedReference).toBeNull();
      expect(early.signals!.servedQueries).toMatchObject({ sample: 0, status: 'insufficient' });
      expect((await state.read()).servedReferences).toEqual([]);
      // Exactly the reference's size: kept, nothing after it to compare yet.
      const first = await runDriftCheck(await deps(mixed.slice(0, SERVED), 'features-s2b'), settings);
      expect(first.servedReference).toMatchObject({ count: SERVED, until: new Date(T0 + (SERVED - 1) * 1000).toISOString() });
      expect(first.signals!.servedQueries.status).toBe('insufficient');
      const kept = (await state.read()).servedReferences;
      expect(kept.map((r) => [r.modelVersion, r.createdAt])).toEqual([[trainedVersion, first.checkedAt]]);
      // Later: the sample has rolled past the reference's queries; the kept reference is used, not rebuilt from what is left.
      const later = await runDriftCheck(await deps(mixed.slice(SERVED, 3 * SERVED), 'features-s2c'), settings);
      expect(later.servedReference!.createdAt).toBe(first.checkedAt);
      const calm = later.signals!.servedQueries;
      console.log(`served reference, same distribution: max PSI ${calm.psi!.max.toFixed(4)}, KS D ${calm.centroidKs!.d.toFixed(4)}`);
      expect(calm).toMatchObject({ sample: 2 * SERVED, status: 'no-shift' });
      expect(calm.psi!.max).toBeLessThan(0.5 * later.settings.psiThreshold);
      expect(requested).toEqual([]);
      // Bags flood the queries after the reference: flagged, and with 300 new labelled images a retraining is requested, saying why.
      const bags = await stream(flooding, 3 * SERVED);
      const shifted = await runDriftCheck(await deps([...mixed.slice(2 * SERVED, 3 * SERVED), ...bags], 'features-s2d'), settings);
      expect(shifted.signals!.servedQueries.status).toBe('drift');
      expect(shifted.decision.retrain).toBe(true);
      expect(requested).toHaveLength(1);
      expect(requested[0]).toMatch(/queries since the served reference: PSI \d\.\d{3} on component \d ≥ 0\.25/);
    });
  });

  it('says why there is no verdict for a model without a profile (the base model)', async () => {
    const baseOnly = new LocalModelRegistry(path.join(work, 'models-base'));
    await baseOnly.register({ version: baseManifest.version, parent: null, manifest: baseManifest, files: { 'image.onnx': Buffer.from('not run') } });
    await baseOnly.promote(baseManifest.version);
    const requested: string[] = [];
    const report = await runDriftCheck({
      registry: baseOnly,
      features: await storeWith('features-base', flooding),
      state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state-base'))),
      requestRetrain: async (r) => void requested.push(r),
    });
    expect(report.reference).toBeNull();
    expect(report.note).toMatch(/has no drift profile .* `imgsearch retrain`/);
    expect(requested).toEqual([]);
  });
});

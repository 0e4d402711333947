import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalizeEvent } from '../../shared/adapters/local/folder-watcher.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { activateModel, activateWithIndex, rollbackModel } from '../../shared/services/model-lifecycle.js';
import { evaluateVersion, retrain } from '../../shared/services/retrain.js';
import { SearchService } from '../../shared/services/search-service.js';
import { lifecycleDeps } from '../../shared/wiring/local.js';
import { tempDir } from '../helpers/cli.js';
import { openTestPipeline } from '../helpers/local-runtime.js';

/**
 * Retraining end to end in one process, on real Fashion-MNIST images through the real pipeline:
 * a better candidate is promoted with an index of its own, a worse one changes nothing, and
 * rollback brings back the previous model together with its index.
 *
 * Deterministic and far from the gate's threshold: training is seeded and reads its records in id
 * order (same seed, same model), and the promotion run (in beforeAll) trains long enough that the
 * candidate wins by several times the margin (asserted, so a drift towards the threshold fails
 * loudly here rather than flakily). No test depends on another having run: each one that needs a
 * model live makes it live first (activateModel reuses that model's index).
 */
const IMAGES = 1000;
// Below ~1,000 images the trained head does not beat the base model on held-out recall@1 (400
// images: 0.70 vs 0.78); a fifth held out keeps the verdict out of the noise.
const SMALL_DATA = { heldOutFraction: 0.2 };
const MARGIN = 0.005;
/** The promotion run's recall@1 gain must be at least this (3 margins; it is 0.0169, i.e. 4 more hits of 237): not a near-threshold verdict. */
const WIDE_GAIN = 0.015;

describe('retrain → gate → reindex → rollback (real model, real LanceDB)', () => {
  let work: string;
  let t: Awaited<ReturnType<typeof openTestPipeline>>;
  let reportsDir: string;
  let baseVersion: string;
  let baseIndex: string;
  let trainedVersion: string;
  let trainedIndex: string;
  let promotion: Awaited<ReturnType<typeof retrain>>;
  const stages: string[] = [];
  const deps = () => ({ ...lifecycleDeps(t.runtime), activate: activateWithIndex(lifecycleDeps(t.runtime)), reportsDir });
  /** Makes `version` the live model (and its index live), whatever ran before. */
  const makeLive = (version: string) => activateModel(lifecycleDeps(t.runtime), version);

  beforeAll(async () => {
    work = await tempDir('retrain-flow');
    // Document ids hash the bucket path and the held-out split hashes ids: a fixed bucket path
    // makes the split (and so the gate's verdict) the same on every run.
    const bucket = path.join(os.tmpdir(), 'iss-retrain-flow-bucket');
    await fs.rm(bucket, { recursive: true, force: true });
    reportsDir = path.join(work, 'home', 'reports');
    await fs.mkdir(bucket, { recursive: true });
    t = await openTestPipeline(work, { IMGSEARCH_BATCH_SIZE: '32', IMGSEARCH_BUCKET_DIR: bucket });
    const { images, labels, classNames } = await readFashionMnist({ split: 'train', limit: IMAGES });
    for (let i = 0; i < images.length; i++) {
      const name = `fm-${String(i).padStart(4, '0')}`;
      await fs.writeFile(path.join(bucket, `${name}.json`), JSON.stringify({ labels: [classNames[labels[i]!]] }));
      await fs.writeFile(path.join(bucket, `${name}.png`), await fashionMnistPng(images[i]!));
      await t.publish(finalizeEvent((await t.runtime.bucket.stat(`${name}.png`))!));
    }
    await t.run();
    baseVersion = (await t.runtime.registry.active())!.version;
    baseIndex = (await t.runtime.catalog.live())!.name;
    promotion = await retrain(deps(), { ...SMALL_DATA, margin: MARGIN, epochs: 15, seed: 1 }, (p) => stages.push(p.stage));
    trainedVersion = promotion.candidate.version;
    trainedIndex = (promotion.activation as { index?: string } | null)?.index ?? '';
  }, 240_000);

  afterAll(async () => t?.close());

  it('ingested every image with its label into the feature store', async () => {
    expect(await t.runtime.features.count()).toBe(IMAGES);
    expect(await (await t.runtime.catalog.live())!.count()).toBe(IMAGES);
  });

  it('promotes a better model, by a wide margin, and points the alias at a new index of it', async () => {
    const result = promotion;
    expect(result.promoted, result.decision.reasons.join('; ')).toBe(true);
    const gain = result.candidate.metrics.imageToImage['recall@1'] - result.current.metrics.imageToImage['recall@1'];
    expect(gain, result.decision.reasons.join('; ')).toBeGreaterThanOrEqual(WIDE_GAIN);
    expect(stages).toEqual(expect.arrayContaining(['load', 'train', 'evaluate', 'register', 'reindex', 'plot']));
    expect(result.activation).toMatchObject({ how: 'rebuilt', index: trainedIndex, documents: IMAGES, needsReembedding: 0 });
    expect(trainedIndex).not.toBe(baseIndex);
    await makeLive(trainedVersion);
    const live = (await t.runtime.catalog.live())!;
    expect(live.name).toBe(trainedIndex);
    expect(live.modelVersion).toBe(trainedVersion);
    expect(await live.count()).toBe(IMAGES);
    // The plot the page serves: a PNG of every version with metrics.
    const png = await fs.readFile(path.join(reportsDir, 'metrics.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    const listed = await t.runtime.registry.list();
    expect(listed.find((v) => v.version === baseVersion)!.metrics).not.toBeNull();
  }, 60_000);

  it('trains the same model from the same seed (the verdict cannot change between runs)', async () => {
    const again = await retrain({ ...lifecycleDeps(t.runtime), reportsDir }, { ...SMALL_DATA, margin: MARGIN, epochs: 15, seed: 1 });
    expect(again.candidate.metrics.imageToImage).toEqual(promotion.candidate.metrics.imageToImage);
  }, 120_000);

  it('answers text queries for a class name with mostly that class', async () => {
    await makeLive(trainedVersion);
    await t.runtime.model.refresh();
    const search = new SearchService(
      () => t.runtime.model.current(),
      () => t.runtime.catalog.live(),
    );
    for (const label of ['Trouser', 'Bag', 'Sneaker']) {
      const res = await search.byText(label, { k: 10 });
      expect(res.modelVersion).toBe(trainedVersion);
      const share = res.results.filter((h) => h.labels.includes(label)).length / res.results.length;
      expect(share, label).toBeGreaterThanOrEqual(0.6);
    }
  });

  it('evaluates a version on the held-out split and stores its metrics', async () => {
    await makeLive(trainedVersion);
    const report = await evaluateVersion(deps(), baseVersion);
    expect(report.modelVersion).toBe(baseVersion);
    expect(report.textToImage).toBeNull();
    const trained = await evaluateVersion(deps());
    expect(trained.modelVersion).toBe(trainedVersion);
    expect(trained.textToImage!['precision@10']).toBeGreaterThan(0);
    expect((await t.runtime.registry.get(trainedVersion))!.metrics!.imageToImage).toEqual(trained.imageToImage);
  });

  it('registers a deliberately poor candidate without promoting it or touching the live index', async () => {
    await makeLive(trainedVersion);
    const result = await retrain(deps(), { ...SMALL_DATA, epochs: 0, seed: 3 });
    expect(result.promoted).toBe(false);
    expect(result.decision.promote).toBe(false);
    expect(result.activation).toBeNull();
    expect((await t.runtime.registry.active())!.version).toBe(trainedVersion);
    expect((await t.runtime.catalog.live())!.name).toBe(trainedIndex);
    const loser = await t.runtime.registry.get(result.candidate.version);
    expect(loser).toMatchObject({ active: false, parent: trainedVersion });
    expect(loser!.metrics).not.toBeNull();
  }, 60_000);

  it('rolls back to the previous model and its index', async () => {
    await makeLive(baseVersion);
    await makeLive(trainedVersion);
    const back = await rollbackModel(lifecycleDeps(t.runtime));
    expect(back).toMatchObject({ modelVersion: baseVersion, index: baseIndex, how: 'reused' });
    expect((await t.runtime.registry.active())!.version).toBe(baseVersion);
    expect((await t.runtime.catalog.live())!.name).toBe(baseIndex);
  });

  it('refuses to evaluate without enough labelled images, saying how to get some', async () => {
    const empty = await openTestPipeline(await tempDir('retrain-empty'));
    try {
      await expect(evaluateVersion(lifecycleDeps(empty.runtime))).rejects.toThrow(/at least 20 labelled images.*found 0/);
    } finally {
      await empty.close();
    }
  });
});

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalizeEvent } from '../../shared/adapters/local/folder-watcher.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { DEFAULT_FEATURE_LAYERS } from '../../shared/model/default-model.js';
import { fromFloat16Bits } from '../../shared/model/float16.js';
import { loadNsfwjsMobilenetV2 } from '../../shared/model/nsfwjs-mobilenet.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import { activateModel } from '../../shared/services/model-lifecycle.js';
import { retrain } from '../../shared/services/retrain.js';
import { initTf } from '../../shared/training/tf-backend.js';
import { TowerBlocks, towerEmbeddings } from '../../shared/training/tower-blocks.js';
import { lifecycleDeps } from '../../shared/wiring/local.js';
import { tempDir } from '../helpers/cli.js';
import { openTestPipeline } from '../helpers/local-runtime.js';

/**
 * Partial fine-tuning end to end on real Fashion-MNIST images through the real pipeline:
 * ingest stores the block activation (fp16) beside the base embedding; `retrain` with unlocked
 * blocks trains on those activations (no image decoded), registers a gate-evaluated version whose
 * ONNX image tower holds the tuned blocks; activating it rebuilds the index from the stored
 * activations with the image files gone, and those vectors are what the tuned ONNX tower computes
 * from the images themselves.
 */
const IMAGES = 240;

describe('retrain --unlock-blocks (real model, real LanceDB)', () => {
  let work: string;
  let bucket: string;
  let t: Awaited<ReturnType<typeof openTestPipeline>>;
  let baseRecords: FeatureRecord[];
  let result: Awaited<ReturnType<typeof retrain>>;
  const names: string[] = [];
  /** The probe images' bytes, kept for after the files are gone. */
  const pngs = new Map<string, Buffer>();

  beforeAll(async () => {
    work = await tempDir('tower-retrain');
    bucket = path.join(os.tmpdir(), 'iss-tower-retrain-bucket');
    await fs.rm(bucket, { recursive: true, force: true });
    await fs.mkdir(bucket, { recursive: true });
    t = await openTestPipeline(work, { IMGSEARCH_BATCH_SIZE: '32', IMGSEARCH_BUCKET_DIR: bucket });
    const { images, labels, classNames } = await readFashionMnist({ split: 'train', limit: IMAGES });
    for (let i = 0; i < images.length; i++) {
      const name = `fm-${String(i).padStart(4, '0')}`;
      names.push(name);
      await fs.writeFile(path.join(bucket, `${name}.json`), JSON.stringify({ labels: [classNames[labels[i]!]] }));
      const png = await fashionMnistPng(images[i]!);
      if (i < 6) pngs.set(name, png);
      await fs.writeFile(path.join(bucket, `${name}.png`), png);
      await t.publish(finalizeEvent((await t.runtime.bucket.stat(`${name}.png`))!));
    }
    await t.run();
    baseRecords = [];
    for await (const batch of t.runtime.features.scan(1000)) baseRecords.push(...batch);
    result = await retrain(lifecycleDeps(t.runtime), {
      epochs: 1,
      seed: 3,
      heldOutFraction: 0.2,
      training: { unlockBlocks: 2, validationFraction: 0, batchSize: 64 },
    });
  }, 300_000);

  afterAll(async () => {
    await t?.close();
    await fs.rm(bucket, { recursive: true, force: true });
  });

  it('stores, at ingest, the fp16 activation from which the tfjs blocks recompute the stored base embedding', async () => {
    expect(baseRecords).toHaveLength(IMAGES);
    const [h, w, c] = [7, 7, 160];
    for (const r of baseRecords) expect(r.activation?.length).toBe(h * w * c);
    await initTf();
    const tower = new TowerBlocks(loadNsfwjsMobilenetV2(), {
      activation: { layer: 'block_13_project_BN', shape: [h, w, c] },
      features: DEFAULT_FEATURE_LAYERS,
      unlock: 0,
    });
    try {
      const sample = baseRecords.slice(0, 16);
      const recomputed = await towerEmbeddings(
        tower,
        sample.map((r) => ({ activation: fromFloat16Bits(r.activation!), base: r.vector })),
      );
      let maxDiff = 0;
      recomputed.forEach((v, i) => v.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - sample[i]!.vector[j]!)))));
      // fp16 keeps ~3 significant digits; a wrong layer, layout (NCHW vs NHWC) or block gives > 0.05.
      expect(maxDiff).toBeLessThan(2e-3);
    } finally {
      tower.dispose();
    }
  });

  it('registers a gate-evaluated version with the tuned tower, its own vector space and the unlocked blocks recorded', async () => {
    const version = await t.runtime.registry.get(result.candidate.version);
    expect(version).not.toBeNull();
    expect(version!.metrics?.gate).toBeDefined();
    expect(result.decision.reasons.length).toBeGreaterThan(0);
    expect(result.candidate.training.unlockedBlocks).toEqual(['block_16', 'Conv_1']);
    expect(version!.manifest.name).toBe(result.candidate.version);
    expect(version!.manifest.image.activation?.layer).toBe('block_13_project_BN');
    expect(version!.lineage.unlockBlocks).toEqual(['block_16', 'Conv_1']);
    const base = await t.runtime.registry.get(result.current.version);
    const [tuned, original] = await Promise.all(
      [version!, base!].map(async (v) => fs.readFile(path.join(await t.runtime.registry.localPath(v.version), v.manifest.image.file))),
    );
    expect(Buffer.compare(tuned!, original!)).not.toBe(0);
  });

  it('rebuilds the index from stored activations with the images gone, matching the tuned ONNX tower on the images', async () => {
    const deps = lifecycleDeps(t.runtime);
    const embedder = await deps.loadEmbedder(result.candidate.version);
    const probe = names.slice(0, 6);
    let expected: Float32Array[];
    try {
      const prepared = await Promise.all(probe.map(async (n) => embedder.prepare(await fs.readFile(path.join(bucket, `${n}.png`)))));
      expected = (await embedder.embedDecoded(prepared)).vectors;
    } finally {
      await embedder.close();
    }
    for (const n of names) await fs.rm(path.join(bucket, `${n}.png`));
    // Every image has a record of the tuned tower: none needs re-embedding (the first tower's records are not counted).
    expect(await activateModel(deps, result.candidate.version)).toMatchObject({ how: 'rebuilt', documents: IMAGES, needsReembedding: 0 });
    const live = (await t.runtime.catalog.live())!;
    expect(live.modelVersion).toBe(result.candidate.version);
    const index = await t.runtime.catalog.open(live.name);
    expect(await index.count()).toBe(IMAGES);
    const byUri = new Map<string, Float32Array>();
    for await (const docs of index.scan(1000)) for (const d of docs) byUri.set(path.basename(d.uri), d.vector);
    probe.forEach((n, i) => {
      const got = byUri.get(`${n}.png`)!;
      let dot = 0;
      got.forEach((x, j) => (dot += x * expected[i]![j]!));
      // The same unit vector up to fp16 rounding of the activation (a stale tower gives ~0.9).
      expect(dot).toBeGreaterThan(0.9995);
    });
  });

  it('--region-grid 3: a tower whose base adds block 13 pooled over 3×3 regions, every record re-embedded from activations, the index matching its ONNX tower', async () => {
    const deps = lifecycleDeps(t.runtime);
    // From the default tower again (the test above activated the tuned one), with the image files gone:
    // the default tower's records are reused part by part, no block runs.
    await activateModel(deps, result.current.version);
    const regional = await retrain(deps, {
      epochs: 1,
      seed: 3,
      heldOutFraction: 0.2,
      training: { regionGrid: 3, validationFraction: 0, batchSize: 64 },
    });
    const version = (await t.runtime.registry.get(regional.candidate.version))!;
    expect(version.manifest.image.features).toEqual([...DEFAULT_FEATURE_LAYERS, { layer: 'block_13_project_BN', grid: 3, weight: 2 }]);
    expect(version.manifest.image.dimension).toBe(1632 + 160 * 9);
    expect(version.manifest.head?.inputDimension).toBe(1632 + 160 * 9);
    expect(version.lineage).toMatchObject({ regionGrid: 3, regionWeight: 2, unlockBlocks: [], towerFamily: 'mobilenet_v2-nsfwjs' });
    expect(version.manifest.description).toMatch(/block_13_project_BN pooled over 3×3 regions/);
    const records: FeatureRecord[] = [];
    for await (const batch of t.runtime.features.scan(1000)) records.push(...batch.filter((r) => r.baseModel === regional.candidate.version));
    expect(records).toHaveLength(IMAGES);
    for (const r of records) expect(r.vector.length).toBe(3072);

    expect(await activateModel(deps, regional.candidate.version)).toMatchObject({ documents: IMAGES, needsReembedding: 0 });
    const embedder = await deps.loadEmbedder(regional.candidate.version);
    let expected: Float32Array[];
    try {
      const prepared = await Promise.all([...pngs.values()].map((png) => embedder.prepare(png)));
      expected = (await embedder.embedDecoded(prepared)).vectors;
    } finally {
      await embedder.close();
    }
    const live = (await t.runtime.catalog.live())!;
    expect(live.modelVersion).toBe(regional.candidate.version);
    const index = await t.runtime.catalog.open(live.name);
    expect(await index.count()).toBe(IMAGES);
    const byUri = new Map<string, Float32Array>();
    for await (const docs of index.scan(1000)) for (const d of docs) byUri.set(path.basename(d.uri), d.vector);
    [...pngs.keys()].forEach((n, i) => {
      let dot = 0;
      byUri.get(`${n}.png`)!.forEach((x, j) => (dot += x * expected[i]![j]!));
      expect(dot).toBeGreaterThan(0.9995);
    });
  });

  it('--region-grid 1 on the regional tower goes back to global pooling: its records rebuilt from the regional ones, as the default ONNX layout computes them', async () => {
    const deps = lifecycleDeps(t.runtime);
    const back = await retrain(deps, { epochs: 1, seed: 3, heldOutFraction: 0.2, training: { regionGrid: 1, validationFraction: 0, batchSize: 64 } });
    const version = (await t.runtime.registry.get(back.candidate.version))!;
    expect(version.manifest.image.features).toBeUndefined();
    expect(version.manifest.image.dimension).toBe(1632);
    expect(version.lineage.regionGrid).toBeUndefined();
    const rebuilt = new Map<string, Float32Array>();
    for await (const batch of t.runtime.features.scan(1000)) for (const r of batch) if (r.baseModel === back.candidate.version) rebuilt.set(r.id, r.vector);
    expect(rebuilt.size).toBe(IMAGES);
    // The pretrained blocks' default layout: what ingest stored in the first place (up to fp16 of the activation).
    let maxDiff = 0;
    for (const r of baseRecords) rebuilt.get(r.id)!.forEach((x, j) => (maxDiff = Math.max(maxDiff, Math.abs(x - r.vector[j]!))));
    expect(maxDiff).toBeLessThan(2e-3);
  });

  it('--region-grid with --unlock-blocks: blocks tuned in the new layout, records and ONNX tower agreeing', async () => {
    const deps = lifecycleDeps(t.runtime);
    // From the regional tower (3×3) to 2×2 regions with Conv_1 unlocked from the first epoch.
    const both = await retrain(deps, {
      epochs: 1,
      seed: 3,
      heldOutFraction: 0.2,
      training: { regionGrid: 2, unlockBlocks: 1, validationFraction: 0, batchSize: 64 },
    });
    expect(both.candidate.training).toMatchObject({ unlockedBlocks: ['Conv_1'], regionGrid: 2 });
    const version = (await t.runtime.registry.get(both.candidate.version))!;
    expect(version.manifest.image.dimension).toBe(1632 + 160 * 4);
    expect(version.lineage).toMatchObject({ regionGrid: 2, unlockBlocks: ['Conv_1'] });
    const stored = new Map<string, Float32Array>();
    for await (const batch of t.runtime.features.scan(1000)) for (const r of batch) if (r.baseModel === both.candidate.version) stored.set(r.uri, r.vector);
    expect(stored.size).toBe(IMAGES);
    const embedder = await deps.loadEmbedder(both.candidate.version);
    try {
      const prepared = await Promise.all([...pngs.values()].map((png) => embedder.prepare(png)));
      const embedded = await embedder.embedDecoded(prepared);
      [...pngs.keys()].forEach((n, i) => {
        const record = [...stored.entries()].find(([uri]) => uri.endsWith(`/${n}.png`))![1];
        let dot = 0;
        record.forEach((x, j) => (dot += x * embedded.base[i]![j]!));
        expect(dot).toBeGreaterThan(0.9995); // the tuned blocks' records = what its ONNX tower computes from the image
      });
    } finally {
      await embedder.close();
    }
  });

  it('refuses a new layout alone on a tower whose blocks were fine-tuned (their tuning would be lost), naming the way out', async () => {
    const deps = lifecycleDeps(t.runtime);
    await activateModel(deps, result.candidate.version); // the unlock-2 tower of the first retraining
    await expect(retrain(deps, { epochs: 1, seed: 3, heldOutFraction: 0.2, training: { regionGrid: 3, validationFraction: 0 } })).rejects.toThrow(
      /has fine-tuned blocks.*--unlock-blocks N.*imgsearch model promote/,
    );
  });
});

import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import {
  BlobDriftStateStore,
  buildDriftProfile,
  DRIFT_PROFILE_FILE,
  driftOutput,
  type DriftSettingsInput,
  type QueryVectorSource,
  type SampledQuery,
} from '../../shared/services/drift.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';
import { launchChromium, screenshot, seriousA11yViolations } from '../helpers/browser.js';
import { repoRoot, tempDir } from '../helpers/cli.js';
import { fmPixelsManifest, fmPixelsRecord } from '../helpers/fm-pixels.js';
import { idleSearchApp } from '../helpers/search-app.js';

/**
 * The Monitoring tab's drift panel on a real report (GET /api/drift → driftOutput over the real
 * local registry, feature store and state): a model with a training profile on Fashion-MNIST, bags
 * flooding the uploads, and a query sample of 500 queries of every class then 250 of sneakers. The
 * page shows the three signals by name, the served-query reference (provisional: no check kept it
 * yet) and the decision; with a query sample that cannot be read, the query rows say why.
 */
describe('the drift panel of the page', () => {
  let work: string;
  let browser: Browser;
  let registry: LocalModelRegistry;
  let features: PerTowerFeatureStore;
  let sampled: SampledQuery[];
  const apps: FastifyInstance[] = [];

  beforeAll(async () => {
    work = await tempDir('web-drift');
    const fm = await readFashionMnist({ split: 'train', limit: 6000 });
    const order = shuffledIndices(fm.images.length, mulberry32(5));
    const rec = (i: number, generation: number) => fmPixelsRecord(i, fm.images[i]!, fm.classNames[fm.labels[i]!]!, generation);
    const reference = Array.from(order.subarray(0, 1500), (i, k) => rec(i, 1_000 + k));
    const rest = Array.from(order.subarray(1500));
    const bags = rest.filter((i) => fm.labels[i] === 8).slice(0, 250);
    const sneakers = rest.filter((i) => fm.labels[i] === 7).slice(0, 250);
    expect(bags).toHaveLength(250);
    expect(sneakers).toHaveLength(250);
    registry = new LocalModelRegistry(path.join(work, 'models'));
    await registry.register({
      version: fmPixelsManifest.version,
      parent: null,
      manifest: fmPixelsManifest,
      files: {
        'image.onnx': Buffer.from('not run'),
        [DRIFT_PROFILE_FILE]: Buffer.from(JSON.stringify(buildDriftProfile(fmPixelsManifest.version, reference))),
      },
      metrics: { imageToImage: { 'recall@1': 0.8 } },
    });
    await registry.promote(fmPixelsManifest.version);
    features = await PerTowerFeatureStore.open(path.join(work, 'features'));
    await features.put([...reference, ...bags.map((i, k) => rec(i, 100_000 + k))]);
    const t0 = Date.parse('2026-11-28T08:00:00.000Z');
    sampled = [...rest.slice(0, 500), ...sneakers].map((i, k) => ({ at: t0 + k * 1000, vector: rec(i, 0).vector }));
    browser = await launchChromium();
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await Promise.all(apps.map((a) => a.close()));
    await features?.close();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  async function pageFor(queries: QueryVectorSource, settings: DriftSettingsInput = { recentUploads: 250 }) {
    const state = new BlobDriftStateStore(new FolderBlobStore(path.join(work, `state-${apps.length}`)));
    const app = await idleSearchApp(
      { webDir: path.join(repoRoot, 'web'), drift: () => driftOutput({ registry, features, state, queries }, settings) },
      { version: fmPixelsManifest.version, dimension: 784, hasTextTower: false, name: fmPixelsManifest.name },
    );
    apps.push(app);
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}/#monitoring`);
    await page.waitForSelector('#drift-signals');
    const rows = Object.fromEntries(
      await page
        .locator('#drift-signals tbody tr')
        .evaluateAll((trs) => trs.map((tr) => [tr.querySelector('th')!.textContent!, [...tr.querySelectorAll('td')].map((td) => td.textContent!)] as const)),
    ) as Record<string, string[]>;
    return { page, rows, errors };
  }

  it('shows each signal by name, the provisional served-query reference and the decision to retrain', async () => {
    const { page, rows, errors } = await pageFor({ recent: async (v) => (v === fmPixelsManifest.version ? sampled : []) });
    expect(Object.keys(rows)).toEqual(['uploads', 'queries vs training (reported only)', 'queries vs served reference']);
    expect(rows['uploads']!.slice(0, 2)).toEqual(['250', 'drift']);
    expect(rows['queries vs served reference']!.slice(0, 2)).toEqual(['250', 'drift']);
    expect(rows['queries vs training (reported only)']![0]).toBe('750');
    const reference = await page.locator('#drift-served-reference').textContent();
    expect(reference).toMatch(
      /^Served-query reference: the model's first 500 sampled queries \(.+ – .+\), provisional until the next check keeps it; later queries are compared with it\.$/,
    );
    expect(await page.locator('#drift-decision').textContent()).toBe('retrain');
    await screenshot(page, 'monitoring-drift');
    expect(await seriousA11yViolations(page)).toEqual([]);
    expect(errors).toEqual([]);
  }, 60_000);

  it('says why the query rows are empty when the query sample cannot be read, and still judges the uploads', async () => {
    const { rows, errors } = await pageFor({
      recent: async () => {
        throw new Error('storage.objects.list denied on query-vectors/');
      },
    });
    expect(rows['uploads']!.slice(0, 2)).toEqual(['250', 'drift']);
    for (const name of ['queries vs training (reported only)', 'queries vs served reference']) {
      expect(rows[name]![1]).toBe('not read: the query sample could not be read: storage.objects.list denied on query-vectors/');
    }
    expect(errors).toEqual([]);
  }, 60_000);

  it("shows the level a small sample's largest PSI must also reach (here 80 vectors)", async () => {
    const { rows, errors } = await pageFor({ recent: async () => [] }, { recentUploads: 80, minSample: 50 });
    expect(rows['uploads']![0]).toBe('80');
    expect(rows['uploads']![2]).toMatch(/^\d+\.\d{3} \(major; threshold 0\.25, significant from 0\.\d{3}\)$/);
    expect(errors).toEqual([]);
  }, 60_000);
});

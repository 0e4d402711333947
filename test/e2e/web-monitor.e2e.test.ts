import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { searchOutputSchema } from '../../shared/output-schemas.js';
import { launchChromium, screenshot, seriousA11yViolations, waitFor } from '../helpers/browser.js';
import { startUp, tempDir } from '../helpers/cli.js';

/**
 * The Monitoring tab under `imgsearch up`: the searches made through the API show in its totals
 * and charts (GET /api/monitor), and the drift panel (GET /api/drift) says the base model has no
 * reference profile. Screenshot: reports/screenshots/monitoring.png (the README's copy is docs/screenshots/).
 */
const N = 20;

describe('monitoring view under imgsearch up', () => {
  let work: string;
  let server: Awaited<ReturnType<typeof startUp>>;
  let browser: Browser;
  let itemPng: Buffer;

  beforeAll(async () => {
    work = await tempDir('web-monitor');
    const bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const { images } = await readFashionMnist({ split: 'test', limit: N });
    for (let i = 0; i < N; i++) await fs.writeFile(path.join(bucket, `item-${i}.png`), await fashionMnistPng(images[i]!));
    itemPng = await fs.readFile(path.join(bucket, 'item-0.png'));
    server = await startUp({ cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket } });
    await waitFor(
      async () => ((s: { indexed: number }) => (s.indexed === N ? s : undefined))(await (await fetch(`${server.url}/api/status`)).json()),
      60_000,
      'the ingest',
    );
    browser = await launchChromium();
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  async function byImage(png: Buffer, query: string) {
    const body = new FormData();
    body.append('image', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'query.png');
    const res = await fetch(`${server.url}/api/search?${query}`, { method: 'POST', body });
    expect(res.status).toBe(200);
    return searchOutputSchema.parse(await res.json()).results;
  }

  it('charts the searches made, shows the totals and the drift panel, with no serious accessibility violation', async () => {
    // Three searches: an image query, "more like this" on its second hit, and a checkerboard no item resembles at 0.99 (no result).
    const hits = await byImage(itemPng, 'k=5');
    expect(hits).toHaveLength(5);
    expect((await fetch(`${server.url}/api/search?k=5&similarTo=${encodeURIComponent(hits[1]!.id)}`)).status).toBe(200);
    const checkerboard = await fashionMnistPng(Uint8Array.from({ length: 28 * 28 }, (_, i) => (((i % 28) + Math.floor(i / 28)) % 2 ? 255 : 0)));
    expect(await byImage(checkerboard, 'k=5&minScore=0.99')).toEqual([]);

    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/#monitoring`);
    await page.waitForSelector('#monitor-searches');
    expect(await page.locator('#tab-monitoring').getAttribute('aria-selected')).toBe('true');
    expect(await page.locator('#monitor-searches').textContent()).toBe('3');
    expect(await page.locator('#monitor-totals').textContent()).toContain('33.3 %'); // 1 of 3 with no result
    expect(await page.locator('#monitor-window').textContent()).toMatch(/^3 searches \(image 2, text 0, similar 1\), 1 with no result/);
    const searchesChart = page.locator('#monitor-charts svg[aria-label^="Searches per hour, by kind"]');
    expect(await searchesChart.count()).toBe(1);
    expect(await page.locator('#monitor-charts svg').count()).toBeGreaterThanOrEqual(5);

    await page.waitForSelector('#drift-note');
    expect(await page.locator('#drift-note').textContent()).toMatch(/has no drift profile/);
    expect(await page.locator('#drift-decision').textContent()).toBe('no retraining needed');

    await screenshot(page, 'monitoring');
    expect(await seriousA11yViolations(page)).toEqual([]);
    expect(errors).toEqual([]);
  }, 30_000);
});

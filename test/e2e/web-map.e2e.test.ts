import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { dropFiles, launchChromium, screenshot, seriousA11yViolations, waitFor } from '../helpers/browser.js';
import { startUp, tempDir } from '../helpers/cli.js';

/**
 * The collection map in the page: drawn from GET /api/map, coloured by cluster or label with a
 * legend and a silhouette-over-k chart; a point clicked with the mouse (found from the canvas's own
 * pixels) shows its image and its neighbours; the keyboard can do the same; the current query and
 * its results are marked (GET /api/map/locate).
 */
const N = 60;

describe('collection map view under imgsearch up', () => {
  let work: string;
  let bucket: string;
  let server: Awaited<ReturnType<typeof startUp>>;
  let browser: Browser;

  beforeAll(async () => {
    work = await tempDir('web-map');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const { images, labels, classNames } = await readFashionMnist({ split: 'test', limit: N });
    for (let i = 0; i < N; i++) {
      await fs.writeFile(path.join(bucket, `item-${i}.png`), await fashionMnistPng(images[i]!));
      await fs.writeFile(path.join(bucket, `item-${i}.json`), JSON.stringify({ labels: [classNames[labels[i]!]] }));
    }
    server = await startUp({ cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket } });
    await waitFor(
      async () => ((s) => (s.indexed === N ? s : undefined))((await (await fetch(`${server.url}/api/status`)).json()) as { indexed: number }),
      90_000,
      'the ingest',
    );
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('draws the map, opens a clicked point with its neighbours, and marks the current query', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/#map`);
    await page.waitForSelector(`#map-canvas[data-points="${N}"]`, { timeout: 30_000 });
    expect(await page.locator('#map-info').textContent()).toMatch(new RegExp(`^${N} of ${N} images, (PCA|UMAP) projection, k = \\d+`));
    expect(await page.locator('#silhouette-chart svg').getAttribute('aria-label')).toMatch(/^Silhouette score over k.*silhouette: \d+ points/);
    expect(await page.locator('#map-legend li').count()).toBeGreaterThanOrEqual(2);

    // A drawn point: the first non-white pixel of the map canvas, in CSS pixels.
    const spot = await page.evaluate(() => {
      const c = document.querySelector<HTMLCanvasElement>('#map-canvas')!;
      const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      const ratio = c.width / c.getBoundingClientRect().width;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3]! > 200 && (data[i]! < 240 || data[i + 1]! < 240 || data[i + 2]! < 240)) {
          const p = i / 4;
          const r = c.getBoundingClientRect();
          return { x: r.left + (p % c.width) / ratio + 1, y: r.top + Math.floor(p / c.width) / ratio + 1 };
        }
      }
      return null;
    });
    expect(spot).not.toBeNull();
    await page.mouse.move(spot!.x, spot!.y);
    await page.waitForFunction(() => ((i) => !i.hidden && i.complete && i.naturalWidth > 0)(document.querySelector<HTMLImageElement>('#map-hover-img')!));
    const hovered = (await page.locator('#map-hover-img').getAttribute('alt'))!;
    expect(hovered).toMatch(/^item-\d+\.png$/);
    await page.mouse.click(spot!.x, spot!.y);
    await page.waitForSelector('#map-neighbours li');
    expect(await page.locator('#map-neighbours-title').textContent()).toBe(`Neighbours of ${hovered}`);
    const names = await page.locator('#map-neighbours .name').allTextContents();
    expect(names.length).toBeGreaterThanOrEqual(5);
    expect(names).not.toContain(hovered);
    await screenshot(page, 'map');
    expect(await seriousA11yViolations(page)).toEqual([]);

    // The keyboard: arrows step through points, Enter selects one.
    await page.focus('#map-canvas');
    await page.keyboard.press('ArrowRight');
    await page.keyboard.press('ArrowRight');
    const stepped = await page.locator('#map-hover-name').textContent();
    await page.keyboard.press('Enter');
    await page.waitForFunction((name) => document.querySelector('#map-neighbours-title')?.textContent === `Neighbours of ${name}`, stepped!.split(' · ')[0]);

    // A search by image elsewhere on the page: the map places its query and results.
    await page.click('#tab-search');
    const locate = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/map/locate');
    await dropFiles(page, '#query-zone', [{ name: 'q.png', type: 'image/png', bytes: await fs.readFile(path.join(bucket, 'item-5.png')) }]);
    const where = (await (await locate).json()) as { query: { x: number; y: number } | null; results: { id: string }[] };
    expect(where.query).not.toBeNull();
    expect(where.results.length).toBeGreaterThan(0);
    await page.click('#tab-map');
    // The query's red cross is on the overlay.
    const red = await page.evaluate(() => {
      const c = document.querySelector<HTMLCanvasElement>('#map-overlay')!;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) if (d[i]! > 180 && d[i + 1]! < 40 && d[i + 2]! < 40 && d[i + 3]! > 200) return true;
      return false;
    });
    expect(red).toBe(true);
    expect(errors).toEqual([]);
  }, 60_000);
});

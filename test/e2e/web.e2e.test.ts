import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { alterFashionItem } from '../helpers/alterations.js';
import { dropFiles, launchChromium, screenshot, seriousA11yViolations, waitFor } from '../helpers/browser.js';
import { startUp, tempDir } from '../helpers/cli.js';

/**
 * `imgsearch up` end to end in headless Chromium: search by a dropped image (preview, filters,
 * "more like this", the detail view with neighbours), adding images from the page until each is
 * searchable or rejected with its reason, the pipeline view moving during an ingest through
 * server-sent events (no polling), keyboard use, and axe-core on every view. Screenshots go to
 * reports/screenshots/.
 */
const N = 40;

describe('web page under imgsearch up', () => {
  let work: string;
  let bucket: string;
  let server: Awaited<ReturnType<typeof startUp>>;
  let browser: Browser;
  let classOf: string[];

  const statusOf = async () => (await (await fetch(`${server.url}/api/status`)).json()) as { indexed: number; rejected: { count: number } };

  beforeAll(async () => {
    work = await tempDir('web');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const { images, labels, classNames } = await readFashionMnist({ split: 'test', limit: N });
    classOf = labels.map((l) => classNames[l]!);
    for (let i = 0; i < N; i++) {
      await fs.writeFile(path.join(bucket, `item-${i}.png`), await fashionMnistPng(images[i]!));
      await fs.writeFile(path.join(bucket, `item-${i}.json`), JSON.stringify({ labels: [classOf[i]] }));
    }
    await fs.writeFile(path.join(bucket, 'notes.jpg'), 'this is a text file, not a JPEG');
    server = await startUp({ cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket } });
    await waitFor(async () => ((s) => (s.indexed === N && s.rejected.count === 1 ? s : undefined))(await statusOf()), 120_000, 'the first ingest');
    browser = await launchChromium();
  }, 150_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  async function open(view = 'search'): Promise<Page> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    (page as unknown as { errors: string[] }).errors = errors;
    await page.goto(`${server.url}/#${view}`);
    await page.waitForFunction(() => document.querySelector('#live-line')?.textContent === 'live status: connected');
    return page;
  }

  it('searches by a dropped image (previewed), filters by label and score, "more like this", and opens the detail view', async () => {
    const page = await open();
    const query = await alterFashionItem(await fs.readFile(path.join(bucket, 'item-7.png')), 7);
    await dropFiles(page, '#query-zone', [{ name: 'query.jpg', type: 'image/jpeg', bytes: query }]);
    await page.waitForSelector('.result');
    expect(await page.locator('#query-preview').isVisible()).toBe(true);
    expect(await page.locator('.result .name').first().textContent()).toBe('item-7.png');
    expect(await page.locator('.result .score').first().textContent()).toMatch(/^score (0\.\d{4}|1\.0000)$/);
    expect(await page.locator('.result').first().locator('.label').textContent()).toBe(classOf[7]);
    // The base model has no text tower: text search is off, with the command that adds one.
    expect(await page.locator('#text-input').isDisabled()).toBe(true);
    expect(await page.locator('#text-note').textContent()).toMatch(/imgsearch retrain/);
    await page.waitForFunction(() =>
      [...document.querySelectorAll<HTMLImageElement>('.result img')].slice(0, 4).every((i) => i.complete && i.naturalWidth > 0),
    );
    await screenshot(page, 'search');

    // Label filter and minimum score reach the search: every result has the label and the score.
    await page.fill('#label-filter', classOf[7]!);
    await page.locator('#min-score').fill('0.8');
    await page.locator('.result .more-like-this').first().click();
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('More like item-7.png'));
    const labels = await page.locator('.result .label').allTextContents();
    expect(labels.length).toBeGreaterThan(0);
    expect(new Set(labels)).toEqual(new Set([classOf[7]]));
    const scores = (await page.locator('.result .score').allTextContents()).map((s) => Number(s.replace('score ', '')));
    expect(Math.min(...scores)).toBeGreaterThanOrEqual(0.8);

    // The detail view: the original image, its metadata and its nearest neighbours.
    const opened = (await page.locator('.result .name').first().textContent())!;
    await page.locator('.result .thumb').first().click();
    await page.waitForSelector('#detail[open] #detail-neighbours li');
    expect(await page.locator('#detail-title').textContent()).toBe(opened);
    // The original (28×28), not the thumbnail.
    await page.waitForFunction(() => ((i) => i.complete && i.naturalWidth === 28)(document.querySelector<HTMLImageElement>('#detail-image')!));
    expect(await page.locator('#detail-meta').textContent()).toContain(classOf[Number(/item-(\d+)/.exec(opened)![1])]);
    expect(await page.locator('#detail-neighbours li').count()).toBeGreaterThanOrEqual(5);
    expect(await page.locator('#detail-neighbours .name').allTextContents()).not.toContain(opened);
    await screenshot(page, 'detail');
    expect(await seriousA11yViolations(page)).toEqual([]);
    await page.keyboard.press('Escape');
    expect(await page.locator('#detail').isVisible()).toBe(false);

    // Pasting an image (Ctrl+V with an image on the clipboard) searches with it too (filters cleared first).
    await page.fill('#label-filter', '');
    await page.locator('#min-score').fill('-1');
    const pasted = await fs.readFile(path.join(bucket, 'item-12.png'));
    await page.evaluate(
      (bytes) => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], 'clip.png', { type: 'image/png' }));
        document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
      },
      [...pasted],
    );
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('Similar to clip.png'));
    expect(await page.locator('.result .name').first().textContent()).toBe('item-12.png');

    expect((page as unknown as { errors: string[] }).errors).toEqual([]);
  }, 60_000);

  it('adds images from the page: one becomes searchable, a broken one shows its reason, a taken name is refused', async () => {
    const page = await open('upload');
    const { images } = await readFashionMnist({ split: 'test', limit: 1, offset: 700 });
    await dropFiles(page, '#upload-zone', [
      { name: 'fresh.png', type: 'image/png', bytes: await fashionMnistPng(images[0]!) },
      { name: 'broken.jpg', type: 'image/jpeg', bytes: Buffer.from('not a jpeg at all') },
      { name: 'item-3.png', type: 'image/png', bytes: await fashionMnistPng(images[0]!) },
    ]);
    await page.waitForSelector('#upload-list li[data-name="fresh.png"][data-state="indexed"]', { timeout: 30_000 });
    await page.waitForSelector('#upload-list li[data-name="broken.jpg"][data-state="rejected"]', { timeout: 30_000 });
    expect(await page.locator('#upload-list li[data-name="broken.jpg"] .reason').textContent()).toMatch(/^not-an-image: /);
    const taken = page.locator('#upload-list li[data-name="item-3.png"]');
    expect(await taken.getAttribute('data-state')).toBe('failed');
    expect(await taken.locator('.reason').textContent()).toMatch(/already in the bucket/);
    // The old item-3.png is untouched.
    expect((await fs.readFile(path.join(bucket, 'item-3.png'))).equals(await fs.readFile(path.join(bucket, 'fresh.png')))).toBe(false);
    await screenshot(page, 'upload');
    // Searchable: its own bytes as a query find it first, and "More like this" answers for it (404 before it is indexed).
    await page.click('#tab-search');
    await dropFiles(page, '#query-zone', [{ name: 'again.png', type: 'image/png', bytes: await fashionMnistPng(images[0]!) }]);
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('Similar to again.png'));
    expect(await page.locator('.result .name').first().textContent()).toBe('fresh.png');
    await page.click('#tab-upload');
    await page.locator('#upload-list li[data-name="fresh.png"] button.open').click();
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('More like fresh.png'));
    expect(await page.locator('.result').count()).toBeGreaterThan(0);
  }, 60_000);

  it('moves the pipeline view during an ingest through server-sent events, without polling', async () => {
    const page = await open('pipeline');
    const statusRequests: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/status') statusRequests.push(r.url());
    });
    await page.waitForSelector('#count-indexed');
    const before = Number((await page.locator('#count-indexed').textContent())!.replace(/,/g, ''));
    expect(await page.locator('#rejected tbody').textContent()).toMatch(/notes\.jpg.*not-an-image/);
    expect(await page.locator('#rejected-chart svg[role="img"]').getAttribute('aria-label')).toMatch(/not-an-image: \d+/);
    const { images } = await readFashionMnist({ split: 'test', limit: 6, offset: 900 });
    for (const [i, img] of images.entries()) await fs.writeFile(path.join(bucket, `stream-${i}.png`), await fashionMnistPng(img));
    // Every figure the page shows while the files go through, in order.
    const seen = new Set<string>();
    await waitFor(
      async () => {
        const text = await page.locator('#count-indexed').textContent();
        seen.add(text!);
        return Number(text!.replace(/,/g, '')) === before + images.length ? true : undefined;
      },
      45_000,
      'the indexed count to reach the new total on the page',
    );
    expect(seen.size).toBeGreaterThanOrEqual(2);
    expect(await page.locator('#ingest-chart svg').count()).toBe(1);
    // The page asked for /api/status at most once more (its first paint); the rest came over /api/events.
    expect(statusRequests.length).toBeLessThanOrEqual(1);
    await screenshot(page, 'pipeline');
  }, 60_000);

  it('is usable from the keyboard and has no serious accessibility violations on any view', async () => {
    const page = await open();
    await page.focus('#tab-search');
    await page.keyboard.press('ArrowRight');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('tab-upload');
    expect(await page.locator('#view-upload').isVisible()).toBe(true);
    await page.keyboard.press('End');
    expect(await page.locator('#tab-monitoring').getAttribute('aria-selected')).toBe('true');
    for (const view of ['search', 'upload', 'map', 'pipeline', 'models', 'monitoring']) {
      await page.click(`#tab-${view}`);
      await page.waitForTimeout(300);
      const found = await seriousA11yViolations(page);
      expect(found, `${view}: ${JSON.stringify(found)}`).toEqual([]);
    }
  }, 60_000);
});

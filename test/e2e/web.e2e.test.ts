import { promises as fs } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { startUp, tempDir } from '../helpers/cli.js';
import { alterFashionItem } from '../helpers/alterations.js';

/**
 * `imgsearch up` end to end in headless Chromium (Debian's, driven by playwright-core): the page
 * searches by an uploaded image and by "more like this", and shows pipeline status with rejects.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const N = 40;

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 250));
  }
}

describe('web page under imgsearch up', () => {
  let work: string;
  let bucket: string;
  let server: Awaited<ReturnType<typeof startUp>>;
  let browser: Browser;

  beforeAll(async () => {
    work = await tempDir('web');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const { images, labels, classNames } = await readFashionMnist({ split: 'test', limit: N });
    for (let i = 0; i < N; i++) {
      await fs.writeFile(path.join(bucket, `item-${i}.png`), await fashionMnistPng(images[i]!));
      await fs.writeFile(path.join(bucket, `item-${i}.json`), JSON.stringify({ labels: [classNames[labels[i]!]] }));
    }
    await fs.writeFile(path.join(bucket, 'notes.jpg'), 'this is a text file, not a JPEG');
    server = await startUp({ cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket } });
    await waitFor(async () => {
      const s = (await (await fetch(`${server.url}/api/status`)).json()) as { indexed: number; rejected: { count: number } };
      return s.indexed === N && s.rejected.count === 1 ? s : undefined;
    }, 120_000);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('uploads an image, shows results with scores, and "more like this" searches again', async () => {
    const query = path.join(work, 'query.jpg');
    await fs.writeFile(query, await alterFashionItem(await fs.readFile(path.join(bucket, 'item-7.png')), 7));
    const page = await browser.newPage();
    await page.goto(server.url);
    await page.setInputFiles('#image-input', query);
    await page.click('#image-form button[type=submit]');
    await page.waitForSelector('.result');
    const names = await page.locator('.result .name').allTextContents();
    expect(names.length).toBeGreaterThan(0);
    expect(names[0]).toContain('item-7.png');
    expect(await page.locator('.result .score').first().textContent()).toMatch(/score 0\.\d{4}|score 1\.0000/);
    // Thumbnails load from the API.
    await page.waitForFunction(
      () => {
        const img = document.querySelector<HTMLImageElement>('.result img');
        return img !== null && img.complete && img.naturalWidth > 0;
      },
      undefined,
      { timeout: 15_000 },
    );

    await page.locator('.result .more-like-this').nth(1).click();
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('More like'));
    expect(await page.locator('.result').count()).toBeGreaterThan(0);
    await page.screenshot({ path: path.join(work, 'page.png'), fullPage: true });
  });

  it('shows pipeline status with the rejected file and its reason', async () => {
    const page = await browser.newPage();
    await page.goto(server.url);
    await page.waitForSelector('#rejected tbody tr');
    const row = await page.locator('#rejected tbody tr').first().textContent();
    expect(row).toContain('notes.jpg');
    expect(row).toContain('not-an-image');
    expect(await page.locator('#count-indexed').textContent()).toBe(String(N));
  });

  it('makes a file dropped into the bucket searchable', async () => {
    const { images } = await readFashionMnist({ split: 'test', limit: 1, offset: 500 });
    await fs.writeFile(path.join(bucket, 'late.png'), await fashionMnistPng(images[0]!));
    await waitFor(async () => {
      const s = (await (await fetch(`${server.url}/api/status`)).json()) as { indexed: number };
      return s.indexed === N + 1 ? true : undefined;
    }, 60_000);
    const form = new FormData();
    form.append('image', new Blob([await fs.readFile(path.join(bucket, 'late.png'))]), 'late.png');
    const res = (await (await fetch(`${server.url}/api/search?k=3`, { method: 'POST', body: form })).json()) as { results: { name: string }[] };
    expect(res.results[0]!.name).toBe('late.png');
  });
});

import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retrainOutputSchema } from '../../shared/output-schemas.js';
import { launchChromium, screenshot, seriousA11yViolations } from '../helpers/browser.js';
import { runCli, startUp, tempDir } from '../helpers/cli.js';

/**
 * The models view after a real (small) retraining: both versions with their metrics and lineage,
 * the candidate's training curves and the gate's reasons, text search switched on by the text
 * tower, and rollback from the page.
 */
const IMAGES = 100;

describe('models view under imgsearch up', () => {
  let work: string;
  let server: Awaited<ReturnType<typeof startUp>>;
  let browser: Browser;
  let base: string;
  let candidate: string;
  let epochs: number;

  beforeAll(async () => {
    work = await tempDir('web-models');
    const env = { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: path.join(work, 'imgs') };
    const cli = async (...args: string[]) => {
      const r = await runCli(args, { cwd: work, env });
      expect(r.code, r.stderr).toBe(0);
      return r.stdout;
    };
    await cli('dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(IMAGES));
    await cli('ingest', 'imgs');
    // --margin 1 cannot be met: registered, held back by the gate; then promoted by hand, so a rollback has somewhere to go.
    const result = retrainOutputSchema.parse(JSON.parse(await cli('retrain', '--epochs', '4', '--hidden', '32', '--margin', '1', '--json')));
    candidate = result.candidate.version;
    base = result.current.version;
    epochs = result.candidate.training.history.length;
    await cli('model', 'promote', candidate);
    server = await startUp({ cwd: work, env });
    browser = await launchChromium();
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.stop();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('shows the versions, the training curves and the gate of the run, and rolls back', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${server.url}/#models`);
    await page.waitForSelector(`#models tbody tr[data-version="${candidate}"]`);
    const active = async () =>
      page.$$eval('#models tbody tr', (rows) => rows.filter((r) => r.children[1]!.textContent === 'yes').map((r) => (r as HTMLElement).dataset.version));
    expect(await active()).toEqual([candidate]);
    expect(await page.locator(`#models tbody tr[data-version="${candidate}"] td`).nth(2).textContent()).toBe(base);

    // The candidate (the trained version) opens by default: its curve has one point per epoch run.
    await page.waitForSelector('#training-curves svg');
    const label = await page.locator('#training-curves svg').first().getAttribute('aria-label');
    expect(label).toContain(`Training loss of ${candidate}`);
    expect(label).toContain(`loss: ${epochs} points`);
    expect(await page.locator('#training-curves svg').first().locator('path.series-0').getAttribute('d')).toMatch(
      new RegExp(`^M[^M]*(L[^L]*){${epochs - 1}}$`),
    );
    expect(await page.locator('.gate-reasons li').count()).toBeGreaterThan(0);
    expect(await page.locator('#model-detail').textContent()).toContain('held back');
    expect(await page.locator('.lineage').textContent()).toContain(base);
    await page.waitForFunction(() => document.querySelector('#model-line')?.textContent?.startsWith('model '));
    await screenshot(page, 'models');
    expect(await seriousA11yViolations(page)).toEqual([]);

    // The base version has no run: the page says so instead of drawing nothing.
    await page.locator(`#models tbody tr[data-version="${base}"] button`).click();
    expect(await page.locator('#model-detail').textContent()).toMatch(/no training curve stored/);

    // The active model now has a text tower: the page's text search is on and answers.
    await page.click('#tab-search');
    await page.waitForFunction(() => !document.querySelector<HTMLInputElement>('#text-input')!.disabled);
    expect(await page.locator('#text-note').isHidden()).toBe(true);
    await page.fill('#text-input', 'Trouser');
    await page.click('#text-form button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#results-title')?.textContent?.startsWith('“Trouser”'));
    expect(await page.locator('.result').count()).toBeGreaterThan(0);
    await page.click('#tab-models');

    await page.click('#rollback');
    await page.waitForFunction(() => /^Rolled back: model /.test(document.querySelector('#models-message')?.textContent ?? ''));
    expect(await page.locator('#models-message').textContent()).toContain(`model ${base} is active`);
    await page.waitForFunction((v) => document.querySelector(`#models tbody tr[data-version="${v}"] td:nth-child(2)`)?.textContent === 'yes', base);
    expect(await active()).toEqual([base]);
  }, 60_000);
});

import type { AddressInfo } from 'node:net';
import type { Browser } from 'playwright-core';
import { buildSearchApp, type StatusResponse } from '../shared/http/search-app.js';
import { silentLogger } from '../shared/logger.js';
import { mulberry32 } from '../shared/training/prng.js';
import { webDir } from '../shared/wiring/local.js';
import { launchChromium } from '../test/helpers/browser.js';

/**
 * The collection map through the browser: the page (web/map.js) served by the real search app in
 * headless Chromium, `GET /api/map` answered with a synthetic map of N points (10 seeded Gaussian
 * clusters, labels and clusters as the server sends them), so only the page's work is timed:
 * from the data's arrival (performance mark `map-data`) to the last point drawn (`map-drawn`),
 * and the longest main-thread task (PerformanceObserver 'longtask', tasks ≥ 50 ms) from the
 * navigation to the end of the drawing. Baseline in the same run: the same page drawing 1,000 points.
 */
export interface PageMapFigures {
  points: number;
  /** Median over runs: data arrived → every point drawn (ms). */
  renderMs: number;
  /** Median over runs: navigation start → every point drawn (ms). */
  fromNavigationMs: number;
  /** Longest main-thread task seen during any run (ms; 0 when none reached 50 ms). */
  longestTaskMs: number;
  runs: number;
}

export interface PageMapResult {
  baseline: PageMapFigures;
  measured: PageMapFigures;
  /** measured.renderMs / baseline.renderMs. */
  renderRatio: number;
}

function syntheticMap(points: number, seed: number): unknown {
  const rnd = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd());
  const k = 10;
  const centres = Array.from({ length: k }, () => [gauss() * 6, gauss() * 6]);
  const labels = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
  return {
    points: Array.from({ length: points }, (_, i) => {
      const c = Math.floor(rnd() * k);
      return {
        id: `id-${i}`,
        name: `item-${i}.png`,
        x: centres[c]![0]! + gauss(),
        y: centres[c]![1]! + gauss(),
        label: rnd() < 0.9 ? labels[c]! : null,
        cluster: c,
      };
    }),
    k,
    silhouette: Array.from({ length: 11 }, (_, i) => ({ k: i + 2, score: i + 2 === k ? 0.61 : 0.3 + rnd() * 0.2 })),
    method: 'pca',
    total: points,
    sample: points,
    computedAt: new Date().toISOString(),
  };
}

async function measureOnce(
  browser: Browser,
  url: string,
  body: string,
  points: number,
): Promise<{ renderMs: number; fromNavigationMs: number; longestTaskMs: number }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  try {
    // Injected through the DevTools protocol (not an inline script): the page's CSP stays as served.
    await page.addInitScript(() => {
      const w = window as unknown as { __longTasks: number[] };
      w.__longTasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) w.__longTasks.push(e.duration);
      }).observe({ type: 'longtask', buffered: true });
    });
    await page.route(/\/api\/map\?/, (route) => route.fulfill({ status: 200, contentType: 'application/json; charset=utf-8', body }));
    await page.goto(`${url}/#map`);
    await page.waitForSelector(`#map-canvas[data-points="${points}"]`, { timeout: 60_000 });
    // No named functions inside: tsx's keepNames would reference a helper the page does not have.
    return await page.evaluate(() => {
      const [data, drawn] = ['map-data', 'map-drawn'].map((name) => performance.getEntriesByName(name, 'mark')[0]!.startTime);
      return {
        renderMs: drawn! - data!,
        fromNavigationMs: drawn!,
        longestTaskMs: Math.max(0, ...(window as unknown as { __longTasks: number[] }).__longTasks),
      };
    });
  } finally {
    await page.close();
  }
}

async function figures(browser: Browser, url: string, points: number, runs: number): Promise<PageMapFigures> {
  const body = JSON.stringify(syntheticMap(points, 20261127));
  const samples = [];
  for (let r = 0; r < runs; r++) samples.push(await measureOnce(browser, url, body, points));
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return {
    points,
    renderMs: median(samples.map((s) => s.renderMs)),
    fromNavigationMs: median(samples.map((s) => s.fromNavigationMs)),
    longestTaskMs: Math.max(...samples.map((s) => s.longestTaskMs)),
    runs,
  };
}

export async function measurePageMap(options: { points?: number; baselinePoints?: number; runs?: number } = {}): Promise<PageMapResult> {
  const status: StatusResponse = {
    indexed: options.points ?? 10_000,
    pending: 0,
    queues: {},
    rejected: { count: 0, byReason: {}, items: [] },
    deadLettered: { count: 0, items: [] },
    model: { version: 'bench', dimension: 2, hasTextTower: false, name: 'bench' },
    index: null,
    ann: null,
    ignored: { count: 0, byReason: {}, items: [] },
    faults: [],
    asOf: new Date().toISOString(),
  };
  const notHere = async (): Promise<never> => {
    throw new Error('the map bench runs no searches');
  };
  const app = await buildSearchApp({
    search: { byImage: notHere, similarTo: notHere, byText: notHere },
    status: async () => status,
    getDocument: async () => null,
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const browser = await launchChromium();
  try {
    const runs = options.runs ?? 3;
    const baseline = await figures(browser, url, options.baselinePoints ?? 1_000, runs);
    const measured = await figures(browser, url, options.points ?? 10_000, runs);
    return { baseline, measured, renderRatio: measured.renderMs / Math.max(1e-9, baseline.renderMs) };
  } finally {
    await browser.close();
    await app.close();
  }
}

export function formatPageMap(r: PageMapResult): string[] {
  const row = (f: PageMapFigures, note = '') =>
    `| ${f.points.toLocaleString('en')}${note} | ${f.renderMs.toFixed(0)} | ${f.fromNavigationMs.toFixed(0)} | ${f.longestTaskMs.toFixed(0)} | ${f.runs} |`;
  return [
    '| points | data → drawn (ms, median) | navigation → drawn (ms, median) | longest main-thread task (ms, max) | runs |',
    '|---:|---:|---:|---:|---:|',
    row(r.baseline, ' (baseline)'),
    row(r.measured),
    `render time ratio ${r.measured.points.toLocaleString('en')} / ${r.baseline.points.toLocaleString('en')} points: ${r.renderRatio.toFixed(2)}×; targets: ≤ 3,000 ms drawn, no task > 200 ms`,
  ];
}

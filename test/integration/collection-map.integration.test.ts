import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalProduct, type LocalProduct } from '../../cli/commands/up.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { silentLogger } from '../../shared/logger.js';
import type { MapAnswer } from '../../shared/services/collection-map.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';
import { openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import { mapOutputSchema } from '../../shared/output-schemas.js';
import { runCli, tempDir } from '../helpers/cli.js';

/**
 * The collection map under a real `imgsearch up` (in-process): Fashion-MNIST images embedded by the
 * default model into the embedded LanceDB index through the normal pipeline, each with its label
 * sidecar (as `imgsearch dataset fashion-mnist` writes them), then mapped through the HTTP API.
 */
const N = 300;

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Share of points whose cluster's most common label is theirs. */
function purity(points: { cluster: number; label: string | null }[], clusterOf: (i: number) => number = (i) => points[i]!.cluster): number {
  const counts = new Map<number, Map<string, number>>();
  points.forEach((p, i) => {
    const byLabel = counts.get(clusterOf(i)) ?? new Map<string, number>();
    byLabel.set(p.label ?? '', (byLabel.get(p.label ?? '') ?? 0) + 1);
    counts.set(clusterOf(i), byLabel);
  });
  let kept = 0;
  for (const byLabel of counts.values()) kept += Math.max(...byLabel.values());
  return kept / points.length;
}

describe('collection map on a real LanceDB index of Fashion-MNIST images', () => {
  let work: string;
  let runtime: LocalRuntime;
  let product: LocalProduct;
  let images: Buffer[];
  let labels: string[];
  let cliEnv: Record<string, string> = {};

  beforeAll(async () => {
    work = await tempDir('collection-map');
    const bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const fm = await readFashionMnist({ split: 'test', limit: N });
    images = await Promise.all(fm.images.map((im) => fashionMnistPng(im)));
    labels = fm.labels.map((l) => fm.classNames[l]!);
    for (let i = 0; i < N; i++) {
      await fs.writeFile(path.join(bucket, `fm-${i}.png`), images[i]!);
      await fs.writeFile(path.join(bucket, `fm-${i}.json`), JSON.stringify({ labels: [labels[i]], caption: labels[i] }));
    }
    cliEnv = { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket };
    const config = configFromEnv(parseEnv({ ...cliEnv, IMGSEARCH_PORT: '0', LOG_LEVEL: 'silent' }), work);
    runtime = await openLocalRuntime(config, { logger: silentLogger });
    product = await startLocalProduct(runtime);
    await waitFor(async () => ((await (await runtime.liveIndex()).count()) === N ? true : undefined), 180_000);
  }, 240_000);

  afterAll(async () => {
    await product?.stop();
    await runtime?.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  const get = async (url: string) => {
    const res = await fetch(`${product.url}${url}`);
    return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
  };

  it('maps the whole collection with labels from the index; clusters are far purer than chance', async () => {
    const auto = await get('/api/map?sample=10000');
    expect(auto.status).toBe(200);
    const map = auto.body as unknown as MapAnswer;
    expect(map.total).toBe(N);
    expect(map.sample).toBe(N);
    expect(map.points).toHaveLength(N);
    expect(map.silhouette.map((s) => s.k)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const byName = new Map(map.points.map((p) => [p.name, p]));
    for (let i = 0; i < N; i += 37) expect(byName.get(`fm-${i}.png`)!.label).toBe(labels[i]);

    // k = 10 (the number of classes) against the same cluster sizes dealt out at random (seeded, 20 deals).
    const ten = (await get('/api/map?sample=10000&k=10')).body as unknown as MapAnswer;
    expect(ten.k).toBe(10);
    expect(ten.points.map((p) => p.id)).toEqual(map.points.map((p) => p.id));
    const found = purity(ten.points);
    let chance = 0;
    for (let deal = 0; deal < 20; deal++) {
      const order = shuffledIndices(N, mulberry32(deal + 1));
      chance += purity(ten.points, (i) => ten.points[order[i]!]!.cluster) / 20;
    }
    expect(found).toBeGreaterThan(2 * chance);
    expect(found).toBeGreaterThan(0.45);
  });

  it('a search answers while a map is computed, and locate puts its query and results on the map', async () => {
    // A new sample size: a new computation starts with this request.
    const mapping = get('/api/map?sample=299&method=pca');
    let mapDone = false;
    void mapping.then(() => (mapDone = true));
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(images[5]!)], { type: 'image/png' }), 'query.png');
    const res = await fetch(`${product.url}/api/search?k=5`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    expect(mapDone).toBe(false);
    const search = (await res.json()) as { queryId: string; results: { id: string; name: string }[] };
    expect(search.results[0]!.name).toBe('fm-5.png');

    const map = (await mapping).body as unknown as MapAnswer;
    expect(map.method).toBe('pca');
    const ids = search.results.map((r) => r.id);
    const located = await get(`/api/map/locate?queryId=${search.queryId}&ids=${ids.map(encodeURIComponent).join(',')}`);
    expect(located.status).toBe(200);
    const { query, results } = located.body as { query: { x: number; y: number }; results: { id: string; x: number; y: number }[] };
    const pointOf = new Map(map.points.map((p) => [p.id, p]));
    for (const r of results) {
      const p = pointOf.get(r.id);
      if (p) expect([r.x, r.y]).toEqual([p.x, p.y]);
    }
    expect(results.map((r) => r.id)).toEqual(ids);
    // The query is fm-5.png itself: its vector is that image's, so it lies where the image does.
    const self = results[0]!;
    expect(Math.abs(query.x - self.x)).toBeLessThan(1e-3);
    expect(Math.abs(query.y - self.y)).toBeLessThan(1e-3);
  });

  it('UMAP follows in the background and keeps same-label images together', async () => {
    const umap = await waitFor(async () => {
      const r = await get('/api/map?sample=10000&method=umap');
      if (r.status === 202) expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      return r.status === 200 ? (r.body as unknown as MapAnswer) : undefined;
    }, 120_000);
    expect(umap.method).toBe('umap');
    let agree = 0;
    for (const p of umap.points) {
      const nearest = umap.points
        .filter((q) => q !== p)
        .map((q) => ({ q, d: (q.x - p.x) ** 2 + (q.y - p.y) ** 2 }))
        .sort((a, b) => a.d - b.d)
        .slice(0, 10);
      agree += nearest.filter(({ q }) => q.label === p.label).length / 10;
    }
    // Chance: about 0.1 (10 balanced classes).
    expect(agree / umap.points.length).toBeGreaterThan(0.4);
  });

  it('`imgsearch map --json` prints the silhouette chart and each cluster with its top label (schema-checked); bad flags are usage errors', async () => {
    const run = await runCli(['map', '--k', '10', '--json'], { cwd: work, env: cliEnv });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const out = mapOutputSchema.parse(JSON.parse(run.stdout));
    expect(out).toMatchObject({ method: 'pca', total: N, sample: N, k: 10 });
    expect(out.points).toBeUndefined();
    expect(out.clusters).toHaveLength(10);
    expect(out.clusters.reduce((s, c) => s + c.images, 0)).toBe(N);
    expect(out.purity).toBeGreaterThan(0.45);
    const bad = await runCli(['map', '--k', '13'], { cwd: work, env: cliEnv });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--k.*expected a whole number from 2 to 12/);
  });
});

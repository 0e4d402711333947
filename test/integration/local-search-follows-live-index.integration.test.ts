import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalProduct, type LocalProduct } from '../../cli/commands/up.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { documentId } from '../../shared/contracts.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { CapabilityError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import { reindexFromFeatures } from '../../shared/services/reindex.js';
import { SearchService } from '../../shared/services/search-service.js';
import { openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import { tempDir } from '../helpers/cli.js';

/**
 * `imgsearch up` during a promotion (real model, real LanceDB, its real HTTP app): the registry's
 * active model moves first, the alias only once the new model's index is built. Meanwhile the page's
 * searches keep answering with the model the live index was built with, as the cloud search
 * service does, while the pipeline embeds with the new active model; after the swap they use the
 * new model.
 */
const N = 6;

interface SearchAnswer {
  modelVersion: string;
  results: { id: string; score: number }[];
}

async function waitFor<T>(fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('local search follows the live index across a promotion', () => {
  let work: string;
  let bucket: string;
  let runtime: LocalRuntime;
  let product: LocalProduct;
  let images: Buffer[];
  let v1: string;
  let v2: string;

  const searchByImage = async (image: Buffer): Promise<{ status: number; body: SearchAnswer & { message?: string } }> => {
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'query.png');
    const res = await fetch(`${product.url}/api/search?k=3`, { method: 'POST', body: form });
    return { status: res.status, body: (await res.json()) as SearchAnswer & { message?: string } };
  };
  const similarTo = async (id: string): Promise<{ status: number; body: SearchAnswer }> => {
    const res = await fetch(`${product.url}/api/search?k=3&similarTo=${encodeURIComponent(id)}`);
    return { status: res.status, body: (await res.json()) as SearchAnswer };
  };

  beforeAll(async () => {
    work = await tempDir('follow-live');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const fm = await readFashionMnist({ split: 'test', limit: N });
    images = await Promise.all(fm.images.map((im) => fashionMnistPng(im)));
    for (let i = 0; i < N; i++) await fs.writeFile(path.join(bucket, `item-${i}.png`), images[i]!);
    const config = configFromEnv(
      parseEnv({ IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket, IMGSEARCH_PORT: '0', LOG_LEVEL: 'silent' }),
      work,
    );
    runtime = await openLocalRuntime(config, { logger: silentLogger });
    product = await startLocalProduct(runtime);
    // The files already in the folder are caught up by `up`'s reconciliation.
    await waitFor(async () => ((await (await runtime.liveIndex()).count()) === N ? true : undefined), 60_000);
    v1 = runtime.model.current().modelVersion;

    // A second version of the same network (same base embeddings), registered and promoted the
    // way `model promote` starts: the registry first, the index later.
    const active = (await runtime.registry.active())!;
    const dir = await runtime.registry.localPath(active.version);
    const files: Record<string, Buffer> = {};
    for (const name of await fs.readdir(dir)) {
      if (name === 'manifest.json' || name === 'meta.json') continue; // written by the registry itself
      if ((await fs.stat(path.join(dir, name))).isFile()) files[name] = await fs.readFile(path.join(dir, name));
    }
    v2 = `${active.version}-promoted`;
    await runtime.registry.register({
      version: v2,
      parent: active.version,
      manifest: { ...active.manifest, version: v2 },
      files,
      lineage: { test: 'follow-live' },
    });
    await runtime.registry.promote(v2);
    // What `up`'s model follower does on its next tick.
    await runtime.model.refresh();
  }, 120_000);

  afterAll(async () => {
    await product?.stop();
    await runtime?.close();
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it("the pipeline embeds with the promoted model while the alias still points at the previous model's index", async () => {
    expect(runtime.model.current().modelVersion).toBe(v2);
    expect((await runtime.catalog.live())!.modelVersion).toBe(v1);
    // Without following the live index, this is where searches answered 409.
    const refusing = new SearchService(
      () => runtime.model.current(),
      () => runtime.live.get(),
    );
    await expect(refusing.byImage(images[0]!, { k: 3 })).rejects.toThrow(CapabilityError);
  });

  it('searches by image and "more like this" answer with the live index\'s model, not 409', async () => {
    const byImage = await searchByImage(images[3]!);
    expect(byImage.status, byImage.body.message).toBe(200);
    expect(byImage.body.modelVersion).toBe(v1);
    expect(byImage.body.results[0]).toMatchObject({ id: documentId(runtime.bucket.bucket, 'item-3.png') });
    expect(byImage.body.results[0]!.score).toBeGreaterThan(0.99);

    const similar = await similarTo(documentId(runtime.bucket.bucket, 'item-1.png'));
    expect(similar.status).toBe(200);
    expect(similar.body.modelVersion).toBe(v1);
    expect(similar.body.results.length).toBeGreaterThan(0);
    // Answering queries did not move the pipeline back to the previous model.
    expect(runtime.model.current().modelVersion).toBe(v2);
  });

  it('after the alias swap, searches use the promoted model', async () => {
    await reindexFromFeatures({ catalog: runtime.catalog, features: runtime.features, embedder: runtime.model.current(), logger: silentLogger });
    expect((await runtime.catalog.live())!.modelVersion).toBe(v2);
    // Within the live-index TTL the previous index may still answer; either way never a 409.
    const answer = await waitFor(async () => {
      const res = await searchByImage(images[3]!);
      expect(res.status, res.body.message).toBe(200);
      return res.body.modelVersion === v2 ? res.body : undefined;
    }, 15_000);
    expect(answer.results[0]).toMatchObject({ id: documentId(runtime.bucket.bucket, 'item-3.png') });
    expect(runtime.model.current().modelVersion).toBe(v2);
  });
});

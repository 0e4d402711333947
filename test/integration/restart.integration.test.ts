import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalProduct, type LocalProduct } from '../../cli/commands/up.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { documentId, TOPICS, type ImageEvent } from '../../shared/contracts.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { silentLogger } from '../../shared/logger.js';
import type { ReconcileResult } from '../../shared/services/reconcile.js';
import { openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import { tempDir } from '../helpers/cli.js';

/**
 * `imgsearch up` restarted over a folder it has indexed (real model, real LanceDB, real file
 * queue, the real watcher): the restart costs what changed while it was down, not what exists
 * (issue 15, item 5). Every message the product publishes is counted at the queue.
 */
const N = 8;

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('imgsearch up restarted over an indexed folder', () => {
  let work: string;
  let bucket: string;
  let images: Buffer[];
  let runtime: LocalRuntime | null = null;
  let product: LocalProduct | null = null;
  let published: { topic: string; data: ImageEvent }[] = [];
  let caughtUp: ReconcileResult | null = null;

  const open = async (): Promise<void> => {
    const config = configFromEnv(
      parseEnv({ IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: bucket, IMGSEARCH_PORT: '0', LOG_LEVEL: 'silent' }),
      work,
    );
    runtime = await openLocalRuntime(config, { logger: silentLogger });
    // Every message put on a queue, whoever puts it there (reconcile, watcher, workers): the file
    // queue's publish() goes through publishBatch().
    published = [];
    const bus = runtime.bus;
    const publishBatch = bus.publishBatch.bind(bus);
    bus.publishBatch = async (topic, items) => {
      for (const item of items) published.push({ topic, data: item.data as ImageEvent });
      return publishBatch(topic, items);
    };
    product = await startLocalProduct(runtime);
    // Searches answer from here on; the catch-up with the folder runs beside them.
    caughtUp = await product.caughtUp;
  };
  const close = async (): Promise<void> => {
    await product?.stop();
    await runtime?.close();
    product = null;
    runtime = null;
  };
  const pending = async (): Promise<number> => {
    const res = await fetch(`${product!.url}/api/status`);
    return ((await res.json()) as { pending: number }).pending;
  };
  const queued = async (): Promise<number> => {
    let n = 0;
    for (const topic of [TOPICS.imageEvents, TOPICS.embeddings]) {
      const s = await runtime!.bus.stats(topic);
      n += s.ready + s.inflight;
    }
    return n;
  };
  const settled = async (count: number): Promise<void> =>
    waitFor(async () => (await (await runtime!.liveIndex()).count()) === count && (await queued()) === 0, 90_000, `${count} documents indexed, queues empty`);

  beforeAll(async () => {
    work = await tempDir('restart');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    const fm = await readFashionMnist({ split: 'test', limit: N + 2 });
    images = await Promise.all(fm.images.map((im) => fashionMnistPng(im)));
    for (let i = 0; i < N; i++) await fs.writeFile(path.join(bucket, `item-${i}.png`), images[i]!);
    // Rejected for its content: not sent again while it stays the same.
    await fs.writeFile(path.join(bucket, 'broken.png'), Buffer.from('not an image at all'));
    await open();
    await settled(N);
    await waitFor(async () => (await runtime!.rejections.count()) === 1, 30_000, 'the broken file rejected');
    await close();
  }, 180_000);

  afterAll(async () => {
    await close();
  });

  it('enqueues nothing over the unchanged folder, and shows nothing pending', async () => {
    await open();
    // The watcher's settle time (awaitWriteFinish) and a worker poll or two: anything it were to
    // emit for files already there would be queued by now.
    await new Promise((r) => setTimeout(r, 1500));
    expect(published).toEqual([]);
    // Every file compared and found as indexed (or, the broken one, rejected) at its generation.
    expect(caughtUp).toEqual({ published: 0, deleted: 0, ignored: 0, unchanged: N + 1 });
    expect(await queued()).toBe(0);
    expect(await pending()).toBe(0);
    expect(await (await runtime!.liveIndex()).count()).toBe(N);
    await close();
  }, 120_000);

  it('handles exactly the files changed, added and deleted while it was down', async () => {
    // Replaced with another image: a newer generation.
    await fs.writeFile(path.join(bucket, 'item-0.png'), images[N]!);
    await fs.writeFile(path.join(bucket, 'added.png'), images[N + 1]!);
    await fs.rm(path.join(bucket, 'item-1.png'));
    const changedGeneration = (await fs.stat(path.join(bucket, 'item-0.png'), { bigint: true })).ctimeNs / 1000n;
    await open();
    const events = published.filter((p) => p.topic === TOPICS.imageEvents).map((p) => [p.data.name, p.data.eventType]);
    expect(events.sort()).toEqual([
      ['added.png', 'finalize'],
      ['item-0.png', 'finalize'],
      ['item-1.png', 'delete'],
    ]);
    await settled(N);
    const index = await runtime!.liveIndex();
    const id = (name: string) => documentId(path.resolve(bucket), name);
    expect((await index.get(id('item-0.png')))?.generation).toBe(changedGeneration.toString());
    expect(await index.get(id('added.png'))).not.toBeNull();
    expect(await index.get(id('item-1.png'))).toBeNull();
    // Only those three went through the pipeline: three image events, two embeddings.
    expect(published.filter((p) => p.topic === TOPICS.imageEvents)).toHaveLength(3);
    expect(published.filter((p) => p.topic === TOPICS.embeddings).length).toBeLessThanOrEqual(3);
    await close();
  }, 180_000);
});

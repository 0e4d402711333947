import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalizeEvent } from '../../shared/adapters/local/folder-watcher.js';
import { documentId, TOPICS, type ImageEvent } from '../../shared/contracts.js';
import { fashionMnistPng, readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import { embedBatch, settleEmbedOutcomes } from '../../shared/handlers/embed-batch.js';
import { tempDir } from '../helpers/cli.js';
import { openTestPipeline } from '../helpers/local-runtime.js';

/** Polls `done` until it holds (the pipeline works in the background), failing after `ms`. */
async function until(done: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Bad input never blocks good input: every file ends indexed once at its newest generation or
 * rejected with a clear reason, visible in the rejection log.
 */
describe('pipeline with bad input (real model, real LanceDB, real files)', () => {
  let work: string;
  let bucket: string;
  let t: Awaited<ReturnType<typeof openTestPipeline>>;
  let good: Buffer[];

  const write = async (name: string, data: Buffer | string) => {
    await fs.writeFile(path.join(bucket, name), data);
    const info = await t.runtime.bucket.stat(name);
    return finalizeEvent(info!);
  };

  beforeAll(async () => {
    work = await tempDir('badinput');
    bucket = path.join(work, 'bucket');
    await fs.mkdir(bucket, { recursive: true });
    // A low pixel limit stands in for a decompression bomb without allocating one.
    t = await openTestPipeline(work, { IMGSEARCH_MAX_PIXELS: String(1000 * 1000), IMGSEARCH_BATCH_SIZE: '8' });
    const { images } = await readFashionMnist({ split: 'test', limit: 6 });
    good = await Promise.all(images.map((im) => fashionMnistPng(im)));
  });

  afterAll(async () => t?.close());

  it('rejects each kind of bad file with its reason and indexes the good ones beside them', async () => {
    const png = good[0]!;
    const jpeg = await sharp(png).resize(64, 64).jpeg().toBuffer();
    const cases: [string, Buffer | string, string | null][] = [
      ['good-0.png', good[0]!, null],
      ['empty.jpg', Buffer.alloc(0), 'empty-file'],
      ['truncated.jpg', jpeg.subarray(0, Math.floor(jpeg.length / 2)), 'corrupt-image'],
      ['corrupt.png', Buffer.concat([png.subarray(0, 40), Buffer.alloc(200, 7)]), 'corrupt-image'],
      ['text.jpg', 'hello, I am a text file with a .jpg name\n', 'not-an-image'],
      ['vector.svg', '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>', 'unsupported-format'],
      [
        'bomb.png',
        await sharp({ create: { width: 1200, height: 1200, channels: 3, background: '#808080' } })
          .png()
          .toBuffer(),
        'too-many-pixels',
      ],
      ['good-1.png', good[1]!, null],
    ];
    for (const [name, data] of cases) await t.publish(await write(name, data));
    await t.run();

    const index = await t.runtime.liveIndex();
    const rejected = await t.runtime.rejections.list();
    for (const [name, , reason] of cases) {
      const id = documentId(bucket, name);
      if (reason === null) {
        expect(await index.get(id), name).not.toBeNull();
      } else {
        expect(await index.get(id), name).toBeNull();
        const r = rejected.find((x) => x.id === id);
        expect(r?.reason, `${name}: ${JSON.stringify(r)}`).toBe(reason);
        expect(r!.detail.length).toBeGreaterThan(5);
      }
    }
  });

  it('handles a file replaced while it is being processed: only the newest generation is indexed', async () => {
    const first = await write('replaced.png', good[2]!);
    await new Promise((r) => setTimeout(r, 20));
    const second = await write('replaced.png', good[3]!);
    expect(BigInt(second.generation)).toBeGreaterThan(BigInt(first.generation));
    await t.publish(first); // the event of the old version arrives, but the file already changed
    await t.publish(second);
    await t.run();
    const doc = await (await t.runtime.liveIndex()).get(documentId(bucket, 'replaced.png'));
    expect(doc?.generation).toBe(second.generation);
    expect(t.embedded.some((o) => o.status === 'superseded' && o.id === documentId(bucket, 'replaced.png'))).toBe(true);
  });

  it('indexes an event delivered twice once, and ignores an older one arriving late', async () => {
    const older = await write('dup.png', good[4]!);
    await new Promise((r) => setTimeout(r, 20));
    const newer = await write('dup.png', good[5]!);
    await t.publish(newer);
    await t.publish(newer);
    await t.run();
    // The stale event arrives after the newer one was indexed: the file changed, so it is skipped.
    await t.publish(older);
    await t.run();
    const index = await t.runtime.liveIndex();
    const id = documentId(bucket, 'dup.png');
    expect((await index.get(id))?.generation).toBe(newer.generation);
    const hits = await index.query((await index.get(id))!.vector, { k: 50 });
    expect(hits.filter((h) => h.id === id)).toHaveLength(1);
  });

  it('deletes remove only generations they have seen; a late finalize of a deleted file stops at the embed stage', async () => {
    const ev = await write('gone.png', good[0]!);
    await t.publish(ev);
    await t.run();
    const id = documentId(bucket, 'gone.png');
    const index = await t.runtime.liveIndex();
    expect(await index.get(id)).not.toBeNull();
    const del: ImageEvent = { ...ev, eventType: 'delete', eventTime: new Date().toISOString() };
    await fs.rm(path.join(bucket, 'gone.png'));
    await t.publish(del);
    await t.publish(ev); // duplicate finalize arrives after the delete
    await t.run();
    expect(await index.get(id)).toBeNull();
    // It stops at the embed stage (unchanged or superseded, by timing): the upsert stage sees only the first finalize and the delete.
    expect(t.embedded.filter((o) => 'id' in o && o.id === id && o.status === 'embedded')).toHaveLength(1);
    expect(t.upserted.filter((o) => 'id' in o && o.id === id).map((o) => o.status)).toEqual(['created', 'deleted']);
  });

  it('a delete leaves a tombstone in the index: the embedding of the deleted generation, delivered after it, never resurrects it', async () => {
    const ev = await write('late.png', good[2]!);
    const id = documentId(bucket, 'late.png');
    const upsertedFor = () => t.upserted.filter((o) => 'id' in o && o.id === id).map((o) => o.status);
    // The finalize is delivered twice (at-least-once) and the embed step embeds both copies while the file exists.
    await t.publish(ev);
    await t.publish(ev);
    const events = await t.runtime.bus.pull(TOPICS.imageEvents, { maxMessages: 10, ackDeadlineSeconds: 60 });
    expect(events.map((d) => (d.data as ImageEvent).name)).toEqual(['late.png', 'late.png']);
    const embedded = await embedBatch(events, t.runtime.embedDeps());
    expect(embedded.map((o) => o.status)).toEqual(['embedded', 'embedded']);
    await settleEmbedOutcomes(t.runtime.bus, embedded);
    // An upsert worker leases one of the two embeddings of that generation and stalls.
    const [held] = await t.runtime.bus.pull(TOPICS.embeddings, { maxMessages: 1, ackDeadlineSeconds: 600 });
    expect(held!.data).toMatchObject({ op: 'upsert', id, generation: ev.generation });

    // Meanwhile the other copy is indexed, then the file is deleted and the delete reaches the index.
    t.workers.start();
    try {
      await until(() => upsertedFor().includes('created'));
      await fs.rm(path.join(bucket, 'late.png'));
      await t.publish({ ...ev, eventType: 'delete', eventTime: new Date().toISOString() });
      await until(() => upsertedFor().includes('deleted'));
      const index = await t.runtime.liveIndex();
      expect(await index.get(id)).toBeNull();

      // The stalled worker's lease ends: the embedding of the deleted generation is delivered after the delete.
      await t.runtime.bus.nack(TOPICS.embeddings, [held!.ackId], 'upsert worker stalled');
      await t.workers.drain();
      expect(upsertedFor()).toEqual(['created', 'deleted', 'stale']);
      expect(await index.get(id)).toBeNull();
      expect(await index.generations([id])).toEqual(new Map());
      expect(await t.runtime.features.get(id)).toBeNull();
    } finally {
      await t.workers.stop();
    }
  });

  it('dead-letters a malformed event with its reason and keeps going', async () => {
    await t.runtime.bus.publish('image-events', { bucket: bucket, name: 'x.png', generation: 'not-a-number' });
    await t.publish(await write('after-malformed.png', good[1]!));
    await t.run();
    const dead = await t.runtime.bus.listDeadLetters('image-events');
    expect(dead.some((d) => /malformed image event/.test(d.reason))).toBe(true);
    expect(await (await t.runtime.liveIndex()).get(documentId(bucket, 'after-malformed.png'))).not.toBeNull();
  });
});

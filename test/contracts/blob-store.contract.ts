import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GenerationMismatchError, NotFoundError } from '../../shared/errors.js';
import type { BlobInfo, BlobStore } from '../../shared/ports/blob-store.js';

/** The behaviour every BlobStore adapter must have (folder, GCS). */
export interface BlobStoreFixture {
  store: BlobStore;
  cleanup(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeBlobStoreContract(label: string, makeStore: () => Promise<BlobStoreFixture>): void {
  describe(`BlobStore contract: ${label}`, () => {
    let fx: BlobStoreFixture;
    let store: BlobStore;
    beforeEach(async () => {
      fx = await makeStore();
      store = fx.store;
    });
    afterEach(async () => fx.cleanup());

    it('writes, stats and reads an object, with a numeric generation', async () => {
      const info = await store.write('photos/a.jpg', Buffer.from('jpeg bytes'));
      expect(info).toMatchObject({ bucket: store.bucket, name: 'photos/a.jpg', size: 10, contentType: 'image/jpeg' });
      expect(info.generation).toMatch(/^\d+$/);
      expect(await store.stat('photos/a.jpg')).toEqual(info);
      expect((await store.read('photos/a.jpg')).toString()).toBe('jpeg bytes');
      expect(await store.read('photos/a.jpg', { generation: info.generation })).toEqual(Buffer.from('jpeg bytes'));
      expect(store.uri('photos/a.jpg')).toMatch(/^(gs|file):\/\/.*photos\/a\.jpg$/);
    });

    it('gives a replaced object a newer generation; a read pinned to the old one fails', async () => {
      const first = await store.write('a.png', Buffer.from('v1'));
      await sleep(5);
      const second = await store.write('a.png', Buffer.from('v2'));
      expect(BigInt(second.generation) > BigInt(first.generation)).toBe(true);
      await expect(store.read('a.png', { generation: first.generation })).rejects.toBeInstanceOf(GenerationMismatchError);
    });

    it('reports absent objects: stat → null, read → NotFoundError', async () => {
      expect(await store.stat('nope.jpg')).toBeNull();
      await expect(store.read('nope.jpg')).rejects.toBeInstanceOf(NotFoundError);
      await expect(store.read('nope.jpg', { generation: '1' })).rejects.toBeInstanceOf(NotFoundError);
    });

    it('refuses reads above maxBytes', async () => {
      await store.write('big.bin', Buffer.alloc(100));
      await expect(store.read('big.bin', { maxBytes: 99 })).rejects.toThrow(/100/);
      expect((await store.read('big.bin', { maxBytes: 100 })).length).toBe(100);
    });

    it('lists recursively, by prefix', async () => {
      await store.write('x/1.jpg', 'a');
      await store.write('x/y/2.jpg', 'b');
      await store.write('z.jpg', 'c');
      const all: BlobInfo[] = [];
      for await (const b of store.list()) all.push(b);
      expect(all.map((b) => b.name).sort()).toEqual(['x/1.jpg', 'x/y/2.jpg', 'z.jpg']);
      const under: string[] = [];
      for await (const b of store.list('x/')) under.push(b.name);
      expect(under.sort()).toEqual(['x/1.jpg', 'x/y/2.jpg']);
    });

    it('deletes objects (and deleting an absent one is not an error)', async () => {
      await store.write('d.jpg', 'x');
      await store.delete('d.jpg');
      expect(await store.stat('d.jpg')).toBeNull();
      await store.delete('d.jpg');
    });
  });
}

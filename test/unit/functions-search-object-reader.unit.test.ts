import { describe, expect, it } from 'vitest';
import { gcsObjectReader } from '../../functions/search-server.js';
import { NotFoundError } from '../../shared/errors.js';
import type { BlobStore } from '../../shared/ports/blob-store.js';

/**
 * The cloud search service reads originals from the images bucket with the smaller of its own cap
 * (MAX_BYTES) and the route's limit (security review, finding 3: an object between the two was
 * downloaded whole before the route answered 413).
 */
function recordingImages(): { store: BlobStore; reads: { name: string; maxBytes?: number }[] } {
  const reads: { name: string; maxBytes?: number }[] = [];
  const store = {
    bucket: 'p-iss-images',
    read: async (name: string, options: { maxBytes?: number } = {}) => {
      reads.push({ name, maxBytes: options.maxBytes });
      return Buffer.from('x');
    },
  } as unknown as BlobStore;
  return { store, reads };
}

describe('gcsObjectReader', () => {
  it("asks the bucket for at most the route's limit when it is below MAX_BYTES, and at most MAX_BYTES otherwise", async () => {
    const { store, reads } = recordingImages();
    const read = gcsObjectReader(store, 100 * 1024 * 1024);
    await read('gs://p-iss-images/a.jpg', { maxBytes: 32 * 1024 * 1024 });
    await read('gs://p-iss-images/b.jpg', { maxBytes: 500 * 1024 * 1024 });
    await read('gs://p-iss-images/c.jpg');
    expect(reads).toEqual([
      { name: 'a.jpg', maxBytes: 32 * 1024 * 1024 },
      { name: 'b.jpg', maxBytes: 100 * 1024 * 1024 },
      { name: 'c.jpg', maxBytes: 100 * 1024 * 1024 },
    ]);
  });

  it('refuses an object of another bucket without reading it', async () => {
    const { store, reads } = recordingImages();
    await expect(gcsObjectReader(store, 10)('gs://other/a.jpg')).rejects.toBeInstanceOf(NotFoundError);
    expect(reads).toEqual([]);
  });
});

import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ConcurrencyGate, OverloadedError } from '../../shared/http/limits.js';
import { ThumbnailCache } from '../../shared/http/thumbnails.js';

/**
 * Thumbnails of the results grid: a JPEG at most 256 px on its long side, upright, made once per
 * image version and kept in a cache bounded by bytes (least recently used out first); concurrent
 * requests share one decode, and decodes go through the gate (beyond it: 503).
 */
async function png(width: number, height: number, background = '#c33'): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 3, background } })
    .png()
    .toBuffer();
}

function counting(image: Buffer) {
  const reads: string[] = [];
  return {
    reads,
    read: (key: string) => async () => {
      reads.push(key);
      return image;
    },
  };
}

const roomy = () => new ConcurrencyGate('thumbnails', 2, 8);

describe('ThumbnailCache: the thumbnail', () => {
  it('is a JPEG scaled to fit 256×256, keeping the aspect ratio (small images scaled up)', async () => {
    const cache = new ThumbnailCache(roomy(), 1024 * 1024);
    const wide = await sharp(await cache.get('wide@1', async () => png(400, 200))).metadata();
    expect([wide.format, wide.width, wide.height]).toEqual(['jpeg', 256, 128]);
    const small = await sharp(await cache.get('small@1', async () => png(40, 30))).metadata();
    expect([small.format, small.width, small.height]).toEqual(['jpeg', 256, 192]);
  });

  it('is upright: the EXIF orientation is applied', async () => {
    // 60×30 pixels stored, EXIF orientation 6 (shown rotated 90°): a portrait image.
    const stored = await sharp({ create: { width: 60, height: 30, channels: 3, background: '#39c' } })
      .jpeg()
      .withMetadata({ orientation: 6 })
      .toBuffer();
    const cache = new ThumbnailCache(roomy(), 1024 * 1024);
    const meta = await sharp(await cache.get('rotated@1', async () => stored)).metadata();
    expect([meta.width, meta.height]).toEqual([128, 256]);
  });

  it('refuses an original above its pixel limit (a decompression bomb) and caches nothing for it', async () => {
    const cache = new ThumbnailCache(roomy(), 1024 * 1024, 100 * 100);
    const big = counting(await png(101, 100));
    await expect(cache.get('big@1', big.read('big'))).rejects.toThrow(/pixel limit/i);
    await expect(cache.get('big@1', big.read('big'))).rejects.toThrow(/pixel limit/i);
    expect(big.reads).toEqual(['big', 'big']);
    const ok = await cache.get('ok@1', async () => png(100, 100));
    expect((await sharp(ok).metadata()).width).toBe(256);
  });
});

describe('ThumbnailCache: caching', () => {
  it('reads and decodes an image version once; another version is read again', async () => {
    const cache = new ThumbnailCache(roomy(), 1024 * 1024);
    const source = counting(await png(40, 30));
    const first = await cache.get('a@1', source.read('a@1'));
    const again = await cache.get('a@1', source.read('a@1'));
    expect(again.equals(first)).toBe(true);
    await cache.get('a@2', source.read('a@2'));
    expect(source.reads).toEqual(['a@1', 'a@2']);
  });

  it('shares one read between concurrent requests for the same thumbnail', async () => {
    const cache = new ThumbnailCache(roomy(), 1024 * 1024);
    const source = counting(await png(40, 30));
    const thumbs = await Promise.all([1, 2, 3].map(() => cache.get('a@1', source.read('a@1'))));
    expect(source.reads).toEqual(['a@1']);
    expect(thumbs[1]!.equals(thumbs[0]!) && thumbs[2]!.equals(thumbs[0]!)).toBe(true);
  });

  it('does not keep a failure: the next request reads again', async () => {
    const cache = new ThumbnailCache(roomy(), 1024 * 1024);
    let calls = 0;
    const image = await png(40, 30);
    const flaky = async () => {
      calls += 1;
      if (calls === 1) throw new Error('object store unavailable');
      return image;
    };
    await expect(cache.get('a@1', flaky)).rejects.toThrow('object store unavailable');
    const thumb = await cache.get('a@1', flaky);
    expect((await sharp(thumb).metadata()).format).toBe('jpeg');
    await cache.get('a@1', flaky);
    expect(calls).toBe(2);
  });

  it('evicts the least recently used thumbnail once the cache holds more bytes than its bound', async () => {
    const image = await png(40, 30);
    const size = (await new ThumbnailCache(roomy(), 1024 * 1024).get('probe', async () => image)).length;
    // Room for two thumbnails, not three.
    const cache = new ThumbnailCache(roomy(), 2 * size + Math.floor(size / 2));
    const source = counting(image);
    await cache.get('a', source.read('a'));
    await cache.get('b', source.read('b'));
    await cache.get('a', source.read('a')); // a is now the most recently used
    await cache.get('c', source.read('c')); // evicts b
    expect(source.reads).toEqual(['a', 'b', 'c']);
    await cache.get('a', source.read('a'));
    await cache.get('c', source.read('c'));
    expect(source.reads).toEqual(['a', 'b', 'c']);
    await cache.get('b', source.read('b')); // read again; evicts a (least recently used)
    expect(source.reads).toEqual(['a', 'b', 'c', 'b']);
    await cache.get('c', source.read('c'));
    await cache.get('a', source.read('a'));
    expect(source.reads).toEqual(['a', 'b', 'c', 'b', 'a']);
  });

  it('keeps exactly as many bytes as its bound allows', async () => {
    const image = await png(40, 30);
    const size = (await new ThumbnailCache(roomy(), 1024 * 1024).get('probe', async () => image)).length;
    const cache = new ThumbnailCache(roomy(), 2 * size);
    const source = counting(image);
    for (const k of ['a', 'b', 'a', 'b']) await cache.get(k, source.read(k));
    expect(source.reads).toEqual(['a', 'b']);
  });

  it('keeps a thumbnail of exactly the bound', async () => {
    const image = await png(40, 30);
    const size = (await new ThumbnailCache(roomy(), 1024 * 1024).get('probe', async () => image)).length;
    const cache = new ThumbnailCache(roomy(), size);
    const source = counting(image);
    await cache.get('a', source.read('a'));
    await cache.get('a', source.read('a'));
    expect(source.reads).toEqual(['a']);
  });

  it('a thumbnail too large to keep does not push out the ones kept', async () => {
    const small = await png(40, 30);
    // Seeded noise: its JPEG is many times the size of a flat image's.
    let seed = 7;
    const pixels = Buffer.alloc(64 * 64 * 3, 0).map(() => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256);
    const noisy = await sharp(pixels, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    const probe = new ThumbnailCache(roomy(), 1024 * 1024);
    const smallSize = (await probe.get('s', async () => small)).length;
    const noisySize = (await probe.get('n', async () => noisy)).length;
    expect(noisySize).toBeGreaterThan(3 * smallSize);
    const cache = new ThumbnailCache(roomy(), 2 * smallSize);
    const source = counting(small);
    await cache.get('a', source.read('a'));
    await cache.get('noisy', async () => noisy);
    await cache.get('a', source.read('a'));
    expect(source.reads).toEqual(['a']);
  });

  it('never caches a thumbnail larger than the whole cache', async () => {
    const image = await png(40, 30);
    const size = (await new ThumbnailCache(roomy(), 1024 * 1024).get('probe', async () => image)).length;
    const cache = new ThumbnailCache(roomy(), size - 1);
    const source = counting(image);
    await cache.get('a', source.read('a'));
    await cache.get('a', source.read('a'));
    expect(source.reads).toEqual(['a', 'a']);
  });

  it('decodes through the gate: beyond its bound a new thumbnail is refused with 503, a cached one still served', async () => {
    const image = await png(40, 30);
    const cache = new ThumbnailCache(new ConcurrencyGate('thumbnails', 1, 0), 1024 * 1024);
    await cache.get('cached', async () => image);
    let open!: () => void;
    const opened = new Promise<void>((r) => (open = r));
    const slow = cache.get('slow', async () => {
      await opened;
      return image;
    });
    const shed = await cache.get('other', async () => image).catch((e: unknown) => e);
    expect(shed).toBeInstanceOf(OverloadedError);
    expect((shed as Error).message).toMatch(/thumbnails/);
    expect((await sharp(await cache.get('cached', async () => Promise.reject(new Error('not read')))).metadata()).format).toBe('jpeg');
    open();
    await slow;
  });
});

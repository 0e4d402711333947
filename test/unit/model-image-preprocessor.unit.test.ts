import sharp from 'sharp';
import { describe, expect, it, vi } from 'vitest';
import { ImageRejectedError, type RejectReason } from '../../shared/errors.js';
import { prepareImage } from '../../shared/model/image-preprocessor.js';
import type { ImageTower } from '../../shared/model/manifest.js';

const tower: ImageTower = {
  file: 'image.onnx',
  inputName: 'pixels',
  outputName: 'embedding',
  width: 8,
  height: 8,
  layout: 'NHWC',
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  resize: 'cover',
  dimension: 4,
};
const limits = { maxPixels: 1_000_000 };

function solid(width: number, height: number, colour: { r: number; g: number; b: number; alpha?: number }, channels: 3 | 4 = 3) {
  return sharp({ create: { width, height, channels, background: colour } });
}

async function rejection(buf: Buffer, maxPixels = limits.maxPixels): Promise<ImageRejectedError> {
  const err = await prepareImage(buf, tower, { maxPixels }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageRejectedError);
  return err as ImageRejectedError;
}

async function expectReason(buf: Buffer, reason: RejectReason, detail?: RegExp, maxPixels?: number) {
  const err = await rejection(buf, maxPixels);
  expect(err.reason).toBe(reason);
  if (detail) expect(err.detail).toMatch(detail);
}

/** A PNG whose IHDR claims width×height (with a valid CRC) but carries a 1×1 image's data. */
async function pngClaiming(width: number, height: number): Promise<Buffer> {
  const png = Buffer.from(await solid(1, 1, { r: 0, g: 0, b: 0 }).png().toBuffer());
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(crc32(png.subarray(12, 29)), 29); // CRC over "IHDR" + 13 data bytes
  return png;
}

function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('prepareImage rejects bad input with a reason', () => {
  it('empty-file for 0 bytes', async () => {
    await expectReason(Buffer.alloc(0), 'empty-file', /0 bytes/);
  });

  it('not-an-image for a text file named .jpg and for random bytes', async () => {
    await expectReason(Buffer.from('this is a shopping list, not a photo\n'), 'not-an-image');
    await expectReason(Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37) % 251)), 'not-an-image');
  });

  it('unsupported-format for SVG and PDF', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>');
    await expectReason(svg, 'unsupported-format', /svg/);
    await expectReason(Buffer.from('%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n'), 'unsupported-format', /pdf/);
  });

  it('corrupt-image for truncated PNG and JPEG and for garbage after a JPEG header', async () => {
    const noisy = sharp(Buffer.from(Array.from({ length: 64 * 64 * 3 }, (_, i) => (i * 7919) % 256)), { raw: { width: 64, height: 64, channels: 3 } });
    const png = await noisy.clone().png().toBuffer();
    const jpeg = await noisy.clone().jpeg().toBuffer();
    await expectReason(png.subarray(0, Math.floor(png.length * 0.6)), 'corrupt-image', /png/);
    await expectReason(jpeg.subarray(0, Math.floor(jpeg.length * 0.6)), 'corrupt-image', /jpeg/i);
    await expectReason(Buffer.concat([jpeg.subarray(0, 200), Buffer.alloc(800, 0x07)]), 'corrupt-image');
  });

  it('too-many-pixels from the header alone, before decoding, with the numbers', async () => {
    // The data is a 1×1 image: only the header check can see 20000×20000.
    await expectReason(await pngClaiming(20000, 20000), 'too-many-pixels', /^20000x20000 = 400000000 pixels exceeds the limit of 50000000$/, 50_000_000);
    const real = await solid(200, 100, { r: 1, g: 2, b: 3 }).png().toBuffer();
    await expectReason(real, 'too-many-pixels', /200x100 = 20000 pixels exceeds the limit of 19999/, 19_999);
  });

  it('too-many-pixels from the decoder when a header understates the size (a GIF whose screen is 2×2 around a 300×300 frame)', async () => {
    const gif = Buffer.from(await solid(300, 300, { r: 1, g: 2, b: 3 }).gif().toBuffer());
    gif.writeUInt16LE(2, 6); // logical screen width
    gif.writeUInt16LE(2, 8); // logical screen height
    await expectReason(gif, 'too-many-pixels', /^the gif image exceeds the limit of 1000 pixels$/, 1_000);
  });
});

describe('prepareImage decodes once', () => {
  it("PNG, JPEG, GIF and WebP are sized from their header without sharp's metadata(); TIFF and AVIF still go through it", async () => {
    const img = solid(20, 10, { r: 200, g: 100, b: 50 });
    const metadata = vi.spyOn(sharp.prototype, 'metadata');
    try {
      for (const buf of [
        await img.clone().png().toBuffer(),
        await img.clone().jpeg().toBuffer(),
        await img.clone().gif().toBuffer(),
        await img.clone().webp().toBuffer(),
      ]) {
        await prepareImage(buf, tower, limits);
      }
      expect(metadata).not.toHaveBeenCalled();
      await prepareImage(await img.clone().tiff().toBuffer(), tower, limits);
      await prepareImage(await img.clone().avif({ effort: 0 }).toBuffer(), tower, limits);
      expect(metadata).toHaveBeenCalledTimes(2);
    } finally {
      metadata.mockRestore();
    }
  });
});

describe('prepareImage output', () => {
  it('accepts jpeg, png, webp, gif, tiff and avif', async () => {
    const img = solid(20, 10, { r: 200, g: 100, b: 50 });
    const files = {
      jpeg: await img.clone().jpeg().toBuffer(),
      png: await img.clone().png().toBuffer(),
      webp: await img.clone().webp().toBuffer(),
      gif: await img.clone().gif().toBuffer(),
      tiff: await img.clone().tiff().toBuffer(),
      heif: await img.clone().avif({ effort: 0 }).toBuffer(),
    };
    for (const [format, buf] of Object.entries(files)) {
      const prepared = await prepareImage(buf, tower, limits);
      expect(prepared.format).toBe(format);
      expect([prepared.width, prepared.height]).toEqual([20, 10]);
      expect(prepared.pixels).toHaveLength(8 * 8 * 3);
      expect(prepared.pixels[0]).toBeCloseTo(200 / 255, 1);
    }
  });

  it('normalises per channel in the manifest layout', async () => {
    const png = await solid(4, 4, { r: 255, g: 0, b: 51 }).png().toBuffer();
    const nchw: ImageTower = { ...tower, layout: 'NCHW', mean: [0.5, 0.5, 0.5], std: [0.5, 0.25, 0.1] };
    const { pixels } = await prepareImage(png, nchw, limits);
    const area = 64;
    expect(pixels[0]).toBeCloseTo((1 - 0.5) / 0.5, 5); // R plane first
    expect(pixels[area]).toBeCloseTo((0 - 0.5) / 0.25, 5);
    expect(pixels[2 * area + 5]).toBeCloseTo((0.2 - 0.5) / 0.1, 4);
    const nhwc = (await prepareImage(png, tower, limits)).pixels;
    expect(Array.from(nhwc.slice(0, 3)).map((v) => Math.round(v * 255))).toEqual([255, 0, 51]);
  });

  it('hands raw bytes to a uint8 model, in its layout, without normalising', async () => {
    const png = await solid(4, 4, { r: 255, g: 0, b: 51 }).png().toBuffer();
    const nhwc = (await prepareImage(png, { ...tower, inputType: 'uint8' }, limits)).pixels;
    expect(nhwc).toBeInstanceOf(Uint8Array);
    expect(nhwc).toHaveLength(64 * 3);
    expect(Array.from(nhwc.slice(0, 6))).toEqual([255, 0, 51, 255, 0, 51]);
    const nchw = (await prepareImage(png, { ...tower, inputType: 'uint8', layout: 'NCHW' }, limits)).pixels;
    expect([nchw[0], nchw[63], nchw[64], nchw[127], nchw[128], nchw[191]]).toEqual([255, 255, 0, 0, 51, 51]);
  });

  it('flattens transparency onto white and applies EXIF orientation', async () => {
    const clear = await solid(6, 6, { r: 0, g: 0, b: 0, alpha: 0 }, 4).png().toBuffer();
    const { pixels } = await prepareImage(clear, tower, limits);
    expect(Math.min(...pixels)).toBeCloseTo(1, 5);

    // Stored 40×20, EXIF orientation 6 (rotate 90°): a viewer shows it 20×40.
    const rotated = await solid(40, 20, { r: 9, g: 9, b: 9 }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const prepared = await prepareImage(rotated, tower, limits);
    expect([prepared.width, prepared.height]).toEqual([20, 40]);
  });

  it('fits by cover (centre crop), contain (white bars) or fill', async () => {
    // Left half black, right half white, 16×8: cover keeps the centre (both halves), contain pads
    // top and bottom with white.
    const raw = Buffer.alloc(16 * 8 * 3);
    for (let y = 0; y < 8; y++) for (let x = 8; x < 16; x++) raw.fill(255, (y * 16 + x) * 3, (y * 16 + x) * 3 + 3);
    const png = await sharp(raw, { raw: { width: 16, height: 8, channels: 3 } })
      .png()
      .toBuffer();
    const at = (p: ArrayLike<number>, x: number, y: number) => p[(y * 8 + x) * 3]!;
    const cover = (await prepareImage(png, { ...tower, resize: 'cover' }, limits)).pixels;
    expect(at(cover, 0, 4)).toBeLessThan(0.1);
    expect(at(cover, 7, 4)).toBeGreaterThan(0.9);
    const contain = (await prepareImage(png, { ...tower, resize: 'contain' }, limits)).pixels;
    expect(at(contain, 0, 0)).toBeGreaterThan(0.9); // padding bar
    expect(at(contain, 0, 4)).toBeLessThan(0.1);
    const fill = (await prepareImage(png, { ...tower, resize: 'fill' }, limits)).pixels;
    expect(at(fill, 0, 0)).toBeLessThan(0.1);
  });
});

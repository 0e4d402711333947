import { imageSize } from 'image-size';
import sharp, { type Metadata, type OutputInfo } from 'sharp';
import { ImageRejectedError } from '../errors.js';
import type { PreparedImage } from '../ports/embedder.js';
import type { ImageTower } from './manifest.js';

/**
 * Image file bytes → the model's input tensor for one image, with sharp. Every failure becomes an
 * ImageRejectedError with a reason a person can act on; pixel bombs are refused from the header,
 * before anything is decoded.
 */

/** Raster formats we decode. sharp reports AVIF as `heif`. SVG/PDF (vector, documents) are refused. */
export const ACCEPTED_IMAGE_FORMATS: ReadonlySet<string> = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif', 'avif']);

export interface PrepareLimits {
  /** Largest width×height accepted (checked from the header, then enforced by the decoder). */
  maxPixels: number;
}

const WHITE = { r: 255, g: 255, b: 255 };

export async function prepareImage(image: Buffer, tower: ImageTower, limits: PrepareLimits): Promise<PreparedImage> {
  if (image.length === 0) throw new ImageRejectedError('empty-file', 'the file is empty (0 bytes)');
  // This sharp build cannot open PDF, so it would call one "not an image": say what it is instead.
  if (image.subarray(0, 5).toString('latin1') === '%PDF-') {
    throw new ImageRejectedError('unsupported-format', 'pdf documents are not accepted, only raster images');
  }
  // One decode call per image: the common formats' size is read from their header here, on this
  // thread, so sharp is entered once (its metadata() call is a second trip through libuv's pool).
  const { format, width, height } = quickHeader(image) ?? (await sharpHeader(image));
  const pixels = width * height;
  if (pixels > limits.maxPixels) {
    throw new ImageRejectedError('too-many-pixels', `${width}x${height} = ${pixels} pixels exceeds the limit of ${limits.maxPixels}`);
  }

  let raw: { data: Buffer; info: OutputInfo };
  try {
    raw = await sharp(image, { failOn: 'error', limitInputPixels: Math.max(1, Math.floor(limits.maxPixels)) })
      .rotate() // apply EXIF orientation
      .flatten({ background: WHITE }) // transparent areas become white, as viewers show them
      .resize(tower.width, tower.height, {
        fit: tower.resize,
        position: 'centre',
        background: WHITE,
      })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    // The decoder enforces the limit too: a header that understated the size is caught here.
    if (/pixel limit/i.test(messageOf(err))) {
      throw new ImageRejectedError('too-many-pixels', `the ${format} image exceeds the limit of ${limits.maxPixels} pixels`, { cause: err });
    }
    throw new ImageRejectedError('corrupt-image', `the ${format} data cannot be decoded: ${messageOf(err)}`, { cause: err });
  }
  const { data, info } = raw;
  if (info.channels !== 3 || info.width !== tower.width || info.height !== tower.height) {
    throw new ImageRejectedError('corrupt-image', `decoded to ${info.width}x${info.height}x${info.channels}, expected ${tower.width}x${tower.height}x3`);
  }
  return { pixels: tower.inputType === 'uint8' ? planar(data, tower) : standardiseChannels(data, tower), width, height, format };
}

/** Raw RGB bytes in the tower's layout: sharp's interleaved output as is for NHWC, planes for NCHW. */
export function planar(rgb: Buffer, tower: ImageTower): Uint8Array {
  const bytes = new Uint8Array(rgb.buffer, rgb.byteOffset, rgb.length);
  if (tower.layout === 'NHWC') return bytes;
  const area = tower.width * tower.height;
  const out = new Uint8Array(area * 3);
  for (let p = 0, i = 0; p < area; p++, i += 3) {
    out[p] = bytes[i]!;
    out[area + p] = bytes[i + 1]!;
    out[2 * area + p] = bytes[i + 2]!;
  }
  return out;
}

interface Header {
  format: string;
  /** Oriented size (a portrait photo stored landscape with an EXIF rotation is portrait), first page only. */
  width: number;
  height: number;
}

/** image-size's type names → sharp's format names, for the formats read without sharp. */
const QUICK_FORMATS: ReadonlyMap<string, string> = new Map([
  ['png', 'png'],
  ['jpg', 'jpeg'],
  ['gif', 'gif'],
  ['webp', 'webp'],
]);

/**
 * The size of a PNG, JPEG, GIF or WebP from its header (image-size: synchronous, no decoding);
 * undefined for anything else or a header it cannot read, which then goes through sharp's
 * metadata() and gets its precise rejection there.
 */
function quickHeader(image: Buffer): Header | undefined {
  let size: ReturnType<typeof imageSize>;
  try {
    size = imageSize(image);
  } catch {
    return undefined;
  }
  const format = size.type === undefined ? undefined : QUICK_FORMATS.get(size.type);
  if (format === undefined || !(size.width > 0) || !(size.height > 0)) return undefined;
  // EXIF orientations 5–8 turn the picture a quarter.
  const turned = size.orientation !== undefined && size.orientation >= 5 && size.orientation <= 8;
  return { format, width: turned ? size.height : size.width, height: turned ? size.width : size.height };
}

/** Every other file: sharp reads the header (nothing decoded) and the format is checked. */
async function sharpHeader(image: Buffer): Promise<Header> {
  const header = await readHeader(image);
  const format = header.format ?? 'unknown';
  if (!ACCEPTED_IMAGE_FORMATS.has(format)) {
    throw new ImageRejectedError('unsupported-format', `${format} is not an accepted image format (accepted: ${[...ACCEPTED_IMAGE_FORMATS].join(', ')})`);
  }
  // sharp's prebuilt libheif decodes AVIF but not HEVC-coded HEIC (patent-encumbered codec).
  if (format === 'heif' && header.compression === 'hevc') {
    throw new ImageRejectedError('unsupported-format', 'HEIC images (HEVC-coded) cannot be decoded here; convert to JPEG or AVIF');
  }
  const width = header.autoOrient?.width ?? header.width;
  // Multi-page images (animated GIF/WebP) are embedded from their first page only.
  const height = header.autoOrient?.height ?? header.pageHeight ?? header.height;
  if (!width || !height) throw new ImageRejectedError('corrupt-image', `the ${format} header has no image size`);
  return { format, width, height };
}

async function readHeader(image: Buffer): Promise<Metadata> {
  try {
    // Header only, nothing decoded: lift sharp's default pixel limit so that our own check below
    // reports the size instead of a generic error.
    return await sharp(image, { limitInputPixels: false }).metadata();
  } catch (err) {
    const message = messageOf(err);
    if (/unsupported image format/i.test(message)) {
      throw new ImageRejectedError('not-an-image', 'the data is not in any image format we can identify', { cause: err });
    }
    throw new ImageRejectedError('corrupt-image', `the image header cannot be read: ${message}`, { cause: err });
  }
}

/**
 * Per-channel standardisation ((v·scale) − mean[c]) / std[c] of RGB bytes, written NHWC or NCHW
 * as the manifest says. (Not L2 normalisation of vectors: that is shared/vector-math.ts.)
 */
export function standardiseChannels(rgb: Uint8Array, tower: ImageTower): Float32Array {
  const area = tower.width * tower.height;
  const out = new Float32Array(area * 3);
  // v·a[c] + b[c] with a = scale/std, b = −mean/std: one multiply-add per value, no branches.
  const a = [0, 1, 2].map((c) => tower.scale / tower.std[c]!);
  const b = [0, 1, 2].map((c) => -tower.mean[c]! / tower.std[c]!);
  const [a0, a1, a2] = a as [number, number, number];
  const [b0, b1, b2] = b as [number, number, number];
  if (tower.layout === 'NHWC') {
    for (let i = 0; i < area * 3; i += 3) {
      out[i] = rgb[i]! * a0 + b0;
      out[i + 1] = rgb[i + 1]! * a1 + b1;
      out[i + 2] = rgb[i + 2]! * a2 + b2;
    }
  } else {
    for (let p = 0, i = 0; p < area; p++, i += 3) {
      out[p] = rgb[i]! * a0 + b0;
      out[area + p] = rgb[i + 1]! * a1 + b1;
      out[2 * area + p] = rgb[i + 2]! * a2 + b2;
    }
  }
  return out;
}

function messageOf(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.trim();
}

import { readFile } from 'node:fs/promises';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { join } from 'node:path';
import sharp from 'sharp';

/**
 * Reader for the Fashion-MNIST IDX files that Debian's `dataset-fashion-mnist` installs. Used by
 * the benchmarks, tests and the CLI's demo data: small real images with class labels, offline.
 */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;

export const FASHION_MNIST_SIDE = 28;

export interface FashionMnist {
  /** One 28×28 grey image per entry, row-major, 0 = black background. */
  images: Uint8Array[];
  labels: number[];
  classNames: string[];
}

export interface ReadFashionMnistOptions {
  split: 'train' | 'test';
  /** Number of images to return (default: all from `offset`). */
  limit?: number;
  offset?: number;
  /** Folder holding the `.gz` IDX files (default: Debian's). */
  dir?: string;
}

const gunzipAsync = promisify(gunzip);
const IDX_IMAGES_MAGIC = 0x00000803;
const IDX_LABELS_MAGIC = 0x00000801;

export async function readFashionMnist(options: ReadFashionMnistOptions): Promise<FashionMnist> {
  const dir = options.dir ?? FASHION_MNIST_DIR;
  const prefix = options.split === 'train' ? 'train' : 't10k';
  const [imageFile, labelFile] = await Promise.all([
    readIdx(join(dir, `${prefix}-images-idx3-ubyte.gz`), IDX_IMAGES_MAGIC),
    readIdx(join(dir, `${prefix}-labels-idx1-ubyte.gz`), IDX_LABELS_MAGIC),
  ]);
  const count = imageFile.dims[0]!;
  if (labelFile.dims[0] !== count) {
    throw new Error(`Fashion-MNIST ${options.split}: ${count} images but ${labelFile.dims[0]} labels`);
  }
  const [rows, cols] = [imageFile.dims[1]!, imageFile.dims[2]!];
  const offset = options.offset ?? 0;
  if (!Number.isInteger(offset) || offset < 0 || offset > count) {
    throw new RangeError(`offset ${offset} is outside 0..${count}`);
  }
  const end = Math.min(count, options.limit === undefined ? count : offset + Math.max(0, options.limit));
  const size = rows * cols;
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  for (let i = offset; i < end; i++) {
    images.push(imageFile.data.slice(i * size, (i + 1) * size));
    labels.push(labelFile.data[i]!);
  }
  return { images, labels, classNames: [...FASHION_MNIST_CLASSES] };
}

/** A 28×28 grey image as a PNG file, as a user would upload it. */
export async function fashionMnistPng(image: Uint8Array): Promise<Buffer> {
  if (image.length !== FASHION_MNIST_SIDE * FASHION_MNIST_SIDE) {
    throw new RangeError(`expected ${FASHION_MNIST_SIDE * FASHION_MNIST_SIDE} pixels, got ${image.length}`);
  }
  return sharp(Buffer.from(image), {
    raw: { width: FASHION_MNIST_SIDE, height: FASHION_MNIST_SIDE, channels: 1 },
  })
    .toColourspace('b-w') // keep one channel: sharp would otherwise write RGB
    .png()
    .toBuffer();
}

/** IDX: big-endian magic (0x0000, type 0x08 = ubyte, rank), one uint32 per dimension, then data. */
async function readIdx(path: string, expectedMagic: number): Promise<{ dims: number[]; data: Uint8Array }> {
  const bytes = await gunzipAsync(await readFile(path));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== expectedMagic) {
    throw new Error(`${path}: IDX magic 0x${magic.toString(16)} is not 0x${expectedMagic.toString(16)}`);
  }
  const rank = magic & 0xff;
  const dims = Array.from({ length: rank }, (_, i) => view.getUint32(4 + 4 * i));
  const headerBytes = 4 + 4 * rank;
  const expected = dims.reduce((a, b) => a * b, 1);
  if (bytes.length - headerBytes !== expected) {
    throw new Error(`${path}: ${bytes.length - headerBytes} data bytes, header says ${expected}`);
  }
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + headerBytes, expected) };
}

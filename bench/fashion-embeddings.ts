import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { FASHION_MNIST_CLASSES, fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import type { Embedder, PreparedImage } from '../shared/ports/embedder.js';
import { alterPhotograph } from '../test/helpers/alterations.js';

/**
 * Real images for the int8 and compact benches, prepared once per process: Fashion-MNIST test
 * images with their class, and Debian's "nature" photographs with the altered copies the
 * near-duplicate acceptance test uses.
 */
export const PHOTO_DIR = '/usr/share/backgrounds/mate/nature';

export interface BenchImages {
  fashion: PreparedImage[];
  labels: string[];
  photos: PreparedImage[];
  altered: PreparedImage[];
}

let cached: { key: string; images: Promise<BenchImages> } | undefined;

export function benchImages(embedder: Pick<Embedder, 'prepare'>, fashionCount: number): Promise<BenchImages> {
  const key = String(fashionCount);
  if (cached?.key !== key) {
    cached = {
      key,
      images: (async () => {
        const fm = await readFashionMnist({ split: 'test', limit: fashionCount });
        const fashion: PreparedImage[] = [];
        for (const im of fm.images) fashion.push(await embedder.prepare(await fashionMnistPng(im)));
        const photos: PreparedImage[] = [];
        const altered: PreparedImage[] = [];
        const files = (await readdir(PHOTO_DIR)).filter((f) => f.endsWith('.jpg')).sort();
        for (const [i, f] of files.entries()) {
          const bytes = await readFile(path.join(PHOTO_DIR, f));
          photos.push(await embedder.prepare(bytes));
          altered.push(await embedder.prepare(await alterPhotograph(bytes, i)));
        }
        return { fashion, labels: fm.labels.map((l) => FASHION_MNIST_CLASSES[l]!), photos, altered };
      })(),
    };
  }
  return cached.images;
}

const vectorCache = new Map<string, Promise<{ fashion: Float32Array[]; photos: Float32Array[]; altered: Float32Array[] }>>();

/** Vectors of the bench images by one embedder (cached by model version and size). */
export function benchVectors(embedder: Embedder, images: BenchImages, batch = 32) {
  const key = `${embedder.modelVersion}:${images.fashion.length}`;
  let pending = vectorCache.get(key);
  if (!pending) {
    const embed = async (list: PreparedImage[]) => {
      const out: Float32Array[] = [];
      for (let i = 0; i < list.length; i += batch) out.push(...(await embedder.embedDecoded(list.slice(i, i + batch))).vectors);
      return out;
    };
    pending = (async () => ({ fashion: await embed(images.fashion), photos: await embed(images.photos), altered: await embed(images.altered) }))();
    vectorCache.set(key, pending);
  }
  return pending;
}

/** How many altered photographs find their original first among the originals + Fashion-MNIST. */
export function nearDuplicatesFirst(
  v: { fashion: Float32Array[]; photos: Float32Array[]; altered: Float32Array[] },
  dot: (a: Float32Array, b: Float32Array) => number,
): number {
  const corpus = [...v.photos, ...v.fashion];
  return v.altered.filter((q, i) => {
    let best = -1;
    let bestScore = -Infinity;
    corpus.forEach((c, j) => {
      const s = dot(q, c);
      if (s > bestScore) [best, bestScore] = [j, s];
    });
    return best === i;
  }).length;
}

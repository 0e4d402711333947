import { promises as fs } from 'node:fs';
import path from 'node:path';
import { LanceDbIndexCatalog } from '../shared/adapters/local/lancedb-catalog.js';
import { evaluateImageToImage } from '../shared/evaluation/evaluate.js';
import { explainedVariance, fitPca, openProjection, projectionManifest, projectionToOnnx } from '../shared/model/compact-projection.js';
import { ensureDefaultModel } from '../shared/model/default-model.js';
import { loadEmbedder } from '../shared/model/load-embedder.js';
import type { VectorDocument } from '../shared/ports/vector-index.js';
import { dot } from '../shared/vector-math.js';
import { benchImages, benchVectors, nearDuplicatesFirst } from './fashion-embeddings.js';

/**
 * Compact vectors vs the full base embedding, on real Fashion-MNIST test images (each queried
 * against the others) and the near-duplicate photographs: PCA fitted on the collection (the
 * Fashion-MNIST images + the photographs), whitened or not, 128 and 256 dimensions, through the
 * same ONNX step the product appends (compact-projection.ts). Index size: the same documents
 * written to LanceDB through the product's catalog, full and compact, directory sizes on disk.
 */
export interface CompactVariantFigures {
  dims: number;
  whiten: boolean;
  explainedVariance: number;
  recallAt1: number;
  nearDuplicatesFirst: number;
  indexBytes: number;
  fitSeconds: number;
}

export interface CompactBenchResult {
  images: number;
  full: { dims: number; recallAt1: number; nearDuplicatesFirst: number; indexBytes: number };
  photos: number;
  variants: CompactVariantFigures[];
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? await dirBytes(p) : (await fs.stat(p)).size;
  }
  return total;
}

/** Bytes on disk of a LanceDB index holding these vectors (one document per vector, as the product writes them). */
async function indexBytes(dir: string, vectors: Float32Array[]): Promise<number> {
  const catalog = await LanceDbIndexCatalog.open(dir);
  try {
    const index = await catalog.createVersion('bench', vectors[0]!.length);
    const now = new Date().toISOString();
    const docs: VectorDocument[] = vectors.map((vector, i) => ({
      id: `img-${i}`,
      uri: `file:///bucket/fashion/f-${i}.png`,
      generation: String(1_700_000_000_000 + i),
      modelVersion: 'bench',
      vector,
      labels: ['Ankle boot'],
      indexedAt: now,
    }));
    for (let i = 0; i < docs.length; i += 1000) await index.upsert(docs.slice(i, i + 1000));
  } finally {
    await catalog.close();
  }
  return dirBytes(dir);
}

export async function benchCompact(work: string, options: { fashion: number; threads: number; dims?: number[] }): Promise<CompactBenchResult> {
  const { dir } = await ensureDefaultModel(path.join(work, 'compact-cache'));
  const embedder = await loadEmbedder(dir, { maxPixels: 50_000_000, threads: options.threads, inferenceThread: 'main' });
  try {
    const images = await benchImages(embedder, options.fashion);
    const full = await benchVectors(embedder, images);
    const labels = images.labels;
    const recall = async (v: Float32Array[]) => {
      const labelled = v.map((vector, i) => ({ id: `fm-${i}`, vector, labels: [labels[i]!] }));
      return (await evaluateImageToImage(labelled, labelled)).metrics['recall@1'];
    };
    const collection = [...full.fashion, ...full.photos];
    const result: CompactBenchResult = {
      images: full.fashion.length,
      photos: full.photos.length,
      full: {
        dims: collection[0]!.length,
        recallAt1: await recall(full.fashion),
        nearDuplicatesFirst: nearDuplicatesFirst(full, dot),
        indexBytes: await indexBytes(path.join(work, 'compact-index-full'), collection),
      },
      variants: [],
    };
    for (const dims of options.dims ?? [128, 256]) {
      for (const whiten of [false, true]) {
        const t0 = performance.now();
        const pca = await fitPca(collection, { dims, whiten, seed: 1 });
        const fitSeconds = (performance.now() - t0) / 1000;
        const projection = await openProjection(projectionToOnnx(pca), projectionManifest(pca));
        try {
          const project = async (v: Float32Array[]) => {
            const out: Float32Array[] = [];
            for (let i = 0; i < v.length; i += 1024) out.push(...(await projection.apply(v.slice(i, i + 1024))));
            return out;
          };
          const compact = { fashion: await project(full.fashion), photos: await project(full.photos), altered: await project(full.altered) };
          result.variants.push({
            dims,
            whiten,
            explainedVariance: explainedVariance(pca),
            recallAt1: await recall(compact.fashion),
            nearDuplicatesFirst: nearDuplicatesFirst(compact, dot),
            indexBytes: await indexBytes(path.join(work, `compact-index-${dims}${whiten ? 'w' : ''}`), [...compact.fashion, ...compact.photos]),
            fitSeconds,
          });
        } finally {
          await projection.close();
        }
      }
    }
    return result;
  } finally {
    await embedder.close();
  }
}

export function formatCompact(r: CompactBenchResult): string[] {
  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  return [
    `  ${r.images} Fashion-MNIST test images (each queried against the others) + ${r.photos} photographs and their altered copies; PCA fitted on that collection`,
    `    full ${r.full.dims}-d: Recall@1 ${r.full.recallAt1.toFixed(4)}, near-duplicates first ${r.full.nearDuplicatesFirst}/${r.photos}, LanceDB index ${mb(r.full.indexBytes)}`,
    ...r.variants.map(
      (v) =>
        `    PCA ${v.dims}-d${v.whiten ? ' whitened' : '         '}: Recall@1 ${v.recallAt1.toFixed(4)} (Δ ${(v.recallAt1 - r.full.recallAt1).toFixed(4)}), near-duplicates first ${v.nearDuplicatesFirst}/${r.photos}, ` +
        `index ${mb(v.indexBytes)} (${(r.full.indexBytes / v.indexBytes).toFixed(1)}× smaller), ${(v.explainedVariance * 100).toFixed(1)}% of the variance, fitted in ${v.fitSeconds.toFixed(1)} s`,
    ),
  ];
}

/**
 * The raw-pixel baseline on exactly the held-out split `imgsearch eval` uses: every labelled image
 * of a folder (the same ids, labels and id-hash split as the CLI), decoded with sharp to
 * `--size`×`--size` greyscale, L2-normalised, exact cosine search of held-out images against the
 * rest; prints the same JSON as `imgsearch eval --json`.
 *
 *   node --import tsx bench/pixel-baseline.ts --dir ./fashion-train [--size 28] [--held-out 0.1]
 *
 * For Fashion-MNIST (28×28 greyscale) at the default size this is exact cosine search on the raw
 * pixels, the baseline the retraining issue compares against.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { FolderBlobStore } from '../shared/adapters/local/folder-blob-store.js';
import { documentId } from '../shared/contracts.js';
import { evaluateModel, type LabelledVector } from '../shared/evaluation/evaluate.js';
import { isHeldOut } from '../shared/evaluation/split.js';
import { readImageMetadata } from '../shared/handlers/sidecar.js';
import { mapLimit } from '../shared/handlers/embed-batch.js';
import { l2Normalise } from '../shared/vector-math.js';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string' },
    size: { type: 'string', default: '28' },
    'held-out': { type: 'string', default: '0.1' },
  },
});
if (!args.dir) throw new Error('--dir <folder of labelled images> is required');
const size = Number(args.size);
const fraction = Number(args['held-out']);
if (!Number.isInteger(size) || size < 1) throw new Error(`--size must be a whole number ≥ 1, got ${args.size}`);
if (!(fraction > 0 && fraction < 1)) throw new Error(`--held-out must be strictly between 0 and 1, got ${args['held-out']}`);

const store = new FolderBlobStore(path.resolve(args.dir));
const names: string[] = [];
for await (const info of store.list()) if (/\.(png|jpe?g|webp|gif|tiff?|avif)$/i.test(info.name)) names.push(info.name);

const t0 = performance.now();
const items: LabelledVector[] = [];
await mapLimit(names, 8, async (name) => {
  const meta = await readImageMetadata(store, name);
  if (meta.labels.length === 0) return;
  const grey = await sharp(await store.read(name))
    .greyscale()
    .resize(size, size, { fit: 'fill' })
    .raw()
    .toBuffer();
  const vector = l2Normalise(Float32Array.from(grey));
  items.push({ id: documentId(store.bucket, name), vector, labels: meta.labels });
});
const heldOut = items.filter((r) => isHeldOut(r.id, fraction));
const rest = items.filter((r) => !isHeldOut(r.id, fraction));
const report = await evaluateModel({ modelVersion: `raw-pixels-${size}x${size}`, heldOut, rest });
process.stderr.write(`${items.length} labelled images, ${heldOut.length} held out, ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
process.stdout.write(`${JSON.stringify({ modelVersion: report.modelVersion, imageToImage: report.imageToImage, textToImage: null }, null, 2)}\n`);

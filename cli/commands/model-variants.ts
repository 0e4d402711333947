import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { Option } from 'commander';
import { UsageError, openRuntime, parseIntIn, parseNumberIn, printOutput } from '../options.js';

/**
 * `imgsearch model quantize` and `imgsearch model compact`: variants of a model registered as new
 * versions (shared/services/model-variants.ts); `imgsearch model promote <version>` activates one
 * through the usual path (index rebuilt beside the live one, alias swapped, rollback kept).
 */
const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);

async function imageFilesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await imageFilesUnder(p)));
    else if (e.isFile() && IMAGE_EXTENSIONS.has(path.extname(e.name).toLowerCase())) out.push(p);
  }
  return out.sort();
}

export function registerModelVariantCommands(model: Command): void {
  model
    .command('quantize')
    .description(
      'register an int8 variant of a model (image tower quantised, activations calibrated on sample images); `imgsearch model promote <version>` activates it and re-embeds the images',
    )
    .option('--calibration <dir>', 'folder of images to calibrate on (default: the bucket folder, or Fashion-MNIST from Debian when the bucket has no images)')
    .option('--images <n>', 'calibration images sampled from it', parseIntIn(1, 100_000), 128)
    .addOption(new Option('--method <method>', 'activation range: percentile of |x| or min/max').choices(['percentile', 'minmax']).default('percentile'))
    .option('--percentile <p>', 'for --method percentile', parseNumberIn(90, 100), 99.999)
    .option('--from <version>', 'version to quantise (default: the active one)')
    .option('--name <version>', 'name of the new version (default: <from>-int8)')
    .option('--json', 'print {schemaVersion, version, parent, calibration, parity, quantized, bytes}')
    .action(
      async (
        opts: { calibration?: string; images: number; method: 'percentile' | 'minmax'; percentile: number; from?: string; name?: string; json?: boolean },
        command: Command,
      ) => {
        if (opts.calibration !== undefined) {
          const stat = await fs.stat(opts.calibration).catch(() => null);
          if (!stat?.isDirectory()) throw new UsageError(`--calibration ${opts.calibration}: not a folder`);
        }
        const runtime = await openRuntime(command, { writer: true });
        try {
          const { registerInt8Variant } = await import('../../shared/services/model-variants.js');
          const images = await calibrationImages(opts.calibration, runtime.config.bucketDir);
          if (!opts.json) process.stderr.write(`calibrating on ${Math.min(opts.images, images.source.length)} images from ${images.from}…\n`);
          const r = await registerInt8Variant(
            { registry: runtime.registry, logger: runtime.logger },
            {
              from: opts.from,
              version: opts.name,
              images: images.source,
              calibrationCount: opts.images,
              method: opts.method,
              percentile: opts.percentile,
              maxPixels: runtime.config.maxPixels,
            },
          );
          if (opts.json) return await printOutput('model quantize', { ...r, calibration: { ...r.calibration, from: images.from } });
          process.stdout.write(
            `registered ${r.version} (int8 of ${r.parent}): ${r.quantized.convs} convolutions quantised, ${(r.bytes.fp32 / 1e6).toFixed(1)} MB → ${(r.bytes.int8 / 1e6).toFixed(1)} MB\n` +
              `calibration: ${r.calibration.images} images from ${images.from} (${r.calibration.method}${r.calibration.percentile === null ? '' : ` ${r.calibration.percentile}%`})` +
              `${r.calibration.skipped ? `, ${r.calibration.skipped} skipped` : ''}\n` +
              (r.parity.images
                ? `parity on ${r.parity.images} other images: cosine to float32 mean ${r.parity.meanCosine.toFixed(4)}, min ${r.parity.minCosine.toFixed(4)}\n`
                : 'parity: no images left beyond the calibration sample\n') +
              `activate it with \`imgsearch model promote ${r.version}\` (the images are re-embedded by the int8 tower)\n`,
          );
        } finally {
          await runtime.close();
        }
      },
    );
  model
    .command('compact')
    .description(
      'register a compact variant: a PCA of the stored vectors (fitted on this collection) applied after the tower, for smaller indexes; `imgsearch model promote <version>` rebuilds the index from the stored embeddings',
    )
    .requiredOption('--dims <n>', 'dimensions kept (e.g. 128 or 256)', parseIntIn(2, 4096))
    .option('--whiten', 'divide each component by its standard deviation (PCA whitening)', false)
    .option('--sample <n>', 'at most this many stored vectors fit the PCA', parseIntIn(10, 1_000_000), 20_000)
    .option('--from <version>', 'version to compact (default: the active one)')
    .option('--name <version>', 'name of the new version (default: <from>-pca<dims>[w])')
    .option('--json', 'print {schemaVersion, version, parent, dims, whiten, fittedOn, explainedVariance, recallAt1}')
    .action(async (opts: { dims: number; whiten: boolean; sample: number; from?: string; name?: string; json?: boolean }, command: Command) => {
      const runtime = await openRuntime(command, { writer: true });
      try {
        const { registerCompactVariant } = await import('../../shared/services/model-variants.js');
        const r = await registerCompactVariant(
          { registry: runtime.registry, features: runtime.features, logger: runtime.logger },
          { from: opts.from, version: opts.name, dims: opts.dims, whiten: opts.whiten, sample: opts.sample },
        );
        if (opts.json) return await printOutput('model compact', r);
        process.stdout.write(
          `registered ${r.version} (${r.dims} dimensions${r.whiten ? ', whitened' : ''}, PCA of ${r.fittedOn} vectors of ${r.parent}, ${(r.explainedVariance * 100).toFixed(1)}% of the variance)\n` +
            (r.recallAt1
              ? `Recall@1 on ${r.recallAt1.queries} held-out labelled images: full ${r.recallAt1.full.toFixed(4)}, compact ${r.recallAt1.compact.toFixed(4)}\n`
              : 'Recall@1 not measured: no labelled images held out\n') +
            `activate it with \`imgsearch model promote ${r.version}\` (the index is rebuilt from the stored embeddings)\n`,
        );
      } finally {
        await runtime.close();
      }
    });
}

/** The calibration sample's source: a folder given, the bucket folder, or Fashion-MNIST. */
async function calibrationImages(dir: string | undefined, bucketDir: string) {
  const fromFolder = async (folder: string) => (await imageFilesUnder(folder)).map((file) => ({ name: file, read: () => fs.readFile(file) }));
  if (dir !== undefined) {
    const source = await fromFolder(dir);
    if (source.length === 0) throw new UsageError(`--calibration ${dir}: no image files (${[...IMAGE_EXTENSIONS].join(', ')}) in it`);
    return { from: dir, source };
  }
  const bucket = (await fs.stat(bucketDir).catch(() => null))?.isDirectory() ? await fromFolder(bucketDir) : [];
  if (bucket.length > 0) return { from: bucketDir, source: bucket };
  const { FASHION_MNIST_DIR, fashionMnistPng, readFashionMnist } = await import('../../shared/datasets/fashion-mnist.js');
  const fm = await readFashionMnist({ split: 'train', limit: 5000 }).catch(() => null);
  if (!fm)
    throw new UsageError(
      `no images to calibrate on: the bucket folder ${bucketDir} has none and Fashion-MNIST is not installed (${FASHION_MNIST_DIR}); give --calibration <dir>`,
    );
  return { from: 'Fashion-MNIST (train split)', source: fm.images.map((im, i) => ({ name: `fashion-mnist-train-${i}`, read: () => fashionMnistPng(im) })) };
}

import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { UsageError, parseIntIn } from '../options.js';

export function registerDatasetCommand(program: Command): void {
  const dataset = program.command('dataset').description('write demo/evaluation datasets as image files');
  dataset
    .command('fashion-mnist')
    .description("write PNGs from Debian's dataset-fashion-mnist, each with a sidecar <name>.json {labels, caption}")
    .requiredOption('--out <dir>', 'output folder')
    .option('--limit <n>', 'number of images', parseIntIn(1, 70_000))
    .option('--offset <n>', 'first image index', parseIntIn(0, 69_999), 0)
    .option('--split <split>', 'train (60k) or test (10k)', 'train')
    .action(async (opts: { out: string; limit?: number; offset: number; split: string }) => {
      if (opts.split !== 'train' && opts.split !== 'test') throw new UsageError(`--split must be train or test, not ${opts.split}`);
      const { SingleBar, Presets } = await import('cli-progress');
      const { fashionMnistPng, readFashionMnist } = await import('../../shared/datasets/fashion-mnist.js');
      const { images, labels, classNames } = await readFashionMnist({ split: opts.split, limit: opts.limit, offset: opts.offset });
      await fs.mkdir(opts.out, { recursive: true });
      const bar = new SingleBar({ format: 'writing |{bar}| {value}/{total}' }, Presets.shades_classic);
      if (process.stderr.isTTY) bar.start(images.length, 0);
      for (let i = 0; i < images.length; i++) {
        const stem = `${opts.split}-${String(opts.offset + i).padStart(5, '0')}`;
        const label = classNames[labels[i]!]!;
        await fs.writeFile(path.join(opts.out, `${stem}.png`), await fashionMnistPng(images[i]!));
        await fs.writeFile(path.join(opts.out, `${stem}.json`), `${JSON.stringify({ labels: [label], caption: label })}\n`);
        if (process.stderr.isTTY) bar.increment();
      }
      if (process.stderr.isTTY) bar.stop();
      process.stdout.write(`wrote ${images.length} images with labels to ${path.resolve(opts.out)}\n`);
    });
}

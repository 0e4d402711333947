import { promises as fs } from 'node:fs';
import path from 'node:path';
import { SingleBar, Presets } from 'cli-progress';
import type { Command } from 'commander';
import { finalizeEvent } from '../../shared/adapters/local/folder-watcher.js';
import { documentId } from '../../shared/contracts.js';
import { ParseError } from '../../shared/errors.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { configFrom, printJson } from '../options.js';
import { PipelineTally } from '../pipeline-tally.js';
import { localPipelineWorkers, openLocalRuntime } from '../../shared/wiring/local.js';

export function registerIngestCommand(program: Command): void {
  program
    .command('ingest')
    .argument('<dir>', 'folder of images to backfill')
    .description('backfill a folder through the same pipeline, with a progress bar and a summary')
    .option('--json', 'print the summary as JSON')
    .action(async (dir: string, opts: { json?: boolean }, command: Command) => {
      const root = path.resolve(dir);
      const st = await fs.stat(root).catch(() => null);
      if (!st?.isDirectory()) throw new ParseError(`${dir} is not a folder`);
      const runtime = await openLocalRuntime(configFrom(command));
      try {
        await runtime.model.get();
        await runtime.liveIndex();
        const store = runtime.blobsFor(root);
        const tally = new PipelineTally();
        const names = new Map<string, string>();
        const eventDeps = {
          bus: runtime.bus,
          rejections: runtime.rejections,
          logger: runtime.logger,
          settings: { prefix: '', maxBytes: runtime.config.maxBytes },
        };
        const bar = new SingleBar(
          { format: 'embedding |{bar}| {value}/{total} images | {eta_formatted} left', hideCursor: true, noTTYOutput: false },
          Presets.shades_classic,
        );
        const showBar = !opts.json && process.stderr.isTTY;
        const workers = localPipelineWorkers(runtime);
        workers.on('embedded', (outcomes) => {
          tally.onEmbedded(outcomes, (id) => names.get(id) ?? id);
          if (showBar) bar.update(Math.min(tally.settled, tally.published));
        });
        workers.on('upserted', (outcomes) => tally.onUpserted(outcomes));
        // The workers embed while the folder is still being listed and published, as they would
        // with files arriving in the watched folder: publishing is disk-bound, embedding CPU-bound.
        workers.start();
        if (showBar) bar.start(0, 0);
        try {
          for await (const info of store.list()) {
            names.set(documentId(store.bucket, info.name), info.name);
            tally.onObjectEvent(info.name, await handleObjectEvent(finalizeEvent(info), eventDeps));
            if (showBar) bar.setTotal(tally.published);
          }
        } catch (err) {
          await workers.stop();
          if (showBar) bar.stop();
          throw err;
        }
        await workers.drain();
        await workers.stop();
        if (showBar) bar.stop();
        const summary = { folder: root, ...tally.summary(), modelVersion: runtime.model.current().modelVersion };
        if (opts.json) return printJson(summary);
        const lines = [
          `indexed ${summary.indexed}, skipped as unchanged ${summary.unchanged}, rejected ${summary.rejected}, caption/label sidecars ${summary.sidecars}, ignored (not images) ${summary.ignored}` +
            (summary.deadLettered ? `, dead-lettered ${summary.deadLettered}` : ''),
          ...summary.rejections.map((r) => `  rejected ${r.name}: ${r.reason} (${r.detail})`),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      } finally {
        await runtime.close();
      }
    });
}

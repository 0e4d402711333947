import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { fileLogger } from '../activity.js';
import { UsageError, configFrom, openRuntime, printOutput } from '../options.js';
import { PipelineTally } from '../pipeline-tally.js';
import { onInterrupt, restoreTerminal } from '../process.js';

export function registerIngestCommand(program: Command): void {
  program
    .command('ingest')
    .argument('<dir>', 'folder of images to backfill')
    .description('backfill a folder through the same pipeline, with a progress bar and a summary (Ctrl-C stops; a re-run resumes)')
    .option('--json', 'print the summary as JSON')
    .action(async (dir: string, opts: { json?: boolean }, command: Command) => {
      const root = path.resolve(dir);
      const st = await fs.stat(root).catch(() => null);
      if (!st?.isDirectory()) throw new UsageError(`${dir} is not a folder`);
      const config = await configFrom(command);
      // Per-file warnings (each rejection) go to a log file, not through the progress bar: the
      // summary lists the rejections. With --json, logs stay on stderr as JSON lines.
      const logFile = path.join(config.home, 'logs', 'ingest.log');
      const logs = opts.json ? null : await fileLogger(logFile, config.logLevel, process.stderr);
      const runtime = await openRuntime(command, { writer: true, config, ...(logs ? { logger: logs.logger } : {}) }).catch(async (err: unknown) => {
        await logs?.close();
        throw await withUpHint(err, root);
      });
      const { finalizeEvent } = await import('../../shared/adapters/local/folder-watcher.js');
      const { documentId } = await import('../../shared/contracts.js');
      const { handleObjectEvent } = await import('../../shared/handlers/on-object-event.js');
      const { localPipelineWorkers } = await import('../../shared/wiring/local.js');
      const { releaseOrphanedLeases } = await import('../../shared/services/doctor.js');
      const { SingleBar, Presets } = await import('cli-progress');
      const tally = new PipelineTally();
      const bar = new SingleBar(
        { format: 'embedding |{bar}| {value}/{total} files | {eta_formatted} left', hideCursor: true, noTTYOutput: false, etaBuffer: 50 },
        Presets.shades_classic,
      );
      const showBar = !opts.json && process.stderr.isTTY;
      const workers = localPipelineWorkers(runtime);
      let closed = false;
      const close = async () => {
        if (closed) return;
        closed = true;
        await runtime.close();
        await logs?.close();
      };
      // Ctrl-C / SIGTERM: stop the workers (a batch in flight may finish), hand the leases this
      // process holds back to the queue so a re-run takes them at once, release the writer lock.
      const uninstall = onInterrupt({
        graceMs: 5_000,
        cleanup: async () => {
          if (showBar) bar.stop();
          await Promise.race([workers.stop(), new Promise((r) => setTimeout(r, 1_500))]);
          await releaseOrphanedLeases(runtime.bus, 'released: the ingest holding it was interrupted').catch(() => 0);
          await close();
        },
        message: () => `interrupted after ${tally.processed} of ${tally.listed} files; re-run to resume`,
      });
      try {
        await runtime.model.get();
        await runtime.liveIndex();
        const store = runtime.blobsFor(root);
        const names = new Map<string, string>();
        const eventDeps = {
          bus: runtime.bus,
          rejections: runtime.rejections,
          ignored: runtime.ignored,
          logger: runtime.logger,
          settings: { prefix: '', maxBytes: runtime.config.maxBytes },
        };
        // The total is known before the first file is published: the listing comes first.
        const listing = [];
        for await (const info of store.list()) listing.push(info);
        tally.listed = listing.length;
        workers.on('embedded', (outcomes) => {
          tally.onEmbedded(outcomes, (id) => names.get(id) ?? id);
          if (showBar) bar.update(tally.processed);
        });
        workers.on('upserted', (outcomes) => tally.onUpserted(outcomes));
        // The workers embed while the files are still being published, as they would with files
        // arriving in the watched folder: publishing is disk-bound, embedding CPU-bound.
        workers.start();
        if (showBar) bar.start(tally.listed, 0);
        try {
          for (const info of listing) {
            names.set(documentId(store.bucket, info.name), info.name);
            tally.onObjectEvent(info.name, await handleObjectEvent(finalizeEvent(info), eventDeps));
            if (showBar) bar.update(tally.processed);
          }
        } catch (err) {
          await workers.stop();
          throw err;
        }
        await workers.drain();
        await workers.stop();
        if (showBar) {
          bar.update(tally.processed);
          bar.stop();
        }
        // A bulk load compacted the feature store as it went; the copy its last compaction replaced
        // is freed once no reader can still be on it (GenerationOrderedTable.reclaim).
        if (runtime.features.reclaimable) {
          process.stderr.write('freeing the feature-store files its compactions replaced (up to a minute)…\n');
          // The ingest is done: a failure here costs disk space until the next compaction, not the result.
          await runtime.features
            .reclaim()
            .catch((err: unknown) => runtime.logger.warn({ err }, 'feature store: replaced files not freed; the next compaction frees them'));
        }
        uninstall();
        const summary = { folder: root, ...tally.summary(), modelVersion: runtime.model.current().modelVersion };
        if (opts.json) return printOutput('ingest', summary);
        const lines = [
          `${summary.files} files: indexed ${summary.indexed}, skipped as unchanged ${summary.unchanged}, rejected ${summary.rejected}, caption/label sidecars ${summary.sidecars}, ignored (not images) ${summary.ignored}` +
            (summary.superseded ? `, superseded ${summary.superseded}` : '') +
            (summary.deadLettered ? `, dead-lettered ${summary.deadLettered}` : ''),
          ...summary.rejections.map((r) => `  rejected ${r.name}: ${r.reason} (${r.detail})`),
          ...(summary.rejected || summary.deadLettered ? [`log: ${logFile}`] : []),
        ];
        process.stdout.write(`${lines.join('\n')}\n`);
      } finally {
        if (showBar) bar.stop();
        restoreTerminal();
        await close();
      }
    });
}

/** A running `imgsearch up` holds the lock: say how to hand it the files instead. */
async function withUpHint(err: unknown, root: string): Promise<unknown> {
  const { HomeLockedError } = await import('../../shared/adapters/local/home-lock.js');
  if (err instanceof HomeLockedError && /^imgsearch up\b/.test(err.holder.command)) {
    err.message += `; to index ${root} with it running, copy the files into the folder it watches`;
  }
  return err;
}

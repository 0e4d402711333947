import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promises as fs } from 'node:fs';
import type { Command } from 'commander';
import { scanFolder, watchFolder } from '../../shared/adapters/local/folder-watcher.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { buildSearchApp } from '../../shared/http/search-app.js';
import { PipelineWorkers } from '../../shared/services/pipeline.js';
import { SearchService } from '../../shared/services/search-service.js';
import { pipelineStatus } from '../../shared/services/status.js';
import { TOPICS, type ImageEvent } from '../../shared/contracts.js';
import { errorMessage } from '../../shared/errors.js';
import { configFrom } from '../options.js';
import { openLocalRuntime, type LocalRuntime } from '../runtime.js';
import { localExtras } from '../local-extras.js';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');

export function registerUpCommand(program: Command): void {
  program
    .command('up')
    .description('watch the bucket folder, run the pipeline, and serve the web page and API')
    .option('--bucket <dir>', 'folder watched as the bucket (IMGSEARCH_BUCKET_DIR)')
    .option('--port <port>', 'HTTP port (IMGSEARCH_PORT)')
    .option('--host <host>', 'HTTP host (IMGSEARCH_HOST)')
    .action(async (opts: { bucket?: string; port?: string; host?: string }, command: Command) => {
      const config = configFrom(command, { IMGSEARCH_BUCKET_DIR: opts.bucket, IMGSEARCH_PORT: opts.port, IMGSEARCH_HOST: opts.host });
      await fs.mkdir(config.bucketDir, { recursive: true });
      const runtime = await openLocalRuntime(config);
      const stop = await startLocalProduct(runtime);
      const shutdown = async () => {
        await stop();
        await runtime.close();
        process.exit(0);
      };
      process.once('SIGINT', shutdown);
      process.once('SIGTERM', shutdown);
    });
}

/**
 * Everything `imgsearch up` runs in one process: reconcile the folder with the index, watch it,
 * run the embed/upsert workers, serve the page. Returns a function that stops it all.
 */
export async function startLocalProduct(runtime: LocalRuntime): Promise<() => Promise<void>> {
  const { config, logger } = runtime;
  await runtime.model.get();
  const live = await runtime.liveIndex();
  const workers = new PipelineWorkers(runtime.bus, () => runtime.embedDeps(), () => runtime.upsertDeps(), logger, {
    batchSize: config.batchSize,
    ackDeadlineSeconds: config.ackDeadlineSeconds,
    idlePollMs: 250,
  });
  const eventDeps = { bus: runtime.bus, rejections: runtime.rejections, logger, settings: { prefix: config.prefix, maxBytes: config.maxBytes } };
  const onEvent = async (event: ImageEvent) => {
    try {
      await handleObjectEvent(event, eventDeps);
      workers.notify();
    } catch (err) {
      logger.error({ err: errorMessage(err), object: event.name }, 'could not handle a storage event');
    }
  };

  // Files added or removed while we were down: the scan re-publishes every file (unchanged ones
  // are skipped cheaply by the embed step) and documents whose file vanished are deleted.
  const existing = await scanFolder(runtime.bucket);
  const present = new Set(existing.map((e) => runtime.bucket.uri(e.name)));
  for (const event of existing) await onEvent(event);
  const bucketUri = runtime.bucket.uri('x').slice(0, -1);
  for await (const docs of live.scan(1000)) {
    for (const doc of docs) {
      if (doc.uri.startsWith(bucketUri) && !present.has(doc.uri)) {
        const name = doc.uri.slice(bucketUri.length);
        await runtime.bus.publish(TOPICS.imageEvents, {
          bucket: runtime.bucket.bucket, name, generation: doc.generation, contentType: doc.contentType ?? 'application/octet-stream',
          size: 0, eventType: 'delete', eventTime: new Date().toISOString(),
        } satisfies ImageEvent);
      }
    }
  }

  const watcher = watchFolder(runtime.bucket, { ignoreInitial: true }, onEvent);
  await watcher.ready;
  workers.start();

  const extras = localExtras(runtime);
  const search = new SearchService(() => runtime.model.current(), () => runtime.liveIndex());
  const app = await buildSearchApp({
    search,
    status: async () => pipelineStatus({ bus: runtime.bus, index: await runtime.liveIndex(), rejections: runtime.rejections, embedder: runtime.model.current() }),
    getDocument: async (id) => (await runtime.liveIndex()).get(id),
    readObject: (uri) => extras.readObject(uri),
    logger,
    webDir,
    recordFeedback: extras.recordFeedback,
    listModels: () => runtime.registry.list(),
    metricsPlot: extras.metricsPlot,
    maxUploadBytes: config.maxBytes,
  });
  const address = await app.listen({ host: config.host, port: config.port });
  process.stdout.write(`imgsearch is up: ${address.replace('[::1]', 'localhost')}  (watching ${config.bucketDir}, model ${runtime.model.current().modelVersion})\n`);

  // Another process (imgsearch retrain / model promote) may change the active model.
  // After a switch to another image tower (e.g. a pulled CLIP model) the new index starts empty:
  // re-publishing the bucket re-embeds every image (those already in the live index are skipped).
  const modelPoll = setInterval(() => {
    runtime.model
      .refresh()
      .then(async (changed) => {
        if (!changed) return;
        for (const event of await scanFolder(runtime.bucket)) await onEvent(event);
      })
      .catch((err) => logger.warn({ err: errorMessage(err) }, 'model refresh failed'));
  }, 5000);

  return async () => {
    clearInterval(modelPoll);
    await app.close();
    await watcher.close();
    await workers.stop();
  };
}

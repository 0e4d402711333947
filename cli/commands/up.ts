import { promises as fs } from 'node:fs';
import type { Command } from 'commander';
import { watchFolder } from '../../shared/adapters/local/folder-watcher.js';
import type { ImageEvent } from '../../shared/contracts.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { ModelFollower } from '../../shared/services/model-follower.js';
import { reconcileBucket, republishBucket } from '../../shared/services/reconcile.js';
import { localSearchApp, localPipelineWorkers, openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import { configFrom } from '../options.js';

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
      const product = await startLocalProduct(runtime);
      process.stdout.write(`imgsearch is up: ${product.url}  (watching ${config.bucketDir}, model ${runtime.model.current().modelVersion})\n`);
      const shutdown = async () => {
        await product.stop();
        await runtime.close();
        process.exit(0);
      };
      process.once('SIGINT', shutdown);
      process.once('SIGTERM', shutdown);
    });
}

export interface LocalProduct {
  /** Where the page and API listen (`http://127.0.0.1:<port>`). */
  url: string;
  /** Stops watching, serving and working (the runtime stays open). */
  stop(): Promise<void>;
}

/**
 * Everything `imgsearch up` runs in one process, wired from shared services: the folder reconciled
 * with the index (reconcile.ts), then watched; the embed/upsert workers (pipeline.ts); the page
 * and API (shared/wiring/local.ts, queries following the live index); the registry's active model
 * followed for embedding (model-follower.ts), re-publishing the folder when it changed.
 */
export async function startLocalProduct(runtime: LocalRuntime): Promise<LocalProduct> {
  const { config, logger } = runtime;
  await runtime.model.get();
  const workers = localPipelineWorkers(runtime, { logger, idlePollMs: 250 });
  const eventDeps = { bus: runtime.bus, rejections: runtime.rejections, logger, settings: { prefix: config.prefix, maxBytes: config.maxBytes } };
  const onObject = async (event: ImageEvent): Promise<void> => {
    try {
      await handleObjectEvent(event, eventDeps);
      workers.notify();
    } catch (err) {
      logger.error({ err, object: event.name }, 'could not handle a storage event');
    }
  };

  // Files added or removed while we were down.
  await reconcileBucket({ blobs: runtime.bucket, index: await runtime.liveIndex(), bus: runtime.bus, onObject });
  const watcher = watchFolder(runtime.bucket, { ignoreInitial: true }, onObject);
  await watcher.ready;
  workers.start();

  const app = await localSearchApp(runtime);
  const address = await app.listen({ host: config.host, port: config.port });

  // Another process (imgsearch retrain / model promote / rollback) may change the active model.
  const follower = new ModelFollower(runtime.model, {
    logger,
    onChange: async () => {
      runtime.live.invalidate();
      await republishBucket({ blobs: runtime.bucket, onObject });
    },
  });
  follower.start();

  return {
    url: address.replace('[::1]', 'localhost'),
    async stop() {
      await follower.stop();
      await app.close();
      await watcher.close();
      await workers.stop();
    },
  };
}

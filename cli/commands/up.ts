import { ignoredEntries, watchFolder } from '../../shared/adapters/local/folder-watcher.js';
import type { ImageEvent } from '../../shared/contracts.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { ModelFollower } from '../../shared/services/model-follower.js';
import { reconcileBucket, republishBucket } from '../../shared/services/reconcile.js';
import { localSearchApp, localPipelineWorkers, type LocalRuntime } from '../../shared/wiring/local.js';

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
  const eventDeps = {
    bus: runtime.bus,
    rejections: runtime.rejections,
    ignored: runtime.ignored,
    logger,
    settings: { prefix: config.prefix, maxBytes: config.maxBytes },
  };
  // A failure (a full disk) is rethrown: the watcher and reconcile retry the event with backoff.
  const onObject = async (event: ImageEvent): Promise<void> => {
    try {
      await handleObjectEvent(event, eventDeps);
      runtime.health.succeeded('intake');
      workers.notify();
    } catch (err) {
      runtime.health.failed('intake', err);
      throw err;
    }
  };
  const ignored = { log: runtime.ignored, entries: () => ignoredEntries(runtime.bucket) };

  // Files added or removed while we were down.
  await reconcileBucket({ blobs: runtime.bucket, index: await runtime.liveIndex(), bus: runtime.bus, onObject, ignored, logger });
  const watcher = watchFolder(runtime.bucket, { ignoreInitial: true, ignored: runtime.ignored, logger }, onObject);
  await watcher.ready;
  workers.start();
  runtime.ann?.start();

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
      runtime.ann?.stop();
      await follower.stop();
      await app.close();
      await watcher.close();
      await workers.stop();
    },
  };
}

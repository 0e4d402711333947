import { ignoredEntries, watchFolder } from '../../shared/adapters/local/folder-watcher.js';
import type { ImageEvent } from '../../shared/contracts.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { ModelFollower } from '../../shared/services/model-follower.js';
import { reconcileBucket, republishBucket, type ReconcileResult } from '../../shared/services/reconcile.js';
import { localDriftChecks, localSearchApp, localPipelineWorkers, type LocalRuntime } from '../../shared/wiring/local.js';

export interface LocalProduct {
  /** Where the page and API listen (`http://127.0.0.1:<port>`). */
  url: string;
  /**
   * Settles once the folder has been compared with the index (files added, changed or removed while
   * `up` was not running handed to the pipeline); null if that failed (logged, and shown as an
   * intake fault by `status`). Searches answer meanwhile.
   */
  caughtUp: Promise<ReconcileResult | null>;
  /** Stops watching, serving and working (the runtime stays open). */
  stop(): Promise<void>;
}

/**
 * Everything `imgsearch up` runs in one process, wired from shared services: the folder watched and,
 * beside the searches, caught up with the index (reconcile.ts: only what changed while `up` was not
 * running goes through the pipeline); the embed/upsert workers (pipeline.ts); the page
 * and API (shared/wiring/local.ts, queries following the live index); the registry's active model
 * followed for embedding (model-follower.ts), re-publishing the folder when it changed; drift
 * checks every IMGSEARCH_DRIFT_CHECK_MINUTES (drift.ts), retraining here when one calls for it.
 */
/** How long after the first catch-up pass the second one runs. */
const SECOND_PASS_DELAY_MS = 2_000;

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

  // The live index exists (created on a first start) before anything is served.
  const index = await runtime.liveIndex();
  const app = await localSearchApp(runtime);
  const address = await app.listen({ host: config.host, port: config.port });
  // Watching starts before the catch-up below lists the folder (files already there are not
  // re-emitted), so nothing written meanwhile is missed; a file written in between may be reported
  // twice, which the index ignores. It starts after listening: its walk of a large folder would
  // otherwise delay the first search.
  const watcher = watchFolder(runtime.bucket, { ignoreInitial: true, ignored: runtime.ignored, logger }, onObject);
  workers.start();
  runtime.ann?.start();
  // Catching up runs beside the searches: one pass over the folder's listing against the index's ids
  // and generations, and only what was added, changed or removed while we were down goes through
  // the pipeline (reconcile.ts).
  let stopping = false;
  const caughtUp = (async (): Promise<ReconcileResult | null> => {
    try {
      await watcher.ready;
      const pass = () =>
        reconcileBucket({ blobs: runtime.bucket, index, bus: runtime.bus, rejections: runtime.rejections, onObject, ignored, logger, stopped: () => stopping });
      const result = await pass();
      logger.info(result, 'bucket folder reconciled with the index');
      // A second, cheap pass a moment later: a file written into a new folder while the watcher was
      // still setting up its watches can be missed by both the watcher and the first listing
      // (test/integration/bucket-accounting, under load). Files already handled are unchanged for it.
      await new Promise((r) => setTimeout(r, SECOND_PASS_DELAY_MS));
      if (!stopping) {
        const again = await pass();
        if (again.published + again.deleted > 0) logger.info(again, 'bucket folder reconciled again: files written while watching started');
      }
      return result;
    } catch (err) {
      // Stopping cut it short: the next start catches up.
      if (stopping) return null;
      runtime.health.failed('intake', err);
      logger.error({ err }, 'could not compare the bucket folder with the index; files changed while imgsearch was not running are not queued');
      return null;
    }
  })();

  // Another process (imgsearch retrain / model promote / rollback) may change the active model.
  const follower = new ModelFollower(runtime.model, {
    logger,
    onChange: async () => {
      runtime.live.invalidate();
      await republishBucket({ blobs: runtime.bucket, onObject });
    },
  });
  follower.start();
  // Drift of uploads and queries from the active model's profile; a retraining when it says so (drift.ts).
  const drift = localDriftChecks(runtime);
  drift?.start();

  return {
    url: address.replace('[::1]', 'localhost'),
    caughtUp,
    async stop() {
      stopping = true;
      await caughtUp;
      drift?.stop();
      runtime.ann?.stop();
      await follower.stop();
      await app.close();
      await watcher.close();
      await workers.stop();
    },
  };
}

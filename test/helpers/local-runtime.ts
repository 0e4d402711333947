import path from 'node:path';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { silentLogger } from '../../shared/logger.js';
import type { ImageEvent } from '../../shared/contracts.js';
import { localPipelineWorkers, openLocalRuntime, type LocalRuntime } from '../../shared/wiring/local.js';
import type { EmbedOutcome, UpsertHandlerOutcome } from '../../shared/handlers/results.js';

/** A local runtime in a temp folder, with the pipeline workers and everything they decided. */
export async function openTestPipeline(work: string, env: Record<string, string> = {}) {
  const config = configFromEnv(
    parseEnv({ IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_BUCKET_DIR: path.join(work, 'bucket'), LOG_LEVEL: 'silent', ...env }),
    work,
  );
  const runtime: LocalRuntime = await openLocalRuntime(config, { logger: silentLogger });
  await runtime.model.get();
  await runtime.liveIndex();
  const embedded: EmbedOutcome[] = [];
  const upserted: UpsertHandlerOutcome[] = [];
  const workers = localPipelineWorkers(runtime, { logger: silentLogger, idlePollMs: 50 });
  workers.on('embedded', (o) => embedded.push(...o));
  workers.on('upserted', (o) => upserted.push(...o));
  const eventDeps = { bus: runtime.bus, rejections: runtime.rejections, logger: silentLogger, settings: { prefix: config.prefix, maxBytes: config.maxBytes } };
  return {
    runtime,
    workers,
    embedded,
    upserted,
    publish: (event: ImageEvent) => handleObjectEvent(event, eventDeps),
    /** Runs the workers until both queues are empty. */
    async run() {
      workers.start();
      await workers.drain();
      await workers.stop();
    },
    async close() {
      await workers.stop();
      await runtime.close();
    },
  };
}

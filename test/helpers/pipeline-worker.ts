/**
 * A separate process over the local runtime under IMGSEARCH_HOME, for tests that kill it:
 *   node --import tsx test/helpers/pipeline-worker.ts publish <dir> [name…]
 *       publishes a finalize event for each file of <dir> (or only the names given) to
 *       `image-events`, as `imgsearch ingest` does, and runs no worker;
 *   node --import tsx test/helpers/pipeline-worker.ts work
 *       runs the pipeline workers over what is already queued, publishing nothing, until both
 *       topics are empty: what a process resumed after a crash does when nothing re-scans the
 *       folder, so everything it indexes comes from the queue (redelivered leases included);
 *   node --import tsx test/helpers/pipeline-worker.ts documents
 *       prints the live index's documents as JSON lines `{ id, uri, generation }`.
 * Logs go to stderr (LOG_LEVEL, as the CLI).
 */
import path from 'node:path';
import { finalizeEvent } from '../../shared/adapters/local/folder-watcher.js';
import { loadConfig } from '../../shared/config.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { localPipelineWorkers, openLocalRuntime } from '../../shared/wiring/local.js';

const [mode, dir, ...names] = process.argv.slice(2);
const runtime = await openLocalRuntime(loadConfig());
try {
  await runtime.model.get();
  const index = await runtime.liveIndex();
  if (mode === 'publish' && dir) {
    const store = runtime.blobsFor(path.resolve(dir));
    const deps = { bus: runtime.bus, rejections: runtime.rejections, logger: runtime.logger, settings: { prefix: '', maxBytes: runtime.config.maxBytes } };
    const infos = [];
    if (names.length > 0) for (const name of names) infos.push((await store.stat(name))!);
    else for await (const info of store.list()) infos.push(info);
    for (const info of infos) await handleObjectEvent(finalizeEvent(info), deps);
  } else if (mode === 'work') {
    const workers = localPipelineWorkers(runtime);
    workers.start();
    await workers.drain();
    await workers.stop();
  } else if (mode === 'documents') {
    for await (const docs of index.scan()) {
      for (const d of docs) process.stdout.write(`${JSON.stringify({ id: d.id, uri: d.uri, generation: d.generation })}\n`);
    }
  } else {
    throw new Error(`usage: pipeline-worker.ts publish <dir> [name…] | work | documents (got ${process.argv.slice(2).join(' ')})`);
  }
} finally {
  await runtime.close();
}

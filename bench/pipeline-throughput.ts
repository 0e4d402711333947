import { promises as fs } from 'node:fs';
import path from 'node:path';
import { finalizeEvent } from '../shared/adapters/local/folder-watcher.js';
import { configFromEnv, parseEnv } from '../shared/config.js';
import { mapLimit } from '../shared/handlers/embed-batch.js';
import { handleObjectEvent } from '../shared/handlers/on-object-event.js';
import { silentLogger } from '../shared/logger.js';
import type { PreparedImage } from '../shared/ports/embedder.js';
import { localPipelineWorkers, openLocalRuntime } from '../shared/wiring/local.js';
import { cpuByGroup, threadTimes, type ThreadGroup } from './thread-cpu.js';

export interface ThroughputResult {
  label: string;
  images: number;
  batchSize: number;
  bareImagesPerSecond: number;
  pipelineImagesPerSecond: number;
  ratio: number;
  /** CPU time (all threads of this process) per image: where the cores go. */
  bareCpuMsPerImage: number;
  pipelineCpuMsPerImage: number;
  /** CPU ms per image of the pipeline run by thread group (Linux; empty elsewhere). */
  pipelineCpuByThread: Partial<Record<ThreadGroup, number>>;
  /** (c) the work no pipeline can avoid, in a tight loop: read + decode/resize + inference. */
  unavoidableImagesPerSecond: number;
  unavoidableCpuMsPerImage: number;
  unavoidableCpuByThread: Partial<Record<ThreadGroup, number>>;
  /** Pipeline CPU per image ÷ unavoidable CPU per image (acceptance: ≤ 1.25). */
  overhead: number;
}

function perImage(groups: Record<string, number>, images: number): Partial<Record<ThreadGroup, number>> {
  return Object.fromEntries(Object.entries(groups).map(([group, ms]) => [group, ms / images]));
}

function cpuMsPerImage(usage: NodeJS.CpuUsage, images: number): number {
  return (usage.user + usage.system) / 1000 / images;
}

/**
 * (a) bare ONNX inference on pre-decoded tensors vs (b) the full local pipeline from files to
 * indexed vectors (queue, sharp decode, batched inference, feature store, index), same model and
 * batch size, in the same process.
 */
export async function measureThroughput(label: string, imageDir: string, work: string, batchSize: number): Promise<ThroughputResult> {
  const config = configFromEnv(
    parseEnv({
      IMGSEARCH_HOME: path.join(work, `home-${label}`),
      IMGSEARCH_BUCKET_DIR: imageDir,
      IMGSEARCH_BATCH_SIZE: String(batchSize),
      // Inference threads as the user sets them (0: one per core).
      ...(process.env.IMGSEARCH_THREADS ? { IMGSEARCH_THREADS: process.env.IMGSEARCH_THREADS } : {}),
      LOG_LEVEL: 'silent',
    }),
    work,
  );
  await fs.rm(config.home, { recursive: true, force: true });
  const runtime = await openLocalRuntime(config, { logger: silentLogger });
  try {
    // Threads that appear while the model loads: the inference worker and ONNX Runtime's pool
    // (libuv's pool exists by then: it starts with the first file-system call).
    await fs.stat(imageDir);
    const beforeModel = threadTimes();
    const embedder = await runtime.model.get();
    const inferenceTids = new Set([...threadTimes().keys()].filter((tid) => !beforeModel.has(tid)));
    await runtime.liveIndex();
    const store = runtime.blobsFor(imageDir);
    const infos = [];
    for await (const info of store.list()) if (/\.(png|jpe?g)$/i.test(info.name)) infos.push(info);

    // (a) decode once, then time inference alone.
    const prepared: PreparedImage[] = [];
    for (const info of infos) prepared.push(await embedder.prepare(await store.read(info.name)));
    await embedder.embedDecoded(prepared.slice(0, batchSize)); // warm-up
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    for (let i = 0; i < prepared.length; i += batchSize) await embedder.embedDecoded(prepared.slice(i, i + batchSize));
    const bare = prepared.length / ((performance.now() - t0) / 1000);
    const bareCpu = cpuMsPerImage(process.cpuUsage(c0), prepared.length);
    prepared.length = 0;

    // (c) the unavoidable work, batch by batch as the pipeline does it: read each file, decode and
    // resize it (the product's prepare: one sharp call; as many in flight as the pipeline allows),
    // one inference per batch. No queue, no feature store, no index, no events.
    const decodeConcurrency = 4; // EmbedDeps.decodeConcurrency's default
    const files = infos.map((info) => path.join(imageDir, info.name));
    const t2 = performance.now();
    const c2 = process.cpuUsage();
    const threads2 = threadTimes();
    for (let i = 0; i < files.length; i += batchSize) {
      const batch = files.slice(i, i + batchSize);
      const images: PreparedImage[] = new Array(batch.length);
      await mapLimit(
        batch.map((file, j) => ({ file, j })),
        decodeConcurrency,
        async ({ file, j }) => {
          images[j] = await embedder.prepare(await fs.readFile(file));
        },
      );
      await embedder.embedDecoded(images);
    }
    const unavoidable = files.length / ((performance.now() - t2) / 1000);
    const unavoidableCpu = cpuMsPerImage(process.cpuUsage(c2), files.length);
    const unavoidableByThread = threads2.size > 0 ? perImage(cpuByGroup(threads2, threadTimes(), inferenceTids), files.length) : {};

    // (b) the pipeline: storage events → queue → decode → inference → feature store → index.
    const workers = localPipelineWorkers(runtime, { logger: silentLogger, batchSize, idlePollMs: 20 });
    const deps = { bus: runtime.bus, rejections: runtime.rejections, logger: silentLogger, settings: { prefix: '', maxBytes: config.maxBytes } };
    const t1 = performance.now();
    const c1 = process.cpuUsage();
    const threads1 = threadTimes();
    // As under `imgsearch ingest`: the workers run while the storage events are published.
    workers.start();
    for (const info of infos) await handleObjectEvent(finalizeEvent(info), deps);
    await workers.drain(10);
    const pipeline = infos.length / ((performance.now() - t1) / 1000);
    const pipelineCpu = cpuMsPerImage(process.cpuUsage(c1), infos.length);
    const byThread = threads1.size > 0 ? cpuByGroup(threads1, threadTimes(), inferenceTids) : {};
    const pipelineCpuByThread = perImage(byThread, infos.length);
    await workers.stop();
    const indexed = await (await runtime.liveIndex()).count();
    if (indexed !== infos.length) throw new Error(`pipeline indexed ${indexed} of ${infos.length}`);
    return {
      label,
      images: infos.length,
      batchSize,
      bareImagesPerSecond: bare,
      pipelineImagesPerSecond: pipeline,
      ratio: pipeline / bare,
      bareCpuMsPerImage: bareCpu,
      pipelineCpuMsPerImage: pipelineCpu,
      pipelineCpuByThread,
      unavoidableImagesPerSecond: unavoidable,
      unavoidableCpuMsPerImage: unavoidableCpu,
      unavoidableCpuByThread: unavoidableByThread,
      overhead: pipelineCpu / unavoidableCpu,
    };
  } finally {
    await runtime.close();
  }
}

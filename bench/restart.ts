import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { FileQueue } from '../shared/adapters/local/file-queue.js';
import { configFromEnv, parseEnv } from '../shared/config.js';
import { documentId, objectUri, TOPICS, type ImageEvent } from '../shared/contracts.js';
import { fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import { handleObjectEvent } from '../shared/handlers/on-object-event.js';
import { silentLogger } from '../shared/logger.js';
import type { VectorDocument } from '../shared/ports/vector-index.js';
import { reconcileBucket, republishBucket } from '../shared/services/reconcile.js';
import { mulberry32 } from '../shared/training/prng.js';
import { openLocalRuntime, type LocalRuntime } from '../shared/wiring/local.js';
import { cliPath, upUrl } from '../test/helpers/cli.js';

/**
 * `imgsearch up` restarted over a folder that is already indexed (issue 15, item 5). The folder
 * holds `files` PNGs (Fashion-MNIST train images); the index is filled directly with one document
 * per file at the file's generation (seeded random unit vectors of the model's dimension: the
 * restart and "more like this" read ids, generations and vectors, not what the vectors mean), so
 * the folder is "indexed" without embedding every file first, and the ANN index is built once as
 * the earlier run would have. Then, in the same run:
 * - today's restart (the reconcile of the previous release, reproduced here: every object
 *   re-published through the object-event handler into a scratch queue, and the index scanned
 *   with its vectors for vanished objects) against this release's one-pass reconcile, in-process,
 *   over the same folder and index: seconds and messages enqueued;
 * - the real `imgsearch up` process started over the folder: seconds to "imgsearch is up", what
 *   `/api/status` shows pending, then "more like this" over HTTP (GET /api/search?similarTo=…).
 */
export interface RestartOptions {
  files: number;
  work: string;
  /** Build the ANN index before restarting (what the earlier run of `up` would have left). */
  buildAnn: boolean;
  /** "More like this" requests after `up` is ready (after 20 warm-up requests). */
  queries: number;
}

export interface RestartResult {
  files: number;
  dimension: number;
  setupSeconds: { write: number; index: number; ann: number };
  today: { seconds: number; enqueued: number };
  reconcile: { seconds: number; enqueued: number; unchanged: number };
  /** Spawn → "imgsearch is up", then → the catch-up's log line; the same home over an empty folder as the fixed cost. */
  up: { readySeconds: number; caughtUpSeconds: number; emptyFolderReadySeconds: number; pending: number; annState: string | null };
  moreLikeThis: { requests: number; p50Ms: number; p95Ms: number; p99Ms: number; annState: string | null };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const seconds = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e9;

/** `imgsearch up` as a user starts it; resolves once it prints its URL, and again once it logs the catch-up. */
async function startUp(cwd: string, env: Record<string, string>) {
  const started = process.hrtime.bigint();
  // BENCH_UP_NODE_OPTIONS: extra node flags for the `up` processes (e.g. `--cpu-prof --cpu-prof-dir=…`, refused in NODE_OPTIONS).
  const nodeFlags = (process.env.BENCH_UP_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  const child: ChildProcess = spawn(process.execPath, [...nodeFlags, cliPath, 'up'], {
    cwd,
    env: { ...process.env, IMGSEARCH_PORT: '0', ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const caughtUp = new Promise<number>((resolve) => {
    child.stderr!.on('data', (d) => {
      stderr += String(d);
      if (stderr.includes('bucket folder reconciled with the index')) resolve(seconds(started));
    });
  });
  const url = await upUrl(child, () => stderr.slice(-4000), 600_000);
  return {
    url,
    readySeconds: seconds(started),
    caughtUp,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** GET over a given source address (127.0.0.x): the API's per-client rate limit counts each as one client. */
function get(url: string, localAddress: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { localAddress, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
  });
}

/** Messages put on `queue` by the object-event handler for each event given to the returned onObject. */
function scratchIntake(runtime: LocalRuntime, queue: FileQueue): (event: ImageEvent) => Promise<void> {
  const deps = {
    bus: queue,
    rejections: runtime.rejections,
    ignored: runtime.ignored,
    logger: silentLogger,
    settings: { prefix: runtime.config.prefix, maxBytes: runtime.config.maxBytes },
  };
  return async (event) => void (await handleObjectEvent(event, deps));
}

async function queued(queue: FileQueue): Promise<number> {
  const s = await queue.stats(TOPICS.imageEvents);
  return s.ready + s.inflight;
}

export async function measureRestart(options: RestartOptions, line: (s: string) => void): Promise<RestartResult> {
  const root = path.join(options.work, 'restart');
  const bucket = path.join(root, 'bucket');
  const home = path.join(root, 'home');
  await fs.mkdir(bucket, { recursive: true });
  const env = { IMGSEARCH_HOME: home, IMGSEARCH_BUCKET_DIR: bucket, LOG_LEVEL: 'silent' };
  const config = configFromEnv(parseEnv(env), root);

  let t = process.hrtime.bigint();
  const { images } = await readFashionMnist({ split: 'train', limit: Math.min(options.files, 2000) });
  const pngs = await Promise.all(images.map((im) => fashionMnistPng(im)));
  const names = Array.from({ length: options.files }, (_, i) => `train/${String(Math.floor(i / 1000)).padStart(3, '0')}/${i}.png`);
  for (let i = 0; i < names.length; i += 256) {
    await Promise.all(
      names.slice(i, i + 256).map(async (name, k) => {
        const file = path.join(bucket, name);
        await fs.mkdir(path.dirname(file), { recursive: true });
        await fs.writeFile(file, pngs[(i + k) % pngs.length]!);
      }),
    );
  }
  const write = seconds(t);
  line(`  setup: ${options.files} files written in ${write.toFixed(1)} s`);

  const runtime = await openLocalRuntime(config, { logger: silentLogger });
  const index = await runtime.liveIndex();
  const dimension = index.dimension;
  t = process.hrtime.bigint();
  const random = mulberry32(15);
  const modelVersion = index.modelVersion;
  let docs: VectorDocument[] = [];
  const flush = async () => {
    if (docs.length) await index.upsert(docs);
    docs = [];
  };
  const ids: string[] = [];
  for await (const info of runtime.bucket.list()) {
    const vector = new Float32Array(dimension);
    let norm = 0;
    for (let d = 0; d < dimension; d++) {
      vector[d] = random() - 0.5;
      norm += vector[d]! * vector[d]!;
    }
    for (let d = 0; d < dimension; d++) vector[d]! /= Math.sqrt(norm);
    const id = documentId(runtime.bucket.bucket, info.name);
    ids.push(id);
    docs.push({
      id,
      uri: objectUri(runtime.bucket.bucket, info.name),
      generation: info.generation,
      modelVersion,
      vector,
      labels: [],
      indexedAt: new Date().toISOString(),
    });
    if (docs.length >= 2000) await flush();
  }
  await flush();
  const indexSeconds = seconds(t);
  line(`  setup: ${ids.length} documents of ${dimension} dimensions written to the index in ${indexSeconds.toFixed(1)} s`);
  t = process.hrtime.bigint();
  if (options.buildAnn && runtime.ann) {
    const action = await runtime.ann.runOnce();
    line(`  setup: ANN maintenance: ${JSON.stringify(action)}`);
  }
  const ann = seconds(t);
  if (options.buildAnn) line(`  setup: ANN maintenance took ${ann.toFixed(1)} s`);

  // Today's restart: every object re-published, the index scanned with its vectors.
  const todayQueue = new FileQueue(path.join(root, 'queue-today'), { maxDeliveryAttempts: 5, ackDeadlineSeconds: 60 });
  t = process.hrtime.bigint();
  await republishBucket({ blobs: runtime.bucket, onObject: scratchIntake(runtime, todayQueue) });
  let scanned = 0;
  for await (const page of index.scan(1000)) scanned += page.length;
  const today = { seconds: seconds(t), enqueued: await queued(todayQueue) };
  line(`  previous release's reconcile: ${today.seconds.toFixed(2)} s, ${today.enqueued} messages enqueued (${scanned} documents scanned with vectors)`);

  // This release's reconcile, same folder, same index.
  const nowQueue = new FileQueue(path.join(root, 'queue-now'), { maxDeliveryAttempts: 5, ackDeadlineSeconds: 60 });
  t = process.hrtime.bigint();
  const result = await reconcileBucket({
    blobs: runtime.bucket,
    index,
    bus: nowQueue,
    rejections: runtime.rejections,
    onObject: scratchIntake(runtime, nowQueue),
  });
  const reconcile = { seconds: seconds(t), enqueued: await queued(nowQueue), unchanged: result.unchanged };
  line(
    `  this release's reconcile: ${reconcile.seconds.toFixed(2)} s, ${reconcile.enqueued} messages enqueued (${reconcile.unchanged} unchanged); ` +
      `${(today.seconds / reconcile.seconds).toFixed(1)}× faster`,
  );
  await runtime.close();

  // The fixed cost of starting: the same data directory over an empty folder (model, index, page).
  const empty = path.join(root, 'empty');
  await fs.mkdir(empty, { recursive: true });
  const baseline = await startUp(root, { ...env, IMGSEARCH_BUCKET_DIR: empty });
  await baseline.caughtUp;
  await baseline.stop();
  line(`  imgsearch up over an empty folder (same data directory: the fixed cost of starting): ready in ${baseline.readySeconds.toFixed(2)} s`);

  // The real process over the indexed folder: spawn → "imgsearch is up" → caught up.
  const up = await startUp(root, env);
  try {
    const status = (await (await fetch(`${up.url}/api/status`)).json()) as { pending: number; ann: { state: string } | null };
    const caughtUpSeconds = await up.caughtUp;
    const after = (await (await fetch(`${up.url}/api/status`)).json()) as { pending: number };
    line(
      `  imgsearch up over the indexed folder: ready in ${up.readySeconds.toFixed(2)} s, caught up with the folder at ${caughtUpSeconds.toFixed(2)} s; ` +
        `/api/status pending ${status.pending} at ready, ${after.pending} once caught up; ANN ${status.ann?.state ?? 'n/a'}`,
    );
    const pick = mulberry32(7);
    const latencies: number[] = [];
    for (let q = 0; q < options.queries + 20; q++) {
      const id = ids[Math.floor(pick() * ids.length)]!;
      const start = process.hrtime.bigint();
      // A new source address every 100 requests: under the 240 searches a minute one client may make.
      const code = await get(`${up.url}/api/search?k=10&similarTo=${encodeURIComponent(id)}`, `127.0.0.${10 + Math.floor(q / 100)}`);
      if (code !== 200) throw new Error(`more like this answered ${code}`);
      if (q >= 20) latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    latencies.sort((a, b) => a - b);
    const last = (await (await fetch(`${up.url}/api/status`)).json()) as { ann: { state: string } | null };
    const moreLikeThis = {
      requests: latencies.length,
      p50Ms: percentile(latencies, 50),
      p95Ms: percentile(latencies, 95),
      p99Ms: percentile(latencies, 99),
      annState: last.ann?.state ?? null,
    };
    line(
      `  "more like this" over HTTP, ${moreLikeThis.requests} sequential requests: p50 ${moreLikeThis.p50Ms.toFixed(1)} ms, ` +
        `p95 ${moreLikeThis.p95Ms.toFixed(1)} ms, p99 ${moreLikeThis.p99Ms.toFixed(1)} ms (ANN ${moreLikeThis.annState ?? 'n/a'}; target p99 ≤ 50 ms)`,
    );
    return {
      files: options.files,
      dimension,
      setupSeconds: { write, index: indexSeconds, ann },
      today,
      reconcile,
      up: {
        readySeconds: up.readySeconds,
        caughtUpSeconds,
        emptyFolderReadySeconds: baseline.readySeconds,
        pending: after.pending,
        annState: status.ann?.state ?? null,
      },
      moreLikeThis,
    };
  } finally {
    await up.stop();
  }
}

import { promises as fs } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fashionMnistPng, readFashionMnist } from '../shared/datasets/fashion-mnist.js';
import { startUp } from '../test/helpers/cli.js';

/**
 * Load on `imgsearch up` (the real process, LanceDB, the default model): image searches from 1, 8
 * and 32 concurrent clients, each from its own loopback address (127.0.<level>.x, so per-client
 * rate limits apply per client as they would on a network, and afresh at each level), first with the pipeline idle, then while
 * an ingest burst lands in the watched folder. Meanwhile one more client polls `/api/status` as the
 * page does. Reports searches/s, latency percentiles of answered searches, the share shed with
 * 429/503 (and how fast), /api/status p95 and the age of the counts it served (`asOf`), the
 * server's event-loop delay (bench/event-loop-probe.mjs, preloaded into it), the machine's load
 * average, and whether the server stayed up.
 */
export interface LoadLevel {
  phase: 'idle' | 'ingest burst';
  clients: number;
  seconds: number;
  requests: number;
  ok: number;
  searchesPerSecond: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  shed429: number;
  shed503: number;
  other: number;
  shedShare: number;
  shedP95Ms: number;
  statusP95Ms: number;
  statusMaxMs: number;
  /** Status polls not answered 200 (refused, reset, shed): not in the percentiles above. */
  statusFailed: number;
  /** Age of the counts a status answer carried (answer time − `asOf`), p95. */
  statusAgeP95Ms: number;
  /** The server's event-loop delay during the level (beyond the 10 ms sampling period). */
  eventLoopP99Ms: number;
  eventLoopMaxMs: number;
  /** The machine's 1-minute load average at the end of the level (other processes share the CPU). */
  loadAverage: number;
  pendingAtEnd: number;
}

export interface LoadResult {
  images: number;
  ingestSeconds: number;
  levels: LoadLevel[];
  serverAlive: boolean;
}

export interface LoadOptions {
  images: number;
  work: string;
  /** Seconds per level. */
  seconds: number;
  /** Images dropped into the folder at the start of each level of the burst phase. */
  burst: number;
  /** A data directory to reuse between runs (bucket + home inside); default under `work`. */
  home?: string;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** One request over a keep-alive agent bound to a source address; resolves with status, milliseconds and (if asked) the body. */
function send(
  agent: http.Agent,
  url: URL,
  localAddress: string,
  options: { method: string; path: string; body?: Buffer; contentType?: string; keepBody?: boolean },
): Promise<{ status: number; ms: number; body?: string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: options.method,
        path: options.path,
        agent,
        localAddress,
        headers: options.body ? { 'content-type': options.contentType!, 'content-length': options.body.length } : {},
        timeout: 60_000,
      },
      (res) => {
        let body = '';
        if (options.keepBody) res.on('data', (d: Buffer) => (body += String(d)));
        else res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0, body: options.keepBody ? body : undefined }));
      },
    );
    req.on('error', () => resolve({ status: 0, ms: performance.now() - t0 }));
    req.on('timeout', () => req.destroy());
    req.end(options.body);
  });
}

function multipart(png: Buffer): { body: Buffer; contentType: string } {
  const b = 'loadbench';
  const head = `--${b}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n`;
  return { body: Buffer.concat([Buffer.from(head), png, Buffer.from(`\r\n--${b}--\r\n`)]), contentType: `multipart/form-data; boundary=${b}` };
}

async function writeImages(dir: string, prefix: string, split: 'train' | 'test', count: number, offset: number): Promise<void> {
  const { images } = await readFashionMnist({ split, limit: count, offset });
  for (const [i, im] of images.entries()) {
    const file = path.join(dir, `${prefix}-${offset + i}.png`);
    const tmp = path.join(dir, `.${prefix}-${offset + i}.tmp`);
    await fs.writeFile(tmp, await fashionMnistPng(im));
    await fs.rename(tmp, file); // lands whole, as a sync tool would
  }
}

async function status(url: string): Promise<{ indexed: number; pending: number }> {
  return (await (await fetch(`${url}/api/status`)).json()) as { indexed: number; pending: number };
}

const eventLoopProbe = path.join(path.dirname(fileURLToPath(import.meta.url)), 'event-loop-probe.mjs');

/** The server's event-loop delay since the previous call (the probe answers SIGUSR2 with one line). */
async function eventLoopSince(child: { kill(signal: NodeJS.Signals): boolean }, file: string): Promise<{ p99Ms: number; maxMs: number }> {
  const lines = async () => (await fs.readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  const before = (await lines()).length;
  child.kill('SIGUSR2');
  for (let i = 0; i < 200; i++) {
    const now = await lines();
    if (now.length > before) return JSON.parse(now[now.length - 1]!) as { p99Ms: number; maxMs: number };
    await new Promise((r) => setTimeout(r, 50));
  }
  return { p99Ms: NaN, maxMs: NaN };
}

export async function measureLoad(options: LoadOptions, line: (s: string) => void): Promise<LoadResult> {
  const root = options.home ?? path.join(options.work, 'load');
  const eventLoopFile = path.join(options.work, 'event-loop.jsonl');
  const bucket = path.join(root, 'bucket');
  await fs.mkdir(bucket, { recursive: true });
  const have = (await fs.readdir(bucket)).filter((f) => f.startsWith('item-')).length;
  if (have < options.images) {
    line(`  writing ${options.images - have} Fashion-MNIST images…`);
    await writeImages(bucket, 'item', 'train', options.images - have, have);
  }
  const t0 = performance.now();
  const up = await startUp({
    cwd: root,
    env: {
      IMGSEARCH_HOME: path.join(root, 'home'),
      IMGSEARCH_BUCKET_DIR: bucket,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${JSON.stringify(eventLoopProbe)}`.trim(),
      IMGSEARCH_BENCH_EVENT_LOOP_FILE: eventLoopFile,
    },
    timeoutMs: 600_000,
  });
  const levels: LoadLevel[] = [];
  try {
    for (;;) {
      const s = await status(up.url).catch(() => ({ indexed: 0, pending: 1 }));
      if (s.indexed >= options.images && s.pending === 0) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    const ingestSeconds = (performance.now() - t0) / 1000;
    line(`  ${options.images} images indexed (start + ingest ${ingestSeconds.toFixed(0)} s)`);

    const { images: queryImages } = await readFashionMnist({ split: 'test', limit: 64 });
    const queries = await Promise.all(queryImages.map(async (im) => multipart(await fashionMnistPng(im))));
    const url = new URL(up.url);
    let burstOffset = 0;

    for (const phase of ['idle', 'ingest burst'] as const) {
      for (const clients of [1, 8, 32]) {
        if (phase === 'ingest burst') {
          await writeImages(bucket, 'burst', 'test', options.burst, 100 + burstOffset);
          burstOffset += options.burst;
        }
        await eventLoopSince(up.child, eventLoopFile); // starts the level's measurement
        const until = performance.now() + options.seconds * 1000;
        const ok: number[] = [];
        const shed: number[] = [];
        const counts = { 429: 0, 503: 0, other: 0 };
        const statusMs: number[] = [];
        const statusAge: number[] = [];
        let statusFailed = 0;
        const workers = Array.from({ length: clients }, async (_, c) => {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          // Addresses of their own per level: a client's rate-limit budget does not carry over from the level before.
          const address = `127.0.${1 + levels.length}.${10 + c}`;
          for (let n = c; performance.now() < until; n += clients) {
            const q = queries[n % queries.length]!;
            const r = await send(agent, url, address, { method: 'POST', path: '/api/search?k=12', body: q.body, contentType: q.contentType });
            if (r.status === 200) ok.push(r.ms);
            else if (r.status === 429 || r.status === 503) {
              counts[r.status] += 1;
              shed.push(r.ms);
              // A well-behaved client backs off a little before retrying.
              await new Promise((res) => setTimeout(res, 50));
            } else counts.other += 1;
          }
          agent.destroy();
        });
        const poller = (async () => {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          while (performance.now() < until) {
            const r = await send(agent, url, '127.0.0.2', { method: 'GET', path: '/api/status', keepBody: true });
            if (r.status === 200) {
              statusMs.push(r.ms);
              const asOf = Date.parse((JSON.parse(r.body!) as { asOf?: string }).asOf ?? '');
              if (Number.isFinite(asOf)) statusAge.push(Date.now() - asOf);
            } else statusFailed += 1;
            await new Promise((res) => setTimeout(res, 250));
          }
          agent.destroy();
        })();
        const started = performance.now();
        await Promise.all([...workers, poller]);
        const seconds = (performance.now() - started) / 1000;
        const eventLoop = await eventLoopSince(up.child, eventLoopFile);
        ok.sort((a, b) => a - b);
        shed.sort((a, b) => a - b);
        statusMs.sort((a, b) => a - b);
        statusAge.sort((a, b) => a - b);
        const requests = ok.length + counts[429] + counts[503] + counts.other;
        const pendingAtEnd = (await status(up.url).catch(() => ({ pending: -1 }))).pending;
        const level: LoadLevel = {
          phase,
          clients,
          seconds,
          requests,
          ok: ok.length,
          searchesPerSecond: ok.length / seconds,
          p50Ms: percentile(ok, 50),
          p95Ms: percentile(ok, 95),
          p99Ms: percentile(ok, 99),
          shed429: counts[429],
          shed503: counts[503],
          other: counts.other,
          shedShare: requests ? (counts[429] + counts[503]) / requests : 0,
          shedP95Ms: percentile(shed, 95),
          statusP95Ms: percentile(statusMs, 95),
          statusMaxMs: statusMs[statusMs.length - 1] ?? NaN,
          statusFailed,
          statusAgeP95Ms: percentile(statusAge, 95),
          eventLoopP99Ms: eventLoop.p99Ms,
          eventLoopMaxMs: eventLoop.maxMs,
          loadAverage: os.loadavg()[0]!,
          pendingAtEnd,
        };
        levels.push(level);
        line(
          `  ${phase.padEnd(12)} ${String(clients).padStart(2)} clients: ${level.searchesPerSecond.toFixed(1)} searches/s, p50 ${level.p50Ms.toFixed(0)} / p95 ${level.p95Ms.toFixed(0)} / p99 ${level.p99Ms.toFixed(0)} ms; ` +
            `shed ${(level.shedShare * 100).toFixed(1)}% (429: ${level.shed429}, 503: ${level.shed503}, p95 ${Number.isNaN(level.shedP95Ms) ? '-' : level.shedP95Ms.toFixed(0)} ms), other ${level.other}; ` +
            `/api/status p95 ${level.statusP95Ms.toFixed(0)} ms (max ${level.statusMaxMs.toFixed(0)}, failed ${statusFailed}, counts age p95 ${level.statusAgeP95Ms.toFixed(0)} ms); ` +
            `event-loop delay p99 ${level.eventLoopP99Ms} ms (max ${level.eventLoopMaxMs}); load average ${level.loadAverage.toFixed(1)}; pending ${pendingAtEnd}`,
        );
      }
    }
    const serverAlive =
      up.child.exitCode === null &&
      (await status(up.url)
        .then(() => true)
        .catch(() => false));
    line(`  server alive at the end: ${serverAlive ? 'yes' : 'NO'}`);
    return { images: options.images, ingestSeconds, levels, serverAlive };
  } finally {
    await up.stop();
    // Burst files are not kept: a reused data directory starts from the same N images next time.
    for (const f of await fs.readdir(bucket)) if (f.startsWith('burst-')) await fs.rm(path.join(bucket, f), { force: true });
  }
}

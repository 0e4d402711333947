// Preloaded into `imgsearch up` by the load bench (NODE_OPTIONS=--import, bench/load.ts): the
// main thread's event-loop delay, the figure that says whether pipeline work blocks the server
// itself (less sensitive than request latency to other processes sharing the CPU). Each SIGUSR2
// appends the delay since the previous one to IMGSEARCH_BENCH_EVENT_LOOP_FILE (one JSON line, ms
// beyond the 10 ms sampling period) and starts over. Not part of the product.
import { appendFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

const file = process.env.IMGSEARCH_BENCH_EVENT_LOOP_FILE;
if (file && isMainThread) {
  const resolutionMs = 10;
  const delay = monitorEventLoopDelay({ resolution: resolutionMs });
  delay.enable();
  process.on('SIGUSR2', () => {
    // The histogram holds the time between samples: the period itself is not a delay.
    const ms = (ns) => Math.max(0, Math.round((ns / 1e6 - resolutionMs) * 10) / 10);
    const line = { p50Ms: ms(delay.percentile(50)), p99Ms: ms(delay.percentile(99)), maxMs: ms(delay.max), samples: delay.count };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
    delay.reset();
  });
}

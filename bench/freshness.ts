import { promises as fs } from 'node:fs';
import path from 'node:path';
import { documentId } from '../shared/contracts.js';
import { startUp } from '../test/helpers/cli.js';

export interface FreshnessResult {
  files: number;
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Freshness under `imgsearch up`: time from a file landing in the watched folder (atomic rename,
 * as a sync tool or `gsutil cp` would) to it being searchable through the API.
 */
export async function measureFreshness(sources: string[], work: string): Promise<FreshnessResult> {
  const bucket = path.join(work, 'fresh-bucket');
  await fs.rm(bucket, { recursive: true, force: true });
  await fs.mkdir(bucket, { recursive: true });
  const up = await startUp({ cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'fresh-home'), IMGSEARCH_BUCKET_DIR: bucket } });
  const latencies: number[] = [];
  try {
    for (const [i, src] of sources.entries()) {
      const name = `fresh-${i}${path.extname(src)}`;
      const tmp = path.join(work, `.${name}.tmp`);
      await fs.copyFile(src, tmp);
      const t0 = performance.now();
      await fs.rename(tmp, path.join(bucket, name));
      const id = documentId(bucket, name);
      for (;;) {
        const res = await fetch(`${up.url}/api/search?similarTo=${id}&k=1`);
        if (res.status === 200) break; // 404 until the document is in the live index
        await new Promise((r) => setTimeout(r, 10));
      }
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    await up.stop();
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  return { files: sources.length, p50Ms: percentile(sorted, 50), p95Ms: percentile(sorted, 95), maxMs: sorted[sorted.length - 1]! };
}

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { LanceDbIndexCatalog } from '../shared/adapters/local/lancedb-catalog.js';
import { JsonlSearchEventLog } from '../shared/adapters/local/search-event-log.js';
import type { Embedder } from '../shared/ports/embedder.js';
import { noSearchEvents, type SearchEventSink } from '../shared/ports/search-events.js';
import type { VectorDocument } from '../shared/ports/vector-index.js';
import { SearchService } from '../shared/services/search-service.js';
import { mulberry32 } from '../shared/training/prng.js';
import { l2NormaliseInPlace } from '../shared/vector-math.js';

/**
 * What prediction monitoring costs a search: the same text searches through SearchService over a
 * real LanceDB index (flat scan), without events (baseline) and with the local event log (JSON
 * lines, fdatasync per batch), in alternating blocks in one process. The query vector comes from
 * a stand-in text tower (a seeded random unit vector) so the figure is the service + index + log.
 */
export interface MonitoringOverhead {
  vectors: number;
  dimension: number;
  searches: number;
  baseline: { p50Ms: number; p95Ms: number };
  withEventLog: { p50Ms: number; p95Ms: number };
  /** withEventLog p50 / baseline p50. */
  ratioP50: number;
  eventsWritten: number;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(p * s.length) - 1)]!;
};

export async function measureMonitoringOverhead(
  work: string,
  options: { vectors?: number; dim?: number; searches?: number } = {},
): Promise<MonitoringOverhead> {
  const n = options.vectors ?? 10_000;
  const dim = options.dim ?? 256;
  const searches = options.searches ?? 400;
  const dir = path.join(work, 'monitoring-bench');
  await fs.rm(dir, { recursive: true, force: true });
  const random = mulberry32(16);
  const unit = () => l2NormaliseInPlace(Float32Array.from({ length: dim }, () => random() - 0.5));
  const catalog = await LanceDbIndexCatalog.open(path.join(dir, 'index'));
  try {
    const index = await catalog.ensureLive('bench-model', dim);
    const now = new Date().toISOString();
    for (let i = 0; i < n; i += 5000) {
      const docs: VectorDocument[] = Array.from({ length: Math.min(5000, n - i) }, (_, j) => ({
        id: `doc-${i + j}`,
        uri: `file:///bench/doc-${i + j}.png`,
        generation: '1',
        modelVersion: 'bench-model',
        vector: unit(),
        labels: [],
        indexedAt: now,
      }));
      await index.upsert(docs);
    }
    const queries = Array.from({ length: 64 }, unit);
    let q = 0;
    const embedder = {
      modelVersion: 'bench-model',
      dimension: dim,
      hasTextTower: true,
      embedTexts: async () => [queries[q++ % queries.length]!],
    } as unknown as Embedder;
    const log = new JsonlSearchEventLog(path.join(dir, 'monitoring'));
    const service = (events: SearchEventSink) =>
      new SearchService(
        () => embedder,
        async () => index,
        undefined,
        undefined,
        events,
      );
    const plain = service(noSearchEvents);
    const logged = service(log);
    const base: number[] = [];
    const withLog: number[] = [];
    // Warm-up, then alternating blocks so both see the same machine.
    for (let i = 0; i < 20; i++) await plain.byText('warm', { k: 10 });
    for (let block = 0; block < searches / 20; block++) {
      for (const [svc, into] of block % 2 === 0
        ? ([
            [plain, base],
            [logged, withLog],
          ] as const)
        : ([
            [logged, withLog],
            [plain, base],
          ] as const)) {
        for (let i = 0; i < 10; i++) {
          const t = performance.now();
          await svc.byText('query', { k: 10 });
          into.push(performance.now() - t);
        }
      }
    }
    await log.close();
    const written = (await fs.readFile(path.join(dir, 'monitoring', 'events.jsonl'), 'utf8')).trim().split('\n').length;
    const baseline = { p50Ms: pct(base, 0.5), p95Ms: pct(base, 0.95) };
    const withEventLog = { p50Ms: pct(withLog, 0.5), p95Ms: pct(withLog, 0.95) };
    return {
      vectors: n,
      dimension: dim,
      searches: base.length + withLog.length,
      baseline,
      withEventLog,
      ratioP50: withEventLog.p50Ms / baseline.p50Ms,
      eventsWritten: written,
    };
  } finally {
    await catalog.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

export function formatMonitoringOverhead(r: MonitoringOverhead): string[] {
  return [
    `  ${r.searches} text searches, ${r.vectors} vectors × ${r.dimension} (flat scan), half of them with the event log`,
    `    baseline (no events): p50 ${r.baseline.p50Ms.toFixed(2)} ms, p95 ${r.baseline.p95Ms.toFixed(2)} ms`,
    `    with the event log:   p50 ${r.withEventLog.p50Ms.toFixed(2)} ms, p95 ${r.withEventLog.p95Ms.toFixed(2)} ms (${r.eventsWritten} events written)`,
    `    ratio p50: ${r.ratioP50.toFixed(3)}`,
  ];
}

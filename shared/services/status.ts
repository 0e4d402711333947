import { TOPICS, type RejectedImage } from '../contracts.js';
import type { Embedder } from '../ports/embedder.js';
import type { DeadLetter, EventBus } from '../ports/event-bus.js';
import type { RejectionLog } from '../ports/rejection-log.js';
import type { VectorIndex } from '../ports/vector-index.js';

export interface PipelineStatus {
  indexed: number;
  pending: number;
  queues: Record<string, { ready: number; inflight: number; deadLettered: number }>;
  rejected: { count: number; byReason: Record<string, number>; items: RejectedImage[] };
  deadLettered: { count: number; items: (DeadLetter & { topic: string })[] };
  model: { version: string; dimension: number; hasTextTower: boolean; name: string };
  index: { name: string; modelVersion: string } | null;
}

/** What `imgsearch status`, `GET /api/status` and the web page show. */
export async function pipelineStatus(deps: {
  bus: EventBus;
  index: VectorIndex | null;
  rejections: RejectionLog;
  embedder: Embedder;
  listLimit?: number;
}): Promise<PipelineStatus> {
  const limit = deps.listLimit ?? 100;
  const topics = [TOPICS.imageEvents, TOPICS.embeddings];
  const stats = await Promise.all(topics.map((t) => deps.bus.stats(t)));
  const queues = Object.fromEntries(topics.map((t, i) => [t, stats[i]!]));
  const rejectedItems = await deps.rejections.list(100_000);
  const byReason: Record<string, number> = {};
  for (const r of rejectedItems) byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
  rejectedItems.sort((a, b) => b.at.localeCompare(a.at));
  const dead = (await Promise.all(topics.map(async (t) => (await deps.bus.listDeadLetters(t, limit)).map((d) => ({ ...d, topic: t }))))).flat();
  return {
    indexed: deps.index ? await deps.index.count() : 0,
    pending: stats.reduce((n, s) => n + s.ready + s.inflight, 0),
    queues,
    rejected: { count: rejectedItems.length, byReason, items: rejectedItems.slice(0, limit) },
    deadLettered: { count: stats.reduce((n, s) => n + s.deadLettered, 0), items: dead },
    model: {
      version: deps.embedder.modelVersion,
      dimension: deps.embedder.dimension,
      hasTextTower: deps.embedder.hasTextTower,
      name: deps.embedder.manifest.name,
    },
    index: deps.index ? { name: deps.index.name, modelVersion: deps.index.modelVersion } : null,
  };
}

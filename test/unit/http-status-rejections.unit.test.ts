import { describe, expect, it } from 'vitest';
import type { RejectedImage } from '../../shared/contracts.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { EventBus } from '../../shared/ports/event-bus.js';
import type { RejectionLog } from '../../shared/ports/rejection-log.js';
import { pipelineStatus } from '../../shared/services/status.js';

/**
 * `/api/status` runs `pipelineStatus` on every poll of every open page; in the cloud each
 * rejection record read is a GCS request. Records are read again only when the set changed (its
 * listing, `count()`, is cheap) and at most once per interval; the count is always current.
 */
class CountingRejections implements RejectionLog {
  readonly records = new Map<string, RejectedImage>();
  reads = 0;
  async record(r: RejectedImage): Promise<void> {
    this.records.set(r.id, r);
  }
  async clear(id: string): Promise<void> {
    this.records.delete(id);
  }
  async list(limit = 100): Promise<RejectedImage[]> {
    this.reads += this.records.size; // one read per record, as the GCS and JSON logs do
    return [...this.records.values()].sort((a, b) => b.at.localeCompare(a.at)).slice(0, limit);
  }
  async count(): Promise<number> {
    return this.records.size;
  }
}

const bus = {
  stats: async () => ({ ready: 0, inflight: 0, deadLettered: 0 }),
  listDeadLetters: async () => [],
} as unknown as EventBus;
const embedder = { modelVersion: 'm1', dimension: 4, hasTextTower: false, manifest: { name: 'fake' } } as unknown as Embedder;
const rejection = (i: number, reason: RejectedImage['reason'] = 'corrupt-image'): RejectedImage => ({
  id: `r${i}`,
  uri: `file:///b/${i}.png`,
  generation: '1',
  reason,
  detail: 'x',
  at: `2026-01-01T00:00:${String(i).padStart(2, '0')}.000Z`,
});

describe('pipelineStatus: rejections aggregated with a bound', () => {
  it('does not read every rejection record on every call', async () => {
    const log = new CountingRejections();
    for (let i = 0; i < 50; i++) await log.record(rejection(i));
    let now = 0;
    const cache = { minIntervalMs: 2000, maxAgeMs: 30_000, now: () => now };
    const status = () => pipelineStatus({ bus, index: null, rejections: log, embedder, listLimit: 10, rejectionCache: cache });

    const first = await status();
    expect(first.rejected).toMatchObject({ count: 50, byReason: { 'corrupt-image': 50 } });
    expect(first.rejected.items.map((r) => r.id)).toEqual(['r49', 'r48', 'r47', 'r46', 'r45', 'r44', 'r43', 'r42', 'r41', 'r40']);
    const readsAfterFirst = log.reads;
    expect(readsAfterFirst).toBe(50);

    for (let i = 0; i < 100; i++) {
      now += 100;
      await status();
    }
    expect(log.reads).toBe(readsAfterFirst); // nothing changed: no record read again

    // A new rejection: the count is current at once; the records are re-read once the interval passed.
    await log.record(rejection(55, 'too-large'));
    now += 10;
    const soon = await status();
    expect(soon.rejected.count).toBe(51);
    now += 2000;
    const later = await status();
    expect(later.rejected).toMatchObject({ count: 51, byReason: { 'corrupt-image': 50, 'too-large': 1 } });
    expect(later.rejected.items[0]!.id).toBe('r55');
    expect(log.reads).toBe(readsAfterFirst + 51);

    // Unchanged count but old data (a record replaced): re-read after maxAgeMs.
    now += 30_001;
    await status();
    expect(log.reads).toBe(readsAfterFirst + 51 + 51);
  });

  it('shares one read between concurrent calls', async () => {
    const log = new CountingRejections();
    for (let i = 0; i < 20; i++) await log.record(rejection(i));
    const cache = { minIntervalMs: 2000, maxAgeMs: 30_000, now: () => 0 };
    await Promise.all(Array.from({ length: 8 }, () => pipelineStatus({ bus, index: null, rejections: log, embedder, rejectionCache: cache })));
    expect(log.reads).toBe(20);
  });

  it('reads everything on each call when no cache is asked for (the one-shot `imgsearch status`)', async () => {
    const log = new CountingRejections();
    for (let i = 0; i < 5; i++) await log.record(rejection(i));
    await pipelineStatus({ bus, index: null, rejections: log, embedder });
    await log.record(rejection(9, 'too-large'));
    const s = await pipelineStatus({ bus, index: null, rejections: log, embedder });
    expect(s.rejected).toMatchObject({ count: 6, byReason: { 'corrupt-image': 5, 'too-large': 1 } });
  });
});

import { describe, expect, it } from 'vitest';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { EventBus, TopicStats } from '../../shared/ports/event-bus.js';
import type { RejectionLog } from '../../shared/ports/rejection-log.js';
import type { VectorIndex } from '../../shared/ports/vector-index.js';
import { pipelineStatus, StatusSnapshots } from '../../shared/services/status.js';

/**
 * `/api/status` is polled by every open page while the pipeline keeps the disk and the index busy
 * (an ingest burst): reading the counts (queue listings, the index count, rejection records) took
 * up to a second there. A server answers from its last reading (StatusSnapshots), reading again in
 * the background, once at a time; the model and the live index are read for each answer, so a
 * switch shows at once.
 */

/** A gate a read waits on, opened by the test (no timers). */
function gate(): { opened: Promise<void>; open(): void } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/** Counts how often each part of the status is read; `block` holds the index count until opened. */
class Reads {
  stats = 0;
  counts = 0;
  rejectionLists = 0;
  block: Promise<void> | null = null;
  pending = 3;
  fail: Error | null = null;

  bus(): EventBus {
    return {
      stats: async (): Promise<TopicStats> => {
        this.stats += 1;
        return { ready: this.pending, inflight: 0, deadLettered: 0 };
      },
      listDeadLetters: async () => [],
    } as unknown as EventBus;
  }

  index(name: string, modelVersion: string, rows: () => number): VectorIndex {
    return {
      name,
      modelVersion,
      count: async () => {
        this.counts += 1;
        if (this.block) await this.block;
        if (this.fail) throw this.fail;
        return rows();
      },
    } as unknown as VectorIndex;
  }

  rejections(): RejectionLog {
    return {
      count: async () => 0,
      list: async () => {
        this.rejectionLists += 1;
        return [];
      },
    } as unknown as RejectionLog;
  }
}

const model = (version: string, dimension = 4) =>
  ({ modelVersion: version, dimension, hasTextTower: false, manifest: { name: `net-${version}` } }) as unknown as Embedder;

describe('pipelineStatus with StatusSnapshots (GET /api/status under load)', () => {
  it('reads the counts once for many concurrent and repeated polls, not once per request', async () => {
    const reads = new Reads();
    let now = 0;
    const snapshots = new StatusSnapshots({ freshMs: 1_000, maxStaleMs: 10_000, now: () => now });
    const deps = { bus: reads.bus(), index: reads.index('images-v1', 'm1', () => 10_000), rejections: reads.rejections(), embedder: model('m1'), snapshots };

    const first = await Promise.all(Array.from({ length: 50 }, () => pipelineStatus(deps)));
    expect(reads.counts).toBe(1);
    expect(reads.stats).toBe(2); // one listing per topic
    expect(reads.rejectionLists).toBe(1);
    expect(first.every((s) => s.indexed === 10_000 && s.pending === 6)).toBe(true);

    for (let i = 0; i < 20; i++) {
      now += 40;
      await pipelineStatus(deps);
    }
    expect(reads.counts).toBe(1);

    // Past freshMs: the polls that arrive while the one new reading runs share it.
    now += 1_000;
    reads.pending = 0;
    const during = await Promise.all(Array.from({ length: 50 }, () => pipelineStatus(deps)));
    expect(reads.counts).toBe(2);
    expect(reads.stats).toBe(4);
    expect(during.every((s) => s.pending === 6)).toBe(true); // served from the last reading
    await expect.poll(async () => (await pipelineStatus(deps)).pending).toBe(0);
    expect(reads.counts).toBe(2);
  });

  it('answers from the last reading while a new one is stuck behind the busy pipeline, with its age in asOf', async () => {
    const reads = new Reads();
    let now = 0;
    let rows = 100;
    const snapshots = new StatusSnapshots({ freshMs: 1_000, maxStaleMs: 10_000, now: () => now });
    const deps = { bus: reads.bus(), index: reads.index('images-v1', 'm1', () => rows), rejections: reads.rejections(), embedder: model('m1'), snapshots };
    const first = await pipelineStatus(deps);
    expect(Number.isNaN(Date.parse(first.asOf))).toBe(false);

    const stuck = gate();
    reads.block = stuck.opened;
    rows = 250;
    now += 5_000;
    // Would never resolve if the poll waited for the reading (the gate is still closed).
    const stale = await pipelineStatus(deps);
    expect(stale).toMatchObject({ indexed: 100, asOf: first.asOf });
    expect(reads.counts).toBe(2);
    stuck.open();
    await expect.poll(async () => (await pipelineStatus(deps)).indexed).toBe(250);
  });

  it('shows a new model at once, and a new live index with its own count, never the previous one', async () => {
    const reads = new Reads();
    let now = 0;
    const snapshots = new StatusSnapshots({ freshMs: 60_000, maxStaleMs: 600_000, now: () => now });
    const bus = reads.bus();
    const rejections = reads.rejections();
    const v1 = reads.index('images-m1', 'm1', () => 10_000);
    const before = await pipelineStatus({ bus, index: v1, rejections, embedder: model('m1'), snapshots });
    expect(before).toMatchObject({ model: { version: 'm1', name: 'net-m1' }, index: { name: 'images-m1' }, indexed: 10_000 });

    // The registry's active model changed (a promotion): the very next answer names it.
    now += 10;
    const promoted = await pipelineStatus({ bus, index: v1, rejections, embedder: model('m2', 8), snapshots });
    expect(promoted.model).toEqual({ version: 'm2', dimension: 8, hasTextTower: false, name: 'net-m2' });

    // The alias moved to the new model's index (still filling): its count, read now, not the old one's.
    now += 10;
    const v2 = reads.index('images-m2', 'm2', () => 7);
    const moved = await pipelineStatus({ bus, index: v2, rejections, embedder: model('m2', 8), snapshots });
    expect(moved).toMatchObject({ index: { name: 'images-m2', modelVersion: 'm2' }, indexed: 7, model: { version: 'm2' } });
  });

  it('after invalidate() waits for a new reading and drops one started before it', async () => {
    const reads = new Reads();
    let now = 0;
    let rows = 1;
    const snapshots = new StatusSnapshots({ freshMs: 1_000, maxStaleMs: 10_000, now: () => now });
    const deps = { bus: reads.bus(), index: reads.index('images-v1', 'm1', () => rows), rejections: reads.rejections(), embedder: model('m1'), snapshots };
    await pipelineStatus(deps);

    const slow = gate();
    reads.block = slow.opened;
    now += 2_000;
    expect((await pipelineStatus(deps)).indexed).toBe(1); // stale, a reading started (blocked)
    snapshots.invalidate();
    reads.block = null;
    rows = 2;
    expect((await pipelineStatus(deps)).indexed).toBe(2); // waited for its own reading
    rows = 3;
    slow.open(); // the reading from before invalidate() completes now, seeing rows = 3…
    await new Promise((r) => setImmediate(r));
    expect((await pipelineStatus(deps)).indexed).toBe(2); // …and is not kept over the newer one
  });

  it('waits for a new reading when the last one is older than maxStaleMs, and then reports its failure', async () => {
    const reads = new Reads();
    let now = 0;
    const snapshots = new StatusSnapshots({ freshMs: 1_000, maxStaleMs: 10_000, now: () => now });
    const deps = { bus: reads.bus(), index: reads.index('images-v1', 'm1', () => 5), rejections: reads.rejections(), embedder: model('m1'), snapshots };
    await pipelineStatus(deps);

    reads.fail = new Error('EIO: index unreadable');
    now += 2_000;
    expect((await pipelineStatus(deps)).indexed).toBe(5); // stale while its background reading fails
    now += 10_000;
    await expect(pipelineStatus(deps)).rejects.toThrow(/EIO: index unreadable/);
    reads.fail = null;
    expect((await pipelineStatus(deps)).indexed).toBe(5);
  });

  it('reads every count for each call without snapshots (the one-shot `imgsearch status`)', async () => {
    const reads = new Reads();
    const deps = { bus: reads.bus(), index: reads.index('images-v1', 'm1', () => 5), rejections: reads.rejections(), embedder: model('m1') };
    await pipelineStatus(deps);
    await pipelineStatus(deps);
    expect(reads.counts).toBe(2);
  });
});

import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, silentLogger } from '../../shared/logger.js';
import type { AnnMaintainable, AnnParams, AnnStatus, VectorIndex } from '../../shared/ports/vector-index.js';
import { AnnMaintenance, type AnnPolicy } from '../../shared/services/ann-maintenance.js';

const policy: AnnPolicy = { minRows: 1_000, type: 'ivf_pq', foldInRows: 100, rebuildGrowth: 2 };

/**
 * An embedded index as LanceDB behaves: a build takes a while and swaps the index in when done;
 * rows written meanwhile stay un-indexed until a fold-in; `building` while the build runs.
 */
class FakeAnnIndex implements AnnMaintainable {
  readonly name = 'images-v1';
  readonly modelVersion = 'm1';
  readonly dimension = 16;
  rows = 0;
  params: AnnParams | null = null;
  indexed = 0;
  builds: AnnParams[] = [];
  foldIns = 0;
  private finishBuild: (() => void) | null = null;
  private buildRunning = false;
  failNextBuild: Error | null = null;

  async count(): Promise<number> {
    return this.rows;
  }
  async annStatus(): Promise<AnnStatus> {
    return {
      state: this.buildRunning ? 'building' : this.params ? 'ready' : 'none',
      type: this.params ? 'IVF_PQ' : null,
      params: this.params,
      rowsIndexed: this.indexed,
      rowsUnindexed: this.rows - this.indexed,
      sizeBytes: null,
      lastBuildAt: null,
      lastBuildSeconds: null,
      building: null,
      maintainedBy: 'product',
    };
  }
  async buildAnn(params: AnnParams): Promise<void> {
    this.builds.push(params);
    if (this.failNextBuild) {
      const err = this.failNextBuild;
      this.failNextBuild = null;
      throw err;
    }
    const rowsAtStart = this.rows;
    this.buildRunning = true;
    await new Promise<void>((resolve) => (this.finishBuild = resolve));
    this.buildRunning = false;
    this.params = params;
    this.indexed = rowsAtStart;
  }
  async foldInAnn(): Promise<void> {
    this.foldIns++;
    this.indexed = this.rows;
  }
  completeBuild(): void {
    this.finishBuild?.();
  }
}

const asIndex = (f: FakeAnnIndex) => f as unknown as VectorIndex;
const tick = () => new Promise((r) => setTimeout(r, 10));

describe('AnnMaintenance', () => {
  it('builds once past the threshold; a trigger during the pass joins it (single-flight)', async () => {
    const index = new FakeAnnIndex();
    index.rows = 999;
    const m = new AnnMaintenance(async () => asIndex(index), policy, silentLogger);
    expect(await m.runOnce()).toMatchObject({ kind: 'none' });

    index.rows = 1_000;
    const first = m.runOnce();
    const second = m.runOnce();
    expect(second).toBe(first);
    await tick();
    expect(index.builds).toHaveLength(1);
    // More rows arrive during the build: they are not in it.
    index.rows = 1_050;
    index.completeBuild();
    expect(await first).toMatchObject({ kind: 'build', params: { type: 'ivf_pq', rows: 1_000, numPartitions: 32 } });
    expect(await index.annStatus()).toMatchObject({ state: 'ready', rowsIndexed: 1_000, rowsUnindexed: 50 });
  });

  it('folds rows in once there are foldInRows of them, and retrains when the collection doubled', async () => {
    const index = new FakeAnnIndex();
    index.rows = 1_000;
    const m = new AnnMaintenance(async () => asIndex(index), policy, silentLogger);
    const build = m.runOnce();
    await tick();
    index.completeBuild();
    await build;

    index.rows = 1_099;
    expect(await m.runOnce()).toMatchObject({ kind: 'none' });
    index.rows = 1_100;
    expect(await m.runOnce()).toMatchObject({ kind: 'fold-in' });
    expect(index.foldIns).toBe(1);
    expect(await index.annStatus()).toMatchObject({ rowsUnindexed: 0 });

    index.rows = 2_000;
    const rebuild = m.runOnce();
    await tick();
    expect(await index.annStatus()).toMatchObject({ state: 'building', type: 'IVF_PQ' });
    index.completeBuild();
    expect(await rebuild).toMatchObject({ kind: 'rebuild', params: { rows: 2_000, numPartitions: 45 } });
  });

  it('logs a failed pass with its error and tries again at the next one', async () => {
    const index = new FakeAnnIndex();
    index.rows = 1_000;
    index.failNextBuild = new Error('disk full');
    const out = new PassThrough();
    const lines: string[] = [];
    out.on('data', (b: Buffer) => lines.push(...b.toString().trim().split('\n')));
    const m = new AnnMaintenance(async () => asIndex(index), policy, createLogger({ level: 'info', destination: out }));
    expect(await m.runOnce()).toEqual({ kind: 'none', reason: 'failed' });
    await tick();
    const failure = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => /maintenance failed/.test(String(l.msg ?? l.message)));
    expect(failure?.err).toMatchObject({ message: 'disk full' });

    const retry = m.runOnce();
    await tick();
    index.completeBuild();
    expect(await retry).toMatchObject({ kind: 'build' });
    expect(index.builds).toHaveLength(2);
  });

  it('leaves an index that keeps its own ANN structure (OpenSearch) alone', async () => {
    const plain = { name: 'os', count: async () => 1_000_000 } as unknown as VectorIndex;
    const m = new AnnMaintenance(async () => plain, policy, silentLogger);
    expect(await m.runOnce()).toEqual({ kind: 'none', reason: 'the index engine keeps its own ANN structure' });
    expect(await new AnnMaintenance(async () => null, policy, silentLogger).runOnce()).toMatchObject({ kind: 'none' });
  });

  it('start checks at once and on a timer; stop ends the schedule', async () => {
    const index = new FakeAnnIndex();
    index.rows = 10;
    let checks = 0;
    const m = new AnnMaintenance(
      async () => {
        checks++;
        return asIndex(index);
      },
      policy,
      silentLogger,
      0.02,
    );
    m.start();
    await new Promise((r) => setTimeout(r, 200));
    m.stop();
    const after = checks;
    expect(after).toBeGreaterThanOrEqual(2);
    await new Promise((r) => setTimeout(r, 100));
    expect(checks).toBe(after);
  });
});

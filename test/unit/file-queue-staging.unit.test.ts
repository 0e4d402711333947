import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { backoffMs, isMachineFault } from '../../shared/backoff.js';
import { PipelineHealth } from '../../shared/services/pipeline-health.js';
import { tempDir } from '../helpers/cli.js';

/** What failed writes leave in the queue's staging folders is cleaned up: after the failure, and at the next start. */
const enospc = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

describe('FileQueue staging clean-up', () => {
  afterEach(() => vi.restoreAllMocks());

  it('a publish that fails half-way (a full disk) leaves nothing in tmp/, and the messages published before stay', async () => {
    const dir = await tempDir('queue-staging');
    const queue = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await queue.publish('t', { n: 0 });
    const rename = fs.rename;
    let calls = 0;
    vi.spyOn(fs, 'rename').mockImplementation(async (from, to) => {
      // Staged writes succeed; the third move into ready/ fails.
      if (String(to).includes(`${path.sep}ready${path.sep}`) && ++calls === 3) throw enospc();
      return rename(from, to);
    });
    await expect(
      queue.publishBatch(
        't',
        [1, 2, 3, 4, 5].map((n) => ({ data: { n } })),
      ),
    ).rejects.toThrow(/ENOSPC/);
    vi.restoreAllMocks();
    expect(await fs.readdir(path.join(dir, 't', 'tmp'))).toEqual([]);
    expect((await queue.stats('t')).ready).toBe(3); // the first message and the two moved before the failure
  });

  it('at start, removes staging files of processes that are gone and keeps those of live ones', async () => {
    const dir = await tempDir('queue-sweep');
    const tmp = path.join(dir, 't', 'tmp');
    const inflight = path.join(dir, 't', 'inflight');
    await fs.mkdir(tmp, { recursive: true });
    await fs.mkdir(inflight, { recursive: true });
    const deadPid = '99999998';
    const livePid = String(process.ppid % 1e8).padStart(8, '0');
    const staged = (pid: string) => `001700000000000-00000001-${pid}-0badf00d.json`;
    await fs.writeFile(path.join(tmp, staged(deadPid)), '{"cut');
    await fs.writeFile(path.join(tmp, `${staged(deadPid)}.${Number(deadPid)}.0123456789ab.tmp`), '');
    await fs.writeFile(path.join(tmp, staged(livePid)), '{}');
    await fs.writeFile(path.join(inflight, `x.json.${Number(deadPid)}.0123456789ab.tmp`), '');
    const queue = new FileQueue(dir, { maxDeliveryAttempts: 3 });
    await queue.pull('t', { maxMessages: 1 });
    expect((await fs.readdir(tmp)).sort()).toEqual([staged(livePid)]);
    expect(await fs.readdir(inflight)).toEqual([]);
  });
});

describe('pipeline health and backoff', () => {
  it('describes a failing stage with its start time and error, and clears it on success', () => {
    let now = Date.parse('2026-01-02T03:04:05Z');
    const health = new PipelineHealth(() => now);
    health.failed('upsert', enospc());
    now += 5000;
    health.failed('upsert', enospc());
    expect(health.current()).toEqual([
      expect.objectContaining({
        stage: 'upsert',
        failures: 2,
        since: '2026-01-02T03:04:05.000Z',
        summary: expect.stringMatching(/^index writes failing since 2026-01-02T03:04:05.000Z .*ENOSPC/),
      }),
    ]);
    expect(health.stalledForMs()).toBe(5000);
    health.succeeded('upsert');
    expect(health.current()).toEqual([]);
    expect(health.stalledForMs()).toBe(0);
  });

  it('backs off exponentially up to a cap, and tells faults of the machine from faults of the work', () => {
    expect(backoffMs(1, 500, 30_000, () => 1)).toBe(500);
    expect(backoffMs(4, 500, 30_000, () => 1)).toBe(4000);
    expect(backoffMs(20, 500, 30_000, () => 1)).toBe(30_000);
    expect(backoffMs(20, 500, 30_000, () => 0)).toBe(15_000);
    expect(isMachineFault(enospc())).toBe(true);
    expect(isMachineFault(new Error('LanceDB error: Permission denied (os error 13)'))).toBe(true);
    expect(isMachineFault(new Error('malformed image event'))).toBe(false);
  });
});

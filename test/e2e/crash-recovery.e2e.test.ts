import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliPath, runCli, tempDir } from '../helpers/cli.js';

/**
 * The worker killed mid-batch (SIGKILL, no cleanup): the next run redelivers the leased messages,
 * visibly, and every image ends indexed exactly once.
 */
describe('crash recovery', () => {
  it('indexes everything exactly once after the ingest process is killed mid-batch', async () => {
    const work = await tempDir('crash');
    const env = { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_ACK_DEADLINE_SECONDS: '3', IMGSEARCH_BATCH_SIZE: '8' };
    const N = 64;
    expect((await runCli(['dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(N), '--split', 'test'], { cwd: work, env })).code).toBe(0);

    const child = spawn(process.execPath, [cliPath, 'ingest', 'imgs'], { cwd: work, env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: 'ignore' });
    const inflight = path.join(work, 'home/queue/image-events/inflight');
    const deadline = Date.now() + 120_000;
    for (;;) {
      const leased = await fs.readdir(inflight).catch(() => [] as string[]);
      if (leased.length > 0) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('ingest never leased a batch');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const orphaned = await fs.readdir(inflight);
    expect(orphaned.length).toBeGreaterThan(0);

    await new Promise((r) => setTimeout(r, 3500)); // the dead worker's leases expire
    const again = await runCli(['ingest', 'imgs', '--json'], { cwd: work, env: { ...env, LOG_LEVEL: 'warn' } });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/redelivered \(attempt 2\)/);

    const status = await runCli(['status', '--json'], { cwd: work, env });
    const s = JSON.parse(status.stdout);
    expect(s.indexed).toBe(N);
    expect(s.pending).toBe(0);
    expect(s.rejected.count).toBe(0);
    const dup = await runCli(['search', '--json', '-k', '100', '--image', 'imgs/test-00000.png'], { cwd: work, env });
    const ids = JSON.parse(dup.stdout).map((r: { id: string }) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(N);
  });
});

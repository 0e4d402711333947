import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { documentId } from '../../shared/contracts.js';
import { searchOutputSchema } from '../../shared/output-schemas.js';
import { repoRoot, runCli, tempDir, type CliResult } from '../helpers/cli.js';

const workerScript = path.join(repoRoot, 'test/helpers/pipeline-worker.ts');
// tsx resolved from the repository: the processes run in a temp folder with no node_modules.
const workerArgs = (args: string[]) => ['--import', import.meta.resolve('tsx'), workerScript, ...args];

/** Runs test/helpers/pipeline-worker.ts (publish / work / documents) to completion. */
function runWorker(args: string[], options: { cwd: string; env: Record<string, string> }): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      workerArgs(args),
      { cwd: options.cwd, env: { ...process.env, LOG_LEVEL: 'warn', ...options.env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

/**
 * The worker killed mid-batch (SIGKILL, no cleanup), then resumed by a process that publishes
 * nothing: every image it indexes must come from the queue, so a message lost with the dead
 * worker's lease stays lost and the count falls short. Every image ends indexed exactly once at
 * its newest generation, the redelivery visible in the logs.
 */
describe('crash recovery', () => {
  it('indexes everything exactly once, from redelivery alone, after the worker is killed mid-batch', async () => {
    const work = await tempDir('crash');
    const env = { IMGSEARCH_HOME: path.join(work, 'home'), IMGSEARCH_ACK_DEADLINE_SECONDS: '3', IMGSEARCH_BATCH_SIZE: '8' };
    const N = 64;
    const REPLACED = 8;
    expect((await runCli(['dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(N), '--split', 'test'], { cwd: work, env })).code).toBe(0);
    const imgs = path.join(work, 'imgs');
    const names = (await fs.readdir(imgs)).filter((n) => n.endsWith('.png')).sort();
    expect(names).toHaveLength(N);

    // Every image queued once; then some replaced (a newer generation) and queued again.
    const published = await runWorker(['publish', 'imgs'], { cwd: work, env });
    expect(published.code, published.stderr).toBe(0);
    const replaced = names.slice(0, REPLACED);
    for (const name of replaced) {
      const file = path.join(imgs, name);
      await fs.writeFile(
        file,
        await sharp(await fs.readFile(file))
          .flop()
          .png()
          .toBuffer(),
      );
    }
    const republished = await runWorker(['publish', 'imgs', ...replaced], { cwd: work, env });
    expect(republished.code, republished.stderr).toBe(0);

    const child = spawn(process.execPath, workerArgs(['work']), { cwd: work, env: { ...process.env, ...env, LOG_LEVEL: 'warn' }, stdio: 'ignore' });
    const inflight = path.join(work, 'home/queue/image-events/inflight');
    const deadline = Date.now() + 120_000;
    for (;;) {
      const leased = await fs.readdir(inflight).catch(() => [] as string[]);
      if (leased.length > 0) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('the worker never leased a batch');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const orphaned = await fs.readdir(inflight);
    expect(orphaned.length).toBeGreaterThan(0);

    // Resumed with nothing re-published: only the queue's redelivery can bring the orphaned leases back.
    const resumed = await runWorker(['work'], { cwd: work, env });
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(/redelivered \(attempt 2\)/);

    const status = await runCli(['status', '--json'], { cwd: work, env });
    const s = JSON.parse(status.stdout);
    expect(s.indexed).toBe(N);
    expect(s.pending).toBe(0);
    expect(s.rejected.count).toBe(0);
    expect(s.deadLettered.count).toBe(0);

    const listed = await runWorker(['documents'], { cwd: work, env });
    expect(listed.code, listed.stderr).toBe(0);
    const documents = listed.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; uri: string; generation: string });
    const bucket = new FolderBlobStore(imgs);
    const expected = await Promise.all(names.map(async (name) => ({ id: documentId(bucket.bucket, name), generation: (await bucket.stat(name))!.generation })));
    const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id);
    expect(documents.map(({ id, generation }) => ({ id, generation })).sort(byId)).toEqual(expected.sort(byId));

    const dup = await runCli(['search', '--json', '-k', '100', '--image', 'imgs/test-00000.png'], { cwd: work, env });
    const ids = searchOutputSchema.parse(JSON.parse(dup.stdout)).results.map((r) => r.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(N);
  });
});

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { injector } from '../faults/support/harness.js';
import { cliPath, runCli, tempDir, type CliResult } from '../helpers/cli.js';

/**
 * Issue 14, points 1 and 4: one writer per data directory, and Ctrl-C during `ingest` — run as a
 * user would, with real processes on one data directory.
 */
const N = 160;

function spawnCli(args: string[], cwd: string, env: Record<string, string>): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [cliPath, ...args], { cwd, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += String(d)));
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const done = new Promise<CliResult>((resolve) => child.once('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr })));
  return { child, done };
}

async function featureRows(home: string): Promise<{ rows: number; ids: number }> {
  const store = await PerTowerFeatureStore.open(path.join(home, 'features'));
  const ids = new Set<string>();
  let rows = 0;
  for await (const batch of store.scan(1000)) for (const r of batch) (rows++, ids.add(r.id));
  await store.close();
  return { rows, ids: ids.size };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let work: string;
beforeAll(async () => {
  work = await tempDir('cli-writer');
  const made = await runCli(['dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(N), '--split', 'test'], { cwd: work });
  expect(made.code, made.stderr).toBe(0);
}, 120_000);

describe('one writer per data directory', () => {
  it('two `ingest` at once: the second refuses naming the holder (pid and command); no duplicate feature rows', async () => {
    const home = path.join(work, 'home-two');
    const env = { IMGSEARCH_HOME: home };
    expect((await runCli(['status'], { cwd: work, env })).code).toBe(0); // the model converted once, before the race
    const a = spawnCli(['ingest', 'imgs', '--json'], work, env);
    const b = spawnCli(['ingest', 'imgs', '--json'], work, env);
    const [ra, rb] = await Promise.all([a.done, b.done]);
    const results = [
      { r: ra, other: b.child.pid },
      { r: rb, other: a.child.pid },
    ];
    const ok = results.filter((x) => x.r.code === 0);
    const refused = results.filter((x) => x.r.code !== 0);
    expect(ok, `${ra.stderr}\n${rb.stderr}`).toHaveLength(1);
    expect(refused).toHaveLength(1);
    const line = refused[0]!.r.stderr.trim();
    expect(line.split('\n')).toHaveLength(1);
    expect(line).toContain(`pid ${refused[0]!.other}`);
    expect(line).toContain('`imgsearch ingest imgs --json`');
    expect(await featureRows(home)).toEqual({ rows: N, ids: N });
    expect(JSON.parse(ok[0]!.r.stdout).indexed).toBe(N);
  }, 240_000);
});

describe('Ctrl-C during `ingest`', () => {
  it('stops cleanly in a terminal: cursor restored, "interrupted after N of M", leases handed back; the re-run resumes at once and adds up', async () => {
    const home = path.join(work, 'home-int');
    // The default lease (60 s): a re-run that had to wait for the interrupted run's leases would take over a minute.
    const env = { IMGSEARCH_HOME: home, IMGSEARCH_BATCH_SIZE: '8' };
    expect((await runCli(['status'], { cwd: work, env })).code).toBe(0);
    // The run is held mid-way: index writes wait while this control file exists (the fault
    // injector, preloaded), so Ctrl-C lands with batches leased however fast the machine is.
    const control = path.join(work, 'control-int');
    await fs.mkdir(control, { recursive: true });
    await fs.writeFile(path.join(control, 'lancedb-stall'), '');
    // A pseudo-terminal (util-linux `script`), so the progress bar hides the cursor as it does for a person.
    // `exec`: the shell `script` starts ($SHELL, or dash as /bin/sh when SHELL is unset, as in CI)
    // becomes imgsearch, which is then the terminal's foreground process as it is for a person.
    const command = `exec ${[process.execPath, '--import', injector, cliPath, 'ingest', 'imgs'].map((a) => JSON.stringify(a)).join(' ')}`;
    const tty = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], {
      cwd: work,
      env: { ...process.env, ...env, ISS_FAULT_CONTROL: control, LOG_LEVEL: 'warn', COLUMNS: '100', LINES: '30' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let screen = '';
    tty.stdout!.on('data', (d) => (screen += String(d)));
    const ttyExit = new Promise<number>((resolve) => tty.once('close', (code) => resolve(code ?? -1)));
    const lockFile = path.join(home, 'writer.lock');
    const inflight = path.join(home, 'queue/image-events/inflight');
    // Mid-run: the bar is drawn and batches are leased.
    await waitFor('a leased batch', async () => (await fs.readdir(inflight).catch(() => [])).length > 0 && screen.includes('embedding'));
    // Ctrl-C typed into the terminal: the line discipline sends SIGINT to its foreground process group.
    tty.stdin!.write('\u0003');
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([
      ttyExit,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          tty.kill('SIGKILL');
          reject(new Error(`imgsearch still running 30 s after Ctrl-C; the terminal showed:\n${screen.slice(-2000)}`));
        }, 30_000);
      }),
    ]).finally(() => clearTimeout(timer));
    expect(code).toBe(130);
    // The terminal: the last cursor change shows it, line wrap is on.
    expect(screen.lastIndexOf('\u001b[?25h')).toBeGreaterThan(screen.lastIndexOf('\u001b[?25l'));
    expect(screen.lastIndexOf('\u001b[?7h')).toBeGreaterThanOrEqual(screen.lastIndexOf('\u001b[?7l'));
    expect(screen).toMatch(/interrupted after \d+ of 320 files; re-run to resume/);
    // Nothing left held: the lock is gone and no lease waits for its deadline.
    expect(existsSync(lockFile)).toBe(false);
    expect(await fs.readdir(inflight).catch(() => [])).toEqual([]);

    await fs.rm(path.join(control, 'lancedb-stall'));
    const started = Date.now();
    const again = await runCli(['ingest', 'imgs', '--json'], { cwd: work, env });
    const seconds = (Date.now() - started) / 1000;
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/lease expired/);
    expect(seconds).toBeLessThan(55); // far below the 60 s lease it would otherwise wait out
    const s = JSON.parse(again.stdout);
    const files = (await fs.readdir(path.join(work, 'imgs'))).length;
    expect(s.files).toBe(files);
    expect(s.indexed + s.unchanged + s.rejected + s.sidecars + s.ignored + s.superseded + s.deadLettered + s.pending).toBe(files);
    expect(s.rejected + s.deadLettered + s.pending).toBe(0);
    expect(await featureRows(home)).toEqual({ rows: N, ids: N });
  }, 300_000);
});

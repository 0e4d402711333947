import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { cliPath, runCli, tempDir, type CliResult } from '../helpers/cli.js';

/** Issue 14, point 4 (and 3's pipes and ports): the conventions of a CLI, run as a user would. */
let work: string;
let env: Record<string, string>;
beforeAll(async () => {
  work = await tempDir('cli-conv');
  env = { IMGSEARCH_HOME: path.join(work, 'home') };
});

function runWithTimeout(args: string[], timeoutMs: number): Promise<CliResult & { timedOut: boolean }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cliPath, ...args],
      { cwd: work, env: { ...process.env, LOG_LEVEL: 'warn', ...env }, timeout: timeoutMs },
      (err, stdout, stderr) => {
        const timedOut = Boolean(err && (err as { killed?: boolean }).killed);
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr, timedOut });
      },
    );
  });
}

function expectUsageError(r: CliResult, command: string, mention: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(2);
  expect(lines[0]).toMatch(mention);
  expect(lines[1]).toBe(`see \`imgsearch ${command} --help\``);
  expect(r.stdout).toBe('');
}

describe('usage errors: exit 2, one line, and where the help is', () => {
  it.each([
    [['search', '--bogus'], 'search', /unknown option '--bogus'/],
    [['search'], 'search', /exactly one of --image/],
    [['search', '--text', ''], 'search', /--text must not be empty/],
    [['search', '--text', 'x', '--min-score', 'abc'], 'search', /--min-score/],
    [['search', '--text', 'x', '-k', '0'], 'search', /-k, --k/],
    [['up', '--port', 'abc'], 'up', /--port <port>.*'abc'/],
    [['dataset', 'fashion-mnist'], 'dataset fashion-mnist', /--out/],
  ])('imgsearch %j', async (args, command, mention) => {
    const r = await runCli(args as string[], { cwd: work, env });
    expectUsageError(r, command as string, mention as RegExp);
    expect(r.stderr).not.toMatch(/IMGSEARCH_PORT=/);
  });

  it('flags are checked before any model loads: a typo leaves no data directory behind', async () => {
    const r = await runCli(['search', '--text', 'x', '--min-score', 'abc'], { cwd: work, env });
    expect(r.code).toBe(2);
    expect(existsSync(env.IMGSEARCH_HOME!)).toBe(false);
  });

  it('--home that does not exist is refused unless --init', async () => {
    const typo = path.join(work, 'no-such-home');
    const r = await runCli(['--home', typo, 'status'], { cwd: work, env: {} });
    expectUsageError(r, 'status', /--home .*no-such-home does not exist; add --init/);
    expect(existsSync(typo)).toBe(false);
    const init = await runCli(['--home', typo, '--init', 'status', '--json'], { cwd: work, env: {} });
    expect(init.code, init.stderr).toBe(0);
    expect(existsSync(typo)).toBe(true);
  }, 120_000);

  it('--version prints the version', async () => {
    const r = await runCli(['--version'], { cwd: work, env });
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('pipes and ports', () => {
  it('a closed stdout pipe ends the command quietly (exit 0, no stack trace)', async () => {
    const child = spawn(process.execPath, [cliPath, 'completion', 'bash'], { cwd: work, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader went away (`| head -1` after one line)
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('`up` on a port in use exits 1 with one line naming the address and --port', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const r = await runWithTimeout(['up', '--port', String(port), '--bucket', path.join(work, 'bucket')], 90_000);
      expect(r.timedOut, 'imgsearch up hung instead of exiting').toBe(false);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toEqual([
        `imgsearch: cannot listen on 127.0.0.1:${port}: the port is in use (choose another with --port, or 0 for any free one)`,
      ]);
    } finally {
      blocker.close();
    }
  }, 120_000);
});

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const cliPath = path.join(repoRoot, 'bin/imgsearch.mjs');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `imgsearch …` as a user would, in `cwd`, with a clean data directory per test. */
export function runCli(args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [cliPath, ...args],
      { cwd: options.cwd, env: { ...process.env, LOG_LEVEL: 'warn', ...options.env }, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The URL `imgsearch up` prints once it listens; rejects (with its stderr) if it exits first or takes longer than `timeoutMs`. */
export function upUrl(child: ChildProcess, stderr: () => string, timeoutMs: number): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`imgsearch up did not start in time\n${stderr()}`)), timeoutMs);
    child.stdout!.on('data', (d) => {
      out += String(d);
      const m = /imgsearch is up: (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`imgsearch up exited with ${code}\n${stderr()}`));
    });
  });
}

/** Starts `imgsearch up` and resolves with its URL once it prints it. */
export async function startUp(options: {
  cwd: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}): Promise<{ url: string; child: ChildProcess; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [cliPath, 'up'], {
    cwd: options.cwd,
    env: { ...process.env, LOG_LEVEL: 'warn', IMGSEARCH_PORT: '0', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += String(d)));
  const url = await upUrl(child, () => stderr, options.timeoutMs ?? 120_000);
  return {
    url,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

export async function tempDir(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `iss-${prefix}-`));
}

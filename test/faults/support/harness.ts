import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { FolderBlobStore } from '../../../shared/adapters/local/folder-blob-store.js';
import { documentId, objectUri } from '../../../shared/contracts.js';
import { mulberry32 } from '../../../shared/training/prng.js';
import { cliPath, repoRoot, tempDir, upUrl, type CliResult } from '../../helpers/cli.js';

/**
 * The fault suite's harness: real `imgsearch` processes (bin/imgsearch.mjs, optionally with the
 * fault injector preloaded), real files, and the one closing check of every case — each file put in
 * the bucket folder is indexed exactly once at its newest generation, or rejected / ignored with a
 * reason; anything else is lost.
 */
export const injector = path.join(repoRoot, 'test/faults/support/fault-injector.mjs');
const workerScript = path.join(repoRoot, 'test/helpers/pipeline-worker.ts');

export interface FaultEnv {
  work: string;
  home: string;
  bucket: string;
  control: string;
  env: Record<string, string>;
}

/** A fresh work folder: data directory, bucket folder, fault control folder; the model bootstrapped once. */
export async function faultEnv(name: string, extra: Record<string, string> = {}): Promise<FaultEnv> {
  const work = await tempDir(`fault-${name}`);
  const home = path.join(work, 'home');
  const bucket = path.join(work, 'bucket');
  const control = path.join(work, 'control');
  await Promise.all([fs.mkdir(bucket, { recursive: true }), fs.mkdir(control, { recursive: true })]);
  const env = {
    IMGSEARCH_HOME: home,
    IMGSEARCH_BUCKET_DIR: bucket,
    IMGSEARCH_ACK_DEADLINE_SECONDS: '4',
    IMGSEARCH_BATCH_SIZE: '16',
    ISS_FAULT_CONTROL: control,
    ISS_FAULT_ROOT: home,
    LOG_LEVEL: 'warn',
    ...extra,
  };
  return { work, home, bucket, control, env };
}

export async function setFault(fe: FaultEnv, fault: 'enospc' | 'lancedb', on: boolean): Promise<void> {
  const file = path.join(fe.control, fault);
  if (on) await fs.writeFile(file, '');
  else await fs.rm(file, { force: true });
}

/** Runs `imgsearch …` (with the fault injector preloaded) to completion. */
export function cli(fe: FaultEnv, args: string[], timeoutMs = 300_000): Promise<CliResult> {
  return run(process.execPath, ['--import', injector, cliPath, ...args], fe, timeoutMs);
}

/** The live index's documents, from a separate process. */
export async function documents(fe: FaultEnv): Promise<{ id: string; uri: string; generation: string }[]> {
  const out = await run(process.execPath, ['--import', import.meta.resolve('tsx'), workerScript, 'documents'], fe, 120_000);
  if (out.code !== 0) throw new Error(`listing documents failed: ${out.stderr}`);
  return out.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { id: string; uri: string; generation: string });
}

function run(cmd: string, args: string[], fe: FaultEnv, timeoutMs: number): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: fe.work, env: { ...process.env, ...fe.env }, maxBuffer: 256 * 1024 * 1024, timeout: timeoutMs }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

export interface UpProcess {
  child: ChildProcess;
  url: string;
  stderr(): string;
  /** SIGTERM and wait. */
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

/** `imgsearch up` with the fault injector preloaded; resolves once it prints its URL. */
export async function startUp(fe: FaultEnv, timeoutMs = 180_000): Promise<UpProcess> {
  const child = spawn(process.execPath, ['--import', injector, cliPath, 'up'], {
    cwd: fe.work,
    env: { ...process.env, IMGSEARCH_PORT: '0', ...fe.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => (err = (err + String(d)).slice(-200_000)));
  const url = await upUrl(child, () => err, timeoutMs);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    url,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Tiny distinct PNGs (28×28, pixels from a seeded RNG), written into `dir` under `names`. */
export async function writeTinyPngs(dir: string, names: string[], rng: () => number): Promise<void> {
  const queue = [...names];
  const writeOne = async (): Promise<void> => {
    for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
      const pixels = Buffer.alloc(28 * 28 * 3);
      for (let i = 0; i < pixels.length; i++) pixels[i] = Math.floor(rng() * 256);
      const png = await sharp(pixels, { raw: { width: 28, height: 28, channels: 3 } })
        .png()
        .toBuffer();
      await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await fs.writeFile(path.join(dir, name), png);
    }
  };
  await Promise.all(Array.from({ length: 8 }, writeOne));
}

/** mulberry32 (the project's seeded PRNG), so a failing iteration can be replayed. */
export const seededRng = mulberry32;

export async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

/** Polls `check` until it returns true (or throws after `timeoutMs`, with `describe()` in the message). */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, describe: () => Promise<string> | string = () => ''): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms: ${await describe()}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface Accounting {
  objectsIn: number;
  indexed: number;
  rejected: number;
  ignored: number;
  lost: number;
  /** Files neither indexed at their newest generation, nor rejected nor ignored. */
  lostNames: string[];
  /** Documents of the bucket twice, or at another generation than the file's, or of a file that is gone. */
  wrongDocuments: string[];
}

interface StatusJson {
  pending: number;
  rejected: { items: { uri: string; reason: string; generation: string }[] };
  ignored: { items: { uri: string; reason: string }[] };
  deadLettered: { count: number };
}

/** Every regular or special file under the bucket folder (hidden ones too), as object names. */
export async function filesIn(bucket: string, dir = bucket): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const abs = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesIn(bucket, abs)));
    else out.push(path.relative(bucket, abs).split(path.sep).join('/'));
  }
  return out.sort();
}

/**
 * The closing check of every case: each file of the bucket folder indexed once at its current
 * generation (its mtime), or rejected or ignored with a reason. Reads the index from a separate
 * process and the rejected/ignored lists from `imgsearch status --json`.
 */
export async function account(fe: FaultEnv): Promise<Accounting> {
  const status = await cli(fe, ['status', '--json']);
  if (status.code !== 0) throw new Error(`status failed: ${status.stderr}`);
  const s = JSON.parse(status.stdout) as StatusJson;
  const docs = await documents(fe);
  const store = new FolderBlobStore(fe.bucket);
  const names = await filesIn(fe.bucket);
  const byUri = new Map<string, { id: string; generation: string }[]>();
  for (const d of docs) byUri.set(d.uri, [...(byUri.get(d.uri) ?? []), d]);
  const rejected = new Map(s.rejected.items.map((r) => [r.uri, r]));
  const ignored = new Map(s.ignored.items.map((r) => [r.uri, r]));
  const result: Accounting = { objectsIn: names.length, indexed: 0, rejected: 0, ignored: 0, lost: 0, lostNames: [], wrongDocuments: [] };
  for (const name of names) {
    const uri = objectUri(store.bucket, name);
    const info = await store.stat(name);
    const indexed = byUri.get(uri) ?? [];
    if (info && indexed.length === 1 && indexed[0]!.generation === info.generation && indexed[0]!.id === documentId(store.bucket, name)) result.indexed++;
    else if (rejected.has(uri) && rejected.get(uri)!.reason) result.rejected++;
    else if (ignored.has(uri) && ignored.get(uri)!.reason) result.ignored++;
    else {
      result.lost++;
      result.lostNames.push(`${name} (index: ${JSON.stringify(indexed)}, file generation ${info?.generation ?? 'n/a'})`);
    }
  }
  const present = new Set(names.map((n) => objectUri(store.bucket, n)));
  for (const [uri, list] of byUri) {
    if (!uri.startsWith(objectUri(store.bucket, ''))) continue;
    if (list.length > 1) result.wrongDocuments.push(`${uri} indexed ${list.length} times`);
    if (!present.has(uri)) result.wrongDocuments.push(`${uri} indexed but the file is gone`);
  }
  return result;
}

/** One line per case, as the suite's report: objects in / indexed / rejected / ignored / lost. */
export function report(caseName: string, a: Accounting): void {
  process.stdout.write(
    `[fault suite] ${caseName}: objects in ${a.objectsIn} / indexed ${a.indexed} / rejected ${a.rejected} / ignored ${a.ignored} / lost ${a.lost}` +
      (a.lostNames.length ? `\n  lost: ${a.lostNames.slice(0, 10).join('\n  lost: ')}` : '') +
      (a.wrongDocuments.length ? `\n  wrong: ${a.wrongDocuments.slice(0, 10).join('\n  wrong: ')}` : '') +
      '\n',
  );
}

/** Waits until `imgsearch status` shows nothing pending, then accounts (the pipeline of a running `up` has settled). */
export async function settledAccounting(fe: FaultEnv, up: UpProcess, expectedFiles: number, timeoutMs = 240_000): Promise<Accounting> {
  let last: Accounting | null = null;
  await waitFor(
    async () => {
      const st = await getJson<{ pending: number; indexed: number }>(`${up.url}/api/status`);
      if (st.pending > 0) return false;
      last = await account(fe);
      return last.lost === 0 && last.objectsIn === expectedFiles;
    },
    timeoutMs,
    () => `${JSON.stringify(last)}\n${up.stderr().slice(-3000)}`,
  );
  return last!;
}

import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { z } from 'zod';
import { CorruptStateError, errorMessage } from '../../errors.js';
import { describeIssues } from '../../validation.js';

/**
 * Small file helpers shared by the local adapters: the one way state files (index alias and
 * catalog, model registry records, rejection records, queue messages) are written and read.
 *
 * A write goes to a temporary sibling, which is fsynced, renamed into place, and then the
 * directory is fsynced: a reader never sees half a file, and after a crash or power cut the path
 * holds either the old content or the new one, never an empty or cut file (a rename is only
 * durable once its directory is synced).
 */
export interface AtomicWriteOptions {
  /**
   * `full` (default): file and directory synced, as above. `file`: the file only — for a file
   * staged here and renamed elsewhere by the caller, who then syncs that directory with
   * {@link fsyncDir}. `none`: scratch data that may be lost.
   */
  durability?: 'full' | 'file' | 'none';
}

export async function writeFileAtomic(target: string, data: Buffer | string, options: AtomicWriteOptions = {}): Promise<void> {
  const durability = options.durability ?? 'full';
  const dir = path.dirname(target);
  await fs.mkdir(dir, { recursive: true });
  const tmp = `${target}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.writeFile(data);
      if (durability !== 'none') await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.rename(tmp, target);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  if (durability === 'full') await fsyncDir(dir);
}

export async function writeJsonAtomic(target: string, value: unknown, options: AtomicWriteOptions = {}): Promise<void> {
  await writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`, options);
}

/**
 * Makes the entries of `dir` (files created, renamed in or removed) durable. A no-op where a
 * directory cannot be opened for syncing (Windows: EISDIR/EPERM), as in other atomic writers.
 */
export async function fsyncDir(dir: string): Promise<void> {
  let handle: FileHandle;
  try {
    handle = await fs.open(dir, 'r');
  } catch (err) {
    if (isErrno(err, 'EISDIR', 'EPERM', 'EACCES')) return;
    throw err;
  }
  try {
    await handle.sync();
  } catch (err) {
    if (!isErrno(err, 'EINVAL', 'ENOTSUP', 'EPERM')) throw err;
  } finally {
    await handle.close();
  }
}

export interface ReadJsonOptions<T> {
  /** Checks the parsed value's shape (a mismatch is reported as corruption, naming the field). */
  schema?: z.ZodType<T>;
  /** What the user can do about a corrupt file (restore it, the command that rebuilds it). */
  fix?: string;
}

/**
 * The parsed JSON file, or `fallback` when it does not exist. A file that is empty, cut short or
 * of the wrong shape throws a {@link CorruptStateError} naming the file and `fix`.
 */
export async function readJsonFile<T, F = T>(file: string, fallback: F, options: ReadJsonOptions<T> = {}): Promise<T | F> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (isNotFound(err)) return fallback;
    throw err;
  }
  const fix = options.fix ?? 'restore it from a backup';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    const what = text.trim() === '' ? 'is empty' : `is not valid JSON (${errorMessage(err)})`;
    throw new CorruptStateError(`State file ${file} ${what}: it was probably cut short by a crash or a full disk; ${fix}`, { cause: err, meta: { file } });
  }
  if (!options.schema) return json as T;
  const result = options.schema.safeParse(json);
  if (result.success) return result.data;
  throw new CorruptStateError(`State file ${file} does not hold what it should (${describeIssues(result.error)}); ${fix}`, {
    cause: result.error,
    meta: { file },
  });
}

function isErrno(err: unknown, ...codes: string[]): boolean {
  return typeof err === 'object' && err !== null && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}

export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Names used as directory names (model versions, topics) must not escape their parent. */
export const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Serialises async work per key inside this process (e.g. one writer per LanceDB table). */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(work, work);
    const tail = result.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await result;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

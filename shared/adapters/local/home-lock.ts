import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { AppError } from '../../errors.js';
import { isNotFound } from './atomic-file.js';

/**
 * One writer per data directory (`IMGSEARCH_HOME`): `<home>/writer.lock` holds the holder's pid,
 * command, start time, host and a random token. Commands that change the home (ingest, up,
 * retrain, model promote/rollback/pull/rm, index rollback, rm, prune, doctor --repair) take it;
 * readers (search, status, lists) never do.
 *
 * Protocol (every step below is one atomic system call; "J" is the lock inode a taker judged):
 *  1. Create: the holder JSON is written to `writer.lock.<pid>.<12 hex>.tmp` and fsynced, then
 *     `link(temp, writer.lock)` — atomic, and EEXIST when a lock exists. So the lock path never
 *     holds an empty or partial file written by this code. The temp name is removed afterwards
 *     (`doctor` deletes it if its process died in between).
 *  2. Judge: the lock is opened once and its device, inode, mtime and text read from that one
 *     descriptor. It is stale when its holder is gone (same host, pid not running, or the pid now
 *     belongs to a process started later: `/proc/<pid>/stat` start time), or when it is unreadable
 *     and older than {@link FRESH_MS} (an unreadable lock younger than that may be a writer of the
 *     older create-then-write scheme still writing it: waited for, never taken). A lock held on
 *     another host is never stale: its holder cannot be checked from here.
 *  3. Claim J: a taker links its temp file (its own holder JSON) to `writer.lock.reap.<dev>-<ino>.<n>`
 *     for the lowest n not taken. An existing claim whose claimant is alive means "busy": the taker
 *     waits (up to the caller's wait, at least {@link CLAIM_GRACE_MS}) and starts over; a claim of a
 *     dead claimant is void and the taker tries n+1. Claims are only ever deleted by their own
 *     claimant, or swept (dead claimants only) by a process that holds the lock; so at any time at
 *     most one live process holds a claim on J. (Without a claim, "check it is J, then unlink" is not
 *     atomic: two takers that both checked J would both unlink, the second removing the lock the first
 *     has just created in J's place.)
 *  4. Verify and remove: the claimant re-reads the lock (as in 2) and unlinks `writer.lock` only if
 *     it is still J (same device, inode, mtime and text: the text holds a random token, so a new
 *     lock that reuses J's inode number never matches). Then it deletes its claim and goes back to 1.
 *
 * Why no interleaving makes two writers: a lock is only removed by its holder (release, which checks
 * its token) or by the one live claimant of it, after checking it is still there; between that check
 * and the unlink nobody else can remove it (no other live claimant, its holder is gone), and an inode
 * once removed from the path never returns to it (step 1 links fresh inodes only). The path is never
 * emptied of a live lock, so nobody can slip a second lock in (no rename-aside and put-back). Mixing
 * with processes that run the older rename-aside code is not covered: upgrade all writers together.
 */
export const LOCK_FILE = 'writer.lock';
const CLAIM_PREFIX = `${LOCK_FILE}.reap.`;

const holderSchema = z.object({
  pid: z.number().int().positive(),
  command: z.string(),
  startedAt: z.string(),
  host: z.string(),
  token: z.string(),
  /** Linux: the process start time in clock ticks since boot (field 22 of /proc/<pid>/stat), against pid reuse. */
  procStart: z.string().nullable(),
});
export type LockHolder = z.infer<typeof holderSchema>;

/** Another live process holds the writer lock of this data directory. */
export class HomeLockedError extends AppError {
  override readonly code = 'HOME_LOCKED';
  constructor(
    readonly home: string,
    readonly holder: LockHolder,
  ) {
    super(
      `${home} is in use by \`${holder.command}\` (pid ${holder.pid}${holder.host !== os.hostname() ? ` on ${holder.host}` : ''}, since ${holder.startedAt}); ` +
        `only one command may change a data directory at a time: wait for it to finish or stop it` +
        (holder.host !== os.hostname() ? ` (if that process is gone, delete ${path.join(home, LOCK_FILE)})` : ''),
      { meta: { pid: holder.pid, command: holder.command } },
    );
  }
}

export interface HomeLock {
  readonly file: string;
  readonly holder: LockHolder;
  /** Whether a stale lock (dead holder) was taken over: its leases and temp files are orphans. */
  readonly tookOver: LockHolder | null;
  /** Deletes the lock if it is still this process's. Idempotent. */
  release(): Promise<void>;
  /** Synchronous release, for `process.on('exit')`. */
  releaseSync(): void;
}

export interface AcquireOptions {
  /** How long to wait for a live holder to finish (ms); 0 refuses at once. */
  waitMs?: number;
  pollMs?: number;
  /** Called once when waiting starts. */
  onWait?: (holder: LockHolder) => void;
  /** Test seam: awaited between the steps of the protocol, so tests can interleave takers deterministically. */
  step?: (step: LockStep) => Promise<void> | void;
}

/**
 * `judged`: a stale lock was judged, nothing done yet. `takeover:busy`: another live taker holds the
 * claim on it. `takeover:verified`: this taker holds the claim and has checked the lock is still the
 * judged one, just before removing it. `created`: this process's lock is at the path.
 */
export type LockStep = 'judged' | 'created' | 'takeover:verified' | 'takeover:busy';

/** An unreadable lock younger than this may still be being written (older scheme): not stale. */
const FRESH_MS = 2_000;
/** How long a taker waits, at least, for another live taker that claimed the same stale lock. */
const CLAIM_GRACE_MS = 2_000;

/** Takes the writer lock of `home` for `command` (e.g. `imgsearch ingest photos`), or throws {@link HomeLockedError}. */
export async function acquireHomeLock(home: string, command: string, options: AcquireOptions = {}): Promise<HomeLock> {
  const file = path.join(home, LOCK_FILE);
  await fs.mkdir(home, { recursive: true });
  const holder: LockHolder = {
    pid: process.pid,
    command,
    startedAt: new Date().toISOString(),
    host: os.hostname(),
    token: randomBytes(8).toString('hex'),
    procStart: procStartOf(process.pid),
  };
  const deadline = Date.now() + (options.waitMs ?? 0);
  const pollMs = options.pollMs ?? 200;
  let waiting = false;
  let busySince: number | null = null;
  let tookOver: LockHolder | null = null;
  const temp = await writeTemp(file, holder);
  try {
    for (;;) {
      if (await linkExclusive(temp, file)) {
        await options.step?.('created');
        await sweepDeadClaims(home);
        return handle(file, holder, tookOver);
      }
      const current = await readLock(file);
      if (current === null) continue;
      if (current.holder && isAlive(current.holder)) {
        if (Date.now() >= deadline) throw new HomeLockedError(home, current.holder);
        if (!waiting) {
          waiting = true;
          options.onWait?.(current.holder);
        }
        await sleep(pollMs);
        continue;
      }
      if (!current.holder && Date.now() - current.mtimeMs < FRESH_MS) {
        await sleep(50);
        continue;
      }
      await options.step?.('judged');
      const outcome = await takeOverStale(file, current, temp, options);
      if (outcome === 'cleared') {
        tookOver = current.holder ?? tookOver;
      } else if (outcome !== 'retry') {
        busySince ??= Date.now();
        if (Date.now() >= Math.max(deadline, busySince + CLAIM_GRACE_MS)) throw new HomeLockedError(home, outcome.busy);
        await sleep(Math.min(pollMs, 20));
      }
    }
  } finally {
    await fs.rm(temp, { force: true });
  }
}

/** The current holder of `home`'s writer lock, if a live process holds it (for `status`, `doctor`). */
export async function readHomeLock(home: string): Promise<{ holder: LockHolder; alive: boolean } | null> {
  const current = await readLock(path.join(home, LOCK_FILE));
  if (!current?.holder) return null;
  return { holder: current.holder, alive: isAlive(current.holder) };
}

/** The holder JSON in a fresh, fsynced file of its own, ready to be linked into place (step 1). */
async function writeTemp(file: string, holder: LockHolder): Promise<string> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = await fs.open(temp, 'wx');
  try {
    await fd.writeFile(`${JSON.stringify(holder)}\n`);
    await fd.sync();
  } catch (err) {
    await fd.close();
    await fs.rm(temp, { force: true });
    throw err;
  }
  await fd.close();
  return temp;
}

/** `link(from, to)`: false when `to` exists. */
async function linkExclusive(from: string, to: string): Promise<boolean> {
  try {
    await fs.link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** What one look at a lock (or claim) file saw, all read through one descriptor. */
interface Snapshot {
  dev: number;
  ino: number;
  mtimeMs: number;
  text: string;
  /** The holder, or null when the text is not a lock this code wrote. */
  holder: LockHolder | null;
}

/** null when the file does not exist. */
async function readLock(file: string): Promise<Snapshot | null> {
  let fd: fs.FileHandle;
  try {
    fd = await fs.open(file, 'r');
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  try {
    const stat = await fd.stat();
    const text = await fd.readFile('utf8');
    return { dev: stat.dev, ino: stat.ino, mtimeMs: stat.mtimeMs, text, holder: holderSchema.safeParse(safeJson(text)).data ?? null };
  } finally {
    await fd.close();
  }
}

function sameFile(a: Snapshot, b: Snapshot): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.text === b.text;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Whether the holder may still be running: always true for another host (cannot be checked). */
export function isAlive(holder: LockHolder): boolean {
  if (holder.host !== os.hostname()) return true;
  if (holder.pid === process.pid) return true;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  // The pid runs; is it still the process that wrote the lock (not a later one given its pid)?
  if (holder.procStart === null) return true;
  const now = procStartOf(holder.pid);
  return now === null || now === holder.procStart;
}

function procStartOf(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces and parentheses) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null; // field 22 overall
  } catch {
    return null;
  }
}

/**
 * Steps 3 and 4: removes the judged stale lock if this process wins the claim on it and it is still
 * there. 'cleared': removed, try to create. 'retry': the lock changed, judge again. `busy`: another
 * live taker holds the claim.
 */
async function takeOverStale(file: string, judged: Snapshot, temp: string, options: AcquireOptions): Promise<'cleared' | 'retry' | { busy: LockHolder }> {
  const claim = await claimLock(file, judged, temp);
  if (typeof claim !== 'string') {
    await options.step?.('takeover:busy');
    return claim;
  }
  try {
    const now = await readLock(file);
    if (now === null || !sameFile(now, judged)) return 'retry';
    await options.step?.('takeover:verified');
    await fs.rm(file, { force: true });
    return 'cleared';
  } finally {
    await fs.rm(claim, { force: true });
  }
}

/** The claim file this process now holds on the judged lock, or the live claimant that holds it. */
async function claimLock(file: string, judged: Snapshot, temp: string): Promise<string | { busy: LockHolder }> {
  const base = path.join(path.dirname(file), `${CLAIM_PREFIX}${judged.dev}-${judged.ino}`);
  for (let n = 0; ;) {
    const name = `${base}.${n}`;
    if (await linkExclusive(temp, name)) return name;
    const other = await readLock(name);
    if (other === null) continue; // its claimant just finished: this index is free again
    if (other.holder && isAlive(other.holder)) return { busy: other.holder };
    n++; // a dead claimant's claim is void
  }
}

/** Deletes claims left by takers that died mid-takeover; only while holding the lock (see step 3). */
async function sweepDeadClaims(home: string): Promise<void> {
  const names = (await fs.readdir(home)).filter((n) => n.startsWith(CLAIM_PREFIX));
  for (const name of names) {
    const claim = await readLock(path.join(home, name));
    if (claim && !(claim.holder && isAlive(claim.holder))) await fs.rm(path.join(home, name), { force: true });
  }
}

function handle(file: string, holder: LockHolder, tookOver: LockHolder | null): HomeLock {
  let released = false;
  const mine = (text: string) => holderSchema.safeParse(safeJson(text)).data?.token === holder.token;
  return {
    file,
    holder,
    tookOver,
    async release() {
      if (released) return;
      released = true;
      const text = await fs.readFile(file, 'utf8').catch(() => '');
      if (mine(text)) await fs.rm(file, { force: true });
    },
    releaseSync() {
      if (released) return;
      released = true;
      try {
        if (mine(readFileSync(file, 'utf8'))) rmSync(file, { force: true });
      } catch {
        // already gone
      }
    },
  };
}

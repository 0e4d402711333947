import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HomeLockedError, LOCK_FILE, acquireHomeLock, readHomeLock, type LockStep } from '../../shared/adapters/local/home-lock.js';

async function home(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'iss-lock-'));
}

/** A pid that surely ran and has exited (a child process, reaped). */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

function holderJson(pid: number, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    pid,
    command: 'imgsearch ingest photos',
    startedAt: '2026-01-01T00:00:00.000Z',
    host: os.hostname(),
    token: 'aaaa',
    procStart: null,
    ...extra,
  });
}

describe('one writer per data directory', () => {
  it('refuses a second writer while the first holds the lock, naming the holder, and admits it after release', async () => {
    const dir = await home();
    const first = await acquireHomeLock(dir, 'imgsearch ingest photos');
    const err = await acquireHomeLock(dir, 'imgsearch up').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HomeLockedError);
    expect((err as Error).message).toContain(`pid ${process.pid}`);
    expect((err as Error).message).toContain('`imgsearch ingest photos`');
    expect((err as Error).message).toContain(first.holder.startedAt);
    await first.release();
    const second = await acquireHomeLock(dir, 'imgsearch up');
    expect((await readHomeLock(dir))?.holder.command).toBe('imgsearch up');
    await second.release();
    expect(await readHomeLock(dir)).toBeNull();
  });

  it('takes over the lock of a process that no longer runs, and says whose it was', async () => {
    const dir = await home();
    const pid = deadPid();
    await fs.writeFile(path.join(dir, LOCK_FILE), holderJson(pid));
    const lock = await acquireHomeLock(dir, 'imgsearch ingest photos');
    expect(lock.tookOver?.pid).toBe(pid);
    expect(lock.holder.pid).toBe(process.pid);
    await lock.release();
  });

  it('treats a running pid with another start time as a reused pid (stale)', async () => {
    const dir = await home();
    // This process's pid, but recorded as started at another time: the writer of the lock is gone.
    await fs.writeFile(path.join(dir, LOCK_FILE), holderJson(process.ppid, { procStart: '1' }));
    const lock = await acquireHomeLock(dir, 'imgsearch up');
    expect(lock.tookOver?.pid).toBe(process.ppid);
    await lock.release();
  });

  it('never judges a lock held on another host stale', async () => {
    const dir = await home();
    await fs.writeFile(path.join(dir, LOCK_FILE), holderJson(deadPid(), { host: 'elsewhere.example' }));
    const err = await acquireHomeLock(dir, 'imgsearch up').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HomeLockedError);
    expect((err as Error).message).toContain('on elsewhere.example');
    expect((err as Error).message).toContain(path.join(dir, LOCK_FILE));
  });

  it('of many racing takers of one stale lock, exactly one wins', async () => {
    const dir = await home();
    await fs.writeFile(path.join(dir, LOCK_FILE), holderJson(deadPid()));
    const results = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => acquireHomeLock(dir, `imgsearch taker ${i}`)));
    const won = results.filter((r) => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(HomeLockedError);
    const holder = (await readHomeLock(dir))!.holder;
    expect(holder.command).toBe((won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof acquireHomeLock>>>).value.holder.command);
    expect((await fs.readdir(dir)).filter((n) => n.includes('.stale.'))).toEqual([]);
  });

  it('waits for the holder when asked to, and gets the lock once it is released', async () => {
    const dir = await home();
    const first = await acquireHomeLock(dir, 'imgsearch retrain');
    const waited: string[] = [];
    const second = acquireHomeLock(dir, 'imgsearch ingest', { waitMs: 60_000, pollMs: 10, onWait: (h) => waited.push(h.command) });
    await new Promise((r) => setTimeout(r, 50));
    await first.release();
    const lock = await second;
    expect(waited).toEqual(['imgsearch retrain']);
    await lock.release();
  });

  it('does not delete a lock that another process holds when releasing', async () => {
    const dir = await home();
    const lock = await acquireHomeLock(dir, 'imgsearch up');
    await fs.writeFile(path.join(dir, LOCK_FILE), holderJson(process.ppid, { token: 'someone-else' }));
    await lock.release();
    expect((await readHomeLock(dir))?.holder.token).toBe('someone-else');
  });

  it('never shows a lock path holding an empty or partial lock, even at the moment it appears', async () => {
    const dir = await home();
    let seen: string | null = null;
    const lock = await acquireHomeLock(dir, 'imgsearch up', {
      step: async (s: LockStep) => {
        if (s === 'created') seen = await fs.readFile(path.join(dir, LOCK_FILE), 'utf8');
      },
    });
    expect(seen).not.toBeNull();
    expect(JSON.parse(seen!)).toMatchObject({ pid: process.pid, command: 'imgsearch up', token: lock.holder.token });
    await lock.release();
  });

  it('does not take over an unreadable lock written moments ago (a writer may still be filling it)', async () => {
    const dir = await home();
    const file = path.join(dir, LOCK_FILE);
    await fs.writeFile(file, '');
    const steps: LockStep[] = [];
    const taking = acquireHomeLock(dir, 'imgsearch up', { step: (s) => void steps.push(s) });
    // The writer finishes its lock well within the grace period (seconds).
    await fs.writeFile(file, holderJson(process.ppid, { token: 'slow-writer' }));
    const err = await taking.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HomeLockedError);
    expect(steps).not.toContain('judged');
    expect((await readHomeLock(dir))?.holder.token).toBe('slow-writer');
  });

  it('is not blocked by the claim of a taker that died mid-takeover, and sweeps it away', async () => {
    const dir = await home();
    const file = path.join(dir, LOCK_FILE);
    await fs.writeFile(file, holderJson(deadPid()));
    const { dev, ino } = await fs.stat(file);
    // A taker claimed this stale lock, then was killed before removing it.
    const claim = path.join(dir, `${LOCK_FILE}.reap.${dev}-${ino}.0`);
    await fs.writeFile(claim, holderJson(deadPid(), { token: 'dead-taker' }));
    const lock = await acquireHomeLock(dir, 'imgsearch ingest photos');
    expect(lock.tookOver?.token).toBe('aaaa');
    expect(await fs.readdir(dir)).toEqual([LOCK_FILE]);
    await lock.release();
  });
});

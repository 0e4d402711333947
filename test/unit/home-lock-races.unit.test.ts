import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { HomeLockedError, LOCK_FILE, acquireHomeLock, type HomeLock, type LockStep } from '../../shared/adapters/local/home-lock.js';

/*
 * Races between takers of a stale writer lock. The deterministic cases drive several takers in
 * this process through the protocol's steps (the `step` seam) in the order that broke an earlier
 * design; the stress case races real processes. Every case asserts the one thing a lock is for:
 * exactly one writer, and the lock on disk is that writer's.
 */

const MODULE = fileURLToPath(new URL('../../shared/adapters/local/home-lock.ts', import.meta.url));

async function home(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'iss-lock-race-'));
}

function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

function holderJson(pid: number, token: string): string {
  return JSON.stringify({ pid, command: 'imgsearch ingest photos', startedAt: '2026-01-01T00:00:00.000Z', host: os.hostname(), token, procStart: null });
}

/** A lock left by a holder killed long ago: `text` may be cut (killed between create and write). */
async function oldLock(dir: string, text: string): Promise<void> {
  const file = path.join(dir, LOCK_FILE);
  await fs.writeFile(file, text);
  const past = new Date(Date.now() - 60_000);
  await fs.utimes(file, past, past);
}

/** One taker, run step by step: it stops at the steps asked for until told to go on. */
class Taker {
  readonly done: Promise<HomeLock>;
  private readonly stops = new Set<LockStep>();
  private arrived: ((where: LockStep | 'settled') => void) | null = null;
  private resume: (() => void) | null = null;
  private settled = false;

  constructor(dir: string, name: string, stopAt: LockStep[] = []) {
    for (const s of stopAt) this.stops.add(s);
    this.done = acquireHomeLock(dir, `imgsearch ${name}`, {
      step: (s) => {
        if (!this.stops.has(s)) return;
        this.stops.delete(s);
        return new Promise<void>((r) => {
          this.resume = r;
          this.arrived?.(s);
          this.arrived = null;
        });
      },
    });
    this.done.then(
      () => this.settle(),
      () => this.settle(),
    );
  }

  /** Waits until the taker stops at one of its steps (the step) or finishes ('settled'). */
  paused(): Promise<LockStep | 'settled'> {
    if (this.settled) return Promise.resolve('settled');
    return new Promise((r) => (this.arrived = r));
  }

  /** Lets a stopped taker go on to its next stop (or the end). */
  go(...alsoStopAt: LockStep[]): void {
    for (const s of alsoStopAt) this.stops.add(s);
    const r = this.resume;
    this.resume = null;
    r?.();
  }

  private settle(): void {
    this.settled = true;
    this.arrived?.('settled');
    this.arrived = null;
  }
}

/** Exactly one taker won, the others were refused with HomeLockedError, and the lock on disk is the winner's. */
async function expectOneWriter(dir: string, takers: Taker[]): Promise<HomeLock> {
  const results = await Promise.allSettled(takers.map((t) => t.done));
  const won = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  expect(won.map((l) => l.holder.command)).toHaveLength(1);
  for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(HomeLockedError);
  const onDisk = JSON.parse(await fs.readFile(path.join(dir, LOCK_FILE), 'utf8')) as { token: string };
  expect(onDisk.token).toBe(won[0]!.holder.token);
  return won[0]!;
}

describe('takers of a stale writer lock never make two writers', () => {
  it('race 1: a taker that judged a cut lock does not delete the lock another taker is creating in its place', async () => {
    const dir = await home();
    await oldLock(dir, '{"pid":12'); // killed between create and write
    const b = new Taker(dir, 'b', ['judged']);
    expect(await b.paused()).toBe('judged');
    const a = new Taker(dir, 'a', ['created']);
    expect(await a.paused()).toBe('created'); // A's lock is at the path; B still believes the cut lock is there
    b.go();
    await b.done.catch(() => undefined);
    a.go();
    const winner = await expectOneWriter(dir, [a, b]);
    expect(winner.holder.command).toBe('imgsearch a');
  });

  it('race 2: while one taker handles a lock it did not judge, a third process cannot slip in and leave two writers', async () => {
    const dir = await home();
    await oldLock(dir, holderJson(deadPid(), 'dead'));
    const b = new Taker(dir, 'b', ['judged']);
    expect(await b.paused()).toBe('judged');
    const a = new Taker(dir, 'a');
    await a.done; // A took over the stale lock and holds the directory
    b.go('takeover:verified');
    await b.paused(); // B found A's lock where the stale one was (or has already given up)
    const c = new Taker(dir, 'c');
    await c.done.catch(() => undefined);
    b.go();
    const winner = await expectOneWriter(dir, [a, b, c]);
    expect(winner.holder.command).toBe('imgsearch a');
  });

  it('two takers that both judged the same stale lock: the second to act does not delete the first one’s new lock', async () => {
    const dir = await home();
    await oldLock(dir, holderJson(deadPid(), 'dead'));
    const a = new Taker(dir, 'a', ['takeover:verified']);
    expect(await a.paused()).toBe('takeover:verified'); // A is about to remove the stale lock
    const b = new Taker(dir, 'b', ['takeover:verified', 'takeover:busy']);
    await b.paused(); // B got as far as it may while A is mid-takeover
    a.go();
    await a.done;
    b.go();
    const winner = await expectOneWriter(dir, [a, b]);
    expect(winner.holder.command).toBe('imgsearch a');
  });

  it('leaves no temporary or claim files behind after a contested takeover', async () => {
    const dir = await home();
    await oldLock(dir, '');
    const takers = Array.from({ length: 6 }, (_, i) => new Taker(dir, `t${i}`));
    await expectOneWriter(dir, takers);
    expect(await fs.readdir(dir)).toEqual([LOCK_FILE]);
  });
});

// --- many real processes ---

/** mulberry32: a small seeded generator, so a failing round can be replayed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A racer process: on each `go` it tries once (no waiting) and reports whether it won. */
const RACER = `
const { acquireHomeLock } = await import(process.env.LOCK_MODULE);
const held = [];
process.on('message', async (m) => {
  if (m.type === 'release') {
    for (const l of held.splice(0)) await l.release();
    process.send({ type: 'released' });
    return;
  }
  const until = Date.now() + m.delayMs;
  while (Date.now() < until); // a spin, not a timer: sub-millisecond offsets between racers
  try {
    const lock = await acquireHomeLock(m.dir, 'racer ' + process.pid);
    held.push(lock);
    process.send({ type: 'result', round: m.round, won: true, token: lock.holder.token });
  } catch (err) {
    process.send({ type: 'result', round: m.round, won: false, code: err.code ?? String(err) });
  }
});
process.send({ type: 'ready' });
`;

interface RacerReply {
  type: string;
  round?: number;
  won?: boolean;
  token?: string;
  code?: string;
}

function startRacer(): { child: ChildProcess; next: () => Promise<RacerReply> } {
  const child = fork('-', [], {
    execArgv: ['--import', 'tsx', '--input-type=module', '-e', RACER],
    env: { ...process.env, LOCK_MODULE: MODULE },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const queue: RacerReply[] = [];
  const waiting: ((m: RacerReply) => void)[] = [];
  child.on('message', (m: RacerReply) => {
    const w = waiting.shift();
    if (w) w(m);
    else queue.push(m);
  });
  const next = () => {
    const m = queue.shift();
    return m ? Promise.resolve(m) : new Promise<RacerReply>((r) => waiting.push(r));
  };
  return { child, next };
}

describe('many processes racing for a stale lock', () => {
  const racers: ReturnType<typeof startRacer>[] = [];
  afterAll(() => {
    for (const r of racers) r.child.kill();
  });

  it('of 6 processes racing for a stale or cut lock, exactly one wins, every round (20 seeded rounds)', async () => {
    const random = seeded(20_260_611);
    for (let i = 0; i < 6; i++) racers.push(startRacer());
    for (const r of racers) expect((await r.next()).type).toBe('ready');
    const gone = deadPid();
    const full = holderJson(gone, 'dead');
    for (let round = 0; round < 20; round++) {
      const dir = await home();
      // A lock left by a dead holder, or cut anywhere by a kill between create and write (the old writer's way).
      const kind = random();
      await oldLock(dir, kind < 0.4 ? full : kind < 0.7 ? '' : full.slice(0, 1 + Math.floor(random() * (full.length - 2))));
      for (const r of racers) r.child.send({ type: 'go', round, dir, delayMs: Math.floor(random() * 3) });
      const replies = await Promise.all(racers.map((r) => r.next()));
      const winners = replies.filter((m) => m.won);
      expect({ round, winners: winners.length }).toEqual({ round, winners: 1 });
      for (const m of replies) if (!m.won) expect(m.code).toBe('HOME_LOCKED');
      const onDisk = JSON.parse(await fs.readFile(path.join(dir, LOCK_FILE), 'utf8')) as { token: string };
      expect(onDisk.token).toBe(winners[0]!.token);
      expect(await fs.readdir(dir)).toEqual([LOCK_FILE]);
      for (const r of racers) r.child.send({ type: 'release' });
      for (const r of racers) expect((await r.next()).type).toBe('released');
      expect(await fs.readdir(dir)).toEqual([]);
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

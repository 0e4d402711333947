import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { AppError, errorMessage } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { DeadLetter, Delivery, EventBus, TopicStats } from '../../ports/event-bus.js';
import { SAFE_NAME, fsyncDir, isNotFound, writeJsonAtomic } from './atomic-file.js';

/**
 * A durable at-least-once queue on disk, one JSON file per message, safe with several processes:
 *
 *   <dir>/<topic>/ready/<id>.json                      published, waiting
 *   <dir>/<topic>/inflight/<id>@<token>@<expiryMs>.json leased by one puller until expiryMs
 *   <dir>/<topic>/dead/<id>.json                       dead letters, with the last reason
 *
 * Every state change is a rename, which is atomic on one file system: of several processes
 * renaming the same file only one succeeds, so claiming, acking and reclaiming never race.
 * `<id>` sorts by publish time then sequence, so a topic is served first-in first-out.
 * The ack id is `<id>@<token>`: it stays valid across lease extensions, and stops matching once
 * the lease expired and the message was handed to someone else.
 */
const storedMessageSchema = z.object({
  messageId: z.string(),
  data: z.unknown(),
  attributes: z.record(z.string(), z.string()).default({}),
  publishTime: z.string(),
  /** Deliveries made so far (the next one is `deliveries + 1`). */
  deliveries: z.number().int().nonnegative().default(0),
  lastReason: z.string().optional(),
});
type StoredMessage = z.infer<typeof storedMessageSchema>;

const deadRecordSchema = storedMessageSchema.extend({ reason: z.string(), at: z.string() });

const READY_NAME = /^(\d{15}-\d{8}-\d{8}-[0-9a-f]{8})\.json$/;
/** `<id>@<token>@<lease expiry ms>[@<delivery count>].json`: the count rides in the name. */
const INFLIGHT_NAME = /^(\d{15}-\d{8}-\d{8}-[0-9a-f]{8})@([0-9a-f]{12})@(\d{1,15})(?:@(\d{1,6}))?\.json$/;

export interface FileQueueOptions {
  maxDeliveryAttempts: number;
  /** Default lease for pulled messages. */
  ackDeadlineSeconds?: number;
  logger?: Logger;
}

let sequence = 0;

/** How long a cached listing of ready/ may be used before it is read again (other processes' messages). */
const LISTING_TTL_MS = 1_000;

/** Names in ready/ (sorted), consumed from `next`; refreshed when used up, stale or invalidated. */
interface ReadyListing {
  names: string[];
  next: number;
  readAt: number;
}

export class FileQueue implements EventBus {
  private readonly maxDeliveryAttempts: number;
  private readonly ackDeadlineSeconds: number;
  private readonly logger: Logger;
  /**
   * Per topic: a listing of ready/ reused across pulls. Listing a large backlog on every pull
   * (readdir + sort of tens of thousands of names) cost more than the messages it served; names
   * that another puller claimed meanwhile are simply not found and skipped.
   */
  private readonly listings = new Map<string, ReadyListing>();
  /** Per topic: when inflight/ was last scanned for expired leases, and the earliest lease known since. */
  private readonly reclaimScans = new Map<string, { at: number; earliestExpiry: number }>();
  /** Per topic: the clean-up of staging files left by dead processes, run once (sweepStaging). */
  private readonly sweeps = new Map<string, Promise<void>>();

  constructor(
    readonly dir: string,
    opts: FileQueueOptions,
  ) {
    if (!Number.isInteger(opts.maxDeliveryAttempts) || opts.maxDeliveryAttempts < 1) {
      throw new AppError(`maxDeliveryAttempts must be a whole number ≥ 1, got ${opts.maxDeliveryAttempts}`);
    }
    const deadline = opts.ackDeadlineSeconds ?? 60;
    if (!(deadline > 0)) throw new AppError(`ackDeadlineSeconds must be > 0, got ${deadline}`);
    this.maxDeliveryAttempts = opts.maxDeliveryAttempts;
    this.ackDeadlineSeconds = deadline;
    this.logger = opts.logger ?? silentLogger;
  }

  private topicDir(topic: string, sub: 'ready' | 'inflight' | 'dead' | 'tmp'): string {
    if (!SAFE_NAME.test(topic)) {
      throw new AppError(`Invalid topic name ${JSON.stringify(topic)}: use letters, digits, '.', '_' or '-'`);
    }
    return path.join(this.dir, topic, sub);
  }

  async publish(topic: string, data: unknown, attributes: Record<string, string> = {}): Promise<string> {
    const [id] = await this.publishBatch(topic, [{ data, attributes }]);
    return id!;
  }

  async publishBatch(topic: string, items: { data: unknown; attributes?: Record<string, string> }[]): Promise<string[]> {
    const ready = this.topicDir(topic, 'ready');
    const tmp = this.topicDir(topic, 'tmp');
    await this.sweepOnce(topic);
    for (const item of items) {
      if (item.data === undefined) throw new AppError(`Cannot publish undefined data to ${topic}`);
    }
    await fs.mkdir(ready, { recursive: true });
    const ids: string[] = [];
    // Staged (written and fsynced) outside ready/ in parallel, then renamed in one by one in
    // publish order: a puller never sees half a message, and order stays first-in first-out.
    // Stryker disable next-line EqualityOperator: equivalent, because an extra empty chunk writes, renames and syncs nothing new
    for (let start = 0; start < items.length; start += 64) {
      const chunk = items.slice(start, start + 64).map((item) => {
        const now = Date.now();
        sequence = (sequence + 1) % 100_000_000;
        const id = `${String(now).padStart(15, '0')}-${String(sequence).padStart(8, '0')}-${String(process.pid % 1e8).padStart(8, '0')}-${randomBytes(4).toString('hex')}`;
        const message: StoredMessage = {
          messageId: id,
          data: item.data,
          attributes: item.attributes ?? {},
          publishTime: new Date(now).toISOString(),
          deliveries: 0,
        };
        return { id, message, staged: path.join(tmp, `${id}.json`) };
      });
      let renamed = 0;
      try {
        // allSettled: every write has ended before a failure cleans up, so none lands after the cleanup.
        // Stryker disable next-line StringLiteral,ObjectLiteral: equivalent, because '' syncs the file like 'file' and the default 'full' only adds an fsync of tmp/ (a cost, not a behaviour)
        const written = await Promise.allSettled(chunk.map((c) => writeJsonAtomic(c.staged, c.message, { durability: 'file' })));
        const failed = written.find((w): w is PromiseRejectedResult => w.status === 'rejected');
        if (failed) throw failed.reason;
        for (const c of chunk) {
          await fs.rename(c.staged, path.join(ready, `${c.id}.json`));
          renamed += 1;
          ids.push(c.id);
          // Ids only grow within this process, so the listing stays sorted.
          this.listings.get(topic)?.names.push(`${c.id}.json`);
        }
      } catch (err) {
        // A failed publish (a full disk) leaves nothing staged behind: the caller retries the whole batch.
        // Stryker disable next-line MethodExpression,ObjectLiteral,BooleanLiteral: equivalent, because a staged file already renamed or never written is gone and the .catch ignores its ENOENT
        await Promise.all(chunk.slice(renamed).map((c) => fs.rm(c.staged, { force: true }).catch(() => undefined)));
        throw err;
      }
      // The renames are durable once ready/ is synced: a published message survives a power cut.
      await fsyncDir(ready);
    }
    return ids;
  }

  async pull<T = unknown>(topic: string, options: { maxMessages: number; ackDeadlineSeconds?: number }): Promise<Delivery<T>[]> {
    if (!Number.isInteger(options.maxMessages) || options.maxMessages < 1) {
      throw new AppError(`maxMessages must be a whole number ≥ 1, got ${options.maxMessages}`);
    }
    const deadline = options.ackDeadlineSeconds ?? this.ackDeadlineSeconds;
    if (!(deadline > 0)) throw new AppError(`ackDeadlineSeconds must be > 0, got ${deadline}`);
    const leaseMs = Math.round(deadline * 1000);
    await this.sweepOnce(topic);
    await this.reclaimExpired(topic);
    const readyDir = this.topicDir(topic, 'ready');
    const inflightDir = this.topicDir(topic, 'inflight');
    await fs.mkdir(inflightDir, { recursive: true });
    const listing = await this.readyListing(topic, readyDir);
    // A message in ready/ is never rewritten, so it can be read before it is claimed; the claim is
    // one rename whose target name carries the lease and the delivery count, so pulling never
    // rewrites a message and a crash right after the claim still counts the delivery. Names other
    // pullers claimed first are skipped and the next ones in the listing tried instead.
    const out: Delivery<T>[] = [];
    while (out.length < options.maxMessages && listing.next < listing.names.length) {
      const candidates: { id: string; file: string }[] = [];
      while (listing.next < listing.names.length && candidates.length < options.maxMessages - out.length) {
        const file = listing.names[listing.next++]!;
        const match = READY_NAME.exec(file);
        if (!match) {
          await this.quarantine(topic, path.join(readyDir, file), `unexpected file name ${file} in the queue`);
          continue;
        }
        candidates.push({ id: match[1]!, file: path.join(readyDir, file) });
      }
      const delivered = await Promise.all(candidates.map(({ id, file }) => this.claim<T>(topic, id, file, inflightDir, leaseMs)));
      for (const d of delivered) if (d) out.push(d);
    }
    return out;
  }

  /** Reads and claims one ready message; null when another puller (or a stale listing) beat us to it. */
  private async claim<T>(topic: string, id: string, file: string, inflightDir: string, leaseMs: number): Promise<Delivery<T> | null> {
    let message: StoredMessage;
    try {
      // Stryker disable next-line StringLiteral: equivalent, because JSON.parse reads a Buffer as its UTF-8 text
      message = storedMessageSchema.parse(JSON.parse(await fs.readFile(file, 'utf8')));
    } catch (err) {
      // Stryker disable next-line ConditionalExpression: equivalent, because quarantine() of a vanished file returns without effect too
      if (isNotFound(err)) return null; // another puller claimed it first (or the listing was stale)
      await this.quarantine(topic, file, `corrupt message file: ${errorMessage(err)}`);
      return null;
    }
    const deliveries = message.deliveries + 1;
    const token = randomBytes(6).toString('hex');
    const expiry = Date.now() + leaseMs;
    try {
      await fs.rename(file, path.join(inflightDir, `${id}@${token}@${expiry}@${deliveries}.json`));
    } catch (err) {
      if (isNotFound(err)) return null; // another puller claimed it first
      throw err;
    }
    this.noteLease(topic, expiry);
    return {
      ackId: `${id}@${token}`,
      messageId: message.messageId,
      data: message.data as T,
      attributes: message.attributes,
      deliveryAttempt: deliveries,
      publishTime: message.publishTime,
    };
  }

  async ack(topic: string, ackIds: string[]): Promise<void> {
    await Promise.all((await this.leased(topic, ackIds)).map(([, file]) => fs.rm(file, { force: true })));
  }

  async nack(topic: string, ackIds: string[], reason = 'nacked'): Promise<void> {
    for (const [ackId, file] of await this.leased(topic, ackIds)) {
      await this.release(topic, file, ackId.split('@')[0]!, reason);
    }
  }

  async extendDeadline(topic: string, ackIds: string[], seconds: number): Promise<void> {
    if (!(seconds > 0)) throw new AppError(`extendDeadline seconds must be > 0, got ${seconds}`);
    const inflightDir = this.topicDir(topic, 'inflight');
    for (const [ackId, file] of await this.leased(topic, ackIds)) {
      // Stryker disable next-line OptionalChaining: equivalent, because leased() only returns files whose names match INFLIGHT_NAME
      const count = INFLIGHT_NAME.exec(path.basename(file))?.[4];
      try {
        await fs.rename(file, path.join(inflightDir, `${ackId}@${Date.now() + Math.round(seconds * 1000)}${count ? `@${count}` : ''}.json`));
      } catch (err) {
        if (!isNotFound(err)) throw err; // lease already reclaimed by another puller
      }
    }
  }

  async deadLetter(topic: string, ackIds: string[], reason: string): Promise<void> {
    for (const [, file] of await this.leased(topic, ackIds)) {
      await this.moveToDead(topic, file, reason);
    }
  }

  async listDeadLetters(topic: string, limit = 100): Promise<DeadLetter[]> {
    const deadDir = this.topicDir(topic, 'dead');
    const names = (await readdirOrEmpty(deadDir)).filter((n) => n.endsWith('.json')).sort();
    const out: DeadLetter[] = [];
    for (const name of names.slice(0, limit)) {
      try {
        // Stryker disable next-line StringLiteral: equivalent, because JSON.parse reads a Buffer as its UTF-8 text
        const rec = deadRecordSchema.parse(JSON.parse(await fs.readFile(path.join(deadDir, name), 'utf8')));
        out.push({
          messageId: rec.messageId,
          data: rec.data,
          attributes: rec.attributes,
          reason: rec.reason,
          deliveryAttempt: rec.deliveries,
          at: rec.at,
        });
      } catch (err) {
        if (isNotFound(err)) continue;
        // Mid-move or hand-edited: show it rather than hide it.
        out.push({
          messageId: name.replace(/\.json$/, ''),
          data: null,
          attributes: {},
          reason: `unreadable dead letter: ${errorMessage(err)}`,
          deliveryAttempt: 0,
          at: '',
        });
      }
    }
    return out;
  }

  /**
   * Hands every lease of `topic` back (to ready, or dead when out of attempts), whatever its
   * expiry: for the one writer of a data directory (home-lock.ts), which knows that no other
   * puller holds a lease. Returns how many were handed back.
   */
  async releaseAllLeases(topic: string, reason: string): Promise<number> {
    const inflightDir = this.topicDir(topic, 'inflight');
    let released = 0;
    for (const name of await readdirOrEmpty(inflightDir)) {
      const m = INFLIGHT_NAME.exec(name);
      if (m && (await this.release(topic, path.join(inflightDir, name), m[1]!, reason))) released++;
    }
    return released;
  }

  async stats(topic: string): Promise<TopicStats> {
    const count = async (sub: 'ready' | 'inflight' | 'dead') => (await readdirOrEmpty(this.topicDir(topic, sub))).filter((n) => n.endsWith('.json')).length;
    return { ready: await count('ready'), inflight: await count('inflight'), deadLettered: await count('dead') };
  }

  async close(): Promise<void> {
    // Nothing held open: every operation is a self-contained file operation.
  }

  /** Once per topic and process, before its first publish or pull: {@link sweepStaging}. */
  private sweepOnce(topic: string): Promise<void> {
    const existing = this.sweeps.get(topic);
    if (existing) return existing;
    const sweep = this.sweepStaging(topic).then(
      () => undefined,
      (err: unknown) => {
        this.sweeps.delete(topic); // tried again next time (e.g. the disk was unreadable)
        this.logger.warn({ err, topic }, 'could not clean up staging files left by a failed write');
      },
    );
    this.sweeps.set(topic, sweep);
    return sweep;
  }

  /**
   * Removes what failed or interrupted writes left behind: staged messages in tmp/ and the `*.tmp`
   * siblings of atomic writes in tmp/, inflight/ and dead/. Only files of processes that no longer
   * run are removed (the pid is in every such name), so a publish in flight in another process
   * sharing the queue is never touched. A staged message was never renamed into ready/, so its
   * publish failed and was reported to its caller: removing it loses nothing.
   */
  async sweepStaging(topic: string): Promise<number> {
    let removed = 0;
    for (const sub of ['tmp', 'inflight', 'dead'] as const) {
      const dir = this.topicDir(topic, sub);
      for (const name of await readdirOrEmpty(dir)) {
        const pid = STAGED_NAME.exec(name)?.[1] ?? ATOMIC_TMP_NAME.exec(name)?.[1];
        if (sub !== 'tmp' && !name.endsWith('.tmp')) continue;
        // A name without a pid (hand-made) in tmp/ is removed too: nothing else writes there.
        // Stryker disable next-line ConditionalExpression: equivalent, because processAlive(NaN) is false
        if (pid !== undefined && processAlive(Number(pid))) continue;
        await fs.rm(path.join(dir, name), { force: true });
        removed += 1;
      }
    }
    if (removed > 0) this.logger.warn({ topic, removed }, 'removed staging files left by failed or interrupted writes');
    return removed;
  }

  /** The reusable listing of ready/, read again when used up, older than LISTING_TTL_MS or invalidated. */
  private async readyListing(topic: string, readyDir: string): Promise<ReadyListing> {
    const cached = this.listings.get(topic);
    const now = Date.now();
    if (cached && cached.next < cached.names.length && now - cached.readAt < LISTING_TTL_MS) return cached;
    const listing = { names: (await readdirOrEmpty(readyDir)).sort(), next: 0, readAt: now };
    this.listings.set(topic, listing);
    return listing;
  }

  /** A message went back to ready/ out of id order (nack, expiry): the next pull lists again. */
  private invalidateListing(topic: string): void {
    this.listings.delete(topic);
  }

  private noteLease(topic: string, expiry: number): void {
    const scan = this.reclaimScans.get(topic);
    // Stryker disable next-line ConditionalExpression: equivalent, because pull() always records a scan (reclaimExpired) before it claims
    if (scan) scan.earliestExpiry = Math.min(scan.earliestExpiry, expiry);
  }

  /** Current inflight file of each ack id still leased by its holder (others are skipped). */
  private async leased(topic: string, ackIds: string[]): Promise<[string, string][]> {
    const inflightDir = this.topicDir(topic, 'inflight');
    const byAckId = new Map<string, string>();
    for (const name of await readdirOrEmpty(inflightDir)) {
      const m = INFLIGHT_NAME.exec(name);
      if (m) byAckId.set(`${m[1]}@${m[2]}`, path.join(inflightDir, name));
    }
    const out: [string, string][] = [];
    for (const ackId of ackIds) {
      const file = byAckId.get(ackId);
      if (file) {
        out.push([ackId, file]);
      } else {
        // Stryker disable next-line StringLiteral,ObjectLiteral: debug log wording only, no caller reads it
        this.logger.debug({ topic, ackId }, 'ack id no longer leased (lease expired or already settled)');
      }
    }
    return out;
  }

  /** Leases whose holder died or overran are returned to ready (or dead when out of attempts). */
  private async reclaimExpired(topic: string): Promise<void> {
    const inflightDir = this.topicDir(topic, 'inflight');
    const now = Date.now();
    // Scan when a lease we handed out or saw in the last scan can have lapsed; leases other
    // processes took since are found by a scan at least every LISTING_TTL_MS.
    const scan = this.reclaimScans.get(topic);
    if (scan && now < scan.earliestExpiry && now - scan.at < LISTING_TTL_MS) return;
    // The earliest lease seen is remembered too, so a lapse is noticed at once even between scans.
    const next = { at: now, earliestExpiry: Number.POSITIVE_INFINITY };
    this.reclaimScans.set(topic, next);
    for (const name of await readdirOrEmpty(inflightDir)) {
      const m = INFLIGHT_NAME.exec(name);
      const file = path.join(inflightDir, name);
      if (!m) {
        if (!name.endsWith('.tmp')) await this.quarantine(topic, file, `unexpected file name ${name} in the queue`);
        continue;
      }
      if (Number(m[3]) > now) {
        next.earliestExpiry = Math.min(next.earliestExpiry, Number(m[3]));
        continue;
      }
      if (await this.release(topic, file, m[1]!, 'lease expired')) {
        this.logger.warn({ topic, messageId: m[1] }, 'lease expired: redelivering');
      }
    }
  }

  /** Back to ready for another attempt, or to dead when the attempts are used up. */
  private async release(topic: string, file: string, id: string, reason: string): Promise<boolean> {
    return this.settle(topic, file, id, (message) => (message.deliveries >= this.maxDeliveryAttempts ? { dest: 'dead', reason } : { dest: 'ready', reason }));
  }

  private async moveToDead(topic: string, file: string, reason: string): Promise<void> {
    const id = INFLIGHT_NAME.exec(path.basename(file))?.[1] ?? READY_NAME.exec(path.basename(file))?.[1];
    if (!id) {
      await this.quarantine(topic, file, reason);
      return;
    }
    await this.settle(topic, file, id, () => ({ dest: 'dead', reason }));
  }

  /**
   * Moves a message to ready or dead with its reason recorded, crash-safely: first a short private
   * lease (a rename inside inflight/, which also settles races with other processes), then the
   * rewrite, then one rename to the destination. A crash midway leaves a lease that expires and is
   * redelivered: never a lost message.
   */
  private async settle(
    topic: string,
    file: string,
    id: string,
    decide: (message: StoredMessage) => { dest: 'ready' | 'dead'; reason: string },
  ): Promise<boolean> {
    const inflightDir = this.topicDir(topic, 'inflight');
    // Stryker disable next-line OptionalChaining: equivalent, because every caller passes an inflight file whose name matches INFLIGHT_NAME
    const counted = Number(INFLIGHT_NAME.exec(path.basename(file))?.[4] ?? 0);
    const lease = path.join(inflightDir, `${id}@${randomBytes(6).toString('hex')}@${Date.now() + 30_000}${counted ? `@${counted}` : ''}.json`);
    try {
      await fs.rename(file, lease);
    } catch (err) {
      if (isNotFound(err)) return false; // settled or reclaimed by someone else
      throw err;
    }
    let message: StoredMessage;
    try {
      // Stryker disable next-line StringLiteral: equivalent, because JSON.parse reads a Buffer as its UTF-8 text
      message = storedMessageSchema.parse(JSON.parse(await fs.readFile(lease, 'utf8')));
    } catch (err) {
      await this.quarantine(topic, lease, `corrupt message file: ${errorMessage(err)}`);
      return false;
    }
    // The delivery count of a leased message is in its file name (see pull); a message claimed
    // by a worker that then died counts as delivered, so its redelivery shows as attempt ≥ 2.
    message.deliveries = Math.max(message.deliveries, counted, 1);
    const { dest, reason } = decide(message);
    const destDir = this.topicDir(topic, dest);
    await fs.mkdir(destDir, { recursive: true });
    if (dest === 'dead') {
      await writeJsonAtomic(lease, { ...message, lastReason: reason, reason, at: new Date().toISOString() });
      this.logger.warn({ topic, messageId: message.messageId, reason, deliveries: message.deliveries }, 'message dead-lettered');
    } else {
      await writeJsonAtomic(lease, { ...message, lastReason: reason });
    }
    await fs.rename(lease, path.join(destDir, `${id}.json`));
    if (dest === 'ready') this.invalidateListing(topic);
    return true;
  }

  /** A file that is not a valid message goes to dead with the reason; pulling carries on. */
  private async quarantine(topic: string, file: string, reason: string): Promise<void> {
    const deadDir = this.topicDir(topic, 'dead');
    await fs.mkdir(deadDir, { recursive: true });
    const base = `corrupt-${Date.now()}-${randomBytes(4).toString('hex')}`;
    const raw = path.join(deadDir, `${base}.raw`);
    try {
      await fs.rename(file, raw); // out of the way first: no other puller trips over it again
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    this.logger.error({ topic, file: path.basename(file), reason }, 'corrupt queue file moved to dead letters');
    const content = await fs.readFile(raw, 'utf8');
    await writeJsonAtomic(path.join(deadDir, `${base}.json`), {
      messageId: base,
      data: content.slice(0, 10_000),
      attributes: { originalFile: path.basename(file) },
      // Stryker disable next-line StringLiteral: equivalent, because a DeadLetter has no publishTime: the field only satisfies the record schema
      publishTime: '',
      deliveries: 0,
      reason,
      at: new Date().toISOString(),
    });
    await fs.rm(raw, { force: true });
  }
}

/** A staged message `<id>.json` (id: time-sequence-pid-random) and an atomic write's `<target>.<pid>.<hex>.tmp`. */
const STAGED_NAME = /^\d{15}-\d{8}-(\d{8})-[0-9a-f]{8}\.json$/;
const ATOMIC_TMP_NAME = /\.(\d+)\.[0-9a-f]{12}\.tmp$/;

/** Whether a process with this id runs (ids in staged names are taken modulo 1e8, like pids here). */
function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  // Stryker disable next-line ConditionalExpression,ArithmeticOperator: equivalent, because kill(own pid, 0) succeeds too (and Linux pids stay below 1e8)
  if (pid === process.pid % 1e8) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

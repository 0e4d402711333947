import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { silentLogger, type Logger } from '../../logger.js';
import type { SearchEventSink, SearchEventSource } from '../../ports/search-events.js';
import { boundedLines } from '../../services/feedback.js';
import { monitorEventSchema, type MonitorEvent } from '../../services/monitoring.js';
import { fsyncDir, isNotFound } from './atomic-file.js';

/**
 * Monitoring events as JSON lines under one folder (`<home>/monitoring`), durable and bounded.
 *
 * **Writing.** `append` only queues the event; a flush writes the queue every `flushIntervalMs`
 * (or at once past `flushEvents` queued, and on close). Each flush opens `events.jsonl` for append
 * (O_APPEND: several processes — `up` and a `search` — append whole batches with one write each),
 * writes the batch, `fdatasync`s it (fsync policy `batch`, the default; `none` leaves it to the
 * OS) and closes. So a process crash loses at most the queued, unflushed events (≤ one interval),
 * a power cut at most the batch being written. A failed write (disk full) keeps the batch queued
 * for the next flush, up to `maxQueued` events (the oldest are dropped and counted), and logs one
 * warning a minute: it never reaches the search that appended.
 *
 * **Torn lines.** A crash mid-write can leave a last line without its newline. Before each batch the
 * writer checks the file's last byte and, if it is not a newline, writes one first, so the torn
 * fragment stays alone on its line; readers skip it (and any other line that is not a valid event)
 * with a warning.
 *
 * **Bounded.** Before a batch would take `events.jsonl` past `maxFileBytes`, the file is renamed
 * to `events-<UTC time>-<random>.jsonl` (rotation). At each rotation, and at a process's first
 * write, rotated files last written more than `retentionDays` ago are deleted, and of the rest only
 * the newest `maxFiles` are kept: the folder never holds much more than (maxFiles + 1) × maxFileBytes.
 */
export interface SearchEventLogOptions {
  /** Size past which `events.jsonl` is rotated. Default 8 MiB. */
  maxFileBytes?: number;
  /** Rotated files kept (newest first). Default 16. */
  maxFiles?: number;
  /** Rotated files older than this are deleted. Default 30 days. */
  retentionDays?: number;
  /** Time between flushes. Default 1000 ms. */
  flushIntervalMs?: number;
  /** Queued events that trigger a flush at once. Default 512. */
  flushEvents?: number;
  /** Queued events kept while writes fail; older ones are dropped. Default 20,000. */
  maxQueued?: number;
  /** `batch` (default): fdatasync after each batch. `none`: no fsync. */
  fsync?: 'batch' | 'none';
  logger?: Logger;
  now?: () => number;
}

export const CURRENT_FILE = 'events.jsonl';
const ROTATED = /^events-\d{8}T\d{9}Z-[0-9a-f]{8}\.jsonl$/;
/** No event is near this long; a longer line is skipped without being held. */
const MAX_LINE_BYTES = 64 * 1024;

export class JsonlSearchEventLog implements SearchEventSink, SearchEventSource {
  readonly dir: string;
  private readonly maxFileBytes: number;
  private readonly maxFiles: number;
  private readonly retentionMs: number;
  private readonly flushIntervalMs: number;
  private readonly flushEvents: number;
  private readonly maxQueued: number;
  private readonly fsync: 'batch' | 'none';
  private readonly logger: Logger;
  private readonly now: () => number;
  private queue: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private pruned = false;
  private lastWarning = -Infinity;
  /** Events dropped because writes kept failing (counted, logged). */
  dropped = 0;

  constructor(dir: string, options: SearchEventLogOptions = {}) {
    this.dir = path.resolve(dir);
    this.maxFileBytes = options.maxFileBytes ?? 8 * 1024 * 1024;
    this.maxFiles = options.maxFiles ?? 16;
    this.retentionMs = (options.retentionDays ?? 30) * 86_400_000;
    this.flushIntervalMs = options.flushIntervalMs ?? 1000;
    this.flushEvents = options.flushEvents ?? 512;
    this.maxQueued = options.maxQueued ?? 20_000;
    this.fsync = options.fsync ?? 'batch';
    this.logger = options.logger ?? silentLogger;
    this.now = options.now ?? Date.now;
  }

  append(event: MonitorEvent): void {
    try {
      this.queue.push(JSON.stringify(event));
      if (this.queue.length > this.maxQueued) {
        const over = this.queue.length - this.maxQueued;
        this.queue.splice(0, over);
        this.dropped += over;
      }
      if (this.queue.length >= this.flushEvents) void this.flush();
      else if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.flush();
        }, this.flushIntervalMs);
        this.timer.unref();
      }
    } catch (err) {
      this.warn(err, 'monitoring event not queued');
    }
  }

  /** Writes what is queued; never rejects (a failure is logged and the events stay queued). */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.writing = this.writing.then(() => this.writeQueued());
    return this.writing;
  }

  async close(): Promise<void> {
    await this.flush();
  }

  private async writeQueued(): Promise<void> {
    if (this.queue.length === 0) return;
    const batch = this.queue;
    this.queue = [];
    try {
      await this.write(`${batch.join('\n')}\n`);
    } catch (err) {
      // Kept for the next flush, in order, within the bound.
      this.queue = batch.concat(this.queue);
      if (this.queue.length > this.maxQueued) {
        const over = this.queue.length - this.maxQueued;
        this.queue.splice(0, over);
        this.dropped += over;
      }
      this.warn(err, 'monitoring events not written; kept for the next flush');
    }
  }

  private async write(data: string): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const file = path.join(this.dir, CURRENT_FILE);
    const size = (await fs.stat(file).catch((err: unknown) => (isNotFound(err) ? null : Promise.reject(err))))?.size ?? 0;
    const bytes = Buffer.byteLength(data);
    if (size > 0 && size + bytes > this.maxFileBytes) await this.rotate(file);
    else if (!this.pruned) await this.prune();
    const handle = await fs.open(file, 'a+');
    try {
      // A line torn by a crash is closed with a newline, so it never swallows the next event.
      const { size: now } = await handle.stat();
      let prefix = '';
      if (now > 0) {
        const last = Buffer.alloc(1);
        await handle.read(last, 0, 1, now - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
      await handle.write(prefix + data);
      if (this.fsync === 'batch') await handle.datasync();
    } finally {
      await handle.close();
    }
  }

  private async rotate(file: string): Promise<void> {
    const stamp = new Date(this.now()).toISOString().replace(/[-:.]/g, '');
    const target = path.join(this.dir, `events-${stamp}-${randomBytes(4).toString('hex')}.jsonl`);
    try {
      await fs.rename(file, target);
    } catch (err) {
      // Another process rotated it first.
      if (!isNotFound(err)) throw err;
    }
    await fsyncDir(this.dir);
    await this.prune();
  }

  /** Deletes rotated files past the retention, then all but the newest `maxFiles`. */
  private async prune(): Promise<void> {
    this.pruned = true;
    const rotated = await this.rotatedFiles();
    const cutoff = this.now() - this.retentionMs;
    const keep: string[] = [];
    for (const f of rotated) {
      const st = await fs.stat(f).catch(() => null);
      if (!st) continue;
      if (st.mtimeMs < cutoff) await rm(f);
      else keep.push(f);
    }
    // Names sort by rotation time: the oldest first.
    for (const f of keep.slice(0, Math.max(0, keep.length - this.maxFiles))) await rm(f);
  }

  private async rotatedFiles(): Promise<string[]> {
    const names = await fs.readdir(this.dir).catch((err: unknown) => (isNotFound(err) ? [] : Promise.reject(err)));
    return names
      .filter((n) => ROTATED.test(n))
      .sort()
      .map((n) => path.join(this.dir, n));
  }

  /** Every file that may hold events in the range, oldest first (rotated files last written before `from` hold none). */
  async files(range?: { from: Date }): Promise<string[]> {
    const out: string[] = [];
    for (const f of await this.rotatedFiles()) {
      const st = await fs.stat(f).catch(() => null);
      if (st && (!range || st.mtimeMs >= range.from.getTime())) out.push(f);
    }
    const current = path.join(this.dir, CURRENT_FILE);
    if (await fs.stat(current).catch(() => null)) out.push(current);
    return out;
  }

  async *read(range: { from: Date; to: Date }): AsyncGenerator<MonitorEvent> {
    const from = range.from.getTime();
    const to = range.to.getTime();
    for (const file of await this.files(range)) {
      let invalid = 0;
      let torn = false;
      const endsWithNewline = await lastByteIsNewline(file);
      let pending: string | null | undefined;
      const take = (line: string | null, last: boolean) => {
        const e = parseEvent(line);
        if (e === undefined) return undefined;
        if (e === null) {
          if (last && !endsWithNewline) torn = true;
          else invalid++;
          return undefined;
        }
        const at = Date.parse(e.at);
        return at >= from && at < to ? e : undefined;
      };
      try {
        // One line behind, so the last line is known as such (a torn one has no newline).
        for await (const line of boundedLines(createReadStream(file, { highWaterMark: 256 * 1024 }), MAX_LINE_BYTES)) {
          if (pending !== undefined) {
            const e = take(pending, false);
            if (e) yield e;
          }
          pending = line;
        }
      } catch (err) {
        if (isNotFound(err)) continue; // pruned by a writer since listing
        throw err;
      }
      if (pending !== undefined) {
        const e = take(pending, true);
        if (e) yield e;
      }
      if (torn) this.logger.warn({ file }, 'torn last line of the monitoring log skipped (a write cut short by a crash)');
      if (invalid > 0) this.logger.warn({ file, lines: invalid }, 'unreadable monitoring events skipped');
    }
  }

  private warn(err: unknown, message: string): void {
    const now = this.now();
    if (now - this.lastWarning < 60_000) return;
    this.lastWarning = now;
    this.logger.warn({ err, dir: this.dir, queued: this.queue.length, dropped: this.dropped }, message);
  }
}

/** A line → an event; undefined for a blank line, null for anything that is not a valid event. */
function parseEvent(line: string | null): MonitorEvent | null | undefined {
  if (line === null) return null;
  if (line.trim() === '') return undefined;
  try {
    const r = monitorEventSchema.safeParse(JSON.parse(line));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
}

async function lastByteIsNewline(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r').catch(() => null);
  if (!handle) return true;
  try {
    const { size } = await handle.stat();
    if (size === 0) return true;
    const b = Buffer.alloc(1);
    await handle.read(b, 0, 1, size - 1);
    return b[0] === 0x0a;
  } finally {
    await handle.close();
  }
}

async function rm(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CURRENT_FILE, JsonlSearchEventLog } from '../../shared/adapters/local/search-event-log.js';
import type { MonitorEvent, SearchMonitorEvent } from '../../shared/services/monitoring.js';
import { recordingLogger } from '../helpers/recording-logger.js';

/** The local monitoring event log on real files: round trip, rotation, retention, torn lines, failing disks. */
const T0 = Date.parse('2026-11-27T12:00:00.000Z');
const DAY = 86_400_000;

function event(i: number, at = T0): SearchMonitorEvent {
  return {
    monitor: 'search',
    v: 1,
    at: new Date(at).toISOString(),
    queryId: `query-${String(i).padStart(5, '0')}`,
    kind: 'text',
    modelVersion: 'm1',
    indexVersion: 'images-v1',
    k: 10,
    resultCount: 10,
    topScore: 0.5,
    kthScore: 0.25,
    zeroResult: false,
    latencyMs: { embed: 1, index: 2, total: 3 },
  };
}

async function readAll(log: JsonlSearchEventLog, from = 0, to = T0 + DAY): Promise<MonitorEvent[]> {
  const out: MonitorEvent[] = [];
  for await (const e of log.read({ from: new Date(from), to: new Date(to) })) out.push(e);
  return out;
}

describe('JsonlSearchEventLog', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-monitor-log-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('appends without writing, writes JSON lines on flush, and reads back the events of a time range', async () => {
    const log = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000 });
    log.append(event(1, T0 - 2 * DAY));
    log.append(event(2, T0));
    // Nothing written until a flush: append only queues.
    await expect(fs.stat(path.join(dir, CURRENT_FILE))).rejects.toThrow(/ENOENT/);
    await log.flush();
    const text = await fs.readFile(path.join(dir, CURRENT_FILE), 'utf8');
    expect(text.split('\n')).toHaveLength(3);
    expect(JSON.parse(text.split('\n')[1]!)).toEqual(event(2, T0));
    expect((await readAll(log)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual(['query-00001', 'query-00002']);
    expect((await readAll(log, T0 - DAY)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual(['query-00002']);
  });

  it('flushes by itself once a batch is full, and on close', async () => {
    const log = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000, flushEvents: 3 });
    for (let i = 0; i < 3; i++) log.append(event(i));
    await log.flush(); // waits for the write the third append started
    expect(await readAll(log)).toHaveLength(3);
    log.append(event(3));
    await log.close();
    expect(await readAll(new JsonlSearchEventLog(dir))).toHaveLength(4);
  });

  it('rotates by size and keeps at most maxFiles rotated files, losing only the oldest', async () => {
    const lineBytes = Buffer.byteLength(`${JSON.stringify(event(0))}\n`);
    let now = T0;
    const log = new JsonlSearchEventLog(dir, { maxFileBytes: lineBytes * 10, maxFiles: 3, flushIntervalMs: 60_000, now: () => now });
    // 100 batches of 4 events: a file holds 2 batches (8 lines) before the next would pass 10 lines.
    for (let b = 0; b < 100; b++) {
      for (let i = 0; i < 4; i++) log.append(event(b * 4 + i));
      now += 1000;
      await log.flush();
    }
    const files = (await fs.readdir(dir)).sort();
    expect(files).toHaveLength(4); // 3 rotated + the current one
    expect(files.filter((f) => f !== CURRENT_FILE).every((f) => /^events-\d{8}T\d{9}Z-[0-9a-f]{8}\.jsonl$/.test(f))).toBe(true);
    for (const f of files) expect((await fs.stat(path.join(dir, f))).size).toBeLessThanOrEqual(lineBytes * 10);
    // What is left is the newest 4 files' worth, in order: events 368..399.
    const ids = (await readAll(log)).map((e) => (e as SearchMonitorEvent).queryId);
    expect(ids).toEqual(Array.from({ length: 32 }, (_, i) => `query-${String(368 + i).padStart(5, '0')}`));
  });

  it('deletes rotated files last written before the retention, and reads none older than the range', async () => {
    const lineBytes = Buffer.byteLength(`${JSON.stringify(event(0))}\n`);
    let now = T0;
    const log = new JsonlSearchEventLog(dir, { maxFileBytes: lineBytes * 2, retentionDays: 30, flushIntervalMs: 60_000, now: () => now });
    for (let i = 0; i < 6; i++) {
      log.append(event(i));
      log.append(event(i));
      await log.flush();
    }
    const rotated = (await fs.readdir(dir)).filter((f) => f !== CURRENT_FILE).sort();
    expect(rotated).toHaveLength(5);
    // The two oldest files were last written 31 and 40 days ago; the others 1 day ago.
    const ageDays = [40, 31, 1, 1, 1];
    for (const [i, f] of rotated.entries()) {
      const t = new Date(T0 - ageDays[i]! * DAY);
      await fs.utimes(path.join(dir, f), t, t);
    }
    // A reader for the last 7 days skips the old files without opening them.
    expect((await log.files({ from: new Date(T0 - 7 * DAY) })).map((f) => path.basename(f))).toEqual([...rotated.slice(2), CURRENT_FILE]);
    // The next rotation prunes them.
    now = T0 + 1000;
    log.append(event(100));
    log.append(event(100));
    await log.flush();
    const left = (await fs.readdir(dir)).filter((f) => f !== CURRENT_FILE).sort();
    expect(left.filter((f) => rotated.slice(0, 2).includes(f))).toEqual([]);
    expect(left).toEqual(expect.arrayContaining(rotated.slice(2)));
  });

  it('a torn last line (crash mid-write) is skipped with a warning, and the next batch starts on its own line', async () => {
    const { logger, lines } = recordingLogger();
    const log = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000, logger });
    log.append(event(1));
    await log.flush();
    const whole = JSON.stringify(event(2));
    await fs.appendFile(path.join(dir, CURRENT_FILE), whole.slice(0, whole.length / 2)); // the crash
    expect((await readAll(log)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual(['query-00001']);
    expect(lines.filter((l) => l.severity === 'WARNING' && /torn last line/.test(String(l.message)))).toHaveLength(1);

    // A restarted process appends: the torn fragment is closed off, the new event is intact.
    const restarted = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000, logger });
    restarted.append(event(3));
    await restarted.flush();
    const text = await fs.readFile(path.join(dir, CURRENT_FILE), 'utf8');
    expect(text.endsWith(`${JSON.stringify(event(3))}\n`)).toBe(true);
    expect((await readAll(restarted)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual(['query-00001', 'query-00003']);
    expect(lines.filter((l) => l.severity === 'WARNING' && /unreadable monitoring events skipped/.test(String(l.message)))).toEqual([
      expect.objectContaining({ lines: 1 }),
    ]);
  });

  it('skips lines that are not events (wrong shape, other version, not JSON) and keeps reading', async () => {
    const good = JSON.stringify(event(1));
    await fs.writeFile(
      path.join(dir, CURRENT_FILE),
      [good, '{"monitor":"search","v":2}', 'not json', JSON.stringify({ ...event(2), kind: 'audio' }), '', JSON.stringify(event(3))].join('\n') + '\n',
    );
    const { logger, lines } = recordingLogger();
    const log = new JsonlSearchEventLog(dir, { logger });
    expect((await readAll(log)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual(['query-00001', 'query-00003']);
    expect(lines.find((l) => /unreadable monitoring events skipped/.test(String(l.message)))).toMatchObject({ lines: 3 });
  });

  it('a write that fails never throws: the batch stays queued (bounded, the oldest dropped and counted) and is written once the disk is back', async () => {
    const { logger, lines } = recordingLogger();
    // The log folder's path is taken by a file: every write fails (ENOTDIR / EEXIST).
    const blocked = path.join(dir, 'monitoring');
    await fs.writeFile(blocked, 'in the way');
    const log = new JsonlSearchEventLog(blocked, { flushIntervalMs: 60_000, maxQueued: 5, logger });
    for (let i = 0; i < 4; i++) log.append(event(i));
    await expect(log.flush()).resolves.toBeUndefined();
    for (let i = 4; i < 8; i++) expect(() => log.append(event(i))).not.toThrow();
    await log.flush();
    expect(log.dropped).toBe(3);
    expect(lines.filter((l) => /monitoring events not written/.test(String(l.message)))).toHaveLength(1); // one warning a minute
    expect(lines[0]).toMatchObject({ severity: 'WARNING', err: expect.objectContaining({ message: expect.any(String) }) });
    await fs.rm(blocked);
    await log.flush();
    expect((await readAll(log)).map((e) => (e as SearchMonitorEvent).queryId)).toEqual([
      'query-00003',
      'query-00004',
      'query-00005',
      'query-00006',
      'query-00007',
    ]);
  });

  it('two writers (up and a CLI search) append to one file without losing or mixing events', async () => {
    const a = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000 });
    const b = new JsonlSearchEventLog(dir, { flushIntervalMs: 60_000 });
    for (let i = 0; i < 50; i++) {
      a.append(event(i));
      b.append(event(1000 + i));
      if (i % 10 === 9) await Promise.all([a.flush(), b.flush()]);
    }
    const ids = (await readAll(a)).map((e) => (e as SearchMonitorEvent).queryId);
    expect(ids).toHaveLength(100);
    expect(new Set(ids).size).toBe(100);
  });
});

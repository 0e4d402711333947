import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ActivityReporter, fileLogger, type ActivityCounts } from '../../cli/activity.js';

/**
 * Issue 14, point 8: `up` shows live activity — a status line in a terminal (logs printed above
 * it, never through it), one-line summaries otherwise — and per-file warnings go to a log file.
 */
function sink() {
  const chunks: string[] = [];
  return { chunks, write: (c: string | Uint8Array) => (chunks.push(String(c)), true), text: () => chunks.join('') };
}

function reporter(tty: boolean, counts: ActivityCounts[]) {
  const stderr = sink();
  const stdout = sink();
  let i = 0;
  const r = new ActivityReporter({
    tty,
    read: async () => counts[Math.min(i++, counts.length - 1)]!,
    stderr,
    stdout,
    hint: '(Ctrl-C stops)',
    now: () => new Date('2026-11-27T10:11:12Z'),
  });
  return { r, stderr, stdout };
}

const c = (indexed: number, pending: number, rejected = 0, ignored = 0): ActivityCounts => ({ indexed, pending, rejected, ignored });

describe('live activity of `up`', () => {
  it('in a terminal: one status line redrawn in place on stderr, nothing on stdout', async () => {
    const { r, stderr, stdout } = reporter(true, [c(0, 5), c(0, 5), c(3, 2, 1, 1)]);
    await r.tick();
    await r.tick(); // unchanged: not drawn again
    await r.tick();
    expect(stderr.chunks).toEqual([
      '\r\u001b[Kindexed 0 · pending 5 · rejected 0 · ignored 0   (Ctrl-C stops)',
      '\r\u001b[Kindexed 3 · pending 2 · rejected 1 · ignored 1   (Ctrl-C stops)',
    ]);
    expect(stdout.text()).toBe('');
    r.stop();
    expect(stderr.chunks.at(-1)).toBe('\r\u001b[K');
  });

  it('a log line is printed above the status line, which is drawn again below it', async () => {
    const { r, stderr } = reporter(true, [c(7, 0)]);
    await r.tick();
    r.logStream().write('{"severity":"ERROR","message":"index writes failing"}\n');
    await new Promise((resolve) => setImmediate(resolve));
    expect(stderr.chunks.at(-1)).toBe(
      '\r\u001b[K{"severity":"ERROR","message":"index writes failing"}\nindexed 7 · pending 0 · rejected 0 · ignored 0   (Ctrl-C stops)',
    );
  });

  it('not in a terminal: a summary line on stdout only when the counts changed; stderr untouched', async () => {
    const { r, stderr, stdout } = reporter(false, [c(1, 4), c(1, 4), c(5, 0, 1)]);
    await r.tick();
    await r.tick();
    await r.tick();
    expect(stdout.chunks).toEqual(['10:11:12 indexed 1, pending 4, rejected 0, ignored 0\n', '10:11:12 indexed 5, pending 0, rejected 1, ignored 0\n']);
    expect(stderr.text()).toBe('');
  });
});

describe('fileLogger', () => {
  it('keeps per-file warnings in the log file and shows errors on the terminal too', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-filelog-'));
    const file = path.join(dir, 'logs', 'ingest.log');
    const terminal = sink();
    const { logger, close } = await fileLogger(file, 'warn', terminal as unknown as NodeJS.WritableStream);
    logger.info('not recorded at warn');
    logger.warn({ object: 'broken.jpg' }, 'rejected broken.jpg: corrupt-image');
    logger.error({ err: new Error('disk full') }, 'index writes failing');
    logger.flush();
    await close();
    const lines = (await fs.readFile(file, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { severity: string; message: string });
    expect(lines.map((l) => [l.severity, l.message])).toEqual([
      ['WARNING', 'rejected broken.jpg: corrupt-image'],
      ['ERROR', 'index writes failing'],
    ]);
    expect(terminal.text()).toContain('"message":"index writes failing"');
    expect(terminal.text()).not.toContain('broken.jpg');
    await fs.rm(dir, { recursive: true, force: true });
  });
});

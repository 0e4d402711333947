import { Writable } from 'node:stream';
import type { Logger } from '../shared/logger.js';

/**
 * What a long-running command shows while it works, and where its logs go.
 *  - In a terminal: one status line on stderr, redrawn in place (`up`: indexed / pending /
 *    rejected / ignored), with any log line printed above it (never through it).
 *  - Otherwise: a one-line summary on stdout every `intervalMs`, only when something changed (so a
 *    journal or a pipe gets a readable history, and stderr stays JSON logs only).
 */

export interface ActivityCounts {
  indexed: number;
  pending: number;
  rejected: number;
  ignored: number;
}

export function formatActivity(c: ActivityCounts, separator = ' · '): string {
  return [`indexed ${c.indexed}`, `pending ${c.pending}`, `rejected ${c.rejected}`, `ignored ${c.ignored}`].join(separator);
}

const CLEAR_LINE = '\r\u001b[K';

export interface ActivityOptions {
  read: () => Promise<ActivityCounts>;
  /** Whether stderr is a terminal (the status line) or not (periodic summaries on stdout). */
  tty: boolean;
  stderr?: Pick<NodeJS.WritableStream, 'write'>;
  stdout?: Pick<NodeJS.WritableStream, 'write'>;
  intervalMs?: number;
  /** Shown after the counts on the status line. */
  hint?: string;
  now?: () => Date;
}

export class ActivityReporter {
  private timer: NodeJS.Timeout | null = null;
  private line = '';
  private last = '';
  private reading = false;
  private readonly stderr: Pick<NodeJS.WritableStream, 'write'>;
  private readonly stdout: Pick<NodeJS.WritableStream, 'write'>;

  constructor(private readonly options: ActivityOptions) {
    this.stderr = options.stderr ?? process.stderr;
    this.stdout = options.stdout ?? process.stdout;
  }

  /** Reads the counts and shows them (the status line, or a summary line when they changed). */
  async tick(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const text = formatActivity(await this.options.read(), this.options.tty ? ' · ' : ', ');
      if (this.options.tty) {
        const line = this.options.hint ? `${text}   ${this.options.hint}` : text;
        if (line !== this.line) this.stderr.write(`${CLEAR_LINE}${line}`);
        this.line = line;
      } else if (text !== this.last) {
        const at = (this.options.now?.() ?? new Date()).toISOString().slice(11, 19);
        this.stdout.write(`${at} ${text}\n`);
      }
      this.last = text;
    } catch {
      // A count that cannot be read now (the index being swapped) is shown at the next tick.
    } finally {
      this.reading = false;
    }
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.options.intervalMs ?? (this.options.tty ? 1_000 : 30_000));
    this.timer.unref();
  }

  /** Stops and leaves the terminal on a fresh line. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.options.tty && this.line) this.stderr.write(`${CLEAR_LINE}`);
    this.line = '';
  }

  /** Writes `text` (log lines) above the status line, then redraws it. */
  above(text: string): void {
    if (!this.options.tty || !this.line) return void this.stderr.write(text);
    this.stderr.write(`${CLEAR_LINE}${text}${this.line}`);
  }

  /** A stream for a logger's lines that prints them above the status line. */
  logStream(): Writable {
    return new Writable({
      write: (chunk: Buffer | string, _encoding, done) => {
        this.above(String(chunk));
        done();
      },
    });
  }
}

/**
 * A logger writing to `file` (JSON lines, appended; the folder is created) at `level`, and its
 * errors also to `errors` (e.g. the terminal): per-file warnings (rejections) stay in the file,
 * where the summary points, instead of scrolling through a progress bar.
 */
export async function fileLogger(file: string, level: string, errors: NodeJS.WritableStream): Promise<{ logger: Logger; close(): Promise<void> }> {
  const { createLogger } = await import('../shared/logger.js');
  if (level === 'silent') return { logger: createLogger({ level }), close: async () => {} };
  const { promises: fs, createWriteStream } = await import('node:fs');
  const path = await import('node:path');
  const { pino } = await import('pino');
  await fs.mkdir(path.dirname(file), { recursive: true });
  const out = createWriteStream(file, { flags: 'a' });
  const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  const streams: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'; stream: typeof out }[] = [{ level: level as 'info', stream: out }];
  // Errors reach the person too, unless the level asked for is above them.
  if (levels.indexOf(level) <= levels.indexOf('error')) streams.push({ level: 'error', stream: errors as unknown as typeof out });
  const logger = createLogger({ level, destination: pino.multistream(streams) as unknown as NodeJS.WritableStream });
  return {
    logger,
    close: () => new Promise<void>((resolve) => out.end(resolve)),
  };
}

/**
 * How an `imgsearch` process ends: exit codes, a closed stdout pipe, and Ctrl-C / SIGTERM.
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, sigint: 130, sigterm: 143 } as const;

/** Cursor shown, line wrap on (what a progress bar may have changed). */
export const TERMINAL_RESTORE = '\u001b[?25h\u001b[?7h';

/**
 * `imgsearch retrain | head -1`: once the reader of stdout has gone, the rest of the output has
 * nowhere to go; the process ends quietly (exit 0, as `yes | head -1` does) instead of crashing.
 */
export function installPipeGuard(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') {
        restoreTerminal();
        process.exit(EXIT.ok);
      }
      throw err;
    });
  }
}

export function restoreTerminal(): void {
  if (process.stderr.isTTY) {
    try {
      process.stderr.write(TERMINAL_RESTORE);
    } catch {
      // stderr gone: nothing to restore
    }
  }
}

export interface InterruptOptions {
  /** Cleanup before exit (stop workers, hand back leases, release the lock); bounded by `graceMs`. */
  cleanup: () => Promise<void>;
  /** The line printed on stderr once cleaned up, e.g. "interrupted after 12 of 200; re-run to resume". */
  message: () => string;
  graceMs?: number;
}

/**
 * Ctrl-C / SIGTERM during a command: the terminal is restored at once, `cleanup` runs (at most
 * `graceMs`), the message is printed and the process exits 130 (SIGINT) or 143 (SIGTERM). A
 * second signal exits at once. Returns a function that uninstalls the handlers.
 */
export function onInterrupt(options: InterruptOptions): () => void {
  let interrupted = false;
  const handler = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGTERM' ? EXIT.sigterm : EXIT.sigint;
    restoreTerminal();
    if (interrupted) process.exit(code);
    interrupted = true;
    if (process.stderr.isTTY) process.stderr.write('\n');
    const grace = new Promise<void>((resolve) => setTimeout(resolve, options.graceMs ?? 5_000).unref());
    void Promise.race([options.cleanup().catch(() => undefined), grace]).then(() => {
      process.stderr.write(`${options.message()}\n`);
      process.exit(code);
    });
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}

import { setTimeout as sleep } from 'node:timers/promises';

/** Exponential backoff with equal jitter: `baseMs · 2^(attempt-1)` capped at `maxMs`, half of it random. */
export function backoffMs(attempt: number, baseMs = 500, maxMs = 30_000, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * Runs `op` until it succeeds, waiting {@link backoffMs} between failures; gives up (rethrows the
 * last error) only once `stopped()` says so. For work that must not be dropped: a storage event
 * that could not be queued (a full disk) is retried, not forgotten.
 */
export async function retryWithBackoff<T>(
  op: () => Promise<T>,
  options: {
    stopped?: () => boolean;
    /** Which failures are worth waiting for (default: all); others are rethrown at once. */
    retryable?: (err: unknown) => boolean;
    onFailure?: (err: unknown, attempt: number, delayMs: number) => void;
    baseMs?: number;
    maxMs?: number;
  } = {},
): Promise<T> {
  const stopped = options.stopped ?? (() => false);
  for (let attempt = 1; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (stopped() || (options.retryable && !options.retryable(err))) throw err;
      const delayMs = backoffMs(attempt, options.baseMs, options.maxMs);
      options.onFailure?.(err, attempt, delayMs);
      const until = Date.now() + delayMs;
      while (!stopped() && Date.now() < until) await sleep(Math.min(200, until - Date.now()));
    }
  }
}

/**
 * A fault of the machine rather than of the work: an operating-system error (`ENOSPC`, `EACCES`,
 * `EIO`, `EMFILE`…) or one whose message says so (native libraries such as LanceDB report
 * "No space left on device" or "Permission denied" as plain errors). Worth retrying the same work later.
 */
export function isMachineFault(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && /^E[A-Z]{2,}$/.test(code)) return true;
  const message = (err as { message?: unknown }).message;
  return (
    typeof message === 'string' && /no space left|disk quota|read-only file system|permission denied|input\/output error|too many open files/i.test(message)
  );
}

import { AppError, errorMessage } from '../../errors.js';

/**
 * LanceDB (a Rust library) reports file-system failures as plain errors whose text is written for
 * its developers: "Unable to created lance dataset at …: Not a directory (os error 20)", or
 * "lance error: LanceError(IO): No space left on device (os error 28), /usr/local/cargo/…/writer.rs:432:9
 * Caused by: …". At the adapter boundary they become one line naming the folder and the fix; the
 * original stays the `cause` (logged with its stack by the logger, never shown as is).
 */

interface Known {
  test: RegExp;
  /** What went wrong, in the words `ls`/`df` users know, with the errno name kept for searching and for isMachineFault. */
  reason: string;
  errno: string;
  fix: (dir: string) => string;
}

const KNOWN: Known[] = [
  {
    test: /no space left on device|os error 28\b/i,
    reason: 'no space left on device',
    errno: 'ENOSPC',
    fix: () => 'free some space on that disk, then run the command again (nothing already indexed is lost)',
  },
  {
    test: /disk quota exceeded|os error 122\b/i,
    reason: 'disk quota exceeded',
    errno: 'EDQUOT',
    fix: () => 'free some space or raise the quota, then run the command again',
  },
  {
    test: /permission denied|os error 13\b/i,
    reason: 'permission denied',
    errno: 'EACCES',
    fix: (dir) => `make ${dir} writable by this user, or choose another data directory with --home`,
  },
  {
    test: /read-only file system|os error 30\b/i,
    reason: 'read-only file system',
    errno: 'EROFS',
    fix: () => 'choose a data directory on a writable disk with --home',
  },
  {
    test: /not a directory|os error 20\b/i,
    reason: 'a file is in the way (not a directory)',
    errno: 'ENOTDIR',
    fix: (dir) => `${dir} or one of its parent folders is a file: move that file away, or choose another data directory with --home`,
  },
  {
    test: /too many open files|os error 24\b/i,
    reason: 'too many open files',
    errno: 'EMFILE',
    fix: () => 'raise the open-file limit (ulimit -n 4096), then run the command again',
  },
];

/** The innermost "Caused by:" of a Rust error chain, without source locations. */
function plainReason(message: string): string {
  const parts = message.split(/\s*Caused by:\s*/);
  const last = parts[parts.length - 1] ?? message;
  return last
    .replace(/,?\s*\/[^\s]*\.rs:\d+:\d+/g, '')
    .replace(/^lance error:\s*/i, '')
    .replace(/LanceError\((\w+)\):\s*/g, '')
    .split('\n')[0]!
    .trim();
}

/**
 * `err` from LanceDB while doing `action` (e.g. "open the feature store") on the folder `dir`, as
 * an AppError: `cannot <action> at <dir>: <reason> (<ERRNO>); <fix>`. AppErrors pass through.
 */
export function lanceDbError(err: unknown, action: string, dir: string): AppError {
  if (err instanceof AppError) return err;
  const message = errorMessage(err);
  const known = KNOWN.find((k) => k.test.test(message));
  const code = (err as { code?: unknown } | null)?.code;
  if (known) {
    return new AppError(`cannot ${action} at ${dir}: ${known.reason} (${known.errno}); ${known.fix(dir)}`, {
      cause: err,
      meta: { path: dir, errno: known.errno },
    });
  }
  if (typeof code === 'string' && /^E[A-Z]{2,}$/.test(code)) {
    // A Node file-system error (mkdir, readdir): its message already names the errno and the path.
    return new AppError(`cannot ${action} at ${dir}: ${message}`, { cause: err, meta: { path: dir, errno: code } });
  }
  return new AppError(`cannot ${action} at ${dir}: LanceDB failed (${plainReason(message)}); run \`imgsearch doctor\` to check the data directory`, {
    cause: err,
    meta: { path: dir },
  });
}

/** Runs `work`, translating what it throws with {@link lanceDbError}. */
export async function translatingLanceDbErrors<T>(action: string, dir: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw lanceDbError(err, action, dir);
  }
}

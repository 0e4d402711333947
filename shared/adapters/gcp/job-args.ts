import { AppError } from '../../errors.js';

/**
 * Job arguments travel as `--key=value` flags (what the commander-based job entry points parse).
 * Keys are checked so that a flag can never be smuggled in through a key, and values must be
 * strings (a number or object here is a caller bug better reported than stringified).
 */
export function argsToFlags(job: string, args: Record<string, string>): string[] {
  return Object.entries(args).map(([key, value]) => {
    if (!/^[a-zA-Z][a-zA-Z0-9-]*$/.test(key)) {
      throw new AppError(`Job ${job}: argument name ${JSON.stringify(key)} must be letters, digits and dashes`);
    }
    if (typeof value !== 'string') throw new AppError(`Job ${job}: argument ${key} must be a string, got ${typeof value}`);
    return `--${key}=${value}`;
  });
}

export function checkJobName(job: string): string {
  if (!/^[a-z][a-z0-9-]{0,48}[a-z0-9]$/.test(job)) {
    throw new AppError(`Invalid job name ${JSON.stringify(job)}: lowercase letters, digits and dashes, 2–50 characters`);
  }
  return job;
}

export function envList(env: Record<string, string> = {}): { name: string; value: string }[] {
  return Object.entries(env).map(([name, value]) => ({ name, value }));
}

/** protobuf Timestamp → ISO 8601 (seconds may be a number, a string or a Long). */
export function timestampIso(ts: { seconds?: unknown; nanos?: number | null } | null | undefined): string | undefined {
  if (!ts || ts.seconds === undefined || ts.seconds === null) return undefined;
  return new Date(Number(String(ts.seconds)) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6)).toISOString();
}

import type { z } from 'zod';
import { ParseError, type AppError } from './errors.js';
import { redactSecrets } from './redact.js';

/**
 * One way to turn a failed zod parse into a message and a typed error (Powertools' parser style):
 * every issue as `path: message`, its path written the way it sits in the payload (`items[2].uri`),
 * prefixed with where the validated value sits in its envelope (`at`), and the `ZodError` kept as
 * the thrown error's `cause`.
 */

export interface IssueFormat {
  /** Where the validated value sits in the payload the sender built, e.g. `['data']` for a CloudEvent's data. */
  at?: readonly PropertyKey[];
  /** Names the validated value itself, for issues about it as a whole (default `(root)`). */
  root?: string;
  /** One issue per line (`- path: message`, for settings) instead of `; `-separated. */
  list?: boolean;
}

export interface InvalidOptions extends IssueFormat {
  /** The error class to throw (default {@link ParseError}), e.g. ConfigError for settings. */
  as?: new (message: string, options: { cause?: unknown }) => AppError;
}

/** `items[2].uri`: keys joined with dots, array indices in brackets; `root` for an empty path. */
export function issuePath(path: readonly PropertyKey[], root = '(root)'): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += `${out ? '.' : ''}${String(key)}`;
  }
  return out || root;
}

/** Every issue as `path: message`: `a.b: …; items[0]: …`, or with `list` one `- a.b: …` line each. */
export function describeIssues(error: z.ZodError, format: IssueFormat = {}): string {
  const at = format.at ?? [];
  const lines = error.issues.map((issue) => `${issuePath([...at, ...issue.path], format.root)}: ${issue.message}`);
  return format.list ? lines.map((l) => `- ${l}`).join('\n') : lines.join('; ');
}

/**
 * The error for a failed parse: `${what}: a: …; b: …` (with `list`: `${what}:` then a line per
 * issue), of class `as` (ParseError by default), with the ZodError as its cause.
 */
export function invalid(what: string, error: z.ZodError, options: InvalidOptions = {}): AppError {
  const issues = describeIssues(error, options);
  return new (options.as ?? ParseError)(`${what}:${options.list ? '\n' : ' '}${issues}`, { cause: error });
}

/** `schema.parse(value)` that throws {@link invalid}`(what, …)` instead of a bare ZodError. */
export function parseWith<T extends z.ZodType>(schema: T, value: unknown, what: string, options: InvalidOptions = {}): z.output<T> {
  const result = schema.safeParse(value);
  if (!result.success) throw invalid(what, result.error, options);
  return result.data;
}

/** Names whose values never appear in a message (credentials). */
const SECRET_NAME = /PASSWORD|SECRET|TOKEN|CREDENTIAL/;

/**
 * Environment-variable problems, one line each: `- NAME is missing (hint)` or
 * `- NAME="value": message (hint)`, secrets shown as `***` (credentials inside a URL too, by
 * shared/redact.ts) and long values cut. The one formatter
 * of both configuration parsers (local `IMGSEARCH_*`, cloud entry points).
 */
export function envProblems(error: z.ZodError, env: NodeJS.ProcessEnv, hints: Readonly<Partial<Record<string, string>>>): string[] {
  return error.issues.map((issue) => {
    const key = String(issue.path[0] ?? '(environment)');
    const value = env[key];
    const safe = value === undefined || value === '' ? undefined : SECRET_NAME.test(key) ? '***' : redactSecrets(value);
    const shown = safe !== undefined && safe.length > 120 ? `${safe.slice(0, 117)}...` : safe;
    const problem = shown === undefined ? ' is missing' : `=${JSON.stringify(shown)}: ${issue.message}`;
    const hint = hints[key];
    return `- ${key}${problem}${hint ? ` (${hint})` : ''}`;
  });
}

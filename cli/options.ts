import { InvalidArgumentError, type Command } from 'commander';
import type { LocalConfig } from '../shared/config.js';
import type { z } from 'zod';
import type { OUTPUT_SCHEMAS } from '../shared/output-schemas.js';
import type { Logger } from '../shared/logger.js';
import type { LocalRuntime } from '../shared/wiring/local.js';

/**
 * Helpers every command shares. Heavy modules (the wiring: LanceDB, ONNX, fastify) are imported
 * inside the functions that need them, so `--help`, `--version` and flag errors never load them.
 */

/** A mistake in how a command was typed: exit 2, one line, and where its help is (see main.ts). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Global flags → config overrides (flags win over the environment); `flags` names the flag each variable came from. */
export async function configFrom(command: Command, extra: Record<string, string | undefined> = {}): Promise<LocalConfig> {
  const { loadConfig, unknownVariableWarnings } = await import('../shared/config.js');
  for (const warning of unknownVariableWarnings(process.env)) process.stderr.write(`imgsearch: warning: ${warning}\n`);
  const g = command.optsWithGlobals<{ home?: string; index?: string; opensearchUrl?: string; logLevel?: string; init?: boolean }>();
  const config = loadConfig({
    IMGSEARCH_HOME: g.home,
    IMGSEARCH_INDEX: g.index,
    OPENSEARCH_URL: g.opensearchUrl,
    LOG_LEVEL: g.logLevel ?? (process.env.LOG_LEVEL ? undefined : 'warn'),
    ...extra,
  });
  await checkHome(command, config.home, g.home !== undefined && command.getOptionValueSourceWithGlobals('home') === 'cli', g.init === true);
  return config;
}

/**
 * `--home <dir>` typed on the command line must exist (a typo must not start an empty data
 * directory) unless `--init` says to create it. The default `.imgsearch` and IMGSEARCH_HOME are
 * created on first use, as before.
 */
async function checkHome(command: Command, home: string, typed: boolean, init: boolean): Promise<void> {
  if (!typed || init) return;
  const { promises: fs } = await import('node:fs');
  const st = await fs.stat(home).catch(() => null);
  if (st?.isDirectory()) return;
  if (st) throw new UsageError(`--home ${home} is not a folder`);
  throw new UsageError(`--home ${home} does not exist; add --init to create a new data directory there`);
}

/** How this process was invoked, for the writer lock's holder line. */
export function commandLine(): string {
  return ['imgsearch', ...process.argv.slice(2)].join(' ');
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

type Outputs = { [K in keyof typeof OUTPUT_SCHEMAS]: z.input<(typeof OUTPUT_SCHEMAS)[K]> };
type WithoutVersion<T> = T extends unknown ? Omit<T, 'schemaVersion'> : never;

/**
 * Prints a `--json` output: `{ schemaVersion, ...value }`, typed by its schema in
 * shared/output-schemas.ts (the README lists them; tests parse real output with them).
 */
export async function printOutput<K extends keyof Outputs>(_kind: K, value: WithoutVersion<Outputs[K]>): Promise<void> {
  const { OUTPUT_SCHEMA_VERSION } = await import('../shared/output-schemas.js');
  printJson({ schemaVersion: OUTPUT_SCHEMA_VERSION, ...value });
}

/** Opens the local runtime for one command and always closes it; `writer` takes the data directory's writer lock. */
export async function withRuntime<T>(command: Command, work: (runtime: LocalRuntime) => Promise<T>, options: { writer?: boolean } = {}): Promise<T> {
  const runtime = await openRuntime(command, options);
  try {
    return await work(runtime);
  } finally {
    await runtime.close();
  }
}

export async function openRuntime(command: Command, options: { writer?: boolean; config?: LocalConfig; logger?: Logger } = {}): Promise<LocalRuntime> {
  const config = options.config ?? (await configFrom(command));
  const { openLocalRuntime } = await import('../shared/wiring/local.js');
  const runtime = await openLocalRuntime(config, {
    ...(options.writer ? { writer: { command: commandLine() } } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  if (runtime.lock) releaseOnExit(runtime);
  return runtime;
}

/** A process ended by a signal or process.exit still deletes its lock (synchronously, on 'exit'). */
function releaseOnExit(runtime: LocalRuntime): void {
  const lock = runtime.lock!;
  const onExit = () => lock.releaseSync();
  process.once('exit', onExit);
}

export function parseIntIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

export function parseNumberIn(min: number, max: number, { exclusive = false } = {}) {
  return (value: string): number => {
    const n = Number(value);
    const inside = exclusive ? n > min && n < max : n >= min && n <= max;
    if (value.trim() === '' || !Number.isFinite(n) || !inside)
      throw new InvalidArgumentError(`expected a number ${exclusive ? 'strictly ' : ''}between ${min} and ${max}`);
    return n;
  };
}

export function parseNonEmpty(what: string) {
  return (value: string): string => {
    if (value.trim() === '') throw new InvalidArgumentError(`${what} must not be empty`);
    return value;
  };
}

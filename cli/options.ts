import type { Command } from 'commander';
import { loadConfig, type LocalConfig } from '../shared/config.js';
import { openLocalRuntime, type LocalRuntime } from '../shared/wiring/local.js';

/** Global flags → config overrides (flags win over the environment). */
export function configFrom(command: Command, extra: Record<string, string | undefined> = {}): LocalConfig {
  const g = command.optsWithGlobals<{ home?: string; index?: string; opensearchUrl?: string; logLevel?: string }>();
  return loadConfig({
    IMGSEARCH_HOME: g.home,
    IMGSEARCH_INDEX: g.index,
    OPENSEARCH_URL: g.opensearchUrl,
    LOG_LEVEL: g.logLevel ?? (process.env.LOG_LEVEL ? undefined : 'warn'),
    ...extra,
  });
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Opens the local runtime for one command and always closes it. */
export async function withRuntime<T>(command: Command, work: (runtime: LocalRuntime) => Promise<T>): Promise<T> {
  const runtime = await openLocalRuntime(configFrom(command));
  try {
    return await work(runtime);
  } finally {
    await runtime.close();
  }
}

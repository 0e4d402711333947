import { pino, type Logger } from 'pino';

/**
 * Structured JSON logs, one object per line, in the shape Cloud Logging understands:
 * `severity` instead of pino's numeric level, `message` instead of `msg`, and the trace id under
 * `logging.googleapis.com/trace` when a request carries one.
 */
const severityByLevel: Record<string, string> = {
  trace: 'DEBUG',
  debug: 'DEBUG',
  info: 'INFO',
  warn: 'WARNING',
  error: 'ERROR',
  fatal: 'CRITICAL',
};

export type { Logger };

/** The level every logger starts at: LOG_LEVEL, else silent under the test runner, else info. */
export function defaultLogLevel(): string {
  return process.env.LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info');
}

/**
 * Errors are logged as objects under `err`: type, message, stack and the `cause` chain
 * (pino's `errWithCause` serializer), never only their message. Log `{ err }`, not `errorMessage(err)`.
 */
export const errorSerializers = { err: pino.stdSerializers.errWithCause };

export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream; name?: string } = {}): Logger {
  const level = options.level ?? defaultLogLevel();
  return pino(
    {
      level,
      name: options.name,
      messageKey: 'message',
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
      serializers: errorSerializers,
      formatters: {
        level(label: string) {
          return { severity: severityByLevel[label] ?? 'DEFAULT' };
        },
      },
    },
    // CLI output goes to stdout; logs go to stderr in the CLI so that `--json` output stays clean.
    (options.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}

/** Child logger carrying a Cloud Trace id (from `traceparent` / `X-Cloud-Trace-Context`). */
export function withTrace(logger: Logger, traceHeader: string | undefined, projectId?: string): Logger {
  if (!traceHeader) return logger;
  const traceId = traceHeader.includes('-') ? traceHeader.split('-')[1] : traceHeader.split('/')[0];
  if (!traceId) return logger;
  const trace = projectId ? `projects/${projectId}/traces/${traceId}` : traceId;
  return logger.child({ 'logging.googleapis.com/trace': trace });
}

export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * Errors of the whole project. Each class has a stable `code`, forwards `cause`, and carries only
 * safe metadata (never credentials). Handlers turn expected failures into explicit statuses and
 * throw only for faults worth a retry.
 */
export class AppError extends Error {
  readonly code: string = 'ISS_ERROR';
  readonly meta: Record<string, unknown>;
  constructor(message: string, options: { cause?: unknown; meta?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.meta = options.meta ?? {};
  }
}

/** Configuration is missing or invalid; the message names each variable and the fix. */
export class ConfigError extends AppError {
  override readonly code = 'CONFIG_INVALID';
}

/** A payload (event, message, request) does not match its schema. */
export class ParseError extends AppError {
  override readonly code = 'PARSE_ERROR';
}

/** An image cannot be used: the reason is one of {@link RejectReason}. Never retried. */
export class ImageRejectedError extends AppError {
  override readonly code = 'IMAGE_REJECTED';
  constructor(
    readonly reason: RejectReason,
    readonly detail: string,
    options: { cause?: unknown } = {},
  ) {
    super(`${reason}: ${detail}`, options);
  }
}

export type RejectReason = 'empty-file' | 'too-large' | 'too-many-pixels' | 'unsupported-format' | 'corrupt-image' | 'not-an-image' | 'invalid-event';

/** The object changed (or vanished) since the event was emitted: a newer event will follow. */
export class GenerationMismatchError extends AppError {
  override readonly code = 'GENERATION_MISMATCH';
}

/**
 * A state file of the data directory (index alias, catalog, model registry pointer or record) is
 * truncated or not what it should hold: the message names the file and what to do about it.
 */
export class CorruptStateError extends AppError {
  override readonly code = 'STATE_CORRUPT';
}

export class NotFoundError extends AppError {
  override readonly code = 'NOT_FOUND';
}

/** A vector of one model version was written into an index built for another. */
export class ModelMismatchError extends AppError {
  override readonly code = 'MODEL_MISMATCH';
}

/** A transient fault of an external system (network, 429, 5xx): the caller should retry. */
export class TransientError extends AppError {
  override readonly code = 'TRANSIENT';
}

/** The active model cannot answer this kind of query (e.g. text search without a text tower). */
export class CapabilityError extends AppError {
  override readonly code = 'CAPABILITY_MISSING';
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

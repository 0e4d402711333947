import type { z } from 'zod';
import { AppError, ParseError } from '../errors.js';
import { describeIssues } from '../validation.js';

/** The body is larger than this route accepts: 413, before (or while) it is read. */
export class PayloadTooLargeError extends AppError {
  override readonly code = 'PAYLOAD_TOO_LARGE';
  readonly statusCode = 413;
}

/** A request's query or body checked with `schema`; a ParseError (400) naming each bad field otherwise. */
export function parseRequest<T extends z.ZodTypeAny>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const message = describeIssues(r.error, { root: 'request' });
  // Stryker disable next-line ObjectLiteral: the cause is kept by convention (errors.ts); a 400 is neither logged nor answered with it, so nothing reads it
  throw new ParseError(message, { cause: r.error });
}

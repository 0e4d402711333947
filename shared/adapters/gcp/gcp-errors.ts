import { TransientError } from '../../errors.js';

/**
 * Status of a failed Google API call. The JSON (HTTP) clients put the HTTP status in `code`;
 * the gRPC (gax) clients put the gRPC status number in `code`. Both are read here so that the
 * adapters can turn "not found" / "precondition failed" into the project's own errors.
 */
export function httpStatusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : typeof code === 'string' && /^\d+$/.test(code) ? Number(code) : undefined;
}

/** gRPC status codes used by the adapters (google.rpc.Code). */
export const GrpcCode = {
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
} as const;

/** 429 and 5xx from GCS mean "try again later": the caller's retry policy (Pub/Sub) handles it. */
export function isTransientHttp(status: number | undefined): boolean {
  return status === 408 || status === 429 || (status !== undefined && status >= 500 && status < 600);
}

/** Re-throws transient faults as {@link TransientError} (cause kept), anything else unchanged. */
export function rethrowGcsError(err: unknown, what: string, meta: Record<string, unknown>): never {
  const status = httpStatusOf(err);
  if (isTransientHttp(status)) throw new TransientError(`${what}: GCS answered ${status}`, { cause: err, meta: { ...meta, status } });
  throw err;
}

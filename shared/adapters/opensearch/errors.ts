import { errors as osErrors } from '@opensearch-project/opensearch';
import { AppError, TransientError, errorMessage } from '../../errors.js';
import { redactSecrets as redact } from '../../redact.js';

/** A request OpenSearch refused for a reason a retry will not fix (bad mapping, missing index…). */
export class OpenSearchRequestError extends AppError {
  override readonly code = 'OPENSEARCH_REQUEST_FAILED';
}

/** Some documents of a bulk were refused for good (e.g. mapper_parsing_exception). */
export class OpenSearchBulkItemError extends AppError {
  override readonly code = 'OPENSEARCH_BULK_ITEMS_FAILED';
  constructor(
    readonly failures: { id: string; status: number; type: string; reason: string }[],
    action: string,
    index: string,
  ) {
    const shown = failures
      .slice(0, 5)
      .map((f) => `${f.id} (${f.status} ${f.type}: ${f.reason})`)
      .join('; ');
    const more = failures.length > 5 ? ` and ${failures.length - 5} more` : '';
    super(redact(`OpenSearch refused ${failures.length} ${action}(s) in ${index}: ${shown}${more}`), {
      meta: { index, ids: failures.map((f) => f.id) },
    });
  }
}

export interface FailureInfo {
  retryable: boolean;
  status?: number;
  type?: string;
  reason: string;
}

/** Classifies a driver error: 429, 5xx, connection faults and timeouts are worth a retry. */
export function describeFailure(err: unknown): FailureInfo {
  if (err instanceof osErrors.ResponseError) {
    const status = err.statusCode;
    const body = err.body as { error?: { type?: string; reason?: string } | string } | undefined;
    const type = typeof body?.error === 'object' ? body.error.type : undefined;
    const reason = typeof body?.error === 'object' ? (body.error.reason ?? err.message) : err.message;
    return { retryable: status === 429 || status >= 500, status, type, reason: redact(String(reason)) };
  }
  if (err instanceof osErrors.ConnectionError || err instanceof osErrors.TimeoutError || err instanceof osErrors.NoLivingConnectionsError) {
    return { retryable: true, type: err.name, reason: redact(err.message) };
  }
  return { retryable: false, type: err instanceof Error ? err.name : undefined, reason: redact(errorMessage(err)) };
}

/**
 * Turns a driver error into one of ours. The driver's error keeps the whole request (headers
 * included) in `meta`, so it is never forwarded as `cause`: only a redacted summary is.
 */
export function toAdapterError(err: unknown, what: string, attempts = 1): AppError {
  if (err instanceof AppError) return err;
  const f = describeFailure(err);
  const detail = `${f.status ? `${f.status} ` : ''}${f.type ? `${f.type}: ` : ''}${f.reason}`;
  const meta = { status: f.status, type: f.type, attempts };
  const cause = new Error(detail);
  return f.retryable
    ? new TransientError(redact(`OpenSearch ${what} failed after ${attempts} attempt(s): ${detail}`), { cause, meta })
    : new OpenSearchRequestError(redact(`OpenSearch ${what} failed: ${detail}`), { cause, meta });
}

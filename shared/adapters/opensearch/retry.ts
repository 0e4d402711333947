import { setTimeout as sleep } from 'node:timers/promises';
import { backoffMs } from '../../backoff.js';
import type { Logger } from '../../logger.js';
import { describeFailure, toAdapterError } from './errors.js';

export interface RetryPolicy {
  maxRetries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** The project's one backoff (equal jitter), counted from retry 0: `backoffBaseMs · 2^attempt`, capped. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  return backoffMs(attempt + 1, policy.backoffBaseMs, policy.backoffMaxMs, random);
}

/**
 * Runs one request, retrying 429 / 5xx / connection faults with backoff. Any other failure, or
 * the last retryable one, becomes an adapter error (TransientError when worth a later retry).
 */
export async function withRetry<T>(what: string, policy: RetryPolicy, logger: Logger, op: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      const failure = describeFailure(err);
      if (!failure.retryable || attempt >= policy.maxRetries) throw toAdapterError(err, what, attempt + 1);
      const delayMs = backoffDelay(attempt, policy);
      logger.warn({ what, attempt: attempt + 1, status: failure.status, type: failure.type, delayMs }, 'OpenSearch request failed; retrying');
      await sleep(delayMs);
    }
  }
}

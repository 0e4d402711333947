import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../logger.js';
import { describeFailure, toAdapterError } from './errors.js';

export interface RetryPolicy {
  maxRetries: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** Equal jitter: half the exponential step is certain, half random, so retries spread out. */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const cap = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * 2 ** attempt);
  return Math.round(cap / 2 + random() * (cap / 2));
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

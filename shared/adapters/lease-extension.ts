import { AppError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { EventBus } from '../ports/event-bus.js';

/**
 * Runs `work()` while keeping the messages `ackIds` leased: every `seconds / 2` the lease is
 * extended to `seconds` again, so a long batch (decoding and embedding hundreds of images) is not
 * redelivered to another worker half-way. Works with any {@link EventBus}.
 *
 * A failed extension is logged, not thrown: the work may still finish within the current lease,
 * and if it does not, at-least-once delivery makes the redelivery harmless (upserts are idempotent).
 * Extensions never overlap (each waits for the previous one), and none runs after `work()` ends.
 */
export async function withLeaseExtension<T>(
  bus: Pick<EventBus, 'extendDeadline'>,
  topic: string,
  ackIds: string[],
  seconds: number,
  work: () => Promise<T>,
  options: { logger?: Logger } = {},
): Promise<T> {
  if (!Number.isFinite(seconds) || seconds < 2 || seconds > 600) {
    throw new AppError(`Lease extension must be between 2 and 600 seconds, got ${seconds}`);
  }
  if (ackIds.length === 0) return work();
  const logger = options.logger ?? silentLogger;
  const intervalMs = (seconds / 2) * 1000;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> = Promise.resolve();

  const schedule = (): void => {
    timer = setTimeout(() => {
      inFlight = bus
        .extendDeadline(topic, ackIds, seconds)
        .catch((err: unknown) => {
          logger.warn({ topic, count: ackIds.length, err }, 'lease extension failed');
        })
        .finally(() => {
          if (!stopped) schedule();
        });
    }, intervalMs);
    // A pending extension must not keep a finished process alive.
    timer.unref?.();
  };

  schedule();
  try {
    return await work();
  } finally {
    stopped = true;
    clearTimeout(timer);
    // Let a running extension settle so that an ack right after this cannot race it.
    await inFlight;
  }
}

import type { PubSub, v1 } from '@google-cloud/pubsub';
import { z } from 'zod';
import { AppError } from '../shared/errors.js';

/**
 * "Is anything waiting in the image-events subscription?" — asked by dispatchEmbed every minute,
 * so it must be cheap and must not disturb the messages.
 *
 * Default: the Cloud Monitoring metric `pubsub.googleapis.com/subscription/num_undelivered_messages`
 * (one REST read; gives a count; needs only `monitoring.viewer`, which is what infra grants the
 * dispatcher). It lags one to three minutes, which a one-minute scheduler tick absorbs.
 * Alternative ({@link PullBacklogProbe}): a synchronous pull of one message released at once with
 * `modifyAckDeadline 0`; exact and immediate, but it needs `pubsub.subscriber` on the subscription
 * and counts a delivery attempt against that message (`maxDeliveryAttempts`), which is why it is
 * not the default.
 */
export interface BacklogProbe {
  /** Undelivered messages (a lower bound: the pull probe answers 0 or 1). */
  undelivered(): Promise<number>;
}

type AuthRequest = Pick<PubSub['auth'], 'request'>;

const timeSeriesSchema = z.object({
  timeSeries: z
    .array(
      z.object({
        points: z.array(
          z.object({
            interval: z.object({ endTime: z.string() }),
            value: z.object({ int64Value: z.union([z.string(), z.number()]).optional(), doubleValue: z.number().optional() }),
          }),
        ),
      }),
    )
    .optional(),
});

export class MonitoringBacklogProbe implements BacklogProbe {
  constructor(
    private readonly options: {
      /** `pubsub.auth` (a GoogleAuth): signs the REST call with the function's identity. */
      auth: AuthRequest;
      projectId: string;
      /** Subscription id (not the full name). */
      subscriptionId: string;
      /** How far back to look for the latest sample. Default 5 minutes. */
      windowSeconds?: number;
      now?: () => number;
    },
  ) {}

  async undelivered(): Promise<number> {
    const now = this.options.now?.() ?? Date.now();
    const window = (this.options.windowSeconds ?? 300) * 1000;
    const id = this.options.subscriptionId.split('/').pop()!;
    const response = await this.options.auth.request<unknown>({
      url: `https://monitoring.googleapis.com/v3/projects/${this.options.projectId}/timeSeries`,
      params: {
        filter: `metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" AND resource.labels.subscription_id="${id}"`,
        'interval.startTime': new Date(now - window).toISOString(),
        'interval.endTime': new Date(now).toISOString(),
      },
    });
    const parsed = timeSeriesSchema.safeParse(response.data);
    if (!parsed.success) throw new AppError(`Unexpected Cloud Monitoring answer for ${id}: ${parsed.error.message}`);
    // Points come newest first; no series at all means nothing was ever published or sampled.
    let latest: { at: string; value: number } | null = null;
    for (const series of parsed.data.timeSeries ?? []) {
      const point = series.points[0];
      if (!point) continue;
      const value = Number(point.value.int64Value ?? point.value.doubleValue ?? 0);
      if (!latest || point.interval.endTime > latest.at) latest = { at: point.interval.endTime, value };
    }
    return latest?.value ?? 0;
  }
}

export class PullBacklogProbe implements BacklogProbe {
  constructor(private readonly options: { subscriber: Pick<v1.SubscriberClient, 'pull' | 'modifyAckDeadline'>; subscription: string; timeoutMs?: number }) {}

  async undelivered(): Promise<number> {
    const { subscriber, subscription } = this.options;
    let received;
    try {
      [{ receivedMessages: received }] = await subscriber.pull({ subscription, maxMessages: 1 }, { timeout: this.options.timeoutMs ?? 5000 });
    } catch (err) {
      // DEADLINE_EXCEEDED: nothing arrived in time, i.e. no backlog.
      if ((err as { code?: unknown }).code === 4) return 0;
      throw err;
    }
    const ackIds = (received ?? []).map((m) => m.ackId ?? '').filter(Boolean);
    // Release at once so the embed job gets the message without waiting out a lease.
    if (ackIds.length > 0) await subscriber.modifyAckDeadline({ subscription, ackIds, ackDeadlineSeconds: 0 });
    return ackIds.length;
  }
}

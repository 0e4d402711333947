import type { MonitorEvent } from '../services/monitoring.js';

/**
 * Where prediction-monitoring events go (shared/services/monitoring.ts): one per search answered,
 * per click accepted, per image that became searchable.
 *
 * `append` must never slow or fail the caller: it only queues the event (or hands it to a logger)
 * and returns; a write that fails later is the adapter's to log and count, never the search's.
 * `flush` writes what is queued (close, tests, `monitor` after a run).
 */
export interface SearchEventSink {
  append(event: MonitorEvent): void;
  flush(): Promise<void>;
}

/** Events read back for a time range (`from` ≤ at < `to`), oldest files first; unreadable lines are skipped, never fatal. */
export interface SearchEventSource {
  read(range: { from: Date; to: Date }): AsyncIterable<MonitorEvent>;
}

/** For callers without monitoring (tests, one-off tools): drops every event. */
export const noSearchEvents: SearchEventSink = {
  append: () => undefined,
  flush: () => Promise.resolve(),
};

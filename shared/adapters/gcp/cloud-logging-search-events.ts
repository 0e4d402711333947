import type { Logger } from '../../logger.js';
import type { SearchEventSink } from '../../ports/search-events.js';
import { MONITOR_EVENT_MESSAGES, type MonitorEvent } from '../../services/monitoring.js';

/**
 * Monitoring events as structured log entries: one JSON line per event on stdout, in Cloud
 * Logging's shape (the logger is `cloudLogger`, Google's pino config: `severity`, `message`, …).
 * On Cloud Run each line becomes a LogEntry whose `jsonPayload` holds the event's fields
 * (`jsonPayload.monitor = "search"`, `jsonPayload.latencyMs.total`, `jsonPayload.zeroResult`, …):
 * the log-based metrics of infra/components/monitoring.ts count and measure exactly these fields
 * (its tests feed this adapter's real output through their filters).
 *
 * The logger must be at level `info` or lower whatever LOG_LEVEL says (the wiring makes one for
 * it): an event dropped by a log level is a search the dashboard never counts. Writing a line is
 * synchronous and quick (pino), and a failure is swallowed: it never reaches the search.
 */
export class CloudLoggingSearchEvents implements SearchEventSink {
  constructor(private readonly logger: Logger) {}

  append(event: MonitorEvent): void {
    try {
      this.logger.info(event, MONITOR_EVENT_MESSAGES[event.monitor]);
    } catch {
      // A broken stdout must not fail a search; the platform shows the container's own errors.
    }
  }

  flush(): Promise<void> {
    return new Promise((resolve) => {
      const flush = (this.logger as { flush?: (cb?: (err?: Error) => void) => void }).flush;
      if (typeof flush !== 'function') return resolve();
      try {
        flush.call(this.logger, () => resolve());
      } catch {
        resolve();
      }
    });
  }
}

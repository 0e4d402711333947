import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ParseError } from '../errors.js';
import { OUTPUT_SCHEMA_VERSION, type MonitorOutput } from '../output-schemas.js';
import type { SearchEventSink, SearchEventSource } from '../ports/search-events.js';
import { monitorFigures, parseSince } from '../services/monitoring.js';
import { describeIssues } from '../validation.js';

export interface MonitorRouteDeps {
  /** Where the events are read (locally the runtime's JsonlSearchEventLog); flushed first when it can be, so the answer includes this process's latest searches. */
  events: SearchEventSource & Partial<Pick<SearchEventSink, 'flush'>>;
  now?: () => Date;
}

const monitorQuerySchema = z.strictObject({
  since: z.string().max(16).default('24h'),
  by: z.enum(['hour', 'day']).default('hour'),
  lowScore: z.coerce.number().min(-1).max(1).default(0.5),
});

/** Prediction-monitoring figures of `imgsearch monitor --json` from its query: throws ParseError (400) naming the bad parameter. */
export async function monitorOutput(deps: MonitorRouteDeps, query: unknown): Promise<MonitorOutput> {
  const parsed = monitorQuerySchema.safeParse(query ?? {});
  if (!parsed.success) throw new ParseError(describeIssues(parsed.error, { root: 'request' }), { cause: parsed.error });
  const { since, by, lowScore } = parsed.data;
  const sinceMs = parseSince(since);
  await deps.events.flush?.();
  const figures = await monitorFigures(deps.events, { sinceMs, by, lowScoreThreshold: lowScore, now: deps.now?.() });
  return { schemaVersion: OUTPUT_SCHEMA_VERSION, ...figures };
}

/**
 * `GET /api/monitor?since=24h&by=hour|day&lowScore=0.5`: the figures `imgsearch monitor --json`
 * prints (shared/output-schemas.ts monitorOutputSchema), for the page's charts. Bad parameters
 * answer 400 with the parameter named (the app's error handler maps ParseError).
 */
export function registerMonitorRoutes(app: FastifyInstance, deps: MonitorRouteDeps): void {
  app.get('/api/monitor', async (req) => monitorOutput(deps, req.query));
}

import type { FastifyInstance } from 'fastify';
import { buildSearchApp, type SearchAppDeps, type StatusResponse } from '../../shared/http/search-app.js';
import { silentLogger } from '../../shared/logger.js';

/**
 * The search app with nothing indexed and no search to run (each search throws): for tests of its
 * other routes — monitoring, drift — and of the page views they feed. `over` replaces any dependency.
 */
export function idleSearchApp(
  over: Partial<SearchAppDeps> & Pick<SearchAppDeps, 'webDir'>,
  model: StatusResponse['model'] = { version: 'base-1', dimension: 4, hasTextTower: false, name: 'm' },
): Promise<FastifyInstance> {
  const never = async (): Promise<never> => {
    throw new Error('not used');
  };
  const status = async (): Promise<StatusResponse> => ({
    indexed: 0,
    pending: 0,
    queues: {},
    rejected: { count: 0, byReason: {}, items: [] },
    deadLettered: { count: 0, items: [] },
    model,
    index: null,
    ann: null,
    ignored: { count: 0, byReason: {}, items: [] },
    faults: [],
    asOf: new Date().toISOString(),
  });
  return buildSearchApp({
    search: { byImage: never, similarTo: never, byText: never },
    status,
    getDocument: async () => null,
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    ...over,
  });
}

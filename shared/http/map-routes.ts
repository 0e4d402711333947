import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { CollectionMap } from '../services/collection-map.js';
import { MAP_K_MAX, MAP_K_MIN, MAP_SAMPLE_DEFAULT, MAP_SAMPLE_MAX, MapBusyError, snapMapSample } from '../services/collection-map-limits.js';
import { parseRequest } from './request.js';

/** What the map routes need: the map service (shared/services/collection-map.ts). */
export interface MapRouteDeps {
  /** `close` (when given) runs when the app closes: it stops the map workers. */
  map: Pick<CollectionMap, 'map' | 'locate'> & Partial<Pick<CollectionMap, 'close'>>;
  /** Map requests per client per minute (the search app gives its searches' limit; absent: only the app's global limit). */
  perClientPerMinute?: number;
}

/** At most this many ids in one locate call (the search API's largest k). */
export const MAX_LOCATE_IDS = 200;

const mapQuerySchema = z.object({
  sample: z.coerce
    .number({ error: `sample must be a number of images, 1..${MAP_SAMPLE_MAX}` })
    .int({ error: 'sample must be a whole number of images' })
    .min(1, { error: 'sample must be at least 1' })
    .max(MAP_SAMPLE_MAX, { error: `sample must be at most ${MAP_SAMPLE_MAX} (a larger map is not computed on request)` })
    .default(MAP_SAMPLE_DEFAULT)
    .transform(snapMapSample),
  color: z.enum(['cluster', 'label'], { error: 'color must be cluster or label' }).default('cluster'),
  k: z
    .string()
    .default('auto')
    .refine((v) => v === 'auto' || (/^\d+$/.test(v) && Number(v) >= MAP_K_MIN && Number(v) <= MAP_K_MAX), {
      error: `k must be auto or a whole number ${MAP_K_MIN}..${MAP_K_MAX}`,
    })
    .transform((v) => (v === 'auto' ? ('auto' as const) : Number(v))),
  method: z.enum(['pca', 'umap'], { error: 'method must be pca or umap' }).optional(),
});

const idSchema = z.string().min(1).max(512);
const locateQuerySchema = z.object({
  queryId: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'queryId must be the queryId of a search answer' })
    .optional(),
  ids: z
    .string()
    .default('')
    .transform((v) => (v === '' ? [] : v.split(',')))
    .pipe(
      z
        .array(idSchema, { error: 'ids must be a comma-separated list of image ids' })
        .max(MAX_LOCATE_IDS, { error: `ids: at most ${MAX_LOCATE_IDS} ids at a time` }),
    ),
});

/**
 * `GET /api/map` and `GET /api/map/locate` (README, "The collection map").
 *
 * `/api/map?sample=N&color=cluster|label&k=auto|2..12&method=pca|umap`: the map of a sample of the
 * live index (default 10,000 images, at most 20,000; a size is rounded up to one of
 * 1,000, 2,000, 5,000, 10,000 or 20,000, so that each size's map is cached and reused). One map is computed at a time: a
 * request for another one meanwhile is a 503 with Retry-After; the route is rate limited per client
 * like searches. The first call for a sample waits for the
 * PCA view; UMAP is computed after it in the background, and later calls answer with it once it is
 * ready (`method` says which one answered). `method=pca` asks for the PCA view; `method=umap` for
 * the UMAP view: while it is still being computed the answer is 202 with `Retry-After` (seconds)
 * and `{status: 'computing', method: 'umap', progress, retryAfterSeconds}`. Every point carries both
 * its cluster and its label; `color` is the page's choice of which to paint and does not change
 * the answer. `k` picks the k-means partition the clusters come from (auto: the best silhouette).
 *
 * `/api/map/locate?queryId=…&ids=a,b,c`: where a search's query and results lie on the map last
 * served.
 */
export function registerMapRoutes(app: FastifyInstance, deps: MapRouteDeps): void {
  app.addHook('onClose', async () => deps.map.close?.());
  const config = deps.perClientPerMinute === undefined ? undefined : { rateLimit: { max: deps.perClientPerMinute, timeWindow: 60_000 } };
  app.get('/api/map', { config }, async (req, reply) => {
    const q = parseRequest(mapQuerySchema, req.query);
    let result;
    try {
      result = await deps.map.map({ sample: q.sample, k: q.k, method: q.method });
    } catch (err) {
      if (!(err instanceof MapBusyError)) throw err;
      return reply.status(503).header('retry-after', String(err.retryAfterSeconds)).send({ error: err.message, code: err.code });
    }
    if (result.status === 'computing') {
      return reply
        .status(202)
        .header('retry-after', String(result.retryAfterSeconds))
        .send({ status: result.status, method: result.method, progress: result.progress, retryAfterSeconds: result.retryAfterSeconds });
    }
    return result.map;
  });

  app.get('/api/map/locate', { config }, async (req) => {
    const q = parseRequest(locateQuerySchema, req.query);
    return deps.map.locate({ queryId: q.queryId, ids: q.ids });
  });
}

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError } from '../../shared/errors.js';
import { registerMapRoutes, type MapRouteDeps } from '../../shared/http/map-routes.js';
import { buildSearchApp } from '../../shared/http/search-app.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument, VectorIndex } from '../../shared/ports/vector-index.js';
import { CollectionMap, MapBusyError, RecentQueryVectors, type MapRequest, type MapResult } from '../../shared/services/collection-map.js';
import type { SearchResponse } from '../../shared/services/search-service.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * The map routes inside the real search app (its error handler turns ParseError into 400 with the
 * message, NotFoundError into 404): what reaches the map service, what is refused and why, the 202
 * while UMAP computes, and a search answered while a map is being computed.
 */
let webDir: string;
beforeAll(async () => {
  webDir = await mkdtemp(join(tmpdir(), 'iss-map-routes-'));
  await writeFile(join(webDir, 'index.html'), '<!doctype html><title>page</title>');
});
afterAll(() => rm(webDir, { recursive: true, force: true }));

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

const answer: SearchResponse = { modelVersion: 'm1', query: { kind: 'similar', value: 'x' }, results: [] };

async function appWith(map: MapRouteDeps['map']): Promise<FastifyInstance> {
  const app = await buildSearchApp({
    search: { byImage: async () => answer, similarTo: async () => answer, byText: async () => answer },
    status: async () => ({ indexed: 0 }) as never,
    getDocument: async () => null,
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir,
  });
  registerMapRoutes(app, { map });
  apps.push(app);
  return app;
}

function recordingMap(
  result: MapResult = { status: 'ready', map: { points: [], k: 2, silhouette: [], method: 'pca', total: 0, sample: 0, computedAt: 'now' } },
) {
  const calls: { map: MapRequest[]; locate: { queryId?: string; ids: string[] }[]; closed: number } = { map: [], locate: [], closed: 0 };
  const map: MapRouteDeps['map'] = {
    map: async (req) => {
      calls.map.push(req);
      return result;
    },
    locate: async (req) => {
      calls.locate.push(req);
      return { query: null, results: [] };
    },
    close: async () => {
      calls.closed++;
    },
  };
  return { map, calls };
}

describe('GET /api/map', () => {
  it('defaults: sample 10000, k auto, method chosen by the service', async () => {
    const { map, calls } = recordingMap();
    const res = await (await appWith(map)).inject('/api/map');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ k: 2, method: 'pca', points: [] });
    expect(calls.map).toEqual([{ sample: 10000, k: 'auto', method: undefined }]);
  });

  it('passes sample, k and method through; color is accepted', async () => {
    const { map, calls } = recordingMap();
    const app = await appWith(map);
    expect((await app.inject('/api/map?sample=20000&k=7&method=umap&color=label')).statusCode).toBe(200);
    expect((await app.inject('/api/map?sample=5000&k=auto&method=pca&color=cluster')).statusCode).toBe(200);
    expect(calls.map).toEqual([
      { sample: 20000, k: 7, method: 'umap' },
      { sample: 5000, k: 'auto', method: 'pca' },
    ]);
  });

  it('snaps sample up to one of a few fixed sizes, so varying it cannot defeat the map cache (security review finding 2)', async () => {
    const { map, calls } = recordingMap();
    const app = await appWith(map);
    for (const sample of [1, 1000, 1001, 1999, 2001, 4999, 5001, 10000, 10001, 19999]) {
      expect((await app.inject(`/api/map?sample=${sample}`)).statusCode).toBe(200);
    }
    expect(calls.map.map((c) => c.sample)).toEqual([1000, 1000, 2000, 2000, 5000, 5000, 10000, 10000, 20000, 20000]);
  });

  it('another map being built: 503 with Retry-After, saying to retry', async () => {
    const app = await appWith({
      map: async () => {
        throw new MapBusyError(7);
      },
      locate: async () => ({ query: null, results: [] }),
    });
    const res = await app.inject('/api/map?sample=2000');
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('7');
    expect(res.json().error).toMatch(/another collection map is being computed; retry in 7 s/);
  });

  it('is rate limited per client like searches: beyond the limit a 429 that never reaches the map service', async () => {
    const { map, calls } = recordingMap();
    const app = await buildSearchApp({
      search: { byImage: async () => answer, similarTo: async () => answer, byText: async () => answer },
      status: async () => ({ indexed: 0 }) as never,
      getDocument: async () => null,
      readObject: async () => Buffer.alloc(0),
      logger: silentLogger,
      webDir,
      map,
      limits: { rateLimit: { searchesPerMinute: 3, requestsPerMinute: 1000 } },
    });
    apps.push(app);
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await app.inject('/api/map')).statusCode);
    expect(codes).toEqual([200, 200, 200, 429, 429]);
    expect(calls.map).toHaveLength(3);
  });

  it.each([
    ['sample=0', /sample must be at least 1/],
    ['sample=20001', /sample must be at most 20000/],
    ['sample=abc', /sample must be a number of images/],
    ['sample=2.5', /sample must be a whole number/],
    ['k=1', /k must be auto or a whole number 2\.\.12/],
    ['k=13', /k must be auto or a whole number 2\.\.12/],
    ['k=four', /k must be auto or a whole number 2\.\.12/],
    ['color=red', /color must be cluster or label/],
    ['method=tsne', /method must be pca or umap/],
  ])('?%s is a 400 saying what is allowed', async (query, message) => {
    const { map, calls } = recordingMap();
    const res = await (await appWith(map)).inject(`/api/map?${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('PARSE_ERROR');
    expect(res.json().error).toMatch(message);
    expect(calls.map).toEqual([]);
  });

  it('UMAP still computing: 202 with Retry-After and the progress', async () => {
    const { map } = recordingMap({ status: 'computing', method: 'umap', progress: 0.25, retryAfterSeconds: 6 });
    const res = await (await appWith(map)).inject('/api/map?method=umap');
    expect(res.statusCode).toBe(202);
    expect(res.headers['retry-after']).toBe('6');
    expect(res.json()).toEqual({ status: 'computing', method: 'umap', progress: 0.25, retryAfterSeconds: 6 });
  });

  it('nothing indexed: 404 with the service’s message; closing the app stops the map', async () => {
    const app = await appWith({
      map: async () => {
        throw new NotFoundError('nothing is indexed yet');
      },
      locate: async () => ({ query: null, results: [] }),
    });
    const res = await app.inject('/api/map');
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toBe('nothing is indexed yet');
    const { map, calls } = recordingMap();
    await (await appWith(map)).close();
    expect(calls.closed).toBe(1);
  });
});

describe('GET /api/map/locate', () => {
  it('passes the queryId and the ids (none is fine)', async () => {
    const { map, calls } = recordingMap();
    const app = await appWith(map);
    expect((await app.inject('/api/map/locate?queryId=Ab_9-x&ids=a,b%2Fc,d')).json()).toEqual({ query: null, results: [] });
    expect((await app.inject('/api/map/locate')).statusCode).toBe(200);
    expect(calls.locate).toEqual([
      { queryId: 'Ab_9-x', ids: ['a', 'b/c', 'd'] },
      { queryId: undefined, ids: [] },
    ]);
  });

  it.each([
    [`queryId=${encodeURIComponent('../etc')}`, /queryId must be the queryId of a search answer/],
    [`ids=${Array.from({ length: 201 }, (_, i) => `i${i}`).join(',')}`, /at most 200 ids/],
    ['ids=a,,b', /ids/],
  ])('?%s is a 400', async (query, message) => {
    const { map, calls } = recordingMap();
    const res = await (await appWith(map)).inject(`/api/map/locate?${query}`);
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatch(message);
    expect(calls.locate).toEqual([]);
  });
});

describe('a search during a map computation', () => {
  it('is answered while the map is still being computed (the map runs in its worker)', async () => {
    const n = 8_000;
    const dim = 96;
    const random = mulberry32(3);
    const docs: VectorDocument[] = Array.from({ length: n }, (_, i) => ({
      id: `d${i}`,
      uri: `file:///b/d${i}.png`,
      generation: '1',
      modelVersion: 'm1',
      vector: Float32Array.from({ length: dim }, () => random() - 0.5),
      labels: [],
      indexedAt: '2026-11-27T00:00:00Z',
    }));
    const index = strict<VectorIndex>('index', {
      name: 'images-v1',
      modelVersion: 'm1',
      dimension: dim,
      count: async () => n,
      async *scan(batchSize = 500) {
        for (let i = 0; i < n; i += batchSize) yield docs.slice(i, i + batchSize);
      },
    });
    const collectionMap = new CollectionMap({ index: async () => index, queries: new RecentQueryVectors(), logger: silentLogger }, { umap: false });
    const app = await appWith(collectionMap);
    let mapDone = false;
    const mapping = app.inject('/api/map?sample=8000').then((r) => {
      mapDone = true;
      return r;
    });
    // Let the sample be read and handed to the worker, then search.
    await new Promise((r) => setTimeout(r, 200));
    const search = await app.inject('/api/search?similarTo=d1');
    expect(search.statusCode).toBe(200);
    expect(mapDone).toBe(false);
    const map = await mapping;
    expect(map.statusCode).toBe(200);
    expect(map.json().sample).toBe(n);
  });
});

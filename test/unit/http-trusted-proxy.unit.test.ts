import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { createSearchService } from '../../functions/search-server.js';
import { silentLogger } from '../../shared/logger.js';
import { NoActiveModelError } from '../../shared/services/model-holder.js';
import { parseCloudConfig } from '../../shared/wiring/cloud-config.js';
import { MemoryRejections } from './functions-fakes.js';

/**
 * The search service keys its rate limits by the client address: how many proxies in front of it
 * are trusted comes from TRUSTED_PROXY_HOPS (1 on Cloud Run; 2 behind the public load balancer,
 * whose X-Forwarded-For is `<client-supplied…>, <client-ip>, <lb-ip>`).
 */
const searchEnv = { OPENSEARCH_URL: 'https://10.0.0.5:9200', MODELS_BUCKET: 'm-1', FEATURES_BUCKET: 'f-1', IMAGES_BUCKET: 'i-1' };

describe('TRUSTED_PROXY_HOPS (search service config)', () => {
  it('is read as a whole number of hops, 1 (Cloud Run alone) when not set', () => {
    expect(parseCloudConfig('search', { ...searchEnv, TRUSTED_PROXY_HOPS: '2' }).TRUSTED_PROXY_HOPS).toBe(2);
    expect(parseCloudConfig('search', searchEnv).TRUSTED_PROXY_HOPS).toBe(1);
  });

  it('refuses 0, fractions and words, naming the variable and the fix', () => {
    for (const bad of ['0', '1.5', 'two', '11']) {
      expect(() => parseCloudConfig('search', { ...searchEnv, TRUSTED_PROXY_HOPS: bad }), bad).toThrow(/TRUSTED_PROXY_HOPS=.*(use|set) TRUSTED_PROXY_HOPS=/);
    }
  });
});

describe('createSearchService keys rate limits by the client the trusted proxies name', () => {
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((a) => a.close()));
  });

  async function service(trustedProxyHops?: number): Promise<FastifyInstance> {
    const app = await createSearchService({
      catalog: { live: async () => null },
      model: {
        get: () => Promise.reject(new NoActiveModelError()),
        current: () => null,
        forVersion: () => Promise.reject(new NoActiveModelError()),
      } as never,
      rejections: new MemoryRejections(),
      readObject: async () => Buffer.alloc(0),
      logger: silentLogger,
      limits: { rateLimit: { requestsPerMinute: 2, searchesPerMinute: 2 } },
      trustedProxyHops,
    });
    apps.push(app);
    return app;
  }
  const status = (app: FastifyInstance, xff: string) =>
    app.inject({ method: 'GET', url: '/api/status', remoteAddress: '169.254.8.1', headers: { 'x-forwarded-for': xff } }).then((r) => r.statusCode);

  it('behind the public load balancer (2 hops): two clients get separate buckets; a spoofed leading entry changes nothing', async () => {
    const app = await service(2);
    const lb = '34.120.0.9';
    expect([await status(app, `9.9.9.9, 203.0.113.7, ${lb}`), await status(app, `9.9.9.9, 203.0.113.7, ${lb}`)]).toEqual([200, 200]);
    expect(await status(app, `1.1.1.1, 203.0.113.7, ${lb}`)).toBe(429);
    expect(await status(app, `9.9.9.9, 198.51.100.20, ${lb}`)).toBe(200);
  });

  it('without a setting it trusts one hop (Cloud Run front end): the leading, client-supplied entry is not the key', async () => {
    const app = await service();
    expect([await status(app, '203.0.113.7'), await status(app, '203.0.113.7')]).toEqual([200, 200]);
    expect(await status(app, '1.1.1.1, 203.0.113.7')).toBe(429);
    expect(await status(app, '198.51.100.20')).toBe(200);
  });
});

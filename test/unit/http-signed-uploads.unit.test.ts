import type { GetSignedUrlConfig } from '@google-cloud/storage';
import type { FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { GcsSignedUploads, type SigningStorage } from '../../shared/adapters/gcp/gcs-signed-uploads.js';
import { pageUploads } from '../../functions/search-server.js';
import { documentId } from '../../shared/contracts.js';
import type { HttpLimitOverrides } from '../../shared/http/limits.js';
import { buildSearchApp, type StatusResponse } from '../../shared/http/search-app.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';
import { parseCloudConfig } from '../../shared/wiring/cloud-config.js';
import type { SdkCall } from '../helpers/recording-sdk.js';

/**
 * Cloud uploads through the app: `POST /api/uploads/sign` checks the name, type and size, then
 * signs (GcsSignedUploads over a recording Storage, recording-sdk.ts pattern); the usual
 * same-origin check and per-client rate limit apply; the object is then followed by the same
 * state route the local page uses.
 */
const BUCKET = 'p-iss-images';
const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

function recordingStorage(calls: SdkCall[], existing: Set<string>): SigningStorage {
  return {
    bucket: (bucket) => ({
      file: (name) => ({
        exists: async () => {
          calls.push({ client: 'File', method: 'exists', request: { bucket, name } });
          return [existing.has(name)];
        },
        getSignedUrl: async (config: GetSignedUrlConfig) => {
          calls.push({ client: 'File', method: 'getSignedUrl', request: { bucket, name, config } });
          return [`https://storage.googleapis.com/${bucket}/${name}?X-Goog-Signature=sig`];
        },
      }),
    }),
  };
}

const status = (): StatusResponse => ({
  indexed: 0,
  pending: -1,
  queues: {},
  rejected: { count: 0, byReason: {}, items: [] },
  deadLettered: { count: -1, items: [] },
  model: { version: 'v1', dimension: 4, hasTextTower: false, name: 'm' },
  index: null,
  ann: null,
  ignored: { count: 0, byReason: {}, items: [] },
  faults: [],
  asOf: new Date().toISOString(),
});

async function cloudApp(
  opts: {
    existing?: string[];
    limits?: HttpLimitOverrides;
    getDocument?: (id: string) => Promise<VectorDocument | null>;
    status?: () => Promise<StatusResponse>;
  } = {},
) {
  const calls: SdkCall[] = [];
  const app = await buildSearchApp({
    search: { byImage: async () => never(), similarTo: async () => never(), byText: async () => never() },
    status: opts.status ?? (async () => status()),
    getDocument: opts.getDocument ?? (async () => null),
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir: '/nonexistent',
    network: { mode: 'cloud', trustedProxyHops: 1 },
    limits: opts.limits,
    uploads: new GcsSignedUploads(recordingStorage(calls, new Set(opts.existing ?? [])), BUCKET, 'incoming/', 1000, {
      now: () => Date.parse('2026-11-27T12:00:00Z'),
    }),
  });
  apps.push(app);
  return { app, calls };
}

function never(): never {
  throw new Error('not used by these tests');
}

const sign = (app: FastifyInstance, payload: unknown, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/uploads/sign', headers: { 'sec-fetch-site': 'same-origin', ...headers }, payload: payload as object });

describe('POST /api/uploads/sign (cloud: the browser sends the file to the bucket)', () => {
  it('says uploads go through signed URLs, and the page may connect to Cloud Storage', async () => {
    const { app } = await cloudApp();
    const res = await app.inject({ url: '/api/uploads' });
    expect(res.json()).toEqual({ enabled: true, uploads: 'signed-url', maxBytes: 1000, prefix: 'incoming/', types: expect.arrayContaining(['jpg', 'png']) });
    // Only the images bucket (security review, finding 9): a page script cannot send data to any other bucket.
    expect(res.headers['content-security-policy']).toContain(`connect-src 'self' https://storage.googleapis.com/${BUCKET}/;`);
  });

  it('signs a PUT of one new object under the watched prefix, bound to its type and the size limit', async () => {
    const { app, calls } = await cloudApp();
    const res = await sign(app, { name: 'cat.jpg', type: 'image/jpeg', size: 500 });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toEqual({
      url: `https://storage.googleapis.com/${BUCKET}/incoming/cat.jpg?X-Goog-Signature=sig`,
      method: 'PUT',
      headers: { 'content-type': 'image/jpeg', 'x-goog-content-length-range': '1,1000', 'x-goog-if-generation-match': '0' },
      object: 'incoming/cat.jpg',
      id: documentId(BUCKET, 'incoming/cat.jpg'),
      expiresAt: '2026-11-27T12:10:00.000Z',
    });
    expect(calls.at(-1)?.request).toMatchObject({
      name: 'incoming/cat.jpg',
      config: { version: 'v4', action: 'write', contentType: 'image/jpeg', expires: Date.parse('2026-11-27T12:10:00Z') },
    });
    // A browser that does not know the type (""): the extension's type is signed.
    expect((await sign(app, { name: 'x.heic', type: '', size: 10 })).json().headers['content-type']).toBe('image/heic');
  });

  it.each([
    [{ name: 'a/b.jpg', type: 'image/jpeg', size: 10 }, /give a file name, not a path/],
    [{ name: '.hidden.jpg', type: 'image/jpeg', size: 10 }, /hidden names/],
    [{ name: 'x.svg', type: 'image/svg+xml', size: 10 }, /only image files can be added/],
    [{ name: 'x.jpg.part', type: 'image/jpeg', size: 10 }, /partial writes/],
    [{ name: 'x.jpg', type: 'image/png', size: 10 }, /type "image\/png" does not match \.jpg \(expected image\/jpeg\)/],
    [{ name: 'x.jpg', type: 'text/html', size: 10 }, /does not match \.jpg/],
    [{ name: 'x.jpg', type: 'image/jpeg', size: 0 }, /the file is empty/],
    [{ name: 'x.jpg', type: 'image/jpeg', size: 1001 }, /1001 bytes is over the 1000-byte limit/],
    [{ name: 'x.jpg', type: 'image/jpeg', size: 1.5 }, /whole number of bytes/],
    [{ name: 'x.jpg', type: 'image/jpeg', size: '10' }, /size/],
    [{ name: 'x.jpg', size: 10 }, /type/],
    [{ type: 'image/jpeg', size: 10 }, /name/],
  ])('refuses %j with 400 and a clear message, signing nothing', async (payload, message) => {
    const { app, calls } = await cloudApp();
    const res = await sign(app, payload);
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatch(message);
    expect(calls).toEqual([]);
  });

  it('refuses a name already in the bucket (409 NAME_TAKEN)', async () => {
    const { app, calls } = await cloudApp({ existing: ['incoming/cat.jpg'] });
    const res = await sign(app, { name: 'cat.jpg', type: 'image/jpeg', size: 10 });
    expect([res.statusCode, res.json().code]).toEqual([409, 'NAME_TAKEN']);
    expect(calls.map((c) => c.method)).toEqual(['exists']);
  });

  it('refuses another site’s request (403) before signing', async () => {
    const { app, calls } = await cloudApp();
    const cross = await sign(app, { name: 'cat.jpg', type: 'image/jpeg', size: 10 }, { 'sec-fetch-site': 'cross-site' });
    expect([cross.statusCode, cross.json().code]).toEqual([403, 'CROSS_SITE_REQUEST']);
    const origin = await app.inject({
      method: 'POST',
      url: '/api/uploads/sign',
      headers: { origin: 'https://evil.example', host: 'search.example' },
      payload: { name: 'cat.jpg', type: 'image/jpeg', size: 10 },
    });
    expect(origin.statusCode).toBe(403);
    expect(calls).toEqual([]);
  });

  it('is rate-limited per client like the other POSTs (429 with Retry-After)', async () => {
    const { app, calls } = await cloudApp({ limits: { rateLimit: { requestsPerMinute: 3 } } });
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await sign(app, { name: `c${i}.jpg`, type: 'image/jpeg', size: 10 })).statusCode);
    expect(codes).toEqual([201, 201, 201, 429, 429]);
    expect(calls.filter((c) => c.method === 'getSignedUrl')).toHaveLength(3);
  });

  it('takes no multipart upload in the cloud (409 naming the sign route); the local server signs nothing', async () => {
    const { app } = await cloudApp();
    const res = await app.inject({ method: 'POST', url: '/api/uploads', headers: { 'content-type': 'multipart/form-data; boundary=x' }, payload: '--x--' });
    expect([res.statusCode, res.json().error]).toEqual([409, expect.stringMatching(/POST \{name, type, size\} to \/api\/uploads\/sign/)]);
    const local = await buildSearchApp({
      search: { byImage: async () => never(), similarTo: async () => never(), byText: async () => never() },
      status: async () => status(),
      getDocument: async () => null,
      readObject: async () => Buffer.alloc(0),
      logger: silentLogger,
      webDir: '/nonexistent',
      uploads: { bucket: '/b', prefix: '', maxBytes: 1000, put: async () => never() },
    });
    apps.push(local);
    const refused = await sign(local, { name: 'cat.jpg', type: 'image/jpeg', size: 10 });
    expect([refused.statusCode, refused.json().error]).toEqual([409, expect.stringMatching(/POST it to \/api\/uploads as multipart/)]);
    expect((await local.inject({ url: '/api/uploads' })).json()).toMatchObject({ enabled: true, uploads: 'server' });
    expect((await local.inject({ url: '/api/uploads' })).headers['content-security-policy']).toContain("connect-src 'self';");
  });

  it('follows the signed object through the state route until it is searchable', async () => {
    let indexed = false;
    const id = documentId(BUCKET, 'incoming/cat.jpg');
    const { app } = await cloudApp({
      getDocument: async (want) =>
        indexed && want === id
          ? {
              id,
              uri: `gs://${BUCKET}/incoming/cat.jpg`,
              generation: '1',
              modelVersion: 'v1',
              vector: new Float32Array(4),
              labels: [],
              eventTime: '2026-01-01T00:00:00.000Z',
              indexedAt: '2026-01-01T00:00:02.000Z',
            }
          : null,
    });
    const signed = (await sign(app, { name: 'cat.jpg', type: 'image/jpeg', size: 10 })).json();
    const state = async () => (await app.inject({ url: `/api/uploads/state?names=${encodeURIComponent(signed.object)}` })).json()[0];
    expect(await state()).toEqual({ name: 'incoming/cat.jpg', id, state: 'pending' });
    indexed = true;
    expect(await state()).toEqual({ name: 'incoming/cat.jpg', id, state: 'indexed', lagMs: 2000 });
  });
});

describe('which deployments sign uploads (security review, finding 1: never with search.access public)', () => {
  const env = {
    OPENSEARCH_URL: 'https://10.0.0.5:9200',
    OPENSEARCH_USERNAME: 'admin',
    OPENSEARCH_PASSWORD: 'pw',
    OPENSEARCH_INDEX_ALIAS: 'images',
    MODELS_BUCKET: 'p-iss-models',
    FEATURES_BUCKET: 'p-iss-features',
    IMAGES_BUCKET: BUCKET,
    IMAGE_PREFIX: 'incoming/',
    MAX_BYTES: '1000',
  };

  it('UPLOADS=signed-url (set by the stack unless the service is public): signed URLs for the images bucket', () => {
    const uploads = pageUploads(parseCloudConfig('search', { ...env, UPLOADS: 'signed-url' }), recordingStorage([], new Set()));
    expect(uploads).toBeInstanceOf(GcsSignedUploads);
    expect(uploads).toMatchObject({ bucket: BUCKET, prefix: 'incoming/', maxBytes: 1000 });
  });

  it('UPLOADS=off (public), or unset: no uploads, so the page says they are unavailable and /api/uploads/sign refuses', async () => {
    for (const config of [parseCloudConfig('search', { ...env, UPLOADS: 'off' }), parseCloudConfig('search', env)]) {
      const uploads = pageUploads(config, recordingStorage([], new Set()));
      expect(uploads).toBeUndefined();
      const app = await buildSearchApp({
        search: { byImage: async () => never(), similarTo: async () => never(), byText: async () => never() },
        status: async () => status(),
        getDocument: async () => null,
        readObject: async () => Buffer.alloc(0),
        logger: silentLogger,
        webDir: '/nonexistent',
        network: { mode: 'cloud', trustedProxyHops: 2 },
        uploads,
      });
      apps.push(app);
      expect((await app.inject({ url: '/api/uploads' })).json()).toEqual({ enabled: false });
      const res = await sign(app, { name: 'cat.jpg', type: 'image/jpeg', size: 500 });
      expect(res.statusCode).toBeGreaterThanOrEqual(400);
      expect(res.headers['content-security-policy']).toContain("connect-src 'self';");
    }
  });

  it('a bad UPLOADS value is refused, naming the variable and the values it takes', () => {
    expect(() => parseCloudConfig('search', { ...env, UPLOADS: 'yes' })).toThrow(/UPLOADS[\s\S]*UPLOADS=off[\s\S]*UPLOADS=signed-url/);
  });
});

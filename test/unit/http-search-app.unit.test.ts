import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AppError, CapabilityError, ImageRejectedError, NotFoundError, TransientError } from '../../shared/errors.js';
import { OverloadedError } from '../../shared/http/limits.js';
import { buildSearchApp, type FeedbackEvent, type SearchAppDeps } from '../../shared/http/search-app.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';
import { ServedQueries } from '../../shared/services/feedback.js';
import type { SearchRequest, SearchResponse } from '../../shared/services/search-service.js';
import { captureLogger } from './functions-fakes.js';

/**
 * The search app's routes and protections through `app.inject` (no sockets): what each route
 * answers, which options reach the search, how errors are shown to clients (4xx with their
 * message and code, faults as a generic message and a request id), size limits, 503 with
 * Retry-After, rate limits (429), the client address behind Cloud Run's front end, and the server's
 * timeouts. Real-socket behaviour (slow bodies, rebinding over TCP): test/integration/http-protections.
 */
const empty: SearchResponse = { modelVersion: 'fake-v1', query: { kind: 'image' }, results: [] };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let webDir: string;
beforeAll(async () => {
  webDir = await mkdtemp(join(tmpdir(), 'iss-http-app-'));
  await writeFile(join(webDir, 'index.html'), '<!doctype html><title>page</title>');
  await writeFile(join(webDir, 'app.js'), 'export const app = 1;');
  await writeFile(join(webDir, 'style.css'), 'body { margin: 0 }');
});
afterAll(() => rm(webDir, { recursive: true, force: true }));

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

type Calls = { kind: string; arg: unknown; opts: SearchRequest }[];

async function appWith(overrides: Partial<SearchAppDeps> = {}): Promise<{ app: FastifyInstance; calls: Calls }> {
  const calls: Calls = [];
  const app = await buildSearchApp({
    search: {
      byImage: async (image, opts) => {
        calls.push({ kind: 'image', arg: Buffer.from(image).toString('latin1'), opts });
        return empty;
      },
      similarTo: async (id, opts) => {
        calls.push({ kind: 'similar', arg: id, opts });
        return { ...empty, query: { kind: 'similar', value: id } };
      },
      byText: async (text, opts) => {
        calls.push({ kind: 'text', arg: text, opts });
        return { ...empty, query: { kind: 'text', value: text } };
      },
    },
    status: async () => ({ indexed: 3 }) as never,
    getDocument: async () => null,
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir,
    ...overrides,
  });
  apps.push(app);
  return { app, calls };
}

function multipart(content: Buffer | string, options: { boundary?: string; preamble?: string } = {}): { payload: Buffer; headers: Record<string, string> } {
  const boundary = options.boundary ?? 'XBOUNDARY';
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n`;
  const payload = Buffer.concat([
    Buffer.from(options.preamble === undefined ? '' : `${options.preamble}\r\n`),
    Buffer.from(head),
    Buffer.from(content),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

const postImage = (app: FastifyInstance, body = multipart('IMG'), url = '/api/search') =>
  app.inject({ method: 'POST', url, headers: body.headers, payload: body.payload });

describe('the page', () => {
  it('serves index.html, app.js and style.css from webDir with their content types', async () => {
    const { app } = await appWith();
    const page = await app.inject({ url: '/' });
    expect([page.statusCode, page.headers['content-type'], page.body]).toEqual([200, 'text/html; charset=utf-8', '<!doctype html><title>page</title>']);
    const js = await app.inject({ url: '/app.js' });
    expect([js.statusCode, js.headers['content-type'], js.body]).toEqual([200, 'text/javascript; charset=utf-8', 'export const app = 1;']);
    const css = await app.inject({ url: '/style.css' });
    expect([css.statusCode, css.headers['content-type'], css.body]).toEqual([200, 'text/css; charset=utf-8', 'body { margin: 0 }']);
  });

  it('serves nothing else from webDir', async () => {
    await writeFile(join(webDir, 'secret.txt'), 'x');
    const { app } = await appWith();
    const res = await app.inject({ url: '/secret.txt' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'no route GET /secret.txt', code: 'NOT_FOUND' });
  });
});

describe('GET /api/status', () => {
  it('answers the status with the output schema version, asking again once the previous answer is done (a failure too)', async () => {
    let calls = 0;
    const { app } = await appWith({
      status: async () => {
        calls += 1;
        if (calls === 2) throw new Error('queue listing failed at /home/alice');
        return { indexed: calls } as never;
      },
    });
    const first = await app.inject({ url: '/api/status' });
    expect([first.statusCode, first.json()]).toEqual([200, { schemaVersion: 1, indexed: 1 }]);
    const failed = await app.inject({ url: '/api/status' });
    expect(failed.statusCode).toBe(500);
    expect(failed.body).not.toMatch(/alice/);
    const third = await app.inject({ url: '/api/status' });
    expect([third.statusCode, third.json()]).toEqual([200, { schemaVersion: 1, indexed: 3 }]);
  });
});

describe('GET /api/search', () => {
  it('searches by text with k = 12, no filter and no minimum score by default', async () => {
    const { app, calls } = await appWith();
    const res = await app.inject({ url: '/api/search?q=red%20boots' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ schemaVersion: 1, modelVersion: 'fake-v1', query: { kind: 'text', value: 'red boots' }, results: [] });
    expect(calls).toEqual([{ kind: 'text', arg: 'red boots', opts: { k: 12, minScore: undefined, filter: undefined } }]);
  });

  it('searches similar to an id with k, label filter and minimum score; similarTo wins over q', async () => {
    const { app, calls } = await appWith();
    const res = await app.inject({ url: '/api/search?similarTo=abc&q=ignored&k=5&label=cat&minScore=0.25' });
    expect(res.statusCode).toBe(200);
    expect(res.json().query).toEqual({ kind: 'similar', value: 'abc' });
    expect(calls).toEqual([{ kind: 'similar', arg: 'abc', opts: { k: 5, minScore: 0.25, filter: { labels: ['cat'] } } }]);
  });

  it('presents each hit with its name and thumbnail URL', async () => {
    const hit = { id: 'h1', uri: 'file:///photos/cat.png', score: 0.5, labels: ['cat'], generation: '1', modelVersion: 'fake-v1' };
    const { app } = await appWith({
      search: {
        byImage: async () => empty,
        similarTo: async () => empty,
        byText: async () => ({ ...empty, query: { kind: 'text', value: 'cat' }, results: [hit] }),
      },
    });
    const res = await app.inject({ url: '/api/search?q=cat' });
    expect(res.json().results).toEqual([
      { id: 'h1', uri: 'file:///photos/cat.png', name: 'cat.png', score: 0.5, labels: ['cat'], thumbnailUrl: '/api/images/h1/thumbnail' },
    ]);
  });

  it('answers 400 naming the parameter when k, q or minScore is out of range, and when neither q nor similarTo is given', async () => {
    const { app, calls } = await appWith();
    for (const query of ['k=0&q=a', 'k=201&q=a', 'k=2.5&q=a', 'q=' + 'x'.repeat(501), 'minScore=1.5&q=a', 'minScore=-1.01&q=a', 'similarTo=']) {
      const res = await app.inject({ url: `/api/search?${query}` });
      expect(res.statusCode, query).toBe(400);
      expect(res.json().code, query).toBe('PARSE_ERROR');
      expect(res.json().error, query).toMatch(/^(k|q|minScore|similarTo): /);
    }
    const none = await app.inject({ url: '/api/search' });
    expect(none.statusCode).toBe(400);
    expect(none.json()).toEqual({ error: 'give ?similarTo=<id> or ?q=<text>, or POST an image', code: 'PARSE_ERROR' });
    const emptyQ = await app.inject({ url: '/api/search?q=' });
    expect(emptyQ.statusCode).toBe(400);
    expect(calls).toEqual([]);
    // The bounds themselves are accepted.
    for (const query of ['k=1&q=a', 'k=200&q=a', 'minScore=-1&q=a', 'minScore=1&q=a', 'q=' + 'x'.repeat(500)]) {
      expect((await app.inject({ url: `/api/search?${query}` })).statusCode, query).toBe(200);
    }
  });
});

describe('POST /api/search (query image upload)', () => {
  it('searches with the uploaded bytes and the query options', async () => {
    const { app, calls } = await appWith();
    const res = await postImage(app, multipart('PNGDATA'), '/api/search?k=3&label=dog&minScore=0.5');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ schemaVersion: 1, modelVersion: 'fake-v1', query: { kind: 'image' }, results: [] });
    expect(calls).toEqual([{ kind: 'image', arg: 'PNGDATA', opts: { k: 3, minScore: 0.5, filter: { labels: ['dog'] } } }]);
    const plain = await appWith();
    await postImage(plain.app, multipart('X'));
    expect(plain.calls[0]!.opts).toEqual({ k: 12, minScore: undefined, filter: undefined });
  });

  it('validates the query string before reading the upload', async () => {
    const { app, calls } = await appWith();
    const res = await postImage(app, multipart('X'), '/api/search?k=0');
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatch(/^k: /);
    expect(calls).toEqual([]);
  });

  it('refuses a declared Content-Length above the limit (plus 64 KiB of form overhead) with 413 and closes the connection', async () => {
    const { app, calls } = await appWith({ limits: { maxQueryBytes: 1000 } });
    const declared = 1000 + 64 * 1024 + 1;
    const res = await app.inject({
      method: 'POST',
      url: '/api/search',
      headers: { 'content-type': 'multipart/form-data; boundary=X', 'content-length': String(declared) },
      payload: 'abc',
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toEqual({ error: `the query image exceeds 1000 bytes (Content-Length ${declared})`, code: 'PAYLOAD_TOO_LARGE' });
    expect(res.headers.connection).toBe('close');
    expect(calls).toEqual([]);
  });

  it('accepts a body of exactly the limit plus 64 KiB when its image is within the limit', async () => {
    const { app, calls } = await appWith({ limits: { maxQueryBytes: 1000 } });
    const image = 'I'.repeat(1000);
    const bare = multipart(image).payload.length;
    // A multipart preamble (ignored by the parser) pads the body to the exact bound.
    const body = multipart(image, { preamble: 'p'.repeat(1000 + 64 * 1024 - bare - 2) });
    expect(body.payload.length).toBe(1000 + 64 * 1024);
    const res = await postImage(app, body);
    expect(res.statusCode).toBe(200);
    expect(calls.map((c) => c.arg)).toEqual([image]);
  });

  it('cuts an image above the limit while streaming: 413 naming the limit, connection closed, nothing searched', async () => {
    const { app, calls } = await appWith({ limits: { maxQueryBytes: 1000 } });
    const res = await postImage(app, multipart('I'.repeat(1001)));
    expect(res.statusCode).toBe(413);
    expect(res.json()).toEqual({ error: 'the query image exceeds 1000 bytes', code: 'PAYLOAD_TOO_LARGE' });
    expect(res.headers.connection).toBe('close');
    expect(calls).toEqual([]);
    expect((await postImage(app, multipart('I'.repeat(1000)))).statusCode).toBe(200);
  });

  it('answers 400 with what is wrong for a body that is not multipart, has no image part, or is malformed; logs no ERROR and keeps the connection', async () => {
    const log = captureLogger();
    const { app, calls } = await appWith({ logger: log.logger });
    const json = await app.inject({ method: 'POST', url: '/api/search', headers: { 'content-type': 'application/json' }, payload: '{}' });
    expect([json.statusCode, json.json()]).toEqual([400, { error: 'send the image as multipart/form-data in the field "image"', code: 'PARSE_ERROR' }]);
    const noFile = await app.inject({
      method: 'POST',
      url: '/api/search',
      headers: { 'content-type': 'multipart/form-data; boundary=X' },
      payload: '--X\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--X--\r\n',
    });
    expect([noFile.statusCode, noFile.json()]).toEqual([400, { error: 'upload an image in the multipart field "image"', code: 'PARSE_ERROR' }]);
    expect(noFile.headers.connection).not.toBe('close');
    const truncated = await app.inject({
      method: 'POST',
      url: '/api/search',
      headers: { 'content-type': 'multipart/form-data; boundary=X' },
      payload: '--X\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\nabcd',
    });
    expect(truncated.statusCode).toBe(400);
    expect(truncated.json().code).toBe('PARSE_ERROR');
    expect(truncated.json().error).toMatch(/^malformed multipart body: \S/);
    expect(calls).toEqual([]);
    expect(log.lines().filter((l) => l.severity === 'ERROR')).toEqual([]);
  });

  it('answers 503 with Retry-After and closes the connection when decodes and their queue are full', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let started = 0;
    const { app } = await appWith({
      limits: { queryDecodes: { concurrent: 1, queued: 0 } },
      search: {
        byImage: async () => {
          started += 1;
          await released;
          return empty;
        },
        similarTo: async () => empty,
        byText: async () => empty,
      },
    });
    const first = postImage(app);
    await expect.poll(() => started).toBe(1);
    const shed = await postImage(app);
    expect(shed.statusCode).toBe(503);
    expect(shed.headers['retry-after']).toBe('1');
    expect(shed.headers.connection).toBe('close');
    expect(shed.json()).toEqual({ error: 'the server is busy with other query images; retry in 1 s', code: 'OVERLOADED' });
    release();
    expect((await first).statusCode).toBe(200);
    expect((await postImage(app)).statusCode).toBe(200);
  });
});

describe('errors shown to clients', () => {
  function failing(err: unknown): Partial<SearchAppDeps> {
    return {
      search: {
        byImage: async () => empty,
        similarTo: async () => {
          throw err;
        },
        byText: async () => empty,
      },
    };
  }
  class NoModelYetError extends AppError {
    override readonly code = 'NO_MODEL';
    readonly statusCode = 503;
  }

  it('a client error keeps its message and code: not found 404, rejected image 400 with its reason, missing capability 409', async () => {
    const cases: [unknown, number, Record<string, unknown>][] = [
      [new NotFoundError('no image abc'), 404, { error: 'no image abc', code: 'NOT_FOUND' }],
      [
        new ImageRejectedError('too-many-pixels', '20000×20000'),
        400,
        { error: 'too-many-pixels: 20000×20000', code: 'IMAGE_REJECTED', reason: 'too-many-pixels' },
      ],
      [new CapabilityError('this model has no text tower'), 409, { error: 'this model has no text tower', code: 'CAPABILITY_MISSING' }],
      [new NoModelYetError('no model yet: run retrain'), 503, { error: 'no model yet: run retrain', code: 'NO_MODEL' }],
      // Only the app's own fields reach the client: not a library's error code or other properties.
      [
        Object.assign(new Error('Unsupported Media Type'), { statusCode: 415, code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', reason: 'internal detail' }),
        415,
        { error: 'Unsupported Media Type' },
      ],
      [Object.assign(new Error('lowest client error'), { statusCode: 400 }), 400, { error: 'lowest client error' }],
    ];
    for (const [err, status, body] of cases) {
      const log = captureLogger();
      const { app } = await appWith({ ...failing(err), logger: log.logger });
      const res = await app.inject({ url: '/api/search?similarTo=abc' });
      expect(res.statusCode, String(err)).toBe(status);
      expect(res.json(), String(err)).toEqual(body);
      expect(
        log.lines().filter((l) => l.severity === 'ERROR'),
        String(err),
      ).toEqual([]);
    }
  });

  it('a fault (any other error, also an AppError without its own status, or a 5xx from elsewhere) shows a generic message and the request id; the log holds the Error under that id', async () => {
    const cases: [unknown, number][] = [
      [new Error('connect ECONNREFUSED 10.0.0.5:9200'), 500],
      [new TransientError('OpenSearch at https://admin:pw@10.0.0.5 is unreachable'), 500],
      [Object.assign(new Error('upstream 10.0.0.5 answered 502'), { statusCode: 502 }), 502],
      [Object.assign(new Error('highest server error at 10.0.0.5'), { statusCode: 599 }), 599],
      [Object.assign(new Error('redirect to 10.0.0.5'), { statusCode: 302 }), 500],
      [Object.assign(new Error('status 399 at 10.0.0.5'), { statusCode: 399 }), 500],
      [Object.assign(new Error('status 600 at 10.0.0.5'), { statusCode: 600 }), 500],
      [Object.assign(new Error('status as text at 10.0.0.5'), { statusCode: '404' }), 500],
      ['a thrown string naming 10.0.0.5', 500],
    ];
    for (const [err, status] of cases) {
      const log = captureLogger();
      const { app } = await appWith({ ...failing(err), logger: log.logger });
      const res = await app.inject({ url: '/api/search?similarTo=abc' });
      expect(res.statusCode, String(err)).toBe(status);
      expect(res.body, String(err)).not.toMatch(/10\.0\.0\.5/);
      const body = res.json() as { error: string; requestId: string };
      expect(body).toEqual({ error: 'internal error: the server logged the details under this request id', requestId: expect.stringMatching(UUID) });
      const errors = log.lines().filter((l) => l.severity === 'ERROR');
      expect(errors, String(err)).toHaveLength(1);
      expect(errors[0]).toMatchObject({ message: 'request failed', requestId: body.requestId, method: 'GET', route: '/api/search' });
      expect(JSON.stringify(errors[0]!.err)).toMatch(/10\.0\.0\.5/);
    }
  });

  it('gives each request its own id', async () => {
    const { app } = await appWith(failing(new Error('boom')));
    const a = (await app.inject({ url: '/api/search?similarTo=abc' })).json().requestId;
    const b = (await app.inject({ url: '/api/search?similarTo=abc' })).json().requestId;
    expect(a).toMatch(UUID);
    expect(b).toMatch(UUID);
    expect(a).not.toBe(b);
  });

  it('an overload error anywhere answers 503 with its Retry-After', async () => {
    const { app } = await appWith(failing(new OverloadedError('similar searches', 4)));
    const res = await app.inject({ url: '/api/search?similarTo=abc' });
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('4');
    expect(res.json()).toEqual({ error: 'the server is busy with other similar searches; retry in 4 s', code: 'OVERLOADED' });
    const other = await appWith(failing(new NotFoundError('x')));
    expect((await other.app.inject({ url: '/api/search?similarTo=abc' })).headers['retry-after']).toBeUndefined();
  });

  it('an unknown route is 404 naming the method and path, without the query string', async () => {
    const { app } = await appWith();
    const res = await app.inject({ method: 'DELETE', url: '/api/nothing?token=secret' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'no route DELETE /api/nothing', code: 'NOT_FOUND' });
  });

  it('refuses a body above 1 MiB on any route before parsing it', async () => {
    const { app } = await appWith();
    const big = await app.inject({
      method: 'POST',
      url: '/api/nothing',
      headers: { 'content-type': 'application/json' },
      payload: `"${'x'.repeat(1024 * 1024)}"`,
    });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toEqual({ error: 'Request body is too large' });
    const small = await app.inject({
      method: 'POST',
      url: '/api/nothing',
      headers: { 'content-type': 'application/json' },
      payload: `"${'x'.repeat(1024 * 1024 - 100)}"`,
    });
    expect(small.statusCode).toBe(404);
  });
});

describe('thumbnails', () => {
  const doc = (id: string, generation: string): VectorDocument => ({
    id,
    uri: `file:///b/${id}.png`,
    generation,
    modelVersion: 'fake-v1',
    vector: new Float32Array(4),
    labels: [],
    indexedAt: '',
  });

  it('answers 404 naming the id for an image that is not indexed', async () => {
    const { app } = await appWith();
    const res = await app.inject({ url: '/api/images/nope/thumbnail' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ error: 'no indexed image has id nope', code: 'NOT_FOUND' });
  });

  it('answers a JPEG, privately cacheable for 5 minutes; made again for a new version of the image, or another image', async () => {
    const sharp = (await import('sharp')).default;
    const png = await sharp({ create: { width: 40, height: 30, channels: 3, background: '#c33' } })
      .png()
      .toBuffer();
    const docs = new Map([
      ['a', doc('a', '1')],
      ['b', doc('b', '1')],
    ]);
    const reads: string[] = [];
    const { app } = await appWith({
      getDocument: async (id) => docs.get(id) ?? null,
      readObject: async (uri) => {
        reads.push(uri);
        return png;
      },
    });
    const res = await app.inject({ url: '/api/images/a/thumbnail' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('image/jpeg');
    expect(res.headers['cache-control']).toBe('private, max-age=300');
    expect((await sharp(res.rawPayload).metadata()).format).toBe('jpeg');
    await app.inject({ url: '/api/images/a/thumbnail' });
    expect(reads).toEqual(['file:///b/a.png']);
    await app.inject({ url: '/api/images/b/thumbnail' });
    expect(reads).toEqual(['file:///b/a.png', 'file:///b/b.png']);
    docs.set('a', doc('a', '2'));
    await app.inject({ url: '/api/images/a/thumbnail' });
    expect(reads).toEqual(['file:///b/a.png', 'file:///b/b.png', 'file:///b/a.png']);
  });
});

describe('thumbnail decodes bounded', () => {
  it('beyond its bound answers 503 with Retry-After, saying thumbnails are busy', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let reads = 0;
    const doc = { id: 'a', uri: 'file:///b/a.png', generation: '1', modelVersion: 'fake-v1', vector: new Float32Array(4), labels: [], indexedAt: '' };
    const { app } = await appWith({
      limits: { thumbnails: { concurrent: 1, queued: 0 } },
      getDocument: async (id) => ({ ...doc, id }),
      readObject: async () => {
        reads += 1;
        await released;
        throw new Error('gone');
      },
    });
    const first = app.inject({ url: '/api/images/a/thumbnail' });
    await expect.poll(() => reads).toBe(1);
    const shed = await app.inject({ url: '/api/images/b/thumbnail' });
    expect(shed.statusCode).toBe(503);
    expect(shed.headers['retry-after']).toBe('1');
    expect(shed.json()).toEqual({ error: 'the server is busy with other thumbnails; retry in 1 s', code: 'OVERLOADED' });
    release();
    expect((await first).statusCode).toBe(500);
  });
});

describe('POST /api/feedback', () => {
  const hit = { id: 'r1', uri: 'file:///b/r1.png', score: 0.9, labels: [], generation: '1', modelVersion: 'fake-v1' };

  async function feedbackApp(record?: (e: FeedbackEvent) => Promise<void>, withServed = true) {
    const served = new ServedQueries({ key: 'k'.repeat(40) });
    const { app } = await appWith({
      search: {
        byImage: async () => empty,
        similarTo: async () => empty,
        byText: async (text) => ({
          ...empty,
          query: { kind: 'text', value: text },
          results: [hit],
          feedback: served.issue({ kind: 'text', value: text }, ['r1']),
        }),
        ...(withServed ? { served } : {}),
      },
      ...(record ? { recordFeedback: record } : {}),
    });
    const answer = (await app.inject({ url: '/api/search?q=boots' })).json() as { feedbackToken: string; queryId: string };
    const post = (action = 'open', body?: unknown) =>
      app.inject({
        method: 'POST',
        url: '/api/feedback',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify(body ?? { token: answer.feedbackToken, resultId: 'r1', action }),
      });
    return { post, answer };
  }

  it('answers 409 when this deployment records no feedback', async () => {
    for (const { record, withServed } of [
      { record: undefined, withServed: true },
      { record: async () => undefined, withServed: false },
    ]) {
      const { post } = await feedbackApp(record, withServed);
      const res = await post();
      expect(res.statusCode).toBe(409);
      expect(res.json()).toEqual({ error: 'feedback is not recorded by this deployment', code: 'CAPABILITY_MISSING' });
    }
  });

  it('refuses a body above 16 KiB with 413, and a body that is not an object with 400 naming the request', async () => {
    const recorded: FeedbackEvent[] = [];
    const { post, answer } = await feedbackApp(async (e) => void recorded.push(e));
    const padded = await post('open', { token: answer.feedbackToken, resultId: 'r1', action: 'open', padding: 'x'.repeat(20 * 1024) });
    expect(padded.statusCode).toBe(413);
    const notObject = await post('open', ['a']);
    expect(notObject.statusCode).toBe(400);
    expect(notObject.json().error).toMatch(/^request: /);
    expect(recorded).toEqual([]);
  });

  it('records a click with the served query, and a click whose recording failed can be sent again', async () => {
    const recorded: FeedbackEvent[] = [];
    let fail = true;
    const { post, answer } = await feedbackApp(async (e) => {
      if (fail) throw new Error('bucket unavailable');
      recorded.push(e);
    });
    expect((await post()).statusCode).toBe(500);
    fail = false;
    const res = await post('more-like-this');
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect(recorded).toEqual([
      { queryId: answer.queryId, query: { kind: 'text', value: 'boots' }, resultId: 'r1', action: 'more-like-this', at: expect.any(String) },
    ]);
    expect(Number.isNaN(Date.parse(recorded[0]!.at))).toBe(false);
    expect((await post()).statusCode).toBe(204);
    expect(recorded).toHaveLength(1);
  });
});

describe('models and the metrics plot', () => {
  it('lists no models when the deployment has no registry, else its list', async () => {
    expect((await (await appWith()).app.inject({ url: '/api/models' })).json()).toEqual([]);
    const models = [{ version: 'v1' }, { version: 'v2' }];
    const { app } = await appWith({ listModels: async () => models as never });
    expect((await app.inject({ url: '/api/models' })).json()).toEqual(models);
  });

  it('answers 404 saying how to make the plot until one exists, then the PNG', async () => {
    for (const overrides of [{}, { metricsPlot: async () => null }]) {
      const res = await (await appWith(overrides)).app.inject({ url: '/api/reports/metrics.png' });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toEqual({ error: 'no model has been evaluated yet: run `imgsearch eval` or `imgsearch retrain`', code: 'NOT_FOUND' });
    }
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47]);
    const res = await (await appWith({ metricsPlot: async () => png })).app.inject({ url: '/api/reports/metrics.png' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('image/png');
    expect(res.rawPayload.equals(png)).toBe(true);
  });
});

describe('rate limits', () => {
  it('limits every request of a client per minute: then 429 with Retry-After, saying the limit', async () => {
    const { app } = await appWith({ limits: { rateLimit: { searchesPerMinute: 100, requestsPerMinute: 2 } } });
    expect((await app.inject({ url: '/api/models' })).statusCode).toBe(200);
    expect((await app.inject({ url: '/api/models' })).statusCode).toBe(200);
    const limited = await app.inject({ url: '/api/models' });
    expect(limited.statusCode).toBe(429);
    expect(limited.headers['retry-after']).toMatch(/^\d+$/);
    expect(limited.json()).toEqual({ error: 'too many requests from this client: at most 2 a minute; retry in 1 minute', code: 'RATE_LIMITED' });
    // Another client has its own budget.
    expect((await app.inject({ url: '/api/models', remoteAddress: '10.0.0.9' })).statusCode).toBe(200);
  });

  it('limits image searches by the search budget too', async () => {
    const { app } = await appWith({ limits: { rateLimit: { searchesPerMinute: 1, requestsPerMinute: 100 } } });
    expect((await postImage(app)).statusCode).toBe(200);
    expect((await postImage(app)).statusCode).toBe(429);
    expect((await app.inject({ url: '/api/models' })).statusCode).toBe(200);
  });

  it('behind Cloud Run counts per client address given by the one front-end hop, not per peer', async () => {
    const { app } = await appWith({ network: { mode: 'cloud', trustedProxyHops: 1 }, limits: { rateLimit: { searchesPerMinute: 1, requestsPerMinute: 100 } } });
    const from = (xff: string) => app.inject({ url: '/api/search?q=a', remoteAddress: '169.254.1.1', headers: { 'x-forwarded-for': xff } });
    expect((await from('203.0.113.1')).statusCode).toBe(200);
    expect((await from('203.0.113.2')).statusCode).toBe(200);
    expect((await from('203.0.113.1')).statusCode).toBe(429);
    // A client cannot get a new budget by prepending its own X-Forwarded-For entries.
    expect((await from('198.51.100.7, 203.0.113.2')).statusCode).toBe(429);
  });

  it('locally trusts no proxy header: the peer address is the client', async () => {
    const { app } = await appWith({ limits: { rateLimit: { searchesPerMinute: 1, requestsPerMinute: 100 } } });
    expect((await app.inject({ url: '/api/search?q=a', headers: { 'x-forwarded-for': '203.0.113.1' } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/api/search?q=a', headers: { 'x-forwarded-for': '203.0.113.2' } })).statusCode).toBe(429);
  });
});

describe('request checks and headers on every route', () => {
  it('locally refuses a foreign Host (421) and a cross-site POST (403) before the route runs', async () => {
    const { app, calls } = await appWith();
    const rebound = await app.inject({ url: '/api/search?q=a', headers: { host: 'attacker.example' } });
    expect(rebound.statusCode).toBe(421);
    expect(rebound.json().code).toBe('HOST_NOT_ALLOWED');
    const body = multipart('X');
    const crossSite = await app.inject({
      method: 'POST',
      url: '/api/search',
      headers: { ...body.headers, 'sec-fetch-site': 'cross-site' },
      payload: body.payload,
    });
    expect(crossSite.statusCode).toBe(403);
    expect(crossSite.json().code).toBe('CROSS_SITE_REQUEST');
    expect(calls).toEqual([]);
  });

  it('in the cloud answers any Host, still refuses cross-site POSTs, and sends HSTS', async () => {
    const { app } = await appWith({ network: { mode: 'cloud', trustedProxyHops: 1 } });
    const res = await app.inject({ url: '/api/search?q=a', headers: { host: 'search-abc.a.run.app' } });
    expect(res.statusCode).toBe(200);
    expect(res.headers['strict-transport-security']).toMatch(/max-age=\d+/);
    const body = multipart('X');
    expect(
      (await app.inject({ method: 'POST', url: '/api/search', headers: { ...body.headers, origin: 'https://attacker.example' }, payload: body.payload }))
        .statusCode,
    ).toBe(403);
  });

  it('locally sends the CSP, DENY framing, no referrer, and no HSTS, also on errors', async () => {
    const { app } = await appWith();
    for (const url of ['/', '/api/search?q=a', '/api/nothing']) {
      const res = await app.inject({ url });
      expect(res.headers['content-security-policy'], url).toBe(
        "default-src 'self';script-src 'self';style-src 'self';img-src 'self';connect-src 'self';font-src 'self';object-src 'none';base-uri 'self';form-action 'self';frame-ancestors 'none'",
      );
      expect(res.headers['x-frame-options'], url).toBe('DENY');
      expect(res.headers['referrer-policy'], url).toBe('no-referrer');
      expect(res.headers['strict-transport-security'], url).toBeUndefined();
    }
  });
});

describe('server limits', () => {
  it('sets the request, header, keep-alive and connection timeouts and the connection cap from the limits', async () => {
    const { app } = await appWith({
      limits: { timeouts: { requestMs: 1111, headersMs: 999, keepAliveMs: 333, connectionMs: 4444, checkIntervalMs: 55 }, maxConnections: 7 },
    });
    expect(app.server.requestTimeout).toBe(1111);
    expect(app.server.headersTimeout).toBe(999);
    expect(app.server.keepAliveTimeout).toBe(333);
    expect(app.server.timeout).toBe(4444);
    expect((app.server as unknown as { connectionsCheckingInterval: number }).connectionsCheckingInterval).toBe(55);
    expect(app.server.maxConnections).toBe(7);
  });

  it("writes no log lines of its own (Fastify's request log would print every URL, query text included, outside the structured logger)", async () => {
    const writes: string[] = [];
    const original = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
      writes.push(String(chunk));
      return (original as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
    try {
      const { app } = await appWith();
      expect((await app.inject({ url: '/api/search?q=private%20words' })).statusCode).toBe(200);
    } finally {
      process.stdout.write = original;
    }
    expect(writes.filter((w) => /private|api\/search/.test(w))).toEqual([]);
  });

  it('warns about exposure only for a local server on a non-loopback address', async () => {
    const local = captureLogger();
    const { app } = await appWith({ logger: local.logger, network: { mode: 'local', host: '0.0.0.0' } });
    await app.listen({ host: '0.0.0.0', port: 0 });
    const port = (app.server.address() as net.AddressInfo).port;
    const warnings = local.lines().filter((l) => l.severity === 'WARNING');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ host: '0.0.0.0', port });
    expect(String(warnings[0]!.message)).toMatch(new RegExp(`^the search page and API listen on 0\\.0\\.0\\.0:${port}, `));

    const cloud = captureLogger();
    const other = await appWith({ logger: cloud.logger, network: { mode: 'cloud', trustedProxyHops: 1 } });
    await other.app.listen({ host: '0.0.0.0', port: 0 });
    expect(cloud.lines().filter((l) => l.severity === 'WARNING')).toEqual([]);
  });
});

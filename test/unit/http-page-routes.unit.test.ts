import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { FolderUploads } from '../../shared/adapters/local/folder-uploads.js';
import { documentId } from '../../shared/contracts.js';
import type { ImageUploads } from '../../shared/ports/image-uploads.js';
import { AppError } from '../../shared/errors.js';
import { buildSearchApp, type SearchAppDeps, type StatusResponse } from '../../shared/http/search-app.js';
import { uploadObjectName } from '../../shared/http/upload.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';
import { localPageSources } from '../../shared/wiring/local.js';

/**
 * The routes the page's views use beyond search: uploads into the watched folder (names, limits,
 * no overwrite, same-origin), each upload's state, the detail view and the original image, the
 * server-sent status stream (over a real socket), and rollback.
 */
let work: string;
let bucketDir: string;
const apps: FastifyInstance[] = [];

beforeEach(async () => {
  work = await fs.mkdtemp(path.join(tmpdir(), 'iss-page-routes-'));
  bucketDir = path.join(work, 'bucket');
  await fs.mkdir(bucketDir);
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
  await fs.rm(work, { recursive: true, force: true });
});

const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');

function status(over: Partial<StatusResponse> = {}): StatusResponse {
  return {
    indexed: 0,
    pending: 0,
    queues: {},
    rejected: { count: 0, byReason: {}, items: [] },
    deadLettered: { count: 0, items: [] },
    model: { version: 'v1', dimension: 4, hasTextTower: false, name: 'm' },
    index: null,
    ann: null,
    ignored: { count: 0, byReason: {}, items: [] },
    faults: [],
    asOf: new Date().toISOString(),
    ...over,
  };
}

function doc(over: Partial<VectorDocument> = {}): VectorDocument {
  return {
    id: 'abc',
    uri: `file://${bucketDir}/cat.png`,
    generation: '1',
    modelVersion: 'v1',
    vector: new Float32Array([1, 0, 0, 0]),
    labels: ['cat'],
    contentType: 'image/png',
    width: 28,
    height: 28,
    eventTime: '2026-01-01T00:00:00.000Z',
    indexedAt: '2026-01-01T00:00:01.500Z',
    ...over,
  };
}

async function appWith(over: Partial<SearchAppDeps> = {}, maxBytes = 1024): Promise<FastifyInstance> {
  const app = await buildSearchApp({
    search: { byImage: async () => never(), similarTo: async () => never(), byText: async () => never() },
    status: async () => status(),
    getDocument: async () => null,
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir: work,
    uploads: new FolderUploads(new FolderBlobStore(bucketDir), '', maxBytes),
    ...over,
  });
  apps.push(app);
  return app;
}

function never(): never {
  throw new Error('not used by these tests');
}

function form(filename: string, content: Buffer | string, field = 'file'): { payload: Buffer; headers: Record<string, string> } {
  const b = 'XUPLOAD';
  const payload = Buffer.concat([
    Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\nContent-Type: image/png\r\n\r\n`),
    Buffer.from(content),
    Buffer.from(`\r\n--${b}--\r\n`),
  ]);
  return { payload, headers: { 'content-type': `multipart/form-data; boundary=${b}` } };
}

const upload = (app: FastifyInstance, body: ReturnType<typeof form>, headers: Record<string, string> = {}) =>
  app.inject({ method: 'POST', url: '/api/uploads', headers: { ...body.headers, ...headers }, payload: body.payload });

describe('POST /api/uploads (local: into the watched folder)', () => {
  it('writes the file under its name and answers its id and generation', async () => {
    const app = await appWith();
    const res = await upload(app, form('cat.png', PNG));
    expect(res.statusCode).toBe(201);
    const body = res.json();
    expect(body).toMatchObject({ name: 'cat.png', id: documentId(path.resolve(bucketDir), 'cat.png'), size: PNG.length });
    expect(body.generation).toMatch(/^\d+$/);
    expect(await fs.readFile(path.join(bucketDir, 'cat.png'))).toEqual(PNG);
    // No partial file is left behind beside it.
    expect(await fs.readdir(bucketDir)).toEqual(['cat.png']);
  });

  it('never replaces an existing object: 409, the old bytes stay', async () => {
    await fs.writeFile(path.join(bucketDir, 'cat.png'), 'old');
    const app = await appWith();
    const res = await upload(app, form('cat.png', PNG));
    expect(res.statusCode).toBe(409);
    expect(res.json()).toMatchObject({ code: 'NAME_TAKEN' });
    expect(res.json().error).toMatch(/already in the bucket: rename the file/);
    expect(await fs.readFile(path.join(bucketDir, 'cat.png'), 'utf8')).toBe('old');
    expect(await fs.readdir(bucketDir)).toEqual(['cat.png']);
  });

  it('lets exactly one of two concurrent uploads of one name through', async () => {
    const app = await appWith();
    const [a, b] = await Promise.all([upload(app, form('twin.png', PNG)), upload(app, form('twin.png', Buffer.concat([PNG, PNG])))]);
    expect([a.statusCode, b.statusCode].sort()).toEqual([201, 409]);
    const kept = await fs.readFile(path.join(bucketDir, 'twin.png'));
    expect(kept).toEqual(a.statusCode === 201 ? PNG : Buffer.concat([PNG, PNG]));
    expect(await fs.readdir(bucketDir)).toEqual(['twin.png']);
  });

  it.each([
    ['../escape.png', /a file name, not a path/],
    ['sub/dir.png', /a file name, not a path/],
    ['..\\win.png', /a file name, not a path/],
    ['.hidden.png', /hidden names/],
    ['notes.txt', /only image files/],
    ['photo.svg', /only image files/],
    ['photo.png.part', /partial writes/],
    ['bad\u0001name.png', /control characters/],
    // C1 controls too (security review finding 7; Google's object naming guidance: avoid #x7F-#x84, #x86-#x9F).
    ['bad\u0080name.png', /control characters/],
    ['bad\u0085name.png', /control characters/],
    ['bad\u009fname.png', /control characters/],
    // 104 characters but 244 bytes: the limit is in bytes (a 255-byte file name holds it and the temp suffix).
    [`${'é'.repeat(120)}.png`, /the name is longer than 200 bytes/],
  ])('refuses the name %j with 400 and writes nothing', async (name, why) => {
    const app = await appWith();
    const res = await upload(app, form(name, PNG));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatch(why);
    expect(await fs.readdir(bucketDir)).toEqual([]);
    expect(await fs.readdir(work)).toEqual(['bucket']);
  });

  it('refuses an empty file, a file over the limit (413), a wrong field and a non-multipart body', async () => {
    const app = await appWith({}, 100);
    expect((await upload(app, form('empty.png', ''))).json().error).toMatch(/the file is empty/);
    const big = await upload(app, form('big.png', Buffer.alloc(101, 1)));
    expect([big.statusCode, big.json().code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    const field = await upload(app, form('a.png', PNG, 'image'));
    expect([field.statusCode, field.json().error]).toEqual([400, 'send the image in the multipart field "file", not "image"']);
    const json = await app.inject({ method: 'POST', url: '/api/uploads', payload: { file: 'x' } });
    expect(json.statusCode).toBe(400);
    expect(await fs.readdir(bucketDir)).toEqual([]);
  });

  it('refuses a cross-site upload (403) and answers 409 where uploads are off', async () => {
    const app = await appWith();
    const res = await upload(app, form('cat.png', PNG), { 'sec-fetch-site': 'cross-site' });
    expect(res.statusCode).toBe(403);
    expect(await fs.readdir(bucketDir)).toEqual([]);
    const off = await appWith({ uploads: undefined });
    const refused = await upload(off, form('cat.png', PNG));
    expect([refused.statusCode, refused.json().code]).toEqual([409, 'CAPABILITY_MISSING']);
    expect((await off.inject({ url: '/api/uploads' })).json()).toEqual({ enabled: false });
  });

  it('accepts a name of exactly 200 bytes of UTF-8 and writes it (security review finding 7)', async () => {
    const name = `${'é'.repeat(98)}.png`;
    expect(Buffer.byteLength(name)).toBe(200);
    const res = await upload(await appWith(), form(name, PNG));
    expect([res.statusCode, res.json().name]).toEqual([201, name]);
    expect(await fs.readdir(bucketDir)).toEqual([name]);
  });

  it('prefixes the name with the indexed prefix', () => {
    expect(uploadObjectName(' cat.png ', 'photos/')).toBe('photos/cat.png');
  });
});

describe('FolderUploads: bytes streamed to the partial file (security review finding 8)', () => {
  it('writes each chunk to the hidden .part file as it arrives, then links the complete file', async () => {
    const uploads = new FolderUploads(new FolderBlobStore(bucketDir), '', 1024);
    const seen: string[][] = [];
    async function* chunks() {
      yield Buffer.from('first-');
      // The first chunk is already on disk, in a hidden partial file only, before the second is produced.
      const names = await fs.readdir(bucketDir);
      seen.push(names);
      expect(await fs.readFile(path.join(bucketDir, names[0]!), 'utf8')).toBe('first-');
      yield Buffer.from('second');
    }
    const stored = await uploads.put('s.png', chunks());
    expect(seen).toEqual([[expect.stringMatching(/^\.s\.png\.[0-9a-f]{12}\.part$/)]]);
    expect(stored.size).toBe(12);
    expect(await fs.readFile(path.join(bucketDir, 's.png'), 'utf8')).toBe('first-second');
    expect(await fs.readdir(bucketDir)).toEqual(['s.png']);
  });

  it('the route hands the file to put as a stream of chunks, never one whole buffer', async () => {
    const got: { whole: boolean; bytes: Buffer }[] = [];
    const real = new FolderUploads(new FolderBlobStore(bucketDir), '', 1024);
    const uploads: ImageUploads = {
      bucket: real.bucket,
      prefix: '',
      maxBytes: 1024,
      put: async (name, data) => {
        const parts: Buffer[] = [];
        if (Buffer.isBuffer(data)) parts.push(data);
        else for await (const chunk of data) parts.push(Buffer.from(chunk));
        got.push({ whole: Buffer.isBuffer(data), bytes: Buffer.concat(parts) });
        return real.put(name, Buffer.concat(parts));
      },
    };
    const res = await upload(await appWith({ uploads }), form('streamed.png', PNG));
    expect(res.statusCode).toBe(201);
    expect(got).toEqual([{ whole: false, bytes: PNG }]);
  });

  it('a source that fails midway leaves nothing behind', async () => {
    const uploads = new FolderUploads(new FolderBlobStore(bucketDir), '', 1024);
    async function* failing() {
      yield Buffer.from('partial');
      throw new Error('the client went away');
    }
    await expect(uploads.put('f.png', failing())).rejects.toThrow(/the client went away/);
    expect(await fs.readdir(bucketDir)).toEqual([]);
  });
});

describe('GET /api/uploads/state', () => {
  it('answers pending, indexed (with the lag) and rejected (with the reason) per name', async () => {
    const bucket = path.resolve(bucketDir);
    const app = await appWith({
      getDocument: async (id) => (id === documentId(bucket, 'ok.png') ? doc({ id }) : null),
      status: async () =>
        status({
          rejected: {
            count: 1,
            byReason: { 'not-an-image': 1 },
            items: [{ id: documentId(bucket, 'bad.png'), uri: 'x', generation: '1', reason: 'not-an-image', detail: 'text', at: 'now' }],
          },
        }),
    });
    const res = await app.inject({ url: '/api/uploads/state?names=ok.png,bad.png,wait.png' });
    expect(res.json()).toEqual([
      { name: 'ok.png', id: documentId(bucket, 'ok.png'), state: 'indexed', lagMs: 1500 },
      { name: 'bad.png', id: documentId(bucket, 'bad.png'), state: 'rejected', reason: 'not-an-image', detail: 'text' },
      { name: 'wait.png', id: documentId(bucket, 'wait.png'), state: 'pending' },
    ]);
  });
});

describe('the detail view: GET /api/images/:id and /original', () => {
  it('answers the metadata without the vector, and the original bytes with its image type', async () => {
    const app = await appWith({ getDocument: async (id) => (id === 'abc' ? doc() : null), readObject: async () => PNG });
    const meta = await app.inject({ url: '/api/images/abc' });
    expect(meta.json()).toMatchObject({ id: 'abc', name: 'cat.png', labels: ['cat'], width: 28, originalUrl: '/api/images/abc/original' });
    expect(meta.json()).not.toHaveProperty('vector');
    const orig = await app.inject({ url: '/api/images/abc/original' });
    expect([orig.statusCode, orig.headers['content-type'], orig.headers['x-content-type-options']]).toEqual([200, 'image/png', 'nosniff']);
    expect(orig.rawPayload).toEqual(PNG);
    expect((await app.inject({ url: '/api/images/nope/original' })).statusCode).toBe(404);
  });

  it('never serves a non-raster object (SVG) and refuses originals over the limit', async () => {
    const svg = await appWith({ getDocument: async () => doc({ uri: 'file:///b/x.svg', contentType: 'image/svg+xml' }), readObject: async () => PNG });
    expect((await svg.inject({ url: '/api/images/abc/original' })).statusCode).toBe(404);
    const big = await appWith({ getDocument: async () => doc(), readObject: async () => Buffer.alloc(64), maxOriginalBytes: 10 });
    expect((await big.inject({ url: '/api/images/abc/original' })).statusCode).toBe(413);
  });

  it('asks the reader for at most the route limit, and its over-limit refusal is a 413 (security review finding 3)', async () => {
    const asked: (number | undefined)[] = [];
    // A reader following the BlobStore.read contract (shared/ports/blob-store.ts): over maxBytes it refuses, naming the limit.
    const readObject: SearchAppDeps['readObject'] = async (_uri, options) => {
      asked.push(options?.maxBytes);
      if (options?.maxBytes !== undefined && 64 > options.maxBytes)
        throw new AppError(`x is 64 bytes, over the ${options.maxBytes}-byte limit`, { meta: { size: 64, maxBytes: options.maxBytes } });
      return Buffer.alloc(64);
    };
    const big = await appWith({ getDocument: async () => doc(), readObject, maxOriginalBytes: 10 });
    const res = await big.inject({ url: '/api/images/abc/original' });
    expect(res.statusCode).toBe(413);
    expect(res.json().error).toMatch(/cat\.png is over the 10-byte limit for originals/);
    expect(asked).toEqual([10]);
  });

  it('the local reader refuses a file over maxBytes before reading it, and reads one within it (security review finding 3)', async () => {
    const file = path.join(work, 'big.png');
    await fs.writeFile(file, Buffer.alloc(2048, 1));
    const { readObject } = localPageSources({} as never);
    await expect(readObject(`file://${file}`, { maxBytes: 1024 })).rejects.toMatchObject({ meta: { size: 2048, maxBytes: 1024 } });
    expect((await readObject(`file://${file}`, { maxBytes: 4096 })).length).toBe(2048);
    expect((await readObject(`file://${file}`)).length).toBe(2048);
  });
});

describe('POST /api/models/rollback', () => {
  it('rolls back through the given function, same-origin only; 409 where it is not offered', async () => {
    let calls = 0;
    const app = await appWith({ rollbackModel: async () => ({ modelVersion: 'v0', ...{ calls: ++calls } }) });
    expect((await app.inject({ method: 'POST', url: '/api/models/rollback', headers: { 'sec-fetch-site': 'cross-site' } })).statusCode).toBe(403);
    expect(calls).toBe(0);
    const res = await app.inject({ method: 'POST', url: '/api/models/rollback', headers: { 'sec-fetch-site': 'same-origin' } });
    expect([res.statusCode, res.json()]).toEqual([200, { schemaVersion: 1, modelVersion: 'v0', calls: 1 }]);
    const off = await appWith();
    expect((await off.inject({ method: 'POST', url: '/api/models/rollback' })).statusCode).toBe(409);
  });

  it('refuses a second rollback while one runs', async () => {
    let release!: () => void;
    const app = await appWith({ rollbackModel: () => new Promise((resolve) => (release = () => resolve({ modelVersion: 'v0' }))) });
    const first = app.inject({ method: 'POST', url: '/api/models/rollback' });
    await new Promise((r) => setTimeout(r, 20));
    const second = await app.inject({ method: 'POST', url: '/api/models/rollback' });
    expect([second.statusCode, second.json().error]).toEqual([409, 'a rollback is already running; wait for it to finish']);
    release();
    expect((await first).statusCode).toBe(200);
  });
});

/** Reads SSE frames from a real socket until `until` says stop; returns them parsed. */
function readEvents(
  url: string,
  until: (events: { event: string; data: unknown }[]) => boolean,
  untilRaw: (raw: string) => boolean = () => false,
): Promise<{ events: { event: string; data: unknown }[]; headers: http.IncomingHttpHeaders; raw: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let raw = '';
      const events: { event: string; data: unknown }[] = [];
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        raw += chunk;
        const frames = raw.split('\n\n');
        events.length = 0;
        for (const f of frames.slice(0, -1)) {
          const event = /^event: (.*)$/m.exec(f)?.[1];
          const data = /^data: (.*)$/m.exec(f)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) });
        }
        if (until(events) || untilRaw(raw)) {
          req.destroy();
          resolve({ events: [...events], headers: res.headers, raw });
        }
      });
      res.on('end', () => resolve({ events, headers: res.headers, raw }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

describe('GET /api/events (server-sent status)', () => {
  it('pushes the status at once and again when it changes, with the ingest rate and the backlog lag', async () => {
    let indexed = 0;
    let clock = 0;
    const app = await appWith({
      status: async () => status({ indexed, pending: 10 - indexed }),
      events: { intervalMs: 20, now: () => clock },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const ticker = setInterval(() => {
      clock += 1000;
      if (indexed < 4) indexed += 2;
    }, 25);
    try {
      const { events, headers } = await readEvents(`http://127.0.0.1:${port}/api/events`, (e) => e.filter((x) => x.event === 'status').length >= 3);
      expect(headers['content-type']).toBe('text/event-stream; charset=utf-8');
      expect(headers['content-security-policy']).toMatch(/default-src 'self'/);
      const statuses = events
        .filter((e) => e.event === 'status')
        .map((e) => e.data as { status: { indexed: number }; ingestRate: number | null; estimatedLagSeconds: number | null });
      expect(statuses[0]!.ingestRate).toBeNull();
      const moving = statuses.find((s) => s.ingestRate !== null && s.ingestRate > 0)!;
      expect(moving).toBeDefined();
      expect(moving.estimatedLagSeconds).toBeCloseTo((10 - moving.status.indexed) / moving.ingestRate!, 6);
    } finally {
      clearInterval(ticker);
    }
  });

  it('refuses streams past the bound (503 + Retry-After) and ends open streams when the app closes', async () => {
    const app = await appWith({ events: { intervalMs: 50, maxClients: 1 } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const first = new Promise<string>((resolve) => {
      http.get(`http://127.0.0.1:${port}/api/events`, (res) => {
        let raw = '';
        res.on('data', (c) => (raw += c));
        res.on('end', () => resolve(raw));
      });
    });
    // The first stream is open once a second request is refused.
    let second: Response | undefined;
    for (let i = 0; i < 100 && second?.status !== 503; i++) {
      second = await fetch(`http://127.0.0.1:${port}/api/events`);
      if (second.status !== 503) await second.body?.cancel();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(second!.status).toBe(503);
    expect(second!.headers.get('retry-after')).toBe('10');
    apps.splice(apps.indexOf(app), 1);
    await app.close();
    expect(await first).toMatch(/event: status/);
  });

  it('refuses more than maxPerClient streams from one client address (503 + Retry-After; security review finding 5)', async () => {
    const app = await appWith({ events: { intervalMs: 50, maxClients: 10, maxPerClient: 1 } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const first = new Promise<string>((resolve) => {
      http.get(`http://127.0.0.1:${port}/api/events`, (res) => {
        let raw = '';
        res.on('data', (c) => (raw += c));
        res.on('end', () => resolve(raw));
      });
    });
    let second: Response | undefined;
    for (let i = 0; i < 100 && second?.status !== 503; i++) {
      second = await fetch(`http://127.0.0.1:${port}/api/events`);
      if (second.status !== 503) await second.body?.cancel();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(second!.status).toBe(503);
    expect(second!.headers.get('retry-after')).toBe('10');
    expect((await second!.json()).error).toMatch(/event streams from this client/);
    apps.splice(apps.indexOf(app), 1);
    await app.close();
    expect(await first).toMatch(/event: status/);
  });

  it('sends a heartbeat comment on a quiet stream', async () => {
    const app = await appWith({ events: { intervalMs: 1000, heartbeatMs: 30 } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    let beats = 0;
    const { raw } = await readEvents(
      `http://127.0.0.1:${port}/api/events`,
      () => false,
      (r) => (beats = r.split(': heartbeat').length - 1) >= 2,
    );
    expect(raw).toMatch(/^retry: 2000\n/);
    expect(beats).toBeGreaterThanOrEqual(2);
  });

  it('follows an upload until it is searchable (event: upload)', async () => {
    let indexedDoc: VectorDocument | null = null;
    const app = await appWith({ getDocument: async () => indexedDoc, events: { intervalMs: 20 } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = app.server.address() as AddressInfo;
    const res = await upload(app, form('new.png', PNG));
    expect(res.statusCode).toBe(201);
    setTimeout(() => (indexedDoc = doc({ id: res.json().id })), 150);
    const { events } = await readEvents(`http://127.0.0.1:${port}/api/events`, (e) =>
      e.some((x) => x.event === 'upload' && (x.data as { state: string }).state === 'indexed'),
    );
    const states = events.filter((e) => e.event === 'upload').map((e) => (e.data as { state: string }).state);
    expect(states[0]).toBe('pending');
    expect(states.at(-1)).toBe('indexed');
  });
});

import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CRC32C, Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, beforeEach } from 'vitest';

/**
 * A small in-memory server speaking the subset of the GCS JSON API that the official client uses
 * for our adapters (media download with Range and `generation`, metadata, paginated listing with `startOffset`,
 * multipart upload with `ifGenerationMatch`, delete). The real `Storage` client talks to it via
 * `apiEndpoint`, so tests see the exact requests the SDK sends.
 */
export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /**
   * For an upload that reached the object-name check: whether a live object was at that name when
   * the request arrived (i.e. the upload may replace one). Undefined for other requests.
   */
  existedBefore?: boolean;
}

interface StoredObject {
  data: Buffer;
  generation: string;
  contentType: string;
  updated: string;
}

export class FakeGcsServer {
  readonly requests: RecordedRequest[] = [];
  /** bucket → name → live object. Old generations are dropped, as in a bucket without versioning. */
  readonly buckets = new Map<string, Map<string, StoredObject>>();
  /** Statuses to answer the next requests with, in order (fault injection). */
  readonly failures: number[] = [];
  /**
   * Statuses to answer the next uploads with AFTER storing them: the object landed but its response
   * was lost (a client that retries then meets its own object).
   */
  readonly lostUploadResponses: number[] = [];
  private nextGeneration = 1_700_000_000_000_000n;
  private server?: http.Server;
  endpoint = '';

  async start(): Promise<this> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          this.handle(req, Buffer.concat(chunks), res);
        } catch (err) {
          send(res, 500, { error: { code: 500, message: String(err) } });
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.endpoint = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  /** A real client pointed at this server, without credentials and without retries. */
  storage(options: { retries?: boolean } = {}): Storage {
    return new Storage({
      apiEndpoint: this.endpoint,
      projectId: 'test-project',
      retryOptions: { autoRetry: options.retries ?? false, maxRetries: 2, retryDelayMultiplier: 1, totalTimeout: 5 },
    });
  }

  put(bucket: string, name: string, data: Buffer | string, contentType = 'application/octet-stream'): StoredObject {
    const objects = this.bucketOf(bucket);
    const stored = {
      data: Buffer.from(data),
      generation: String((this.nextGeneration += 1n)),
      contentType,
      updated: new Date().toISOString(),
    };
    objects.set(name, stored);
    return stored;
  }

  get(bucket: string, name: string): StoredObject | undefined {
    return this.buckets.get(bucket)?.get(name);
  }

  reset(): void {
    this.requests.length = 0;
    this.buckets.clear();
    this.failures.length = 0;
    this.lostUploadResponses.length = 0;
  }

  private bucketOf(bucket: string): Map<string, StoredObject> {
    let objects = this.buckets.get(bucket);
    if (!objects) this.buckets.set(bucket, (objects = new Map()));
    return objects;
  }

  private handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams.entries());
    const record: RecordedRequest = { method: req.method ?? 'GET', path: url.pathname, query, headers: req.headers, body };
    this.requests.push(record);
    const failure = this.failures.shift();
    if (failure !== undefined) return send(res, failure, { error: { code: failure, message: 'injected failure' } });

    const upload = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    if (upload && req.method === 'POST') return this.upload(decodeURIComponent(upload[1]!), query, req, body, res, record);
    const list = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(url.pathname);
    if (list && req.method === 'GET') return this.list(decodeURIComponent(list[1]!), query, res);
    const object = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(url.pathname);
    if (object) {
      const bucket = decodeURIComponent(object[1]!);
      const name = decodeURIComponent(object[2]!);
      const stored = this.buckets.get(bucket)?.get(name);
      const wanted = query.generation;
      if (!stored || (wanted !== undefined && wanted !== stored.generation)) {
        return send(res, 404, { error: { code: 404, message: `No such object: ${bucket}/${name}` } });
      }
      if (req.method === 'DELETE') {
        this.buckets.get(bucket)!.delete(name);
        res.statusCode = 204;
        return void res.end();
      }
      if (req.method === 'GET' && query.alt === 'media') return this.media(stored, req, res);
      if (req.method === 'GET') return send(res, 200, resource(bucket, name, stored));
    }
    send(res, 501, { error: { code: 501, message: `fake GCS does not implement ${req.method} ${url.pathname}` } });
  }

  private media(stored: StoredObject, req: http.IncomingMessage, res: http.ServerResponse): void {
    res.setHeader('content-type', stored.contentType);
    res.setHeader('x-goog-generation', stored.generation);
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), stored.data.length - 1) : stored.data.length - 1;
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${end}/${stored.data.length}`);
      return void res.end(stored.data.subarray(start, end + 1));
    }
    res.setHeader('x-goog-hash', `crc32c=${crc32c(stored.data)},md5=${md5(stored.data)}`);
    res.end(stored.data);
  }

  private list(bucket: string, query: Record<string, string>, res: http.ServerResponse): void {
    const prefix = query.prefix ?? '';
    const max = Number(query.maxResults ?? 1000);
    // startOffset: names at or after it only, as GCS (lexicographic; ASCII names here).
    const startOffset = query.startOffset ?? '';
    const names = [...(this.buckets.get(bucket)?.keys() ?? [])].filter((n) => n.startsWith(prefix) && n >= startOffset).sort();
    const start = query.pageToken ? names.findIndex((n) => n > query.pageToken!) : 0;
    const page = start < 0 ? [] : names.slice(start, start + max);
    const more = start >= 0 && start + max < names.length;
    send(res, 200, {
      kind: 'storage#objects',
      items: page.map((n) => resource(bucket, n, this.buckets.get(bucket)!.get(n)!)),
      ...(more ? { nextPageToken: page[page.length - 1] } : {}),
    });
  }

  private upload(
    bucket: string,
    query: Record<string, string>,
    req: http.IncomingMessage,
    body: Buffer,
    res: http.ServerResponse,
    record: RecordedRequest,
  ): void {
    if (query.uploadType !== 'multipart') {
      return send(res, 501, { error: { code: 501, message: `fake GCS supports multipart uploads only, got ${query.uploadType}` } });
    }
    const boundary = /boundary=([^;]+)/.exec(String(req.headers['content-type']))?.[1];
    if (!boundary) return send(res, 400, { error: { code: 400, message: 'multipart boundary missing' } });
    const [metaPart, dataPart] = splitMultipart(body, boundary);
    if (!metaPart || !dataPart) return send(res, 400, { error: { code: 400, message: 'expected 2 multipart parts' } });
    const metadata = JSON.parse(metaPart.toString('utf8')) as { name?: string; contentType?: string };
    const name = query.name ?? metadata.name;
    if (!name) return send(res, 400, { error: { code: 400, message: 'object name missing' } });
    const current = this.buckets.get(bucket)?.get(name);
    record.existedBefore = current !== undefined;
    if (query.ifGenerationMatch !== undefined && query.ifGenerationMatch !== (current?.generation ?? '0')) {
      return send(res, 412, { error: { code: 412, message: 'At least one of the pre-conditions you specified did not hold.' } });
    }
    const stored = this.put(bucket, name, dataPart, metadata.contentType ?? 'application/octet-stream');
    const lost = this.lostUploadResponses.shift();
    if (lost !== undefined) return send(res, lost, { error: { code: lost, message: 'injected failure after the upload landed' } });
    send(res, 200, resource(bucket, name, stored));
  }
}

function resource(bucket: string, name: string, stored: StoredObject): Record<string, unknown> {
  return {
    kind: 'storage#object',
    id: `${bucket}/${name}/${stored.generation}`,
    bucket,
    name,
    generation: stored.generation,
    metageneration: '1',
    size: String(stored.data.length),
    contentType: stored.contentType,
    updated: stored.updated,
    timeCreated: stored.updated,
    md5Hash: md5(stored.data),
    crc32c: crc32c(stored.data),
  };
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify(body));
}

function md5(data: Buffer): string {
  return createHash('md5').update(data).digest('base64');
}

function crc32c(data: Buffer): string {
  const crc = new CRC32C();
  crc.update(data);
  return crc.toString();
}

/** Bodies of a `multipart/related` payload, headers stripped. */
function splitMultipart(body: Buffer, boundary: string): Buffer[] {
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: Buffer[] = [];
  let at = body.indexOf(delimiter);
  while (at >= 0) {
    const start = at + delimiter.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(delimiter, start);
    if (next < 0) break;
    const part = body.subarray(start + 2, next - 2); // skip CRLF after the delimiter and before the next
    const headerEnd = part.indexOf('\r\n\r\n');
    parts.push(part.subarray(headerEnd + 4));
    at = next;
  }
  return parts;
}

/** One fake server for the calling test file: started before its tests, stopped after, emptied before each test. */
export function fakeGcsForSuite(): FakeGcsServer {
  const server = new FakeGcsServer();
  beforeAll(() => server.start());
  afterAll(() => server.stop());
  beforeEach(() => server.reset());
  return server;
}

import path from 'node:path';
import type { MultipartFile } from '@fastify/multipart';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { contentTypeFor } from '../adapters/local/folder-blob-store.js';
import { documentId } from '../contracts.js';
import { AppError, CapabilityError, ParseError } from '../errors.js';
import type { ImageUploads, SignedImageUploads, SignedUpload, UploadedObject } from '../ports/image-uploads.js';
import type { VectorDocument } from '../ports/vector-index.js';
import type { PipelineStatus } from '../services/status.js';
import { ConcurrencyGate, OverloadedError } from './limits.js';
import { parseRequest, PayloadTooLargeError } from './request.js';

/**
 * File types the page may add: the raster formats the pipeline decodes, with the content types the
 * bucket folder gives them (folder-blob-store.ts contentTypeFor); not SVG, not the sidecar types.
 */
export const UPLOAD_CONTENT_TYPES: Record<string, string> = Object.fromEntries(
  ['jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff', 'avif', 'heic', 'bmp'].map((ext) => [ext, contentTypeFor(`x.${ext}`)]),
);

/**
 * Longest file name accepted, in bytes of UTF-8 (security review finding 7): a file system's name
 * limit (255 bytes) then holds it and the partial-write file's suffix (folder-uploads.ts).
 */
export const MAX_UPLOAD_NAME = 200;

/**
 * A browser-supplied file name made safe as an object name, or a ParseError saying why not: a
 * plain file name (no folder, no `..`, no hidden or partial-write name the watcher would skip, no
 * control characters), of a known image type. The result is prefixed with the indexed prefix.
 */
export function uploadObjectName(raw: string, prefix: string): string {
  const name = raw.normalize('NFC').trim();
  const bad = (why: string): never => {
    throw new ParseError(`cannot upload ${JSON.stringify(raw.slice(0, MAX_UPLOAD_NAME))}: ${why}`);
  };
  if (!name) bad('the file has no name');
  if (Buffer.byteLength(name) > MAX_UPLOAD_NAME) bad(`the name is longer than ${MAX_UPLOAD_NAME} bytes (UTF-8)`);
  if (/[/\\]/.test(name)) bad('give a file name, not a path');
  // C0, DEL and C1 controls (Google's object naming guidance asks to avoid #x7F-#x84 and #x86-#x9F; NEL #x85 is a line break).
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) bad('the name holds control characters');
  if (name.startsWith('.')) bad('hidden names (starting with ".") are never indexed');
  if (/(\.tmp|\.part|~)$/i.test(name)) bad('names ending in .tmp, .part or ~ are partial writes and never indexed');
  const ext = path.posix.extname(name).slice(1).toLowerCase();
  if (!UPLOAD_CONTENT_TYPES[ext]) bad(`only image files can be added (${Object.keys(UPLOAD_CONTENT_TYPES).join(', ')})`);
  return `${prefix}${name}`;
}

/** Where an uploaded object is on its way to being searchable. */
export interface UploadState {
  name: string;
  id: string;
  state: 'pending' | 'indexed' | 'rejected' | 'ignored';
  /** Rejected/ignored: the pipeline's reason and detail (the rejection log). */
  reason?: string;
  detail?: string;
  /** Indexed: event time → indexed (ms), when both are known. */
  lagMs?: number | null;
}

/** The state of object `name` from the index and the status's rejection and ignore lists (no generation compare: an upload never replaces). */
export async function uploadState(
  name: string,
  bucket: string,
  deps: { getDocument: (id: string) => Promise<VectorDocument | null>; status: () => Promise<Pick<PipelineStatus, 'rejected' | 'ignored'>> },
): Promise<UploadState> {
  const id = documentId(bucket, name);
  const doc = await deps.getDocument(id);
  if (doc) {
    const lag = doc.eventTime ? Date.parse(doc.indexedAt) - Date.parse(doc.eventTime) : NaN;
    return { name, id, state: 'indexed', lagMs: Number.isFinite(lag) ? lag : null };
  }
  const status = await deps.status();
  const rejected = status.rejected.items.find((r) => r.id === id);
  if (rejected) return { name, id, state: 'rejected', reason: rejected.reason, detail: rejected.detail };
  const ignored = status.ignored?.items.find((r) => r.id === id);
  if (ignored) return { name, id, state: 'ignored', reason: ignored.reason, detail: ignored.detail };
  return { name, id, state: 'pending' };
}

/** Either way of adding images: the server writes the bytes (local), or signs a URL the browser sends them to (cloud). */
export type PageUploads = ImageUploads | SignedImageUploads;

export function isSignedUploads(uploads: PageUploads): uploads is SignedImageUploads {
  return 'sign' in uploads;
}

/**
 * The content type a signed upload is bound to: the one of the name's extension
 * ({@link UPLOAD_CONTENT_TYPES}). The browser's own type, when it gives one, must agree: the bucket
 * stores what the browser sends, and the pipeline decodes by content.
 */
export function signedContentType(objectName: string, declared: string): string {
  const ext = path.posix.extname(objectName).slice(1).toLowerCase();
  const expected = UPLOAD_CONTENT_TYPES[ext]!;
  const given = declared.trim().toLowerCase();
  if (given && given !== expected) {
    throw new ParseError(
      `cannot upload ${JSON.stringify(path.posix.basename(objectName))}: its type ${JSON.stringify(declared)} does not match .${ext} (expected ${expected})`,
    );
  }
  return expected;
}

const signSchema = z.object({
  name: z.string({ error: 'give the file name as "name"' }),
  type: z.string({ error: 'give the file type as "type" ("" when the browser does not know it)' }).max(100),
  size: z.number({ error: 'give the file size in bytes as "size"' }).int('the size must be a whole number of bytes'),
});

export interface UploadRouteDeps {
  uploads?: PageUploads;
  getDocument: (id: string) => Promise<VectorDocument | null>;
  status: () => Promise<Pick<PipelineStatus, 'rejected' | 'ignored'>>;
  /** Told of every upload accepted (the event stream follows it until it is searchable or rejected). */
  onUpload?: (object: { name: string; id: string }) => void;
}

const stateSchema = z.object({ names: z.string().min(1).max(12_000) });

/**
 * `GET /api/uploads` (whether and how this deployment takes uploads), `POST /api/uploads`
 * (multipart, one file in the field "file", written into the bucket), `GET /api/uploads/state?names=a,b`
 * (each one's way to being searchable). The app's same-origin
 * check and rate limits apply (search-app.ts); names are checked by {@link uploadObjectName};
 * an existing object is never replaced (409).
 */
export function registerUploadRoutes(app: FastifyInstance, deps: UploadRouteDeps): void {
  const gate = new ConcurrencyGate('uploads', 2, 6);
  const uploads = deps.uploads;

  app.get('/api/uploads', async () =>
    uploads
      ? {
          enabled: true,
          uploads: isSignedUploads(uploads) ? 'signed-url' : 'server',
          maxBytes: uploads.maxBytes,
          prefix: uploads.prefix,
          types: Object.keys(UPLOAD_CONTENT_TYPES),
        }
      : { enabled: false },
  );

  // Cloud: a signed URL for one new object; the browser PUTs the file to Cloud Storage itself.
  app.post('/api/uploads/sign', { bodyLimit: 4096 }, async (req, reply) => {
    if (!uploads) throw new CapabilityError('this deployment does not take uploads from the page');
    if (!isSignedUploads(uploads)) throw new CapabilityError('this server takes the file itself: POST it to /api/uploads as multipart/form-data');
    const body = parseRequest(signSchema, req.body);
    const name = uploadObjectName(body.name, uploads.prefix);
    if (body.size < 1) throw new ParseError(`cannot upload ${JSON.stringify(body.name)}: the file is empty`);
    if (body.size > uploads.maxBytes) {
      throw new ParseError(`cannot upload ${JSON.stringify(body.name)}: ${body.size} bytes is over the ${uploads.maxBytes}-byte limit (MAX_BYTES)`);
    }
    const signed = await uploads.sign(name, signedContentType(name, body.type));
    deps.onUpload?.({ name: signed.object, id: signed.id });
    return reply.status(201).send(signed satisfies SignedUpload);
  });

  app.post('/api/uploads', async (req, reply) => {
    if (!uploads) throw new CapabilityError('this deployment does not take uploads from the page');
    if (isSignedUploads(uploads)) throw new CapabilityError('this deployment takes uploads through signed URLs: POST {name, type, size} to /api/uploads/sign');
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > uploads.maxBytes + 64 * 1024) {
      void reply.header('connection', 'close');
      throw new PayloadTooLargeError(`the image exceeds ${uploads.maxBytes} bytes (Content-Length ${declared}); set IMGSEARCH_MAX_BYTES to accept larger ones`);
    }
    try {
      const stored = await gate.run(async () => {
        const file = await receiveUpload(req, uploads.maxBytes);
        let name: string;
        try {
          name = uploadObjectName(file.filename, uploads.prefix);
        } catch (err) {
          // Read what was sent to its end (at most maxBytes), so the request completes before the 400.
          file.file.resume();
          throw err;
        }
        // Streamed into the partial file (security review finding 8); cut at maxBytes (413) and empty files (400) fail it before it is linked.
        return uploads.put(name, checkedChunks(file, uploads.maxBytes));
      });
      deps.onUpload?.(stored);
      return reply.status(201).send(stored satisfies UploadedObject);
    } catch (err) {
      if (err instanceof OverloadedError || err instanceof PayloadTooLargeError) void reply.header('connection', 'close');
      throw err;
    }
  });

  app.get('/api/uploads/state', async (req) => {
    if (!uploads) throw new CapabilityError('this deployment does not take uploads from the page');
    const { names } = parseRequest(stateSchema, req.query);
    const list = names.split(',').filter(Boolean);
    if (list.length > 50) throw new ParseError(`ask for at most 50 names at once (got ${list.length})`);
    return Promise.all(list.map((name) => uploadState(name, uploads.bucket, deps)));
  });
}

/** The one file part of a multipart upload (field "file"), its bytes not read yet; malformed bodies are 400. */
async function receiveUpload(req: FastifyRequest, maxBytes: number): Promise<MultipartFile> {
  try {
    // preservePath: the name as sent, so a path is refused (400) rather than quietly cut to its last part.
    const file = await req.file({ preservePath: true, limits: { fileSize: maxBytes, files: 1 } });
    if (!file) throw new ParseError('send the image as multipart/form-data in the field "file"');
    if (file.fieldname !== 'file') {
      file.file.resume();
      throw new ParseError(`send the image in the multipart field "file", not "${file.fieldname}"`);
    }
    return file;
  } catch (err) {
    throw multipartError(err, maxBytes);
  }
}

/** The file's bytes as they arrive; fails at the end when the part was cut at `maxBytes` (413) or held nothing (400). */
async function* checkedChunks(file: MultipartFile, maxBytes: number): AsyncGenerator<Buffer> {
  let size = 0;
  const source = (file.file as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await source.next();
    } catch (err) {
      // A failure of the request body, not of the write.
      throw multipartError(err, maxBytes);
    }
    if (next.done) break;
    size += next.value.length;
    yield next.value;
  }
  if (file.file.truncated) throw new PayloadTooLargeError(`the image exceeds ${maxBytes} bytes; set IMGSEARCH_MAX_BYTES to accept larger ones`);
  if (size === 0) throw new ParseError(`cannot upload ${JSON.stringify(file.filename)}: the file is empty`);
}

/** A multipart failure as the error the client gets: 413 past maxBytes, 400 for a malformed body; AppErrors as they are. */
function multipartError(err: unknown, maxBytes: number): unknown {
  if (err instanceof AppError) return err;
  const code = (err as { code?: string }).code;
  const withCause = { cause: err };
  if (code === 'FST_REQ_FILE_TOO_LARGE')
    return new PayloadTooLargeError(`the image exceeds ${maxBytes} bytes; set IMGSEARCH_MAX_BYTES to accept larger ones`, withCause);
  if (code === 'FST_INVALID_MULTIPART_CONTENT_TYPE') return new ParseError('send the image as multipart/form-data in the field "file"', withCause);
  return new ParseError(`malformed multipart body: ${err instanceof Error ? err.message : String(err)}`, withCause);
}

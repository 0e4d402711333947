import { randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import helmet from '@fastify/helmet';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { CapabilityError, ImageRejectedError, AppError, NotFoundError, ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ModelVersion } from '../ports/model-registry.js';
import { OUTPUT_SCHEMA_VERSION, presentSearch, type DriftOutput, type SearchOutput, type StatusOutput } from '../output-schemas.js';
import type { VectorDocument } from '../ports/vector-index.js';
import { feedbackRequestSchema, MAX_FEEDBACK_BODY_BYTES, type FeedbackEvent, type ServedQuery } from '../services/feedback.js';
import type { SearchResponse, SearchService } from '../services/search-service.js';
import type { PipelineStatus } from '../services/status.js';
import { ConcurrencyGate, OverloadedError, resolveHttpLimits, type HttpLimitOverrides } from './limits.js';
import { checkHost, checkSameOrigin, exposureWarning, helmetOptions, type NetworkMode } from './security.js';
import { registerMapRoutes } from './map-routes.js';
import { registerMonitorRoutes, type MonitorRouteDeps } from './monitor-routes.js';
import { ThumbnailCache } from './thumbnails.js';
import { parseRequest, PayloadTooLargeError } from './request.js';
import { StatusEventStream, type EventStreamOptions } from './events.js';
import { isSignedUploads, registerUploadRoutes, uploadState, UPLOAD_CONTENT_TYPES, type PageUploads } from './upload.js';
import type { MapRouteDeps } from './map-routes.js';

export { PayloadTooLargeError } from './request.js';

export type { FeedbackEvent } from '../services/feedback.js';

/**
 * What `GET /api/status` answers: the pipeline status; `model` is null, with a `notice` saying who
 * registers the first model, while a cloud stack has none yet (searches answer 503 meanwhile).
 */
export type StatusResponse = Omit<PipelineStatus, 'model'> & { model: PipelineStatus['model'] | null; notice?: string };

export interface SearchAppDeps {
  /** The searches; `served` (feedback tokens) is needed for `/api/feedback`. */
  search: Pick<SearchService, 'byImage' | 'similarTo' | 'byText'> & Partial<Pick<SearchService, 'served'>>;
  status: () => Promise<StatusResponse>;
  getDocument: (id: string) => Promise<VectorDocument | null>;
  /**
   * The bytes of an indexed object. With `maxBytes`, an object larger than that is refused before
   * it is buffered, with an AppError whose `meta.maxBytes` is that limit (as BlobStore.read does).
   */
  readObject: (uri: string, options?: { maxBytes?: number }) => Promise<Buffer>;
  logger: Logger;
  webDir: string;
  recordFeedback?: (event: FeedbackEvent, served: ServedQuery) => Promise<void>;
  listModels?: () => Promise<ModelVersion[]>;
  metricsPlot?: () => Promise<Buffer | null>;
  /** Where the app listens (decides the Host check, proxy trust, HSTS, the exposure warning); default local on 127.0.0.1. */
  network?: NetworkMode;
  /** Size, concurrency, rate and time limits over {@link defaultHttpLimits}. */
  limits?: HttpLimitOverrides;
  /**
   * Adding images from the page: written into the watched folder by the server (local `imgsearch up`),
   * or sent by the browser to the images bucket through signed URLs (cloud); absent: no uploads (the page says so).
   */
  uploads?: PageUploads;
  /** Re-activates the previously active model and its index (local `imgsearch up` only: `POST /api/models/rollback`). */
  rollbackModel?: () => Promise<unknown>;
  /** The server-sent status stream's intervals and bounds (events.ts). */
  events?: EventStreamOptions;
  /** The largest original image `GET /api/images/:id/original` sends (default 32 MiB). */
  maxOriginalBytes?: number;
  /** The collection map (`GET /api/map`, `/api/map/locate`: map-routes.ts); absent: the page says there is none. */
  map?: MapRouteDeps['map'];
  /** Prediction monitoring (`GET /api/monitor`: monitor-routes.ts) from this process's search event log; absent (cloud: Cloud Monitoring's dashboard): 404. */
  monitor?: MonitorRouteDeps;
  /** The drift report `imgsearch drift --json` prints (`GET /api/drift`: shared/services/drift.ts driftOutput); absent: 404. */
  drift?: () => Promise<Omit<DriftOutput, 'schemaVersion'>>;
}

const querySchema = z.object({
  similarTo: z.string().min(1).optional(),
  q: z.string().min(1).max(500).optional(),
  k: z.coerce.number().int().min(1).max(200).default(12),
  label: z.string().optional(),
  minScore: z.coerce.number().min(-1).max(1).optional(),
});

/** The page's files (web/), each with its content type: nothing else from that folder is served. */
const JS = 'text/javascript; charset=utf-8';
export const staticFiles: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: JS },
  '/search.js': { file: 'search.js', type: JS },
  '/upload.js': { file: 'upload.js', type: JS },
  '/pipeline.js': { file: 'pipeline.js', type: JS },
  '/models.js': { file: 'models.js', type: JS },
  '/map.js': { file: 'map.js', type: JS },
  '/charts.js': { file: 'charts.js', type: JS },
  '/monitor.js': { file: 'monitor.js', type: JS },
  '/dom.js': { file: 'dom.js', type: JS },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** A client went past its requests per minute: 429 with Retry-After (set by @fastify/rate-limit). */
class RateLimitedError extends AppError {
  override readonly code = 'RATE_LIMITED';
  readonly statusCode = 429;
}

/**
 * The search API and web page: `POST /api/search` (image upload), `GET /api/search?similarTo=…|q=…`,
 * `GET /api/status`, thumbnails, feedback. The same app runs under `imgsearch up` and as the
 * Cloud Run search service, with the same protections (README, "The web page"): Host allow-list
 * (local) and same-origin checks on POSTs, security headers, size limits before buffering, bounded
 * decodes with 503 + Retry-After, per-client rate limits, timeouts, and errors that show clients no
 * internals (5xx: a generic message and the request id; the Error is logged with that id).
 */
export async function buildSearchApp(deps: SearchAppDeps): Promise<FastifyInstance> {
  const network: NetworkMode = deps.network ?? {
    mode: 'local',
    // Stryker disable next-line StringLiteral: equivalent, every IP literal is answered anyway (security.ts, hostAllowed)
    host: '127.0.0.1',
  };
  const limits = resolveHttpLimits(deps.limits);
  const t = limits.timeouts;
  const app = Fastify({
    logger: false,
    bodyLimit: 1024 * 1024,
    genReqId: () => randomUUID(),
    // Cloud: trust exactly the proxies in front (security.ts, NetworkMode); the client is that many hops back.
    trustProxy: network.mode === 'cloud' ? (_address: string, hop: number) => hop < network.trustedProxyHops : false,
    requestTimeout: t.requestMs,
    keepAliveTimeout: t.keepAliveMs,
    connectionTimeout: t.connectionMs,
    http: { headersTimeout: t.headersMs, connectionsCheckingInterval: t.checkIntervalMs },
  });
  app.server.maxConnections = limits.maxConnections;

  app.setErrorHandler((err, req, reply) => sendError(err, req, reply, deps.logger));
  app.setNotFoundHandler((req, reply) => sendError(new NotFoundError(`no route ${req.method} ${req.url.split('?')[0]}`), req, reply, deps.logger));

  await app.register(
    helmet,
    helmetOptions(network, { signedUploads: deps.uploads !== undefined && isSignedUploads(deps.uploads) ? { bucket: deps.uploads.bucket } : false }),
  );
  app.addHook('onRequest', async (req) => {
    checkHost(req, network);
    checkSameOrigin(req);
  });
  await app.register(rateLimit, {
    global: true,
    max: limits.rateLimit.requestsPerMinute,
    timeWindow: 60_000,
    errorResponseBuilder: (_req, ctx) => new RateLimitedError(`too many requests from this client: at most ${ctx.max} a minute; retry in ${ctx.after}`),
  });
  const searchRate = { rateLimit: { max: limits.rateLimit.searchesPerMinute, timeWindow: 60_000 } };
  await app.register(multipart, { limits: { fileSize: limits.maxQueryBytes, files: 1, fields: 8, fieldSize: 1024, parts: 9, headerPairs: 32 } });

  if (network.mode === 'local') {
    app.addHook('onListen', async () => {
      // Listening, so never null: an AddressInfo on TCP, a path on a Unix socket (nothing to warn about).
      const address = app.server.address() as AddressInfo | string;
      // Stryker disable next-line ConditionalExpression,StringLiteral: equivalent, on a Unix socket exposureWarning(undefined) throws, and Fastify drops an onListen hook's error (its logger is off): still no warning, the server still starts
      if (typeof address === 'string') return;
      const warning = exposureWarning(address.address, address.port);
      if (warning) deps.logger.warn({ host: address.address, port: address.port }, warning);
    });
  }

  for (const [route, { file, type }] of Object.entries(staticFiles)) {
    app.get(route, async (_req, reply) => reply.type(type).send(await fs.readFile(path.join(deps.webDir, file))));
  }

  // Every poll of every open page, and the event stream, ask for the status: concurrent calls share one computation.
  let statusInFlight: Promise<StatusResponse> | null = null;
  const status = (): Promise<StatusResponse> => (statusInFlight ??= deps.status().finally(() => (statusInFlight = null)));
  app.get('/api/status', async (): Promise<StatusOutput> => ({ schemaVersion: OUTPUT_SCHEMA_VERSION, ...(await status()) }));

  const uploads = deps.uploads;
  const stateOf = uploads ? (name: string) => uploadState(name, uploads.bucket, { getDocument: deps.getDocument, status }) : null;
  const events = new StatusEventStream(status, deps.logger, stateOf, deps.events);
  events.register(app);
  registerUploadRoutes(app, { uploads, getDocument: deps.getDocument, status, onUpload: (o) => events.track(o.name) });
  if (deps.map) registerMapRoutes(app, { map: deps.map, perClientPerMinute: limits.rateLimit.searchesPerMinute });

  app.get('/api/search', { config: searchRate }, async (req) => {
    const q = parseRequest(querySchema, req.query);
    const opts = { k: q.k, minScore: q.minScore, filter: q.label ? { labels: [q.label] } : undefined };
    if (q.similarTo) return present(await deps.search.similarTo(q.similarTo, opts));
    if (q.q) return present(await deps.search.byText(q.q, opts));
    throw new ParseError('give ?similarTo=<id> or ?q=<text>, or POST an image');
  });

  // Uploads being read or waiting count against one bound (memory: at most that many bodies of
  // maxQueryBytes); decodes against a smaller one (CPU).
  const queryUploads = new ConcurrencyGate('query images', limits.queryDecodes.concurrent + limits.queryDecodes.queued, 0);
  // Stryker disable next-line StringLiteral: equivalent, this gate never refuses (uploads admits at most concurrent + queued, what it holds); uploads' refusal says "query images"
  const decodes = new ConcurrencyGate('query images', limits.queryDecodes.concurrent, limits.queryDecodes.queued);
  app.post('/api/search', { config: searchRate }, async (req, reply) => {
    const q = parseRequest(querySchema, req.query);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limits.maxQueryBytes + 64 * 1024) {
      void reply.header('connection', 'close');
      throw new PayloadTooLargeError(`the query image exceeds ${limits.maxQueryBytes} bytes (Content-Length ${declared})`);
    }
    try {
      return await queryUploads.run(async () => {
        const data = await readQueryImage(req, limits.maxQueryBytes);
        const found = await decodes.run(() => deps.search.byImage(data, { k: q.k, minScore: q.minScore, filter: q.label ? { labels: [q.label] } : undefined }));
        return present(found);
      });
    } catch (err) {
      // The rest of an unread body is not worth reading: close the connection after the answer.
      if (err instanceof OverloadedError || err instanceof PayloadTooLargeError) void reply.header('connection', 'close');
      throw err;
    }
  });

  const thumbnails = new ThumbnailCache(
    new ConcurrencyGate('thumbnails', limits.thumbnails.concurrent, limits.thumbnails.queued),
    limits.thumbnails.cacheBytes,
  );
  app.get('/api/images/:id/thumbnail', async (req, reply) => {
    const { id } = req.params as { id: string };
    const doc = await deps.getDocument(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    const thumb = await thumbnails.get(`${doc.id}@${doc.generation}`, () => deps.readObject(doc.uri));
    return reply.type('image/jpeg').header('cache-control', 'private, max-age=300').send(thumb);
  });

  // The detail view: the document's metadata (never its vector) and where to get the image.
  app.get('/api/images/:id', async (req) => {
    const { id } = req.params as { id: string };
    const doc = await deps.getDocument(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    const { vector: _vector, ...meta } = doc;
    return {
      ...meta,
      name: doc.uri.split('/').pop() ?? doc.uri,
      thumbnailUrl: `/api/images/${doc.id}/thumbnail`,
      originalUrl: `/api/images/${doc.id}/original`,
    };
  });

  // The original object, as an image type only (never SVG or anything a browser would run), up to maxOriginalBytes.
  const maxOriginal = deps.maxOriginalBytes ?? 32 * 1024 * 1024;
  const originals = new ConcurrencyGate('original images', 4, 16);
  app.get('/api/images/:id/original', async (req, reply) => {
    const { id } = req.params as { id: string };
    const doc = await deps.getDocument(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    const name = doc.uri.split('/').pop() ?? doc.uri;
    const type = rasterTypeOf(doc.contentType, name);
    if (!type) throw new NotFoundError(`${name} is not served as an image (content type ${doc.contentType ?? 'unknown'})`);
    // The reader refuses an object over the limit before buffering it (security review finding 3); the length check stays for a reader that does not.
    const tooLarge = () => new PayloadTooLargeError(`${name} is over the ${maxOriginal}-byte limit for originals`);
    const bytes = await originals.run(() =>
      deps.readObject(doc.uri, { maxBytes: maxOriginal }).catch((err: unknown) => {
        throw err instanceof AppError && err.meta.maxBytes === maxOriginal ? tooLarge() : err;
      }),
    );
    if (bytes.length > maxOriginal) throw tooLarge();
    return reply
      .type(type)
      .header('cache-control', 'private, max-age=300')
      .header('content-disposition', `inline; filename*=UTF-8''${encodeURIComponent(name)}`)
      .send(bytes);
  });

  // A click counts only for a result served for that query (the answer's signed token), once per
  // query and result; fields and body are capped (services/feedback.ts).
  app.post('/api/feedback', { bodyLimit: MAX_FEEDBACK_BODY_BYTES }, async (req, reply) => {
    const body = parseRequest(feedbackRequestSchema, req.body);
    const tokens = deps.search.served;
    if (!deps.recordFeedback || !tokens) throw new CapabilityError('feedback is not recorded by this deployment');
    const served = tokens.accept(body.token, body.resultId);
    if (tokens.firstTime(served.queryId, body.resultId)) {
      try {
        await deps.recordFeedback(
          { queryId: served.queryId, query: served.query, resultId: body.resultId, action: body.action, at: new Date().toISOString() },
          served,
        );
      } catch (err) {
        tokens.forget(served.queryId, body.resultId);
        throw err;
      }
    }
    return reply.status(204).send();
  });

  app.get('/api/models', async () => (deps.listModels ? deps.listModels() : []));
  // Rollback from the page: a state change, so the same-origin check above applies; local only (the cloud's is a job).
  // One at a time: a second click (another tab) while one runs is refused, not queued.
  let rollingBack = false;
  app.post('/api/models/rollback', { bodyLimit: 1024 }, async () => {
    if (!deps.rollbackModel) throw new CapabilityError('rollback is not available here: run `imgsearch model rollback` (local) or follow the README (cloud)');
    if (rollingBack) throw new CapabilityError('a rollback is already running; wait for it to finish');
    rollingBack = true;
    try {
      return { schemaVersion: OUTPUT_SCHEMA_VERSION, ...((await deps.rollbackModel()) as object) };
    } finally {
      rollingBack = false;
    }
  });
  // Both local only: the cloud search service keeps no event log or drift state of its own (README, "Prediction monitoring", "Drift").
  if (deps.monitor) registerMonitorRoutes(app, deps.monitor);
  else
    app.get('/api/monitor', async () => {
      throw new NotFoundError('prediction monitoring is not served here: its figures are on the Cloud Monitoring dashboard (README, "Prediction monitoring")');
    });
  app.get('/api/drift', async (): Promise<DriftOutput> => {
    if (!deps.drift)
      throw new NotFoundError(
        'drift is not reported here: the scheduled drift-check job logs its decisions and keeps its state in the models bucket (drift/drift-state.json; README, "Drift")',
      );
    return { schemaVersion: OUTPUT_SCHEMA_VERSION, ...(await deps.drift()) };
  });
  app.get('/api/reports/metrics.png', async (_req, reply) => {
    const png = deps.metricsPlot ? await deps.metricsPlot() : null;
    if (!png) throw new NotFoundError('no model has been evaluated yet: run `imgsearch eval` or `imgsearch retrain`');
    return reply.type('image/png').send(png);
  });

  return app;
}

/**
 * The one image part of a multipart upload, streamed and cut at `maxBytes` (413). A body that is
 * not well-formed multipart is the client's fault: 400 with what is wrong, never a 500.
 */
async function readQueryImage(req: FastifyRequest, maxBytes: number): Promise<Buffer> {
  try {
    const file = await req.file();
    if (!file) throw new ParseError('upload an image in the multipart field "image"');
    return await file.toBuffer();
  } catch (err) {
    if (err instanceof AppError) throw err;
    const code = (err as { code?: string }).code;
    // Stryker disable next-line ObjectLiteral: the cause is kept by convention (errors.ts); a 4xx is neither logged nor answered with it, so nothing reads it
    const withCause = { cause: err };
    if (code === 'FST_REQ_FILE_TOO_LARGE') throw new PayloadTooLargeError(`the query image exceeds ${maxBytes} bytes`, withCause);
    if (code === 'FST_INVALID_MULTIPART_CONTENT_TYPE') throw new ParseError('send the image as multipart/form-data in the field "image"', withCause);
    throw new ParseError(`malformed multipart body: ${err instanceof Error ? err.message : String(err)}`, withCause);
  }
}

/**
 * Errors to clients: 4xx and deliberate HTTP errors (an AppError with its own `statusCode`, e.g.
 * 503 "no model yet", 503 overloaded) keep their message; anything else is a fault whose message
 * may hold addresses, paths or credentials: the client gets a generic message and the request id,
 * the log gets the Error under that id.
 */
function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply, logger: Logger): FastifyReply {
  const status = httpStatusOf(err);
  if (err instanceof OverloadedError) void reply.header('retry-after', String(err.retryAfterSeconds));
  const deliberate = err instanceof AppError && typeof (err as { statusCode?: unknown }).statusCode === 'number';
  if (status >= 500 && !deliberate) {
    logger.error({ err, requestId: req.id, method: req.method, route: req.routeOptions.url }, 'request failed');
    return reply.status(status).send({ error: 'internal error: the server logged the details under this request id', requestId: req.id });
  }
  const body: Record<string, unknown> = { error: err instanceof Error ? err.message : String(err) };
  if (err instanceof AppError) body.code = err.code;
  if (err instanceof ImageRejectedError) body.reason = err.reason;
  return reply.status(status).send(body);
}

function present(res: SearchResponse): SearchOutput {
  return presentSearch(res, { thumbnails: true });
}

/** The content type to serve an original as: a raster image type only (upload.ts UPLOAD_CONTENT_TYPES), else null. */
function rasterTypeOf(contentType: string | undefined, name: string): string | null {
  const types = new Set(Object.values(UPLOAD_CONTENT_TYPES));
  if (contentType && types.has(contentType)) return contentType;
  return UPLOAD_CONTENT_TYPES[path.posix.extname(name).slice(1).toLowerCase()] ?? null;
}

function httpStatusOf(err: unknown): number {
  if (err instanceof NotFoundError) return 404;
  if (err instanceof ParseError || err instanceof ImageRejectedError) return 400;
  if (err instanceof CapabilityError) return 409;
  const status = (err as { statusCode?: number }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

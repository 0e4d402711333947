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
import { OUTPUT_SCHEMA_VERSION, presentSearch, type SearchOutput, type StatusOutput } from '../output-schemas.js';
import type { VectorDocument } from '../ports/vector-index.js';
import { feedbackRequestSchema, MAX_FEEDBACK_BODY_BYTES, type FeedbackEvent, type ServedQuery } from '../services/feedback.js';
import type { SearchResponse, SearchService } from '../services/search-service.js';
import type { PipelineStatus } from '../services/status.js';
import { describeIssues } from '../validation.js';
import { ConcurrencyGate, OverloadedError, resolveHttpLimits, type HttpLimitOverrides } from './limits.js';
import { checkHost, checkSameOrigin, exposureWarning, helmetOptions, type NetworkMode } from './security.js';
import { ThumbnailCache } from './thumbnails.js';

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
  readObject: (uri: string) => Promise<Buffer>;
  logger: Logger;
  webDir: string;
  recordFeedback?: (event: FeedbackEvent, served: ServedQuery) => Promise<void>;
  listModels?: () => Promise<ModelVersion[]>;
  metricsPlot?: () => Promise<Buffer | null>;
  /** Where the app listens (decides the Host check, proxy trust, HSTS, the exposure warning); default local on 127.0.0.1. */
  network?: NetworkMode;
  /** Size, concurrency, rate and time limits over {@link defaultHttpLimits}. */
  limits?: HttpLimitOverrides;
}

const querySchema = z.object({
  similarTo: z.string().min(1).optional(),
  q: z.string().min(1).max(500).optional(),
  k: z.coerce.number().int().min(1).max(200).default(12),
  label: z.string().optional(),
  minScore: z.coerce.number().min(-1).max(1).optional(),
});

/** The page's files (web/), each with its content type: nothing else from that folder is served. */
const staticFiles: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
};

/** The body is larger than this route accepts: 413, before (or while) it is read. */
export class PayloadTooLargeError extends AppError {
  override readonly code = 'PAYLOAD_TOO_LARGE';
  readonly statusCode = 413;
}

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

  await app.register(helmet, helmetOptions(network));
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

  // Every poll of every open page asks for the status: concurrent calls share one computation.
  let statusInFlight: Promise<StatusResponse> | null = null;
  app.get('/api/status', async (): Promise<StatusOutput> => {
    statusInFlight ??= deps.status().finally(() => (statusInFlight = null));
    return { schemaVersion: OUTPUT_SCHEMA_VERSION, ...(await statusInFlight) };
  });

  app.get('/api/search', { config: searchRate }, async (req) => {
    const q = parse(querySchema, req.query);
    const opts = { k: q.k, minScore: q.minScore, filter: q.label ? { labels: [q.label] } : undefined };
    if (q.similarTo) return present(await deps.search.similarTo(q.similarTo, opts));
    if (q.q) return present(await deps.search.byText(q.q, opts));
    throw new ParseError('give ?similarTo=<id> or ?q=<text>, or POST an image');
  });

  // Uploads being read or waiting count against one bound (memory: at most that many bodies of
  // maxQueryBytes); decodes against a smaller one (CPU).
  const uploads = new ConcurrencyGate('query images', limits.queryDecodes.concurrent + limits.queryDecodes.queued, 0);
  // Stryker disable next-line StringLiteral: equivalent, this gate never refuses (uploads admits at most concurrent + queued, what it holds); uploads' refusal says "query images"
  const decodes = new ConcurrencyGate('query images', limits.queryDecodes.concurrent, limits.queryDecodes.queued);
  app.post('/api/search', { config: searchRate }, async (req, reply) => {
    const q = parse(querySchema, req.query);
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limits.maxQueryBytes + 64 * 1024) {
      void reply.header('connection', 'close');
      throw new PayloadTooLargeError(`the query image exceeds ${limits.maxQueryBytes} bytes (Content-Length ${declared})`);
    }
    try {
      return await uploads.run(async () => {
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

  // A click counts only for a result served for that query (the answer's signed token), once per
  // query and result; fields and body are capped (services/feedback.ts).
  app.post('/api/feedback', { bodyLimit: MAX_FEEDBACK_BODY_BYTES }, async (req, reply) => {
    const body = parse(feedbackRequestSchema, req.body);
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

function parse<T extends z.ZodTypeAny>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const message = describeIssues(r.error, { root: 'request' });
  // Stryker disable next-line ObjectLiteral: the cause is kept by convention (errors.ts); a 400 is neither logged nor answered with it, so nothing reads it
  throw new ParseError(message, { cause: r.error });
}

function httpStatusOf(err: unknown): number {
  if (err instanceof NotFoundError) return 404;
  if (err instanceof ParseError || err instanceof ImageRejectedError) return 400;
  if (err instanceof CapabilityError) return 409;
  const status = (err as { statusCode?: number }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

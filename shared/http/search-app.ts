import { promises as fs } from 'node:fs';
import path from 'node:path';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { z } from 'zod';
import { CapabilityError, ImageRejectedError, AppError, NotFoundError, ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { ModelVersion } from '../ports/model-registry.js';
import type { VectorDocument } from '../ports/vector-index.js';
import type { SearchResponse, SearchService } from '../services/search-service.js';
import type { PipelineStatus } from '../services/status.js';
import { describeIssues } from '../validation.js';

export interface FeedbackEvent {
  query: { kind: 'image' | 'similar' | 'text'; value?: string };
  resultId: string;
  action: 'open' | 'more-like-this';
  at: string;
}

/**
 * What `GET /api/status` answers: the pipeline status; `model` is null, with a `notice` saying who
 * registers the first model, while a cloud stack has none yet (searches answer 503 meanwhile).
 */
export type StatusResponse = Omit<PipelineStatus, 'model'> & { model: PipelineStatus['model'] | null; notice?: string };

export interface SearchAppDeps {
  search: SearchService;
  status: () => Promise<StatusResponse>;
  getDocument: (id: string) => Promise<VectorDocument | null>;
  readObject: (uri: string) => Promise<Buffer>;
  logger: Logger;
  webDir: string;
  recordFeedback?: (event: FeedbackEvent) => Promise<void>;
  listModels?: () => Promise<ModelVersion[]>;
  metricsPlot?: () => Promise<Buffer | null>;
  maxUploadBytes?: number;
}

const querySchema = z.object({
  similarTo: z.string().min(1).optional(),
  q: z.string().min(1).max(500).optional(),
  k: z.coerce.number().int().min(1).max(200).default(12),
  label: z.string().optional(),
  minScore: z.coerce.number().min(-1).max(1).optional(),
});

const feedbackSchema = z.object({
  query: z.object({ kind: z.enum(['image', 'similar', 'text']), value: z.string().optional() }),
  resultId: z.string().min(1),
  action: z.enum(['open', 'more-like-this']),
});

const staticFiles: Record<string, string> = {
  '/': 'index.html',
  '/app.js': 'app.js',
  '/style.css': 'style.css',
};
const staticTypes: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/**
 * The search API and web page: `POST /api/search` (image upload), `GET /api/search?similarTo=…|q=…`,
 * `GET /api/status`, thumbnails, feedback. The same app runs under `imgsearch up` and as the
 * Cloud Run search service.
 */
export async function buildSearchApp(deps: SearchAppDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  await app.register(multipart, { limits: { fileSize: deps.maxUploadBytes ?? 50 * 1024 * 1024, files: 1 } });

  app.setErrorHandler((err, _req, reply) => {
    const status = httpStatusOf(err);
    if (status >= 500) deps.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'request failed');
    const body: Record<string, unknown> = { error: err instanceof Error ? err.message : String(err) };
    if (err instanceof AppError) body.code = err.code;
    if (err instanceof ImageRejectedError) body.reason = err.reason;
    void reply.status(status).send(body);
  });

  for (const [route, file] of Object.entries(staticFiles)) {
    app.get(route, async (_req, reply) => {
      const body = await fs.readFile(path.join(deps.webDir, file));
      return reply.type(staticTypes[path.extname(file)] ?? 'application/octet-stream').send(body);
    });
  }

  app.get('/api/status', async () => deps.status());

  app.get('/api/search', async (req) => {
    const q = parse(querySchema, req.query);
    const opts = { k: q.k, minScore: q.minScore, filter: q.label ? { labels: [q.label] } : undefined };
    if (q.similarTo) return present(await deps.search.similarTo(q.similarTo, opts));
    if (q.q) return present(await deps.search.byText(q.q, opts));
    throw new ParseError('give ?similarTo=<id> or ?q=<text>, or POST an image');
  });

  app.post('/api/search', async (req) => {
    const q = parse(querySchema, req.query);
    const file = await req.file();
    if (!file) throw new ParseError('upload an image in the multipart field "image"');
    const data = await file.toBuffer();
    if (file.file.truncated) throw new ImageRejectedError('too-large', 'the upload exceeds the size limit');
    return present(await deps.search.byImage(data, { k: q.k, minScore: q.minScore, filter: q.label ? { labels: [q.label] } : undefined }));
  });

  app.get('/api/images/:id/thumbnail', async (req, reply) => {
    const { id } = req.params as { id: string };
    const doc = await deps.getDocument(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    const thumb = await sharp(await deps.readObject(doc.uri), { limitInputPixels: 100_000_000 })
      .rotate()
      .resize(256, 256, { fit: 'inside', withoutEnlargement: false, kernel: 'nearest' })
      .jpeg({ quality: 80 })
      .toBuffer();
    return reply.type('image/jpeg').header('cache-control', 'max-age=60').send(thumb);
  });

  app.post('/api/feedback', async (req, reply) => {
    const body = parse(feedbackSchema, req.body);
    if (!deps.recordFeedback) throw new CapabilityError('feedback is not recorded by this deployment');
    await deps.recordFeedback({ ...body, at: new Date().toISOString() });
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

function present(res: SearchResponse) {
  return {
    modelVersion: res.modelVersion,
    query: res.query,
    results: res.results.map((h) => ({
      id: h.id,
      uri: h.uri,
      name: h.uri.split('/').pop() ?? h.uri,
      score: Number(h.score.toFixed(6)),
      labels: h.labels,
      caption: h.caption,
      thumbnailUrl: `/api/images/${h.id}/thumbnail`,
    })),
  };
}

function parse<T extends z.ZodTypeAny>(schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw new ParseError(describeIssues(r.error, { root: 'request' }), { cause: r.error });
  return r.data;
}

function httpStatusOf(err: unknown): number {
  if (err instanceof NotFoundError) return 404;
  if (err instanceof ParseError || err instanceof ImageRejectedError) return 400;
  if (err instanceof CapabilityError) return 409;
  const status = (err as { statusCode?: number }).statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

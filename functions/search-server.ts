import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { GcsBlobStore } from '../shared/adapters/gcp/gcs-blob-store.js';
import { GcsRejectionLog } from '../shared/adapters/gcp/gcs-rejection-log.js';
import { GcsSignedUploads, type SigningStorage } from '../shared/adapters/gcp/gcs-signed-uploads.js';
import { CapabilityError, NotFoundError } from '../shared/errors.js';
import { defaultHttpLimits, type HttpLimitOverrides } from '../shared/http/limits.js';
import { buildSearchApp, type StatusResponse } from '../shared/http/search-app.js';
import type { Logger } from '../shared/logger.js';
import type { BlobStore } from '../shared/ports/blob-store.js';
import type { Embedder } from '../shared/ports/embedder.js';
import type { EventBus } from '../shared/ports/event-bus.js';
import type { SignedImageUploads } from '../shared/ports/image-uploads.js';
import type { ModelVersion } from '../shared/ports/model-registry.js';
import type { RejectionLog } from '../shared/ports/rejection-log.js';
import type { SearchEventSink } from '../shared/ports/search-events.js';
import type { VectorIndex, VectorIndexCatalog } from '../shared/ports/vector-index.js';
import { CollectionMap, QueryVectorCapture } from '../shared/services/collection-map.js';
import {
  blobFeedbackWriter,
  monitoredFeedback,
  ServedQueries,
  type CreateOnlyStore,
  type FeedbackEvent,
  type ServedQuery,
} from '../shared/services/feedback.js';
import { LiveIndexCache } from '../shared/services/live-index-cache.js';
import { ModelHolder, NoActiveModelError } from '../shared/services/model-holder.js';
import type { QueryVectorSink } from '../shared/services/drift.js';
import { ObjectQueryVectorSink } from '../shared/services/query-vector-objects.js';
import { SearchService, type SearchRequest, type SearchResponse } from '../shared/services/search-service.js';
import { pipelineStatus, StatusSnapshots } from '../shared/services/status.js';
import { bootstrapJobHint, cloudConfig, type CloudConfig } from '../shared/wiring/cloud-config.js';
import { cloudIndexCatalog, cloudLogger, cloudModelRegistry, cloudSearchEvents, storageClient } from '../shared/wiring/cloud.js';

export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../web');

export interface SearchServiceDeps {
  catalog: Pick<VectorIndexCatalog, 'live'>;
  /**
   * The model (a ModelHolder over the GCS registry in the cloud): it starts as the registry's
   * active version and then follows the live index, so queries always use the model the index was
   * built with — also while a promoted model's index is still being built by the reindex job.
   * Before the bootstrap job registered a first model, `get()` throws NoActiveModelError: the
   * service still starts, searches answer 503 with that message, and the first request after a
   * model became active loads it.
   */
  model: Pick<ModelHolder, 'get' | 'current' | 'forVersion'>;
  rejections: RejectionLog;
  /** Reads an original image by URI (thumbnails). */
  readObject(uri: string, options?: { maxBytes?: number }): Promise<Buffer>;
  recordFeedback?(event: FeedbackEvent, served: ServedQuery): Promise<void>;
  /** Feedback tokens: every instance must share the key (FEEDBACK_TOKEN_KEY), or a click reaching another instance is refused. */
  served?: ServedQueries;
  listModels?(): Promise<ModelVersion[]>;
  logger: Logger;
  webDir?: string;
  /** Size, concurrency, rate and time limits of the HTTP app (defaults: shared/http/limits.ts). */
  limits?: HttpLimitOverrides;
  /** Who registers the first model and how (shown by /api/status while there is none). */
  noModelHint?: string;
  /** Proxies in front that append to X-Forwarded-For (TRUSTED_PROXY_HOPS): 1 (default) on Cloud Run, 2 behind the public load balancer. */
  trustedProxyHops?: number;
  /** Prediction monitoring: one event per search and per recorded click (Cloud Logging entries in the cloud). */
  events?: SearchEventSink;
  /** Uploads from the page: signed URLs for new objects in the images bucket (README, "The web page"); absent: none. */
  uploads?: SignedImageUploads;
  /** Where each image query's vector goes for the drift check (`query-vectors/` of the features bucket); absent: not sampled. */
  queryVectors?: QueryVectorSink;
}

/**
 * The search service has no access to the queues (no Pub/Sub role): the status shows them as
 * unknown (-1) instead of inventing numbers. Everything else about the pipeline status is real.
 */
const queuesUnknown: EventBus = {
  publish: () => Promise.reject(new CapabilityError('the search service does not publish messages')),
  publishBatch: () => Promise.reject(new CapabilityError('the search service does not publish messages')),
  pull: () => Promise.reject(new CapabilityError('the search service does not pull messages')),
  ack: () => Promise.resolve(),
  nack: () => Promise.resolve(),
  extendDeadline: () => Promise.resolve(),
  deadLetter: () => Promise.reject(new CapabilityError('the search service does not dead-letter messages')),
  listDeadLetters: () => Promise.resolve([]),
  stats: () => Promise.resolve({ ready: -1, inflight: -1, deadLettered: -1 }),
  close: () => Promise.resolve(),
};

/**
 * `pipelineStatus` reads only the model's identity; before the first model exists there is none,
 * and the status answers `model: null` instead (this stand-in is never used for inference).
 */
const NO_MODEL_YET = { modelVersion: '', dimension: 0, hasTextTower: false, manifest: { name: '' } } as unknown as Embedder;

/** Each search first makes sure a model is loaded: NoActiveModelError (503) until one is active. */
class SearchWhenModelReady extends SearchService {
  constructor(
    private readonly ready: () => Promise<Embedder>,
    ...args: ConstructorParameters<typeof SearchService>
  ) {
    super(...args);
  }
  override async byImage(image: Buffer, req: SearchRequest): Promise<SearchResponse> {
    await this.ready();
    return super.byImage(image, req);
  }
  override async similarTo(id: string, req: SearchRequest): Promise<SearchResponse> {
    await this.ready();
    return super.similarTo(id, req);
  }
  override async byText(text: string, req: SearchRequest): Promise<SearchResponse> {
    await this.ready();
    return super.byText(text, req);
  }
}

/** The model, or null while the registry has none active (any other failure is thrown). */
async function modelOrNull(model: Pick<ModelHolder, 'get'>): Promise<Embedder | null> {
  try {
    return await model.get();
  } catch (err) {
    if (err instanceof NoActiveModelError) return null;
    throw err;
  }
}

/**
 * The Cloud Run search service: the same fastify app as `imgsearch up` (page + API), wired to
 * OpenSearch, the GCS model registry and GCS objects. Built from its ports so tests use fakes.
 * It starts on an empty registry too (a new stack whose bootstrap job has not run yet).
 */
export async function createSearchService(deps: SearchServiceDeps): Promise<FastifyInstance> {
  try {
    await deps.model.get();
  } catch (err) {
    if (!(err instanceof NoActiveModelError)) throw err;
    deps.logger.warn({ code: err.code }, `${err.message}; serving the page and status, searches answer 503 until a model is active`);
  }
  const live = new LiveIndexCache(() => deps.catalog.live());
  const liveIndex = (): Promise<VectorIndex | null> => live.get();
  // The collection map places a search's query by its vector, remembered (per instance) under the
  // answer's queryId; a locate reaching another instance gets the results' places only.
  const capture = new QueryVectorCapture();
  const search = new SearchWhenModelReady(
    () => deps.model.get(),
    () => deps.model.current(),
    async () => capture.watch(await liveIndex()),
    (version) => deps.model.forVersion(version),
    deps.served,
    deps.events,
  );
  search.queryVectors = deps.queryVectors ?? null;
  const snapshots = new StatusSnapshots();
  const status = async (): Promise<StatusResponse> => {
    const embedder = await modelOrNull(deps.model);
    const s = await pipelineStatus({
      bus: queuesUnknown,
      index: await liveIndex(),
      rejections: deps.rejections,
      embedder: embedder ?? NO_MODEL_YET,
      // Each record is a GCS read: read again at most every 15 s, and only when the listing changed (or after 2 min).
      rejectionCache: { minIntervalMs: 15_000, maxAgeMs: 120_000 },
      snapshots,
    });
    const known = { ...s, pending: -1, deadLettered: { count: -1, items: [] } };
    if (embedder) return known;
    return { ...known, model: null, notice: new NoActiveModelError(deps.noModelHint).message };
  };
  return buildSearchApp({
    search: capture.search(search),
    map: new CollectionMap({ index: liveIndex, queries: capture.recent, logger: deps.logger }),
    status,
    getDocument: async (id) => (await liveIndex())?.get(id) ?? null,
    readObject: (uri, options) => deps.readObject(uri, options),
    logger: deps.logger,
    webDir: deps.webDir ?? webDir,
    recordFeedback: deps.recordFeedback && deps.events ? monitoredFeedback(deps.recordFeedback, deps.events) : deps.recordFeedback,
    listModels: deps.listModels,
    // Behind Cloud Run's front end (and the public load balancer): no Host check (the platform routes by host).
    network: { mode: 'cloud', trustedProxyHops: deps.trustedProxyHops ?? 1 },
    limits: deps.limits,
    uploads: deps.uploads,
  });
}

/** `gs://<images bucket>/<name>` → bytes; other buckets are refused (the URI comes from the index). */
export function gcsObjectReader(images: BlobStore, maxBytes: number): (uri: string, options?: { maxBytes?: number }) => Promise<Buffer> {
  return async (uri, options) => {
    const prefix = `gs://${images.bucket}/`;
    if (!uri.startsWith(prefix)) throw new NotFoundError(`${uri} is not in the images bucket ${images.bucket}`);
    // The route's own limit when it is smaller (originals: 32 MiB), so nothing larger is downloaded.
    return images.read(uri.slice(prefix.length), { maxBytes: Math.min(maxBytes, options?.maxBytes ?? maxBytes) });
  };
}

/**
 * Uploads from the page, as UPLOADS says (the stack sets it from `search.access`): `signed-url`, the
 * browser PUTs each file to the images bucket under the watched prefix and the bucket's finalize
 * event runs the normal pipeline (signing: the service's own account, via signBlob); `off` (public
 * access: anyone could add images), none — the page says uploads are unavailable.
 */
export function pageUploads(
  config: Pick<CloudConfig<'search'>, 'UPLOADS' | 'IMAGES_BUCKET' | 'IMAGE_PREFIX' | 'MAX_BYTES'>,
  storage: SigningStorage,
): SignedImageUploads | undefined {
  return config.UPLOADS === 'signed-url' ? new GcsSignedUploads(storage, config.IMAGES_BUCKET, config.IMAGE_PREFIX, config.MAX_BYTES) : undefined;
}

/** Builds the real dependencies from the environment and serves on $PORT. */
export async function startSearchService(): Promise<{ app: FastifyInstance; close(): Promise<void> }> {
  const config = cloudConfig('search');
  const logger = cloudLogger('search');
  const storage = storageClient();
  const catalog = await cloudIndexCatalog(config, logger);
  const registry = cloudModelRegistry(storage, config.MODELS_BUCKET, logger);
  // Read-only on the models bucket: the first model comes from the bootstrap job. Until then the
  // holder answers NoActiveModelError (503) and asks the registry again every few seconds.
  const noModelHint = bootstrapJobHint(config);
  const model = new ModelHolder(registry, { maxPixels: config.MAX_PIXELS, logger, absentHint: noModelHint });
  const features = new GcsBlobStore(storage, config.FEATURES_BUCKET);
  const queryVectors = querySampleSink(config, features, logger);
  if (!config.FEEDBACK_TOKEN_KEY) logger.warn('FEEDBACK_TOKEN_KEY is not set: clicks reaching another instance than their search are refused');
  const app = await createSearchService({
    catalog,
    model,
    rejections: new GcsRejectionLog(features),
    readObject: gcsObjectReader(new GcsBlobStore(storage, config.IMAGES_BUCKET), config.MAX_BYTES),
    recordFeedback: blobFeedbackWriter(features),
    served: new ServedQueries({ key: config.FEEDBACK_TOKEN_KEY }),
    listModels: () => registry.list(),
    logger,
    // A query image is never larger than an indexed one.
    limits: { maxQueryBytes: Math.min(config.MAX_BYTES, defaultHttpLimits.maxQueryBytes) },
    noModelHint,
    trustedProxyHops: config.TRUSTED_PROXY_HOPS,
    events: cloudSearchEvents('search'),
    uploads: pageUploads(config, storage),
    queryVectors: queryVectors ?? undefined,
  });
  await app.listen({ host: '0.0.0.0', port: config.PORT });
  logger.info({ port: config.PORT, modelVersion: (await modelOrNull(model))?.modelVersion ?? null }, 'search service listening');
  // No polling of the registry: a promotion or rollback reaches queries when the alias moves (and
  // the first model is picked up by the first request after it became active).
  return { app, close: () => closeSearchService({ app, queryVectors, model, catalog, logger }) };
}

/**
 * The drift check's query sample, as QUERY_SAMPLE_RATE says: that share of image-query vectors, in
 * batches under query-vectors/ of the features bucket (create-only, like feedback); at 0 none (and
 * the stack grants no create there).
 */
export function querySampleSink(
  config: Pick<CloudConfig<'search'>, 'QUERY_SAMPLE_RATE'>,
  features: CreateOnlyStore,
  logger: Logger,
): ObjectQueryVectorSink | null {
  if (config.QUERY_SAMPLE_RATE <= 0) {
    logger.info('QUERY_SAMPLE_RATE is 0: no image query is sampled for the drift check');
    return null;
  }
  return new ObjectQueryVectorSink(features, { rate: config.QUERY_SAMPLE_RATE, logger });
}

/** How long shutdown waits for the query sample's last writes (Cloud Run allows 10 s after SIGTERM). */
export const QUERY_SAMPLE_SHUTDOWN_MS = 5000;

/**
 * Shutdown within Cloud Run's 10 s SIGTERM grace: the query sample's writes start at once, beside
 * the HTTP server's close (which waits for requests in flight), and are waited for at most
 * `flushMs` from the start; then the model and the catalog close. What the requests in flight
 * added meanwhile is written within the same budget.
 */
export async function closeSearchService(
  parts: {
    app: { close(): PromiseLike<unknown> };
    queryVectors: Pick<ObjectQueryVectorSink, 'flush'> | null;
    model: Pick<ModelHolder, 'close'>;
    catalog: { close(): Promise<void> };
    logger: Logger;
  },
  flushMs = QUERY_SAMPLE_SHUTDOWN_MS,
): Promise<void> {
  const { app, queryVectors, model, catalog, logger } = parts;
  const deadline = Date.now() + flushMs;
  const firstFlush = queryVectors?.flush(flushMs);
  try {
    await app.close();
  } catch (err) {
    logger.warn({ err }, 'search service: the HTTP server did not close cleanly');
  }
  if (queryVectors) await Promise.all([firstFlush, queryVectors.flush(Math.max(0, deadline - Date.now()))]);
  await model.close();
  await catalog.close();
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (isMain) {
  startSearchService()
    .then((service) => {
      process.once('SIGTERM', () => {
        void service.close().finally(() => process.exit(0));
      });
    })
    .catch((err: unknown) => {
      cloudLogger('search').fatal({ err }, 'search service failed to start');
      process.exit(1);
    });
}

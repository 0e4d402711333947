import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { LocalConfig } from '../config.js';
import { FileQueue } from '../adapters/local/file-queue.js';
import { FolderBlobStore } from '../adapters/local/folder-blob-store.js';
import { FolderUploads } from '../adapters/local/folder-uploads.js';
import { acquireHomeLock, type AcquireOptions, type HomeLock } from '../adapters/local/home-lock.js';
import { JsonRejectionLog } from '../adapters/local/json-rejection-log.js';
import { PerTowerFeatureStore } from '../adapters/local/per-tower-feature-store.js';
import { LanceDbIndexCatalog } from '../adapters/local/lancedb-index.js';
import { LocalModelRegistry } from '../adapters/local/local-model-registry.js';
import { FileQueryVectorSample } from '../adapters/local/query-sample-file.js';
import { JsonlSearchEventLog } from '../adapters/local/search-event-log.js';
import { AppError, NotFoundError } from '../errors.js';
import type { FeedbackEvent } from '../http/search-app.js';
import { createLogger, type Logger } from '../logger.js';
import { AnnMaintenance, DEFAULT_ANN_POLICY } from '../services/ann-maintenance.js';
import { BlobDriftStateStore, driftOutput, PeriodicDriftCheck, runDriftCheck, type DriftCheckDeps } from '../services/drift.js';
import { ensureActiveModel } from '../services/model-bootstrap.js';
import { monitoredFeedback } from '../services/feedback.js';
import { releaseOrphanedLeases } from '../services/doctor.js';
import { LiveIndexCache } from '../services/live-index-cache.js';
import { ModelHolder } from '../services/model-holder.js';
import { SearchService } from '../services/search-service.js';
import type { QueryVectorCapture } from '../services/collection-map.js';
import { pipelineStatus, StatusSnapshots } from '../services/status.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { VectorIndex, VectorIndexCatalog } from '../ports/vector-index.js';
import type { EmbedDeps } from '../handlers/embed-batch.js';
import type { UpsertDeps } from '../handlers/upsert-vectors.js';
import type { activateWithIndex, LifecycleDeps } from '../services/model-lifecycle.js';
import type { RetrainDeps } from '../services/retrain.js';
import { PipelineWorkers, type PipelineOptions } from '../services/pipeline.js';
import { PipelineHealth } from '../services/pipeline-health.js';

/** The web page (served by local `up`; the cloud search service serves its own copy beside its bundle). */
export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../web');

/**
 * Local mode: every port wired to its embedded adapter under one data directory
 * (`IMGSEARCH_HOME`), plus the model. The handlers are the ones the cloud runs.
 */
export interface LocalRuntime {
  config: LocalConfig;
  logger: Logger;
  bucket: FolderBlobStore;
  bus: FileQueue;
  catalog: VectorIndexCatalog;
  registry: LocalModelRegistry;
  rejections: JsonRejectionLog;
  features: PerTowerFeatureStore;
  model: ModelHolder;
  blobsFor(bucket: string): BlobStore;
  /** The live index (the alias target), looked up again every few seconds. */
  live: LiveIndexCache;
  /** The live index; on the very first start, one is created for the active model. */
  liveIndex(): Promise<VectorIndex>;
  embedDeps(): EmbedDeps;
  upsertDeps(): Promise<UpsertDeps>;
  /** The writer lock of the data directory, when opened as a writer. */
  lock: HomeLock | null;
  /** Files of the bucket folder that are not indexed for a reason other than a rejection (not images, hidden, links…). */
  ignored: JsonRejectionLog;
  /** What is failing in this process's pipeline right now (shown by /api/status). */
  health: PipelineHealth;
  /**
   * The embedded index's ANN maintenance (built past `config.ann.minRows`, folded in, retrained as
   * the collection grows), in the background; `up` starts it, close() stops it. Null with OpenSearch,
   * which keeps its own graphs.
   */
  ann: AnnMaintenance | null;
  /** Prediction-monitoring events of this process (searches, clicks, freshness), flushed by close(). */
  events: JsonlSearchEventLog;
  /** The bounded sample of recent image-query vectors the drift report compares (`<home>/drift`); null when IMGSEARCH_DRIFT_QUERY_SAMPLE=0. */
  driftQueries: FileQueryVectorSample | null;
  close(): Promise<void>;
}

export interface LocalRuntimeOptions {
  logger?: Logger;
  /**
   * Opens the data directory as its one writer (home-lock.ts): the lock is taken before anything
   * is opened, for `command` (shown to a second writer), and released by close(). Leases left by
   * an earlier writer that is gone are handed back at once (every writer takes this lock, so any
   * lease found now is an orphan). Readers (search, status) leave it out.
   */
  writer?: { command: string } & AcquireOptions;
}

export async function openLocalRuntime(config: LocalConfig, options: LocalRuntimeOptions = {}): Promise<LocalRuntime> {
  const logger = options.logger ?? createLogger({ level: config.logLevel });
  const lock = options.writer ? await acquireHomeLock(config.home, options.writer.command, options.writer) : null;
  try {
    return await openUnderLock(config, logger, lock);
  } catch (err) {
    await lock?.release();
    throw err;
  }
}

async function openUnderLock(config: LocalConfig, logger: Logger, lock: HomeLock | null): Promise<LocalRuntime> {
  const bucket = new FolderBlobStore(config.bucketDir);
  const bus = new FileQueue(config.paths.queue, { maxDeliveryAttempts: config.maxAttempts, ackDeadlineSeconds: config.ackDeadlineSeconds, logger });
  const catalog: VectorIndexCatalog =
    config.index === 'opensearch'
      ? await (await import('../adapters/opensearch/index.js')).openOpenSearchCatalog({ ...config.opensearch, url: config.opensearch.url! })
      : await LanceDbIndexCatalog.open(config.paths.index);
  const registry = new LocalModelRegistry(config.paths.models);
  const rejections = new JsonRejectionLog(config.paths.rejected, { logger });
  const ignored = new JsonRejectionLog(path.join(config.home, 'ignored'), { logger });
  const features = await PerTowerFeatureStore.open(config.paths.features);
  const events = localEventLog(config, logger);
  const driftQueries =
    config.drift.querySample > 0
      ? new FileQueryVectorSample(path.join(config.paths.drift, 'queries.json'), { capacity: config.drift.querySample, logger })
      : null;
  const model = new ModelHolder(registry, { threads: config.threads, maxPixels: config.maxPixels, logger });
  await ensureActiveModel(registry, path.join(config.paths.cache, 'converted'), logger);
  if (lock) {
    const released = await releaseOrphanedLeases(bus, 'released: the process that held it is gone');
    if (released > 0) logger.info({ released, previousHolder: lock.tookOver }, 'leases of an earlier writer handed back');
  }

  const stores = new Map<string, BlobStore>([[bucket.bucket, bucket]]);
  const blobsFor = (name: string): BlobStore => {
    let store = stores.get(name);
    if (!store) {
      store = new FolderBlobStore(name);
      stores.set(name, store);
    }
    return store;
  };

  // The alias target; on the very first start there is none, and the index of the active model is created.
  const live = new LiveIndexCache(async () => {
    const embedder = await model.get();
    return catalog.ensureLive(embedder.modelVersion, embedder.dimension);
  });
  const liveIndex = async (): Promise<VectorIndex> => (await live.get())!;
  const ann =
    config.index === 'lancedb'
      ? new AnnMaintenance(() => live.get(), { ...DEFAULT_ANN_POLICY, minRows: config.ann.minRows, type: config.ann.type }, logger, config.ann.checkSeconds)
      : null;

  return {
    config,
    logger,
    bucket,
    bus,
    catalog,
    registry,
    rejections,
    features,
    model,
    blobsFor,
    live,
    liveIndex,
    embedDeps: () => ({
      blobs: blobsFor,
      embedder: model.current(),
      bus,
      rejections,
      features,
      logger,
      index: live.peek(),
      limits: { maxBytes: config.maxBytes },
    }),
    upsertDeps: async () => ({ index: await liveIndex(), bus, rejections, features, logger, events }),
    lock,
    ignored,
    health: new PipelineHealth(),
    ann,
    events,
    driftQueries,
    async close() {
      ann?.stop();
      try {
        await events.close();
        await driftQueries?.flush();
        await model.close();
        await bus.close();
        await catalog.close();
      } finally {
        await lock?.release();
      }
    },
  };
}

/** The prediction-monitoring event log under the data directory (`<home>/monitoring`), for writing and for `imgsearch monitor`. */
export function localEventLog(config: LocalConfig, logger: Logger): JsonlSearchEventLog {
  return new JsonlSearchEventLog(config.paths.monitoring, { logger });
}

/** What a drift check reads and where it keeps its state (`<home>/drift`); the caller adds how a retraining is requested. */
export function localDriftDeps(runtime: LocalRuntime): DriftCheckDeps {
  return {
    registry: runtime.registry,
    features: runtime.features,
    state: new BlobDriftStateStore(new FolderBlobStore(runtime.config.paths.drift)),
    queries: runtime.driftQueries ?? undefined,
    logger: runtime.logger,
  };
}

/**
 * `up`'s drift checks, every IMGSEARCH_DRIFT_CHECK_MINUTES (null when 0): when one says so, the
 * retraining runs here, as `imgsearch retrain` runs it ({@link localRetrainDeps}), and the check
 * records the request with its reasons (`imgsearch drift` shows them).
 */
export function localDriftChecks(runtime: LocalRuntime): PeriodicDriftCheck | null {
  const { config, logger } = runtime;
  if (config.drift.checkMinutes === 0) return null;
  const requestRetrain = async (reason: string): Promise<void> => {
    logger.warn({ reason }, 'drift check: retraining');
    const { retrain } = await import('../services/retrain.js');
    const result = await retrain(await localRetrainDeps(runtime));
    logger.info(
      { trigger: reason, version: result.candidate.version, promoted: result.promoted, gate: result.decision.reasons },
      'retraining asked by drift finished',
    );
  };
  return new PeriodicDriftCheck(
    () => runDriftCheck({ ...localDriftDeps(runtime), requestRetrain }, config.drift.settings),
    config.drift.checkMinutes * 60_000,
    logger,
  );
}

/**
 * A retraining the way `imgsearch retrain` runs it (the candidate goes live only through the gate
 * and the local promotion order, with the click feedback and the metrics plot); `up` uses it for
 * the retrainings its drift checks request.
 */
export async function localRetrainDeps(runtime: LocalRuntime): Promise<RetrainDeps<Awaited<ReturnType<ReturnType<typeof activateWithIndex>>>>> {
  const { activateWithIndex } = await import('../services/model-lifecycle.js');
  const { readFeedbackFile } = await import('../services/feedback.js');
  const lifecycle = lifecycleDeps(runtime);
  const feedbackFile = path.join(runtime.config.paths.feedback, 'feedback.jsonl');
  return {
    ...lifecycle,
    activate: activateWithIndex(lifecycle),
    feedback: async () => (await readFeedbackFile(feedbackFile, { logger: runtime.logger })).pairs,
    reportsDir: runtime.config.paths.reports,
  };
}

/** What promotion, rollback and retraining need from the local runtime. */
export function lifecycleDeps(runtime: LocalRuntime): LifecycleDeps {
  return {
    registry: runtime.registry,
    catalog: runtime.catalog,
    features: runtime.features,
    logger: runtime.logger,
    loadEmbedder: async (version) =>
      (await import('../model/load-embedder.js')).loadEmbedder(await runtime.registry.localPath(version), {
        maxPixels: runtime.config.maxPixels,
        threads: runtime.config.threads,
      }),
  };
}

/**
 * Queries the way the cloud search service answers them: with the model the live index was built
 * with. During a promotion's reindex the registry's active model (the one the pipeline embeds
 * with) is already the new one while the alias still points at the previous model's index: that
 * model is loaded beside it for queries, instead of refusing them (409) until the alias moves.
 */
export function localSearchService(runtime: LocalRuntime, capture?: QueryVectorCapture): SearchService {
  const service = new SearchService(
    () => runtime.model.current(),
    capture ? async () => capture.watch(await runtime.live.get()) : () => runtime.live.get(),
    (version) => runtime.model.forLiveIndex(version),
    undefined,
    runtime.events,
  );
  service.queryVectors = runtime.driftQueries;
  return service;
}

/** The page and API of `imgsearch up` (the same fastify app the cloud search service serves). */
export async function localSearchApp(runtime: LocalRuntime): Promise<FastifyInstance> {
  const extras = localPageSources(runtime);
  // fastify, sharp and the page load with `up`, not with every command that opens the runtime.
  const { buildSearchApp } = await import('../http/search-app.js');
  // Polls are answered from the last counts while the pipeline keeps the disk busy (status.ts).
  const snapshots = new StatusSnapshots();
  // The collection map places a search's query by its vector, remembered under the answer's queryId (collection-map.ts).
  const { CollectionMap, QueryVectorCapture } = await import('../services/collection-map.js');
  const capture = new QueryVectorCapture();
  return buildSearchApp({
    search: capture.search(localSearchService(runtime, capture)),
    map: new CollectionMap({ index: () => runtime.live.get(), queries: capture.recent, logger: runtime.logger }),
    status: async () =>
      pipelineStatus({
        bus: runtime.bus,
        index: await runtime.liveIndex(),
        rejections: runtime.rejections,
        embedder: runtime.model.current(),
        ignored: runtime.ignored,
        faults: runtime.health.current(),
        rejectionCache: {},
        snapshots,
      }),
    getDocument: async (id) => (await runtime.liveIndex()).get(id),
    readObject: (uri, options) => extras.readObject(uri, options),
    logger: runtime.logger,
    webDir,
    recordFeedback: monitoredFeedback(extras.recordFeedback, runtime.events),
    listModels: () => runtime.registry.list(),
    metricsPlot: extras.metricsPlot,
    network: { mode: 'local', host: runtime.config.host },
    limits: { maxQueryBytes: runtime.config.maxQueryBytes },
    // The page adds images straight into the watched folder (never replacing one) and rolls the model back like `imgsearch model rollback`.
    uploads: new FolderUploads(runtime.bucket, runtime.config.prefix, runtime.config.maxBytes),
    rollbackModel: async () => (await import('../services/model-lifecycle.js')).rollbackModel(lifecycleDeps(runtime)),
    maxOriginalBytes: runtime.config.maxBytes,
    // The page's Monitoring tab: `imgsearch monitor --json` and `imgsearch drift --json`, the same figures.
    monitor: { events: runtime.events },
    drift: () => driftOutput(localDriftDeps(runtime), runtime.config.drift.settings),
  });
}

/** Local implementations of the page's extra needs: reading originals, feedback, the metrics plot. */
export function localPageSources(runtime: LocalRuntime) {
  return {
    /** With `maxBytes`, a larger file is refused (AppError with meta.maxBytes) before it is read. */
    async readObject(uri: string, options: { maxBytes?: number } = {}): Promise<Buffer> {
      if (!uri.startsWith('file://')) throw new NotFoundError(`cannot read ${uri} in local mode`);
      const file = await fs.open(uri.slice('file://'.length), 'r');
      try {
        const { size } = await file.stat();
        if (options.maxBytes !== undefined && size > options.maxBytes) {
          throw new AppError(`${uri} is ${size} bytes, over the ${options.maxBytes}-byte limit`, { meta: { size, maxBytes: options.maxBytes } });
        }
        return await file.readFile();
      } finally {
        await file.close();
      }
    },
    async recordFeedback(event: FeedbackEvent): Promise<void> {
      await fs.mkdir(runtime.config.paths.feedback, { recursive: true });
      await fs.appendFile(path.join(runtime.config.paths.feedback, 'feedback.jsonl'), `${JSON.stringify(event)}\n`);
    },
    async metricsPlot(): Promise<Buffer | null> {
      return fs.readFile(path.join(runtime.config.paths.reports, 'metrics.png')).catch(() => null);
    },
  };
}

/**
 * The embed and upsert workers over this runtime's queue, index and model, with its batch size and
 * lease (the same wiring for `up`, `ingest`, the benches and the tests); `options` overrides.
 */
export function localPipelineWorkers(runtime: LocalRuntime, options: Partial<PipelineOptions> & { logger?: Logger } = {}): PipelineWorkers {
  const { logger = runtime.logger, ...overrides } = options;
  return new PipelineWorkers(
    runtime.bus,
    () => runtime.embedDeps(),
    () => runtime.upsertDeps(),
    logger,
    {
      batchSize: runtime.config.batchSize,
      ackDeadlineSeconds: runtime.config.ackDeadlineSeconds,
      health: runtime.health,
      ...overrides,
    },
  );
}

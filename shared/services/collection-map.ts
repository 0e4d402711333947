import { AsyncLocalStorage } from 'node:async_hooks';
import { Worker } from 'node:worker_threads';
import { CapabilityError, NotFoundError, ParseError } from '../errors.js';
import type { Logger } from '../logger.js';
import { pcaProject, Reservoir, type PcaFit } from '../map-math.js';
import type { QueryOptions, VectorIndex } from '../ports/vector-index.js';
import { mulberry32 } from '../training/prng.js';
import { MAP_BUSY_RETRY_SECONDS, MAP_SAMPLE_MAX, MapBusyError } from './collection-map-limits.js';
import type { SearchResponse, SearchService } from './search-service.js';
import type { FromMapWorker, ToMapWorker } from './collection-map-worker.js';

/**
 * The collection map (issue 12, item 3): a 2-D picture of a sample of the live index's embeddings.
 *
 * - The sample: every document when the index holds at most `sample` of them, otherwise a seeded
 *   reservoir sample over `VectorIndex.scan()` (so the same index gives the same sample).
 * - The computation runs in a worker thread (collection-map-worker.ts): PCA first (its 2-D view
 *   answers as soon as it is ready), k-means (k-means++ seeding) for k = 2..12 on the PCA-50
 *   coordinates with the silhouette of each on a seeded subsample of at most 2,000 points, then
 *   UMAP (umap-js) on the same PCA coordinates in the background.
 * - One map is kept per (index version, model version, sample size) — the last `maxEntries` of
 *   them — and recomputed when the index's count has moved by more than `staleFraction` since.
 * - `locate` places a query (its vector from {@link RecentQueryVectors}) and results on the map
 *   the page last asked for: points of the sample where they are, anything else projected with the
 *   fitted PCA or umap-js's `transform`.
 */
export type MapMethod = 'pca' | 'umap';

export { MAP_K_MAX, MAP_K_MIN, MAP_SAMPLE_DEFAULT, MAP_SAMPLE_MAX, MAP_SAMPLE_SIZES, MapBusyError, snapMapSample } from './collection-map-limits.js';

export interface MapPoint {
  id: string;
  name: string;
  x: number;
  y: number;
  /** The document's first label, or null. */
  label: string | null;
  cluster: number;
}

export interface MapAnswer {
  points: MapPoint[];
  /** The number of clusters the points are coloured with. */
  k: number;
  silhouette: { k: number; score: number }[];
  method: MapMethod;
  /** Documents in the index when the map was computed. */
  total: number;
  /** Points in the map. */
  sample: number;
  computedAt: string;
}

/** The numerics' settings (the computation itself is collection-map-compute.ts, run in the worker). */
export interface MapComputeSettings {
  seed: number;
  /** PCA components kept for k-means, silhouette and UMAP (the 2-D PCA view is the first two). */
  pcaComponents: number;
  /** Rows the PCA basis is fitted on (a seeded subsample; every row is then projected). */
  pcaBasisRows: number;
  kMin: number;
  kMax: number;
  /** Points the silhouette is computed on (a seeded subsample: its cost grows with the square). */
  silhouetteSample: number;
  /** Points k-means is fitted on for each k (a seeded subsample); every point then joins its nearest centroid. */
  kMeansSample: number;
  umapNeighbors: number;
  /** UMAP epochs (0: umap-js's default, 500 for small samples down to 200 above 10,000 points). */
  umapEpochs: number;
}

export const DEFAULT_MAP_COMPUTE: MapComputeSettings = {
  seed: 20261127,
  pcaComponents: 50,
  pcaBasisRows: 3000,
  kMin: 2,
  kMax: 12,
  silhouetteSample: 2000,
  kMeansSample: 5000,
  umapNeighbors: 15,
  // 200 at every size (what umap-js uses above 10,000 points): small samples do not need 500.
  umapEpochs: 200,
};

/** `ready` with a map, or (only when UMAP was asked for explicitly) `computing` with how far it is. */
export type MapResult = { status: 'ready'; map: MapAnswer } | { status: 'computing'; method: 'umap'; progress: number; retryAfterSeconds: number };

export interface MapRequest {
  sample: number;
  /** 'auto': the k with the best silhouette. */
  k: 'auto' | number;
  /** Absent: UMAP when it is ready, PCA until then. */
  method?: MapMethod;
}

export interface LocateAnswer {
  query: { x: number; y: number } | null;
  results: { id: string; x: number; y: number }[];
}

export interface ClusterSummary {
  cluster: number;
  images: number;
  /** The most common label in the cluster (null when none of its images has one). */
  topLabel: string | null;
  /** Share of the cluster's images carrying the top label. */
  topLabelShare: number;
}

/**
 * Each cluster's size and most common label, largest first, and the purity of the partition (share
 * of labelled images whose cluster's top label is theirs; null when no image is labelled).
 */
export function summariseClusters(points: Pick<MapPoint, 'cluster' | 'label'>[]): { clusters: ClusterSummary[]; purity: number | null } {
  const byCluster = new Map<number, { images: number; labels: Map<string, number> }>();
  for (const p of points) {
    const c = byCluster.get(p.cluster) ?? { images: 0, labels: new Map<string, number>() };
    c.images++;
    if (p.label !== null) c.labels.set(p.label, (c.labels.get(p.label) ?? 0) + 1);
    byCluster.set(p.cluster, c);
  }
  let labelled = 0;
  let agreeing = 0;
  const clusters = [...byCluster].map(([cluster, c]) => {
    let topLabel: string | null = null;
    let top = 0;
    for (const [label, count] of c.labels) {
      labelled += count;
      if (count > top || (count === top && topLabel !== null && label < topLabel)) [topLabel, top] = [label, count];
    }
    agreeing += top;
    return { cluster, images: c.images, topLabel, topLabelShare: Number((top / c.images).toFixed(4)) };
  });
  clusters.sort((a, b) => b.images - a.images || a.cluster - b.cluster);
  return { clusters, purity: labelled === 0 ? null : Number((agreeing / labelled).toFixed(4)) };
}

/** The query vectors of recent searches, by the answer's feedback queryId: a bounded LRU. */
export class RecentQueryVectors {
  private readonly entries = new Map<string, { vector: Float32Array; modelVersion: string }>();
  constructor(readonly capacity = 256) {}

  remember(queryId: string, vector: Float32Array, modelVersion: string): void {
    this.entries.delete(queryId);
    this.entries.set(queryId, { vector, modelVersion });
    while (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  get(queryId: string): { vector: Float32Array; modelVersion: string } | undefined {
    const hit = this.entries.get(queryId);
    if (hit) {
      this.entries.delete(queryId);
      this.entries.set(queryId, hit);
    }
    return hit;
  }

  get size(): number {
    return this.entries.size;
  }
}

type SearchMethods = Pick<SearchService, 'byImage' | 'similarTo' | 'byText'> & Partial<Pick<SearchService, 'served'>>;

/**
 * Remembers each search's query vector under its answer's feedback queryId, by wrapping the
 * search service in the composition root rather than changing it: the live index the service is
 * given (`watch`) reports the vector each `query()` is called with to the search running it
 * (AsyncLocalStorage keeps concurrent searches apart), and `search()` files it under the answer's
 * queryId once the answer is issued.
 */
export class QueryVectorCapture {
  private readonly running = new AsyncLocalStorage<{ vector?: Float32Array }>();
  private readonly watched = new WeakMap<VectorIndex, VectorIndex>();
  constructor(readonly recent: RecentQueryVectors = new RecentQueryVectors()) {}

  /** The index with its `query` reporting the vector to the search that runs it; every other member is the index's own. */
  watch(index: VectorIndex | null): VectorIndex | null {
    if (!index) return null;
    let proxy = this.watched.get(index);
    if (!proxy) {
      const running = this.running;
      proxy = new Proxy(index, {
        get(target, prop) {
          if (prop === 'query') {
            return (vector: Float32Array, options: QueryOptions) => {
              const slot = running.getStore();
              if (slot) slot.vector = vector;
              return target.query(vector, options);
            };
          }
          const value = Reflect.get(target, prop, target) as unknown;
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
      this.watched.set(index, proxy);
    }
    return proxy;
  }

  /** The service's searches, each remembering its query vector (of a service built over {@link watch}ed indices). */
  search(service: SearchMethods): SearchMethods {
    const remember = async (run: () => Promise<SearchResponse>): Promise<SearchResponse> => {
      const slot: { vector?: Float32Array } = {};
      const answer = await this.running.run(slot, run);
      if (slot.vector && answer.feedback) this.recent.remember(answer.feedback.queryId, slot.vector, answer.modelVersion);
      return answer;
    };
    return {
      byImage: (image, req) => remember(() => service.byImage(image, req)),
      similarTo: (id, req) => remember(() => service.similarTo(id, req)),
      byText: (text, req) => remember(() => service.byText(text, req)),
      ...(service.served ? { served: service.served } : {}),
    };
  }
}

export interface CollectionMapOptions {
  compute: MapComputeSettings;
  /** Seed of the reservoir sample. */
  sampleSeed: number;
  /** Maps kept (each holds its sample's metadata, PCA basis and a worker with the UMAP model). */
  maxEntries: number;
  /** A map is recomputed once the index count differs from the one it was computed for by more than this share. */
  staleFraction: number;
  /** Compute UMAP after PCA (off: PCA maps only). */
  umap: boolean;
}

export const DEFAULT_COLLECTION_MAP: CollectionMapOptions = {
  compute: DEFAULT_MAP_COMPUTE,
  sampleSeed: 7,
  maxEntries: 2,
  staleFraction: 0.05,
  umap: true,
};

export interface CollectionMapDeps {
  /** The live index (null before anything is indexed). */
  index: () => Promise<VectorIndex | null>;
  queries: RecentQueryVectors;
  logger: Logger;
}

interface PcaState {
  xy: Float32Array;
  fit: PcaFit;
  bestK: number;
  silhouette: { k: number; score: number }[];
  clusters: Map<number, Int32Array>;
  at: string;
}

interface UmapState {
  state: 'computing' | 'ready' | 'failed' | 'unavailable';
  progress: number;
  startedAt: number;
  xy?: Float32Array;
  at?: string;
  reason?: string;
}

/** One computed (or computing) map and the worker that holds its UMAP model. */
class MapEntry {
  readonly position = new Map<string, number>();
  pca: Promise<PcaState>;
  pcaState: PcaState | null = null;
  umap: UmapState = { state: 'computing', progress: 0, startedAt: Date.now() };
  private readonly transforms = new Map<number, { resolve: (xy: Float32Array) => void; reject: (err: Error) => void }>();
  private nextId = 1;
  private closed = false;

  constructor(
    readonly key: string,
    readonly modelVersion: string,
    readonly total: number,
    readonly ids: string[],
    readonly names: string[],
    readonly labels: (string | null)[],
    private readonly worker: Worker,
    logger: Logger,
  ) {
    ids.forEach((id, i) => this.position.set(id, i));
    this.pca = new Promise<PcaState>((resolve, reject) => {
      worker.on('message', (msg: FromMapWorker) => {
        switch (msg.type) {
          case 'pca': {
            this.pcaState = {
              xy: msg.xy,
              fit: msg.pca,
              bestK: msg.bestK,
              silhouette: msg.silhouette,
              clusters: new Map(msg.clusters),
              at: new Date().toISOString(),
            };
            logger.info({ map: key, points: ids.length, k: msg.bestK, ...msg.timings }, 'collection map: PCA view ready');
            this.umap.startedAt = Date.now();
            resolve(this.pcaState);
            break;
          }
          case 'umap-progress':
            this.umap.progress = msg.done;
            break;
          case 'umap':
            this.umap = { ...this.umap, state: 'ready', progress: 1, xy: msg.xy, at: new Date().toISOString() };
            logger.info({ map: key, points: ids.length, umapMs: Math.round(msg.ms) }, 'collection map: UMAP view ready');
            break;
          case 'umap-skipped':
            this.umap = { ...this.umap, state: 'unavailable', reason: msg.reason };
            break;
          case 'transformed':
            this.transforms.get(msg.id)?.resolve(msg.xy);
            this.transforms.delete(msg.id);
            break;
          case 'error': {
            const err = Object.assign(new Error(`collection map ${msg.phase} failed: ${msg.message}`), { stack: msg.stack });
            if (msg.phase === 'pca') reject(err);
            else if (msg.phase === 'umap') {
              this.umap = { ...this.umap, state: 'failed', reason: msg.message };
              logger.error({ err, map: key }, 'collection map: UMAP failed (the PCA view stays)');
            } else if (msg.id !== undefined) {
              this.transforms.get(msg.id)?.reject(err);
              this.transforms.delete(msg.id);
            }
            break;
          }
        }
      });
      worker.on('error', (err) => {
        reject(err);
        this.failAll(err);
      });
      worker.on('exit', (code) => {
        const err = new Error(`the collection map worker exited (code ${code})`);
        reject(err);
        this.failAll(err);
      });
    });
    // A failure is reported to whoever awaits the map; this keeps it from being an unhandled rejection meanwhile.
    this.pca.catch(() => undefined);
  }

  private failAll(err: Error): void {
    if (this.umap.state === 'computing') this.umap = { ...this.umap, state: 'failed', reason: this.closed ? 'the map was dropped' : err.message };
    for (const t of this.transforms.values()) t.reject(err);
    this.transforms.clear();
  }

  /** Positions of new rows (r × PCA components) in the UMAP layout. */
  transform(rows: Float32Array, timeoutMs = 15_000): Promise<Float32Array> {
    const id = this.nextId++;
    return new Promise<Float32Array>((resolve, reject) => {
      // A worker still busy (or stuck) must not hold a locate request forever.
      const timer = setTimeout(() => {
        this.transforms.delete(id);
        reject(new Error(`the collection map worker did not place ${rows.length} values within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = { resolve: (xy: Float32Array) => (clearTimeout(timer), resolve(xy)), reject: (err: Error) => (clearTimeout(timer), reject(err)) };
      this.transforms.set(id, settle);
      this.worker.postMessage({ type: 'transform', id, rows } satisfies ToMapWorker, [rows.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.worker.terminate();
  }
}

/** The map service behind `GET /api/map` and `GET /api/map/locate` (shared/http/map-routes.ts). */
export class CollectionMap {
  private readonly options: CollectionMapOptions;
  /** Most recently used last. */
  private readonly entries = new Map<string, MapEntry>();
  /**
   * The map being read and computed, if any: one at a time (each takes a core and its sample's
   * memory); a request for another map meanwhile gets {@link MapBusyError}, never a queue.
   */
  private building: { key: string; entry: Promise<MapEntry> } | null = null;
  /** The map and method the page was last answered with: what `locate` places points on. */
  private current: { entry: MapEntry; method: MapMethod } | null = null;

  constructor(
    private readonly deps: CollectionMapDeps,
    options: Partial<CollectionMapOptions> = {},
  ) {
    this.options = { ...DEFAULT_COLLECTION_MAP, ...options };
  }

  async map(req: MapRequest): Promise<MapResult> {
    if (!Number.isInteger(req.sample) || req.sample < 1 || req.sample > MAP_SAMPLE_MAX) {
      throw new ParseError(`sample must be an integer in 1..${MAP_SAMPLE_MAX}, got ${req.sample}`);
    }
    const index = await this.deps.index();
    if (!index) throw new NotFoundError('nothing is indexed yet: add images to the bucket folder or run `imgsearch ingest <dir>`');
    const entry = await this.entryFor(index, req.sample);
    const pca = await entry.pca;
    let method: MapMethod = req.method ?? (entry.umap.state === 'ready' ? 'umap' : 'pca');
    if (method === 'umap' && entry.umap.state !== 'ready') {
      if (entry.umap.state === 'computing') {
        return { status: 'computing', method: 'umap', progress: Number(entry.umap.progress.toFixed(3)), retryAfterSeconds: retryAfter(entry.umap) };
      }
      if (req.method === 'umap')
        throw new CapabilityError(`no UMAP view of this map: ${entry.umap.reason ?? 'it failed'}; the PCA view (method=pca) is available`);
      method = 'pca';
    }
    const k = req.k === 'auto' ? pca.bestK : req.k;
    const clusters = pca.clusters.get(k);
    if (!clusters) {
      const tried = [...pca.clusters.keys()];
      throw new ParseError(
        `k=${k} is not available for a map of ${entry.ids.length} images: k can be auto or ${tried.length > 1 ? `${tried[0]}..${tried.at(-1)}` : tried[0]}`,
      );
    }
    const xy = method === 'umap' ? entry.umap.xy! : pca.xy;
    this.current = { entry, method };
    return {
      status: 'ready',
      map: {
        points: entry.ids.map((id, i) => ({
          id,
          name: entry.names[i]!,
          x: round(xy[2 * i]!),
          y: round(xy[2 * i + 1]!),
          label: entry.labels[i]!,
          cluster: clusters[i]!,
        })),
        k,
        silhouette: pca.silhouette.map((s) => ({ k: s.k, score: Number(s.score.toFixed(4)) })),
        method,
        total: entry.total,
        sample: entry.ids.length,
        computedAt: method === 'umap' ? entry.umap.at! : pca.at,
      },
    };
  }

  /**
   * Where the query `queryId` and the documents `ids` lie on the map last served: the query from its
   * remembered vector (null once forgotten, or when it came from another model), sample points where
   * they are, other indexed documents projected; unknown ids are left out.
   */
  async locate(req: { queryId?: string; ids: string[] }): Promise<LocateAnswer> {
    const current = this.current;
    if (!current) throw new NotFoundError('no map has been computed yet: GET /api/map first');
    const { entry, method } = current;
    const pca = (await entry.pca)!;
    const xy = method === 'umap' ? entry.umap.xy! : pca.xy;
    const results: { id: string; x: number; y: number }[] = [];
    const outside: { id: string; vector: Float32Array }[] = [];
    const missing = req.ids.filter((id) => !entry.position.has(id));
    const index = missing.length > 0 ? await this.deps.index() : null;
    const fetched = new Map<string, Float32Array>();
    if (index && index.modelVersion === entry.modelVersion) {
      for (const doc of await Promise.all(missing.map((id) => index.get(id))))
        if (doc && doc.modelVersion === entry.modelVersion) fetched.set(doc.id, doc.vector);
    }
    for (const id of req.ids) {
      const i = entry.position.get(id);
      if (i !== undefined) results.push({ id, x: round(xy[2 * i]!), y: round(xy[2 * i + 1]!) });
      else if (fetched.has(id)) outside.push({ id, vector: fetched.get(id)! });
    }
    const remembered = req.queryId ? this.deps.queries.get(req.queryId) : undefined;
    const query = remembered && remembered.modelVersion === entry.modelVersion && remembered.vector.length === pca.fit.dim ? remembered.vector : null;
    const vectors = [...outside.map((o) => o.vector), ...(query ? [query] : [])];
    let placed: Float32Array = new Float32Array(0);
    if (vectors.length > 0) {
      const flat = new Float32Array(vectors.length * pca.fit.dim);
      vectors.forEach((v, i) => flat.set(v, i * pca.fit.dim));
      const reduced = pcaProject(pca.fit, flat, vectors.length);
      if (method === 'umap') placed = await entry.transform(reduced);
      else {
        placed = new Float32Array(vectors.length * 2);
        for (let i = 0; i < vectors.length; i++) {
          placed[2 * i] = reduced[i * pca.fit.count]!;
          placed[2 * i + 1] = pca.fit.count > 1 ? reduced[i * pca.fit.count + 1]! : 0;
        }
      }
    }
    // Results in the order asked for.
    const byId = new Map(results.map((r) => [r.id, r]));
    outside.forEach((o, i) => byId.set(o.id, { id: o.id, x: round(placed[2 * i]!), y: round(placed[2 * i + 1]!) }));
    const q = query ? { x: round(placed[2 * outside.length]!), y: round(placed[2 * outside.length + 1]!) } : null;
    return { query: q, results: req.ids.flatMap((id) => byId.get(id) ?? []) };
  }

  /** Stops every map worker. */
  async close(): Promise<void> {
    if (this.building) await Promise.allSettled([this.building.entry]);
    const entries = [...this.entries.values()];
    this.entries.clear();
    this.current = null;
    await Promise.all(entries.map((e) => e.close()));
  }

  private async entryFor(index: VectorIndex, sample: number): Promise<MapEntry> {
    const key = `${index.name}|${index.modelVersion}|${sample}`;
    const total = await index.count();
    const cached = this.entries.get(key);
    if (cached && Math.abs(total - cached.total) <= this.options.staleFraction * Math.max(1, cached.total)) {
      this.entries.delete(key);
      this.entries.set(key, cached);
      return cached;
    }
    if (this.building) {
      if (this.building.key === key) return this.building.entry;
      throw new MapBusyError(MAP_BUSY_RETRY_SECONDS);
    }
    const building = { key, entry: this.build(index, sample, key, total) };
    this.building = building;
    // Cleared once built or failed (a failure reaches whoever awaits the entry).
    building.entry.then(
      () => this.building === building && (this.building = null),
      () => this.building === building && (this.building = null),
    );
    return building.entry;
  }

  private async build(index: VectorIndex, sample: number, key: string, expected: number): Promise<MapEntry> {
    const dim = index.dimension;
    const reservoir = new Reservoir(sample, mulberry32(this.options.sampleSeed));
    const ids: string[] = [];
    const names: string[] = [];
    const labels: (string | null)[] = [];
    // Sized for the count just read; grown if documents arrive during the scan.
    let vectors = new Float32Array(Math.max(1, Math.min(sample, expected)) * dim);
    for await (const page of index.scan(1000)) {
      // Between pages the event loop answers whatever waits (an index answering from memory never yields by itself).
      await new Promise((resolve) => setImmediate(resolve));
      for (const doc of page) {
        const slot = reservoir.offer();
        if (slot < 0) continue;
        if ((slot + 1) * dim > vectors.length) {
          const grown = new Float32Array(Math.min(sample, Math.max(slot + 1, 2 * (vectors.length / dim))) * dim);
          grown.set(vectors);
          vectors = grown;
        }
        vectors.set(doc.vector, slot * dim);
        ids[slot] = doc.id;
        names[slot] = doc.uri.split('/').pop() ?? doc.uri;
        labels[slot] = doc.labels[0] ?? null;
      }
    }
    const n = ids.length;
    if (n === 0) throw new NotFoundError('nothing is indexed yet: add images to the bucket folder or run `imgsearch ingest <dir>`');
    const data = vectors.length === n * dim ? vectors : vectors.slice(0, n * dim);
    const worker = new Worker(new URL('./collection-map-worker.mjs', import.meta.url));
    // A map being computed never keeps the process alive.
    worker.unref();
    const entry = new MapEntry(key, index.modelVersion, reservoir.seen, ids, names, labels, worker, this.deps.logger);
    worker.postMessage({ type: 'compute', vectors: data, n, dim, settings: this.options.compute, umap: this.options.umap } satisfies ToMapWorker, [
      data.buffer as ArrayBuffer,
    ]);
    try {
      await entry.pca;
    } catch (err) {
      await entry.close();
      throw err;
    }
    const replaced = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, entry);
    if (replaced) {
      if (this.current?.entry === replaced) this.current = { entry, method: 'pca' };
      await replaced.close();
    }
    while (this.entries.size > this.options.maxEntries) {
      const [oldKey, old] = this.entries.entries().next().value!;
      this.entries.delete(oldKey);
      if (this.current?.entry === old) this.current = null;
      await old.close();
    }
    return entry;
  }
}

function round(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}

/** Seconds until UMAP is likely done, from its progress so far (at least 1, at most 30). */
function retryAfter(umap: UmapState): number {
  const elapsed = (Date.now() - umap.startedAt) / 1000;
  if (umap.progress <= 0) return 5;
  return Math.max(1, Math.min(30, Math.ceil((elapsed * (1 - umap.progress)) / umap.progress)));
}

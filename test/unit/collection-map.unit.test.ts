import { afterEach, describe, expect, it } from 'vitest';
import { NotFoundError } from '../../shared/errors.js';
import { silentLogger } from '../../shared/logger.js';
import type { Embedder } from '../../shared/ports/embedder.js';
import type { Hit, QueryOptions, VectorDocument, VectorIndex } from '../../shared/ports/vector-index.js';
import {
  CollectionMap,
  DEFAULT_MAP_COMPUTE,
  MapBusyError,
  QueryVectorCapture,
  RecentQueryVectors,
  summariseClusters,
  type MapAnswer,
  type MapResult,
} from '../../shared/services/collection-map.js';
import { SearchService } from '../../shared/services/search-service.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { strict } from '../helpers/strict-fakes.js';

const DIM = 64;
const MODEL = 'test-model-1';
const CLUSTERS = ['shoe', 'bag', 'coat', 'shirt'];

/** `perCluster` documents around each of 4 orthogonal directions (std 0.05 per coordinate), labelled by cluster. */
function plantedDocs(perCluster: number, seed = 1): VectorDocument[] {
  const random = mulberry32(seed);
  const g = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const docs: VectorDocument[] = [];
  for (let c = 0; c < CLUSTERS.length; c++) {
    for (let i = 0; i < perCluster; i++) {
      const vector = new Float32Array(DIM);
      for (let j = 0; j < DIM; j++) vector[j] = (j === c * 3 ? 1 : 0) + 0.05 * g();
      const id = `${CLUSTERS[c]}-${i}`;
      docs.push({
        id,
        uri: `file:///bucket/${id}.png`,
        generation: '1',
        modelVersion: MODEL,
        vector,
        labels: [CLUSTERS[c]!],
        indexedAt: '2026-11-27T00:00:00Z',
      });
    }
  }
  // Interleaved, as an index would return them.
  return docs.sort((a, b) => (a.id.split('-')[1]! + a.id).localeCompare(b.id.split('-')[1]! + b.id));
}

/** The VectorIndex members the map reads (scan, count, get), over an array; every other member throws. */
function fakeIndex(docs: VectorDocument[], calls = { scans: 0 }): VectorIndex {
  const byId = new Map(docs.map((d) => [d.id, d]));
  return strict<VectorIndex>('index', {
    name: 'images-v1',
    modelVersion: MODEL,
    dimension: DIM,
    count: async () => docs.length,
    get: async (id: string) => byId.get(id) ?? null,
    async *scan(batchSize = 500) {
      calls.scans++;
      for (let i = 0; i < docs.length; i += batchSize) yield docs.slice(i, i + batchSize);
    },
  });
}

const clusterOf = (id: string) => id.split('-')[0]!;

const maps: CollectionMap[] = [];
function newMap(index: VectorIndex | null, options: ConstructorParameters<typeof CollectionMap>[1] = {}, queries = new RecentQueryVectors()) {
  const map = new CollectionMap({ index: async () => index, queries, logger: silentLogger }, options);
  maps.push(map);
  return map;
}
afterEach(async () => {
  await Promise.all(maps.splice(0).map((m) => m.close()));
});

function ready(result: MapResult): MapAnswer {
  if (result.status !== 'ready') throw new Error(`expected a map, got ${JSON.stringify(result)}`);
  return result.map;
}

async function waitForUmap(map: CollectionMap, sample: number): Promise<MapAnswer> {
  const until = Date.now() + 90_000;
  for (;;) {
    const r = await map.map({ sample, k: 'auto', method: 'umap' });
    if (r.status === 'ready') return r.map;
    if (Date.now() > until) throw new Error('UMAP did not finish');
    await new Promise((res) => setTimeout(res, 200));
  }
}

/** Share of each point's `k` nearest map neighbours that come from its own planted cluster. */
function neighbourhoodAgreement(points: MapAnswer['points'], k: number): number {
  let agree = 0;
  for (const p of points) {
    const nearest = points
      .filter((q) => q !== p)
      .map((q) => ({ q, d: (q.x - p.x) ** 2 + (q.y - p.y) ** 2 }))
      .sort((a, b) => a.d - b.d)
      .slice(0, k);
    agree += nearest.filter(({ q }) => clusterOf(q.id) === clusterOf(p.id)).length / k;
  }
  return agree / points.length;
}

describe('CollectionMap: the PCA view and the clusters', () => {
  it('maps every document, chooses k = 4 for 4 planted clusters by silhouette, and each cluster is one planted group', async () => {
    const docs = plantedDocs(60);
    const map = newMap(fakeIndex(docs), { umap: false });
    const m = ready(await map.map({ sample: 10_000, k: 'auto' }));
    expect(m.method).toBe('pca');
    expect(m.total).toBe(240);
    expect(m.sample).toBe(240);
    expect(m.points).toHaveLength(240);
    expect(new Set(m.points.map((p) => p.id)).size).toBe(240);
    expect(m.k).toBe(4);
    expect(m.silhouette.map((s) => s.k)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const score = (k: number) => m.silhouette.find((s) => s.k === k)!.score;
    expect(score(4)).toBeGreaterThan(score(3) + 0.1);
    expect(score(4)).toBeGreaterThan(score(5) + 0.1);
    // Exact partition: each k-means cluster holds one planted group, and each group one cluster.
    const groupsOfCluster = new Map<number, Set<string>>();
    for (const p of m.points) groupsOfCluster.set(p.cluster, (groupsOfCluster.get(p.cluster) ?? new Set()).add(clusterOf(p.id)));
    expect([...groupsOfCluster.values()].every((g) => g.size === 1)).toBe(true);
    expect(groupsOfCluster.size).toBe(4);
    // Labels come from the index; names from the object name.
    const shoe = m.points.find((p) => p.id === 'shoe-3')!;
    expect(shoe.label).toBe('shoe');
    expect(shoe.name).toBe('shoe-3.png');
    expect(Date.parse(m.computedAt)).not.toBeNaN();
  });

  it('an explicit k uses that partition; a k the sample cannot have is refused', async () => {
    const map = newMap(fakeIndex(plantedDocs(3)), { umap: false });
    const m = ready(await map.map({ sample: 100, k: 2 }));
    expect(m.k).toBe(2);
    expect(new Set(m.points.map((p) => p.cluster))).toEqual(new Set([0, 1]));
    // 12 points: k can be at most 11.
    await expect(map.map({ sample: 100, k: 12 })).rejects.toThrow(/k=12 is not available for a map of 12 images: k can be auto or 2\.\.11/);
  });

  it('samples a larger index with a seeded reservoir: the same sample each time, computed once and cached', async () => {
    const docs = plantedDocs(150);
    const calls = { scans: 0 };
    const index = fakeIndex(docs, calls);
    const a = ready(await newMap(index, { umap: false }).map({ sample: 100, k: 'auto' }));
    const b = ready(await newMap(index, { umap: false }).map({ sample: 100, k: 'auto' }));
    expect(a.sample).toBe(100);
    expect(a.total).toBe(600);
    const ids = a.points.map((p) => p.id);
    expect(new Set(ids).size).toBe(100);
    expect(b.points.map((p) => p.id)).toEqual(ids);
    // Not just the first 100 scanned: the sample reaches the end of the scan.
    const order = new Map(docs.map((d, i) => [d.id, i]));
    expect(Math.max(...ids.map((id) => order.get(id)!))).toBeGreaterThan(450);
    expect(calls.scans).toBe(2);
    const map = maps[0]!;
    await map.map({ sample: 100, k: 3 });
    expect(calls.scans).toBe(2);
  });

  it('is recomputed once the index has grown by more than 5 %', async () => {
    const docs = plantedDocs(25);
    const calls = { scans: 0 };
    const map = newMap(fakeIndex(docs, calls), { umap: false });
    expect(ready(await map.map({ sample: 1000, k: 'auto' })).total).toBe(100);
    docs.push(...plantedDocs(1, 9).map((d) => ({ ...d, id: `${d.id}-new` })));
    expect(ready(await map.map({ sample: 1000, k: 'auto' })).total).toBe(100);
    docs.push(...plantedDocs(1, 10).map((d) => ({ ...d, id: `${d.id}-newer` })));
    const grown = ready(await map.map({ sample: 1000, k: 'auto' }));
    expect(grown.total).toBe(108);
    expect(calls.scans).toBe(2);
  });

  it('an empty index, or none, is a 404 saying how to add images', async () => {
    await expect(newMap(fakeIndex([])).map({ sample: 10, k: 'auto' })).rejects.toThrow(NotFoundError);
    await expect(newMap(null).map({ sample: 10, k: 'auto' })).rejects.toThrow(/imgsearch ingest/);
  });
});

describe('CollectionMap: one build at a time (security review finding 2)', () => {
  it('a request for another map while one is being built is refused with MapBusyError; the same map is shared', async () => {
    const docs = plantedDocs(10);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const calls = { scans: 0 };
    const inner = fakeIndex(docs, calls);
    // The scan waits until released, so the first build is still running while the others arrive.
    const index = strict<VectorIndex>('index', {
      name: inner.name,
      modelVersion: inner.modelVersion,
      dimension: inner.dimension,
      count: () => inner.count(),
      get: (id: string) => inner.get(id),
      async *scan(batchSize?: number) {
        await gate;
        yield* inner.scan(batchSize);
      },
    });
    const map = newMap(index, { umap: false });
    const first = map.map({ sample: 1000, k: 'auto' });
    const same = map.map({ sample: 1000, k: 2 });
    const other = map.map({ sample: 2000, k: 'auto' });
    await expect(other).rejects.toThrow(MapBusyError);
    await expect(other).rejects.toMatchObject({ code: 'MAP_BUSY', retryAfterSeconds: expect.any(Number) });
    release();
    expect(ready(await first).sample).toBe(40);
    expect(ready(await same).k).toBe(2);
    expect(calls.scans).toBe(1);
    // Once the build is done, another map may be built.
    expect(ready(await map.map({ sample: 2000, k: 'auto' })).sample).toBe(40);
  });
});

describe('CollectionMap: UMAP in the background', () => {
  it('keeps planted clusters apart (neighbourhood agreement far above chance), and becomes the default view when ready', async () => {
    const map = newMap(fakeIndex(plantedDocs(80)), { compute: { ...DEFAULT_MAP_COMPUTE, umapEpochs: 200 } });
    const first = ready(await map.map({ sample: 10_000, k: 'auto' }));
    expect(first.method === 'pca' || first.method === 'umap').toBe(true);
    const umap = await waitForUmap(map, 10_000);
    expect(umap.method).toBe('umap');
    expect(umap.points.map((p) => p.id)).toEqual(first.points.map((p) => p.id));
    // Chance is 0.25 with 4 equal groups.
    expect(neighbourhoodAgreement(umap.points, 10)).toBeGreaterThan(0.9);
    expect(ready(await map.map({ sample: 10_000, k: 'auto' })).method).toBe('umap');
    expect(ready(await map.map({ sample: 10_000, k: 'auto', method: 'pca' })).method).toBe('pca');
  });

  it('method=umap while it is still computing answers "computing" with progress and a retry delay', async () => {
    const map = newMap(fakeIndex(plantedDocs(50)), { compute: { ...DEFAULT_MAP_COMPUTE, umapEpochs: 1_000_000 } });
    ready(await map.map({ sample: 10_000, k: 'auto' }));
    const r = await map.map({ sample: 10_000, k: 'auto', method: 'umap' });
    expect(r.status).toBe('computing');
    if (r.status !== 'computing') return;
    expect(r.progress).toBeGreaterThanOrEqual(0);
    expect(r.progress).toBeLessThan(1);
    expect(r.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    // Without method=umap the PCA view answers meanwhile.
    expect(ready(await map.map({ sample: 10_000, k: 'auto' })).method).toBe('pca');
  });

  it('a sample too small for UMAP: method=umap is refused with the reason, the PCA view is served', async () => {
    const map = newMap(fakeIndex(plantedDocs(2)));
    expect(ready(await map.map({ sample: 100, k: 'auto' })).method).toBe('pca');
    const until = Date.now() + 30_000;
    let err: unknown;
    while (!err && Date.now() < until)
      err = await map.map({ sample: 100, k: 'auto', method: 'umap' }).then(
        () => new Promise((r) => setTimeout(r, 100)),
        (e: unknown) => e,
      );
    expect(String(err)).toMatch(/UMAP needs at least 10 images, the sample has 8/);
  });
});

describe('CollectionMap.locate', () => {
  it('before any map: 404 saying to ask for the map first', async () => {
    await expect(newMap(fakeIndex(plantedDocs(5))).locate({ ids: ['shoe-1'] })).rejects.toThrow(/GET \/api\/map first/);
  });

  it('sample points are where the map put them; others and the query are projected near their own cluster', async () => {
    const docs = plantedDocs(100);
    const queries = new RecentQueryVectors();
    const map = newMap(fakeIndex(docs), { umap: false }, queries);
    const m = ready(await map.map({ sample: 200, k: 'auto' }));
    const inSample = m.points.slice(0, 5).map((p) => p.id);
    const outside = docs.map((d) => d.id).filter((id) => !m.points.some((p) => p.id === id));
    expect(outside.length).toBe(200);
    const bag = docs.find((d) => d.id === 'bag-7')!;
    queries.remember('q-bag', bag.vector, MODEL);
    queries.remember('q-other-model', bag.vector, 'another-model');

    const ids = [...inSample, outside[0]!, 'no-such-id', outside[1]!];
    const located = await map.locate({ queryId: 'q-bag', ids });
    expect(located.results.map((r) => r.id)).toEqual([...inSample, outside[0], outside[1]]);
    for (const r of located.results.slice(0, 5)) {
      const p = m.points.find((q) => q.id === r.id)!;
      expect([r.x, r.y]).toEqual([p.x, p.y]);
    }
    // A projected point's nearest map points are from its own cluster (the map's clusters are 4 tight, distant groups).
    const nearestCluster = (x: number, y: number) =>
      clusterOf(
        m.points
          .map((p) => ({ p, d: (p.x - x) ** 2 + (p.y - y) ** 2 }))
          .sort((a, b) => a.d - b.d)
          .slice(0, 5)
          .map(({ p }) => p.id)
          .sort((a, b) => a.localeCompare(b))[2]!,
      );
    for (const r of located.results.slice(5)) expect(nearestCluster(r.x, r.y)).toBe(clusterOf(r.id));
    expect(located.query).not.toBeNull();
    expect(nearestCluster(located.query!.x, located.query!.y)).toBe('bag');
    // The query's vector is bag-7's: on the PCA map it lands exactly where bag-7 is (in the sample or projected).
    const bag7 = m.points.find((p) => p.id === 'bag-7') ?? (await map.locate({ ids: ['bag-7'] })).results[0]!;
    expect(Math.abs(located.query!.x - bag7.x)).toBeLessThan(1e-3);
    expect(Math.abs(located.query!.y - bag7.y)).toBeLessThan(1e-3);

    // Forgotten or from another model: no query position.
    expect((await map.locate({ queryId: 'never-seen', ids: [] })).query).toBeNull();
    expect((await map.locate({ queryId: 'q-other-model', ids: [] })).query).toBeNull();
  });

  it('on the UMAP map: sample points as served, a query placed among its cluster by umap-js transform', async () => {
    const docs = plantedDocs(60);
    const queries = new RecentQueryVectors();
    const map = newMap(fakeIndex(docs), { compute: { ...DEFAULT_MAP_COMPUTE, umapEpochs: 200 } }, queries);
    const m = await waitForUmap(map, 10_000);
    const coat = docs.find((d) => d.id === 'coat-11')!;
    queries.remember(
      'q-coat',
      Float32Array.from(coat.vector, (v, j) => v + (j === 1 ? 0.02 : 0)),
      MODEL,
    );
    const located = await map.locate({ queryId: 'q-coat', ids: ['coat-11', 'shoe-2'] });
    for (const r of located.results) {
      const p = m.points.find((q) => q.id === r.id)!;
      expect([r.x, r.y]).toEqual([p.x, p.y]);
    }
    const q = located.query!;
    const nearest = m.points
      .map((p) => ({ p, d: (p.x - q.x) ** 2 + (p.y - q.y) ** 2 })) //
      .sort((a, b) => a.d - b.d)
      .slice(0, 10);
    expect(nearest.filter(({ p }) => clusterOf(p.id) === 'coat').length).toBeGreaterThanOrEqual(8);
  });
});

describe('query vectors of searches, by queryId', () => {
  it('RecentQueryVectors keeps the most recently used up to its capacity', () => {
    const recent = new RecentQueryVectors(2);
    recent.remember('a', Float32Array.of(1), 'm');
    recent.remember('b', Float32Array.of(2), 'm');
    expect(recent.get('a')?.vector[0]).toBe(1);
    recent.remember('c', Float32Array.of(3), 'm');
    expect(recent.get('b')).toBeUndefined();
    expect(recent.get('a')?.vector[0]).toBe(1);
    expect(recent.get('c')?.vector[0]).toBe(3);
    expect(recent.size).toBe(2);
  });

  it('the wrapped search service remembers each answer’s own query vector, concurrent searches kept apart', async () => {
    const docs = plantedDocs(3);
    const index = fakeIndex(docs);
    const realIndex = strict<VectorIndex>('index', {
      name: index.name,
      modelVersion: MODEL,
      dimension: DIM,
      get: index.get.bind(index),
      // Slow enough for the searches below to overlap.
      query: async (_vector: Float32Array, _options: QueryOptions): Promise<Hit[]> => new Promise((r) => setTimeout(() => r([]), 20)),
    });
    const textVector = new Float32Array(DIM).fill(0.125);
    const embedder = strict<Embedder>('embedder', { modelVersion: MODEL, hasTextTower: true, embedTexts: async () => [textVector] });
    const capture = new QueryVectorCapture(new RecentQueryVectors(10));
    const search = capture.search(
      new SearchService(
        () => embedder,
        async () => capture.watch(realIndex),
      ),
    );
    const [a, b, t] = await Promise.all([search.similarTo('shoe-1', { k: 3 }), search.similarTo('bag-2', { k: 3 }), search.byText('a red bag', { k: 3 })]);
    expect(capture.recent.get(a.feedback!.queryId)?.vector).toBe(docs.find((d) => d.id === 'shoe-1')!.vector);
    expect(capture.recent.get(b.feedback!.queryId)?.vector).toBe(docs.find((d) => d.id === 'bag-2')!.vector);
    expect(capture.recent.get(t.feedback!.queryId)).toEqual({ vector: textVector, modelVersion: MODEL });
    expect(search.served).toBeDefined();
  });
});

describe('summariseClusters', () => {
  it('sizes, top label and its share per cluster, largest first; purity over labelled images', () => {
    const points = [
      { cluster: 0, label: 'bag' },
      { cluster: 0, label: 'bag' },
      { cluster: 0, label: 'coat' },
      { cluster: 1, label: 'shoe' },
      { cluster: 1, label: null },
      { cluster: 2, label: null },
      { cluster: 1, label: 'shoe' },
      { cluster: 1, label: 'bag' },
    ];
    expect(summariseClusters(points)).toEqual({
      clusters: [
        { cluster: 1, images: 4, topLabel: 'shoe', topLabelShare: 0.5 },
        { cluster: 0, images: 3, topLabel: 'bag', topLabelShare: 0.6667 },
        { cluster: 2, images: 1, topLabel: null, topLabelShare: 0 },
      ],
      // Labelled: 6; agreeing with their cluster's top label: bag, bag, shoe, shoe.
      purity: 0.6667,
    });
    expect(summariseClusters([{ cluster: 0, label: null }]).purity).toBeNull();
  });
});

import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { VectorDocument, VectorIndex, VectorIndexCatalog } from '../ports/vector-index.js';
import { compareGenerations } from '../contracts.js';
import { reindexFromFeatures, type ReindexResult } from './reindex.js';

export interface LifecycleDeps {
  registry: ModelRegistry;
  catalog: VectorIndexCatalog;
  features: FeatureStore;
  logger: Logger;
  loadEmbedder: (version: string) => Promise<Embedder>;
}

export interface ActivationResult {
  modelVersion: string;
  index: string;
  /** `reused`: an earlier index of this model was brought up to date; `rebuilt`: a new one was filled. */
  how: 'reused' | 'rebuilt' | 'unchanged';
  documents: number;
  needsReembedding: number;
}

/**
 * Makes `version` the active model and points the index alias at an index of that model: an
 * existing one (kept from before, e.g. on rollback) brought up to date from the feature store, or
 * a new one re-projected from stored base embeddings. Search never sees two models mixed.
 */
export async function activateModel(deps: LifecycleDeps, version: string, onProgress?: (done: number) => void): Promise<ActivationResult> {
  await deps.registry.promote(version);
  return syncIndexToModel(deps, version, onProgress);
}

/** Re-activates the previously active model and its index. */
export async function rollbackModel(deps: LifecycleDeps, onProgress?: (done: number) => void): Promise<ActivationResult> {
  const version = await deps.registry.rollback();
  return syncIndexToModel(deps, version, onProgress);
}

export async function syncIndexToModel(deps: LifecycleDeps, version: string, onProgress?: (done: number) => void): Promise<ActivationResult> {
  const embedder = await deps.loadEmbedder(version);
  try {
    const live = await deps.catalog.live();
    if (live && live.modelVersion === version) {
      const n = await catchUp(live, deps.features, embedder);
      return { modelVersion: version, index: live.name, how: 'unchanged', documents: n, needsReembedding: 0 };
    }
    const earlier = (await deps.catalog.versions())
      .filter((v) => v.modelVersion === version && v.dimension === embedder.dimension)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    if (earlier) {
      const index = await deps.catalog.open(earlier.name);
      await catchUp(index, deps.features, embedder);
      await deps.catalog.swapAlias(index.name);
      deps.logger.info({ index: index.name, modelVersion: version }, 'alias swapped back to an earlier index of this model');
      return { modelVersion: version, index: index.name, how: 'reused', documents: await index.count(), needsReembedding: 0 };
    }
    const result: ReindexResult = await reindexFromFeatures({ catalog: deps.catalog, features: deps.features, embedder, logger: deps.logger }, onProgress);
    return { modelVersion: version, index: result.index, how: 'rebuilt', documents: result.count, needsReembedding: result.needsReembedding.length };
  } finally {
    await embedder.close();
  }
}

/**
 * Brings an index of `embedder`'s model up to date with the feature store: images embedded since
 * the index was last live are re-projected and upserted, images deleted since are removed.
 */
async function catchUp(index: VectorIndex, features: FeatureStore, embedder: Embedder): Promise<number> {
  const seen = new Set<string>();
  const now = new Date().toISOString();
  for await (const batch of features.scan(1024)) {
    const usable = batch.filter((r) => r.baseModel === embedder.manifest.name);
    for (const r of usable) seen.add(r.id);
    const stored = await index.generations(usable.map((r) => r.id));
    const stale = usable.filter((r) => {
      const g = stored.get(r.id);
      return g === undefined || compareGenerations(g, r.generation) < 0;
    });
    if (stale.length === 0) continue;
    const vectors = await embedder.project(stale.map((r) => r.vector));
    const docs: VectorDocument[] = stale.map((r, i) => ({
      id: r.id, uri: r.uri, generation: r.generation, modelVersion: embedder.modelVersion, vector: vectors[i]!,
      labels: r.labels, caption: r.caption, eventTime: r.eventTime, indexedAt: now,
    }));
    await index.upsert(docs);
  }
  const gone: { id: string; generation: string }[] = [];
  for await (const docs of index.scan(1000)) for (const d of docs) if (!seen.has(d.id)) gone.push({ id: d.id, generation: d.generation });
  if (gone.length) await index.delete(gone);
  return index.count();
}

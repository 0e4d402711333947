import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { JobExecution, JobLauncher } from '../ports/job-launcher.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { VectorIndex, VectorIndexCatalog } from '../ports/vector-index.js';
import { compareGenerations } from '../contracts.js';
import { AppError, errorMessage } from '../errors.js';
import { documentsFromFeatures, reindexFromFeatures, type ReindexResult } from './reindex.js';

/**
 * How a model version goes live, and back.
 *
 * **Promotion order** (local mode: `imgsearch retrain`, `imgsearch model promote`):
 *  1. the candidate is registered, with metrics and lineage, and is not active;
 *  2. an index version of it is built beside the live one from the stored base embeddings
 *     (re-projected by its head, no image decoded) and its document count verified — or an
 *     earlier index of that model is brought up to date;
 *  3. the index alias is swapped to it: from here queries are answered by the new model;
 *  4. the registry marks the model active (what ingestion embeds new images with).
 * A failure before the swap changes nothing: the alias and the active model stay, and an index
 * version left half-built is dropped. If step 4 fails, the alias is swapped back. Results never
 * mix two models: a query is embedded with the model of the index it searches (the cloud search
 * service follows the live index), or refused until the two agree (SearchService without
 * `follow`, e.g. `imgsearch up` until its model poll sees step 4); a vector an embed worker made
 * with the previous model after step 3 is refused by the new index and sent back for re-embedding.
 *
 * **Cloud** ({@link promoteThenStartReindexJob}): the retrain job runs on Vertex AI, which cannot
 * reach the private OpenSearch cluster, so steps 2–3 run in the reindex job (a Cloud Run job on
 * the VPC) and the order there is 1 → 4 → 2 → 3: the job marks the model active, then starts the
 * reindex job, which builds the index of the active model and swaps the alias. Until the swap,
 * the search service keeps answering with the old index and its model (it follows the live
 * index's model), and upsert-vectors sends vectors of the new model back for re-embedding instead
 * of mixing them in. If the reindex job cannot be started, the promotion is rolled back; if it
 * fails later, the alias stays on the old index (search stays consistent) until the reindex job
 * is run again or the registry rolled back.
 *
 * **Rollback** ({@link rollbackModel}) runs the other way round: only the registry knows which
 * version was active before, so it moves first and the alias follows (to the earlier index of
 * that model, kept for this); if the alias cannot follow, the registry is moved forward again.
 */
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

/** How a candidate that passed the gate goes live; `onProgress` counts re-projected documents. */
export type Activation<A> = (version: string, onProgress: (done: number) => void) => Promise<A>;

/**
 * Makes `version` live in the promotion order: its index is built (or an earlier one caught up),
 * the alias swapped, then the registry promoted.
 */
export async function activateModel(deps: LifecycleDeps, version: string, onProgress?: (done: number) => void): Promise<ActivationResult> {
  const before = (await deps.catalog.live())?.name ?? null;
  const result = await syncIndexToModel(deps, version, onProgress);
  try {
    await deps.registry.promote(version);
  } catch (err) {
    if (before !== null && before !== result.index) {
      await deps.catalog.swapAlias(before);
      deps.logger.warn({ index: before, modelVersion: version, err }, 'promotion failed after the alias swap: alias swapped back');
    }
    throw err;
  }
  return result;
}

/** {@link activateModel} as the retrain service's activation (local mode: the index is reachable). */
export function activateWithIndex(deps: LifecycleDeps): Activation<ActivationResult> {
  return (version, onProgress) => activateModel(deps, version, onProgress);
}

export interface CloudActivation {
  /** The reindex job execution that builds the new model's index and swaps the alias; null when no reindex job is configured. */
  reindex: JobExecution | null;
}

/**
 * The cloud retrain job's activation (see the module comment): promote in the registry, then
 * start the reindex job; if the job cannot be started, the promotion is rolled back.
 */
export function promoteThenStartReindexJob(deps: { registry: ModelRegistry; launcher: JobLauncher | null; logger: Logger }): Activation<CloudActivation> {
  return async (version) => {
    await deps.registry.promote(version);
    if (!deps.launcher) {
      deps.logger.warn({ modelVersion: version }, 'no reindex job configured: the alias stays on the previous model’s index until the reindex job runs');
      return { reindex: null };
    }
    try {
      const reindex = await deps.launcher.run(REINDEX_JOB, {});
      deps.logger.info({ execution: reindex, modelVersion: version }, 'reindex job started for the promoted model');
      return { reindex };
    } catch (err) {
      const back = await deps.registry.rollback();
      deps.logger.error({ err, modelVersion: version, active: back }, 'reindex job could not be started: promotion rolled back');
      throw err;
    }
  };
}

/** The port name of the reindex job (jobs/reindex). */
export const REINDEX_JOB = 'reindex';

/** Re-activates the previously active model and its index (see the module comment for the order). */
export async function rollbackModel(deps: LifecycleDeps, onProgress?: (done: number) => void): Promise<ActivationResult> {
  const from = (await deps.registry.active())?.version ?? null;
  const version = await deps.registry.rollback();
  try {
    return await syncIndexToModel(deps, version, onProgress);
  } catch (err) {
    // Stryker disable next-line ConditionalExpression: equivalent, because registry.rollback() refuses when no version is active (rolledBack in model-registry-base), so this catch is reached only with `from` set
    if (from !== null) {
      await deps.registry.promote(from);
      deps.logger.warn({ modelVersion: from, err }, 'rollback failed: the index could not follow, the registry was moved forward again');
    }
    throw err;
  }
}

/**
 * `imgsearch index rollback`: the alias back to the previous index version **and** the registry to
 * that index's model, so the two never disagree (ingestion would embed with one model and the
 * index refuse its vectors). In the promotion order: the index is caught up with the feature store
 * and the alias swapped first, then the registry follows; if the registry cannot follow (e.g. that
 * model was removed), the alias is swapped back and nothing has changed.
 */
export async function rollbackIndex(deps: LifecycleDeps): Promise<ActivationResult> {
  const before = await deps.catalog.live();
  const name = await deps.catalog.rollback();
  try {
    const info = (await deps.catalog.versions()).find((v) => v.name === name);
    if (!info) throw new AppError(`index version ${name} vanished during the rollback`);
    if (!(await deps.registry.get(info.modelVersion))) {
      throw new AppError(`its model ${info.modelVersion} is no longer registered, so the index and the model would disagree`);
    }
    const embedder = await deps.loadEmbedder(info.modelVersion);
    let documents: number;
    try {
      documents = await bringIndexUpToDate(await deps.catalog.open(name), deps.features, embedder);
    } finally {
      await embedder.close();
    }
    // Stryker disable next-line ConditionalExpression: equivalent, because both registries write nothing when the version promoted is already active (promoted() in model-registry-base)
    if ((await deps.registry.active())?.version !== info.modelVersion) await deps.registry.promote(info.modelVersion);
    return { modelVersion: info.modelVersion, index: name, how: 'reused', documents, needsReembedding: 0 };
  } catch (err) {
    // No alias before (removed by hand; OpenSearch keeps the previous target apart from it): there is nothing to swap back to.
    if (before) await deps.catalog.swapAlias(before.name);
    const where = before ? `the alias stays on ${before.name}` : `the alias now points at ${name} (it pointed at no index before)`;
    throw new AppError(`cannot roll the index back to ${name}: ${errorMessage(err)}; ${where}`, { cause: err });
  }
}

/**
 * Points the alias at an index of `version` (steps 2–3 of the promotion order): the live one if it
 * already is, an earlier one of that model brought up to date, or a new one re-projected from the
 * feature store. Does not touch the registry.
 */
export async function syncIndexToModel(deps: LifecycleDeps, version: string, onProgress?: (done: number) => void): Promise<ActivationResult> {
  const embedder = await deps.loadEmbedder(version);
  try {
    const live = await deps.catalog.live();
    if (live && live.modelVersion === version) {
      const n = await bringIndexUpToDate(live, deps.features, embedder);
      return { modelVersion: version, index: live.name, how: 'unchanged', documents: n, needsReembedding: 0 };
    }
    const earlier = (await deps.catalog.versions())
      .filter((v) => v.modelVersion === version && v.dimension === embedder.dimension)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    if (earlier) {
      const index = await deps.catalog.open(earlier.name);
      await bringIndexUpToDate(index, deps.features, embedder);
      await deps.catalog.swapAlias(index.name);
      deps.logger.info({ index: index.name, modelVersion: version }, 'alias swapped back to an earlier index of this model');
      return { modelVersion: version, index: index.name, how: 'reused', documents: await index.count(), needsReembedding: 0 };
    }
    const existing = new Set((await deps.catalog.versions()).map((v) => v.name));
    let result: ReindexResult;
    try {
      result = await reindexFromFeatures({ catalog: deps.catalog, features: deps.features, embedder, logger: deps.logger }, onProgress);
    } catch (err) {
      await dropUnfinished(deps, version, existing);
      throw err;
    }
    return { modelVersion: version, index: result.index, how: 'rebuilt', documents: result.count, needsReembedding: result.needsReembedding.length };
  } finally {
    await embedder.close();
  }
}

/** Drops index versions of `version` created since `existing` was read and never made live (a failed rebuild). */
async function dropUnfinished(deps: LifecycleDeps, version: string, existing: Set<string>): Promise<void> {
  try {
    for (const v of await deps.catalog.versions()) {
      if (existing.has(v.name) || v.live || v.modelVersion !== version) continue;
      await deps.catalog.dropVersion(v.name);
      deps.logger.warn({ index: v.name, modelVersion: version }, 'unfinished index version dropped');
    }
  } catch (err) {
    // The alias never pointed there: a leftover costs disk, not correctness.
    deps.logger.warn({ err, modelVersion: version }, 'could not drop an unfinished index version');
  }
}

/**
 * Brings an index of `embedder`'s model up to date with the feature store: images embedded since
 * the index was last live are re-projected and upserted, images deleted since are removed.
 */
async function bringIndexUpToDate(index: VectorIndex, features: FeatureStore, embedder: Embedder): Promise<number> {
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
    await index.upsert(await documentsFromFeatures(stale, embedder, now));
  }
  const gone: { id: string; generation: string }[] = [];
  for await (const docs of index.scan(1000)) for (const d of docs) if (!seen.has(d.id)) gone.push({ id: d.id, generation: d.generation });
  if (gone.length) await index.delete(gone);
  return index.count();
}

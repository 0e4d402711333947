import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { VectorDocument, VectorIndexCatalog } from '../ports/vector-index.js';
import { compareGenerations } from '../contracts.js';
import { AppError } from '../errors.js';

export interface ReindexResult {
  index: string;
  previous: string | null;
  count: number;
  /**
   * Images with no stored base embedding of this model's image tower (only other towers'): they must
   * be re-embedded. One entry per image, however many other towers stored it.
   */
  needsReembedding: Array<Pick<FeatureRecord, 'id' | 'uri'>>;
}

export class ReindexVerificationError extends AppError {
  override readonly code = 'REINDEX_VERIFICATION_FAILED';
}

/**
 * Index documents of `embedder`'s model from stored base embeddings: the vectors re-projected by
 * its head in one batch (no image decoded), the rest of each record carried over.
 */
export async function documentsFromFeatures(
  records: FeatureRecord[],
  embedder: Pick<Embedder, 'modelVersion' | 'project'>,
  indexedAt: string,
): Promise<VectorDocument[]> {
  const vectors = await embedder.project(records.map((r) => r.vector));
  return records.map((r, i) => ({
    id: r.id,
    uri: r.uri,
    generation: r.generation,
    modelVersion: embedder.modelVersion,
    vector: vectors[i]!,
    labels: r.labels,
    caption: r.caption,
    eventTime: r.eventTime,
    indexedAt,
  }));
}

/**
 * Rebuilds the index for `embedder`'s model beside the live one: stored base embeddings are
 * re-projected by the model's head (no image is decoded), counts are verified, then the alias is
 * swapped atomically. The previous index stays for rollback.
 */
export async function reindexFromFeatures(
  deps: { catalog: VectorIndexCatalog; features: FeatureStore; embedder: Embedder; logger: Logger },
  onProgress?: (done: number) => void,
): Promise<ReindexResult> {
  const { catalog, features, embedder, logger } = deps;
  const target = await catalog.createVersion(embedder.modelVersion, embedder.dimension);
  logger.info({ index: target.name, modelVersion: embedder.modelVersion }, 'reindexing from the feature store');
  // Another tower's record of an image counts only if this tower has none of it, or only of an older
  // generation (the image was replaced since: the index holds the old picture) — a tuned tower's
  // records sit beside the first tower's. Decided once the whole store is read.
  const otherTowers = new Map<string, Pick<FeatureRecord, 'id' | 'uri' | 'generation'>>();
  const indexed = new Map<string, string>();
  let expected = 0;
  let done = 0;
  const now = new Date().toISOString();
  for await (const batch of features.scan(1024)) {
    const usable = batch.filter((r) => {
      if (r.baseModel === embedder.manifest.name && r.vector.length === embedder.manifest.image.dimension) {
        indexed.set(r.id, r.generation);
        return true;
      }
      const seen = otherTowers.get(r.id);
      if (!seen || compareGenerations(r.generation, seen.generation) > 0) otherTowers.set(r.id, { id: r.id, uri: r.uri, generation: r.generation });
      return false;
    });
    if (usable.length === 0) continue;
    await target.upsert(await documentsFromFeatures(usable, embedder, now));
    expected += usable.length;
    done += usable.length;
    onProgress?.(done);
  }
  // count() sees every write made through this catalog, not only what a search would see yet:
  // OpenSearch counts what its last refresh made searchable, so its adapter refreshes first.
  const count = await target.count();
  if (count !== expected) {
    throw new ReindexVerificationError(`index ${target.name} holds ${count} documents but ${expected} were written; the alias was not swapped`);
  }
  const previous = await catalog.swapAlias(target.name);
  logger.info({ index: target.name, previous, count }, 'alias swapped to the new index');
  const needsReembedding = [...otherTowers.values()]
    .filter((r) => {
      const mine = indexed.get(r.id);
      return mine === undefined || compareGenerations(r.generation, mine) > 0;
    })
    .map(({ id, uri }) => ({ id, uri }));
  return { index: target.name, previous, count, needsReembedding };
}

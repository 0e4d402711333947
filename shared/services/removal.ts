import { AppError, NotFoundError } from '../errors.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import type { VectorIndexCatalog } from '../ports/vector-index.js';

/**
 * Taking things out of a data directory: images out of the index (`imgsearch rm`), model versions
 * out of the registry (`imgsearch model rm`, `imgsearch model prune`).
 */

export interface ModelRemovalDeps {
  registry: ModelRegistry;
  catalog: VectorIndexCatalog;
}

/**
 * Removes a model version and the index versions built for it (none of them live). Refuses the
 * active version, the one `model rollback` would re-activate (the registry's rule) and the model
 * of the live index.
 */
export async function removeModel(deps: ModelRemovalDeps, version: string): Promise<{ version: string; droppedIndices: string[] }> {
  const live = await deps.catalog.live();
  // The active version is the registry's to refuse (with its own reason).
  if (live?.modelVersion === version && (await deps.registry.active())?.version !== version) {
    throw new AppError(`Cannot remove model version ${version}: the live index ${live.name} holds its vectors (see \`imgsearch doctor\`)`);
  }
  await deps.registry.remove(version);
  const droppedIndices: string[] = [];
  for (const info of await deps.catalog.versions()) {
    if (info.modelVersion !== version || info.live) continue;
    await deps.catalog.dropVersion(info.name);
    droppedIndices.push(info.name);
  }
  return { version, droppedIndices };
}

/**
 * Versions `model prune` removes: retraining candidates (they have a parent) that were never made
 * active. Base models (pulled or bootstrapped, no parent) stay: `model rm` removes those by name.
 */
export function pruneCandidates(versions: ModelVersion[]): ModelVersion[] {
  return versions.filter((v) => v.parent !== null && !v.active && v.everActive === false);
}

export interface ImageRemovalDeps {
  catalog: VectorIndexCatalog;
  features: FeatureStore;
  /** The image's source object (a file for `file://` URIs): whether it still exists, and deleting it. */
  source: { exists(uri: string): Promise<boolean>; delete(uri: string): Promise<void> };
}

export type ImageRemoval =
  | { id: string; status: 'removed'; uri: string; fileDeleted: boolean }
  | { id: string; status: 'not-found' }
  | { id: string; status: 'refused'; uri: string; reason: string };

/**
 * Removes images from every index version (so a rollback does not bring them back) and from the
 * feature store (so a rebuilt index does not either), each as a delete of the generation stored:
 * a tombstone, so the same file re-delivered cannot revive it, while a changed file (a newer
 * generation) is indexed again.
 *
 * The source file decides: while it still exists in the folder it came from, a watcher or a later
 * `ingest` would add it again, so the image is refused unless `deleteFiles` (then the file is
 * deleted first).
 */
export async function removeImages(deps: ImageRemovalDeps, ids: string[], options: { deleteFiles: boolean }): Promise<ImageRemoval[]> {
  const live = await deps.catalog.live();
  if (!live) throw new NotFoundError('nothing is indexed yet');
  const indices = await Promise.all((await deps.catalog.versions()).map((v) => (v.live ? live : deps.catalog.open(v.name))));
  const out: ImageRemoval[] = [];
  for (const id of [...new Set(ids)]) {
    const doc = await live.get(id);
    const feature = await deps.features.get(id);
    const uri = doc?.uri ?? feature?.uri;
    if (!doc && !feature) {
      out.push({ id, status: 'not-found' });
      continue;
    }
    const exists = uri ? await deps.source.exists(uri) : false;
    if (exists && !options.deleteFiles) {
      out.push({ id, status: 'refused', uri: uri!, reason: `${uri} still exists and would be indexed again: delete it, or add --delete-file` });
      continue;
    }
    if (exists) await deps.source.delete(uri!);
    for (const index of indices) {
      const stored = index === live ? doc : await index.get(id);
      if (stored) await index.delete([{ id, generation: stored.generation }]);
    }
    if (feature) await deps.features.delete([{ id, generation: feature.generation }]);
    out.push({ id, status: 'removed', uri: uri!, fileDeleted: exists });
  }
  return out;
}

import path from 'node:path';
import { z } from 'zod';
import { AppError } from '../errors.js';
import { modelManifestSchema, type ModelManifest } from '../model/manifest.js';
import type { ModelMetrics, ModelRegistry, ModelVersion } from '../ports/model-registry.js';

/**
 * What the model registries (local folder, GCS bucket) share: the layout, the records, and the
 * rules of registration, promotion and rollback — as functions of the records, so each adapter
 * keeps only its storage primitives (how it reads, lists and writes, and how it stays safe against
 * concurrent writers: a process mutex for files, `ifGenerationMatch` for GCS).
 *
 * Layout under the registry root: `<version>/{manifest.json, meta.json, files…}` and `active.json`.
 * `meta.json` is written last: a version without it is an interrupted registration, invisible.
 * (The registries stay classes of their own rather than subclasses of a base class: the GCS
 * access test drives every port method as a member of GcsModelRegistry itself.)
 */

/** A version's `meta.json`. */
export const modelMetaSchema = z.object({
  version: z.string(),
  parent: z.string().nullable(),
  createdAt: z.string(),
  metrics: z.record(z.string(), z.unknown()).nullable(),
  lineage: z.record(z.string(), z.unknown()),
});
export type ModelMeta = z.infer<typeof modelMetaSchema>;

/** `active.json`: the active version and every promotion and rollback that led there. */
export const activePointerSchema = z.object({
  active: z.string().nullable(),
  history: z.array(z.object({ version: z.string(), at: z.string(), action: z.enum(['promote', 'rollback']) })),
});
export type ActivePointer = z.infer<typeof activePointerSchema>;

/** The pointer as stored, or "nothing promoted yet" when there is none (`null`). */
export function parseActivePointer(json: unknown): ActivePointer {
  return json === null ? { active: null, history: [] } : activePointerSchema.parse(json);
}

/** File names: a version's two records in its folder, and the pointer at the registry root. */
export const REGISTRY_FILES = { meta: 'meta.json', manifest: 'manifest.json', active: 'active.json' } as const;

/** Version names are folder names: they must not escape the registry root. */
const MODEL_VERSION_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function isModelVersion(name: string): boolean {
  return MODEL_VERSION_NAME.test(name);
}

export function checkModelVersion(version: string): string {
  if (!isModelVersion(version)) {
    throw new AppError(`Invalid model version ${JSON.stringify(version)}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)`);
  }
  return version;
}

/** A file's name as a relative path inside its version folder (never `..`, absolute or empty). */
export function relativeModelPath(name: string): string {
  const rel = path.posix.normalize(name.replace(/\\/g, '/'));
  if (!name || rel.startsWith('..') || path.posix.isAbsolute(rel) || rel === '.') {
    throw new AppError(`Invalid model file name ${JSON.stringify(name)}: must be a relative path`);
  }
  return rel;
}

/** A model file to register: a relative path, and not `meta.json` (written by the registry). */
export function modelFileName(name: string): string {
  const rel = relativeModelPath(name);
  if (rel === REGISTRY_FILES.meta) throw new AppError(`Invalid model file name ${JSON.stringify(name)}: reserved`);
  return rel;
}

type Registration = Parameters<ModelRegistry['register']>[0];

/** A checked registration: what to write, in order (files, then manifest.json, then meta.json last). */
export interface PreparedRegistration {
  files: Array<readonly [name: string, data: Buffer]>;
  manifest: ModelManifest;
  meta: ModelMeta;
}

export function prepareRegistration(entry: Registration, now = new Date()): PreparedRegistration {
  checkModelVersion(entry.version);
  if (entry.parent !== null) checkModelVersion(entry.parent);
  const manifest = modelManifestSchema.parse(entry.manifest);
  if (manifest.version !== entry.version) {
    throw new AppError(`Manifest version ${manifest.version} does not match the registered version ${entry.version}`);
  }
  return {
    files: Object.entries(entry.files).map(([name, data]) => [modelFileName(name), data] as const),
    manifest,
    meta: { version: entry.version, parent: entry.parent, createdAt: now.toISOString(), metrics: entry.metrics ?? null, lineage: entry.lineage ?? {} },
  };
}

export function alreadyRegistered(version: string, why = 'versions are immutable; pick a new name', cause?: unknown): AppError {
  return new AppError(`Model version ${version} is already registered (${why})`, cause === undefined ? {} : { cause });
}

/** A version as the port returns it, from its stored meta.json and manifest.json and the active pointer. */
export function toModelVersion(meta: unknown, manifest: unknown, pointer: ActivePointer): ModelVersion {
  const m = modelMetaSchema.parse(meta);
  return {
    version: m.version,
    parent: m.parent,
    createdAt: m.createdAt,
    manifest: modelManifestSchema.parse(manifest),
    metrics: m.metrics as ModelMetrics | null,
    lineage: m.lineage,
    active: pointer.active === m.version,
    everActive: pointer.active === m.version || pointer.history.some((h) => h.version === m.version),
  };
}

/** Oldest first (ties by name): the order `list()` returns. */
export function byCreation(versions: Array<ModelVersion | null>): ModelVersion[] {
  return versions.filter((v): v is ModelVersion => v !== null).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version));
}

/** meta.json with new metrics. */
export function withMetrics(meta: unknown, metrics: ModelMetrics): ModelMeta {
  return { ...modelMetaSchema.parse(meta), metrics };
}

/** The pointer after promoting `version`, or null when it is already active (nothing to write). */
export function promoted(state: ActivePointer, version: string, now = new Date()): ActivePointer | null {
  if (state.active === version) return null;
  return { active: version, history: [...state.history, { version, at: now.toISOString(), action: 'promote' }] };
}

/**
 * The pointer after a rollback (its `active` is the version re-activated). Promotions stack up and
 * each rollback pops one, so repeated rollbacks walk back in time.
 */
export function rolledBack(state: ActivePointer, now = new Date()): ActivePointer & { active: string } {
  if (!state.active) throw new AppError('Cannot roll back: no model version is active');
  const stack: string[] = [];
  for (const h of state.history) {
    if (h.action === 'promote') stack.push(h.version);
    else stack.pop();
  }
  const version = stack.length >= 2 ? stack[stack.length - 2] : undefined;
  if (!version) throw new AppError(`Cannot roll back: no version was active before ${state.active}`);
  return { active: version, history: [...state.history, { version, at: now.toISOString(), action: 'rollback' }] };
}

/** The version `rollback` would re-activate now, or null. */
export function rollbackTarget(state: ActivePointer): string | null {
  try {
    return rolledBack(state).active;
  } catch {
    return null;
  }
}

/**
 * Why `version` may not be removed, or null: the active version, and the one a rollback would
 * re-activate, stay (remove them after promoting another version).
 */
export function removalRefusal(state: ActivePointer, version: string): string | null {
  if (state.active === version) return `Cannot remove model version ${version}: it is active (promote another version first)`;
  if (rollbackTarget(state) === version)
    return `Cannot remove model version ${version}: \`imgsearch model rollback\` would re-activate it (promote another version first)`;
  return null;
}

/** A rollback re-activating a version whose files were removed refuses instead of pointing at nothing. */
export function removedRollbackTarget(version: string, current: string | null): AppError {
  return new AppError(`Cannot roll back from ${current ?? '(none)'}: the version before it, ${version}, was removed; promote a registered version instead`);
}

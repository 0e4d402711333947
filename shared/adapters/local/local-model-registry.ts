import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AppError, NotFoundError } from '../../errors.js';
import { modelManifestSchema } from '../../model/manifest.js';
import type { ModelMetrics, ModelRegistry, ModelVersion } from '../../ports/model-registry.js';
import {
  REGISTRY_FILES,
  alreadyRegistered,
  byCreation,
  checkModelVersion,
  isModelVersion,
  parseActivePointer,
  prepareRegistration,
  promoted,
  removalRefusal,
  removedRollbackTarget,
  rolledBack,
  toModelVersion,
  withMetrics,
  activePointerSchema,
  modelMetaSchema,
  type ActivePointer,
  type ModelMeta,
} from '../model-registry-base.js';
import { KeyedMutex, isNotFound, readJsonFile, writeFileAtomic, writeJsonAtomic } from './atomic-file.js';

/**
 * Model versions in a folder, laid out as shared/adapters/model-registry-base.ts describes:
 * `<dir>/<version>/` and `<dir>/active.json`. Writers in this process take turns (one mutex per
 * folder); each file is replaced atomically.
 */
const mutex = new KeyedMutex();

export class LocalModelRegistry implements ModelRegistry {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  private file(version: string, name: string): string {
    return path.join(this.dir, checkModelVersion(version), name);
  }

  private async readActive(): Promise<ActivePointer> {
    const fix =
      'restore it from a backup, or replace it with {"active":"<version>","history":[]} naming the model version to use ' +
      '(one of the version folders beside it: the model version of the live index, as listed in index/<alias>.catalog.json of the data directory)';
    return parseActivePointer(await readJsonFile(path.join(this.dir, REGISTRY_FILES.active), null, { schema: activePointerSchema, fix }));
  }

  /** A version's meta.json (null: not registered, or an interrupted registration). */
  private async readMeta(version: string): Promise<ModelMeta | null> {
    return readJsonFile(this.file(version, REGISTRY_FILES.meta), null, { schema: modelMetaSchema, fix: this.versionFix(version) });
  }

  private versionFix(version: string): string {
    return `restore it from a backup, or, if model version ${version} is not in use, remove the folder ${path.join(this.dir, version)}`;
  }

  private async load(version: string, pointer: ActivePointer): Promise<ModelVersion | null> {
    const meta = await this.readMeta(version);
    if (meta === null) return null;
    const manifest = await readJsonFile(this.file(version, REGISTRY_FILES.manifest), null, { schema: modelManifestSchema, fix: this.versionFix(version) });
    return toModelVersion(meta, manifest, pointer);
  }

  private async isRegistered(version: string): Promise<boolean> {
    return (await this.readMeta(version)) !== null;
  }

  /** Read-modify-write of active.json, one writer at a time; `change` returns null for "nothing to write". Returns the state after. */
  private async updateActive(change: (state: ActivePointer) => ActivePointer | null | Promise<ActivePointer | null>): Promise<ActivePointer> {
    return mutex.run(this.dir, async () => {
      const state = await this.readActive();
      const next = await change(state);
      if (next) await writeJsonAtomic(path.join(this.dir, REGISTRY_FILES.active), next);
      return next ?? state;
    });
  }

  async list(): Promise<ModelVersion[]> {
    let names: string[];
    try {
      names = (await fs.readdir(this.dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
    const pointer = await this.readActive();
    return byCreation(await Promise.all(names.filter(isModelVersion).map((n) => this.load(n, pointer))));
  }

  async get(version: string): Promise<ModelVersion | null> {
    return this.load(version, await this.readActive());
  }

  async active(): Promise<ModelVersion | null> {
    const pointer = await this.readActive();
    return pointer.active ? this.load(pointer.active, pointer) : null;
  }

  async register(entry: Parameters<ModelRegistry['register']>[0]): Promise<ModelVersion> {
    const { files, manifest, meta } = prepareRegistration(entry);
    return mutex.run(this.dir, async () => {
      if (await this.isRegistered(entry.version)) throw alreadyRegistered(entry.version);
      for (const [name, data] of files) await writeFileAtomic(this.file(entry.version, name), data);
      await writeJsonAtomic(this.file(entry.version, REGISTRY_FILES.manifest), manifest);
      // meta.json last: a version without it is an interrupted registration and stays invisible.
      await writeJsonAtomic(this.file(entry.version, REGISTRY_FILES.meta), meta);
      const v = await this.get(entry.version);
      if (!v) throw new NotFoundError(`Model version ${entry.version} vanished after registration`);
      return v;
    });
  }

  async setMetrics(version: string, metrics: ModelMetrics): Promise<void> {
    const file = this.file(version, REGISTRY_FILES.meta);
    await mutex.run(this.dir, async () => {
      const meta = await this.readMeta(version);
      if (meta === null) throw new NotFoundError(`Model version ${version} is not registered`);
      await writeJsonAtomic(file, withMetrics(meta, metrics));
    });
  }

  async promote(version: string): Promise<void> {
    if (!(await this.isRegistered(version))) throw new NotFoundError(`Cannot promote ${version}: it is not registered`);
    await this.updateActive((state) => promoted(state, version));
  }

  async rollback(): Promise<string> {
    const after = await this.updateActive(async (state) => {
      const next = rolledBack(state);
      if (!(await this.isRegistered(next.active))) throw removedRollbackTarget(next.active, state.active);
      return next;
    });
    return after.active!;
  }

  /** Deletes the version folder (meta.json first: an interrupted removal leaves an invisible, unregistered folder). */
  async remove(version: string): Promise<void> {
    checkModelVersion(version);
    await mutex.run(this.dir, async () => {
      if (!(await this.isRegistered(version))) throw new NotFoundError(`Model version ${version} is not registered`);
      const refusal = removalRefusal(await this.readActive(), version);
      if (refusal) throw new AppError(refusal);
      await fs.rm(this.file(version, REGISTRY_FILES.meta), { force: true });
      await fs.rm(path.join(this.dir, version), { recursive: true, force: true });
    });
  }

  async localPath(version: string): Promise<string> {
    if (!(await this.isRegistered(version))) throw new NotFoundError(`Model version ${version} is not registered in ${this.dir}`);
    return path.join(this.dir, version);
  }
}

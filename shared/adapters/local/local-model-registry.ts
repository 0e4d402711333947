import { promises as fs } from 'node:fs';
import path from 'node:path';
import { NotFoundError } from '../../errors.js';
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
  rolledBack,
  toModelVersion,
  withMetrics,
  type ActivePointer,
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
    return parseActivePointer(await readJsonFile<unknown>(path.join(this.dir, REGISTRY_FILES.active), null));
  }

  private async load(version: string, active: string | null): Promise<ModelVersion | null> {
    const meta = await readJsonFile<unknown>(this.file(version, REGISTRY_FILES.meta), null);
    if (meta === null) return null;
    return toModelVersion(meta, await readJsonFile<unknown>(this.file(version, REGISTRY_FILES.manifest), null), active);
  }

  private async isRegistered(version: string): Promise<boolean> {
    return (await readJsonFile<unknown>(this.file(version, REGISTRY_FILES.meta), null)) !== null;
  }

  /** Read-modify-write of active.json, one writer at a time; `change` returns null for "nothing to write". Returns the state after. */
  private async updateActive(change: (state: ActivePointer) => ActivePointer | null): Promise<ActivePointer> {
    return mutex.run(this.dir, async () => {
      const state = await this.readActive();
      const next = change(state);
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
    const { active } = await this.readActive();
    return byCreation(await Promise.all(names.filter(isModelVersion).map((n) => this.load(n, active))));
  }

  async get(version: string): Promise<ModelVersion | null> {
    return this.load(version, (await this.readActive()).active);
  }

  async active(): Promise<ModelVersion | null> {
    const { active } = await this.readActive();
    return active ? this.load(active, active) : null;
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
      const meta = await readJsonFile<unknown>(file, null);
      if (meta === null) throw new NotFoundError(`Model version ${version} is not registered`);
      await writeJsonAtomic(file, withMetrics(meta, metrics));
    });
  }

  async promote(version: string): Promise<void> {
    if (!(await this.isRegistered(version))) throw new NotFoundError(`Cannot promote ${version}: it is not registered`);
    await this.updateActive((state) => promoted(state, version));
  }

  async rollback(): Promise<string> {
    return (await this.updateActive(rolledBack)).active!;
  }

  async localPath(version: string): Promise<string> {
    if (!(await this.isRegistered(version))) throw new NotFoundError(`Model version ${version} is not registered in ${this.dir}`);
    return path.join(this.dir, version);
  }
}

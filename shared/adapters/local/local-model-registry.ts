import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { IssError, NotFoundError } from '../../errors.js';
import { modelManifestSchema } from '../../model/manifest.js';
import type { ModelMetrics, ModelRegistry, ModelVersion } from '../../ports/model-registry.js';
import { KeyedMutex, SAFE_NAME, isNotFound, readJsonFile, writeFileAtomic, writeJsonAtomic } from './atomic-file.js';

/**
 * Model versions in a folder: `<dir>/<version>/` holds manifest.json, meta.json (parent, metrics,
 * lineage, createdAt) and the model files; `<dir>/active.json` points at the active version and
 * keeps the history of promotions, so rollback knows what was active before.
 */
const metaSchema = z.object({
  version: z.string(),
  parent: z.string().nullable(),
  createdAt: z.string(),
  metrics: z.record(z.string(), z.unknown()).nullable(),
  lineage: z.record(z.string(), z.unknown()),
});

const activeSchema = z.object({
  active: z.string().nullable(),
  history: z.array(z.object({ version: z.string(), at: z.string(), action: z.enum(['promote', 'rollback']) })),
});
type ActiveFile = z.infer<typeof activeSchema>;

const mutex = new KeyedMutex();

export class LocalModelRegistry implements ModelRegistry {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  private versionDir(version: string): string {
    if (!SAFE_NAME.test(version)) {
      throw new IssError(`Invalid model version ${JSON.stringify(version)}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)`);
    }
    return path.join(this.dir, version);
  }

  private get activeFile(): string {
    return path.join(this.dir, 'active.json');
  }

  private async readActive(): Promise<ActiveFile> {
    return activeSchema.parse(await readJsonFile(this.activeFile, { active: null, history: [] }));
  }

  private async load(version: string, active: string | null): Promise<ModelVersion | null> {
    const dir = this.versionDir(version);
    const meta = await readJsonFile<unknown>(path.join(dir, 'meta.json'), null);
    if (meta === null) return null;
    const parsedMeta = metaSchema.parse(meta);
    const manifest = modelManifestSchema.parse(await readJsonFile<unknown>(path.join(dir, 'manifest.json'), null));
    return {
      version: parsedMeta.version,
      parent: parsedMeta.parent,
      createdAt: parsedMeta.createdAt,
      manifest,
      metrics: parsedMeta.metrics as ModelMetrics | null,
      lineage: parsedMeta.lineage,
      active: active === version,
    };
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
    const out: ModelVersion[] = [];
    for (const name of names) {
      if (!SAFE_NAME.test(name)) continue;
      const v = await this.load(name, active);
      if (v) out.push(v);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version));
  }

  async get(version: string): Promise<ModelVersion | null> {
    return this.load(version, (await this.readActive()).active);
  }

  async active(): Promise<ModelVersion | null> {
    const { active } = await this.readActive();
    return active ? this.load(active, active) : null;
  }

  async register(entry: Parameters<ModelRegistry['register']>[0]): Promise<ModelVersion> {
    const dir = this.versionDir(entry.version);
    const manifest = modelManifestSchema.parse(entry.manifest);
    if (manifest.version !== entry.version) {
      throw new IssError(`Manifest version ${manifest.version} does not match the registered version ${entry.version}`);
    }
    if (entry.parent !== null) this.versionDir(entry.parent);
    return mutex.run(this.dir, async () => {
      if (await readJsonFile<unknown>(path.join(dir, 'meta.json'), null)) {
        throw new IssError(`Model version ${entry.version} is already registered (versions are immutable; pick a new name)`);
      }
      for (const [name, data] of Object.entries(entry.files)) {
        const rel = path.posix.normalize(name);
        if (rel.startsWith('..') || path.posix.isAbsolute(rel) || rel === 'meta.json') {
          throw new IssError(`Invalid model file name ${JSON.stringify(name)}`);
        }
        await writeFileAtomic(path.join(dir, ...rel.split('/')), data);
      }
      await writeJsonAtomic(path.join(dir, 'manifest.json'), manifest);
      // meta.json last: a version without it is an interrupted registration and stays invisible.
      await writeJsonAtomic(path.join(dir, 'meta.json'), {
        version: entry.version,
        parent: entry.parent,
        createdAt: new Date().toISOString(),
        metrics: entry.metrics ?? null,
        lineage: entry.lineage ?? {},
      });
      const v = await this.get(entry.version);
      if (!v) throw new NotFoundError(`Model version ${entry.version} vanished after registration`);
      return v;
    });
  }

  async setMetrics(version: string, metrics: ModelMetrics): Promise<void> {
    const file = path.join(this.versionDir(version), 'meta.json');
    await mutex.run(this.dir, async () => {
      const meta = await readJsonFile<unknown>(file, null);
      if (meta === null) throw new NotFoundError(`Model version ${version} is not registered`);
      await writeJsonAtomic(file, { ...metaSchema.parse(meta), metrics });
    });
  }

  async promote(version: string): Promise<void> {
    await mutex.run(this.dir, async () => {
      if (!(await this.get(version))) throw new NotFoundError(`Cannot promote ${version}: it is not registered`);
      const state = await this.readActive();
      if (state.active === version) return;
      await writeJsonAtomic(this.activeFile, {
        active: version,
        history: [...state.history, { version, at: new Date().toISOString(), action: 'promote' }],
      } satisfies ActiveFile);
    });
  }

  async rollback(): Promise<string> {
    return mutex.run(this.dir, async () => {
      const state = await this.readActive();
      if (!state.active) throw new IssError('Cannot roll back: no model version is active');
      // Promotions stack up and each rollback pops one, so repeated rollbacks walk back in time.
      const stack: string[] = [];
      for (const h of state.history) {
        if (h.action === 'promote') stack.push(h.version);
        else stack.pop();
      }
      const previous = stack.length >= 2 ? stack[stack.length - 2] : undefined;
      if (!previous) throw new IssError(`Cannot roll back: no version was active before ${state.active}`);
      await writeJsonAtomic(this.activeFile, {
        active: previous,
        history: [...state.history, { version: previous, at: new Date().toISOString(), action: 'rollback' }],
      } satisfies ActiveFile);
      return previous;
    });
  }

  async localPath(version: string): Promise<string> {
    const dir = this.versionDir(version);
    if (!(await readJsonFile<unknown>(path.join(dir, 'meta.json'), null))) {
      throw new NotFoundError(`Model version ${version} is not registered in ${this.dir}`);
    }
    return dir;
  }
}

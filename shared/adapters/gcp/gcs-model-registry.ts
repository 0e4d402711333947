import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Storage } from '@google-cloud/storage';
import { z } from 'zod';
import { GenerationMismatchError, IssError, NotFoundError, ParseError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import { modelManifestSchema } from '../../model/manifest.js';
import type { ModelMetrics, ModelRegistry, ModelVersion } from '../../ports/model-registry.js';
import { GcsBlobStore } from './gcs-blob-store.js';

/**
 * Model versions in a GCS bucket, laid out like the local registry folder:
 * `<prefix>/<version>/{manifest.json, meta.json, files…}` and `<prefix>/active.json` (the active
 * version and the promotion history). Versions are immutable; `meta.json` is written last with
 * `ifGenerationMatch=0`, so it marks a complete registration and two registrations of one
 * version cannot both win. `active.json` and metrics are read-modify-written under
 * `ifGenerationMatch` preconditions (optimistic concurrency, retried on conflict).
 */
const SAFE_VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const CONFLICT_RETRIES = 8;

const metaSchema = z.object({
  version: z.string(),
  parent: z.string().nullable(),
  createdAt: z.string(),
  metrics: z.record(z.string(), z.unknown()).nullable(),
  lineage: z.record(z.string(), z.unknown()),
});
type Meta = z.infer<typeof metaSchema>;

const activeSchema = z.object({
  active: z.string().nullable(),
  history: z.array(z.object({ version: z.string(), at: z.string(), action: z.enum(['promote', 'rollback']) })),
});
type ActiveFile = z.infer<typeof activeSchema>;

export interface GcsModelRegistryOptions {
  storage: Storage;
  bucket: string;
  /** Folder of the registry in the bucket. Default `models`. */
  prefix?: string;
  /** Local folder where `localPath` downloads versions (once: versions are immutable). */
  cacheDir: string;
  logger?: Logger;
}

export class GcsModelRegistry implements ModelRegistry {
  readonly blobs: GcsBlobStore;
  private readonly prefix: string;
  private readonly cacheDir: string;
  private readonly logger: Logger;
  private readonly downloads = new Map<string, Promise<string>>();

  constructor(options: GcsModelRegistryOptions) {
    this.blobs = new GcsBlobStore(options.storage, options.bucket);
    this.prefix = (options.prefix ?? 'models').replace(/^\/+|\/+$/g, '');
    if (!this.prefix) throw new IssError('GcsModelRegistry prefix must not be empty');
    this.cacheDir = path.resolve(options.cacheDir);
    this.logger = options.logger ?? silentLogger;
  }

  async list(): Promise<ModelVersion[]> {
    const versions = new Set<string>();
    const metaName = /^([^/]+)\/meta\.json$/;
    for await (const blob of this.blobs.list(`${this.prefix}/`)) {
      const match = metaName.exec(blob.name.slice(this.prefix.length + 1));
      if (match && SAFE_VERSION.test(match[1]!)) versions.add(match[1]!);
    }
    const { active } = await this.readActive();
    const loaded = await Promise.all([...versions].map((v) => this.load(v, active)));
    return loaded
      .filter((v): v is ModelVersion => v !== null)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.version.localeCompare(b.version));
  }

  async get(version: string): Promise<ModelVersion | null> {
    this.checkVersion(version);
    return this.load(version, (await this.readActive()).active);
  }

  async active(): Promise<ModelVersion | null> {
    const { active } = await this.readActive();
    return active ? this.load(active, active) : null;
  }

  async register(entry: Parameters<ModelRegistry['register']>[0]): Promise<ModelVersion> {
    this.checkVersion(entry.version);
    if (entry.parent !== null) this.checkVersion(entry.parent);
    const manifest = modelManifestSchema.parse(entry.manifest);
    if (manifest.version !== entry.version) {
      throw new IssError(`Manifest version ${manifest.version} does not match the registered version ${entry.version}`);
    }
    const files = Object.entries(entry.files).map(([name, data]) => [this.fileName(entry.version, name), data] as const);
    if (await this.blobs.stat(this.object(entry.version, 'meta.json'))) {
      throw new IssError(`Model version ${entry.version} is already registered (versions are immutable; pick a new name)`);
    }
    for (const [name, data] of files) await this.blobs.write(name, data);
    await this.writeJson(this.object(entry.version, 'manifest.json'), manifest);
    const meta: Meta = {
      version: entry.version,
      parent: entry.parent,
      createdAt: new Date().toISOString(),
      metrics: entry.metrics ?? null,
      lineage: entry.lineage ?? {},
    };
    try {
      await this.writeJson(this.object(entry.version, 'meta.json'), meta, '0');
    } catch (err) {
      if (err instanceof GenerationMismatchError) {
        throw new IssError(`Model version ${entry.version} is already registered (registered concurrently by another process)`, { cause: err });
      }
      throw err;
    }
    this.logger.info({ version: entry.version, files: files.length }, 'model version registered');
    const v = await this.get(entry.version);
    if (!v) throw new NotFoundError(`Model version ${entry.version} vanished after registration`);
    return v;
  }

  async setMetrics(version: string, metrics: ModelMetrics): Promise<void> {
    this.checkVersion(version);
    const name = this.object(version, 'meta.json');
    await this.withRetry(`metrics of ${version}`, async () => {
      const current = await this.blobs.readVersioned(name);
      if (!current) throw new NotFoundError(`Model version ${version} is not registered`);
      const meta = metaSchema.parse(parseJson(current.data, name));
      await this.writeJson(name, { ...meta, metrics }, current.generation);
    });
  }

  async promote(version: string): Promise<void> {
    this.checkVersion(version);
    if (!(await this.blobs.stat(this.object(version, 'meta.json')))) {
      throw new NotFoundError(`Cannot promote ${version}: it is not registered`);
    }
    await this.updateActive((state) =>
      state.active === version
        ? null
        : { active: version, history: [...state.history, { version, at: new Date().toISOString(), action: 'promote' }] },
    );
    this.logger.info({ version }, 'model version promoted');
  }

  async rollback(): Promise<string> {
    let previous = '';
    await this.updateActive((state) => {
      if (!state.active) throw new IssError('Cannot roll back: no model version is active');
      // Promotions stack up and each rollback pops one, so repeated rollbacks walk back in time.
      const stack: string[] = [];
      for (const h of state.history) {
        if (h.action === 'promote') stack.push(h.version);
        else stack.pop();
      }
      const target = stack.length >= 2 ? stack[stack.length - 2] : undefined;
      if (!target) throw new IssError(`Cannot roll back: no version was active before ${state.active}`);
      previous = target;
      return { active: target, history: [...state.history, { version: target, at: new Date().toISOString(), action: 'rollback' }] };
    });
    this.logger.info({ version: previous }, 'model version rolled back');
    return previous;
  }

  /** Downloads the version's files into `<cacheDir>/<version>` once; later calls reuse the folder. */
  localPath(version: string): Promise<string> {
    this.checkVersion(version);
    let pending = this.downloads.get(version);
    if (!pending) {
      pending = this.download(version).catch((err: unknown) => {
        this.downloads.delete(version);
        throw err;
      });
      this.downloads.set(version, pending);
    }
    return pending;
  }

  private async download(version: string): Promise<string> {
    const target = path.join(this.cacheDir, version);
    // A folder that exists was renamed into place complete (versions never change).
    if (await exists(path.join(target, 'meta.json'))) return target;
    if (!(await this.blobs.stat(this.object(version, 'meta.json')))) {
      throw new NotFoundError(`Model version ${version} is not registered in gs://${this.blobs.bucket}/${this.prefix}`);
    }
    const tmp = path.join(this.cacheDir, `.${version}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const base = `${this.prefix}/${version}/`;
    try {
      let count = 0;
      for await (const blob of this.blobs.list(base)) {
        const rel = blob.name.slice(base.length);
        const file = path.join(tmp, ...safeRelative(rel).split('/'));
        await fs.mkdir(path.dirname(file), { recursive: true });
        // Pinned to the listed generation: a file cannot change under us unnoticed.
        await fs.writeFile(file, await this.blobs.read(blob.name, { generation: blob.generation }));
        count += 1;
      }
      await fs.mkdir(this.cacheDir, { recursive: true });
      try {
        await fs.rename(tmp, target);
      } catch (err) {
        // Another process finished the same download first: its copy is identical.
        if (!(await exists(path.join(target, 'meta.json')))) throw err;
      }
      this.logger.info({ version, files: count, dir: target }, 'model version downloaded');
      return target;
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  private async load(version: string, active: string | null): Promise<ModelVersion | null> {
    const metaName = this.object(version, 'meta.json');
    let metaBytes: Buffer;
    try {
      metaBytes = await this.blobs.read(metaName);
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
    const meta = metaSchema.parse(parseJson(metaBytes, metaName));
    const manifestName = this.object(version, 'manifest.json');
    const manifest = modelManifestSchema.parse(parseJson(await this.blobs.read(manifestName), manifestName));
    return {
      version: meta.version,
      parent: meta.parent,
      createdAt: meta.createdAt,
      manifest,
      metrics: meta.metrics as ModelMetrics | null,
      lineage: meta.lineage,
      active: active === version,
    };
  }

  private async readActive(): Promise<ActiveFile & { generation: string }> {
    const name = `${this.prefix}/active.json`;
    const current = await this.blobs.readVersioned(name);
    if (!current) return { active: null, history: [], generation: '0' };
    return { ...activeSchema.parse(parseJson(current.data, name)), generation: current.generation };
  }

  /** Read-modify-write of active.json; `change` returns null for "nothing to do". */
  private async updateActive(change: (state: ActiveFile) => ActiveFile | null): Promise<void> {
    await this.withRetry('active.json', async () => {
      const { generation, ...state } = await this.readActive();
      const next = change(state);
      if (next) await this.writeJson(`${this.prefix}/active.json`, next, generation);
    });
  }

  private async withRetry(what: string, attempt: () => Promise<void>): Promise<void> {
    for (let i = 1; ; i += 1) {
      try {
        return await attempt();
      } catch (err) {
        if (!(err instanceof GenerationMismatchError) || i >= CONFLICT_RETRIES) throw err;
        this.logger.debug({ what, attempt: i }, 'concurrent update, retrying');
        await new Promise((r) => setTimeout(r, 20 * i + Math.random() * 50));
      }
    }
  }

  private async writeJson(name: string, value: unknown, ifGenerationMatch?: string): Promise<void> {
    await this.blobs.write(name, `${JSON.stringify(value, null, 2)}\n`, { contentType: 'application/json', ifGenerationMatch });
  }

  private object(version: string, file: string): string {
    return `${this.prefix}/${version}/${file}`;
  }

  private fileName(version: string, name: string): string {
    const rel = safeRelative(name);
    if (rel === 'meta.json') throw new IssError(`Invalid model file name ${JSON.stringify(name)}: reserved`);
    return this.object(version, rel);
  }

  private checkVersion(version: string): void {
    if (!SAFE_VERSION.test(version)) {
      throw new IssError(`Invalid model version ${JSON.stringify(version)}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)`);
    }
  }
}

function safeRelative(name: string): string {
  const rel = path.posix.normalize(name.replace(/\\/g, '/'));
  if (!name || rel.startsWith('..') || path.posix.isAbsolute(rel) || rel === '.') {
    throw new IssError(`Invalid model file name ${JSON.stringify(name)}: must be a relative path`);
  }
  return rel;
}

function parseJson(data: Buffer, name: string): unknown {
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new ParseError(`${name} is not valid JSON`, { cause: err });
  }
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

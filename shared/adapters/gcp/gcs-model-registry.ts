import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Storage } from '@google-cloud/storage';
import { GenerationMismatchError, AppError, NotFoundError, ParseError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
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
  relativeModelPath,
  removalRefusal,
  removedRollbackTarget,
  rolledBack,
  toModelVersion,
  withMetrics,
  type ActivePointer,
} from '../model-registry-base.js';
import { GcsBlobStore } from './gcs-blob-store.js';

/**
 * Model versions in a GCS bucket, laid out like the local registry folder
 * (shared/adapters/model-registry-base.ts): `<prefix>/<version>/{manifest.json, meta.json, files…}`
 * and `<prefix>/active.json`. Versions are immutable; `meta.json` is written last with
 * `ifGenerationMatch=0`, so it marks a complete registration and two registrations of one
 * version cannot both win. `active.json` and metrics are read-modify-written under
 * `ifGenerationMatch` preconditions (optimistic concurrency, retried on conflict).
 */
const CONFLICT_RETRIES = 8;

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
    if (!this.prefix) throw new AppError('GcsModelRegistry prefix must not be empty');
    this.cacheDir = path.resolve(options.cacheDir);
    this.logger = options.logger ?? silentLogger;
  }

  async list(): Promise<ModelVersion[]> {
    const versions = new Set<string>();
    const metaName = /^([^/]+)\/meta\.json$/;
    for await (const blob of this.blobs.list(`${this.prefix}/`)) {
      const match = metaName.exec(blob.name.slice(this.prefix.length + 1));
      if (match && isModelVersion(match[1]!)) versions.add(match[1]!);
    }
    const pointer = await this.readActive();
    return byCreation(await Promise.all([...versions].map((v) => this.load(v, pointer))));
  }

  async get(version: string): Promise<ModelVersion | null> {
    checkModelVersion(version);
    return this.load(version, await this.readActive());
  }

  async active(): Promise<ModelVersion | null> {
    const pointer = await this.readActive();
    return pointer.active ? this.load(pointer.active, pointer) : null;
  }

  async register(entry: Parameters<ModelRegistry['register']>[0]): Promise<ModelVersion> {
    const { files, manifest, meta } = prepareRegistration(entry);
    if (await this.blobs.stat(this.object(entry.version, REGISTRY_FILES.meta))) throw alreadyRegistered(entry.version);
    for (const [name, data] of files) await this.blobs.write(this.object(entry.version, name), data);
    await this.writeJson(this.object(entry.version, REGISTRY_FILES.manifest), manifest);
    try {
      await this.writeJson(this.object(entry.version, REGISTRY_FILES.meta), meta, '0');
    } catch (err) {
      if (err instanceof GenerationMismatchError) throw alreadyRegistered(entry.version, 'registered concurrently by another process', err);
      throw err;
    }
    this.logger.info({ version: entry.version, files: files.length }, 'model version registered');
    const v = await this.get(entry.version);
    if (!v) throw new NotFoundError(`Model version ${entry.version} vanished after registration`);
    return v;
  }

  async setMetrics(version: string, metrics: ModelMetrics): Promise<void> {
    const name = this.object(version, REGISTRY_FILES.meta);
    await this.withRetry(`metrics of ${version}`, async () => {
      const current = await this.blobs.readVersioned(name);
      if (!current) throw new NotFoundError(`Model version ${version} is not registered`);
      await this.writeJson(name, withMetrics(parseJson(current.data, name), metrics), current.generation);
    });
  }

  async promote(version: string): Promise<void> {
    if (!(await this.blobs.stat(this.object(version, REGISTRY_FILES.meta)))) {
      throw new NotFoundError(`Cannot promote ${version}: it is not registered`);
    }
    await this.updateActive((state) => promoted(state, version));
    this.logger.info({ version }, 'model version promoted');
  }

  async rollback(): Promise<string> {
    const { active } = await this.updateActive(async (state) => {
      const next = rolledBack(state);
      if (!(await this.blobs.stat(this.object(next.active, REGISTRY_FILES.meta)))) throw removedRollbackTarget(next.active, state.active);
      return next;
    });
    this.logger.info({ version: active }, 'model version rolled back');
    return active!;
  }

  /** Deletes the version's objects, meta.json first (so a removal cut short leaves an unregistered, invisible folder). */
  async remove(version: string): Promise<void> {
    const metaName = this.object(version, REGISTRY_FILES.meta);
    if (!(await this.blobs.stat(metaName))) throw new NotFoundError(`Model version ${version} is not registered`);
    const refusal = removalRefusal(await this.readActive(), version);
    if (refusal) throw new AppError(refusal);
    await this.blobs.delete(metaName);
    for await (const blob of this.blobs.list(`${this.prefix}/${version}/`)) await this.blobs.delete(blob.name);
    this.downloads.delete(version);
    this.logger.info({ version }, 'model version removed');
  }

  /** Downloads the version's files into `<cacheDir>/<version>` once; later calls reuse the folder. */
  localPath(version: string): Promise<string> {
    checkModelVersion(version);
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
    if (await exists(path.join(target, REGISTRY_FILES.meta))) return target;
    if (!(await this.blobs.stat(this.object(version, REGISTRY_FILES.meta)))) {
      throw new NotFoundError(`Model version ${version} is not registered in gs://${this.blobs.bucket}/${this.prefix}`);
    }
    const tmp = path.join(this.cacheDir, `.${version}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    const base = `${this.prefix}/${version}/`;
    try {
      let count = 0;
      for await (const blob of this.blobs.list(base)) {
        const rel = blob.name.slice(base.length);
        const file = path.join(tmp, ...relativeModelPath(rel).split('/'));
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
        if (!(await exists(path.join(target, REGISTRY_FILES.meta)))) throw err;
      }
      this.logger.info({ version, files: count, dir: target }, 'model version downloaded');
      return target;
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }

  private async load(version: string, pointer: ActivePointer): Promise<ModelVersion | null> {
    const metaName = this.object(version, REGISTRY_FILES.meta);
    let metaBytes: Buffer;
    try {
      metaBytes = await this.blobs.read(metaName);
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
    const manifestName = this.object(version, REGISTRY_FILES.manifest);
    return toModelVersion(parseJson(metaBytes, metaName), parseJson(await this.blobs.read(manifestName), manifestName), pointer);
  }

  private async readActive(): Promise<ActivePointer & { generation: string }> {
    const name = `${this.prefix}/${REGISTRY_FILES.active}`;
    const current = await this.blobs.readVersioned(name);
    return { ...parseActivePointer(current ? parseJson(current.data, name) : null), generation: current?.generation ?? '0' };
  }

  /** Read-modify-write of active.json; `change` returns null for "nothing to do". Returns the state after. */
  private async updateActive(change: (state: ActivePointer) => ActivePointer | null | Promise<ActivePointer | null>): Promise<ActivePointer> {
    let after = parseActivePointer(null);
    await this.withRetry(REGISTRY_FILES.active, async () => {
      const { generation, ...state } = await this.readActive();
      const next = await change(state);
      if (next) await this.writeJson(`${this.prefix}/${REGISTRY_FILES.active}`, next, generation);
      after = next ?? state;
    });
    return after;
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
    return `${this.prefix}/${checkModelVersion(version)}/${file}`;
  }
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

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ensureDefaultModel } from '../model/default-model.js';
import { loadEmbedder } from '../model/load-embedder.js';
import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import { IssError, NotFoundError } from '../errors.js';

/**
 * Registers the offline default model (converted from the nsfwjs Keras MobileNetV2 on first use,
 * no network) when the registry has no active version yet.
 */
export async function ensureActiveModel(registry: ModelRegistry, cacheDir: string, logger: Logger): Promise<ModelVersion> {
  const active = await registry.active();
  if (active) return active;
  const { dir, manifest } = await ensureDefaultModel(cacheDir);
  const existing = await registry.get(manifest.version);
  if (!existing) {
    const files: Record<string, Buffer> = {};
    for (const name of await fs.readdir(dir)) {
      if (name !== 'manifest.json') files[name] = await fs.readFile(path.join(dir, name));
    }
    await registry.register({ version: manifest.version, parent: null, manifest, files, lineage: { source: 'nsfwjs MobileNetV2 (ImageNet), converted to ONNX' } });
  }
  await registry.promote(manifest.version);
  logger.info({ modelVersion: manifest.version }, 'registered and activated the default model');
  return (await registry.active())!;
}

/**
 * The active model, loaded lazily once and kept; `refresh()` swaps it when the registry's active
 * version changed (after a promotion or rollback by another process).
 */
export class ModelHolder {
  private loaded: Embedder | null = null;
  private loading: Promise<Embedder> | null = null;
  private readonly switching = new Map<string, Promise<Embedder>>();

  constructor(
    private readonly registry: ModelRegistry,
    private readonly options: { threads?: number; maxPixels: number; executionProvider?: 'cpu' | 'cuda'; logger: Logger },
  ) {}

  async get(): Promise<Embedder> {
    if (this.loaded) return this.loaded;
    this.loading ??= this.load().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  /** The loaded model; call `get()` once before. */
  current(): Embedder {
    if (!this.loaded) throw new IssError('model not loaded yet');
    return this.loaded;
  }

  /** Reloads when the active version changed; returns true if it did. */
  async refresh(): Promise<boolean> {
    const active = await this.registry.active();
    if (!active || active.version === this.loaded?.modelVersion) return false;
    const previous = this.loaded;
    this.loaded = null;
    await this.get();
    await previous?.close();
    this.options.logger.info({ from: previous?.modelVersion, to: active.version }, 'active model changed');
    return true;
  }

  /**
   * A given registry version, loaded in place of the current model when it is another one: a
   * search-only process follows the live index this way instead of the registry's active flag.
   */
  async forVersion(version: string): Promise<Embedder> {
    const current = await this.get();
    if (current.modelVersion === version) return current;
    let pending = this.switching.get(version);
    if (!pending) {
      pending = (async () => {
        if (!(await this.registry.get(version))) throw new NotFoundError(`the live index was built with model ${version}, which is not in the registry`);
        const embedder = await this.loadVersion(version);
        const previous = this.loaded;
        this.loaded = embedder;
        // Requests that picked up the previous model finish with it: closed a little later.
        if (previous && previous !== embedder) setTimeout(() => void previous.close().catch(() => undefined), 30_000).unref();
        this.options.logger.info({ from: previous?.modelVersion, to: version }, 'model switched to the one the live index was built with');
        return embedder;
      })().finally(() => this.switching.delete(version));
      this.switching.set(version, pending);
    }
    return pending;
  }

  private async load(): Promise<Embedder> {
    const active = await this.registry.active();
    if (!active) throw new IssError('no active model in the registry');
    const embedder = await this.loadVersion(active.version);
    this.loaded = embedder;
    return embedder;
  }

  private async loadVersion(version: string): Promise<Embedder> {
    return loadEmbedder(await this.registry.localPath(version), {
      threads: this.options.threads,
      maxPixels: this.options.maxPixels,
      executionProvider: this.options.executionProvider,
    });
  }

  async close(): Promise<void> {
    await this.loaded?.close();
    this.loaded = null;
  }
}

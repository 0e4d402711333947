import type { Logger } from '../logger.js';
import type { Embedder } from '../ports/embedder.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import { AppError, NotFoundError } from '../errors.js';

/**
 * The registry has no active model yet (a new cloud stack before its bootstrap job ran). A
 * search answers it with HTTP 503 (`statusCode`, read by the search app's error handler): the
 * service is up and will answer once a model is active, without a restart.
 */
export class NoActiveModelError extends AppError {
  override readonly code = 'NO_ACTIVE_MODEL';
  readonly statusCode = 503;
  constructor(hint = 'the model registry has no active version: register and promote one') {
    super(`no model yet: ${hint}`);
  }
}

export interface ModelHolderOptions {
  threads?: number;
  maxPixels: number;
  executionProvider?: 'cpu' | 'cuda';
  /** See LoadEmbedderOptions.cudaFallback: 'fail' (default) or the explicit opt-in 'cpu'. */
  cudaFallback?: 'fail' | 'cpu';
  logger: Logger;
  /**
   * While the registry has no active model, `get()` throws NoActiveModelError and asks the
   * registry again only after this long (default 5 s), so requests do not each read the registry.
   */
  absentRetryMs?: number;
  /** What NoActiveModelError tells the reader to do (who registers the first model, and how). */
  absentHint?: string;
  /** Opens a registry version from its local folder; default: loadEmbedder (tests inject fakes). */
  load?: (dir: string, version: string) => Promise<Embedder>;
  now?: () => number;
}

/**
 * The active model, loaded lazily once and kept; `refresh()` swaps it when the registry's active
 * version changed (after a promotion or rollback by another process).
 */
export class ModelHolder {
  private loaded: Embedder | null = null;
  private loading: Promise<Embedder> | null = null;
  private readonly switching = new Map<string, Promise<Embedder>>();
  /** A model loaded beside the current one for queries (see forLiveIndex). */
  private beside: { version: string; embedder: Promise<Embedder> } | null = null;
  /** Until when "no active model" is believed without asking the registry again. */
  private absentUntil = 0;

  constructor(
    private readonly registry: ModelRegistry,
    private readonly options: ModelHolderOptions,
  ) {}

  /**
   * The loaded model, loading the active version on first use. Throws NoActiveModelError while
   * the registry has none (re-checked after `absentRetryMs`), so a process can start before the
   * first model exists and pick it up by itself.
   */
  async get(): Promise<Embedder> {
    if (this.loaded) return this.loaded;
    if (this.now() < this.absentUntil) throw new NoActiveModelError(this.options.absentHint);
    this.loading ??= this.load().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  /** The loaded model; call `get()` once before. */
  current(): Embedder {
    if (!this.loaded) throw new AppError('model not loaded yet');
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
   * search-only process (the cloud search service) follows the live index this way instead of the
   * registry's active flag.
   */
  async forVersion(version: string): Promise<Embedder> {
    const current = await this.get();
    if (current.modelVersion === version) return current;
    let pending = this.switching.get(version);
    if (!pending) {
      pending = (async () => {
        const embedder = await this.loadRegistered(version);
        const previous = this.loaded;
        this.loaded = embedder;
        if (previous && previous !== embedder) closeLater(previous);
        this.options.logger.info({ from: previous?.modelVersion, to: version }, 'model switched to the one the live index was built with');
        return embedder;
      })().finally(() => this.switching.delete(version));
      this.switching.set(version, pending);
    }
    return pending;
  }

  /**
   * The model the live index was built with, for queries, leaving the model this holder embeds
   * with alone: a process that both embeds (with the registry's active model) and searches (local
   * `up`) keeps answering queries during a promotion's reindex, when the alias still points at the
   * previous model's index. Another version is loaded beside the current one (one at a time) and
   * let go once queries ask for the current model again.
   */
  async forLiveIndex(version: string): Promise<Embedder> {
    const current = await this.get();
    if (current.modelVersion === version) {
      this.dropBeside();
      return current;
    }
    if (this.beside?.version !== version) {
      this.dropBeside();
      const slot = {
        version,
        embedder: this.loadRegistered(version).then((embedder) => {
          this.options.logger.info(
            { active: current.modelVersion, live: version },
            'queries use the model the live index was built with, loaded beside the active one',
          );
          return embedder;
        }),
      };
      slot.embedder.catch(() => {
        if (this.beside === slot) this.beside = null;
      });
      this.beside = slot;
    }
    return this.beside!.embedder;
  }

  private dropBeside(): void {
    const slot = this.beside;
    this.beside = null;
    slot?.embedder.then(closeLater, () => undefined);
  }

  private async loadRegistered(version: string): Promise<Embedder> {
    if (!(await this.registry.get(version))) throw new NotFoundError(`the live index was built with model ${version}, which is not in the registry`);
    return this.loadVersion(version);
  }

  private async load(): Promise<Embedder> {
    const active = await this.registry.active();
    if (!active) {
      this.absentUntil = this.now() + (this.options.absentRetryMs ?? 5_000);
      throw new NoActiveModelError(this.options.absentHint);
    }
    const embedder = await this.loadVersion(active.version);
    this.loaded = embedder;
    return embedder;
  }

  private async loadVersion(version: string): Promise<Embedder> {
    const dir = await this.registry.localPath(version);
    if (this.options.load) return this.options.load(dir, version);
    // ONNX Runtime and sharp load with the first model, not with the holder (`imgsearch status` never needs them).
    const { loadEmbedder } = await import('../model/load-embedder.js');
    return loadEmbedder(dir, {
      threads: this.options.threads,
      maxPixels: this.options.maxPixels,
      executionProvider: this.options.executionProvider,
      cudaFallback: this.options.cudaFallback,
      logger: this.options.logger,
    });
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  async close(): Promise<void> {
    const beside = this.beside;
    this.beside = null;
    await beside?.embedder.then(
      (e) => e.close(),
      () => undefined,
    );
    await this.loaded?.close();
    this.loaded = null;
  }
}

/** Requests that picked up a model finish with it: it is closed a little later. */
function closeLater(embedder: Embedder): void {
  setTimeout(() => void embedder.close().catch(() => undefined), 30_000).unref();
}

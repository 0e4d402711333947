import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../logger.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import { AppError } from '../errors.js';

/**
 * The first model of a registry. In the cloud only the bootstrap job (jobs/bootstrap-model, the
 * one workload with write access to the models bucket besides the trainer) calls this, once per
 * stack during `pulumi up`; the search service and the embed job only read the registry. Locally,
 * `imgsearch` calls {@link ensureActiveModel} when it opens its runtime.
 */

export const INITIAL_MODELS = ['default', 'clip-vit-b32'] as const;
export type InitialModel = (typeof INITIAL_MODELS)[number];

export interface BootstrapOptions {
  /** 'default': the offline MobileNetV2 converted from nsfwjs; 'clip-vit-b32': the pinned CLIP download. */
  initial: InitialModel;
  /** Scratch folder for the conversion or the downloads. */
  cacheDir: string;
  logger: Logger;
  /** HTTP client for the CLIP download (tests inject one). */
  fetch?: typeof fetch;
  /** Expected SHA-256 per CLIP file name; default: the pinned table of shared/services/model-pull.ts. */
  sha256?: Record<string, string>;
}

export type BootstrapResult =
  /** The registry already had an active model: nothing was written (the job is idempotent). */
  | { status: 'present'; version: string }
  /** The initial model is now active (`registered: false` when its files were already in the registry). */
  | { status: 'promoted'; version: string; initial: InitialModel; registered: boolean };

/** Registers and promotes the configured first model unless the registry already has an active one. */
export async function bootstrapModel(registry: ModelRegistry, options: BootstrapOptions): Promise<BootstrapResult> {
  const active = await registry.active();
  if (active) return { status: 'present', version: active.version };
  const { version, registered } = await registerInitial(registry, options);
  await registry.promote(version);
  options.logger.info({ modelVersion: version, initial: options.initial, registered }, 'registered and activated the first model');
  return { status: 'promoted', version, initial: options.initial, registered };
}

/**
 * The registry's active model, after registering the offline default model (converted from the
 * nsfwjs Keras MobileNetV2 on first use, no network) when there is none yet. Local mode.
 */
export async function ensureActiveModel(registry: ModelRegistry, cacheDir: string, logger: Logger): Promise<ModelVersion> {
  await bootstrapModel(registry, { initial: 'default', cacheDir, logger });
  const active = await registry.active();
  if (!active) throw new AppError('the model registry has no active version right after promoting one');
  return active;
}

async function registerInitial(registry: ModelRegistry, options: BootstrapOptions): Promise<{ version: string; registered: boolean }> {
  switch (options.initial) {
    case 'default':
      return registerDefaultModel(registry, options.cacheDir);
    case 'clip-vit-b32': {
      // Loaded only when a registry is empty: opening a data directory stays cheap (`imgsearch status`).
      const { pullClip } = await import('./model-pull.js');
      const pulled = await pullClip(registry, { cacheDir: path.join(options.cacheDir, 'clip-vit-b32'), fetch: options.fetch, sha256: options.sha256 }, (line) =>
        options.logger.info(line),
      );
      return { version: pulled.version, registered: pulled.registered };
    }
  }
}

async function registerDefaultModel(registry: ModelRegistry, cacheDir: string): Promise<{ version: string; registered: boolean }> {
  const { ensureDefaultModel } = await import('../model/default-model.js');
  const { dir, manifest } = await ensureDefaultModel(cacheDir);
  if (await registry.get(manifest.version)) return { version: manifest.version, registered: false };
  const files: Record<string, Buffer> = {};
  for (const name of await fs.readdir(dir)) {
    if (name !== 'manifest.json') files[name] = await fs.readFile(path.join(dir, name));
  }
  await registry.register({
    version: manifest.version,
    parent: null,
    manifest,
    files,
    lineage: { source: 'nsfwjs MobileNetV2 (ImageNet), converted to ONNX' },
  });
  return { version: manifest.version, registered: true };
}

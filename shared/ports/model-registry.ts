import type { ModelManifest } from '../model/manifest.js';

export interface ModelMetrics {
  imageToImage?: Record<string, number>;
  textToImage?: Record<string, number> | null;
  [key: string]: unknown;
}

export interface ModelVersion {
  version: string;
  parent: string | null;
  createdAt: string;
  manifest: ModelManifest;
  metrics: ModelMetrics | null;
  lineage: { dataSnapshot?: string; codeVersion?: string; [key: string]: unknown };
  active: boolean;
  /** Whether the version was ever made active (promoted); a version never promoted is a candidate `model prune` may remove. */
  everActive?: boolean;
}

/**
 * Model versions with manifest, files (ONNX, head weights, tokenizer), metrics and lineage.
 * Exactly one version is active; promote/rollback move that pointer (history kept).
 */
export interface ModelRegistry {
  list(): Promise<ModelVersion[]>;
  get(version: string): Promise<ModelVersion | null>;
  active(): Promise<ModelVersion | null>;
  register(entry: {
    version: string;
    parent: string | null;
    manifest: ModelManifest;
    files: Record<string, Buffer>;
    metrics?: ModelMetrics | null;
    lineage?: ModelVersion['lineage'];
  }): Promise<ModelVersion>;
  setMetrics(version: string, metrics: ModelMetrics): Promise<void>;
  promote(version: string): Promise<void>;
  /** Re-activates the version that was active before the current one; returns it. */
  rollback(): Promise<string>;
  /**
   * Deletes a version's files. Refuses (AppError) the active version and the version a rollback
   * would re-activate; a later rollback that would reach a removed version refuses too.
   */
  remove(version: string): Promise<void>;
  /** A local directory holding the version's files (downloaded and cached for remote registries). */
  localPath(version: string): Promise<string>;
}

import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.js';
import type { Embedder, FeatureStore, ModelRegistry, VectorIndex, VectorIndexCatalog } from '../../shared/ports/index.js';
import { rollbackIndex, type LifecycleDeps } from '../../shared/services/model-lifecycle.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * `imgsearch index rollback` never leaves the model and the index disagreeing: the alias goes back
 * to the previous index and the registry to that index's model, or neither moves.
 */
function world(options: { registered?: string[] } = {}) {
  const indices = new Map([
    ['images-v1', { modelVersion: 'm1', createdAt: '2026-01-01T00:00:00Z' }],
    ['images-v2', { modelVersion: 'm2', createdAt: '2026-01-02T00:00:00Z' }],
  ]);
  let alias = 'images-v2';
  let previous: string | null = 'images-v1';
  let active = 'm2';
  const registered = new Set(options.registered ?? ['m1', 'm2']);
  const index = (name: string) =>
    strict<VectorIndex>(name, {
      name,
      modelVersion: indices.get(name)!.modelVersion,
      dimension: 2,
      generations: async () => new Map(),
      upsert: async (docs) => docs.map(() => 'created' as const),
      async *scan() {
        yield [];
      },
      count: async () => 0,
    });
  const catalog = strict<VectorIndexCatalog>('catalog', {
    live: async () => index(alias),
    open: async (name) => index(name),
    versions: async () =>
      [...indices].map(([name, m]) => ({ name, modelVersion: m.modelVersion, dimension: 2, createdAt: m.createdAt, count: 0, live: name === alias })),
    async rollback() {
      const to = previous!;
      previous = alias;
      alias = to;
      return to;
    },
    async swapAlias(name) {
      previous = alias;
      alias = name;
      return previous;
    },
  });
  const registry = strict<ModelRegistry>('registry', {
    get: async (v) => (registered.has(v) ? ({ version: v } as Awaited<ReturnType<ModelRegistry['get']>>) : null),
    active: async () => ({ version: active }) as Awaited<ReturnType<ModelRegistry['active']>>,
    async promote(v) {
      active = v;
    },
  });
  const features = strict<FeatureStore>('features', {
    async *scan() {
      yield [];
    },
  });
  const deps: LifecycleDeps = {
    registry,
    catalog,
    features,
    logger: silentLogger,
    loadEmbedder: async (version) =>
      strict<Embedder>(`embedder ${version}`, { modelVersion: version, manifest: { name: 'base' } as Embedder['manifest'], close: async () => undefined }),
  };
  return { deps, state: () => ({ alias, active }) };
}

describe('index rollback switches the model with the index', () => {
  it('moves the alias to the previous index and makes its model active', async () => {
    const w = world();
    const result = await rollbackIndex(w.deps);
    expect(w.state()).toEqual({ alias: 'images-v1', active: 'm1' });
    expect(result).toMatchObject({ modelVersion: 'm1', index: 'images-v1' });
  });

  it('refuses, and leaves both where they were, when the previous index’s model is gone', async () => {
    const w = world({ registered: ['m2'] });
    await expect(rollbackIndex(w.deps)).rejects.toThrow(/m1 is no longer registered.*the alias stays on images-v2/);
    expect(w.state()).toEqual({ alias: 'images-v2', active: 'm2' });
  });
});

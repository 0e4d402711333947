import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbFeatureStore } from '../../shared/adapters/local/lancedb-feature-store.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, FeatureRecord, ModelRegistry } from '../../shared/ports/index.js';
import { activateModel, activateWithIndex, rollbackIndex, rollbackModel, type LifecycleDeps } from '../../shared/services/model-lifecycle.js';
import { testManifest } from '../contracts/model-registry.contract.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger } from './functions-fakes.js';

/**
 * The promotion order and both rollbacks on the real local adapters (LanceDB catalog and feature
 * store, the folder registry) in a temp directory: the state a query and ingestion see afterwards
 * is read back from disk, not from the code under test. Only the embedder is a fake (projection
 * of the stored base vectors: its first two components, which every model here shares).
 */
const BASE = 'base-tower';

function feature(id: string, generation: string, vector: [number, number, number] = [1, 0, 0]): FeatureRecord {
  return { id, uri: `file:///images/${id}.png`, generation, baseModel: BASE, vector: Float32Array.from(vector), labels: [] };
}

let work: string;
let catalog: LanceDbIndexCatalog;
let features: LanceDbFeatureStore;
let registry: LocalModelRegistry;
let closed: string[];
let log: ReturnType<typeof captureLogger>;

function embedder(version: string): Embedder {
  return strict<Embedder>(`embedder ${version}`, {
    modelVersion: version,
    dimension: 2,
    manifest: { name: BASE, image: { dimension: 3 } } as ModelManifest,
    project: async (base) => base.map((b) => Float32Array.of(b[0]!, b[1]!)),
    close: async () => void closed.push(version),
  });
}

function deps(overrides: Partial<LifecycleDeps> = {}): LifecycleDeps {
  return {
    registry,
    catalog,
    features,
    logger: log.logger,
    // Like the real loader: only a registered version can be loaded.
    loadEmbedder: async (version) => {
      if (!(await registry.get(version))) throw new Error(`model ${version} is not registered`);
      return embedder(version);
    },
    ...overrides,
  };
}

/** The real registry, with `promote` failing as an unreachable registry would. */
function registryFailingPromote(): ModelRegistry {
  return new Proxy(registry, {
    get(target, prop, receiver) {
      if (prop === 'promote') return async () => Promise.reject(new Error('registry unavailable'));
      const value = Reflect.get(target, prop, receiver) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const register = (version: string) =>
  registry.register({ version, parent: null, manifest: testManifest(version, 2), files: { 'image.onnx': Buffer.from(version) } });

/** What a query and ingestion see: the alias target, the active model, the index versions and their model. */
async function serving() {
  return {
    alias: (await catalog.live())?.name ?? null,
    active: (await registry.active())?.version ?? null,
    versions: (await catalog.versions()).map((v) => `${v.name}:${v.modelVersion}`),
  };
}

async function idsIn(name: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const docs of (await catalog.open(name)).scan(100)) ids.push(...docs.map((d) => `${d.id}@${d.generation}`));
  return ids.sort();
}

const messages = () => log.lines().map((l) => l.message);

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'iss-lifecycle-'));
  catalog = await LanceDbIndexCatalog.open(join(work, 'index'));
  features = await LanceDbFeatureStore.open(join(work, 'features'), { dimension: 3 });
  registry = new LocalModelRegistry(join(work, 'registry'));
  closed = [];
  log = captureLogger();
  await features.put([feature('a', '1'), feature('b', '1', [0, 1, 0])]);
  await register('m1');
  await register('m2');
});

afterEach(async () => {
  await catalog.close();
  await rm(work, { recursive: true, force: true });
});

describe('promotion on the real local adapters', () => {
  it('the first model: builds images-v1 from the feature store, points the alias at it, then makes the model active', async () => {
    expect(await serving()).toEqual({ alias: null, active: null, versions: [] });
    const progress: number[] = [];
    const result = await activateWithIndex(deps())('m1', (n) => progress.push(n));
    expect(result).toEqual({ modelVersion: 'm1', index: 'images-v1', how: 'rebuilt', documents: 2, needsReembedding: 0 });
    expect(progress).toEqual([2]);
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1'] });
    expect(await idsIn('images-v1')).toEqual(['a@1', 'b@1']);
    expect(closed).toEqual(['m1']);
  });

  it('the first model, registry unreachable: the registry’s error reaches the user and no alias swap back is attempted (there was none before)', async () => {
    await expect(activateModel(deps({ registry: registryFailingPromote() }), 'm1')).rejects.toThrow(/^registry unavailable$/);
    expect(await serving()).toEqual({ alias: 'images-v1', active: null, versions: ['images-v1:m1'] });
    expect(messages()).not.toContain('promotion failed after the alias swap: alias swapped back');
  });

  it('a new model: its index is complete before the alias moves, and the registry follows the alias', async () => {
    await activateModel(deps(), 'm1');
    const result = await activateModel(deps(), 'm2');
    expect(result).toEqual({ modelVersion: 'm2', index: 'images-v2', how: 'rebuilt', documents: 2, needsReembedding: 0 });
    expect(await serving()).toEqual({ alias: 'images-v2', active: 'm2', versions: ['images-v1:m1', 'images-v2:m2'] });
    expect(await idsIn('images-v2')).toEqual(['a@1', 'b@1']);
  });

  it('registry unreachable after the swap: the alias goes back to the previous index, the previous model stays active, and the operator is told', async () => {
    await activateModel(deps(), 'm1');
    await expect(activateModel(deps({ registry: registryFailingPromote() }), 'm2')).rejects.toThrow(/^registry unavailable$/);
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1', 'images-v2:m2'] });
    const warning = log.lines().find((l) => l.message === 'promotion failed after the alias swap: alias swapped back');
    expect(warning).toMatchObject({ severity: 'WARNING', index: 'images-v1', modelVersion: 'm2', err: { message: 'registry unavailable' } });
  });

  it('the model whose index is already live: that index is caught up in place, nothing swapped, and the result says "unchanged"', async () => {
    await activateModel(deps(), 'm1');
    await features.put([feature('c', '1'), feature('a', '2', [0, 1, 0])]);
    await features.delete([{ id: 'b', generation: '1' }]);
    const result = await activateModel(deps(), 'm1');
    expect(result).toEqual({ modelVersion: 'm1', index: 'images-v1', how: 'unchanged', documents: 2, needsReembedding: 0 });
    expect(await idsIn('images-v1')).toEqual(['a@2', 'c@1']);
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1'] });
  });

  it('the model whose index is live, registry unreachable: the error reaches the user and the operator is not told of a swap back that did not happen', async () => {
    await activateModel(deps(), 'm1');
    await expect(activateModel(deps({ registry: registryFailingPromote() }), 'm1')).rejects.toThrow(/^registry unavailable$/);
    expect(messages()).not.toContain('promotion failed after the alias swap: alias swapped back');
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1'] });
  });

  it('an embedder that cannot be loaded changes nothing', async () => {
    await activateModel(deps(), 'm1');
    await expect(activateModel(deps(), 'm9')).rejects.toThrow(/model m9 is not registered/);
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1'] });
  });
});

describe('model rollback on the real local adapters', () => {
  it('the registry goes back and the alias follows to that model’s earlier index, caught up with images added, replaced and deleted since', async () => {
    await activateModel(deps(), 'm1');
    await activateModel(deps(), 'm2');
    await features.put([feature('c', '1'), feature('a', '2', [0, 1, 0])]);
    await features.delete([{ id: 'b', generation: '1' }]);
    closed = [];
    const result = await rollbackModel(deps());
    expect(result).toEqual({ modelVersion: 'm1', index: 'images-v1', how: 'reused', documents: 2, needsReembedding: 0 });
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1', 'images-v2:m2'] });
    expect(await idsIn('images-v1')).toEqual(['a@2', 'c@1']);
    expect((await (await catalog.open('images-v1')).get('a'))?.vector).toEqual(Float32Array.of(0, 1));
    expect(closed).toEqual(['m1']);
    expect(log.lines().find((l) => l.message === 'alias swapped back to an earlier index of this model')).toMatchObject({
      severity: 'INFO',
      index: 'images-v1',
      modelVersion: 'm1',
    });
  });

  it('with no active model the registry’s own refusal reaches the user', async () => {
    await expect(rollbackModel(deps())).rejects.toThrow('Cannot roll back: no model version is active');
    expect(await serving()).toEqual({ alias: null, active: null, versions: [] });
  });

  it('when the index cannot follow, the registry is moved forward again and the operator is told', async () => {
    await activateModel(deps(), 'm1');
    await activateModel(deps(), 'm2');
    const failingLoad = deps({ loadEmbedder: async (v) => (v === 'm1' ? Promise.reject(new Error('head file missing')) : embedder(v)) });
    await expect(rollbackModel(failingLoad)).rejects.toThrow(/^head file missing$/);
    expect(await serving()).toEqual({ alias: 'images-v2', active: 'm2', versions: ['images-v1:m1', 'images-v2:m2'] });
    expect(log.lines().find((l) => l.message === 'rollback failed: the index could not follow, the registry was moved forward again')).toMatchObject({
      severity: 'WARNING',
      modelVersion: 'm2',
      err: { message: 'head file missing' },
    });
  });
});

describe('index rollback on the real local adapters', () => {
  it('the alias goes back to the previous index, caught up with the feature store, and the registry to its model', async () => {
    await activateModel(deps(), 'm1');
    await activateModel(deps(), 'm2');
    await features.put([feature('c', '1')]);
    await features.delete([{ id: 'b', generation: '1' }]);
    closed = [];
    const result = await rollbackIndex(deps());
    expect(result).toEqual({ modelVersion: 'm1', index: 'images-v1', how: 'reused', documents: 2, needsReembedding: 0 });
    expect(await serving()).toEqual({ alias: 'images-v1', active: 'm1', versions: ['images-v1:m1', 'images-v2:m2'] });
    expect(await idsIn('images-v1')).toEqual(['a@1', 'c@1']);
    expect(closed).toEqual(['m1']);
  });

  it('with no model active in the registry, the index’s model is made active', async () => {
    const noPromote = deps({ registry: registryFailingPromote() });
    // Both indices built, neither model promoted (the registry was unreachable each time).
    await activateModel(noPromote, 'm1').catch(() => undefined);
    await activateModel(noPromote, 'm2').catch(() => undefined);
    await catalog.swapAlias('images-v2');
    expect(await serving()).toMatchObject({ alias: 'images-v2', active: null });
    const result = await rollbackIndex(deps());
    expect(result).toMatchObject({ modelVersion: 'm1', index: 'images-v1' });
    expect(await serving()).toMatchObject({ alias: 'images-v1', active: 'm1' });
  });

  it('the previous index’s model removed: refused with the reason, alias and registry where they were', async () => {
    await activateModel(deps(), 'm1');
    await activateModel(deps(), 'm2');
    const m1Gone = new Proxy(registry, {
      get(target, prop, receiver) {
        if (prop === 'get') return async (v: string) => (v === 'm1' ? null : target.get(v));
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    await expect(rollbackIndex(deps({ registry: m1Gone }))).rejects.toThrow(
      'cannot roll the index back to images-v1: its model m1 is no longer registered, so the index and the model would disagree; the alias stays on images-v2',
    );
    expect(await serving()).toEqual({ alias: 'images-v2', active: 'm2', versions: ['images-v1:m1', 'images-v2:m2'] });
  });
});

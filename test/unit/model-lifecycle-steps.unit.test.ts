import { describe, expect, it } from 'vitest';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type {
  Embedder,
  FeatureRecord,
  FeatureStore,
  IndexVersionInfo,
  JobLauncher,
  ModelRegistry,
  VectorDocument,
  VectorIndex,
  VectorIndexCatalog,
} from '../../shared/ports/index.js';
import { activateModel, promoteThenStartReindexJob, rollbackIndex, type LifecycleDeps } from '../../shared/services/model-lifecycle.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger } from './functions-fakes.js';

/**
 * Each step of the promotion order and of `index rollback` on strict fakes that keep the catalog's
 * documented rules (shared/adapters/index-catalog-base.ts: a swap remembers the previous target,
 * `rollback` swaps back to it, the live version cannot be dropped) and the index's (generation-
 * ordered upserts, deletes by generation). Every request sent to the index is recorded.
 */
interface Version {
  modelVersion: string;
  dimension: number;
  createdAt: string;
  docs: Map<string, VectorDocument>;
}

const doc = (id: string, generation: string, modelVersion: string): VectorDocument => ({
  id,
  uri: `file:///images/${id}.png`,
  generation,
  modelVersion,
  vector: Float32Array.of(1, 0),
  labels: [],
  indexedAt: '2026-01-01T00:00:00Z',
});

const feature = (id: string, generation: string, baseModel = 'base'): FeatureRecord => ({
  id,
  uri: `file:///images/${id}.png`,
  generation,
  baseModel,
  vector: Float32Array.of(0, 1, 0),
  labels: [],
});

function world(
  setup: {
    versions?: Array<[name: string, modelVersion: string, options?: { dimension?: number; createdAt?: string; docs?: VectorDocument[] }]>;
    alias?: string | null;
    previous?: string | null;
    active?: string | null;
    registered?: string[];
    features?: FeatureRecord[];
    failUpsert?: boolean;
    failDrop?: boolean;
    /** versions() omits these (dropped by another process meanwhile). */
    hidden?: string[];
  } = {},
) {
  const requests: string[] = [];
  const versions = new Map<string, Version>(
    (setup.versions ?? [['images-v1', 'm1']]).map(([name, modelVersion, o]) => [
      name,
      { modelVersion, dimension: o?.dimension ?? 2, createdAt: o?.createdAt ?? '2026-01-01T00:00:00Z', docs: new Map((o?.docs ?? []).map((d) => [d.id, d])) },
    ]),
  );
  let alias: string | null = setup.alias === undefined ? 'images-v1' : setup.alias;
  let previous: string | null = setup.previous ?? null;
  let active: string | null = setup.active === undefined ? 'm1' : setup.active;
  const registered = new Set(setup.registered ?? ['m1', 'm2', 'm3']);
  const opened: string[] = [];
  const closed: string[] = [];

  const index = (name: string): VectorIndex => {
    const v = versions.get(name)!;
    return strict<VectorIndex>(name, {
      name,
      modelVersion: v.modelVersion,
      dimension: v.dimension,
      async upsert(docs) {
        requests.push(`upsert ${name} ${docs.map((d) => `${d.id}@${d.generation}:${d.modelVersion}`).join(',')}`);
        if (setup.failUpsert) throw new Error('disk full');
        return docs.map((d) => {
          const old = v.docs.get(d.id);
          if (old && BigInt(old.generation) >= BigInt(d.generation)) return old.generation === d.generation ? 'unchanged' : 'stale';
          v.docs.set(d.id, d);
          return old ? 'updated' : 'created';
        });
      },
      async delete(items) {
        requests.push(`delete ${name} ${items.map((i) => `${i.id}@${i.generation}`).join(',')}`);
        return items.map((i) => (v.docs.get(i.id)?.generation === i.generation && v.docs.delete(i.id) ? 'deleted' : 'absent'));
      },
      generations: async (ids) => new Map(ids.flatMap((id) => (v.docs.has(id) ? [[id, v.docs.get(id)!.generation] as const] : []))),
      count: async () => v.docs.size,
      async *scan() {
        yield [...v.docs.values()];
      },
    });
  };
  const swap = (name: string) => {
    if (!versions.has(name)) throw new Error(`Index version ${name} does not exist`);
    requests.push(`swap ${name}`);
    const before = alias;
    if (before !== name) [previous, alias] = [before, name];
    return before;
  };
  const catalog = strict<VectorIndexCatalog>('catalog', {
    live: async () => (alias ? index(alias) : null),
    open: async (name) => {
      if (!versions.has(name)) throw new Error(`Index version ${name} does not exist`);
      return index(name);
    },
    versions: async () =>
      [...versions]
        .filter(([name]) => !setup.hidden?.includes(name))
        .map(([name, v]): IndexVersionInfo => ({
          name,
          modelVersion: v.modelVersion,
          dimension: v.dimension,
          createdAt: v.createdAt,
          count: v.docs.size,
          live: name === alias,
        })),
    async createVersion(modelVersion, dimension) {
      const name = `images-v${versions.size + 1}`;
      versions.set(name, { modelVersion, dimension, createdAt: '2026-02-01T00:00:00Z', docs: new Map() });
      requests.push(`create ${name}`);
      return index(name);
    },
    swapAlias: async (name) => swap(name),
    async rollback() {
      if (!previous) throw new Error('Cannot roll back alias images: there is no previous index version');
      const to = previous;
      swap(to);
      return to;
    },
    async dropVersion(name) {
      requests.push(`drop ${name}`);
      if (setup.failDrop) throw new Error('permission denied');
      if (name === alias) throw new Error(`Cannot drop ${name}: alias images points at it (swap the alias first)`);
      versions.delete(name);
    },
  });
  const history: string[] = active ? [active] : [];
  const registry = strict<ModelRegistry>('registry', {
    get: async (v) => (registered.has(v) ? ({ version: v } as Awaited<ReturnType<ModelRegistry['get']>>) : null),
    active: async () => (active ? ({ version: active } as Awaited<ReturnType<ModelRegistry['active']>>) : null),
    async promote(v) {
      requests.push(`promote ${v}`);
      if (active === v) return; // both registries write nothing for the active version
      active = v;
      history.push(v);
    },
    async rollback() {
      history.pop();
      active = history.at(-1)!;
      requests.push(`rollback → ${active}`);
      return active;
    },
  });
  const features = strict<FeatureStore>('features', {
    async *scan() {
      yield setup.features ?? [];
    },
  });
  const log = captureLogger();
  const deps: LifecycleDeps = {
    registry,
    catalog,
    features,
    logger: log.logger,
    loadEmbedder: async (version) => {
      opened.push(version);
      return strict<Embedder>(`embedder ${version}`, {
        modelVersion: version,
        dimension: 2,
        manifest: { name: 'base', image: { dimension: 3 } } as ModelManifest,
        project: async (base) => base.map(() => Float32Array.of(0, 1)),
        close: async () => void closed.push(version),
      });
    },
  };
  return {
    deps,
    requests,
    log,
    embedders: () => ({ opened, closed }),
    state: () => ({ alias, active, versions: [...versions.keys()] }),
    docs: (name: string) => [...versions.get(name)!.docs.values()].map((d) => `${d.id}@${d.generation}`).sort(),
  };
}

const event = (w: ReturnType<typeof world>, message: string) => w.log.lines().find((l) => l.message === message);

describe('which index a model goes live with', () => {
  it('reuses the newest earlier index of that model with the embedder’s dimension (one of another dimension is never reused)', async () => {
    const w = world({
      versions: [
        ['images-v1', 'm1', { createdAt: '2026-01-01T00:00:00Z' }],
        ['images-v2', 'm2', { createdAt: '2026-01-02T00:00:00Z' }],
        ['images-v3', 'm1', { createdAt: '2026-01-03T00:00:00Z' }],
        // m1 removed and registered again with another head: its old index has the wrong dimension.
        ['images-v4', 'm1', { createdAt: '2026-01-04T00:00:00Z', dimension: 3 }],
      ],
      alias: 'images-v2',
      active: 'm2',
    });
    const result = await activateModel(w.deps, 'm1');
    expect(result).toEqual({ modelVersion: 'm1', index: 'images-v3', how: 'reused', documents: 0, needsReembedding: 0 });
    expect(w.state()).toMatchObject({ alias: 'images-v3', active: 'm1' });
    expect(w.requests).toEqual(['swap images-v3', 'promote m1']);
    expect(event(w, 'alias swapped back to an earlier index of this model')).toMatchObject({ severity: 'INFO', index: 'images-v3', modelVersion: 'm1' });
  });

  it('catching an earlier index up re-projects only images that are new or newer, skips other towers’ features, and deletes images gone from the feature store', async () => {
    const w = world({
      versions: [
        ['images-v1', 'm1', { docs: [doc('same', '1', 'm1'), doc('older', '1', 'm1'), doc('newer', '5', 'm1'), doc('gone', '3', 'm1')] }],
        ['images-v2', 'm2'],
      ],
      alias: 'images-v2',
      active: 'm2',
      features: [feature('same', '1'), feature('older', '2'), feature('newer', '4'), feature('fresh', '1'), feature('other-tower', '1', 'another-base')],
    });
    const result = await activateModel(w.deps, 'm1');
    expect(result).toMatchObject({ index: 'images-v1', how: 'reused', documents: 4 });
    expect(w.requests).toEqual(['upsert images-v1 older@2:m1,fresh@1:m1', 'delete images-v1 gone@3', 'swap images-v1', 'promote m1']);
    expect(w.docs('images-v1')).toEqual(['fresh@1', 'newer@5', 'older@2', 'same@1']);
  });

  it('an index already up to date is swapped to without a write', async () => {
    const w = world({
      versions: [
        ['images-v1', 'm1', { docs: [doc('a', '1', 'm1')] }],
        ['images-v2', 'm2'],
      ],
      alias: 'images-v2',
      active: 'm2',
      features: [feature('a', '1')],
    });
    await activateModel(w.deps, 'm1');
    expect(w.requests).toEqual(['swap images-v1', 'promote m1']);
  });

  it('the live model’s own index: caught up in place, the count after catching up is reported', async () => {
    const w = world({
      versions: [['images-v1', 'm1', { docs: [doc('a', '1', 'm1'), doc('gone', '1', 'm1')] }]],
      features: [feature('a', '1'), feature('b', '1')],
    });
    expect(await activateModel(w.deps, 'm1')).toEqual({ modelVersion: 'm1', index: 'images-v1', how: 'unchanged', documents: 2, needsReembedding: 0 });
    expect(w.requests).toEqual(['upsert images-v1 b@1:m1', 'delete images-v1 gone@1', 'promote m1']);
  });
});

describe('a rebuild that fails leaves what was serving, and drops only its own half-built index', () => {
  it('keeps every version that existed before (the rollback target, an index of the same model with another dimension) and tells the operator what it dropped', async () => {
    const w = world({
      versions: [
        ['images-v1', 'm2', { dimension: 3 }],
        ['images-v2', 'm0'],
        ['images-v3', 'm1'],
      ],
      alias: 'images-v3',
      previous: 'images-v2',
      features: [feature('a', '1')],
      failUpsert: true,
    });
    await expect(activateModel(w.deps, 'm2')).rejects.toThrow(/^disk full$/);
    expect(w.state()).toEqual({ alias: 'images-v3', active: 'm1', versions: ['images-v1', 'images-v2', 'images-v3'] });
    expect(w.requests).toEqual(['create images-v4', 'upsert images-v4 a@1:m2', 'drop images-v4']);
    expect(event(w, 'unfinished index version dropped')).toMatchObject({ severity: 'WARNING', index: 'images-v4', modelVersion: 'm2' });
    expect(w.embedders()).toEqual({ opened: ['m2'], closed: ['m2'] });
  });

  it('when the half-built index cannot be dropped either, the build’s error still reaches the user and the operator learns of the leftover', async () => {
    const w = world({ features: [feature('a', '1')], failUpsert: true, failDrop: true });
    await expect(activateModel(w.deps, 'm2')).rejects.toThrow(/^disk full$/);
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm1' });
    expect(event(w, 'could not drop an unfinished index version')).toMatchObject({
      severity: 'WARNING',
      modelVersion: 'm2',
      err: { message: 'permission denied' },
    });
  });
});

describe('index rollback', () => {
  const three = {
    versions: [
      ['images-v1', 'm1'],
      ['images-v2', 'm2'],
      ['images-v3', 'm3'],
    ] as Array<[string, string]>,
    alias: 'images-v3',
    previous: 'images-v2',
    active: 'm3',
  };

  it('makes the model of the index it went back to active (not the first index’s), and reports the documents it holds', async () => {
    const w = world({
      ...three,
      versions: [
        ['images-v1', 'm1'],
        ['images-v2', 'm2', { docs: [doc('a', '1', 'm2')] }],
        ['images-v3', 'm3'],
      ],
      features: [feature('a', '1')],
    });
    expect(await rollbackIndex(w.deps)).toEqual({ modelVersion: 'm2', index: 'images-v2', how: 'reused', documents: 1, needsReembedding: 0 });
    expect(w.state()).toMatchObject({ alias: 'images-v2', active: 'm2' });
    expect(w.embedders()).toEqual({ opened: ['m2'], closed: ['m2'] });
  });

  it('an index version dropped by another process meanwhile: refused with the reason, the alias back where it was', async () => {
    const w = world({ ...three, hidden: ['images-v2'] });
    await expect(rollbackIndex(w.deps)).rejects.toThrow(
      'cannot roll the index back to images-v2: index version images-v2 vanished during the rollback; the alias stays on images-v3',
    );
    expect(w.state()).toMatchObject({ alias: 'images-v3', active: 'm3' });
  });

  it('the index cannot be caught up: refused with the cause, the alias back, the registry untouched, the embedder closed', async () => {
    const w = world({ ...three, features: [feature('a', '1')], failUpsert: true });
    const err = await rollbackIndex(w.deps).catch((e: unknown) => e as Error);
    expect(err).toMatchObject({ message: 'cannot roll the index back to images-v2: disk full; the alias stays on images-v3', cause: { message: 'disk full' } });
    expect(w.state()).toMatchObject({ alias: 'images-v3', active: 'm3' });
    expect(w.requests.filter((r) => r.startsWith('promote'))).toEqual([]);
    expect(w.embedders()).toEqual({ opened: ['m2'], closed: ['m2'] });
  });

  it('the alias had been removed by hand (OpenSearch keeps the previous target apart from the alias): a refusal says where the alias points now', async () => {
    const w = world({ ...three, alias: null, registered: ['m3'] });
    await expect(rollbackIndex(w.deps)).rejects.toThrow(
      'cannot roll the index back to images-v2: its model m2 is no longer registered, so the index and the model would disagree; the alias now points at images-v2 (it pointed at no index before)',
    );
    expect(w.state()).toMatchObject({ alias: 'images-v2', active: 'm3' });
  });
});

describe('cloud activation: the log events an operator follows', () => {
  const launcher = (run: JobLauncher['run']) => strict<JobLauncher>('launcher', { run });

  it('reports the started reindex job execution', async () => {
    const w = world();
    const execution = { job: 'reindex', executionId: 'e1', state: 'running' as const, startedAt: '2026-01-01T00:00:00Z' };
    await promoteThenStartReindexJob({ registry: w.deps.registry, launcher: launcher(async () => execution), logger: w.log.logger })('m2', () => {});
    expect(event(w, 'reindex job started for the promoted model')).toMatchObject({ severity: 'INFO', execution, modelVersion: 'm2' });
  });

  it('warns that the alias stays on the previous index when no reindex job is configured', async () => {
    const w = world();
    await promoteThenStartReindexJob({ registry: w.deps.registry, launcher: null, logger: w.log.logger })('m2', () => {});
    expect(event(w, 'no reindex job configured: the alias stays on the previous model’s index until the reindex job runs')).toMatchObject({
      severity: 'WARNING',
      modelVersion: 'm2',
    });
  });

  it('an error names the model rolled back to when the reindex job cannot be started', async () => {
    const w = world();
    const failing = launcher(async () => {
      throw new Error('PERMISSION_DENIED');
    });
    await expect(promoteThenStartReindexJob({ registry: w.deps.registry, launcher: failing, logger: w.log.logger })('m2', () => {})).rejects.toThrow(
      /^PERMISSION_DENIED$/,
    );
    expect(event(w, 'reindex job could not be started: promotion rolled back')).toMatchObject({
      severity: 'ERROR',
      modelVersion: 'm2',
      active: 'm1',
      err: { message: 'PERMISSION_DENIED' },
    });
  });
});

import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { Embedder, FeatureRecord, FeatureStore, JobLauncher, ModelRegistry, VectorIndex, VectorIndexCatalog } from '../../shared/ports/index.js';
import { activateModel, promoteThenStartReindexJob, rollbackModel, type LifecycleDeps } from '../../shared/services/model-lifecycle.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * The promotion order of shared/services/model-lifecycle.ts, checked on strict fakes that write
 * every state change into one log: index built → alias swapped → registry promoted, and on a
 * failure nothing a query or ingestion sees has changed.
 */
const record: FeatureRecord = { id: 'a', uri: 'file:///b/a.png', generation: '1', baseModel: 'base', vector: Float32Array.of(1, 0, 0), labels: ['x'] };

function world(options: { failUpsert?: boolean; failPromote?: boolean; failRollbackSync?: boolean } = {}) {
  const log: string[] = [];
  const indices = new Map<string, { modelVersion: string; createdAt: string; docs: number }>([
    ['images-v1', { modelVersion: 'm1', createdAt: '2026-01-01T00:00:00Z', docs: 1 }],
  ]);
  let alias = 'images-v1';
  let active = 'm1';
  const history = ['m1'];

  const index = (name: string): VectorIndex => {
    const meta = indices.get(name)!;
    return strict<VectorIndex>(name, {
      name,
      modelVersion: meta.modelVersion,
      dimension: 2,
      async upsert(docs) {
        log.push(`upsert ${name}`);
        if (options.failUpsert) throw new Error('disk full');
        meta.docs += docs.length;
        return docs.map(() => 'created' as const);
      },
      count: async () => meta.docs,
      generations: async (ids) => new Map(ids.filter(() => meta.docs > 0).map((id) => [id, '1'])),
      async *scan() {
        yield [];
      },
    });
  };
  const catalog = strict<VectorIndexCatalog>('catalog', {
    live: async () => index(alias),
    versions: async () =>
      [...indices].map(([name, m]) => ({ name, modelVersion: m.modelVersion, dimension: 2, createdAt: m.createdAt, count: m.docs, live: name === alias })),
    open: async (name) => index(name),
    async createVersion(modelVersion) {
      const name = `images-v${indices.size + 1}`;
      indices.set(name, { modelVersion, createdAt: new Date().toISOString(), docs: 0 });
      log.push(`create ${name}`);
      return index(name);
    },
    async swapAlias(name) {
      log.push(`swap ${name}`);
      const previous = alias;
      alias = name;
      return previous;
    },
    async dropVersion(name) {
      log.push(`drop ${name}`);
      indices.delete(name);
    },
  });
  const registry = strict<ModelRegistry>('registry', {
    active: async () => ({ version: active }) as Awaited<ReturnType<ModelRegistry['active']>>,
    async promote(version) {
      log.push(`promote ${version}`);
      if (options.failPromote) throw new Error('registry unavailable');
      active = version;
      history.push(version);
    },
    async rollback() {
      history.pop();
      active = history.at(-1)!;
      log.push(`rollback → ${active}`);
      return active;
    },
  });
  const features = strict<FeatureStore>('features', {
    async *scan() {
      yield [record];
    },
  });
  const embedderOf = (version: string) =>
    strict<Embedder>(`embedder ${version}`, {
      modelVersion: version,
      dimension: 2,
      manifest: { name: 'base', image: { dimension: 3 } } as ModelManifest,
      project: async (base) => base.map(() => Float32Array.of(1, 0)),
      close: async () => {},
    });
  const loadEmbedder = async (version: string) => {
    if (options.failRollbackSync && version === 'm1') throw new Error('head file missing');
    return embedderOf(version);
  };
  const deps: LifecycleDeps = { registry, catalog, features, logger: silentLogger, loadEmbedder };
  return { deps, log, state: () => ({ alias, active, indices: [...indices.keys()] }) };
}

describe('promotion order (local: the index is reachable)', () => {
  it('builds the new index, swaps the alias, then promotes in the registry', async () => {
    const w = world();
    const result = await activateModel(w.deps, 'm2');
    expect(result).toMatchObject({ modelVersion: 'm2', index: 'images-v2', how: 'rebuilt', documents: 1 });
    expect(w.log).toEqual(['create images-v2', 'upsert images-v2', 'swap images-v2', 'promote m2']);
    expect(w.state()).toMatchObject({ alias: 'images-v2', active: 'm2' });
  });

  it('changes nothing when the index cannot be built: registry untouched, alias kept, half-built index dropped', async () => {
    const w = world({ failUpsert: true });
    await expect(activateModel(w.deps, 'm2')).rejects.toThrow(/disk full/);
    expect(w.log).toEqual(['create images-v2', 'upsert images-v2', 'drop images-v2']);
    expect(w.state()).toEqual({ alias: 'images-v1', active: 'm1', indices: ['images-v1'] });
  });

  it('swaps the alias back when the registry cannot be promoted after the swap', async () => {
    const w = world({ failPromote: true });
    await expect(activateModel(w.deps, 'm2')).rejects.toThrow(/registry unavailable/);
    expect(w.log.slice(-3)).toEqual(['swap images-v2', 'promote m2', 'swap images-v1']);
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm1' });
  });

  it('rollback: the registry moves first, the alias follows to the earlier index; if it cannot, the registry moves forward again', async () => {
    const w = world();
    await activateModel(w.deps, 'm2');
    const back = await rollbackModel(w.deps);
    expect(back).toMatchObject({ modelVersion: 'm1', index: 'images-v1', how: 'reused' });
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm1' });

    const broken = world({ failRollbackSync: true });
    await activateModel(broken.deps, 'm2');
    await expect(rollbackModel(broken.deps)).rejects.toThrow(/head file missing/);
    expect(broken.log.slice(-2)).toEqual(['rollback → m1', 'promote m2']);
    expect(broken.state()).toMatchObject({ alias: 'images-v2', active: 'm2' });
  });
});

describe('promotion order (cloud: the reindex job builds the index and swaps the alias)', () => {
  const launcher = (run: JobLauncher['run'], log: string[]) =>
    strict<JobLauncher>('launcher', {
      run: async (job, args) => {
        log.push(`run ${job}`);
        return run(job, args);
      },
    });

  it('promotes in the registry, then starts the reindex job', async () => {
    const w = world();
    const execution = { job: 'reindex', executionId: 'e1', state: 'running' as const, startedAt: '2026-01-01T00:00:00Z' };
    const activate = promoteThenStartReindexJob({ registry: w.deps.registry, launcher: launcher(async () => execution, w.log), logger: silentLogger });
    expect(await activate('m2', () => {})).toEqual({ reindex: execution });
    expect(w.log).toEqual(['promote m2', 'run reindex']);
    // The alias is the reindex job's to move.
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm2' });
  });

  it('rolls the promotion back when the reindex job cannot be started', async () => {
    const w = world();
    const failing = launcher(async () => {
      throw new Error('PERMISSION_DENIED');
    }, w.log);
    await expect(promoteThenStartReindexJob({ registry: w.deps.registry, launcher: failing, logger: silentLogger })('m2', () => {})).rejects.toThrow(
      /PERMISSION_DENIED/,
    );
    expect(w.log).toEqual(['promote m2', 'run reindex', 'rollback → m1']);
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm1' });
  });

  it('without a reindex job only the registry moves (search keeps following the live index)', async () => {
    const w = world();
    expect(await promoteThenStartReindexJob({ registry: w.deps.registry, launcher: null, logger: silentLogger })('m2', () => {})).toEqual({ reindex: null });
    expect(w.state()).toMatchObject({ alias: 'images-v1', active: 'm2' });
  });
});

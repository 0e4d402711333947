import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BaseIndexCatalog } from '../../shared/adapters/index-catalog-base.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import { AppError, NotFoundError, ParseError } from '../../shared/errors.js';
import type { IndexVersionInfo, VectorIndex } from '../../shared/ports/vector-index.js';

/**
 * The alias rules of the embedded index catalog (BaseIndexCatalog over LanceDB), on a real LanceDB
 * in a temp dir with 2-dimensional tables.
 */
let dir: string;
let catalog: LanceDbIndexCatalog;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lancedb-catalog-'));
  catalog = await LanceDbIndexCatalog.open(dir, { alias: 'pics' });
});

afterEach(async () => {
  await catalog.close();
  await rm(dir, { recursive: true, force: true });
});

const readAliasFile = async () => JSON.parse(await readFile(path.join(dir, 'pics.alias.json'), 'utf8')) as { current: string | null; previous: string | null };

describe('createVersion', () => {
  it('names versions <alias>-v<N>, N one more than the largest existing, and records model version and dimension', async () => {
    const a = await catalog.createVersion('m1', 2);
    const b = await catalog.createVersion('m2', 3);
    expect([a.name, b.name]).toEqual(['pics-v1', 'pics-v2']);
    await catalog.dropVersion('pics-v1');
    const c = await catalog.createVersion('m3', 4);
    expect(c.name).toBe('pics-v3');
    expect([c.modelVersion, c.dimension]).toEqual(['m3', 4]);
    const infos = await catalog.versions();
    expect(infos.map((v) => [v.name, v.modelVersion, v.dimension, v.count, v.live])).toEqual([
      ['pics-v2', 'm2', 3, 0, false],
      ['pics-v3', 'm3', 4, 0, false],
    ]);
  });

  it('ignores tables whose names are not versions of the alias when numbering', async () => {
    const other = await LanceDbIndexCatalog.open(dir, { alias: 'pics-other' });
    await other.createVersion('m', 2);
    await other.createVersion('m', 2);
    await other.close();
    expect((await catalog.createVersion('m', 2)).name).toBe('pics-v1');
  });

  it('numbers after a table of a higher N that the catalog file does not list', async () => {
    const second = await LanceDbIndexCatalog.open(dir, { alias: 'pics' });
    await second.createVersion('m', 2);
    await second.createVersion('m', 2);
    await second.close();
    // A stale catalog file (lost write): the table pics-v2 still exists on disk.
    await writeFile(
      path.join(dir, 'pics.catalog.json'),
      JSON.stringify({ tables: { 'pics-v1': { modelVersion: 'm', dimension: 2, createdAt: '2026-01-01T00:00:00.000Z' } } }),
    );
    expect((await catalog.createVersion('m', 2)).name).toBe('pics-v3');
  });

  it('refuses an empty model version and dimensions outside 1..65536', async () => {
    await expect(catalog.createVersion('', 2)).rejects.toThrow(new ParseError('createVersion: modelVersion is required'));
    for (const bad of [0, -1, 1.5, 65_537, Number.NaN]) {
      await expect(catalog.createVersion('m', bad)).rejects.toThrow(
        `createVersion: dimension must be a whole number from 1 to 65536 (a sanity bound of the embedded index), got ${bad}`,
      );
    }
    expect((await catalog.createVersion('m', 1)).dimension).toBe(1);
    expect(await catalog.versions()).toHaveLength(1);
  });

  it('accepts the largest dimension', async () => {
    expect((await catalog.createVersion('m', 65_536)).dimension).toBe(65_536);
  });

  it('refuses an alias that is not a safe name', async () => {
    await expect(LanceDbIndexCatalog.open(dir, { alias: '../x' })).rejects.toThrow(`Invalid index alias "../x": use letters, digits, '.', '_' or '-'`);
  });

  it('uses the alias "images" by default', async () => {
    const def = await LanceDbIndexCatalog.open(dir);
    expect(def.alias).toBe('images');
    expect((await def.createVersion('m', 2)).name).toBe('images-v1');
    await def.close();
  });
});

describe('alias swaps and rollback', () => {
  it('live() is null before the first swap; ensureLive creates and points the alias once', async () => {
    expect(await catalog.live()).toBeNull();
    const first = await catalog.ensureLive('m1', 2);
    expect(first.name).toBe('pics-v1');
    const again = await catalog.ensureLive('m1', 2);
    expect(again.name).toBe('pics-v1');
    expect((await catalog.versions()).map((v) => v.name)).toEqual(['pics-v1']);
    expect((await catalog.live())?.name).toBe('pics-v1');
  });

  it('swapAlias returns the version it pointed at before and remembers it for rollback', async () => {
    await catalog.createVersion('m', 2);
    await catalog.createVersion('m', 2);
    expect(await catalog.swapAlias('pics-v1')).toBeNull();
    expect(await catalog.swapAlias('pics-v2')).toBe('pics-v1');
    expect(await readAliasFile()).toMatchObject({ current: 'pics-v2', previous: 'pics-v1' });
    expect((await catalog.versions()).map((v) => [v.name, v.live])).toEqual([
      ['pics-v1', false],
      ['pics-v2', true],
    ]);
    expect(await catalog.rollback()).toBe('pics-v1');
    expect((await catalog.live())?.name).toBe('pics-v1');
    expect(await readAliasFile()).toMatchObject({ current: 'pics-v1', previous: 'pics-v2' });
  });

  it('swapping to the version already live changes nothing (the rollback target is kept)', async () => {
    await catalog.createVersion('m', 2);
    await catalog.createVersion('m', 2);
    await catalog.swapAlias('pics-v1');
    await catalog.swapAlias('pics-v2');
    expect(await catalog.swapAlias('pics-v2')).toBe('pics-v2');
    expect(await readAliasFile()).toMatchObject({ current: 'pics-v2', previous: 'pics-v1' });
    expect(await catalog.rollback()).toBe('pics-v1');
  });

  it('refuses to swap to a version that does not exist or a name that is not a version', async () => {
    await catalog.ensureLive('m', 2);
    await expect(catalog.swapAlias('pics-v9')).rejects.toBeInstanceOf(NotFoundError);
    await expect(catalog.swapAlias('other-v1')).rejects.toThrow('"other-v1" is not a version of alias pics (expected pics-v<N>)');
    expect((await catalog.live())?.name).toBe('pics-v1');
  });

  it('refuses a rollback with no previous version, or when the previous version was dropped', async () => {
    await expect(catalog.rollback()).rejects.toThrow('Cannot roll back alias pics: there is no previous index version');
    await catalog.createVersion('m', 2);
    await catalog.createVersion('m', 2);
    await catalog.swapAlias('pics-v1');
    await catalog.swapAlias('pics-v2');
    await catalog.dropVersion('pics-v1');
    expect((await readAliasFile()).previous).toBeNull();
    await expect(catalog.rollback()).rejects.toThrow('Cannot roll back alias pics: there is no previous index version');
    expect((await catalog.live())?.name).toBe('pics-v2');
  });

  it('refuses a rollback to a remembered version whose table is gone from the catalog', async () => {
    await catalog.createVersion('m', 2);
    await catalog.createVersion('m', 2);
    await catalog.swapAlias('pics-v1');
    await catalog.swapAlias('pics-v2');
    // Another process dropped pics-v1 without forgetting it (the catalog no longer lists it).
    const cat = JSON.parse(await readFile(path.join(dir, 'pics.catalog.json'), 'utf8')) as { tables: Record<string, unknown> };
    delete cat.tables['pics-v1'];
    await writeFile(path.join(dir, 'pics.catalog.json'), JSON.stringify(cat));
    await expect(catalog.rollback()).rejects.toThrow('Cannot roll back alias pics: the previous version pics-v1 was dropped');
    expect((await readAliasFile()).current).toBe('pics-v2');
  });
});

describe('dropVersion', () => {
  it('refuses to drop the live version, keeps its data, and drops others', async () => {
    const live = await catalog.ensureLive('m', 2);
    await live.upsert([
      { id: 'a', uri: 'u', generation: '1', modelVersion: 'm', vector: new Float32Array([1, 0]), labels: [], indexedAt: '2026-01-01T00:00:00.000Z' },
    ]);
    await expect(catalog.dropVersion('pics-v1')).rejects.toThrow(new AppError('Cannot drop pics-v1: alias pics points at it (swap the alias first)'));
    expect((await catalog.versions()).map((v) => [v.name, v.count])).toEqual([['pics-v1', 1]]);
    await catalog.createVersion('m', 2);
    await catalog.dropVersion('pics-v2');
    expect((await catalog.versions()).map((v) => v.name)).toEqual(['pics-v1']);
  });

  it('reports a missing version, and refuses names that are not versions of the alias', async () => {
    await expect(catalog.dropVersion('pics-v4')).rejects.toThrow(new NotFoundError('Index version pics-v4 does not exist'));
    await expect(catalog.dropVersion('pics-v4')).rejects.toBeInstanceOf(NotFoundError);
    await expect(catalog.dropVersion('pics-v')).rejects.toThrow('"pics-v" is not a version of alias pics (expected pics-v<N>)');
    await expect(catalog.dropVersion('xpics-v1')).rejects.toThrow(/is not a version of alias pics/);
    await expect(catalog.dropVersion('pics-v1x')).rejects.toThrow(/is not a version of alias pics/);
  });

  it('dropping a version other than the remembered one keeps the rollback target', async () => {
    for (let i = 0; i < 3; i++) await catalog.createVersion('m', 2);
    await catalog.swapAlias('pics-v1');
    await catalog.swapAlias('pics-v2');
    await catalog.dropVersion('pics-v3');
    expect(await catalog.rollback()).toBe('pics-v1');
  });
});

describe('catalog files', () => {
  it('names a damaged alias file and how to fix it', async () => {
    await catalog.ensureLive('m', 2);
    await writeFile(path.join(dir, 'pics.alias.json'), '{"current": 3}');
    await expect(catalog.live()).rejects.toThrow(/pics\.alias\.json/);
    await expect(catalog.live()).rejects.toThrow(/\{"current":"pics-v<N>","previous":null,"history":\[\]\}/);
  });

  it('keeps the last 100 swaps in the alias history', async () => {
    await catalog.createVersion('m', 2);
    await catalog.createVersion('m', 2);
    for (let i = 0; i < 102; i++) await catalog.swapAlias(i % 2 === 0 ? 'pics-v1' : 'pics-v2');
    const file = JSON.parse(await readFile(path.join(dir, 'pics.alias.json'), 'utf8')) as { history: { name: string }[] };
    expect(file.history).toHaveLength(100);
    expect(file.history.at(-1)?.name).toBe('pics-v2');
  });

  it('a second catalog on the same folder sees the versions and alias (state is on disk)', async () => {
    await catalog.createVersion('m', 2);
    await catalog.swapAlias('pics-v1');
    const second = await LanceDbIndexCatalog.open(dir, { alias: 'pics' });
    expect((await second.live())?.name).toBe('pics-v1');
    expect((await second.versions()).map((v: IndexVersionInfo) => [v.name, v.modelVersion, v.dimension, v.live])).toEqual([['pics-v1', 'm', 2, true]]);
    await second.close();
  });
});

/** An in-memory engine, for the base rules LanceDB cannot reach (several alias targets, name races). */
class MemoryCatalog extends BaseIndexCatalog {
  readonly alias = 'mem';
  protected readonly dimensionLimit = { max: 8, reason: 'test bound' };
  names: string[] = [];
  targets: string[] = [];
  prev: string | null = null;
  takenOnCreate = 0;
  createCalls = 0;
  async open(name: string): Promise<VectorIndex> {
    if (!this.names.includes(name)) throw new NotFoundError(`no ${name}`);
    return { name } as VectorIndex;
  }
  async versions(): Promise<IndexVersionInfo[]> {
    return [];
  }
  async close(): Promise<void> {}
  protected async _versionNames(): Promise<string[]> {
    return [...this.names];
  }
  protected async _createVersion(name: string): Promise<VectorIndex | null> {
    this.createCalls++;
    if (this.takenOnCreate > 0) {
      this.takenOnCreate--;
      this.names.push(name); // a concurrent creator took it
      return null;
    }
    this.names.push(name);
    return { name } as VectorIndex;
  }
  protected async _aliasTargets(): Promise<string[]> {
    return [...this.targets];
  }
  protected async _pointAlias(name: string, _targets: string[], previous: string | null): Promise<void> {
    this.targets = [name];
    this.prev = previous;
  }
  protected async _previous(): Promise<string | null> {
    return this.prev;
  }
  protected async _forgetPrevious(name: string): Promise<void> {
    if (this.prev === name) this.prev = null;
  }
  protected async _exists(name: string): Promise<boolean> {
    return this.names.includes(name);
  }
  protected async _drop(name: string): Promise<boolean> {
    const had = this.names.includes(name);
    this.names = this.names.filter((n) => n !== name);
    return had;
  }
}

describe('BaseIndexCatalog rules an engine can reach only under races', () => {
  it('live() refuses an alias that points at several versions', async () => {
    const c = new MemoryCatalog();
    c.names = ['mem-v1', 'mem-v2'];
    c.targets = ['mem-v1', 'mem-v2'];
    await expect(c.live()).rejects.toThrow(new AppError('Alias mem points at 2 indices (mem-v1, mem-v2); expected one. Fix it with swapAlias.'));
  });

  it('a swap away from several targets points the alias at one version', async () => {
    const c = new MemoryCatalog();
    c.names = ['mem-v1', 'mem-v2'];
    c.targets = ['mem-v1', 'mem-v2'];
    expect(await c.swapAlias('mem-v1')).toBe('mem-v1');
    expect(c.targets).toEqual(['mem-v1']);
  });

  it('createVersion takes the next N when a concurrent creator took the name, and gives up after 5 tries', async () => {
    const c = new MemoryCatalog();
    c.takenOnCreate = 2;
    expect((await c.createVersion('m', 2)).name).toBe('mem-v3');
    const d = new MemoryCatalog();
    d.takenOnCreate = 4;
    expect((await d.createVersion('m', 2)).name).toBe('mem-v5');
    const e = new MemoryCatalog();
    e.takenOnCreate = 5;
    await expect(e.createVersion('m', 2)).rejects.toThrow(new AppError('Could not create a new version of mem: names kept being taken by concurrent creators'));
    expect(e.createCalls).toBe(5);
  });

  it('treats regex characters in the alias literally', async () => {
    class Dotted extends MemoryCatalog {
      override readonly alias = 'a.b' as 'mem';
    }
    const c = new Dotted();
    c.names = ['axb-v7', 'a.b-v2'];
    expect((await c.createVersion('m', 2)).name).toBe('a.b-v3');
    await expect(c.dropVersion('axb-v7')).rejects.toThrow(/is not a version of alias a\.b/);
  });
});

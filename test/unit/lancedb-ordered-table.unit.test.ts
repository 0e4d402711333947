import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { createRequire } from 'node:module';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-catalog.js';
import type { LanceDbVectorIndex } from '../../shared/adapters/local/lancedb-index.js';
import {
  GenerationOrderedTable,
  checkVector,
  generationToBigInt,
  optionalNumber,
  optionalString,
  orderedColumns,
  orderedValues,
  rowsToArrowTable,
  sqlString,
  toFloat32,
  toStrings,
} from '../../shared/adapters/local/lancedb-ordered-table.js';
import { AppError } from '../../shared/errors.js';
import type { VectorDocument } from '../../shared/ports/vector-index.js';

/** LanceDB reads schemas with Arrow's CommonJS build; rowsToArrowTable works in that build's classes. */
const { Field, FixedSizeList, Float64, Schema, Utf8 } = createRequire(import.meta.url)('apache-arrow') as typeof import('apache-arrow');

/** Generation ordering and tombstones of the LanceDB tables, on a real LanceDB in a temp dir (dimension 2). */
let dir: string;
let catalog: LanceDbIndexCatalog;
let index: LanceDbVectorIndex;
let db: lancedb.Connection;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'lancedb-ordered-'));
  catalog = await LanceDbIndexCatalog.open(dir, { alias: 't' });
  index = await catalog.ensureLive('m', 2);
  db = await lancedb.connect(dir, { readConsistencyInterval: 0 });
});

afterEach(async () => {
  db.close();
  await catalog.close();
  await rm(dir, { recursive: true, force: true });
});

const doc = (id: string, generation: string, extra: Partial<VectorDocument> = {}): VectorDocument => ({
  id,
  uri: `file:///b/${id}.jpg`,
  generation,
  modelVersion: 'm',
  vector: new Float32Array([1, 0]),
  labels: ['cat'],
  indexedAt: '2026-01-01T00:00:00.000Z',
  ...extra,
});

/** Every row on disk, tombstones included. */
async function rawRows(): Promise<Record<string, unknown>[]> {
  const table = await db.openTable('t-v1');
  const rows = (await table.query().toArray()) as Record<string, unknown>[];
  table.close();
  return rows;
}

async function tableVersion(): Promise<number> {
  const table = await db.openTable('t-v1');
  const v = await table.version();
  table.close();
  return v;
}

describe('pure helpers', () => {
  it('generationToBigInt accepts 0..int64 max and refuses anything else, naming the document', () => {
    expect(generationToBigInt('0', 'g')).toBe(0n);
    expect(generationToBigInt('9223372036854775807', 'g')).toBe(9223372036854775807n);
    expect(() => generationToBigInt('9223372036854775808', 'doc a')).toThrow(new AppError('doc a: generation 9223372036854775808 exceeds int64'));
    expect(() => generationToBigInt('12a', 'doc a')).toThrow(new AppError('doc a: generation must be a non-negative integer string, got "12a"'));
    expect(() => generationToBigInt('abc', 'doc a')).toThrow(new AppError('doc a: generation must be a non-negative integer string, got "abc"'));
    expect(() => generationToBigInt('', 'doc a')).toThrow(/non-negative integer string/);
    expect(() => generationToBigInt(7 as unknown as string, 'doc a')).toThrow(/non-negative integer string, got 7/);
  });

  it('checkVector names what was passed instead of a Float32Array, and reports both dimensions', () => {
    expect(() => checkVector([1, 2], 2, 'doc x')).toThrow(new AppError('doc x: vector must be a Float32Array, got an array'));
    expect(() => checkVector('ab', 2, 'doc x')).toThrow(new AppError('doc x: vector must be a Float32Array, got string'));
    try {
      checkVector(new Float32Array(3), 2, 'doc x');
      expect.unreachable();
    } catch (err) {
      expect((err as AppError).meta).toEqual({ expected: 2, actual: 3 });
    }
  });

  it('sqlString quotes and escapes single quotes', () => {
    expect(sqlString("o'k")).toBe("'o''k'");
    expect(sqlString('')).toBe("''");
  });

  it('orderedValues refuses an empty or missing id and names the document in vector errors', () => {
    const v = new Float32Array([1, 0]);
    expect(() => orderedValues({ id: '', uri: 'u', generation: '1', vector: v }, 2, 'document')).toThrow(
      new AppError('document id must be a non-empty string'),
    );
    expect(() => orderedValues({ id: 5 as unknown as string, uri: 'u', generation: '1', vector: v }, 2, 'record')).toThrow(
      new AppError('record id must be a non-empty string'),
    );
    expect(() => orderedValues({ id: 'a', uri: 'u', generation: '1', vector: new Float32Array(1) }, 2, 'document')).toThrow(
      'document a: vector has dimension 1, expected 2',
    );
    expect(orderedValues({ id: 'a', uri: 'u', generation: '1', vector: v }, 2, 'document').labels).toEqual([]);
  });

  it('orderedColumns: the ordered columns are required; vector and label items follow the Arrow list convention', () => {
    const cols = orderedColumns(3);
    expect(cols.map((f) => [f.name, f.nullable])).toEqual([
      ['id', false],
      ['uri', false],
      ['generation', false],
      ['gen', false],
      ['vector', false],
      ['labels', false],
      ['deleted', false],
    ]);
    const vectorItem = (cols[4]!.type as import('apache-arrow').FixedSizeList).children[0]!;
    const labelItem = (cols[5]!.type as import('apache-arrow').FixedSizeList).children[0]!;
    expect([vectorItem.name, vectorItem.nullable, (cols[4]!.type as import('apache-arrow').FixedSizeList).listSize]).toEqual(['item', true, 3]);
    expect([labelItem.name, labelItem.nullable]).toEqual(['item', true]);
  });

  it('rowsToArrowTable refuses an empty required column even when only one row lacks it', async () => {
    const table = await db.openTable('t-v1');
    const schema = await table.schema();
    table.close();
    const row = (id: string, uri: string | undefined) => ({
      id,
      uri,
      generation: '1',
      gen: 1n,
      vector: new Float32Array([1, 0]),
      labels: [],
      deleted: false,
      modelVersion: 'm',
      indexedAt: 'now',
    });
    expect(() => rowsToArrowTable([row('a', 'u'), row('b', undefined)], schema)).toThrow(new AppError('column uri may not be empty'));
    expect(() => rowsToArrowTable([row('a', 'u'), { ...row('b', 'u'), id: null as unknown as string }], schema)).toThrow(
      new AppError('column id may not be empty'),
    );
    expect(() => rowsToArrowTable([{ ...row('a', 'u'), vector: new Float32Array(3) }], schema)).toThrow(
      new AppError('column vector: row a needs a Float32Array of 2 values'),
    );
    const ok = rowsToArrowTable([row('a', 'u'), row('b', 'v')], schema);
    expect(ok.numRows).toBe(2);
  });

  it('rowsToArrowTable converts a double-precision list column value by value', () => {
    const schema = new Schema([new Field('id', new Utf8(), false), new Field('pair', new FixedSizeList(2, new Field('item', new Float64(), true)), false)]);
    const table = rowsToArrowTable([{ id: 'a', pair: [0.25, 0.5] }], schema);
    expect(Array.from(table.getChild('pair')!.get(0) as Iterable<number>)).toEqual([0.25, 0.5]);
  });

  it('cell converters accept Arrow-like cells, plain arrays and nulls', () => {
    expect(toFloat32({ toArray: () => [1, 2] })).toEqual(new Float32Array([1, 2]));
    expect(toFloat32([3, 4])).toEqual(new Float32Array([3, 4]));
    expect(toStrings({ toArray: () => ['a', 1] })).toEqual(['a', '1']);
    expect(toStrings(['x'])).toEqual(['x']);
    expect(toStrings(null)).toEqual([]);
    expect(toStrings(undefined)).toEqual([]);
    expect(optionalString(null)).toBeUndefined();
    expect(optionalString(undefined)).toBeUndefined();
    expect(optionalString(3)).toBe('3');
    expect(optionalNumber(null)).toBeUndefined();
    expect(optionalNumber('4')).toBe(4);
  });
});

describe('generation ordering', () => {
  it('an older generation never overwrites a newer one; the same one is unchanged', async () => {
    expect(await index.upsert([doc('a', '5', { labels: ['new'] })])).toEqual(['created']);
    expect(await index.upsert([doc('a', '4', { labels: ['old'] })])).toEqual(['stale']);
    expect(await index.upsert([doc('a', '5', { labels: ['other'] })])).toEqual(['unchanged']);
    expect((await index.get('a'))?.labels).toEqual(['new']);
    expect(await index.upsert([doc('a', '6', { labels: ['newer'] })])).toEqual(['updated']);
    expect((await index.get('a'))?.labels).toEqual(['newer']);
  });

  it('compares generations as numbers, not strings', async () => {
    await index.upsert([doc('a', '10')]);
    expect(await index.upsert([doc('a', '9')])).toEqual(['stale']);
    expect(await index.upsert([doc('a', '11')])).toEqual(['updated']);
  });

  it('a batch with no new generation writes nothing (no new table version)', async () => {
    await index.upsert([doc('a', '5'), doc('b', '5')]);
    const before = await tableVersion();
    expect(await index.upsert([doc('a', '5'), doc('b', '3')])).toEqual(['unchanged', 'stale']);
    expect(await index.delete([{ id: 'a', generation: '2' }])).toEqual(['stale']);
    expect(await tableVersion()).toBe(before);
  });

  it('refuses a bad generation before writing anything, naming the document or delete', async () => {
    await expect(index.upsert([doc('a', '1'), doc('b', 'x1')])).rejects.toThrow('document b: generation must be a non-negative integer string, got "x1"');
    await expect(index.delete([{ id: 'c', generation: '-3' }])).rejects.toThrow('delete of c: generation must be a non-negative integer string, got "-3"');
    expect(await index.count()).toBe(0);
  });

  it('handles ids containing quotes', async () => {
    expect(await index.upsert([doc("o'k", '1')])).toEqual(['created']);
    expect(await index.upsert([doc("o'k", '1')])).toEqual(['unchanged']);
    expect((await index.get("o'k"))?.id).toBe("o'k");
  });

  it('looks up more than 500 ids in one batch', async () => {
    const many = Array.from({ length: 520 }, (_, i) => doc(`d${i}`, '1'));
    expect(new Set(await index.upsert(many))).toEqual(new Set(['created']));
    const again = await index.upsert(many.map((d) => ({ ...d, generation: '1' })));
    expect(again.filter((o) => o === 'unchanged')).toHaveLength(520);
    expect((await index.generations(many.map((d) => d.id))).size).toBe(520);
  });
});

describe('deletes and tombstones', () => {
  it('a delete removes generations up to its own and leaves a tombstone that refuses older upserts', async () => {
    await index.upsert([doc('a', '5')]);
    expect(await index.delete([{ id: 'a', generation: '4' }])).toEqual(['stale']);
    expect((await index.get('a'))?.generation).toBe('5');
    expect(await index.delete([{ id: 'a', generation: '5' }])).toEqual(['deleted']);
    expect(await index.get('a')).toBeNull();
    expect(await index.count()).toBe(0);
    expect(await index.upsert([doc('a', '5')])).toEqual(['stale']);
    expect(await index.upsert([doc('a', '6')])).toEqual(['created']);
    expect(await index.count()).toBe(1);
  });

  it('the tombstone keeps the uri, drops the labels and records the delete generation', async () => {
    await index.upsert([doc('a', '5')]);
    await index.delete([{ id: 'a', generation: '7' }]);
    const rows = await rawRows();
    expect(rows).toHaveLength(1);
    const t = rows[0]!;
    expect([t.id, t.uri, t.generation, t.deleted, toStrings(t.labels)]).toEqual(['a', 'file:///b/a.jpg', '7', true, []]);
    expect(Array.from(toFloat32(t.vector))).toEqual([1, 0]);
  });

  it('a delete of an unknown id leaves a tombstone (empty uri) so a late older upsert cannot create it', async () => {
    expect(await index.delete([{ id: 'x', generation: '5' }])).toEqual(['absent']);
    const rows = await rawRows();
    expect(rows.map((r) => [r.id, r.uri, r.generation, r.deleted, toStrings(r.labels)])).toEqual([['x', '', '5', true, []]]);
    expect(await index.upsert([doc('x', '3')])).toEqual(['stale']);
    expect(await index.upsert([doc('x', '5')])).toEqual(['stale']);
    expect(await index.get('x')).toBeNull();
    expect(await index.upsert([doc('x', '6')])).toEqual(['created']);
  });

  it('a newer delete on a tombstone moves it forward; an older one does not move it back', async () => {
    await index.delete([{ id: 'x', generation: '5' }]);
    expect(await index.delete([{ id: 'x', generation: '3' }])).toEqual(['absent']);
    expect((await rawRows())[0]!.generation).toBe('5');
    expect(await index.delete([{ id: 'x', generation: '8' }])).toEqual(['absent']);
    expect((await rawRows())[0]!.generation).toBe('8');
    expect(await index.upsert([doc('x', '7')])).toEqual(['stale']);
  });

  it('repeated ids in one delete batch see the earlier item of the batch', async () => {
    await index.upsert([doc('a', '5')]);
    expect(
      await index.delete([
        { id: 'a', generation: '6' },
        { id: 'a', generation: '9' },
        { id: 'a', generation: '7' },
      ]),
    ).toEqual(['deleted', 'absent', 'absent']);
    const rows = await rawRows();
    expect(rows.map((r) => [r.uri, r.generation, r.deleted])).toEqual([['file:///b/a.jpg', '9', true]]);
  });

  it('repeated ids in one upsert batch: the newest generation wins', async () => {
    expect(await index.upsert([doc('a', '2'), doc('a', '4', { labels: ['four'] }), doc('a', '3')])).toEqual(['created', 'updated', 'stale']);
    expect((await index.get('a'))?.labels).toEqual(['four']);
  });
});

describe('writers in other processes (the guards inside the merge)', () => {
  /** A second table handle with its own lock (as another process has), whose write lands just before `first`'s merge. */
  async function raced(write: (other: GenerationOrderedTable) => Promise<unknown>): Promise<GenerationOrderedTable> {
    const table = await db.openTable('t-v1');
    const other = new GenerationOrderedTable(await db.openTable('t-v1'), 'other-process', 2);
    const proxy = new Proxy(table, {
      get(target, prop, receiver) {
        if (prop === 'mergeInsert') {
          return (on: string) => {
            let builder = target.mergeInsert(on);
            let ran = false;
            // The builder chain as the table uses it; the other write lands before the merge runs.
            const chain = {
              whenMatchedUpdateAll(options?: { where: string }) {
                builder = builder.whenMatchedUpdateAll(options);
                return chain;
              },
              whenNotMatchedInsertAll() {
                builder = builder.whenNotMatchedInsertAll();
                return chain;
              },
              async execute(data: Parameters<typeof builder.execute>[0]) {
                if (!ran) {
                  ran = true;
                  await write(other);
                }
                return builder.execute(data);
              },
            };
            return chain;
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    return new GenerationOrderedTable(proxy, 'this-process', 2);
  }

  const row = (id: string, generation: string, label: string) => ({
    ...doc(id, generation, { labels: [label] }),
    caption: null,
    contentType: null,
    width: null,
    height: null,
    eventTime: null,
    eventMs: null,
  });

  it('an upsert does not replace a newer row written meanwhile by another process', async () => {
    const mine = await raced((other) => other.upsert([row('a', '9', 'theirs')]));
    expect(await mine.upsert([row('a', '5', 'mine')])).toEqual(['created']);
    expect((await index.get('a'))?.labels).toEqual(['theirs']);
    expect((await index.get('a'))?.generation).toBe('9');
  });

  it('a delete does not remove a newer row written meanwhile by another process', async () => {
    await index.upsert([doc('a', '3')]);
    const mine = await raced((other) => other.upsert([row('a', '9', 'theirs')]));
    expect(await mine.delete([{ id: 'a', generation: '5' }], { modelVersion: 'm', indexedAt: 'x' })).toEqual(['deleted']);
    expect((await index.get('a'))?.generation).toBe('9');
  });
});

describe('compaction', () => {
  async function fragments(): Promise<number> {
    const table = await db.openTable('t-v1');
    const n = (await table.stats()).fragmentStats.numFragments;
    table.close();
    return n;
  }

  it('compact() merges the fragments of earlier writes and keeps the recent table versions for readers', async () => {
    for (let i = 0; i < 3; i++) await index.upsert([doc(`a${i}`, '1')]);
    expect(await fragments()).toBe(3);
    const table = await db.openTable('t-v1');
    const versionsBefore = (await table.listVersions()).length;
    await index.compact();
    expect(await fragments()).toBe(1);
    expect((await table.listVersions()).length).toBeGreaterThanOrEqual(versionsBefore);
    table.close();
    expect(await index.count()).toBe(3);
  });

  it('compacts by itself after every N merges (200 by default), not before', async () => {
    const handle = await db.openTable('t-v1');
    const ordered = new GenerationOrderedTable(handle, 'compaction-test', 2, { compactEvery: 4 });
    const r = (i: number) => ({ ...doc(`c${i}`, '1'), caption: null, contentType: null, width: null, height: null, eventTime: null, eventMs: null });
    for (let i = 0; i < 3; i++) await ordered.upsert([r(i)]);
    expect(await fragments()).toBe(3);
    await ordered.upsert([r(3)]);
    expect(await fragments()).toBe(1);
    await ordered.delete([{ id: 'c0', generation: '2' }], { modelVersion: 'm', indexedAt: 'x' });
    expect(await fragments()).toBe(2);
    await ordered.upsert([r(3)]); // unchanged: no merge, does not count
    for (let i = 4; i < 6; i++) await ordered.upsert([r(i)]);
    expect(await fragments()).toBe(4);
    await ordered.upsert([r(6)]);
    expect(await fragments()).toBe(1);
    expect(await index.count()).toBe(6);
  });
});

describe('freeing what compactions replaced', () => {
  /** Long enough that the cleanup inside a compaction (milliseconds after the last write) never falls past it, even on a loaded machine. */
  const GRACE = 2_000;
  const r = (i: number) => ({ ...doc(`f${i}`, '1'), caption: null, contentType: null, width: null, height: null, eventTime: null, eventMs: null });
  /** Data files on disk: what a reader at any kept version may still need. */
  const dataFiles = async () => (await readdir(path.join(dir, 't-v1.lance', 'data'))).filter((f) => f.endsWith('.lance')).length;
  const until = async (files: number, withinMs: number) => {
    const deadline = Date.now() + withinMs;
    while ((await dataFiles()) !== files && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    return dataFiles();
  };

  it('once writes have been quiet for the grace, frees them by itself (up) — compacting first what came after the last compaction', async () => {
    const ordered = new GenerationOrderedTable(await db.openTable('t-v1'), 'cleanup-timer', 2, { compactEvery: 4, cleanupGraceMs: GRACE });
    try {
      for (let i = 0; i < 4; i++) await ordered.upsert([r(i)]);
      // Compacted: one new file, the four it replaced still named by versions younger than the grace.
      expect(await dataFiles()).toBe(5);
      // The pass runs GRACE + 1 s after the last write; polled, so a busy machine cannot fail it.
      expect(await until(1, GRACE + 15_000)).toBe(1);
      for (let i = 4; i < 8; i++) await ordered.upsert([r(i)]);
      expect(await dataFiles()).toBe(6); // compacted again: the new run, and the 5 it replaced (the first run and 4 writes)
      await ordered.upsert([r(8)]); // a write after the compaction: the quiet-time pass compacts it in, then frees the rest
      expect(await until(1, 2 * (GRACE + 1_000) + 15_000)).toBe(1);
      expect(await index.count()).toBe(9);
    } finally {
      await ordered.dispose();
    }
  });

  it('reclaim() compacts what came after the last compaction, waits out the grace and frees the rest (ingest); nothing to do without a compaction', async () => {
    const ordered = new GenerationOrderedTable(await db.openTable('t-v1'), 'cleanup-reclaim', 2, { compactEvery: 4, cleanupGraceMs: GRACE });
    try {
      await ordered.upsert([r(0)]);
      expect(ordered.compacted).toBe(false);
      expect(await ordered.reclaim()).toBe(0);
      expect(await dataFiles()).toBe(1);
      for (let i = 1; i < 6; i++) await ordered.upsert([r(i)]);
      expect(ordered.compacted).toBe(true);
      expect(await dataFiles()).toBe(1 + 4 + 2); // the compacted run, the 4 it replaced, 2 written since
      const waited = await ordered.reclaim();
      expect(waited).toBeGreaterThan(GRACE);
      expect(waited).toBeLessThanOrEqual(GRACE + 1_000);
      expect(await dataFiles()).toBe(1);
      expect(ordered.compacted).toBe(false);
      expect(await index.count()).toBe(6);
    } finally {
      await ordered.dispose();
    }
  });

  it('a disposed table runs no pass (it is being closed)', async () => {
    const ordered = new GenerationOrderedTable(await db.openTable('t-v1'), 'cleanup-dispose', 2, { compactEvery: 4, cleanupGraceMs: GRACE });
    for (let i = 0; i < 4; i++) await ordered.upsert([r(i)]);
    expect(await dataFiles()).toBe(5);
    await ordered.dispose();
    await new Promise((resolve) => setTimeout(resolve, GRACE + 2_000));
    expect(await dataFiles()).toBe(5);
  });
});

describe('scan', () => {
  it('pages live rows by batchSize and refuses a bad batchSize', async () => {
    await index.upsert([doc('a', '1'), doc('b', '1'), doc('c', '1')]);
    await index.delete([{ id: 'b', generation: '1' }]);
    const pages: string[][] = [];
    for await (const page of index.scan(1)) pages.push(page.map((d) => d.id));
    expect(pages.map((p) => p.length)).toEqual([1, 1]);
    expect(pages.flat().sort()).toEqual(['a', 'c']);
    for (const bad of [0, 1.5, -2]) {
      await expect(async () => {
        for await (const _ of index.scan(bad)) void _;
      }).rejects.toThrow(`batchSize must be a whole number ≥ 1, got ${bad}`);
    }
  });
});

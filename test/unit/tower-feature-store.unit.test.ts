import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { Field, Schema, Utf8 } from 'apache-arrow';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { orderedColumns } from '../../shared/adapters/local/lancedb-ordered-table.js';
import { LanceDbFeatureStore } from '../../shared/adapters/local/lancedb-feature-store.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { fromFloat16Bits, toFloat16Bits } from '../../shared/model/float16.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';

/**
 * The block activation (FeatureRecord.activation, IEEE half bits) in the LanceDB feature store:
 * kept exactly, optional per record, gone with a delete, and a table written before the column
 * existed (the schema of the previous release, rebuilt here) gains it on open without losing rows.
 */
const DIM = 4;
let dir: string;

const record = (id: string, extra: Partial<FeatureRecord> = {}): FeatureRecord => ({
  id,
  uri: `file:///b/${id}.png`,
  generation: '1',
  baseModel: 'tower-a',
  vector: new Float32Array(DIM).fill(0.5),
  labels: ['Bag'],
  ...extra,
});

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tower-feature-store-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('block activations in the feature store', () => {
  it('round-trips the fp16 bits exactly, per record, and stores half the bytes of float32', async () => {
    const values = Float32Array.from({ length: 7840 }, (_, i) => ((i * 37) % 601) / 100 - 0.5);
    const bits = toFloat16Bits(values);
    expect(bits.byteLength).toBe(values.byteLength / 2);
    // fp16 keeps ~3 significant digits of ReLU6-range values.
    const back = fromFloat16Bits(bits);
    values.forEach((v, i) => expect(Math.abs(back[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 1e-3 + 1e-4));
    const store = await LanceDbFeatureStore.open(path.join(dir, 'one'));
    try {
      await store.put([record('a', { activation: bits }), record('b')]);
      const a = await store.get('a');
      expect(a!.activation).toEqual(bits);
      expect((await store.get('b'))!.activation).toBeUndefined();
      await store.put([record('a', { generation: '2', activation: toFloat16Bits([1, 2, 3]) })]);
      expect(Array.from((await store.get('a'))!.activation!)).toEqual(Array.from(toFloat16Bits([1, 2, 3])));
      await store.delete([{ id: 'a', generation: '3' }]);
      expect(await store.get('a')).toBeNull();
      const scanned: FeatureRecord[] = [];
      for await (const batch of store.scan(10)) scanned.push(...batch);
      expect(scanned.map((r) => r.id)).toEqual(['b']);
    } finally {
      await store.close();
    }
  });

  it('adds the column to a table written before it existed, keeping its rows', async () => {
    const old = path.join(dir, 'old');
    const db = await lancedb.connect(old);
    const table = await db.createEmptyTable(
      'features',
      new Schema([
        ...orderedColumns(DIM),
        new Field('baseModel', new Utf8(), false),
        new Field('caption', new Utf8(), true),
        new Field('eventTime', new Utf8(), true),
      ]),
    );
    await table.add([
      {
        id: 'x',
        uri: 'u',
        generation: '1',
        gen: 1n,
        vector: [1, 0, 0, 0],
        labels: ['Bag'],
        deleted: false,
        baseModel: 'tower-a',
        caption: null,
        eventTime: null,
      },
    ]);
    table.close();
    db.close();
    const store = await LanceDbFeatureStore.open(old);
    try {
      expect((await store.get('x'))!.activation).toBeUndefined();
      await store.put([record('y', { activation: toFloat16Bits([0.25]) })]);
      expect(Array.from(fromFloat16Bits((await store.get('y'))!.activation!))).toEqual([0.25]);
      expect(await store.count()).toBe(2);
    } finally {
      await store.close();
    }
  });

  it('keeps activations per tower in the per-tower store', async () => {
    const store = await PerTowerFeatureStore.open(path.join(dir, 'towers'));
    try {
      await store.put([record('a', { activation: toFloat16Bits([1.5]) }), record('a', { baseModel: 'tuned-b', generation: '1' })]);
      const all: FeatureRecord[] = [];
      for await (const batch of store.scan(10)) all.push(...batch);
      const byTower = new Map(all.map((r) => [r.baseModel, r]));
      expect(Array.from(byTower.get('tower-a')!.activation!)).toEqual(Array.from(toFloat16Bits([1.5])));
      expect(byTower.get('tuned-b')!.activation).toBeUndefined();
    } finally {
      await store.close();
    }
  });
});

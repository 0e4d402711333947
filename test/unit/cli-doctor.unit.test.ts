import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as lancedb from '@lancedb/lancedb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { silentLogger } from '../../shared/logger.js';
import type { FeatureRecord, ModelRegistry, VectorIndexCatalog } from '../../shared/ports/index.js';
import { diagnose, type DoctorDeps } from '../../shared/services/doctor.js';
import { strict } from '../helpers/strict-fakes.js';

/**
 * `imgsearch doctor --repair` (issue 14, point 1): duplicate feature rows — what two writers
 * merging into one LanceDB table at once leave — are found and deleted, keeping each image's
 * newest generation.
 */
let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-doctor-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const vec = (x: number) => Float32Array.from([x, 1, 0]);
const record = (id: string, generation: string, x: number, baseModel = 'base'): FeatureRecord => ({
  id,
  uri: `file:///imgs/${id}.png`,
  generation,
  baseModel,
  vector: vec(x),
  labels: [],
});

/** A row written beside the table's own (as a second process's merge does when both see no row for the id). */
async function addRawRow(store: PerTowerFeatureStore, r: FeatureRecord): Promise<void> {
  const db = await lancedb.connect(path.join(store.dir, PerTowerFeatureStore.folderOf(r.baseModel)));
  const table = await db.openTable('features');
  await table.add([{ ...r, vector: Array.from(r.vector), gen: BigInt(r.generation), deleted: false, caption: null, eventTime: null }]);
  table.close();
  db.close();
}

function deps(features: PerTowerFeatureStore): DoctorDeps {
  return {
    home: dir,
    registry: strict<ModelRegistry>('registry', { active: async () => null }),
    catalog: strict<VectorIndexCatalog>('catalog', { live: async () => null }),
    features,
    queue: { releaseAllLeases: async () => 0, stats: async () => ({ inflight: 0 }) },
    logger: silentLogger,
    otherWriterAlive: false,
  };
}

async function rows(store: PerTowerFeatureStore): Promise<Array<[string, string, number]>> {
  const out: Array<[string, string, number]> = [];
  for await (const batch of store.scan(100)) for (const r of batch) out.push([r.id, r.generation, r.vector[0]!]);
  return out.sort((a, b) => a[0].localeCompare(b[0]) || a[1].localeCompare(b[1]));
}

describe('doctor: duplicate feature rows', () => {
  it('reports them without --repair; --repair deletes the extra rows keeping the newest generation', async () => {
    const store = await PerTowerFeatureStore.open(path.join(dir, 'features'));
    await store.put([record('a', '5', 1), record('b', '5', 2), record('c', '5', 3)]);
    await addRawRow(store, record('a', '7', 10)); // newer than the table's row
    await addRawRow(store, record('b', '3', 20)); // older
    expect(await rows(store)).toHaveLength(5);

    const found = await diagnose(deps(store), { repair: false });
    expect(found).toEqual([
      {
        kind: 'duplicate-features',
        detail: expect.stringMatching(/^2 images have more than one feature row \(2 extra rows, e\.g\. [ab], [ab]\)/),
        repaired: null,
      },
    ]);
    expect(await rows(store)).toHaveLength(5);

    const repaired = await diagnose(deps(store), { repair: true });
    expect(repaired).toEqual([{ kind: 'duplicate-features', detail: expect.any(String), repaired: '2 extra rows deleted, the newest row of each image kept' }]);
    expect(await rows(store)).toEqual([
      ['a', '7', 10],
      ['b', '5', 2],
      ['c', '5', 3],
    ]);
    expect(await store.count()).toBe(3);
    expect(await diagnose(deps(store), { repair: false })).toEqual([]);
    await store.close();
  });

  it('an image with a record in each of two image towers is not a duplicate', async () => {
    const store = await PerTowerFeatureStore.open(path.join(dir, 'features'));
    await store.put([record('a', '5', 1, 'base'), record('a', '5', 1, 'clip')]);
    expect(await diagnose(deps(store), { repair: false })).toEqual([]);
    await store.close();
  });
});

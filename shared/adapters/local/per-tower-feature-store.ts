import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { compareGenerations } from '../../contracts.js';
import type { FeatureRecord, FeatureStore } from '../../ports/feature-store.js';
import { translatingLanceDbErrors } from './lancedb-errors.js';
import { LanceDbFeatureStore, type DuplicateRows } from './lancedb-feature-store.js';
import type { OrderedTableOptions } from './lancedb-ordered-table.js';

/**
 * Base embeddings of several image towers side by side: one LanceDB feature table per base model
 * (`<dir>/tower-<name>/`), because each tower has its own vector size. Switching to another tower
 * (a pulled CLIP model) keeps the old tower's embeddings for rollback while the new one fills up.
 */
export class PerTowerFeatureStore implements FeatureStore {
  private readonly stores = new Map<string, LanceDbFeatureStore>();

  private constructor(
    readonly dir: string,
    private readonly tableOptions: OrderedTableOptions,
  ) {}

  static async open(dir: string, tableOptions: OrderedTableOptions = {}): Promise<PerTowerFeatureStore> {
    const store = new PerTowerFeatureStore(path.resolve(dir), tableOptions);
    const entries = await translatingLanceDbErrors('open the feature store', store.dir, async () => {
      await fs.mkdir(store.dir, { recursive: true });
      return fs.readdir(store.dir, { withFileTypes: true });
    });
    for (const entry of entries) {
      if (entry.isDirectory() && entry.name.startsWith('tower-')) {
        store.stores.set(entry.name, await LanceDbFeatureStore.open(path.join(store.dir, entry.name), tableOptions));
      }
    }
    return store;
  }

  /** Folder name of a base model: readable when it is a safe name, hashed otherwise. */
  static folderOf(baseModel: string): string {
    return /^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$/.test(baseModel)
      ? `tower-${baseModel}`
      : `tower-${createHash('sha256').update(baseModel).digest('hex').slice(0, 16)}`;
  }

  private async storeFor(baseModel: string): Promise<LanceDbFeatureStore> {
    const folder = PerTowerFeatureStore.folderOf(baseModel);
    let store = this.stores.get(folder);
    if (!store) {
      store = await LanceDbFeatureStore.open(path.join(this.dir, folder), this.tableOptions);
      this.stores.set(folder, store);
    }
    return store;
  }

  async put(records: FeatureRecord[]): Promise<void> {
    const byTower = new Map<string, FeatureRecord[]>();
    for (const r of records) byTower.set(r.baseModel, [...(byTower.get(r.baseModel) ?? []), r]);
    for (const [baseModel, group] of byTower) await (await this.storeFor(baseModel)).put(group);
  }

  async delete(items: { id: string; generation: string }[]): Promise<void> {
    for (const store of this.stores.values()) await store.delete(items);
  }

  /** The newest record of `id` over all towers. */
  async get(id: string): Promise<FeatureRecord | null> {
    let best: FeatureRecord | null = null;
    for (const store of this.stores.values()) {
      const r = await store.get(id);
      if (r && (!best || compareGenerations(r.generation, best.generation) > 0)) best = r;
    }
    return best;
  }

  /** Images with base embeddings: the largest tower's count (an image has one record per tower). */
  async count(): Promise<number> {
    let max = 0;
    for (const store of this.stores.values()) max = Math.max(max, await store.count());
    return max;
  }

  async *scan(batchSize = 1000): AsyncIterable<FeatureRecord[]> {
    for (const store of this.stores.values()) yield* store.scan(batchSize);
  }

  /** Extra rows of an id within a tower (one record per tower is the rule), optionally removed: see LanceDbFeatureStore.duplicates. */
  async duplicates(options: { remove: boolean }): Promise<DuplicateRows> {
    const total: DuplicateRows = { ids: 0, extraRows: 0, examples: [], removed: 0 };
    for (const store of this.stores.values()) {
      const r = await store.duplicates(options);
      total.ids += r.ids;
      total.extraRows += r.extraRows;
      total.removed += r.removed;
      total.examples.push(...r.examples.slice(0, 3 - total.examples.length));
    }
    return total;
  }

  /** Whether a bulk load compacted a tower's table, leaving replaced files for {@link reclaim} to free. */
  get reclaimable(): boolean {
    return [...this.stores.values()].some((s) => s.reclaimable);
  }

  /** After a bulk load: frees the files its compactions replaced, in every tower's table (waits out the readers' grace, ≤ 61 s). */
  async reclaim(): Promise<number> {
    let waited = 0;
    for (const store of this.stores.values()) waited += await store.reclaim();
    return waited;
  }

  async close(): Promise<void> {
    for (const store of this.stores.values()) await store.close();
  }
}

import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';

describe('PerTowerFeatureStore', () => {
  it('keeps base embeddings of two image towers with different sizes, across reopening', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-towers-'));
    const rec = (id: string, baseModel: string, dim: number, generation = '1') => ({
      id,
      uri: `file:///b/${id}`,
      generation,
      baseModel,
      vector: new Float32Array(dim).fill(1 / Math.sqrt(dim)),
      labels: ['x'],
    });
    let store = await PerTowerFeatureStore.open(dir);
    await store.put([rec('a', 'mobilenet', 8), rec('b', 'mobilenet', 8)]);
    await store.put([rec('a', 'clip/vit b32', 4, '2')]);
    await store.close();
    store = await PerTowerFeatureStore.open(dir);
    const all = [];
    for await (const batch of store.scan()) all.push(...batch);
    expect(all.map((r) => `${r.id}:${r.baseModel}:${r.vector.length}`).sort()).toEqual(['a:clip/vit b32:4', 'a:mobilenet:8', 'b:mobilenet:8']);
    expect((await store.get('a'))?.generation).toBe('2');
    expect(await store.count()).toBe(2);
    await store.delete([{ id: 'a', generation: '5' }]);
    expect(await store.get('a')).toBeNull();
    await store.close();
    await fs.rm(dir, { recursive: true, force: true });
  });
});

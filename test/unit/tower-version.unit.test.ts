import { describe, expect, it } from 'vitest';
import { ConfigError, ParseError } from '../../shared/errors.js';
import {
  DEFAULT_ACTIVATION,
  DEFAULT_FEATURE_LAYERS,
  DEFAULT_IMAGE_TOWER,
  DEFAULT_MODEL_NAME,
  DEFAULT_MODEL_VERSION,
} from '../../shared/model/default-model.js';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';
import type { ModelVersion } from '../../shared/ports/model-registry.js';
import { attachActivations, changesLayout, openTowerBlocks } from '../../shared/training/tower-version.js';
import type { FeatureLayer } from '../../shared/model/keras-to-onnx.js';

/**
 * What `retrain --unlock-blocks` refuses before training, with a message naming the fix: a tower
 * without a stored activation, a tower that is not the default MobileNetV2, images ingested
 * without activations; and where a tuned tower's records find the activation they do not repeat.
 */
const activation = { outputName: DEFAULT_ACTIVATION.name, layer: DEFAULT_ACTIVATION.layer, shape: [7, 7, 160] as [number, number, number] };

function version(
  overrides: { name?: string; activation?: typeof activation | null; lineage?: ModelVersion['lineage']; features?: FeatureLayer[]; dimension?: number } = {},
): ModelVersion {
  const image = {
    ...DEFAULT_IMAGE_TOWER,
    dimension: overrides.dimension ?? 1632,
    ...(overrides.features ? { features: overrides.features } : {}),
    ...(overrides.activation === null ? {} : { activation: overrides.activation ?? activation }),
  };
  return {
    version: DEFAULT_MODEL_VERSION,
    manifest: { name: overrides.name ?? DEFAULT_MODEL_NAME, version: DEFAULT_MODEL_VERSION, image, dimension: 1632, normalize: true },
    lineage: overrides.lineage ?? {},
    active: true,
    metrics: null,
  } as unknown as ModelVersion;
}

const record = (id: string, generation: string, baseModel: string, act?: Uint16Array): FeatureRecord => ({
  id,
  uri: `file:///b/${id}.png`,
  generation,
  baseModel,
  vector: new Float32Array(4),
  labels: [],
  ...(act ? { activation: act } : {}),
});

/** The FeatureStore port's scan: every live record, in batches (shared/ports/feature-store.ts). */
function storeOf(records: FeatureRecord[]): FeatureStore {
  return {
    put: async () => {},
    delete: async () => {},
    get: async (id) => records.find((r) => r.id === id) ?? null,
    count: async () => records.length,
    async *scan(batchSize = 2) {
      for (let i = 0; i < records.length; i += batchSize) yield records.slice(i, i + batchSize);
    },
  };
}

describe('retrain --unlock-blocks preconditions', () => {
  it('refuses a tower without an activation output, naming the fix', async () => {
    await expect(openTowerBlocks(version({ activation: null }), { unlock: 2 })).rejects.toThrow(ConfigError);
    await expect(openTowerBlocks(version({ activation: null }), { unlock: 2 })).rejects.toThrow(/new data directory/);
  });

  it('refuses a tower that is not the default MobileNetV2, and accepts a tuned one of its family', async () => {
    await expect(openTowerBlocks(version({ name: 'clip-vit-b32' }), { unlock: 1 })).rejects.toThrow(/default MobileNetV2/);
    const tuned = await openTowerBlocks(version({ name: 'mobilenet_v2-nsfwjs-lit-x', lineage: { towerFamily: DEFAULT_MODEL_NAME } }), { unlock: 1 });
    expect(tuned.unlocked).toEqual(['Conv_1']);
    tuned.dispose();
  });

  it("takes a tuned tower's activations from the first tower's records of the same generation, and names images that have none", async () => {
    const tower = await openTowerBlocks(version(), { unlock: 1 });
    try {
      const act = new Uint16Array(7840).fill(1);
      const stored = [record('a', '5', DEFAULT_MODEL_NAME, act), record('b', '5', DEFAULT_MODEL_NAME, act), record('b', '6', 'tuned')];
      const tunedA = record('a', '5', 'tuned');
      await attachActivations(storeOf(stored), [tunedA], tower);
      expect(tunedA.activation).toBe(act);
      // b was re-uploaded (generation 6): its old activation is another image.
      await expect(attachActivations(storeOf(stored), [record('b', '6', 'tuned')], tower)).rejects.toThrow(ParseError);
      await expect(attachActivations(storeOf(stored), [record('b', '6', 'tuned')], tower)).rejects.toThrow(/1 of 1 images have none \(e\.g\. b\)/);
    } finally {
      tower.dispose();
    }
  });

  it('--region-grid: 2–7 adds the regional part (or changes its grid), 1 removes it, 0 keeps the active layout', async () => {
    const regional: FeatureLayer[] = [...DEFAULT_FEATURE_LAYERS, { layer: DEFAULT_ACTIVATION.layer, grid: 3, weight: 2 }];
    const cases: Array<{ from: ModelVersion; regionGrid: number; features: FeatureLayer[]; changes: boolean }> = [
      { from: version(), regionGrid: 3, features: regional, changes: true },
      { from: version(), regionGrid: 1, features: [...DEFAULT_FEATURE_LAYERS], changes: false },
      { from: version(), regionGrid: 0, features: [...DEFAULT_FEATURE_LAYERS], changes: false },
      { from: version({ features: regional, dimension: 3072 }), regionGrid: 0, features: regional, changes: false },
      { from: version({ features: regional, dimension: 3072 }), regionGrid: 1, features: [...DEFAULT_FEATURE_LAYERS], changes: true },
      {
        from: version({ features: regional, dimension: 3072 }),
        regionGrid: 2,
        features: [...DEFAULT_FEATURE_LAYERS, { layer: DEFAULT_ACTIVATION.layer, grid: 2, weight: 2 }],
        changes: true,
      },
    ];
    for (const c of cases) {
      const tower = await openTowerBlocks(c.from, { unlock: 0, regionGrid: c.regionGrid });
      try {
        expect(tower.spec.features).toEqual(c.features);
        expect(changesLayout(tower)).toBe(c.changes);
        // The stored base embeddings are read in the active tower's layout (its thumbnail part after them).
        expect(tower.storedDims.reduce((a, b) => a + b, 0)).toBe(c.from.manifest.image.dimension - 192);
      } finally {
        tower.dispose();
      }
    }
    // A regional layout that does not fit the active tower's base is refused before training.
    await expect(openTowerBlocks(version({ features: regional }), { unlock: 0 })).rejects.toThrow(/fewer than its feature layers' 2880/);
  });
});

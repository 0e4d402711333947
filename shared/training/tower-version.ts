import { ConfigError, ParseError } from '../errors.js';
import { convertImageTower, DEFAULT_FEATURE_LAYERS, DEFAULT_MODEL_NAME, sameFeatureLayers, towerFeatureLayers } from '../model/default-model.js';
import type { FeatureLayer } from '../model/keras-to-onnx.js';
import { fromFloat16Bits } from '../model/float16.js';
import { regionWindows } from '../model/base-embedding.js';
import { l2NormaliseInPlace } from '../vector-math.js';
import type { ImageTower } from '../model/manifest.js';
import { loadNsfwjsMobilenetV2 } from '../model/nsfwjs-mobilenet.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import { DEFAULT_REGION_WEIGHT } from './lit-options.js';
import { initTf } from './tf-backend.js';
import { TowerBlocks, towerEmbeddings } from './tower-blocks.js';

/**
 * What retraining with unlocked tower blocks adds around the trainer (shared/services/retrain.ts):
 * the blocks rebuilt for the active model's tower, the tuned tower's base embeddings from the
 * stored activations (for evaluation and for the new tower's feature records, which reindexing
 * reads: no image is decoded), and the tuned tower as ONNX through the same converter as the
 * default model (shared/model/default-model.ts `convertImageTower`).
 *
 * A tuned tower starts from the ImageNet weights of nsfwjs' MobileNetV2 each time (the Keras
 * weights of an earlier tuned version are not kept, only its ONNX graph).
 */

/** How the tower is adapted: unlocked top units, and regional pooling of the stored activation. */
export interface TowerAdaptation {
  unlock: number;
  /**
   * grid×grid regional pooling of the activation layer in the base embedding: 2–7 adds it (or
   * changes its grid), 1 removes it (the default layout), 0/absent keeps the active tower's layout.
   */
  regionGrid?: number;
  /** Weight of that part in the concatenation (default {@link DEFAULT_REGION_WEIGHT}). */
  regionWeight?: number;
}

/**
 * The feature layers of the adapted tower: the active tower's layout (`regionGrid` 0), or the
 * default layout plus, for a grid of 2 or more, the activation pooled over regions.
 */
export function adaptedFeatureLayers(image: ImageTower & { activation: NonNullable<ImageTower['activation']> }, adaptation: TowerAdaptation): FeatureLayer[] {
  const grid = adaptation.regionGrid ?? 0;
  if (grid === 0) return [...towerFeatureLayers(image)];
  return [...DEFAULT_FEATURE_LAYERS, ...(grid > 1 ? [{ layer: image.activation.layer, grid, weight: adaptation.regionWeight ?? DEFAULT_REGION_WEIGHT }] : [])];
}

/**
 * Whether the active model's image tower has fine-tuned blocks: the version that registered the
 * tower (`manifest.name`; a head retrained on a tower keeps its name) recorded unlocked blocks. The
 * default tower has none; a tower whose registration is gone counts as tuned (not known otherwise).
 */
export async function towerBlocksTuned(registry: Pick<ModelRegistry, 'get'>, current: ModelVersion): Promise<boolean> {
  if (current.manifest.name === DEFAULT_MODEL_NAME) return false;
  const tower = current.manifest.name === current.version ? current : await registry.get(current.manifest.name);
  const unlocked = tower?.lineage?.unlockBlocks;
  return !(Array.isArray(unlocked) && unlocked.length === 0);
}

/** Whether the tower computes another base-embedding layout than the records hold (every vector changes). */
export function changesLayout(tower: TowerBlocks): boolean {
  return !sameFeatureLayers(tower.spec.features, tower.storedFeatures);
}

/**
 * The active model's top blocks with `unlock` units trainable and the adapted layout (regional
 * pooling); refuses a tower they cannot be rebuilt for. The stored base embeddings are read in the
 * active tower's own layout (manifest `image.features`).
 */
export async function openTowerBlocks(current: ModelVersion, adaptation: TowerAdaptation): Promise<TowerBlocks> {
  const image = current.manifest.image;
  if (!image.activation) {
    throw new ConfigError(
      `--unlock-blocks and --region-grid need an image tower with a block-activation output, and ${current.version}'s has none ` +
        `(it was registered before ${DEFAULT_MODEL_NAME} had one): ingest the images again into a new data directory (IMGSEARCH_HOME), ` +
        'whose default model stores the activations',
    );
  }
  const family = typeof current.lineage?.towerFamily === 'string' ? current.lineage.towerFamily : current.manifest.name;
  if (family !== DEFAULT_MODEL_NAME) {
    throw new ConfigError(
      `--unlock-blocks and --region-grid adapt the default MobileNetV2 tower (${DEFAULT_MODEL_NAME}) only; the active model is ${current.manifest.name}`,
    );
  }
  await initTf();
  const tower = new TowerBlocks(loadNsfwjsMobilenetV2(), {
    activation: image.activation,
    features: adaptedFeatureLayers({ ...image, activation: image.activation }, adaptation),
    storedFeatures: towerFeatureLayers(image),
    unlock: adaptation.unlock,
  });
  const storedTotal = tower.storedDims.reduce((a, b) => a + b, 0);
  if (storedTotal > image.dimension) {
    tower.dispose();
    throw new ConfigError(
      `the active image tower's base has ${image.dimension} values, fewer than its feature layers' ${storedTotal}: not the layout its manifest records (image.features)`,
    );
  }
  return tower;
}

/**
 * Gives every record the activation the blocks read. A tuned tower's records do not repeat it
 * (7,840 fp16 values each): it is taken from another tower's record of the same image and
 * generation (the layers below the activation are never tuned, so it is the same). Throws when
 * an image has none.
 */
export async function attachActivations(store: FeatureStore, records: FeatureRecord[], tower: TowerBlocks): Promise<void> {
  const [h, w, c] = tower.spec.activation.shape;
  const fits = (a: Uint16Array | undefined): a is Uint16Array => a !== undefined && a.length === h * w * c;
  const wanted = new Map(records.filter((r) => !fits(r.activation)).map((r) => [r.id, r]));
  if (wanted.size > 0) {
    for await (const batch of store.scan(1024)) {
      for (const other of batch) {
        const r = wanted.get(other.id);
        if (r && other.generation === r.generation && fits(other.activation)) {
          r.activation = other.activation;
          wanted.delete(other.id);
        }
      }
    }
  }
  const missing = records.filter((r) => !fits(r.activation));
  if (missing.length > 0) {
    throw new ParseError(
      `--unlock-blocks and --region-grid need the block activations stored at ingest, and ${missing.length} of ${records.length} images have none (e.g. ${missing[0]!.id}): ` +
        're-ingest them (`imgsearch ingest <dir>` after `imgsearch rm`) with the default model of this release',
    );
  }
}

/**
 * Base embeddings in the tower's (new) layout without running a block, when the records' stored
 * base came from pretrained blocks (`storedFromPretrained`: a tower whose blocks were never
 * fine-tuned, not int8) and the blocks are still pretrained: every part both layouts have is the stored part (fp32, exact),
 * a part pooled from the activation layer itself is pooled here from the stored activation, the
 * thumbnail part is the stored one. Null when a part needs the blocks (then {@link tunedBaseVectors}).
 * Call it before training: it assumes the blocks are the pretrained ones.
 * At 60k images: 12.6 s against ≈ 770 s of frozen-block forward passes (BENCHMARKS.md).
 */
export function recomposedBaseVectors(tower: TowerBlocks, records: FeatureRecord[], storedFromPretrained: boolean): Float32Array[] | null {
  if (!storedFromPretrained) return null;
  const stored = tower.storedFeatures;
  const [h, w, c] = tower.spec.activation.shape;
  const key = (f: FeatureLayer) => `${f.layer}|${f.grid ?? 1}`;
  const storedOffsets = new Map<string, { offset: number; length: number; weight: number }>();
  let offset = 0;
  stored.forEach((f, i) => {
    storedOffsets.set(key(f), { offset, length: tower.storedDims[i]!, weight: f.weight ?? 1 });
    offset += tower.storedDims[i]!;
  });
  const plan = tower.spec.features.map((f) => ({ f, from: storedOffsets.get(key(f)) }));
  if (plan.some((p) => !p.from && p.f.layer !== tower.spec.activation.layer)) return null;
  const total = tower.featureDims.reduce((a, b) => a + b, 0);
  const act = new Float32Array(h * w * c);
  return records.map((r) => {
    const scale = tower.storedScale(r.vector);
    const thumbnail = tower.thumbnailPart(r.vector);
    const out = new Float32Array(total + (thumbnail?.length ?? 0));
    let at = 0;
    for (const { f, from } of plan) {
      const weight = f.weight ?? 1;
      if (from) {
        // stored part × scale = unit part × its stored weight; re-weighted for the new layout.
        const k = (scale * weight) / from.weight;
        for (let i = 0; i < from.length; i++) out[at + i] = r.vector[from.offset + i]! * k;
        at += from.length;
      } else {
        if (!r.activation) throw new ParseError(`record ${r.id} has no stored activation to pool over regions`);
        fromFloat16Bits(r.activation, act, 0);
        const part = l2NormaliseInPlace(regionalPoolNhwc(act, [h, w, c], f.grid ?? 1));
        for (let i = 0; i < part.length; i++) out[at + i] = part[i]! * weight;
        at += part.length;
      }
    }
    if (thumbnail) out.set(thumbnail, at);
    return l2NormaliseInPlace(out);
  });
}

/**
 * The mean of each grid×grid window ({@link regionWindows}) of an NHWC map [h,w,c], channel-major
 * (c·grid² + row·grid + column) — what the ONNX AveragePool + Flatten of base-embedding.ts gives.
 */
export function regionalPoolNhwc(map: Float32Array, [h, w, c]: readonly [number, number, number], grid: number): Float32Array {
  const [y, x] = [regionWindows(h, grid), regionWindows(w, grid)];
  const out = new Float32Array(c * grid * grid);
  const sum = new Float64Array(c);
  const area = y.kernel * x.kernel;
  for (let i = 0; i < grid; i++)
    for (let j = 0; j < grid; j++) {
      sum.fill(0);
      for (let yy = i * y.stride; yy < i * y.stride + y.kernel; yy++)
        for (let xx = j * x.stride; xx < j * x.stride + x.kernel; xx++) {
          const base = (yy * w + xx) * c;
          for (let ch = 0; ch < c; ch++) sum[ch]! += map[base + ch]!;
        }
      for (let ch = 0; ch < c; ch++) out[ch * grid * grid + i * grid + j] = sum[ch]! / area;
    }
  return out;
}

/** Base embeddings of the (tuned) tower for `records`, from their stored activations. */
export function tunedBaseVectors(tower: TowerBlocks, records: FeatureRecord[]): Promise<Float32Array[]> {
  return towerEmbeddings(
    tower,
    records.map((r) => ({ activation: (out: Float32Array, offset: number) => fromFloat16Bits(r.activation!, out, offset), base: r.vector })),
  );
}

/** The tuned tower as ONNX + its manifest entry (same layout and activation output as the tower it came from). */
export async function tunedImageTower(tower: TowerBlocks, from: ImageTower, docString: string): Promise<{ bytes: Uint8Array; image: ImageTower }> {
  const artifacts = loadNsfwjsMobilenetV2();
  const { bytes, image } = convertImageTower(await tower.exportArtifacts(artifacts.modelTopology), {
    features: tower.spec.features,
    activation: from.activation ? { layer: from.activation.layer, name: from.activation.outputName } : undefined,
    docString,
  });
  // Same thumbnail part as the tower it came from; the feature layers' parts as the blocks compute them.
  const sum = (dims: readonly number[]) => dims.reduce((a, b) => a + b, 0);
  const expected = from.dimension - sum(tower.dimsOf(towerFeatureLayers(from))) + sum(tower.featureDims);
  if (image.dimension !== expected)
    throw new ConfigError(`the tuned tower's base has ${image.dimension} values, the blocks compute ${expected} (from a tower of ${from.dimension})`);
  // The layout is the new tower's: a default-layout tower records none, even if `from` had one.
  const { features: _fromLayout, ...rest } = from;
  return { bytes, image: { ...rest, ...image } };
}

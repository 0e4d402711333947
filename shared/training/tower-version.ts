import { ConfigError, ParseError } from '../errors.js';
import { convertImageTower, DEFAULT_FEATURE_LAYERS, DEFAULT_MODEL_NAME } from '../model/default-model.js';
import { fromFloat16Bits } from '../model/float16.js';
import type { ImageTower } from '../model/manifest.js';
import { loadNsfwjsMobilenetV2 } from '../model/nsfwjs-mobilenet.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelVersion } from '../ports/model-registry.js';
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

/** The active model's top blocks with `unlock` units trainable; refuses a tower they cannot be rebuilt for. */
export async function openTowerBlocks(current: ModelVersion, unlock: number): Promise<TowerBlocks> {
  const image = current.manifest.image;
  if (!image.activation) {
    throw new ConfigError(
      `--unlock-blocks needs an image tower with a block-activation output, and ${current.version}'s has none ` +
        `(it was registered before ${DEFAULT_MODEL_NAME} had one): ingest the images again into a new data directory (IMGSEARCH_HOME), ` +
        'whose default model stores the activations',
    );
  }
  const family = typeof current.lineage?.towerFamily === 'string' ? current.lineage.towerFamily : current.manifest.name;
  if (family !== DEFAULT_MODEL_NAME) {
    throw new ConfigError(`--unlock-blocks tunes the default MobileNetV2 tower (${DEFAULT_MODEL_NAME}) only; the active model is ${current.manifest.name}`);
  }
  await initTf();
  const tower = new TowerBlocks(loadNsfwjsMobilenetV2(), { activation: image.activation, features: DEFAULT_FEATURE_LAYERS, unlock });
  const featureTotal = tower.featureDims.reduce((a, b) => a + b, 0);
  if (featureTotal > image.dimension) {
    tower.dispose();
    throw new ConfigError(
      `the active image tower's base has ${image.dimension} values, fewer than its feature layers' ${featureTotal}: not the default layout`,
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
      `--unlock-blocks needs the block activations stored at ingest, and ${missing.length} of ${records.length} images have none (e.g. ${missing[0]!.id}): ` +
        're-ingest them (`imgsearch ingest <dir>` after `imgsearch rm`) with the default model of this release',
    );
  }
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
    features: DEFAULT_FEATURE_LAYERS,
    activation: from.activation ? { layer: from.activation.layer, name: from.activation.outputName } : undefined,
    docString,
  });
  if (image.dimension !== from.dimension)
    throw new ConfigError(`the tuned tower's base has ${image.dimension} values, the tower it came from ${from.dimension}`);
  return { bytes, image: { ...from, ...image } };
}

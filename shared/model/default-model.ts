import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KERAS_TO_ONNX_CONVERTER_VERSION, kerasToOnnx, type FeatureLayer, type KerasModelArtifacts, type ThumbnailBranch } from './keras-to-onnx.js';
import { modelManifestSchema, type ImageTower, type ModelManifest } from './manifest.js';
import { loadNsfwjsMobilenetV2, nsfwjsPackageVersion } from './nsfwjs-mobilenet.js';

/**
 * The offline default model: nsfwjs' Keras MobileNetV2 (ImageNet backbone) converted to ONNX on
 * first use, with no network, and cached. Its NSFW head is dropped; the output is a general image
 * embedding ("base") that a trained head may later project.
 *
 * Why these layers — measured with `node --import tsx bench/select-feature-layer.ts` (train split;
 * near-dup = original top-1 among 200 Fashion-MNIST + 12 mate photographs; class = same-class
 * top-1, cosine, 1k images/100 queries and 5k images/500 queries):
 *
 *   candidate                                   near-dup Fashion  photos  class 1k  class 5k
 *   block_12_add                                      85.0%       100%     69.0     76.0
 *   block_14_add                                      90.0%       100%     71.0     75.4
 *   block_15_add                                      83.0%       100%     72.0     76.4
 *   block_16_project_BN                               82.0%       100%     75.0     74.8
 *   out_relu (= pooled flatten_1)                     73.0%       100%     72.0     71.8
 *   thumbnail 8×8 grey centred alone                   100%       100%     79.0     80.8
 *   block_12_add + out_relu                           81.5%       100%     71.0     75.8
 *   block_12_add + out_relu + thumb 28×28 grey ×1.5    100%       100%     81.0     81.4
 *   block_15_add + out_relu + thumb 8×8 ×1             100%       100%     77.0     83.0
 *   block_15_add + out_relu + thumb 8×8 ×1.5  CHOSEN   100%       100%     78.0     83.2
 *   block_15_add + out_relu + thumb 8×8 ×2             100%       100%     79.0     83.6
 *
 * No CNN layer alone passes the near-duplicate bar (at 28 px, JPEG blocks and upscaling move the
 * CNN features more than the differences between garments), and the pixel thumbnail retrieves
 * Fashion-MNIST classes better than any layer; together they pass both criteria. Among the
 * passing candidates the 5k figures differ by less than their noise (±1.7 points at 500
 * queries); ×1.5 keeps the CNN features half of the weight, which matters for photographs whose
 * meaning is not in their 8×8 layout, and the colour thumbnail is identical to the grey one on
 * grey images but keeps colour for photos. The base is 160 + 1280 + 192 = 1632 floats: a mid block,
 * the last block and the thumbnail, a rich input for a trained head.
 *
 * Changing the layers or weights changes every vector: bump DEFAULT_MODEL_VERSION with them (the
 * registry keys models by version; the cache folder changes by itself).
 */
export const DEFAULT_MODEL_NAME = 'mobilenet_v2-nsfwjs';
export const DEFAULT_MODEL_VERSION = 'mobilenet_v2-nsfwjs-base-1';

export const DEFAULT_FEATURE_LAYERS: readonly FeatureLayer[] = [
  { layer: 'block_15_add', weight: 1 },
  { layer: 'out_relu', weight: 1 },
];
export const DEFAULT_THUMBNAIL: ThumbnailBranch | undefined = { size: 8, colour: 'rgb', centre: true, weight: 1.5 };

/**
 * The tower's second output, stored fp16 in the feature store at ingest: the output of block 13
 * (7×7×160 = 7,840 values, 15.7 kB per image). Every layer above it — blocks 14–16 and the last
 * 1×1 conv — can then be fine-tuned (`imgsearch retrain --unlock-blocks N`) and the index rebuilt
 * from stored values, never decoding an image again. Block 13 is the last stride-2 block: what is
 * above it runs on 7×7 maps, cheap enough to train on two cores.
 */
export const DEFAULT_ACTIVATION = { layer: 'block_13_project_BN', name: 'activation' } as const;

const INPUT_SIZE = 224;

/** Input side of the default model: 224×224 RGB bytes, NHWC, centre-cropped; the graph scales them to [0,1]. */
export const DEFAULT_IMAGE_TOWER: Omit<ImageTower, 'dimension'> = {
  file: 'image.onnx',
  inputName: 'pixels',
  outputName: 'embedding',
  width: INPUT_SIZE,
  height: INPUT_SIZE,
  layout: 'NHWC',
  inputType: 'uint8',
  scale: 1 / 255,
  mean: [0, 0, 0],
  std: [1, 1, 1],
  resize: 'cover',
};

/** Overrides for experiments and tests; production uses the defaults above. */
export interface DefaultModelOptions {
  features?: readonly FeatureLayer[];
  /** `thumbnail: undefined` (present) converts without the thumbnail branch. */
  thumbnail?: ThumbnailBranch | undefined;
  /** `activation: undefined` (present) converts without the activation output. */
  activation?: { layer: string; name: string } | undefined;
}

const inFlight = new Map<string, Promise<{ dir: string; manifest: ModelManifest }>>();

/**
 * Returns the folder holding `manifest.json` + `image.onnx` of the default model, converting it
 * on first use. The folder name carries a hash of everything that shapes the model (converter
 * version, nsfwjs version, layers), so changing any of them converts again instead of reusing a
 * stale file. Writes go to a temporary folder renamed into place, so a crash never leaves half a
 * model and concurrent processes agree on one result.
 */
export async function ensureDefaultModel(cacheDir: string, options: DefaultModelOptions = {}): Promise<{ dir: string; manifest: ModelManifest }> {
  const features = options.features ?? DEFAULT_FEATURE_LAYERS;
  const thumbnail = 'thumbnail' in options ? options.thumbnail : DEFAULT_THUMBNAIL;
  const activation = 'activation' in options ? options.activation : DEFAULT_ACTIVATION;
  const key = JSON.stringify({
    converter: KERAS_TO_ONNX_CONVERTER_VERSION,
    nsfwjs: nsfwjsPackageVersion(),
    version: DEFAULT_MODEL_VERSION,
    features,
    thumbnail: thumbnail ?? null,
    tower: DEFAULT_IMAGE_TOWER,
    ...(activation ? { activation } : {}),
  });
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 12);
  const dir = join(cacheDir, `${DEFAULT_MODEL_VERSION}-${hash}`);
  let pending = inFlight.get(dir);
  if (!pending) {
    pending = (async () => (await readCached(dir)) ?? convertInto(cacheDir, dir, features, thumbnail, activation))();
    // Shared only while in flight: later calls re-check the folder (a manifest read and a stat).
    inFlight.set(dir, pending);
    const forget = () => inFlight.delete(dir);
    pending.then(forget, forget);
  }
  return pending;
}

async function readCached(dir: string): Promise<{ dir: string; manifest: ModelManifest } | undefined> {
  try {
    const manifest = modelManifestSchema.parse(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')));
    if ((await stat(join(dir, manifest.image.file))).size === 0) return undefined;
    return { dir, manifest };
  } catch {
    return undefined;
  }
}

async function convertInto(
  cacheDir: string,
  dir: string,
  features: readonly FeatureLayer[],
  thumbnail: ThumbnailBranch | undefined,
  activation: { layer: string; name: string } | undefined,
): Promise<{ dir: string; manifest: ModelManifest }> {
  const { bytes, image } = convertImageTower(loadNsfwjsMobilenetV2(), {
    features,
    thumbnail,
    activation,
    docString: `${DEFAULT_MODEL_VERSION}: ${describeLayers(features, thumbnail)}`,
  });
  const manifest: ModelManifest = modelManifestSchema.parse({
    name: DEFAULT_MODEL_NAME,
    version: DEFAULT_MODEL_VERSION,
    description: `MobileNetV2 (ImageNet backbone from nsfwjs ${nsfwjsPackageVersion()}), converted offline; base embedding = ${describeLayers(features, thumbnail)}`,
    image,
    dimension: image.dimension,
    normalize: true,
  });
  const converted = { bytes };
  await mkdir(cacheDir, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await mkdir(tmp);
  try {
    await writeFile(join(tmp, manifest.image.file), converted.bytes);
    await writeFile(join(tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    // A folder that is there but unreadable (damaged by hand or by a full disk) is replaced.
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // Another process finished first: its result is the same model.
    const cached = await readCached(dir);
    if (cached) return cached;
    throw err;
  }
  return { dir, manifest };
}

/**
 * Keras weights (nsfwjs' MobileNetV2, or the same model with fine-tuned top blocks: see
 * shared/training/tower-blocks.ts) → the ONNX image tower of the default layout and its manifest entry.
 */
export function convertImageTower(
  artifacts: KerasModelArtifacts,
  options: {
    features?: readonly FeatureLayer[];
    thumbnail?: ThumbnailBranch | undefined;
    activation?: { layer: string; name: string } | undefined;
    docString?: string;
  } = {},
): { bytes: Uint8Array; image: ImageTower } {
  const features = options.features ?? DEFAULT_FEATURE_LAYERS;
  const thumbnail = 'thumbnail' in options ? options.thumbnail : DEFAULT_THUMBNAIL;
  const activation = 'activation' in options ? options.activation : DEFAULT_ACTIVATION;
  const converted = kerasToOnnx(artifacts, {
    features: [...features],
    thumbnail,
    inputName: DEFAULT_IMAGE_TOWER.inputName,
    outputName: DEFAULT_IMAGE_TOWER.outputName,
    uint8Input: { scale: DEFAULT_IMAGE_TOWER.scale },
    docString: options.docString ?? `${DEFAULT_MODEL_NAME}: ${describeLayers(features, thumbnail)}`,
    ...(activation ? { activationOutput: activation } : {}),
  });
  const dimension = converted.outputDimensions[0]!;
  const image: ImageTower = {
    ...DEFAULT_IMAGE_TOWER,
    dimension,
    // Recorded only when it is not the default layout (towers registered before it was recorded have the default).
    ...(sameFeatureLayers(features, DEFAULT_FEATURE_LAYERS) ? {} : { features: features.map((f) => ({ ...f })) }),
    ...(activation && converted.activationShape
      ? { activation: { outputName: activation.name, layer: activation.layer, shape: converted.activationShape } }
      : {}),
  };
  return { bytes: converted.bytes, image };
}

/** The feature layers a tower's base embedding is made of (manifest `image.features`; absent = the default layout). */
export function towerFeatureLayers(image: ImageTower): readonly FeatureLayer[] {
  return image.features ?? DEFAULT_FEATURE_LAYERS;
}

/** Whether two base-embedding layouts are the same (layer, weight, grid; defaults filled in). */
export function sameFeatureLayers(a: readonly FeatureLayer[], b: readonly FeatureLayer[]): boolean {
  const key = (f: FeatureLayer) => `${f.layer}|${f.weight ?? 1}|${f.grid ?? 1}`;
  return a.length === b.length && a.every((f, i) => key(f) === key(b[i]!));
}

export function describeLayers(features: readonly FeatureLayer[], thumbnail: ThumbnailBranch | undefined): string {
  const parts = features.map((f) => `${f.layer}${(f.grid ?? 1) > 1 ? ` ${f.grid}×${f.grid} regions` : ''}×${f.weight ?? 1}`);
  if (thumbnail) {
    parts.push(`thumbnail ${thumbnail.size}x${thumbnail.size} ${thumbnail.colour}${thumbnail.centre ? ' centred' : ''}×${thumbnail.weight}`);
  }
  return `concat(${parts.join(', ')}) pooled, L2-normalised`;
}

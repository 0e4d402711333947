import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { ConfigError, ImageRejectedError, NotFoundError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import { evaluateModel } from '../evaluation/evaluate.js';
import { fitPca, openProjection, projectionManifest, projectionToOnnx, PROJECTION_FILE } from '../model/compact-projection.js';
import { prepareImage } from '../model/image-preprocessor.js';
import { modelManifestSchema, type ImageTower, type ModelManifest } from '../model/manifest.js';
import { quantizeModel, type CalibrationBatch, type CalibrationMethod } from '../model/quantize.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import { mulberry32, shuffledIndices } from '../training/prng.js';
import { dot, l2Normalise } from '../vector-math.js';
import { baseModelKeys, heldOutSplit, readBaseFeatures, registeredTowers } from './retrain.js';

/**
 * Variants of a registered model, registered as new versions (inactive: `imgsearch model promote`
 * then takes the usual path — index rebuilt beside the live one, alias swapped, rollback kept):
 *
 * - int8: the image tower quantised (shared/model/quantize.ts), calibrated on sample images. Its
 *   vectors differ slightly from the float tower's, so it is a different base model (manifest name
 *   `<name>-int8`): promoting it re-embeds the images instead of mixing float documents with int8
 *   queries.
 * - compact: a PCA projection (shared/model/compact-projection.ts) fitted on the collection's
 *   stored vectors, applied after the tower on every path. Same tower, same base embeddings: the
 *   index is rebuilt from the feature store without decoding an image.
 */

export interface VariantDeps {
  registry: ModelRegistry;
  logger?: Logger;
}

/** Images for calibration: encoded files, read lazily. */
export interface CalibrationImage {
  name: string;
  read(): Promise<Buffer>;
}

export interface QuantizeVariantOptions {
  /** Version to quantise (default: the active one). */
  from?: string;
  /** Name of the new version (default `<from>-int8`). */
  version?: string;
  /** Candidate images; `calibrationCount` of them calibrate, up to `parityCount` others measure parity. */
  images: CalibrationImage[];
  calibrationCount: number;
  parityCount?: number;
  method?: CalibrationMethod;
  percentile?: number;
  seed?: number;
  threads?: number;
  maxPixels: number;
  onProgress?: (p: { stage: 'calibrate' | 'parity' | 'register'; images?: number }) => void;
}

export interface QuantizeVariantResult {
  version: string;
  parent: string;
  calibration: { images: number; skipped: number; method: CalibrationMethod; percentile: number | null };
  /** Cosine between the int8 and float base embeddings of images not used for calibration. */
  parity: { images: number; meanCosine: number; minCosine: number };
  quantized: { convs: number; qdqTensors: number };
  bytes: { fp32: number; int8: number };
}

async function sourceVersion(registry: ModelRegistry, from: string | undefined): Promise<ModelVersion> {
  const v = from ? await registry.get(from) : await registry.active();
  if (!v)
    throw new NotFoundError(from ? `no model version ${from}; see \`imgsearch model list\`` : 'no active model: run `imgsearch up` or `ingest` once first');
  return v;
}

async function newVersionName(registry: ModelRegistry, name: string): Promise<string> {
  if (await registry.get(name))
    throw new ConfigError(`model version ${name} already exists: remove it first (\`imgsearch model rm ${name}\`) or name another with --name`);
  return name;
}

/** Files a manifest refers to besides the image tower (copied into a variant). */
async function companionFiles(registry: ModelRegistry, v: ModelVersion, except: Set<string>): Promise<Record<string, Buffer>> {
  const m = v.manifest;
  const names = [m.image.file, m.head?.file, m.text?.file, m.text?.kind === 'clip' ? m.text.tokenizerFile : undefined, m.projection?.file];
  const dir = await registry.localPath(v.version);
  const files: Record<string, Buffer> = {};
  for (const name of names) if (name && !except.has(name)) files[name] = await readFile(path.join(dir, name));
  return files;
}

async function* preparedBatches(
  images: CalibrationImage[],
  tower: ImageTower,
  maxPixels: number,
  batchSize: number,
  skipped: { count: number },
  logger: Logger,
): AsyncGenerator<CalibrationBatch> {
  const size = tower.width * tower.height * 3;
  const uint8 = tower.inputType === 'uint8';
  let pending: Array<Uint8Array | Float32Array> = [];
  const flush = (): CalibrationBatch => {
    const data = uint8 ? new Uint8Array(pending.length * size) : new Float32Array(pending.length * size);
    pending.forEach((p, i) => data.set(p, i * size));
    const dims = tower.layout === 'NHWC' ? [pending.length, tower.height, tower.width, 3] : [pending.length, 3, tower.height, tower.width];
    pending = [];
    return { data, dims };
  };
  for (const image of images) {
    try {
      pending.push((await prepareImage(await image.read(), tower, { maxPixels })).pixels);
    } catch (err) {
      if (!(err instanceof ImageRejectedError)) throw err;
      skipped.count++;
      logger.warn({ err, image: image.name }, 'calibration image skipped');
      continue;
    }
    if (pending.length === batchSize) yield flush();
  }
  if (pending.length > 0) yield flush();
}

/** Quantises a version's image tower and registers the result as `<version>-int8` (inactive). */
export async function registerInt8Variant(deps: VariantDeps, options: QuantizeVariantOptions): Promise<QuantizeVariantResult> {
  const logger = deps.logger ?? silentLogger;
  const source = await sourceVersion(deps.registry, options.from);
  const tower = source.manifest.image;
  if (tower.precision === 'int8') throw new ConfigError(`model ${source.version} is already int8; quantise its float parent ${source.parent ?? ''}`.trim());
  const version = await newVersionName(deps.registry, options.version ?? `${source.version}-int8`);
  if (!Number.isInteger(options.calibrationCount) || options.calibrationCount < 1) throw new ConfigError('calibration needs at least 1 image (--images)');
  if (options.images.length === 0) throw new ConfigError('no calibration images found: give a folder of images with --calibration <dir>');
  const order = shuffledIndices(options.images.length, mulberry32(options.seed ?? 1));
  const picked = [...order].map((i) => options.images[i]!);
  const calibration = picked.slice(0, options.calibrationCount);
  const parity = picked.slice(options.calibrationCount, options.calibrationCount + (options.parityCount ?? 32));
  const fp32 = await readFile(path.join(await deps.registry.localPath(source.version), tower.file));
  const skipped = { count: 0 };
  options.onProgress?.({ stage: 'calibrate', images: calibration.length });
  const q = await quantizeModel(fp32, preparedBatches(calibration, tower, options.maxPixels, 8, skipped, logger), {
    method: options.method,
    percentile: options.percentile,
    threads: options.threads,
  });
  options.onProgress?.({ stage: 'parity', images: parity.length });
  const cosines = await parityCosines(fp32, q.bytes, tower, preparedBatches(parity, tower, options.maxPixels, 8, skipped, logger), options.threads);
  const metrics = {
    quantization: {
      method: q.method,
      percentile: q.percentile,
      calibrationImages: q.calibrationImages,
      parityImages: cosines.length,
      meanCosine: cosines.length ? cosines.reduce((a, b) => a + b, 0) / cosines.length : null,
      minCosine: cosines.length ? Math.min(...cosines) : null,
    },
  };
  const manifest: ModelManifest = modelManifestSchema.parse({
    ...source.manifest,
    name: `${source.manifest.name}-int8`,
    version,
    description: `int8 (QDQ, ${q.method}${q.percentile === null ? '' : ` ${q.percentile}%`}, ${q.calibrationImages} calibration images) of ${source.version}`,
    image: { ...tower, precision: 'int8' },
  });
  options.onProgress?.({ stage: 'register' });
  await deps.registry.register({
    version,
    parent: source.version,
    manifest,
    files: { ...(await companionFiles(deps.registry, source, new Set([tower.file]))), [tower.file]: Buffer.from(q.bytes) },
    metrics,
    lineage: { parent: source.version, variant: 'int8', quantization: metrics.quantization },
  });
  logger.info({ version, parent: source.version, ...metrics.quantization }, 'int8 variant registered');
  return {
    version,
    parent: source.version,
    calibration: { images: q.calibrationImages, skipped: skipped.count, method: q.method, percentile: q.percentile },
    parity: { images: cosines.length, meanCosine: metrics.quantization.meanCosine ?? Number.NaN, minCosine: metrics.quantization.minCosine ?? Number.NaN },
    quantized: { convs: q.plan.convs.length, qdqTensors: q.plan.tensors.length },
    bytes: { fp32: fp32.length, int8: q.bytes.length },
  };
}

/** Cosine between the float and int8 towers' outputs, image by image. */
async function parityCosines(
  fp32: Uint8Array,
  int8: Uint8Array,
  tower: ImageTower,
  batches: AsyncIterable<CalibrationBatch>,
  threads?: number,
): Promise<number[]> {
  const options: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    ...(threads ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
  };
  const [a, b] = await Promise.all([ort.InferenceSession.create(fp32, options), ort.InferenceSession.create(int8, options)]);
  const cosines: number[] = [];
  try {
    for await (const batch of batches) {
      const input = () =>
        batch.data instanceof Uint8Array ? new ort.Tensor('uint8', batch.data, batch.dims) : new ort.Tensor('float32', batch.data, batch.dims);
      const x = (await a.run({ [tower.inputName]: input() }, [tower.outputName]))[tower.outputName]!.data as Float32Array;
      const y = (await b.run({ [tower.inputName]: input() }, [tower.outputName]))[tower.outputName]!.data as Float32Array;
      const d = tower.dimension;
      for (let i = 0; i < batch.dims[0]!; i++) cosines.push(dot(l2Normalise(x.slice(i * d, (i + 1) * d)), l2Normalise(y.slice(i * d, (i + 1) * d))));
    }
  } finally {
    await Promise.all([a.release(), b.release()]);
  }
  return cosines;
}

export interface CompactVariantOptions {
  from?: string;
  version?: string;
  dims: number;
  whiten: boolean;
  /** At most this many stored vectors fit the PCA (seeded sample). */
  sample?: number;
  seed?: number;
  /** Held-out share of the labelled images on which full and compact Recall@1 are compared. */
  heldOutFraction?: number;
}

export interface CompactVariantResult {
  version: string;
  parent: string;
  dims: number;
  whiten: boolean;
  fittedOn: number;
  explainedVariance: number;
  /** Recall@1 of the full and the compact vectors on the held-out labelled images (null without labels). */
  recallAt1: { full: number; compact: number; queries: number } | null;
}

/** Fits a PCA on the stored vectors of a version and registers `<version>-pca<dims>` (inactive). */
export async function registerCompactVariant(deps: VariantDeps & { features: FeatureStore }, options: CompactVariantOptions): Promise<CompactVariantResult> {
  const logger = deps.logger ?? silentLogger;
  const source = await sourceVersion(deps.registry, options.from);
  if (source.manifest.projection) {
    throw new ConfigError(
      `model ${source.version} already has a projection (${source.manifest.dimension} dimensions); compact its parent ${source.parent ?? ''}`.trim(),
    );
  }
  if (source.manifest.text) {
    throw new ConfigError(
      `model ${source.version} has a text tower; a compact projection is fitted on image vectors only, so compact a model without one (e.g. the base model it was trained on)`,
    );
  }
  const version = await newVersionName(deps.registry, options.version ?? `${source.version}-pca${options.dims}${options.whiten ? 'w' : ''}`);
  const records = await readBaseFeatures(deps.features, source, logger);
  const split = heldOutSplit(records, options.heldOutFraction ?? 0.1);
  const fitRecords = split.heldOut.length > 0 ? split.rest : records;
  if (fitRecords.length <= options.dims) {
    throw new ConfigError(
      `a ${options.dims}-dimension projection needs more than ${options.dims} images embedded by ${source.version}; the feature store has ${records.length}`,
    );
  }
  const towers = await registeredTowers(deps.registry, source, logger);
  let full: Float32Array[];
  try {
    full = await towers.project(records.map((r) => r.vector));
  } finally {
    await towers.close();
  }
  const byId = new Map(records.map((r, i) => [r.id, full[i]!]));
  const order = shuffledIndices(fitRecords.length, mulberry32(options.seed ?? 1));
  const fitVectors = [...order.slice(0, options.sample ?? 20_000)].map((i) => byId.get(fitRecords[i]!.id)!);
  const pca = await fitPca(fitVectors, { dims: options.dims, whiten: options.whiten, seed: options.seed });
  const bytes = projectionToOnnx(pca);
  const spec = projectionManifest(pca);
  let recallAt1: CompactVariantResult['recallAt1'] = null;
  if (split.heldOut.length > 0 && split.labels.length > 0) {
    const projection = await openProjection(bytes, spec);
    try {
      const compact = new Map((await projection.apply(full)).map((v, i) => [records[i]!.id, l2Normalise(v)]));
      const r1 = async (space: Map<string, Float32Array>) => {
        const labelled = (rs: typeof records) => rs.map((r) => ({ id: r.id, vector: space.get(r.id)!, labels: r.labels }));
        return (await evaluateModel({ modelVersion: version, heldOut: labelled(split.heldOut), rest: labelled(split.rest), labelVectors: null })).imageToImage[
          'recall@1'
        ];
      };
      recallAt1 = { full: await r1(byId), compact: await r1(compact), queries: split.heldOut.length };
    } finally {
      await projection.close();
    }
  }
  const manifest: ModelManifest = modelManifestSchema.parse({
    ...source.manifest,
    version,
    description: `${source.manifest.description ?? source.version}; PCA ${pca.inputDimension}→${pca.outputDimension}${pca.whiten ? ' whitened' : ''}`,
    projection: spec,
    dimension: pca.outputDimension,
  });
  await deps.registry.register({
    version,
    parent: source.version,
    manifest,
    files: { ...(await companionFiles(deps.registry, source, new Set())), [PROJECTION_FILE]: Buffer.from(bytes) },
    metrics: recallAt1 ? { compaction: recallAt1 } : null,
    lineage: { parent: source.version, baseModel: baseModelKeys(source).id, variant: 'compact', fittedOn: fitVectors.length },
  });
  logger.info({ version, parent: source.version, dims: options.dims, whiten: options.whiten, recallAt1 }, 'compact variant registered');
  return {
    version,
    parent: source.version,
    dims: pca.outputDimension,
    whiten: pca.whiten,
    fittedOn: fitVectors.length,
    explainedVariance: spec.explainedVariance ?? 0,
    recallAt1,
  };
}

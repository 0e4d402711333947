import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, NotFoundError, ParseError } from '../errors.js';
import { evaluateModel, renderMetricsPlot, type EvaluationReport, type LabelledVector } from '../evaluation/evaluate.js';
import { isHeldOut } from '../evaluation/split.js';
import { silentLogger, type Logger } from '../logger.js';
import { loadProjection } from '../model/projection.js';
import { modelManifestSchema, type ModelManifest } from '../model/manifest.js';
import { loadHead, loadTextTower } from '../model/towers.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import { gateDecision, type GateDecision } from '../training/gate.js';
import { embedTextsWithTower, reprojectBatch } from '../training/lit-inference.js';
import { trainLit, type EpochStats, type FeedbackPair, type LitTrainingResult, type LitTrainOptions } from '../training/lit-trainer.js';
import { headToOnnx, textTowerToOnnx } from '../training/onnx-export.js';
import { parseLitOptions } from '../training/lit-options.js';
import {
  attachActivations,
  changesLayout,
  openTowerBlocks,
  recomposedBaseVectors,
  towerBlocksTuned,
  tunedBaseVectors,
  tunedImageTower,
} from '../training/tower-version.js';
import type { TowerBlocks } from '../training/tower-blocks.js';
import { DEFAULT_FEATURE_LAYERS, DEFAULT_MODEL_NAME, sameFeatureLayers, towerFeatureLayers } from '../model/default-model.js';
import type { FeatureLayer } from '../model/keras-to-onnx.js';
import { parseWith } from '../validation.js';
import { l2Normalise } from '../vector-math.js';
import { buildDriftProfile, DRIFT_PROFILE_FILE, type ProfiledRecord } from './drift.js';
import type { Activation } from './model-lifecycle.js';

/**
 * The retrain service — one retraining run, whoever asks for it (`imgsearch retrain`, the retrain
 * job on Vertex AI or locally, hyperparameter trials):
 *  1. read the stored base embeddings of the active model's image tower (no image decoded);
 *  2. train a LiT head + hashed n-gram text tower on the labelled images, captions and click
 *     feedback, leaving a held-out split (by id hash) out of training, feedback included;
 *  3. evaluate the candidate and the active model on that same split;
 *  4. gate: the candidate must beat the active model by the margin;
 *  5. register the candidate with its metrics and lineage (winner or not);
 *  6. if it won and the caller gave an {@link Activation}, make it live — in the promotion order
 *     of model-lifecycle.ts (locally: index built, alias swapped, then the registry promoted;
 *     cloud: registry promoted, then the reindex job started). Without one it stays registered.
 * Also here: {@link evaluateVersion} (`imgsearch eval`) and the metrics plot the page shows.
 */
export const retrainOptionsSchema = z.object({
  seed: z.number().int().default(42),
  epochs: z.number().int().min(0).default(30),
  /** Required held-out Recall@1 gain (and text precision@10 gain when both models have text). */
  margin: z.number().min(0).max(1).default(0.005),
  textMargin: z.number().min(-1).max(1).optional(),
  heldOutFraction: z.number().gt(0).lt(1).default(0.1),
  /** Version id of the candidate (default `<name>-lit-<timestamp>-<data hash>`). */
  version: z.string().optional(),
  /** Recorded in the candidate's lineage. */
  codeVersion: z.string().default('lit-trainer-1'),
  /** Trainer hyperparameters besides seed and epochs (shared/training/lit-options.ts). */
  training: z.record(z.string(), z.unknown()).optional(),
});
export type RetrainOptions = z.input<typeof retrainOptionsSchema>;

export interface RetrainDeps<A = unknown> {
  features: FeatureStore;
  registry: ModelRegistry;
  logger?: Logger;
  /** Click feedback (query → opened result). */
  feedback?: () => Promise<FeedbackPair[]>;
  /** How a candidate that passed the gate goes live; omit to only register it. */
  activate?: Activation<A>;
  /** Folder where metrics.png is written (the page serves it); omit to skip the plot. */
  reportsDir?: string;
}

export type RetrainProgress =
  | { stage: 'load'; records: number }
  | { stage: 'train'; epoch: EpochStats }
  | { stage: 'evaluate'; model: string }
  /** The candidate won and is being made live. */
  | { stage: 'activate'; version: string }
  | { stage: 'reindex'; done: number }
  /** The candidate is registered and, if `promoted`, live. */
  | { stage: 'register'; version: string; promoted: boolean }
  | { stage: 'plot'; file: string };

export interface RetrainResult<A = unknown> {
  /** Whether the candidate is now live (it won and was activated). */
  promoted: boolean;
  decision: GateDecision;
  candidate: {
    version: string;
    metrics: EvaluationReport;
    training: {
      history: EpochStats[];
      bestEpoch: number;
      seconds: number;
      backend: string;
      trainedExamples: number;
      validationExamples: number;
      /** Hidden units of the trained head. */ hidden: number;
      /** Tower units fine-tuned with the head (absent: locked image tower). */
      unlockedBlocks?: string[];
      /** The new tower's regional-pooling grid and its weight when the candidate has one (`--region-grid`); absent otherwise. */
      regionGrid?: number;
      regionWeight?: number;
    };
  };
  current: { version: string; metrics: EvaluationReport };
  /** What the activation answered (local: the index now live; cloud: the reindex execution); null when not promoted. */
  activation: A | null;
  /** The metrics plot written, when `reportsDir` was given. */
  plot: string | null;
}

export async function retrain<A = unknown>(
  deps: RetrainDeps<A>,
  optionsInput: RetrainOptions = {},
  onProgress: (p: RetrainProgress) => void = () => {},
): Promise<RetrainResult<A>> {
  const options = parseWith(retrainOptionsSchema, optionsInput, 'Invalid retraining options', { root: 'options' });
  const logger = deps.logger ?? silentLogger;
  const current = await deps.registry.active();
  if (!current) throw new NotFoundError('No active model in the registry: ingest images with the default model before retraining');
  const base = baseModelKeys(current);

  const records = await readBaseFeatures(deps.features, current, logger);
  onProgress({ stage: 'load', records: records.length });
  const split = heldOutSplit(records, options.heldOutFraction);
  if (split.heldOut.length === 0 || split.labels.length === 0) {
    throw new ParseError(
      `Retraining needs labelled images: ${records.length} feature records, ${split.labels.length} labels, ${split.heldOut.length} held out for evaluation`,
    );
  }
  // Held-out images never reach training, not even through feedback.
  const heldIds = new Set(split.heldOut.map((r) => r.id));
  const feedback = ((await deps.feedback?.()) ?? []).filter((f) => !heldIds.has(f.openedId) && !(f.kind === 'image' && heldIds.has(f.queryId)));
  const snapshot = dataSnapshot(records);
  logger.info({ records: records.length, heldOut: split.heldOut.length, labels: split.labels.length, feedback: feedback.length, snapshot }, 'retraining');

  const trainOptions: LitTrainOptions = { ...(options.training ?? {}), seed: options.seed, epochs: options.epochs };
  // Adapting the image tower (shared/training/tower-version.ts): the top blocks train on stored
  // activations (unlockBlocks), and/or the base embedding gains the activation pooled over regions.
  const lit = parseLitOptions(trainOptions);
  const image = current.manifest.image;
  // `--region-grid 1` on a tower that already pools globally asks for nothing the head alone does not.
  const sameAsDefault = lit.regionGrid === 1 && sameFeatureLayers(towerFeatureLayers(image), DEFAULT_FEATURE_LAYERS);
  let tower =
    lit.unlockBlocks > 0 || (lit.regionGrid > 0 && !sameAsDefault)
      ? await openTowerBlocks(current, { unlock: lit.unlockBlocks, regionGrid: lit.regionGrid, regionWeight: lit.regionWeight })
      : undefined;
  const relayout = tower !== undefined && changesLayout(tower);
  if (tower && !relayout && lit.unlockBlocks === 0) {
    // The layout asked for is the active tower's: a head-only retraining.
    tower.dispose();
    tower = undefined;
  }
  try {
    // Blocks are always rebuilt from the pretrained Keras weights: a new layout alone would silently
    // drop the active tower's fine-tuned blocks.
    const activeBlocksTuned = tower ? await towerBlocksTuned(deps.registry, current) : false;
    if (relayout && lit.unlockBlocks === 0 && activeBlocksTuned) {
      throw new ConfigError(
        `the active image tower (${current.manifest.name}) has fine-tuned blocks, and a new layout (--region-grid ${lit.regionGrid}) starts from the pretrained ones: ` +
          'its tuning would be lost. Add --unlock-blocks N to tune the blocks again in the new layout, or activate a tower without tuned blocks first (imgsearch model promote <version>)',
      );
    }
    if (tower) await attachActivations(deps.features, records, tower);
    // A new layout changes every base vector: rebuilt once from what is stored, and the head trains
    // on those (unlocked blocks then start from the same values). From records of untuned blocks the
    // shared parts are reused and no block runs (recomposedBaseVectors); otherwise the frozen blocks run.
    const relaid =
      tower && relayout
        ? (recomposedBaseVectors(tower, records, !activeBlocksTuned && image.precision !== 'int8') ?? (await tunedBaseVectors(tower, records)))
        : null;
    // From here the records are in the new layout, and so is what the blocks read from them.
    const source = relaid ? withVectors(records, relaid) : records;
    if (relaid) tower!.adoptLayout();
    const trainSplit = relaid ? heldOutSplit(source, options.heldOutFraction) : split;
    const trained = await trainLit(
      trainSplit.rest.map((r) => ({ id: r.id, vector: r.vector, labels: r.labels, caption: r.caption, ...(r.activation ? { activation: r.activation } : {}) })),
      feedback,
      trainOptions,
      { logger, onEpoch: (epoch) => onProgress({ stage: 'train', epoch }), tower },
    );

    // The blocks count as tuned only if the kept (best) epoch trained them: a head-only best epoch
    // (head-first epochs, trainLit) leaves them as they were. Without a new layout that is no new
    // vector space and no reindex; with one the tower is new either way.
    const blocksTuned = tower !== undefined && trained.tower !== undefined;
    const tuned = tower && (blocksTuned || relayout) ? tower : undefined;
    if (tower && lit.unlockBlocks > 0 && !blocksTuned) {
      logger.info(
        { bestEpoch: trained.bestEpoch },
        relayout
          ? 'the best epoch trained the head only: the blocks are kept as they were'
          : 'the best epoch trained the head only: the image tower is kept unchanged',
      );
    }
    const adapted = tuned ? describeAdaptation(tuned, blocksTuned) : null;
    const version = options.version ?? defaultVersion(current.manifest.name, snapshot);
    onProgress({ stage: 'evaluate', model: version });
    // A tuned tower changes every base vector: recompute them from the stored activations.
    const tunedVectors = tuned ? (blocksTuned ? await tunedBaseVectors(tuned, source) : relaid) : null;
    // The activation is not copied: it stays with the first tower's records (attachActivations finds it).
    const tunedRecords = tunedVectors ? withVectors(records, tunedVectors).map(({ activation: _activation, ...r }) => ({ ...r, baseModel: version })) : null;
    const candidateSplit = tunedRecords ? heldOutSplit(tunedRecords, options.heldOutFraction) : split;
    const candidateMetrics = await evaluateOnSplit(version, trainedTowers(trained), candidateSplit, logger);
    onProgress({ stage: 'evaluate', model: current.version });
    const currentMetrics = await evaluateOnSplit(current.version, await registeredTowers(deps.registry, current, logger), split, logger);
    const decision = gateDecision(candidateMetrics, currentMetrics, { margin: options.margin, textMargin: options.textMargin });

    const tunedTower = tuned ? await tunedImageTower(tuned, current.manifest.image, `${version}: ${DEFAULT_MODEL_NAME} with ${adapted}`) : null;
    const manifest: ModelManifest = modelManifestSchema.parse({
      // A tuned tower is a new vector space: its own name keys its feature records (baseModelKeys).
      name: tuned ? version : current.manifest.name,
      version,
      description: tuned
        ? `LiT head + hashed n-gram text tower + image tower with ${adapted}, from ${base.id} (parent ${current.version})`
        : `LiT head + hashed n-gram text tower on ${base.id} (parent ${current.version})`,
      image: tunedTower ? tunedTower.image : current.manifest.image,
      head: { file: 'head.onnx', inputDimension: trained.head.inputDimension, outputDimension: trained.head.outputDimension },
      text: { kind: 'hashed-ngram', file: 'text.onnx', buckets: trained.text.buckets, dimension: trained.text.outputDimension },
      dimension: trained.head.outputDimension,
      normalize: true,
    });
    const imageBytes = await readFile(path.join(await deps.registry.localPath(current.version), current.manifest.image.file));
    // The drift reference: the candidate's embeddings of its training images, and what it saw (drift.ts).
    const driftProfile = buildDriftProfile(version, await trainedProfileRecords(trained, candidateSplit.rest), records, options.seed);
    // The tuned tower's base vectors (from stored activations) become its feature records, whether
    // it wins or not (it may be activated later): reindexing reads them, no image is decoded.
    if (tunedRecords) for (let i = 0; i < tunedRecords.length; i += 1000) await deps.features.put(tunedRecords.slice(i, i + 1000));
    await deps.registry.register({
      version,
      parent: current.version,
      manifest,
      files: {
        [manifest.image.file]: tunedTower ? Buffer.from(tunedTower.bytes) : imageBytes,
        'head.onnx': headToOnnx(trained.head),
        'text.onnx': textTowerToOnnx(trained.text),
        [DRIFT_PROFILE_FILE]: Buffer.from(JSON.stringify(driftProfile)),
      },
      // The training curve (per epoch) is kept with the metrics: the page draws it for each version.
      metrics: { ...candidateMetrics, gate: decision, training: { history: trained.history, bestEpoch: trained.bestEpoch } },
      lineage: {
        parent: current.version,
        baseModel: tuned ? version : base.id,
        ...(tuned
          ? {
              towerFamily: DEFAULT_MODEL_NAME,
              tunedFrom: base.id,
              unlockBlocks: blocksTuned ? tuned.unlocked : [],
              tunedParameters: trained.tower?.parameters ?? 0,
              ...regionOf(tuned.spec.features),
            }
          : typeof current.lineage?.towerFamily === 'string'
            ? { towerFamily: current.lineage.towerFamily } // a head retrained on a tuned tower keeps its family
            : {}),
        dataSnapshot: snapshot,
        codeVersion: options.codeVersion,
        heldOutFraction: options.heldOutFraction,
        seed: options.seed,
        bestEpoch: trained.bestEpoch,
        epochsRun: trained.history.length,
        hidden: trained.head.hidden,
        trainingSeconds: trained.seconds,
        feedbackPairs: feedback.length,
      },
    });
    if (current.metrics === null) await deps.registry.setMetrics(current.version, { ...currentMetrics });

    let activation: A | null = null;
    let promoted = false;
    if (decision.promote && deps.activate) {
      onProgress({ stage: 'activate', version });
      activation = await deps.activate(version, (done) => onProgress({ stage: 'reindex', done }));
      promoted = true;
    }
    onProgress({ stage: 'register', version, promoted });
    logger.info({ version, promoted, reasons: decision.reasons }, 'retraining finished');
    const plot = deps.reportsDir ? await writeMetricsPlot(deps.registry, deps.reportsDir) : null;
    if (plot) onProgress({ stage: 'plot', file: plot });
    const { history, bestEpoch, seconds, backend, trainedExamples, validationExamples } = trained;
    return {
      promoted,
      decision,
      candidate: {
        version,
        metrics: candidateMetrics,
        training: {
          history,
          bestEpoch,
          seconds,
          backend,
          trainedExamples,
          validationExamples,
          hidden: trained.head.hidden,
          ...(trained.tower ? { unlockedBlocks: trained.tower.unlocked } : {}),
          ...regionOf(towerFeatureLayers(manifest.image)),
        },
      },
      current: { version: current.version, metrics: currentMetrics },
      activation,
      plot,
    };
  } finally {
    tower?.dispose();
  }
}

/** Fewer labelled images than this make Recall@k mostly noise. */
export const MIN_LABELLED_FOR_EVAL = 20;

/**
 * Held-out metrics of one registered version on the user's labelled images: stored base vectors of
 * its image tower projected by its head; text metrics only when it has a text tower. Stored in the
 * registry (and plotted when `reportsDir` is given).
 */
export async function evaluateVersion(
  deps: { registry: ModelRegistry; features: FeatureStore; logger?: Logger; reportsDir?: string },
  versionId?: string,
  heldOutFraction?: number,
): Promise<EvaluationReport> {
  const logger = deps.logger ?? silentLogger;
  const version = versionId ? await deps.registry.get(versionId) : await deps.registry.active();
  if (!version)
    throw new NotFoundError(versionId ? `no model version ${versionId}; see \`imgsearch model list\`` : 'no active model: run `imgsearch ingest <dir>` first');
  const fromLineage = version.lineage?.heldOutFraction;
  const fraction = heldOutFraction ?? (typeof fromLineage === 'number' ? fromLineage : 0.1);
  const records = await readBaseFeatures(deps.features, version, logger);
  const split = heldOutSplit(records, fraction);
  if (split.labelled < MIN_LABELLED_FOR_EVAL || split.heldOut.length === 0) {
    throw new ParseError(
      `evaluation needs at least ${MIN_LABELLED_FOR_EVAL} labelled images embedded by ${version.manifest.name} (found ${split.labelled}, ${split.heldOut.length} held out): ` +
        'ingest images with a sidecar <name>.json {"labels": [...]} or try `imgsearch dataset fashion-mnist --out <dir> --limit 500`',
    );
  }
  const report = await evaluateOnSplit(version.version, await registeredTowers(deps.registry, version, logger), split, logger);
  await deps.registry.setMetrics(version.version, { ...(version.metrics ?? {}), ...report, evaluatedAt: new Date().toISOString() });
  if (deps.reportsDir) await writeMetricsPlot(deps.registry, deps.reportsDir);
  return report;
}

export const METRICS_PLOT_FILE = 'metrics.png';

/** Renders held-out metrics of every version that has them, oldest first; returns the file. */
export async function writeMetricsPlot(registry: ModelRegistry, reportsDir: string): Promise<string> {
  const history = (await registry.list()).filter((v) => v.metrics !== null).map((v) => ({ version: v.version, metrics: v.metrics }));
  const png = await renderMetricsPlot(history);
  await mkdir(reportsDir, { recursive: true });
  const file = path.join(reportsDir, METRICS_PLOT_FILE);
  // Written beside and renamed, so the page never serves half a PNG.
  await writeFile(`${file}.tmp`, png);
  await rename(`${file}.tmp`, file);
  return file;
}

/**
 * The image tower a version's vectors come from. `id` is what a version trained on it records as
 * `lineage.baseModel` (for a LiT version: its base's lineage; for a base model: its version);
 * `recordKeys` are the names feature records of that tower may carry (the pipeline writes the
 * manifest `name`; stores written by version id are accepted too).
 */
export function baseModelKeys(version: ModelVersion): { id: string; recordKeys: ReadonlySet<string> } {
  const fromLineage = version.lineage?.baseModel;
  const id = typeof fromLineage === 'string' ? fromLineage : version.manifest.version;
  return { id, recordKeys: new Set([version.manifest.name, id]) };
}

/** Stored base embeddings of `version`'s image tower, by id; records of another tower (another vector space) are skipped. */
export async function readBaseFeatures(store: FeatureStore, version: ModelVersion, logger: Logger = silentLogger): Promise<FeatureRecord[]> {
  const { recordKeys } = baseModelKeys(version);
  const dimension = version.manifest.image.dimension;
  const records: FeatureRecord[] = [];
  let skipped = 0;
  for await (const batch of store.scan(2048)) {
    for (const r of batch) {
      if (r.vector.length === dimension && recordKeys.has(r.baseModel)) records.push(r);
      else skipped++;
    }
  }
  if (skipped > 0) logger.warn({ skipped, baseModel: [...recordKeys], dimension }, 'feature records of another base model skipped');
  // In id order, not storage order (which follows ingestion concurrency): the same data and seed
  // then train the same model.
  return records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Labelled images held out by id hash (queries), the rest (corpus, and training data), every label (text queries). */
export interface EvaluationSplit {
  heldOut: FeatureRecord[];
  rest: FeatureRecord[];
  labels: string[];
  /** Records with at least one label. */
  labelled: number;
}

/** The records with other base vectors (same order), e.g. a tower's recomputed ones. */
function withVectors(records: FeatureRecord[], vectors: Float32Array[]): FeatureRecord[] {
  return records.map((r, i) => ({ ...r, vector: vectors[i]! }));
}

/** The regional part of a tower's layout, for its lineage and the retrain output (none: the default layout). */
function regionOf(features: readonly FeatureLayer[]): { regionGrid?: number; regionWeight?: number } {
  const region = features.find((f) => (f.grid ?? 1) > 1);
  return region ? { regionGrid: region.grid!, regionWeight: region.weight ?? 1 } : {};
}

/** How a tuned tower differs from the default one, for its description and ONNX doc string. */
function describeAdaptation(tower: TowerBlocks, blocksTuned: boolean): string {
  const parts: string[] = [];
  if (blocksTuned) parts.push(`${tower.unlocked.join(', ')} fine-tuned`);
  for (const f of tower.spec.features) if ((f.grid ?? 1) > 1) parts.push(`${f.layer} pooled over ${f.grid}×${f.grid} regions (×${f.weight ?? 1})`);
  return parts.length > 0 ? parts.join(' and ') : 'global pooling only (the default layout)';
}

export function heldOutSplit(records: FeatureRecord[], fraction: number): EvaluationSplit {
  const labelled = records.filter((r) => r.labels.length > 0);
  const heldOut = labelled.filter((r) => isHeldOut(r.id, fraction));
  const heldIds = new Set(heldOut.map((r) => r.id));
  return {
    heldOut,
    rest: records.filter((r) => !heldIds.has(r.id)),
    labels: [...new Set(labelled.flatMap((r) => r.labels))].sort(),
    labelled: labelled.length,
  };
}

/** What evaluation needs of a model: its projection of base vectors, and its text tower if it has one. */
export interface EvaluationTowers {
  /** Base vectors → the model's (normalised) search space. */
  project(base: Float32Array[]): Promise<Float32Array[]>;
  /** Texts → normalised text embeddings; null without a text tower. */
  embedTexts: ((texts: string[]) => Promise<Float32Array[]>) | null;
  close(): Promise<void>;
}

/**
 * The evaluation of one model on a split: held-out images queried against the rest, every label
 * as a text query among the held-out images (when the model has a text tower). Closes the towers.
 */
export async function evaluateOnSplit(
  modelVersion: string,
  towers: EvaluationTowers,
  split: EvaluationSplit,
  logger: Logger = silentLogger,
): Promise<EvaluationReport> {
  try {
    const labelled = async (records: FeatureRecord[]): Promise<LabelledVector[]> => {
      const vectors = await towers.project(records.map((r) => r.vector));
      return records.map((r, i) => ({ id: r.id, vector: vectors[i]!, labels: r.labels }));
    };
    let labelVectors: Map<string, Float32Array> | null = null;
    if (towers.embedTexts) {
      try {
        const vectors = await towers.embedTexts(split.labels);
        labelVectors = new Map(vectors.map((v, i) => [split.labels[i]!, v]));
      } catch (err) {
        logger.warn({ err, modelVersion }, 'text tower unusable: text metrics left out');
      }
    }
    return await evaluateModel({ modelVersion, heldOut: await labelled(split.heldOut), rest: await labelled(split.rest), labelVectors });
  } finally {
    await towers.close();
  }
}

/** A registered version's towers, from its ONNX files (what search will run). */
export async function registeredTowers(registry: ModelRegistry, version: ModelVersion, logger: Logger = silentLogger): Promise<EvaluationTowers> {
  const manifest = version.manifest;
  const dir = manifest.head || manifest.text || manifest.projection ? await registry.localPath(version.version) : '';
  const head = await loadHead(manifest, dir);
  // A compact version is evaluated in its compact space, as search runs it.
  const projection = await loadProjection(manifest, dir);
  let text: Awaited<ReturnType<typeof loadTextTower>> = undefined;
  try {
    text = await loadTextTower(manifest, dir);
  } catch (err) {
    logger.warn({ err, version: version.version }, 'text tower cannot be loaded: text metrics left out');
  }
  return {
    project: async (base) => {
      const vectors = head ? (await head.apply(base)).map(l2Normalise) : base;
      return projection ? (await projection.apply(vectors)).map(l2Normalise) : vectors;
    },
    embedTexts: text ? async (texts) => (await text.embed(texts)).map(l2Normalise) : null,
    async close() {
      await head?.close();
      await text?.close();
      await projection?.close();
    },
  };
}

/** Freshly trained weights, run in TensorFlow.js (before the ONNX files exist). */
export function trainedTowers(trained: Pick<LitTrainingResult, 'head' | 'text'>): EvaluationTowers {
  return {
    project: (base) => reprojectBatch(trained.head, base),
    embedTexts: (texts) => embedTextsWithTower(trained.text, texts),
    close: async () => {},
  };
}

/** Count + hash of (id, generation) pairs: identifies the data a model was trained on. */
export function dataSnapshot(records: Pick<FeatureRecord, 'id' | 'generation'>[]): string {
  const hash = createHash('sha256');
  for (const key of records.map((r) => `${r.id}@${r.generation}`).sort()) hash.update(key).update('\n');
  return `${records.length}:${hash.digest('hex').slice(0, 16)}`;
}

/** Training records in the freshly trained model's search space, for its drift profile. */
async function trainedProfileRecords(trained: Pick<LitTrainingResult, 'head'>, training: FeatureRecord[]): Promise<ProfiledRecord[]> {
  const vectors = await reprojectBatch(
    trained.head,
    training.map((r) => r.vector),
  );
  return training.map((r, i) => ({ id: r.id, generation: r.generation, labels: r.labels, vector: vectors[i]! }));
}

function defaultVersion(baseName: string, snapshot: string): string {
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${baseName}-lit-${stamp}-${snapshot.split(':')[1]!.slice(0, 6)}`;
}

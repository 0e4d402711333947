import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { NotFoundError, ParseError, errorMessage } from '../../shared/errors.js';
import { silentLogger, type Logger } from '../../shared/logger.js';
import { modelManifestSchema, type ModelManifest } from '../../shared/model/manifest.js';
import { loadHead, loadTextTower } from '../../shared/model/towers.js';
import type { FeatureRecord, FeatureStore } from '../../shared/ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import { evaluateModel, type EvaluationReport, type LabelledVector } from '../../shared/evaluation/evaluate.js';
import { isHeldOut } from '../../shared/evaluation/split.js';
import { gateDecision } from '../../shared/training/gate.js';
import { trainLit, type FeedbackPair, type LitTrainOptions } from '../../shared/training/lit-trainer.js';
import { embedTextsWithTower, reprojectBatch } from '../../shared/training/lit-inference.js';
import { headToOnnx, textTowerToOnnx } from '../../shared/training/onnx-export.js';

export { reprojectBatch };

/**
 * The retraining job: read base embeddings from the feature store, train a LiT head + hashed
 * n-gram text tower, evaluate candidate and active model on the same held-out split, register the
 * candidate with its metrics and lineage, and promote it only if the gate says it is better.
 * Re-indexing after promotion is the caller's (VectorIndexCatalog) business.
 */
export const retrainOptionsSchema = z.object({
  seed: z.number().int().default(42),
  epochs: z.number().int().min(0).default(30),
  /** Required held-out Recall@1 gain (and text precision@10 gain when both models have text). */
  margin: z.number().min(0).max(1).default(0.005),
  textMargin: z.number().min(-1).max(1).optional(),
  heldOutFraction: z.number().gt(0).lt(1).default(0.1),
  /** Promote in the registry when the gate passes (false: the caller promotes after re-indexing). */
  promote: z.boolean().default(true),
  version: z.string().optional(),
  codeVersion: z.string().optional(),
  training: z.record(z.string(), z.unknown()).optional(),
});
export type RetrainOptions = z.input<typeof retrainOptionsSchema>;

export interface RetrainPorts {
  features: FeatureStore;
  registry: ModelRegistry;
  /** Click feedback (query → opened result); optional. */
  feedback?: () => Promise<FeedbackPair[]>;
  logger?: Logger;
}

// The progress and result shapes are declared once, in shared/ (which may not import jobs/).
export type { RetrainProgress, RetrainResult } from '../../shared/services/retrain-flow.js';
import type { RetrainProgress, RetrainResult } from '../../shared/services/retrain-flow.js';

function normalise(v: Float32Array): Float32Array {
  let s = 0;
  for (const x of v) s += x * x;
  const inv = 1 / (Math.sqrt(s) || 1);
  return v.map((x) => x * inv);
}

/** The base model version a registry version's image tower is (for LiT versions: recorded in lineage). */
export function baseModelOf(version: ModelVersion): string {
  const fromLineage = version.lineage?.baseModel;
  return typeof fromLineage === 'string' ? fromLineage : version.manifest.version;
}

/** Count + hash of (id, generation) pairs: identifies the data a model was trained on. */
export function dataSnapshot(records: Pick<FeatureRecord, 'id' | 'generation'>[]): string {
  const hash = createHash('sha256');
  for (const key of records.map((r) => `${r.id}@${r.generation}`).sort()) hash.update(key).update('\n');
  return `${records.length}:${hash.digest('hex').slice(0, 16)}`;
}

/**
 * Base embeddings of one image tower. The pipeline records the manifest `name` as a record's
 * baseModel (reindex matches on it too); `also` accepts the base version id for stores written so.
 */
async function readFeatures(store: FeatureStore, dimension: number, baseModel: string, logger: Logger, also?: string): Promise<FeatureRecord[]> {
  const records: FeatureRecord[] = [];
  let skipped = 0;
  for await (const batch of store.scan(2048)) {
    for (const r of batch) {
      // Vectors of another base model live in another space; mixing them would poison training.
      if (r.vector.length === dimension && (r.baseModel === baseModel || r.baseModel === also)) records.push(r);
      else skipped++;
    }
  }
  if (skipped > 0) logger.warn({ skipped, baseModel, dimension }, 'feature records of another base model skipped');
  return records;
}

/** Metrics of the active model on the split: its head (if any) on the base vectors, its text tower (if any). */
async function evaluateCurrent(registry: ModelRegistry, current: ModelVersion, heldOut: FeatureRecord[], rest: FeatureRecord[], labels: string[], logger: Logger): Promise<EvaluationReport> {
  const manifest = current.manifest;
  const needsDir = manifest.head !== undefined || manifest.text !== undefined;
  const dir = needsDir ? await registry.localPath(current.version) : '';
  let project = async (v: Float32Array[]) => v;
  const head = await loadHead(manifest, dir);
  if (head) project = async (v) => (await head.apply(v)).map(normalise);
  let labelVectors: Map<string, Float32Array> | null = null;
  try {
    const text = await loadTextTower(manifest, dir);
    if (text) {
      labelVectors = new Map((await text.embed(labels)).map((v, i) => [labels[i]!, normalise(v)]));
      await text.close();
    }
  } catch (err) {
    logger.warn({ err: errorMessage(err), version: current.version }, 'current text tower unusable: text metrics left out');
  }
  const asLabelled = async (records: FeatureRecord[]): Promise<LabelledVector[]> => {
    const vectors = await project(records.map((r) => r.vector));
    return records.map((r, i) => ({ id: r.id, vector: vectors[i]!, labels: r.labels }));
  };
  try {
    return await evaluateModel({ modelVersion: current.version, heldOut: await asLabelled(heldOut), rest: await asLabelled(rest), labelVectors });
  } finally {
    await head?.close();
  }
}

function defaultVersion(baseName: string, snapshot: string): string {
  const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  return `${baseName}-lit-${stamp}-${snapshot.split(':')[1]!.slice(0, 6)}`;
}

export async function runRetraining(ports: RetrainPorts, optionsInput: RetrainOptions = {}, onProgress: (p: RetrainProgress) => void = () => {}): Promise<RetrainResult> {
  const parsed = retrainOptionsSchema.safeParse(optionsInput);
  if (!parsed.success) throw new ParseError(`Invalid retraining options: ${parsed.error.message}`, { cause: parsed.error });
  const options = parsed.data;
  const logger = ports.logger ?? silentLogger;
  const current = await ports.registry.active();
  if (!current) throw new NotFoundError('No active model in the registry: ingest images with the default model before retraining');
  const baseModel = baseModelOf(current);
  const baseDimension = current.manifest.image.dimension;

  const records = await readFeatures(ports.features, baseDimension, baseModel, logger, current.manifest.name);
  onProgress({ stage: 'load', records: records.length });
  const held = records.filter((r) => r.labels.length > 0 && isHeldOut(r.id, options.heldOutFraction));
  const heldIds = new Set(held.map((r) => r.id));
  const rest = records.filter((r) => !heldIds.has(r.id));
  const labels = [...new Set(records.flatMap((r) => r.labels))].sort();
  if (held.length === 0 || labels.length === 0) {
    throw new ParseError(`Retraining needs labelled images: ${records.length} feature records, ${labels.length} labels, ${held.length} held out for evaluation`);
  }
  // Held-out images never reach training, not even through feedback.
  const feedback = ((await ports.feedback?.()) ?? []).filter((f) => !heldIds.has(f.openedId) && !(f.kind === 'image' && heldIds.has(f.queryId)));
  const snapshot = dataSnapshot(records);
  logger.info({ records: records.length, heldOut: held.length, labels: labels.length, feedback: feedback.length, snapshot }, 'retraining');

  const trainOptions: LitTrainOptions = { ...(options.training ?? {}), seed: options.seed, epochs: options.epochs };
  const trained = await trainLit(
    rest.map((r) => ({ id: r.id, vector: r.vector, labels: r.labels, caption: r.caption })),
    feedback,
    trainOptions,
    { logger, onEpoch: (epoch) => onProgress({ stage: 'train', epoch }) },
  );

  const version = options.version ?? defaultVersion(current.manifest.name, snapshot);
  onProgress({ stage: 'evaluate', model: version });
  const projectedHeld = await reprojectBatch(trained.head, held.map((r) => r.vector));
  const projectedRest = await reprojectBatch(trained.head, rest.map((r) => r.vector));
  const labelVectors = new Map((await embedTextsWithTower(trained.text, labels)).map((v, i) => [labels[i]!, v]));
  const candidateMetrics = await evaluateModel({
    modelVersion: version,
    heldOut: held.map((r, i) => ({ id: r.id, vector: projectedHeld[i]!, labels: r.labels })),
    rest: rest.map((r, i) => ({ id: r.id, vector: projectedRest[i]!, labels: r.labels })),
    labelVectors,
  });
  onProgress({ stage: 'evaluate', model: current.version });
  const currentMetrics = await evaluateCurrent(ports.registry, current, held, rest, labels, logger);
  const decision = gateDecision(candidateMetrics, currentMetrics, { margin: options.margin, textMargin: options.textMargin });

  const manifest: ModelManifest = modelManifestSchema.parse({
    name: current.manifest.name,
    version,
    description: `LiT head + hashed n-gram text tower on ${baseModel} (parent ${current.version})`,
    image: current.manifest.image,
    head: { file: 'head.onnx', inputDimension: trained.head.inputDimension, outputDimension: trained.head.outputDimension },
    text: { kind: 'hashed-ngram', file: 'text.onnx', buckets: trained.text.buckets, dimension: trained.text.outputDimension },
    dimension: trained.head.outputDimension,
    normalize: true,
  });
  const imageBytes = await readFile(join(await ports.registry.localPath(current.version), current.manifest.image.file));
  await ports.registry.register({
    version,
    parent: current.version,
    manifest,
    files: { [manifest.image.file]: imageBytes, 'head.onnx': headToOnnx(trained.head), 'text.onnx': textTowerToOnnx(trained.text) },
    metrics: { ...candidateMetrics, gate: decision },
    lineage: {
      parent: current.version,
      baseModel,
      dataSnapshot: snapshot,
      codeVersion: options.codeVersion ?? process.env.IMGSEARCH_CODE_VERSION ?? 'lit-trainer-1',
      heldOutFraction: options.heldOutFraction,
      seed: options.seed,
      bestEpoch: trained.bestEpoch,
      epochsRun: trained.history.length,
      hidden: trained.head.hidden,
      trainingSeconds: trained.seconds,
      feedbackPairs: feedback.length,
    },
  });
  if (current.metrics === null) await ports.registry.setMetrics(current.version, { ...currentMetrics });
  const promoted = decision.promote && options.promote;
  if (promoted) await ports.registry.promote(version);
  onProgress({ stage: 'register', version, promoted });
  logger.info({ version, promoted, reasons: decision.reasons }, 'retraining finished');
  const { history, bestEpoch, seconds, backend, trainedExamples, validationExamples } = trained;
  return {
    promoted,
    decision,
    candidate: { version, metrics: candidateMetrics, training: { history, bestEpoch, seconds, backend, trainedExamples, validationExamples, hidden: trained.head.hidden } },
    current: { version: current.version, metrics: currentMetrics },
  };
}

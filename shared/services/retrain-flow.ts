import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NotFoundError, ParseError } from '../errors.js';
import { renderMetricsPlot, type EvaluationReport } from '../evaluation/evaluate.js';
import { isHeldOut } from '../evaluation/split.js';
import { evaluateModel, type LabelledVector } from '../evaluation/evaluate.js';
import type { Logger } from '../logger.js';
import { loadHead, loadTextTower } from '../model/towers.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import type { GateDecision } from '../training/gate.js';
import type { EpochStats, FeedbackPair } from '../training/lit-trainer.js';
import { activateModel, type ActivationResult, type LifecycleDeps } from './model-lifecycle.js';

/**
 * What `imgsearch retrain` / `imgsearch eval` do on top of the libraries: train a candidate,
 * promote it only through the gate *and* with an index of its own (so search never points at a
 * model without vectors), evaluate any version on the user's own labelled images, and keep the
 * metrics plot the page shows up to date.
 */
/** The shape of jobs/retrain/retrain-job.ts `runRetraining` (shared/ may not import entry points). */
export type RetrainProgress =
  | { stage: 'load'; records: number }
  | { stage: 'train'; epoch: EpochStats }
  | { stage: 'evaluate'; model: string }
  | { stage: 'register'; version: string; promoted: boolean };
export interface RetrainResult {
  promoted: boolean;
  decision: GateDecision;
  candidate: { version: string; metrics: EvaluationReport; training: { history: EpochStats[]; bestEpoch: number; seconds: number; backend: string; trainedExamples: number; validationExamples: number; /** Hidden units of the trained head. */ hidden: number } };
  current: { version: string; metrics: EvaluationReport };
}
export type RetrainOptions = { promote?: boolean } & Record<string, unknown>;
export type RunRetraining = (
  ports: { features: FeatureStore; registry: ModelRegistry; feedback?: () => Promise<FeedbackPair[]>; logger?: Logger },
  options: RetrainOptions,
  onProgress: (p: RetrainProgress) => void,
) => Promise<RetrainResult>;

export interface RetrainFlowDeps extends LifecycleDeps {
  /** jobs/retrain/retrain-job.ts `runRetraining`. */
  runRetraining: RunRetraining;
  feedback?: () => Promise<FeedbackPair[]>;
  /** Folder where metrics.png is written (the page serves it); omit to skip the plot. */
  reportsDir?: string;
}

export type RetrainFlowProgress = RetrainProgress | { stage: 'reindex'; done: number } | { stage: 'plot'; file: string };

export interface RetrainFlowResult extends Omit<RetrainResult, 'promoted'> {
  promoted: boolean;
  /** The index the alias points at after promotion; null when the candidate lost. */
  index: ActivationResult | null;
  plot: string | null;
}

export const METRICS_PLOT_FILE = 'metrics.png';

export async function retrainAndActivate(deps: RetrainFlowDeps, options: RetrainOptions = {}, onProgress: (p: RetrainFlowProgress) => void = () => {}): Promise<RetrainFlowResult> {
  // The registry is promoted by activateModel, after the new index is filled; promoting first
  // would leave the active model without vectors while reindexing.
  const result = await deps.runRetraining({ features: deps.features, registry: deps.registry, feedback: deps.feedback, logger: deps.logger }, { ...options, promote: false }, onProgress);
  let index: ActivationResult | null = null;
  if (result.decision.promote) {
    index = await activateModel(deps, result.candidate.version, (done) => onProgress({ stage: 'reindex', done }));
  }
  const plot = deps.reportsDir ? await writeMetricsPlot(deps.registry, deps.reportsDir) : null;
  if (plot) onProgress({ stage: 'plot', file: plot });
  return { ...result, promoted: index !== null, index, plot };
}

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

/** Fewer labelled images than this make Recall@k mostly noise. */
export const MIN_LABELLED_FOR_EVAL = 20;

/**
 * Held-out metrics of one version on the user's labelled images: stored base vectors of its image
 * tower projected by its head; text metrics only when it has a text tower. Stored in the registry.
 */
function normalise(v: Float32Array): Float32Array {
  const inv = 1 / (Math.hypot(...v) || 1);
  return v.map((x) => x * inv);
}

/** Base model key of a version's image tower, as recorded on feature records (manifest name; LiT lineage may name the base version). */
function baseModelKeys(version: ModelVersion): Set<string> {
  const keys = new Set([version.manifest.name]);
  if (typeof version.lineage?.baseModel === 'string') keys.add(version.lineage.baseModel);
  return keys;
}

async function readBaseFeatures(store: FeatureStore, version: ModelVersion): Promise<FeatureRecord[]> {
  const keys = baseModelKeys(version);
  const out: FeatureRecord[] = [];
  for await (const batch of store.scan(2048)) for (const r of batch) if (keys.has(r.baseModel) && r.vector.length === version.manifest.image.dimension) out.push(r);
  return out;
}

/** A version's metrics on the split: its head (if any) on base vectors, its text tower (if any) on the labels. */
async function evaluateOn(registry: ModelRegistry, version: ModelVersion, held: FeatureRecord[], rest: FeatureRecord[], labels: string[]): Promise<EvaluationReport> {
  const m = version.manifest;
  const dir = m.head || m.text ? await registry.localPath(version.version) : '';
  const head = await loadHead(m, dir);
  const text = await loadTextTower(m, dir);
  try {
    const project = async (records: FeatureRecord[]): Promise<LabelledVector[]> => {
      const vectors = head ? (await head.apply(records.map((r) => r.vector))).map(normalise) : records.map((r) => r.vector);
      return records.map((r, i) => ({ id: r.id, vector: vectors[i]!, labels: r.labels }));
    };
    const labelVectors = text ? new Map((await text.embed(labels)).map((v, i) => [labels[i]!, normalise(v)])) : null;
    return await evaluateModel({ modelVersion: version.version, heldOut: await project(held), rest: await project(rest), labelVectors });
  } finally {
    await head?.close();
    await text?.close();
  }
}

export async function evaluateVersion(deps: Pick<RetrainFlowDeps, 'registry' | 'features' | 'logger' | 'reportsDir'>, versionId?: string, heldOutFraction?: number): Promise<EvaluationReport> {
  const version = versionId ? await deps.registry.get(versionId) : await deps.registry.active();
  if (!version) throw new NotFoundError(versionId ? `no model version ${versionId}; see \`imgsearch model list\`` : 'no active model: run `imgsearch ingest <dir>` first');
  const fromLineage = version.lineage?.heldOutFraction;
  const fraction = heldOutFraction ?? (typeof fromLineage === 'number' ? fromLineage : 0.1);
  const records = await readBaseFeatures(deps.features, version);
  const labelled = records.filter((r) => r.labels.length > 0);
  const held = labelled.filter((r) => isHeldOut(r.id, fraction));
  const heldIds = new Set(held.map((r) => r.id));
  const rest = records.filter((r) => !heldIds.has(r.id));
  if (labelled.length < MIN_LABELLED_FOR_EVAL || held.length === 0) {
    throw new ParseError(
      `evaluation needs at least ${MIN_LABELLED_FOR_EVAL} labelled images embedded by ${version.manifest.name} (found ${labelled.length}, ${held.length} held out): ` +
        'ingest images with a sidecar <name>.json {"labels": [...]} or try `imgsearch dataset fashion-mnist --out <dir> --limit 500`',
    );
  }
  const labels = [...new Set(labelled.flatMap((r) => r.labels))].sort();
  const report = await evaluateOn(deps.registry, version, held, rest, labels);
  await deps.registry.setMetrics(version.version, { ...(version.metrics ?? {}), ...report, evaluatedAt: new Date().toISOString() });
  if (deps.reportsDir) await writeMetricsPlot(deps.registry, deps.reportsDir);
  return report;
}

import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { NotFoundError, ParseError } from '../errors.js';
import { renderMetricsPlot, type EvaluationReport } from '../evaluation/evaluate.js';
import { isHeldOut } from '../evaluation/split.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { FeedbackPair } from '../training/lit-trainer.js';
import { baseModelOf, evaluateCurrent, readFeatures, runRetraining, type RetrainOptions, type RetrainProgress, type RetrainResult } from '../../jobs/retrain/retrain-job.js';
import { activateModel, type ActivationResult, type LifecycleDeps } from './model-lifecycle.js';

/**
 * What `imgsearch retrain` / `imgsearch eval` do on top of the libraries: train a candidate,
 * promote it only through the gate *and* with an index of its own (so search never points at a
 * model without vectors), evaluate any version on the user's own labelled images, and keep the
 * metrics plot the page shows up to date.
 */
export interface RetrainFlowDeps extends LifecycleDeps {
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
  const result = await runRetraining({ features: deps.features, registry: deps.registry, feedback: deps.feedback, logger: deps.logger }, { ...options, promote: false }, onProgress);
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
export async function evaluateVersion(deps: Pick<RetrainFlowDeps, 'registry' | 'features' | 'logger' | 'reportsDir'>, versionId?: string, heldOutFraction?: number): Promise<EvaluationReport> {
  const version = versionId ? await deps.registry.get(versionId) : await deps.registry.active();
  if (!version) throw new NotFoundError(versionId ? `no model version ${versionId}; see \`imgsearch model list\`` : 'no active model: run `imgsearch ingest <dir>` first');
  const fromLineage = version.lineage?.heldOutFraction;
  const fraction = heldOutFraction ?? (typeof fromLineage === 'number' ? fromLineage : 0.1);
  const records = await readFeatures(deps.features, version.manifest.image.dimension, baseModelOf(version), deps.logger, version.manifest.name);
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
  const report = await evaluateCurrent(deps.registry, version, held, rest, labels, deps.logger);
  await deps.registry.setMetrics(version.version, { ...(version.metrics ?? {}), ...report, evaluatedAt: new Date().toISOString() });
  if (deps.reportsDir) await writeMetricsPlot(deps.registry, deps.reportsDir);
  return report;
}

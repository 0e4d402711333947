import { availableParallelism } from 'node:os';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AppError, ParseError, errorMessage } from '../errors.js';
import type { EvaluationReport } from '../evaluation/evaluate.js';
import { silentLogger, type Logger } from '../logger.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { GateDecision } from '../training/gate.js';
import type { EpochStats, FeedbackPair } from '../training/lit-trainer.js';
import { litTrainOptionsSchema } from '../training/lit-options.js';
import { mulberry32 } from '../training/prng.js';
import { describeIssues, parseWith } from '../validation.js';
import type { ExperimentRun, ExperimentRunStore } from './experiment-runs.js';
import type { Activation } from './model-lifecycle.js';
import { dataSnapshot, readBaseFeatures, retrain, retrainOptionsSchema, writeMetricsPlot, type RetrainOptions, type RetrainResult } from './retrain.js';

/**
 * Hyperparameter search over the ONE retraining core (shared/services/retrain.ts → trainLit): each
 * trial is a `retrain()` run with sampled trainer options, no activation; every trial is recorded
 * as an experiment run (parameters, validation curve, held-out metrics, gate decision, data
 * snapshot, duration); the best trial's candidate goes live only if the gate that `retrain()`
 * applied to it (shared/training/gate.ts) said so, through the same {@link Activation}.
 *
 * - Search space: a JSON object of trainer options (keys of lit-options.ts or tunable retrain
 *   options) → `int`/`float` ranges (optionally log-scaled) or `categorical` choices (booleans
 *   and strings included). A new option of either schema becomes searchable with no change here.
 * - Samplers: seeded random search, and a univariate Tree-structured Parzen Estimator (Bergstra
 *   et al., "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011; the Optuna variant:
 *   independent parameters, adaptive Parzen bandwidths, a prior component). No npm package fits:
 *   the TPE implementations found are Python (Optuna, Hyperopt, NNI) and Rust crates (tpe, parzen);
 *   none on npm (README "Hyperparameter search").
 * - Early stopping of bad trials: the median stopping rule of Google Vizier (Golovin et al.,
 *   "Google Vizier: A Service for Black-Box Optimization", KDD 2017, §3.2.1) on the per-epoch
 *   internal-validation Recall@1 curve.
 * - Which trial wins: the best internal-validation Recall@1 (the split trainLit carves out of the
 *   training images), never the held-out split: the gate then compares the winner with the active
 *   model on held-out images no trial was chosen on.
 */

// ---------------------------------------------------------------- search space

/** Retrain options that define what trials are compared on, or name the run: never searched. */
const FIXED_RETRAIN_OPTIONS = new Set(['seed', 'margin', 'textMargin', 'heldOutFraction', 'version', 'codeVersion', 'training']);
/** Trainer options that fix the validation split or its size: never searched (`epochs` is a retrain option). */
const FIXED_TRAINER_OPTIONS = new Set(['seed', 'epochs', 'validationFraction', 'validationQueries', 'validationCorpus']);

const retrainShape = retrainOptionsSchema.shape as Record<string, z.ZodType>;
const trainerShape = litTrainOptionsSchema.shape as Record<string, z.ZodType>;

/** Options a search space may name: retrain-level first (they reach the trainer too), then the trainer's. */
export function searchableOptions(): string[] {
  const top = Object.keys(retrainShape).filter((k) => !FIXED_RETRAIN_OPTIONS.has(k));
  const trainer = Object.keys(trainerShape).filter((k) => !FIXED_TRAINER_OPTIONS.has(k) && !top.includes(k));
  return [...top, ...trainer];
}

const rangeSpec = <T extends 'int' | 'float'>(type: T) =>
  z.object({ type: z.literal(type), min: z.number(), max: z.number(), log: z.boolean().default(false) }).strict();
const paramSpecSchema = z.discriminatedUnion('type', [
  rangeSpec('int'),
  rangeSpec('float'),
  z
    .object({
      type: z.literal('categorical'),
      values: z
        .array(z.union([z.string(), z.number(), z.boolean()]))
        .min(1)
        .max(64),
    })
    .strict(),
]);
export type ParamSpec = z.output<typeof paramSpecSchema>;

/** A declared search space: option name → range or choices. */
export const searchSpaceSchema = z.record(z.string(), paramSpecSchema).superRefine((space, ctx) => {
  const known = searchableOptions();
  if (Object.keys(space).length === 0) ctx.addIssue({ code: 'custom', message: 'declare at least one option to search' });
  for (const [key, spec] of Object.entries(space)) {
    if (FIXED_RETRAIN_OPTIONS.has(key) || FIXED_TRAINER_OPTIONS.has(key)) {
      if (key !== 'epochs') {
        ctx.addIssue({ code: 'custom', path: [key], message: `${key} cannot be searched: it changes what trials are compared on (or names the run)` });
        continue;
      }
    }
    const field = retrainShape[key] ?? trainerShape[key];
    if (!field) {
      ctx.addIssue({
        code: 'custom',
        path: [key],
        message: `${JSON.stringify(key)} is not a trainer option; options that can be searched: ${known.join(', ')}`,
      });
      continue;
    }
    if (spec.type !== 'categorical') {
      if (!(spec.min < spec.max)) ctx.addIssue({ code: 'custom', path: [key], message: `min ${spec.min} must be below max ${spec.max}` });
      if (spec.log && !(spec.min > 0)) ctx.addIssue({ code: 'custom', path: [key], message: `a log range needs min above 0 (got ${spec.min})` });
      if (spec.type === 'int' && !(Number.isInteger(spec.min) && Number.isInteger(spec.max)))
        ctx.addIssue({ code: 'custom', path: [key], message: 'an int range needs whole-number bounds' });
    }
    const probes = spec.type === 'categorical' ? spec.values : [spec.min, spec.max];
    for (const value of probes) {
      const parsed = field.safeParse(value);
      if (!parsed.success)
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `${JSON.stringify(value)} is not a valid ${key}: ${describeIssues(parsed.error, { root: key })}`,
        });
    }
  }
});
export type SearchSpace = Record<string, ParamSpec>;
export type TrialParams = Record<string, string | number | boolean>;

/** Parses a declared space (e.g. the JSON of `imgsearch tune --space file`); errors name the option and the fix. */
export function parseSearchSpace(input: unknown, source = 'search space'): SearchSpace {
  return parseWith(searchSpaceSchema, input, `invalid ${source}`, { root: 'space' });
}

/**
 * What `imgsearch tune` searches without `--space`: the knobs BENCHMARKS.md shows the result
 * depends on (head width, learning rate, temperature, the image↔text loss weight, batch size).
 */
export const DEFAULT_SEARCH_SPACE: SearchSpace = parseSearchSpace({
  hidden: { type: 'int', min: 128, max: 1024, log: true },
  learningRate: { type: 'float', min: 3e-4, max: 3e-3, log: true },
  temperature: { type: 'float', min: 0.05, max: 0.2, log: true },
  imageTextWeight: { type: 'float', min: 0.25, max: 2 },
  batchSize: { type: 'categorical', values: [128, 256, 512] },
});

/** Sampled parameters → retrain options: retrain-level keys at the top, trainer keys under `training`. */
export function trialRetrainOptions(params: TrialParams): Pick<RetrainOptions, 'training'> & Record<string, unknown> {
  const top: Record<string, unknown> = {};
  const training: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(params)) {
    if (key in retrainShape && !FIXED_RETRAIN_OPTIONS.has(key)) top[key] = value;
    else training[key] = value;
  }
  return { ...top, training };
}

/**
 * The defaults `imgsearch retrain` trains with, restricted to the space — or null when one lies
 * outside it. Trial 1 runs them, so the search never ends below the default on validation.
 */
export function defaultTrialParams(space: SearchSpace): TrialParams | null {
  const params: TrialParams = {};
  for (const [key, spec] of Object.entries(space)) {
    const field = retrainShape[key] ?? trainerShape[key];
    const parsed = field?.safeParse(undefined);
    if (!parsed?.success || parsed.data === undefined) return null;
    const value = parsed.data as string | number | boolean;
    if (spec.type === 'categorical' ? !spec.values.includes(value) : typeof value !== 'number' || value < spec.min || value > spec.max) return null;
    params[key] = value;
  }
  return params;
}

// ---------------------------------------------------------------- samplers

/** A finished (or stopped) trial as a sampler sees it: higher `value` is better. */
export interface Observation {
  params: TrialParams;
  value: number;
}

export interface Sampler {
  readonly name: 'random' | 'tpe';
  suggest(space: SearchSpace, observations: readonly Observation[], random: () => number): TrialParams;
}

/** A numeric range in the coordinates it is sampled in (log for log ranges; ints widened by half a step). */
function internalRange(spec: Extract<ParamSpec, { type: 'int' | 'float' }>): { lo: number; hi: number } {
  const widen = spec.type === 'int' && !spec.log ? 0.5 : 0;
  const f = spec.log ? Math.log : (x: number) => x;
  return { lo: f(spec.min - widen), hi: f(spec.max + widen) };
}

function toInternal(spec: Extract<ParamSpec, { type: 'int' | 'float' }>, value: number): number {
  return spec.log ? Math.log(value) : value;
}

function fromInternal(spec: Extract<ParamSpec, { type: 'int' | 'float' }>, u: number): number {
  const x = spec.log ? Math.exp(u) : u;
  const v = spec.type === 'int' ? Math.round(x) : x;
  return Math.min(spec.max, Math.max(spec.min, v));
}

function uniformValue(spec: ParamSpec, random: () => number): string | number | boolean {
  if (spec.type === 'categorical') return spec.values[Math.floor(random() * spec.values.length)]!;
  const { lo, hi } = internalRange(spec);
  return fromInternal(spec, lo + random() * (hi - lo));
}

/** Independent uniform draws (log-uniform for log ranges), in the space's key order. */
export function randomSampler(): Sampler {
  return {
    name: 'random',
    suggest: (space, _observations, random) => Object.fromEntries(Object.entries(space).map(([k, spec]) => [k, uniformValue(spec, random)])),
  };
}

export interface TpeOptions {
  /** Random trials before the model is used. */
  startupTrials?: number;
  /** Share of observations counted as good. */
  gamma?: number;
  /** Draws from the good density scored by l(x)/g(x) per parameter. */
  candidates?: number;
}

/**
 * Univariate TPE: observations are split into the best ⌈γ·n⌉ ("good") and the rest; per parameter a
 * Parzen density l(x) of the good values and g(x) of the others (truncated Gaussians in the sampling
 * coordinates, one per observation plus a wide prior; categorical: smoothed frequencies); of
 * `candidates` draws from l, the one with the highest l(x)/g(x) is taken.
 */
export function tpeSampler(options: TpeOptions = {}): Sampler {
  const startup = options.startupTrials ?? 4;
  const gamma = options.gamma ?? 0.25;
  const candidates = options.candidates ?? 24;
  return {
    name: 'tpe',
    suggest(space, observations, random) {
      if (observations.length < startup) return randomSampler().suggest(space, observations, random);
      const sorted = [...observations].sort((a, b) => b.value - a.value);
      const nGood = Math.max(1, Math.ceil(gamma * sorted.length));
      const good = sorted.slice(0, nGood).map((o) => o.params);
      const bad = sorted.slice(nGood).map((o) => o.params);
      const out: TrialParams = {};
      for (const [key, spec] of Object.entries(space)) {
        if (spec.type === 'categorical') {
          const l = categoricalDensity(
            spec.values,
            good.map((p) => p[key]),
          );
          const g = categoricalDensity(
            spec.values,
            bad.map((p) => p[key]),
          );
          let best = { score: -Infinity, value: spec.values[0]! };
          for (let c = 0; c < candidates; c++) {
            const i = drawIndex(l, random);
            const score = Math.log(l[i]!) - Math.log(g[i]!);
            if (score > best.score) best = { score, value: spec.values[i]! };
          }
          out[key] = best.value;
        } else {
          const { lo, hi } = internalRange(spec);
          const l = parzen(
            good.flatMap((p) => (typeof p[key] === 'number' ? [toInternal(spec, p[key])] : [])),
            lo,
            hi,
          );
          const g = parzen(
            bad.flatMap((p) => (typeof p[key] === 'number' ? [toInternal(spec, p[key])] : [])),
            lo,
            hi,
          );
          let best = { score: -Infinity, u: (lo + hi) / 2 };
          for (let c = 0; c < candidates; c++) {
            const u = l.sample(random);
            const score = Math.log(l.density(u)) - Math.log(g.density(u));
            if (score > best.score) best = { score, u };
          }
          out[key] = fromInternal(spec, best.u);
        }
      }
      return out;
    },
  };
}

function categoricalDensity(values: readonly unknown[], seen: unknown[]): number[] {
  const counts = values.map((v) => 1 + seen.filter((s) => s === v).length);
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((c) => c / total);
}

function drawIndex(weights: number[], random: () => number): number {
  let r = random();
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r < 0) return i;
  }
  return weights.length - 1;
}

/** A mixture of Gaussians truncated to [lo, hi]: one per point (adaptive bandwidth) plus a prior spanning the range. */
function parzen(points: number[], lo: number, hi: number) {
  const range = hi - lo;
  const mus = [...points, (lo + hi) / 2];
  const order = [...points].sort((a, b) => a - b);
  const minSigma = range / Math.min(100, 1 + points.length);
  // Optuna's rule: the larger gap to a neighbour (range ends included), clipped to [range/min(100, n+1), range].
  const sigmas = points
    .map((p) => {
      const i = order.indexOf(p);
      const left = p - (i > 0 ? order[i - 1]! : lo);
      const right = (i < order.length - 1 ? order[i + 1]! : hi) - p;
      return Math.min(range, Math.max(minSigma, left, right));
    })
    .concat(range);
  const mass = mus.map((mu, i) => normalCdf((hi - mu) / sigmas[i]!) - normalCdf((lo - mu) / sigmas[i]!));
  const w = 1 / mus.length;
  return {
    density(u: number): number {
      let sum = 0;
      for (let i = 0; i < mus.length; i++) {
        const z = (u - mus[i]!) / sigmas[i]!;
        sum += (w * Math.exp(-0.5 * z * z)) / (sigmas[i]! * Math.sqrt(2 * Math.PI) * Math.max(mass[i]!, 1e-12));
      }
      return Math.max(sum, 1e-300);
    },
    sample(random: () => number): number {
      const i = Math.min(mus.length - 1, Math.floor(random() * mus.length));
      for (let tries = 0; tries < 32; tries++) {
        const u = mus[i]! + sigmas[i]! * gaussian(random);
        if (u >= lo && u <= hi) return u;
      }
      return Math.min(hi, Math.max(lo, mus[i]!));
    },
  };
}

/** Box–Muller on the seeded source. */
function gaussian(random: () => number): number {
  const u = Math.max(random(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** Φ(x) through erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7). */
function normalCdf(x: number): number {
  const z = Math.abs(x) / Math.SQRT2;
  const t = 1 / (1 + 0.3275911 * z);
  const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
  return 0.5 * (1 + (x >= 0 ? erf : -erf));
}

// ---------------------------------------------------------------- early stopping

export interface StoppingOptions {
  /** Epochs every trial runs before it may be stopped. */
  graceEpochs: number;
  /** Finished trials needed before any is stopped. */
  minTrials: number;
}

/**
 * Vizier's median stopping rule: a trial is stopped at epoch s when its best objective so far is
 * strictly below the median, over finished trials, of their running averages up to s (a trial
 * that finished sooner counts with its whole curve). Returns why, or null to go on.
 */
export function medianStoppingReason(curve: readonly (number | null)[], finished: readonly (readonly number[])[], options: StoppingOptions): string | null {
  const s = curve.length;
  const values = curve.filter((v): v is number => v !== null);
  if (s < options.graceEpochs || values.length === 0 || finished.length < options.minTrials) return null;
  const averages = finished
    .filter((c) => c.length > 0)
    .map((c) => {
      const upTo = c.slice(0, s);
      return upTo.reduce((a, b) => a + b, 0) / upTo.length;
    })
    .sort((a, b) => a - b);
  if (averages.length < options.minTrials) return null;
  const mid = averages.length / 2;
  const median = averages.length % 2 ? averages[Math.floor(mid)]! : (averages[mid - 1]! + averages[mid]!) / 2;
  const best = Math.max(...values);
  return best < median ? `best validation recall@1 ${best.toFixed(4)} < median ${median.toFixed(4)} at epoch ${s} of ${averages.length} finished trials` : null;
}

// ---------------------------------------------------------------- the trial loop

export const tuneOptionsSchema = z
  .object({
    trials: z.number().int().min(1).max(1000).default(8),
    /** Trials at once; at most the machine's cores (each trial keeps one core busy). */
    parallel: z.number().int().min(1).default(1),
    /** Seeds the sampler and every trial's trainer (same seed → same validation split, a fair comparison). */
    seed: z.number().int().min(0).default(42),
    sampler: z.enum(['tpe', 'random']).default('tpe'),
    /** Random trials before TPE models the results (trial 1 runs the defaults). */
    startupTrials: z.number().int().min(1).default(4),
    space: searchSpaceSchema.optional(),
    stopping: z.enum(['median', 'none']).default('median'),
    graceEpochs: z.number().int().min(1).default(3),
    minTrials: z.number().int().min(1).default(3),
    /** Passed to every trial's `retrain()`: the gate's margin and the held-out share. */
    margin: z.number().min(0).max(1).default(0.005),
    heldOutFraction: z.number().gt(0).lt(1).default(0.1),
    /** Retrain options every trial shares (e.g. `epochs` when it is not searched). */
    fixed: z.record(z.string(), z.unknown()).default({}),
  })
  .strict();
export type TuneOptions = z.input<typeof tuneOptionsSchema>;

/** A trial as a runner receives it. */
export interface TrialSpec {
  trial: number;
  /** Version its candidate is registered as. */
  version: string;
  params: TrialParams;
  options: RetrainOptions;
}

/** The shape `retrain()` hands back, minus what trials never carry (activation, plot). */
export type TrialResult = Omit<RetrainResult, 'activation' | 'plot'>;

/**
 * Runs one trial: `retrain()` on the loaded data with the trial's options and no activation.
 * `shouldStop` is asked after each epoch; when it answers true the trial throws {@link TrialStoppedError}.
 */
export interface TrialRunner {
  run(spec: TrialSpec, hooks: { onEpoch(stats: EpochStats): void; shouldStop(): boolean }): Promise<TrialResult>;
  close?(): Promise<void>;
}

/** Thrown out of a trial the stopping rule ended (after `onEpoch`); nothing is registered. */
export class TrialStoppedError extends AppError {
  constructor(public readonly epoch: number) {
    super(`trial stopped early at epoch ${epoch}`);
    this.name = 'TrialStoppedError';
  }
}

/**
 * A FeatureStore over records already read (every trial trains on the same snapshot). Writes — a
 * trial that fine-tunes tower blocks stores its tower's base vectors under its own version — go to
 * `writes` (the real store), never into the snapshot.
 */
export class SnapshotFeatureStore implements FeatureStore {
  constructor(
    private readonly records: readonly FeatureRecord[],
    private readonly writes?: Pick<FeatureStore, 'put' | 'delete'>,
  ) {}
  async put(records: FeatureRecord[]): Promise<void> {
    if (!this.writes) throw new AppError('a tuning snapshot is read-only');
    await this.writes.put(records);
  }
  async delete(items: { id: string; generation: string }[]): Promise<void> {
    if (!this.writes) throw new AppError('a tuning snapshot is read-only');
    await this.writes.delete(items);
  }
  async get(id: string): Promise<FeatureRecord | null> {
    return this.records.find((r) => r.id === id) ?? null;
  }
  async count(): Promise<number> {
    return this.records.length;
  }
  async *scan(batchSize = 2048): AsyncIterable<FeatureRecord[]> {
    for (let i = 0; i < this.records.length; i += batchSize) yield this.records.slice(i, i + batchSize);
  }
}

/** Trials one after the other in this process: `retrain()` with the snapshot, stopping by throwing from its progress callback. */
export function inProcessTrialRunner(deps: {
  records: readonly FeatureRecord[];
  feedback: FeedbackPair[];
  registry: ModelRegistry;
  /** Where a trial's writes go (the real feature store). */
  store?: Pick<FeatureStore, 'put' | 'delete'>;
  logger?: Logger;
}): TrialRunner {
  const features = new SnapshotFeatureStore(deps.records, deps.store);
  return {
    async run(spec, hooks) {
      const {
        activation: _a,
        plot: _p,
        ...result
      } = await retrain({ features, registry: deps.registry, feedback: async () => deps.feedback, logger: deps.logger ?? silentLogger }, spec.options, (p) => {
        if (p.stage !== 'train') return;
        hooks.onEpoch(p.epoch);
        if (hooks.shouldStop()) throw new TrialStoppedError(p.epoch.epoch);
      });
      return result;
    },
  };
}

/** Mean validation recall@1 over a run's epochs: a steadier reading than its best epoch alone. */
function curveMean(run: ExperimentRun): number {
  const values = run.curve.map((e) => e.validationRecallAt1).filter((v): v is number => v !== null);
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : -Infinity;
}

/**
 * Whether run `a` beats `b`: higher objective (validation recall@1 at the epoch kept); on a tie
 * (a validation split of a few hundred images has coarse steps) the higher mean over the curve;
 * then the earlier trial (the defaults run first).
 */
function ranksAbove(a: ExperimentRun, b: ExperimentRun): boolean {
  const d = a.objective!.value - b.objective!.value;
  if (Math.abs(d) > 1e-12) return d > 0;
  const m = curveMean(a) - curveMean(b);
  if (Math.abs(m) > 1e-12) return m > 0;
  return a.trial < b.trial;
}

/**
 * The end of a study, local (`tune`) or on Vertex AI (jobs/retrain `--tune`): the best completed
 * run ({@link ranksAbove}) keeps its registered candidate and the others' are removed (their runs
 * keep every figure); the best goes live through `activate` only if the gate `retrain()` applied to
 * it (stored in the run) let it. There is no other promotion path.
 */
export async function finishStudy<A = unknown>(
  deps: { registry: ModelRegistry; runs: ExperimentRunStore; activate?: Activation<A>; logger?: Logger },
  runs: ExperimentRun[],
  onProgress: (p: TuneProgress) => void = () => {},
): Promise<{ best: ExperimentRun | null; activation: A | null }> {
  const logger = deps.logger ?? silentLogger;
  const completed = runs.filter((r) => r.status === 'completed' && r.objective !== null);
  const best = completed.reduce<ExperimentRun | null>((b, r) => (b === null || ranksAbove(r, b) ? r : b), null);
  for (const r of completed) {
    if (r === best || !r.modelVersion) continue;
    try {
      await deps.registry.remove(r.modelVersion);
      r.modelVersion = null;
      await deps.runs.put(r);
    } catch (err) {
      logger.warn({ err, version: r.modelVersion }, 'could not remove a losing trial candidate; `imgsearch model prune` will');
    }
  }
  if (!best) {
    logger.warn({ runs: runs.length }, 'no trial finished: nothing to promote');
    return { best: null, activation: null };
  }
  let activation: A | null = null;
  if (best.gate?.promote && best.modelVersion && deps.activate) {
    onProgress({ stage: 'activate', version: best.modelVersion });
    activation = await deps.activate(best.modelVersion, (done) => onProgress({ stage: 'reindex', done }));
    best.promoted = true;
    await deps.runs.put(best);
  }
  logger.info({ study: best.study, best: best.id, objective: best.objective, promoted: best.promoted, reasons: best.gate?.reasons }, 'study finished');
  return { best, activation };
}

export interface TuneDeps<A = unknown> {
  features: FeatureStore;
  registry: ModelRegistry;
  runs: ExperimentRunStore;
  feedback?: () => Promise<FeedbackPair[]>;
  /** How the winner goes live when the gate lets it; omit to only register it. */
  activate?: Activation<A>;
  logger?: Logger;
  reportsDir?: string;
  /**
   * Runs trials; default: one at a time in this process. `--parallel` locally passes a runner of
   * worker threads (shared/services/tuning-workers.ts), each calling `retrain()` too.
   */
  runner?: (setup: {
    records: readonly FeatureRecord[];
    feedback: FeedbackPair[];
    registry: ModelRegistry;
    store: Pick<FeatureStore, 'put' | 'delete'>;
    logger: Logger;
    parallel: number;
  }) => TrialRunner;
  /** Cores available (default: os.availableParallelism()). */
  cores?: number;
  now?: () => Date;
}

export type TuneProgress =
  | { stage: 'load'; records: number; study: string }
  | { stage: 'trial-start'; trial: number; params: TrialParams }
  | { stage: 'epoch'; trial: number; epoch: EpochStats }
  | { stage: 'trial-end'; run: ExperimentRun }
  | { stage: 'activate'; version: string }
  | { stage: 'reindex'; done: number };

export interface TuneResult<A = unknown> {
  study: string;
  sampler: Sampler['name'];
  parallel: number;
  space: SearchSpace;
  runs: ExperimentRun[];
  /** The trial chosen (best validation recall@1), or null when none finished. */
  best: ExperimentRun | null;
  /** The gate's decision on the best trial's candidate (null when none finished). */
  decision: GateDecision | null;
  promoted: boolean;
  current: { version: string; metrics: EvaluationReport } | null;
  activation: A | null;
  seconds: number;
}

export async function tune<A = unknown>(
  deps: TuneDeps<A>,
  optionsInput: TuneOptions = {},
  onProgress: (p: TuneProgress) => void = () => {},
): Promise<TuneResult<A>> {
  const options = parseWith(tuneOptionsSchema, optionsInput, 'invalid tuning options', { root: 'options' });
  const cores = deps.cores ?? availableParallelism();
  if (options.parallel > cores) {
    throw new ParseError(`parallel ${options.parallel} exceeds the ${cores} cores of this machine: each trial keeps a core busy; use at most ${cores}`);
  }
  const logger = deps.logger ?? silentLogger;
  const now = deps.now ?? (() => new Date());
  const started = performance.now();
  const space = options.space ?? DEFAULT_SEARCH_SPACE;
  const current = await deps.registry.active();
  if (!current) throw new ParseError('No active model in the registry: ingest images with the default model before tuning');

  // One snapshot for every trial: what they are compared on cannot move under them.
  const records: FeatureRecord[] = [];
  for await (const batch of deps.features.scan(2048)) records.push(...batch);
  const feedback = (await deps.feedback?.()) ?? [];
  const snapshot = dataSnapshot(await readBaseFeatures(new SnapshotFeatureStore(records), current, logger));
  const stamp = now().toISOString().replace(/[-:T]/g, '').slice(0, 14);
  const study = `tune-${stamp}-${randomBytes(3).toString('hex')}`;
  onProgress({ stage: 'load', records: records.length, study });
  logger.info({ study, records: records.length, trials: options.trials, parallel: options.parallel, sampler: options.sampler, space }, 'tuning');

  const runner = (deps.runner ?? inProcessTrialRunner)({
    records,
    feedback,
    registry: deps.registry,
    store: deps.features,
    logger,
    parallel: options.parallel,
  });
  const sampler = options.sampler === 'tpe' ? tpeSampler({ startupTrials: options.startupTrials }) : randomSampler();
  const random = mulberry32(options.seed);
  const defaults = defaultTrialParams(space);
  const observations: Observation[] = [];
  const finishedCurves: number[][] = [];
  const runs: ExperimentRun[] = [];
  const results = new Map<string, TrialResult>();
  let firstError: unknown = null;

  const runTrial = async (trial: number): Promise<void> => {
    const params = trial === 1 && defaults ? defaults : sampler.suggest(space, observations, random);
    const id = `${study}-t${trial}`;
    const version = `${current.manifest.name}-${id}`;
    const spec: TrialSpec = {
      trial,
      version,
      params,
      options: {
        ...options.fixed,
        ...trialRetrainOptions(params),
        seed: options.seed,
        margin: options.margin,
        heldOutFraction: options.heldOutFraction,
        version,
        codeVersion: `lit-trainer-1+${study}`,
      },
    };
    const run: ExperimentRun = {
      id,
      study,
      trial,
      status: 'running',
      params,
      curve: [],
      objective: null,
      heldOut: null,
      gate: null,
      modelVersion: null,
      promoted: false,
      dataSnapshot: snapshot,
      parentModel: current.version,
      seed: options.seed,
      startedAt: now().toISOString(),
      finishedAt: null,
      seconds: null,
      reason: null,
    };
    await deps.runs.put(run);
    onProgress({ stage: 'trial-start', trial, params });
    const t0 = performance.now();
    // The running trial's curve is saved after every epoch (`imgsearch runs show` during a long
    // tune), one write after another; a failed save is logged, the trial goes on.
    let saving: Promise<void> = Promise.resolve();
    const saveProgress = () => {
      const snapshot: ExperimentRun = { ...run, curve: [...run.curve] };
      saving = saving
        .then(() => deps.runs.put(snapshot))
        .catch((err: unknown) => logger.warn({ err, trial }, 'could not save the running trial’s curve; it is saved when the trial ends'));
    };
    try {
      const result = await runner.run(spec, {
        onEpoch: (epoch) => {
          run.curve.push(epoch);
          saveProgress();
          onProgress({ stage: 'epoch', trial, epoch });
        },
        shouldStop: () =>
          options.stopping === 'median' &&
          medianStoppingReason(
            run.curve.map((e) => e.validationRecallAt1),
            finishedCurves,
            options,
          ) !== null,
      });
      completeRun(run, result);
      const h = result.candidate.training.history;
      results.set(id, result);
      const values = h.map((e) => e.validationRecallAt1).filter((v): v is number => v !== null);
      if (values.length > 0) finishedCurves.push(values);
      observations.push({ params, value: run.objective!.value });
    } catch (err) {
      if (err instanceof TrialStoppedError) {
        run.status = 'stopped';
        run.reason = medianStoppingReason(
          run.curve.map((e) => e.validationRecallAt1),
          finishedCurves,
          options,
        );
        const values = run.curve.map((e) => e.validationRecallAt1).filter((v): v is number => v !== null);
        // A stopped trial tells the sampler where not to look: its best so far counts as its value.
        if (values.length > 0) observations.push({ params, value: Math.max(...values) });
      } else {
        firstError ??= err;
        run.status = 'failed';
        run.reason = errorMessage(err);
        logger.error({ err, trial, params }, 'tuning trial failed');
      }
    }
    run.finishedAt = now().toISOString();
    run.seconds = (performance.now() - t0) / 1000;
    runs.push(run);
    await saving; // the last progress save never lands after the final record
    await deps.runs.put(run);
    onProgress({ stage: 'trial-end', run });
  };

  try {
    const running = new Set<Promise<void>>();
    let next = 1;
    while (next <= options.trials || running.size > 0) {
      while (running.size < options.parallel && next <= options.trials) {
        const p: Promise<void> = runTrial(next++).finally(() => running.delete(p));
        running.add(p);
      }
      await Promise.race(running);
      // A data problem fails every trial the same way at once: stop instead of repeating it.
      if (firstError && runs.every((r) => r.status === 'failed') && runs.length >= Math.min(options.parallel, options.trials)) {
        await Promise.allSettled(running);
        throw firstError;
      }
    }
  } finally {
    await runner.close?.();
  }

  runs.sort((a, b) => a.trial - b.trial);
  if (!runs.some((r) => r.status === 'completed') && firstError && runs.every((r) => r.status !== 'stopped')) throw firstError;
  const { best, activation } = await finishStudy<A>(deps, runs, onProgress);
  if (!best) {
    return {
      study,
      sampler: sampler.name,
      parallel: options.parallel,
      space,
      runs,
      best: null,
      decision: null,
      promoted: false,
      current: null,
      activation: null,
      seconds: (performance.now() - started) / 1000,
    };
  }
  const winner = results.get(best.id)!;
  if (deps.reportsDir) await writeMetricsPlot(deps.registry, deps.reportsDir);
  return {
    study,
    sampler: sampler.name,
    parallel: options.parallel,
    space,
    runs,
    best,
    decision: winner.decision,
    promoted: best.promoted,
    current: winner.current,
    activation,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------- Vertex AI hyperparameter tuning

/**
 * The metric tag trials report and the study maximises. Reported the way Vertex AI expects from a
 * custom container ("Create a hyperparameter tuning job", cloud.google.com/vertex-ai/docs/training/
 * using-hyperparameter-tuning: hyperparameters arrive as `--name=value` arguments; metrics go
 * through the cloudml-hypertune convention — JSON lines in the file named by
 * CLOUD_ML_HP_METRIC_FILE, default /tmp/hypertune/output.metrics).
 */
export const HYPERTUNE_METRIC = 'validation_recall_at_1';

/**
 * The cloudml-hypertune reporter, in TypeScript: every report rewrites the file with the last 100
 * entries, one JSON object per line `{"<tag>": "<value>", "global_step": "<n>", "timestamp": <s>,
 * "trial": "<CLOUD_ML_TRIAL_ID>"}` (values as strings, keys sorted, as the Python library writes).
 */
export class HypertuneReporter {
  private readonly entries: Record<string, string | number>[] = [];
  readonly file: string;
  readonly trial: string;

  constructor(
    env: NodeJS.ProcessEnv = process.env,
    private readonly now: () => number = () => Date.now() / 1000,
  ) {
    this.file = env.CLOUD_ML_HP_METRIC_FILE || '/tmp/hypertune/output.metrics';
    this.trial = env.CLOUD_ML_TRIAL_ID ?? '0';
  }

  async report(tag: string, value: number, step: number): Promise<void> {
    const { mkdir, writeFile } = await import('node:fs/promises');
    const path = await import('node:path');
    this.entries.push({ [tag]: String(value), global_step: String(Math.trunc(step)), timestamp: this.now(), trial: String(this.trial) });
    if (this.entries.length > 100) this.entries.shift();
    const sorted = (e: Record<string, string | number>) => Object.fromEntries(Object.entries(e).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    await mkdir(path.dirname(this.file), { recursive: true });
    await writeFile(this.file, this.entries.map((e) => `${JSON.stringify(sorted(e))}\n`).join(''));
  }
}

/** A parameter of a Vertex AI StudySpec (aiplatform v1 `StudySpec.ParameterSpec`), as plain JSON. */
export type VertexParameterSpec = { parameterId: string; scaleType?: 'UNIT_LINEAR_SCALE' | 'UNIT_LOG_SCALE' } & (
  | { integerValueSpec: { minValue: string; maxValue: string } }
  | { doubleValueSpec: { minValue: number; maxValue: number } }
  | { discreteValueSpec: { values: number[] } }
  | { categoricalValueSpec: { values: string[] } }
);

/**
 * The search space as a Vertex AI StudySpec: ranges keep their scale, numeric choices become a
 * discrete spec, other choices (booleans, strings) a categorical one; the metric is maximised and
 * Vertex AI's median stopping rule ends poor trials on the per-epoch reports.
 */
export function vertexStudySpec(space: SearchSpace, algorithm: 'ALGORITHM_UNSPECIFIED' | 'RANDOM_SEARCH' = 'ALGORITHM_UNSPECIFIED') {
  const parameters: VertexParameterSpec[] = Object.entries(space).map(([parameterId, spec]) => {
    if (spec.type === 'categorical') {
      return spec.values.every((v) => typeof v === 'number')
        ? { parameterId, discreteValueSpec: { values: [...(spec.values as number[])].sort((a, b) => a - b) } }
        : { parameterId, categoricalValueSpec: { values: spec.values.map(String) } };
    }
    const scaleType = spec.log ? 'UNIT_LOG_SCALE' : 'UNIT_LINEAR_SCALE';
    return spec.type === 'int'
      ? { parameterId, scaleType, integerValueSpec: { minValue: String(spec.min), maxValue: String(spec.max) } }
      : { parameterId, scaleType, doubleValueSpec: { minValue: spec.min, maxValue: spec.max } };
  });
  return {
    metrics: [{ metricId: HYPERTUNE_METRIC, goal: 'MAXIMIZE' as const }],
    parameters,
    algorithm,
    measurementSelectionType: 'LAST_MEASUREMENT' as const,
    medianAutomatedStoppingSpec: { useElapsedDuration: false },
  };
}

/** `--name=value` arguments of a Vertex AI trial → parameters of the space (typed as the space declares; unknown names refused). */
export function trialParamsFromArgs(space: SearchSpace, values: Record<string, string>): TrialParams {
  const params: TrialParams = {};
  for (const [key, raw] of Object.entries(values)) {
    const spec = space[key];
    if (!spec) throw new ParseError(`trial argument --${key} is not in the search space (${Object.keys(space).join(', ')})`);
    let value: string | number | boolean;
    if (spec.type === 'categorical') {
      const found = spec.values.find((v) => String(v) === raw);
      if (found === undefined) throw new ParseError(`trial argument --${key}=${raw} is not one of ${spec.values.map(String).join(', ')}`);
      value = found;
    } else {
      value = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(value) || value < spec.min || value > spec.max || (spec.type === 'int' && !Number.isInteger(value)))
        throw new ParseError(`trial argument --${key}=${raw} is outside ${spec.min}..${spec.max}${spec.type === 'int' ? ' (whole numbers)' : ''}`);
    }
    params[key] = value;
  }
  const missing = Object.keys(space).filter((k) => !(k in params));
  if (missing.length > 0) throw new ParseError(`trial arguments miss ${missing.map((k) => `--${k}`).join(', ')}`);
  return params;
}

/**
 * One trial of a Vertex AI study (jobs/retrain `--trial-of=<study>`): `retrain()` with the trial's
 * parameters and no activation, its validation Recall@1 reported after every epoch and at the end
 * (the epoch kept), and its experiment run recorded — what {@link finishStudy} chooses from.
 */
export async function runStudyTrial(
  deps: {
    features: FeatureStore;
    registry: ModelRegistry;
    runs: ExperimentRunStore;
    feedback?: () => Promise<FeedbackPair[]>;
    logger?: Logger;
    reporter: Pick<HypertuneReporter, 'report'>;
    now?: () => Date;
  },
  input: { study: string; trial: number; params: TrialParams; seed: number; margin: number; heldOutFraction: number; fixed?: Record<string, unknown> },
): Promise<ExperimentRun> {
  const logger = deps.logger ?? silentLogger;
  const now = deps.now ?? (() => new Date());
  const current = await deps.registry.active();
  if (!current) throw new ParseError('No active model in the registry: ingest images with the default model before tuning');
  const records: FeatureRecord[] = [];
  for await (const batch of deps.features.scan(2048)) records.push(...batch);
  const feedback = (await deps.feedback?.()) ?? [];
  const id = `${input.study}-t${input.trial}`;
  const run: ExperimentRun = {
    id,
    study: input.study,
    trial: input.trial,
    status: 'running',
    params: input.params,
    curve: [],
    objective: null,
    heldOut: null,
    gate: null,
    modelVersion: null,
    promoted: false,
    dataSnapshot: dataSnapshot(await readBaseFeatures(new SnapshotFeatureStore(records), current, logger)),
    parentModel: current.version,
    seed: input.seed,
    startedAt: now().toISOString(),
    finishedAt: null,
    seconds: null,
    reason: null,
  };
  await deps.runs.put(run);
  const t0 = performance.now();
  const pending: Promise<void>[] = [];
  try {
    const version = `${current.manifest.name}-${id}`;
    const result = await inProcessTrialRunner({ records, feedback, registry: deps.registry, store: deps.features, logger }).run(
      {
        trial: input.trial,
        version,
        params: input.params,
        options: {
          ...input.fixed,
          ...trialRetrainOptions(input.params),
          seed: input.seed,
          margin: input.margin,
          heldOutFraction: input.heldOutFraction,
          version,
          codeVersion: `lit-trainer-1+${input.study}`,
        },
      },
      {
        onEpoch: (e) => {
          run.curve.push(e);
          if (e.validationRecallAt1 !== null) pending.push(deps.reporter.report(HYPERTUNE_METRIC, e.validationRecallAt1, e.epoch));
        },
        // Vertex AI stops poor trials itself (medianAutomatedStoppingSpec), by ending the container.
        shouldStop: () => false,
      },
    );
    completeRun(run, result);
    await Promise.all(pending);
    // The last measurement is the trial's result: the epoch kept, reported after the curve.
    await deps.reporter.report(HYPERTUNE_METRIC, run.objective!.value, result.candidate.training.history.length + 1);
  } catch (err) {
    run.status = 'failed';
    run.reason = errorMessage(err);
    logger.error({ err, study: input.study, trial: input.trial }, 'tuning trial failed');
    throw err;
  } finally {
    run.finishedAt = now().toISOString();
    run.seconds = (performance.now() - t0) / 1000;
    await deps.runs.put(run);
  }
  return run;
}

/** A run's figures from its `retrain()` result. */
function completeRun(run: ExperimentRun, result: TrialResult): void {
  const h = result.candidate.training.history;
  const atBest = h.find((e) => e.epoch === result.candidate.training.bestEpoch)?.validationRecallAt1 ?? null;
  run.curve = h;
  run.status = 'completed';
  run.objective =
    atBest !== null
      ? { name: 'validation recall@1', value: atBest }
      : { name: 'held-out recall@1 (no validation split)', value: result.candidate.metrics.imageToImage['recall@1'] };
  run.heldOut = result.candidate.metrics;
  run.gate = result.decision;
  run.modelVersion = result.candidate.version;
}

/** Starts a Vertex AI hyperparameter tuning job and waits for it (shared/adapters/gcp/vertex-tuning-launcher.ts). */
export interface TuningJobLauncher {
  run(request: {
    displayName: string;
    studySpec: ReturnType<typeof vertexStudySpec>;
    maxTrialCount: number;
    parallelTrialCount: number;
    /** Container arguments every trial gets before Vertex AI appends `--<parameter>=<value>`. */
    trialArgs: string[];
  }): Promise<{ name: string; state: 'succeeded' | 'failed' | 'cancelled'; detail?: string }>;
}

/**
 * The scheduled retraining with `iss:retrain.tune` (jobs/retrain `--tune`): a Vertex AI
 * hyperparameter tuning job whose trials run this same trainer image as `--trial-of=<study>`, then
 * {@link finishStudy} on the runs the trials recorded. Runs Vertex AI ended early (median stopping)
 * are marked `stopped`.
 */
export async function runVertexStudy<A = unknown>(
  deps: { launcher: TuningJobLauncher; registry: ModelRegistry; runs: ExperimentRunStore; activate?: Activation<A>; logger?: Logger; now?: () => Date },
  input: {
    space: SearchSpace;
    trials: number;
    parallel: number;
    seed: number;
    margin: number;
    heldOutFraction: number;
    algorithm?: 'ALGORITHM_UNSPECIFIED' | 'RANDOM_SEARCH';
  },
): Promise<{ study: string; job: string; runs: ExperimentRun[]; best: ExperimentRun | null; activation: A | null }> {
  const logger = deps.logger ?? silentLogger;
  const now = deps.now ?? (() => new Date());
  const study = `tune-${now().toISOString().replace(/[-:T]/g, '').slice(0, 14)}-${randomBytes(3).toString('hex')}`;
  const job = await deps.launcher.run({
    displayName: study,
    studySpec: vertexStudySpec(input.space, input.algorithm),
    maxTrialCount: input.trials,
    parallelTrialCount: input.parallel,
    trialArgs: [
      `--trial-of=${study}`,
      `--seed=${input.seed}`,
      `--margin=${input.margin}`,
      `--held-out=${input.heldOutFraction}`,
      `--space=${JSON.stringify(input.space)}`,
    ],
  });
  logger.info({ study, job: job.name, state: job.state, detail: job.detail }, 'hyperparameter tuning job ended');
  const runs = (await deps.runs.list()).filter((r) => r.study === study);
  for (const r of runs) {
    if (r.status !== 'running') continue;
    r.status = 'stopped';
    r.reason = 'ended by Vertex AI (median automated stopping, or the job ended)';
    await deps.runs.put(r);
  }
  const { best, activation } = await finishStudy<A>(deps, runs);
  return { study, job: job.name, runs, best, activation };
}

const jobNumber = (what: string, min: number, max: number, int = false) =>
  z.coerce
    .number()
    .min(min, `${what} must be at least ${min}`)
    .max(max, `${what} must be at most ${max}`)
    .refine((n) => !int || Number.isInteger(n), `${what} must be a whole number`);

/** Flags of the two tuning modes of jobs/retrain (beside its plain retraining flags). */
const studyFlagsSchema = z
  .object({
    tune: z.enum(['true']),
    trials: jobNumber('trials', 1, 1000, true).default(8),
    parallel: jobNumber('parallel', 1, 100, true).default(2),
    algorithm: z.enum(['ALGORITHM_UNSPECIFIED', 'RANDOM_SEARCH']).default('ALGORITHM_UNSPECIFIED'),
    space: z.string().optional(),
    seed: jobNumber('seed', 0, 2 ** 31 - 1, true).default(42),
    margin: jobNumber('margin', 0, 1).default(0.005),
    heldOut: jobNumber('heldOut', 0.001, 0.999).default(0.1),
  })
  .strict();
const trialFlagsSchema = z.object({
  trialOf: z.string().regex(/^tune-[0-9]{14}-[0-9a-f]{6}$/, 'must be a study id such as tune-20261127030000-a1b2c3'),
  space: z.string().optional(),
  seed: jobNumber('seed', 0, 2 ** 31 - 1, true),
  margin: jobNumber('margin', 0, 1),
  heldOut: jobNumber('heldOut', 0.001, 0.999),
});

export type TuningJobArgs =
  | {
      mode: 'study';
      trials: number;
      parallel: number;
      algorithm: 'ALGORITHM_UNSPECIFIED' | 'RANDOM_SEARCH';
      space: SearchSpace;
      seed: number;
      margin: number;
      heldOutFraction: number;
    }
  | { mode: 'trial'; study: string; params: TrialParams; space: SearchSpace; seed: number; margin: number; heldOutFraction: number };

/** Trainer options that need the block activations only the local feature store keeps (README "Adapting the tower's layout"). */
const LOCAL_ONLY_OPTIONS = new Set(['unlockBlocks', 'regionGrid', 'regionWeight', 'towerLearningRate', 'headOnlyEpochs']);

/**
 * jobs/retrain arguments (`--key=value`, dashed or camelCase) of a tuning run: `--tune=true` (the
 * study: start the Vertex AI job, then promote its best trial through the gate) or
 * `--trial-of=<study>` (one trial, with the `--<parameter>=<value>` Vertex AI appends). Null when
 * neither is given (a plain retraining run). `--space` is the search space as JSON (default:
 * {@link DEFAULT_SEARCH_SPACE}).
 */
export function parseTuningJobArgs(argv: string[]): TuningJobArgs | null {
  const raw: Record<string, string> = {};
  for (const arg of argv) {
    const m = /^--([a-zA-Z][a-zA-Z0-9-]*)=(.*)$/s.exec(arg);
    if (!m) throw new ParseError(`unexpected argument ${JSON.stringify(arg)}: pass options as --key=value`);
    raw[m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = m[2]!;
  }
  if (raw.tune === undefined && raw.trialOf === undefined) return null;
  const spaceOf = (json: string | undefined) => {
    if (json === undefined) return DEFAULT_SEARCH_SPACE;
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch (err) {
      throw new ParseError(`--space is not JSON: ${errorMessage(err)}`, { cause: err });
    }
    const space = parseSearchSpace(parsed, '--space');
    const local = Object.keys(space).filter((k) => LOCAL_ONLY_OPTIONS.has(k));
    if (local.length > 0) {
      throw new ParseError(
        `--space: ${local.join(', ')} cannot be searched by the cloud tuning job: they adapt the image tower from block activations, ` +
          'which the cloud feature shards do not keep. Search them locally with `imgsearch tune --space <file>`',
      );
    }
    return space;
  };
  if (raw.tune !== undefined) {
    const f = parseWith(studyFlagsSchema, raw, 'invalid tuning job arguments', { root: 'flags' });
    return {
      mode: 'study',
      trials: f.trials,
      parallel: f.parallel,
      algorithm: f.algorithm,
      space: spaceOf(f.space),
      seed: f.seed,
      margin: f.margin,
      heldOutFraction: f.heldOut,
    };
  }
  const known = new Set(Object.keys(trialFlagsSchema.shape));
  const f = parseWith(trialFlagsSchema, Object.fromEntries(Object.entries(raw).filter(([k]) => known.has(k))), 'invalid tuning trial arguments', {
    root: 'flags',
  });
  const space = spaceOf(f.space);
  const params = trialParamsFromArgs(space, Object.fromEntries(Object.entries(raw).filter(([k]) => !known.has(k))));
  return { mode: 'trial', study: f.trialOf, params, space, seed: f.seed, margin: f.margin, heldOutFraction: f.heldOut };
}

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { errorMessage, NotFoundError } from '../errors.js';
import { evaluateImageToImage } from '../evaluation/evaluate.js';
import { silentLogger, type Logger } from '../logger.js';
import type { BlobStore } from '../ports/blob-store.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry, ModelVersion } from '../ports/model-registry.js';
import type { DriftOutput } from '../output-schemas.js';
import { mulberry32, shuffledIndices } from '../training/prng.js';
import { parseWith } from '../validation.js';
import { probit } from 'simple-statistics';
import { dot, l2Normalise } from '../vector-math.js';
import { MIN_LABELLED_FOR_EVAL, readBaseFeatures, registeredTowers } from './retrain.js';

/**
 * Drift: does what the active model now sees still look like what it was trained on?
 *
 * - **Reference profile** ({@link buildDriftProfile}), saved as {@link DRIFT_PROFILE_FILE} with every
 *   model version `retrain` registers: the training embeddings (in the model's search space) projected
 *   on their top principal components, each component's decile edges; a sample of the cosine
 *   distances to their centroid; the label mix; and the keys (hashed `id@generation`) of the images
 *   the model was trained on, so "newly labelled images" can be told apart.
 * - **Report** ({@link driftReport}) for two signals: recent uploads (the most recent N feature
 *   records by generation, i.e. upload time in µs in both modes, projected by the active model) and
 *   recent image queries (a bounded sample the search service keeps, {@link QueryVectorSource}).
 *   Queries are compared twice: with the training profile (do users ask for what the model was
 *   trained on? — reported only) and with the model's **served-query reference**
 *   ({@link ServedReference}): the deciles, on the training profile's axes, of the oldest
 *   `servedBaseline` queries in the sample when a check first finds that many, kept in the check's
 *   state, against which only the queries served after them are compared (has what users ask for
 *   changed since the model went live?). Users who only ever search one category trip the first
 *   every time, never the second. One statistic per question:
 *   - PSI per principal component, Σ (a−e)·ln(a/e) over the reference deciles (empty bins floored
 *     at 1e-4); the usual bands: < 0.1 no shift, 0.1–0.25 moderate, ≥ 0.25 major. The signal's PSI is
 *     the largest over the components; it flags when it reaches the threshold AND is significant at
 *     1% over the components ({@link psiCritical}: small samples have large PSIs by chance).
 *   - two-sample Kolmogorov–Smirnov on the distance to the reference centroid: D and its asymptotic
 *     p-value; flagged when D ≥ the threshold and p < 0.01.
 *   - PSI of the label mix (uploads only, over their labelled images).
 * - **Decision** ({@link decideRetrain}): retrain when (uploads or the queries since the served
 *   reference drifted AND at least M labelled
 *   images are new since training) OR (Recall@1 of the active model on the new labelled images fell
 *   more than the configured drop below its recorded figure) — and no request was made within the
 *   cooldown. Every request records its reasons ({@link DriftState}).
 */

export const DRIFT_PROFILE_FILE = 'drift-profile.json';
const PROFILE_FORMAT = 1;
/** Principal components profiled. */
const COMPONENTS = 8;
/** Deciles: PSI with 10 equal-mass reference bins. */
const BINS = 10;
/** At most this many training embeddings fit the components (seeded sample): enough for 8 directions. */
const FIT_SAMPLE = 4000;
const SUBSPACE_ITERATIONS = 25;
const DISTANCE_SAMPLE = 2000;
const PSI_FLOOR = 1e-4;
/** KS flags a shift only when it is also significant at this level (D alone on a big sample may be noise-free but tiny). */
export const KS_SIGNIFICANCE = 0.01;
/** PSI flags a shift only when it is also significant at this level, over all the components read (a small sample's PSI is large by chance alone). */
export const PSI_SIGNIFICANCE = 0.01;

export const driftSettingsSchema = z.object({
  /** Recent uploads compared: the most recent N by generation. */
  recentUploads: z.number().int().min(10).default(1000),
  /** Fewer vectors than this in a signal: not judged ("insufficient"). */
  minSample: z.number().int().min(10).default(200),
  /** PSI at or above this flags a component (0.25: the "major shift" band). */
  psiThreshold: z.number().positive().default(0.25),
  /** KS D on centroid distances at or above this (and p < 0.01) flags the signal. */
  ksThreshold: z.number().gt(0).lt(1).default(0.2),
  /** Labelled images new since training needed before drift alone asks for a retraining. */
  minNewLabelled: z.number().int().min(0).default(200),
  /** Recall@1 drop (absolute) on new labelled images, below the active model's recorded figure, that asks for a retraining. */
  recallDrop: z.number().gt(0).lt(1).default(0.05),
  /** No second request within this many hours of the last one. */
  cooldownHours: z.number().min(0).default(24),
  /** A model's first this many sampled queries form its served-query reference (the later ones are compared with it). */
  servedBaseline: z.number().int().min(10).default(500),
});
export type DriftSettings = z.infer<typeof driftSettingsSchema>;
export type DriftSettingsInput = z.input<typeof driftSettingsSchema>;

const componentSchema = z.object({ edges: z.array(z.number()), fractions: z.array(z.number()), mean: z.number(), std: z.number() });
export const driftProfileSchema = z.object({
  format: z.literal(PROFILE_FORMAT),
  modelVersion: z.string(),
  createdAt: z.string(),
  count: z.number().int(),
  dimension: z.number().int().positive(),
  centroid: z.array(z.number()),
  basis: z.array(z.array(z.number())),
  components: z.array(componentSchema),
  /** Sorted sample of cosine distances to the centroid. */
  centroidDistances: z.array(z.number()),
  /** Share of labelled images carrying each label. */
  labels: z.record(z.string(), z.number()),
  labelled: z.number().int(),
  /** Sorted keys (sha256(id@generation), 12 hex) of every image present at training time. */
  trainingKeys: z.array(z.string()),
});
export type DriftProfile = z.infer<typeof driftProfileSchema>;
const servedReferenceSchema = z.object({
  modelVersion: z.string(),
  createdAt: z.string(),
  from: z.number(),
  until: z.number(),
  profile: driftProfileSchema,
});

export interface ProfiledRecord {
  id: string;
  generation: string;
  labels: string[];
  /** In the model's search space. */
  vector: Float32Array;
}

export function recordKey(r: { id: string; generation: string }): string {
  return createHash('sha256').update(`${r.id}@${r.generation}`).digest('hex').slice(0, 12);
}

/**
 * The reference profile of a model: `training` are the embeddings it was trained on (its search
 * space), `present` every image the training run saw (training and held out), whose keys mark what
 * is not new. Deterministic for the same input and seed.
 */
export function buildDriftProfile(
  modelVersion: string,
  training: ProfiledRecord[],
  present: { id: string; generation: string }[] = training,
  seed = 42,
): DriftProfile {
  if (training.length < 2) throw new NotFoundError(`a drift profile needs at least 2 embeddings (got ${training.length})`);
  const vectors = training.map((r) => l2Normalise(r.vector));
  const dimension = vectors[0]!.length;
  const centroid = meanVector(vectors);
  const random = mulberry32(seed);
  const order = shuffledIndices(vectors.length, random);
  const fit = Array.from(order.subarray(0, Math.min(FIT_SAMPLE, vectors.length)), (i) => vectors[i]!);
  const basis = topComponents(fit, centroid, Math.min(COMPONENTS, dimension, fit.length - 1), random);
  const { components, distances } = onAxes(vectors, centroid, basis, order);
  const labelled = training.filter((r) => r.labels.length > 0);
  return {
    format: PROFILE_FORMAT,
    modelVersion,
    createdAt: new Date().toISOString(),
    count: training.length,
    dimension,
    centroid: Array.from(centroid),
    basis: basis.map((axis) => Array.from(axis)),
    components,
    centroidDistances: distances,
    labels: labelShares(labelled),
    labelled: labelled.length,
    trainingKeys: present.map(recordKey).sort(),
  };
}

/**
 * The per-component deciles (and moments) of `vectors` (unit) along `basis` around `centroid`, and
 * a sorted sample (the first {@link DISTANCE_SAMPLE} of `order`) of their cosine distances to it.
 */
function onAxes(vectors: Float32Array[], centroid: Float32Array, basis: Float32Array[], order: ArrayLike<number>) {
  const components = basis.map((axis) => {
    const values = vectors.map((v) => project(v, centroid, axis));
    const sorted = Float64Array.from(values).sort();
    const edges = Array.from({ length: BINS - 1 }, (_, b) => quantile(sorted, (b + 1) / BINS));
    const m = meanOf(values);
    return { edges, fractions: binFractions(values, edges), mean: m, std: Math.sqrt(meanOf(values.map((x) => (x - m) ** 2))) };
  });
  const distances = Array.from({ length: Math.min(DISTANCE_SAMPLE, vectors.length) }, (_, k) => cosineDistance(vectors[order[k]!]!, centroid)).sort(
    (a, b) => a - b,
  );
  return { components, distances };
}

export function parseDriftProfile(bytes: Buffer | string, where: string): DriftProfile {
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString());
  } catch (err) {
    throw new NotFoundError(`${where} is not JSON: retrain the model to write a new profile`, { cause: err });
  }
  return parseWith(driftProfileSchema, raw, `${where} is not a drift profile`);
}

/** PSI of `actual` against the reference bins; the standard bands. */
export function psi(expected: readonly number[], actual: readonly number[]): number {
  let total = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.max(expected[i]!, PSI_FLOOR);
    const a = Math.max(actual[i] ?? 0, PSI_FLOOR);
    total += (a - e) * Math.log(a / e);
  }
  return total;
}

/**
 * The smallest PSI that is significant at `alpha` when `tests` PSIs are read together (Bonferroni):
 * under no shift, PSI·n_eff is asymptotically χ² with bins − 1 degrees of freedom, n_eff =
 * 1/(1/n_reference + 1/n_sample) (Yurdakul, "Statistical properties of the population stability
 * index", 2018). With 500 reference and 100 new queries this is 0.33 for the largest of 8 components
 * (the 0.25 band alone flagged a quarter of same-distribution samples of Fashion-MNIST queries;
 * with this level, 4%: the asymptotic tail is light at 10 per bin — hence the default minimum
 * sample of 200, at which neither flags any, test/unit/drift-statistics.unit.test.ts).
 */
export function psiCritical(bins: number, referenceCount: number, sample: number, tests = 1, alpha = PSI_SIGNIFICANCE): number {
  return chiSquaredQuantile(1 - alpha / tests, bins - 1) * (1 / referenceCount + 1 / sample);
}

/** χ² quantile by Wilson–Hilferty (1931): (χ²/k)^(1/3) is nearly normal, mean 1 − 2/(9k), variance 2/(9k); within 1% in the upper tail for k ≥ 3. */
export function chiSquaredQuantile(p: number, degrees: number): number {
  const v = 2 / (9 * degrees);
  return degrees * Math.max(0, 1 - v + probit(p) * Math.sqrt(v)) ** 3;
}

export function psiBand(value: number): 'none' | 'moderate' | 'major' {
  return value < 0.1 ? 'none' : value < 0.25 ? 'moderate' : 'major';
}

/** Two-sample Kolmogorov–Smirnov: D = sup |F_a − F_b| and the asymptotic p-value (Numerical Recipes' probks with Stephens' correction). */
export function kolmogorovSmirnov(a: readonly number[], b: readonly number[]): { d: number; pValue: number } {
  const x = Float64Array.from(a).sort();
  const y = Float64Array.from(b).sort();
  let i = 0;
  let j = 0;
  let d = 0;
  while (i < x.length && j < y.length) {
    const v = Math.min(x[i]!, y[j]!);
    while (i < x.length && x[i]! <= v) i++;
    while (j < y.length && y[j]! <= v) j++;
    d = Math.max(d, Math.abs(i / x.length - j / y.length));
  }
  const en = Math.sqrt((x.length * y.length) / (x.length + y.length));
  const lambda = (en + 0.12 + 0.11 / en) * d;
  let p = 0;
  for (let k = 1; k <= 100; k++) {
    const term = 2 * (k % 2 === 1 ? 1 : -1) * Math.exp(-2 * k * k * lambda * lambda);
    p += term;
    if (Math.abs(term) < 1e-10) break;
  }
  return { d, pValue: lambda < 1e-3 ? 1 : Math.min(1, Math.max(0, p)) };
}

export interface SignalReport {
  sample: number;
  status: 'no-shift' | 'drift' | 'insufficient';
  /** Largest PSI over the components, and each component's; `critical`: the smallest significant largest PSI for these sample sizes ({@link psiCritical}). */
  psi: { max: number; band: 'none' | 'moderate' | 'major'; critical: number; components: number[] } | null;
  /** KS on the distance to the reference centroid. */
  centroidKs: { d: number; pValue: number } | null;
  /** Uploads: PSI of the label mix over `labelled` labelled images (null below the minimum sample). */
  labelPsi: number | null;
  /** What flagged it, one sentence each. */
  findings: string[];
  /** Why the signal could not be read (its source failed), when it could not. */
  error?: string;
}

/** Compares `vectors` (search space) — and for uploads their labels — with the profile. */
export function compareWithProfile(
  profile: DriftProfile,
  vectors: Float32Array[],
  settings: Pick<DriftSettings, 'minSample' | 'psiThreshold' | 'ksThreshold'>,
  labels?: string[][],
): SignalReport {
  const normalised = vectors.filter((v) => v.length === profile.dimension).map(l2Normalise);
  if (normalised.length < settings.minSample) return insufficient(normalised.length);
  const centroid = Float32Array.from(profile.centroid);
  const perComponent = profile.basis.map((axis, c) => {
    const a = Float32Array.from(axis);
    return psi(
      profile.components[c]!.fractions,
      binFractions(
        normalised.map((v) => project(v, centroid, a)),
        profile.components[c]!.edges,
      ),
    );
  });
  const max = Math.max(...perComponent);
  const ks = kolmogorovSmirnov(
    profile.centroidDistances,
    normalised.map((v) => cosineDistance(v, centroid)),
  );
  const critical = psiCritical(BINS, profile.count, normalised.length, perComponent.length);
  const findings: string[] = [];
  if (max >= settings.psiThreshold && max >= critical)
    findings.push(
      `PSI ${max.toFixed(3)} on component ${perComponent.indexOf(max) + 1} ≥ ${settings.psiThreshold}${critical > settings.psiThreshold ? ` and its significance level ${critical.toFixed(3)}` : ''}`,
    );
  if (ks.d >= settings.ksThreshold && ks.pValue < KS_SIGNIFICANCE)
    findings.push(`centroid-distance KS D ${ks.d.toFixed(3)} ≥ ${settings.ksThreshold} (p ${ks.pValue.toExponential(1)})`);
  let labelPsi: number | null = null;
  const labelled = (labels ?? []).filter((l) => l.length > 0);
  if (labelled.length >= settings.minSample && profile.labelled > 0) {
    const actual = labelShares(labelled.map((l) => ({ labels: l })));
    const names = [...new Set([...Object.keys(profile.labels), ...Object.keys(actual)])].sort();
    labelPsi = psi(
      names.map((n) => profile.labels[n] ?? 0),
      names.map((n) => actual[n] ?? 0),
    );
    if (labelPsi >= settings.psiThreshold && labelPsi >= psiCritical(Math.max(2, names.length), profile.labelled, labelled.length))
      findings.push(`label-mix PSI ${labelPsi.toFixed(3)} ≥ ${settings.psiThreshold}`);
  }
  return {
    sample: normalised.length,
    status: findings.length > 0 ? 'drift' : 'no-shift',
    psi: { max, band: psiBand(max), critical, components: perComponent },
    centroidKs: ks,
    labelPsi,
    findings,
  };
}

export interface RecallCheck {
  /** Labelled images not in the training snapshot (the queries). */
  newLabelled: number;
  recallAt1: number | null;
  /** The active model's recorded held-out Recall@1. */
  recorded: number | null;
  /** recorded − recallAt1 (positive: worse now). */
  drop: number | null;
}

export interface DriftReport {
  modelVersion: string;
  checkedAt: string;
  /** Null when the active model has no profile (a base model, or one registered before profiles). */
  reference: { createdAt: string; count: number; components: number } | null;
  settings: DriftSettings;
  /** queries: against the training profile; servedQueries: the queries after the served-query reference, against it. */
  signals: { uploads: SignalReport; queries: SignalReport; servedQueries: SignalReport } | null;
  /** The model's served-query reference (null until it has served `servedBaseline` sampled queries); `kept`: stored by a check (false: built for this report only, the next check keeps it). */
  servedReference: { createdAt: string; count: number; from: string; until: string; kept: boolean } | null;
  recall: RecallCheck | null;
  decision: RetrainDecision;
  /** Why there is no verdict, when there is none. */
  note?: string;
}

export interface RetrainDecision {
  retrain: boolean;
  /** Why a retraining is (or would be) requested. */
  reasons: string[];
  /** Set when the reasons hold but a request is held back. */
  heldBack?: string;
}

export interface RetrainRequestRecord {
  at: string;
  modelVersion: string;
  reasons: string[];
  outcome: 'requested' | 'failed';
  error?: string;
}

/** A model's served-query reference: the profile of the first sampled queries it served, and when they were served (ms). */
export interface ServedReference {
  modelVersion: string;
  createdAt: string;
  from: number;
  until: number;
  profile: DriftProfile;
}

/** What the check keeps between runs: the last report, the requests it made (newest last, bounded) and the models' served-query references. */
export interface DriftState {
  lastReport: DriftReport | null;
  requests: RetrainRequestRecord[];
  /** Newest last; one per model version, the last {@link MAX_SERVED_REFERENCES} kept. */
  servedReferences: ServedReference[];
}
const MAX_RECORDED_REQUESTS = 50;
const MAX_SERVED_REFERENCES = 10;

/** The pure decision rule; see the module comment. */
export function decideRetrain(
  input: { drifted: string[]; newLabelled: number; recall: RecallCheck | null },
  settings: Pick<DriftSettings, 'minNewLabelled' | 'recallDrop' | 'cooldownHours'>,
  lastRequest: RetrainRequestRecord | undefined,
  now: Date,
): RetrainDecision {
  const reasons: string[] = [];
  if (input.drifted.length > 0 && input.newLabelled >= settings.minNewLabelled) {
    reasons.push(`drift (${input.drifted.join('; ')}) with ${input.newLabelled} new labelled images (≥ ${settings.minNewLabelled})`);
  }
  const r = input.recall;
  if (r && r.drop !== null && r.drop > settings.recallDrop) {
    reasons.push(
      `Recall@1 on ${r.newLabelled} new labelled images ${r.recallAt1!.toFixed(3)} is ${r.drop.toFixed(3)} below the recorded ${r.recorded!.toFixed(3)} (> ${settings.recallDrop})`,
    );
  }
  if (reasons.length === 0) return { retrain: false, reasons };
  if (lastRequest && lastRequest.outcome === 'requested') {
    const since = (now.getTime() - Date.parse(lastRequest.at)) / 3_600_000;
    if (since < settings.cooldownHours) {
      return { retrain: false, reasons, heldBack: `cooldown: a retraining was requested ${since.toFixed(1)} h ago (< ${settings.cooldownHours} h)` };
    }
  }
  return { retrain: true, reasons };
}

/** One sampled image query: when it was served (ms since the epoch) and its vector in the model's search space. */
export interface SampledQuery {
  at: number;
  vector: Float32Array;
}
/** Where the search service puts each image query's vector (search space) for the drift check. */
export interface QueryVectorSink {
  add(modelVersion: string, vector: Float32Array): void | Promise<void>;
}
/** What the drift check reads back: a bounded sample of the queries a model version served. */
export interface QueryVectorSource {
  /** The newest sampled queries `modelVersion` served (at most the sample's capacity), oldest first. */
  recent(modelVersion: string): Promise<SampledQuery[]>;
}
/** Both ends in one (local mode: one file the server writes and `imgsearch drift` reads). */
export interface QueryVectorSample extends QueryVectorSink, QueryVectorSource {}

/** Where the check keeps its {@link DriftState}. */
export interface DriftStateStore {
  read(): Promise<DriftState>;
  write(state: DriftState): Promise<void>;
}

const DRIFT_STATE_OBJECT = 'drift-state.json';

/** The state as one JSON object in a blob store (a folder in the data directory locally, the models bucket in the cloud). */
export class BlobDriftStateStore implements DriftStateStore {
  constructor(
    private readonly blobs: BlobStore,
    private readonly name = DRIFT_STATE_OBJECT,
  ) {}
  async read(): Promise<DriftState> {
    if (!(await this.blobs.stat(this.name))) return { lastReport: null, requests: [], servedReferences: [] };
    const state = JSON.parse((await this.blobs.read(this.name)).toString()) as Partial<DriftState>;
    return {
      lastReport: state.lastReport ?? null,
      requests: Array.isArray(state.requests) ? state.requests : [],
      servedReferences: servedReferencesFrom(state.servedReferences),
    };
  }
  async write(state: DriftState): Promise<void> {
    await this.blobs.write(this.name, JSON.stringify(state), { contentType: 'application/json' });
  }
}

export interface DriftCheckDeps {
  registry: ModelRegistry;
  features: FeatureStore;
  state: DriftStateStore;
  queries?: QueryVectorSource;
  /** Asks for a retraining (locally: runs it; cloud: publishes to retrain-requests). */
  requestRetrain?: (reason: string, report: DriftReport) => Promise<void>;
  logger?: Logger;
  now?: () => Date;
}

/** The active model's profile, or null when it has none. */
export async function readDriftProfile(registry: ModelRegistry, version: ModelVersion): Promise<DriftProfile | null> {
  const file = path.join(await registry.localPath(version.version), DRIFT_PROFILE_FILE);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return parseDriftProfile(bytes, `${version.version}/${DRIFT_PROFILE_FILE}`);
}

/**
 * One drift check of the active model: the report, the decision, and (when it says so and a
 * `requestRetrain` is given) the request — recorded in the state with its reasons whether it
 * succeeded or not; a failed request is rethrown once recorded (the cloud job fails visibly, `up`
 * logs it). Returns the report (also stored as the state's `lastReport`).
 */
export async function runDriftCheck(deps: DriftCheckDeps, settingsInput: DriftSettingsInput = {}): Promise<DriftReport> {
  const logger = deps.logger ?? silentLogger;
  const { report, state, newServedReference } = await inspectDrift(deps, settingsInput);
  const at = report.checkedAt;
  const modelVersion = report.modelVersion;
  const requests = [...state.requests];
  let failure: unknown = null;
  if (report.decision.retrain && deps.requestRetrain) {
    const reason = report.decision.reasons.join(' | ');
    try {
      await deps.requestRetrain(reason, report);
      requests.push({ at, modelVersion, reasons: report.decision.reasons, outcome: 'requested' });
      logger.info({ modelVersion, reasons: report.decision.reasons }, 'drift check requested a retraining');
    } catch (err) {
      requests.push({ at, modelVersion, reasons: report.decision.reasons, outcome: 'failed', error: errorMessage(err) });
      logger.error({ err, reasons: report.decision.reasons }, 'drift check could not request a retraining');
      failure = err;
    }
  } else if (report.decision.heldBack) {
    logger.info({ reasons: report.decision.reasons, heldBack: report.decision.heldBack }, 'drift check: retraining held back');
  } else {
    logger.info({ modelVersion, uploads: report.signals?.uploads.status, queries: report.signals?.queries.status, note: report.note }, 'drift check');
  }
  // References of versions no longer in the registry go (pruned or removed: nothing can serve them again).
  const registered = new Set((await deps.registry.list()).map((v) => v.version));
  const servedReferences = [
    ...state.servedReferences.filter((r) => r.modelVersion !== newServedReference?.modelVersion && registered.has(r.modelVersion)),
    ...(newServedReference ? [newServedReference] : []),
  ].slice(-MAX_SERVED_REFERENCES);
  await deps.state.write({ lastReport: report, requests: requests.slice(-MAX_RECORDED_REQUESTS), servedReferences });
  // Recorded first (a failed request starts no cooldown: the next check asks again); then the caller sees it fail.
  if (failure !== null) throw failure;
  return report;
}

/**
 * The report of the active model and the state so far, without requesting or recording anything
 * (`imgsearch drift`). `newServedReference`: the served-query reference this report built (the
 * model had none yet), for {@link runDriftCheck} to keep.
 */
export async function inspectDrift(
  deps: Omit<DriftCheckDeps, 'requestRetrain'>,
  settingsInput: DriftSettingsInput = {},
): Promise<{ report: DriftReport; state: DriftState; newServedReference: ServedReference | null }> {
  const settings = parseWith(driftSettingsSchema, settingsInput, 'Invalid drift settings', { root: 'settings' });
  const now = (deps.now ?? (() => new Date()))();
  const active = await deps.registry.active();
  if (!active) throw new NotFoundError('no active model: run `imgsearch ingest <dir>` first');
  const state = await deps.state.read();
  const profile = await readDriftProfile(deps.registry, active);
  if (profile) {
    const { report, newServedReference } = await driftReport(deps, active, profile, settings, state, now, deps.logger);
    return { report, state, newServedReference };
  }
  const report: DriftReport = {
    modelVersion: active.version,
    checkedAt: now.toISOString(),
    reference: null,
    settings,
    signals: null,
    servedReference: null,
    recall: null,
    decision: { retrain: false, reasons: [] },
    note: `model ${active.version} has no drift profile (profiles are saved by \`imgsearch retrain\`): drift is checked from its first retrained version on`,
  };
  return { report, state, newServedReference: null };
}

/**
 * `imgsearch drift --json` and `GET /api/drift` (without `schemaVersion`): the active model's report
 * now ({@link inspectDrift}: nothing requested or recorded), the last check and the requests drift checks made (newest last).
 */
export async function driftOutput(
  deps: Omit<DriftCheckDeps, 'requestRetrain'>,
  settingsInput: DriftSettingsInput = {},
): Promise<Omit<DriftOutput, 'schemaVersion'>> {
  const { report, state } = await inspectDrift(deps, settingsInput);
  return { ...report, lastCheck: driftStatus(state).lastCheck, requests: state.requests };
}

/** The report of `active` against its profile, without requesting or recording anything. */
export async function driftReport(
  deps: Pick<DriftCheckDeps, 'registry' | 'features' | 'queries'>,
  active: ModelVersion,
  profile: DriftProfile,
  settings: DriftSettings,
  state: Pick<DriftState, 'requests' | 'servedReferences'>,
  now: Date,
  logger: Logger = silentLogger,
): Promise<{ report: DriftReport; newServedReference: ServedReference | null }> {
  const records = await readBaseFeatures(deps.features, active, logger);
  const recent = [...records].sort(byGenerationDesc).slice(0, settings.recentUploads);
  const trained = new Set(profile.trainingKeys);
  const newLabelled = records.filter((r) => r.labels.length > 0 && !trained.has(recordKey(r)));
  const towers = await registeredTowers(deps.registry, active, logger);
  let uploads: SignalReport;
  let recall: RecallCheck;
  try {
    uploads = compareWithProfile(
      profile,
      await towers.project(recent.map((r) => r.vector)),
      settings,
      recent.map((r) => r.labels),
    );
    recall = await recallOnNew(towers.project, records, newLabelled, active);
  } finally {
    await towers.close();
  }
  let sampled: SampledQuery[] = [];
  let queryError: string | undefined;
  try {
    sampled = (await deps.queries?.recent(active.version)) ?? [];
  } catch (err) {
    // The query sample is one signal of three: its failure (a bucket listing refused while a new
    // IAM binding propagates, a 5xx) must not cost the uploads and Recall@1 checks.
    logger.error({ err, modelVersion: active.version }, 'drift check: the query sample could not be read; query signals skipped');
    queryError = `the query sample could not be read: ${errorMessage(err)}`;
  }
  const queries = compareWithProfile(
    profile,
    sampled.map((q) => q.vector),
    settings,
  );
  const stored = state.servedReferences.find((r) => r.modelVersion === active.version) ?? null;
  const served = stored ?? servedReferenceOf(profile, active.version, sampled, settings.servedBaseline, now);
  const servedQueries = served
    ? compareWithProfile(
        served.profile,
        sampled.filter((q) => q.at > served.until).map((q) => q.vector),
        settings,
      )
    : insufficient(0);
  if (queryError) {
    queries.error = queryError;
    servedQueries.error = queryError;
  }
  // Queries against the training profile are reported, never acted on: users who search one
  // category differ from the collection at every check, and a retraining changes nothing about it.
  const drifted = [...uploads.findings.map((f) => `uploads: ${f}`), ...servedQueries.findings.map((f) => `queries since the served reference: ${f}`)];
  const report: DriftReport = {
    modelVersion: active.version,
    checkedAt: now.toISOString(),
    reference: { createdAt: profile.createdAt, count: profile.count, components: profile.basis.length },
    settings,
    signals: { uploads, queries, servedQueries },
    servedReference: served
      ? {
          createdAt: served.createdAt,
          count: served.profile.count,
          from: new Date(served.from).toISOString(),
          until: new Date(served.until).toISOString(),
          kept: stored !== null,
        }
      : null,
    recall,
    decision: decideRetrain({ drifted, newLabelled: newLabelled.length, recall }, settings, state.requests.at(-1), now),
  };
  return { report, newServedReference: stored ? null : served };
}

/**
 * The served-query reference of `modelVersion` from its sampled queries (oldest first): the oldest
 * `size` of them, profiled on the axes of the model's training profile (its centroid and principal
 * components, fitted on thousands of training embeddings — axes fitted on the same few hundred
 * queries would fit them too well, and later queries from the same distribution would look
 * shifted), or null while there are fewer. Later queries are those served after the last of them
 * (`at > until`: one served in the same instant is compared with neither).
 */
export function servedReferenceOf(
  training: DriftProfile,
  modelVersion: string,
  sampled: readonly SampledQuery[],
  size: number,
  now: Date,
): ServedReference | null {
  const first = sampled.slice(0, size);
  const vectors = first.map((q) => q.vector).filter((v) => v.length === training.dimension);
  if (first.length < size || vectors.length < 2) return null;
  const normalised = vectors.map((v) => l2Normalise(v));
  const centroid = Float32Array.from(training.centroid);
  const basis = training.basis.map((axis) => Float32Array.from(axis));
  const { components, distances } = onAxes(normalised, centroid, basis, shuffledIndices(normalised.length, mulberry32(42)));
  return {
    modelVersion,
    createdAt: now.toISOString(),
    from: first[0]!.at,
    until: first.at(-1)!.at,
    profile: {
      format: PROFILE_FORMAT,
      modelVersion,
      createdAt: now.toISOString(),
      count: normalised.length,
      dimension: training.dimension,
      centroid: training.centroid,
      basis: training.basis,
      components,
      centroidDistances: distances,
      labels: {},
      labelled: 0,
      trainingKeys: [],
    },
  };
}

function insufficient(sample: number): SignalReport {
  return { sample, status: 'insufficient', psi: null, centroidKs: null, labelPsi: null, findings: [] };
}

/** The stored references that still parse (a hand-edited or older state loses only them). */
function servedReferencesFrom(raw: unknown): ServedReference[] {
  if (!Array.isArray(raw)) return [];
  return raw.flatMap((r: unknown) => {
    const parsed = servedReferenceSchema.safeParse(r);
    return parsed.success ? [parsed.data] : [];
  });
}

async function recallOnNew(
  projectFn: (base: Float32Array[]) => Promise<Float32Array[]>,
  records: FeatureRecord[],
  newLabelled: FeatureRecord[],
  active: ModelVersion,
): Promise<RecallCheck> {
  const recordedRaw = active.metrics?.imageToImage?.['recall@1'];
  const recorded = typeof recordedRaw === 'number' ? recordedRaw : null;
  if (newLabelled.length < MIN_LABELLED_FOR_EVAL) return { newLabelled: newLabelled.length, recallAt1: null, recorded, drop: null };
  const labelled = records.filter((r) => r.labels.length > 0);
  const vectors = await projectFn(labelled.map((r) => r.vector));
  // Cosine, as search ranks (a version without a head passes its base vectors through as they are).
  const corpus = labelled.map((r, i) => ({ id: r.id, vector: l2Normalise(vectors[i]!), labels: r.labels }));
  const newIds = new Set(newLabelled.map((r) => r.id));
  const { metrics } = await evaluateImageToImage(
    corpus.filter((c) => newIds.has(c.id)),
    corpus,
  );
  const recallAt1 = metrics['recall@1'];
  return { newLabelled: newLabelled.length, recallAt1, recorded, drop: recorded === null ? null : recorded - recallAt1 };
}

function byGenerationDesc(a: FeatureRecord, b: FeatureRecord): number {
  const ga = BigInt(/^\d+$/.test(a.generation) ? a.generation : '0');
  const gb = BigInt(/^\d+$/.test(b.generation) ? b.generation : '0');
  return ga < gb ? 1 : ga > gb ? -1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function labelShares(records: { labels: string[] }[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of records) for (const l of new Set(r.labels)) counts[l] = (counts[l] ?? 0) + 1;
  const total = Object.values(counts).reduce((s, c) => s + c, 0);
  return Object.fromEntries(Object.entries(counts).map(([l, c]) => [l, total > 0 ? c / total : 0]));
}

function meanVector(vectors: Float32Array[]): Float32Array {
  const out = new Float64Array(vectors[0]!.length);
  for (const v of vectors) for (let i = 0; i < v.length; i++) out[i]! += v[i]!;
  return Float32Array.from(out, (x) => x / vectors.length);
}

function meanOf(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  return values.length > 0 ? s / values.length : 0;
}

function project(v: Float32Array, centroid: Float32Array, axis: Float32Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += (v[i]! - centroid[i]!) * axis[i]!;
  return s;
}

function cosineDistance(v: Float32Array, centroid: Float32Array): number {
  const norm = Math.sqrt(dot(centroid, centroid));
  return norm === 0 ? 1 : 1 - dot(v, centroid) / norm;
}

function quantile(sorted: Float64Array, q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Share of values per bin; bin b holds edges[b-1] < x ≤ edges[b]. */
function binFractions(values: number[], edges: readonly number[]): number[] {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (const x of values) {
    let b = 0;
    while (b < edges.length && x > edges[b]!) b++;
    counts[b]!++;
  }
  return counts.map((c) => c / values.length);
}

/**
 * The top `k` principal directions of `vectors` (centred on `centroid`) by subspace iteration on
 * the covariance, without forming it: Q ← orth(Xᵀ X Q). Deterministic for a seeded `random`.
 */
function topComponents(vectors: Float32Array[], centroid: Float32Array, k: number, random: () => number): Float32Array[] {
  const d = centroid.length;
  const centred = vectors.map((v) => Float32Array.from(v, (x, i) => x - centroid[i]!));
  let basis = orthonormalise(Array.from({ length: k }, () => Float32Array.from({ length: d }, () => random() - 0.5)));
  for (let it = 0; it < SUBSPACE_ITERATIONS; it++) {
    const next = basis.map(() => new Float32Array(d));
    for (const x of centred) {
      for (let c = 0; c < k; c++) {
        const s = dot(x, basis[c]!);
        const out = next[c]!;
        for (let i = 0; i < d; i++) out[i]! += s * x[i]!;
      }
    }
    basis = orthonormalise(next);
  }
  // Sign convention: the largest coordinate positive, so the same data gives the same axes.
  return basis.map((axis) => {
    let at = 0;
    for (let i = 1; i < d; i++) if (Math.abs(axis[i]!) > Math.abs(axis[at]!)) at = i;
    return axis[at]! < 0 ? axis.map((x) => -x) : axis;
  });
}

function orthonormalise(vectors: Float32Array[]): Float32Array[] {
  const out: Float32Array[] = [];
  for (const v of vectors) {
    const w = Float32Array.from(v);
    for (const u of out) {
      const p = dot(w, u);
      for (let i = 0; i < w.length; i++) w[i]! -= p * u[i]!;
    }
    out.push(l2Normalise(w));
  }
  return out;
}

/**
 * Runs a check every `everyMs` in the background (`imgsearch up`), one at a time: the next waits
 * for the previous one, retraining included. A failing check is logged and tried again next time.
 */
export class PeriodicDriftCheck {
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;

  constructor(
    private readonly check: () => Promise<unknown>,
    private readonly everyMs: number,
    private readonly logger: Logger = silentLogger,
  ) {}

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.timer = setTimeout(() => {
        this.inFlight = this.runOnce().finally(() => {
          this.inFlight = null;
          if (this.timer) tick();
        });
      }, this.everyMs);
      this.timer.unref();
    };
    tick();
  }

  /** One check now; never throws (the failure is logged). */
  async runOnce(): Promise<void> {
    try {
      await this.check();
    } catch (err) {
      this.logger.error({ err }, 'drift check failed; trying again at the next period');
    }
  }

  /** No further checks; a check under way finishes on its own (a retraining is not cut short). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The check under way, if any (tests, shutdown). */
  get running(): Promise<void> | null {
    return this.inFlight;
  }
}

/** The longest `reason` a retrain request may carry (functions/start-retraining.ts). */
export const MAX_RETRAIN_REASON = 200;

/**
 * The cloud's way to ask for a retraining: `{ reason: "drift check: …", args: {} }` on the
 * retrain-requests topic — the path Cloud Scheduler's retraining takes, so startRetraining starts
 * the Vertex AI job (or finds one running). The full reason is logged; the message carries it cut
 * to {@link MAX_RETRAIN_REASON} characters.
 */
export function retrainRequestPublisher(
  bus: { publish(topic: string, data: unknown, attributes?: Record<string, string>): Promise<string> },
  topic: string,
  logger: Logger = silentLogger,
): (reason: string) => Promise<void> {
  return async (reason) => {
    const full = `drift check: ${reason}`;
    const short = full.length > MAX_RETRAIN_REASON ? `${full.slice(0, MAX_RETRAIN_REASON - 1)}…` : full;
    const messageId = await bus.publish(topic, { reason: short, args: {} }, { source: 'drift-check' });
    logger.info({ messageId, topic, reason: full }, 'retraining requested');
  };
}

/** What `imgsearch status` shows of drift: the last check's decision and the last retraining request with its reasons. */
export function driftStatus(state: DriftState): {
  lastCheck: { checkedAt: string; decision: RetrainDecision } | null;
  lastRequest: RetrainRequestRecord | null;
} {
  return {
    lastCheck: state.lastReport ? { checkedAt: state.lastReport.checkedAt, decision: state.lastReport.decision } : null,
    lastRequest: state.requests.at(-1) ?? null,
  };
}

import { z } from 'zod';
import { rejectedImageSchema } from './contracts.js';
import { modelManifestSchema } from './model/manifest.js';
import { epochSchema, evaluationSchema, experimentRunSchema } from './services/experiment-runs.js';

/**
 * The JSON each `imgsearch … --json` command prints and the HTTP API's search and status answers:
 * one zod schema per output, each object carrying `schemaVersion`. The CLI and the API build their
 * answers with these types and tests parse real output with them; the README lists them.
 *
 * `schemaVersion` changes only when a field is removed or changes meaning; new optional fields keep
 * it. Readers should ignore fields they do not know.
 */
export const OUTPUT_SCHEMA_VERSION = 1 as const;

const schemaVersion = z.literal(OUTPUT_SCHEMA_VERSION);

/** One hit of a search, best first. */
export const searchHitSchema = z.object({
  id: z.string(),
  uri: z.string(),
  /** The object's file name (last part of `uri`). */
  name: z.string(),
  /** Cosine similarity, -1 to 1, rounded to 6 decimals. */
  score: z.number(),
  labels: z.array(z.string()),
  caption: z.string().optional(),
  /** API only: where the page fetches the thumbnail. */
  thumbnailUrl: z.string().optional(),
});

/** `imgsearch search --json` (one per query image: JSON Lines for several) and `GET|POST /api/search`. */
export const searchOutputSchema = z.object({
  schemaVersion,
  /** The model the live index was built with (the one that answered). */
  modelVersion: z.string(),
  /** `value`: the query text, the id for `similar`, the file for a CLI image query. */
  query: z.object({ kind: z.enum(['image', 'similar', 'text']), value: z.string().optional() }),
  /** API only: identifies this answer for click feedback. */
  queryId: z.string().optional(),
  /** API only: proves which results were served, for `POST /api/feedback`. */
  feedbackToken: z.string().optional(),
  results: z.array(searchHitSchema),
});
export type SearchOutput = z.infer<typeof searchOutputSchema>;
export type SearchHitOutput = z.infer<typeof searchHitSchema>;

const listWithReasons = z.object({ count: z.number().int(), byReason: z.record(z.string(), z.number().int()), items: z.array(rejectedImageSchema) });

/** A drift check's decision (shared/services/drift.ts): retrain with its reasons, or why it holds back. */
const driftDecisionSchema = z.object({ retrain: z.boolean(), reasons: z.array(z.string()), heldBack: z.string().optional() });
const driftLastCheckSchema = z.object({ checkedAt: z.string(), decision: driftDecisionSchema }).nullable();
/** A retraining a drift check requested, with its reasons. */
const driftRequestSchema = z.object({
  at: z.string(),
  modelVersion: z.string(),
  reasons: z.array(z.string()),
  outcome: z.enum(['requested', 'failed']),
  error: z.string().optional(),
});

/** `imgsearch status --json` and `GET /api/status`. */
export const statusOutputSchema = z.object({
  schemaVersion,
  indexed: z.number().int(),
  pending: z.number().int(),
  queues: z.record(z.string(), z.object({ ready: z.number().int(), inflight: z.number().int(), deadLettered: z.number().int() })),
  rejected: listWithReasons,
  ignored: listWithReasons,
  deadLettered: z.object({
    count: z.number().int(),
    items: z.array(
      z.object({
        topic: z.string(),
        messageId: z.string(),
        data: z.unknown(),
        attributes: z.record(z.string(), z.string()),
        reason: z.string(),
        deliveryAttempt: z.number().int(),
        at: z.string(),
      }),
    ),
  }),
  /** The active model (null, with `notice`, while a cloud stack has none yet). */
  model: z.object({ version: z.string(), name: z.string(), dimension: z.number().int(), hasTextTower: z.boolean() }).nullable(),
  index: z.object({ name: z.string(), modelVersion: z.string() }).nullable(),
  /** Pipeline stages failing now. */
  faults: z.array(
    z.object({ stage: z.string(), since: z.string(), failures: z.number().int(), lastError: z.string(), lastAt: z.string(), summary: z.string() }),
  ),
  /** When the counts were read (ISO 8601): `/api/status` may serve the last counts read, up to 10 s old (services/status.ts). */
  asOf: z.string().optional(),
  notice: z.string().optional(),
  /** `imgsearch status` only: the last drift check's decision and the last retraining a check requested (README "Drift"). */
  drift: z.object({ lastCheck: driftLastCheckSchema, lastRequest: driftRequestSchema.nullable() }).optional(),
});
export type StatusOutput = z.infer<typeof statusOutputSchema>;

/** Metrics as the registry stores them (`imageToImage`, `textToImage`, the gate's decision…). */
const metricsSchema = z.record(z.string(), z.unknown());

/** `imgsearch model list --json`, oldest first. */
export const modelListOutputSchema = z.object({
  schemaVersion,
  versions: z.array(
    z.object({
      version: z.string(),
      active: z.boolean(),
      /** Whether it was ever active (`model prune` removes retraining candidates that never were). */
      everActive: z.boolean(),
      parent: z.string().nullable(),
      createdAt: z.string(),
      metrics: metricsSchema.nullable(),
    }),
  ),
});

/** `imgsearch index versions --json`, oldest first. */
export const indexVersionsOutputSchema = z.object({
  schemaVersion,
  versions: z.array(
    z.object({ name: z.string(), modelVersion: z.string(), dimension: z.number().int(), createdAt: z.string(), count: z.number().int(), live: z.boolean() }),
  ),
});

/** `imgsearch model promote|rollback --json` and `imgsearch index rollback --json`. */
export const activationOutputSchema = z.object({
  schemaVersion,
  modelVersion: z.string(),
  index: z.string(),
  how: z.enum(['reused', 'rebuilt', 'unchanged']),
  documents: z.number().int(),
  needsReembedding: z.number().int(),
});

/** `imgsearch model rm --json` and `imgsearch model prune --json` (`removed` empty on a dry run). */
export const modelRemovalOutputSchema = z.object({
  schemaVersion,
  /** Versions removed (or, on a dry run, that would be). */
  versions: z.array(z.string()),
  /** Index versions built for them, dropped with them. */
  droppedIndices: z.array(z.string()),
  dryRun: z.boolean(),
});

/** `imgsearch eval --json`. */
export const evalOutputSchema = evaluationSchema.extend({ schemaVersion });

/** `imgsearch retrain --json`. */
export const retrainOutputSchema = z.object({
  schemaVersion,
  promoted: z.boolean(),
  decision: z.object({ promote: z.boolean(), reasons: z.array(z.string()), deltas: z.record(z.string(), z.number().nullable()) }),
  candidate: z.object({
    version: z.string(),
    metrics: evaluationSchema,
    training: z.object({
      history: z.array(epochSchema),
      bestEpoch: z.number().int(),
      seconds: z.number(),
      backend: z.string(),
      trainedExamples: z.number().int(),
      validationExamples: z.number().int(),
      hidden: z.number().int(),
      /** Image-tower units fine-tuned with the head (`--unlock-blocks`); absent when the tower stayed locked. */
      unlockedBlocks: z.array(z.string()).optional(),
      /** The candidate tower's regional-pooling grid (`--region-grid`) and that part's weight; absent without one. */
      regionGrid: z.number().int().optional(),
      regionWeight: z.number().optional(),
    }),
  }),
  current: z.object({ version: z.string(), metrics: evaluationSchema }),
  /** The index now live when promoted, else null. */
  index: activationOutputSchema.omit({ schemaVersion: true }).nullable(),
  plot: z.string().nullable(),
});

/** `imgsearch map --json`: the collection map `GET /api/map` answers (points only with --points), with each cluster's size and top label. */
export const mapOutputSchema = z.object({
  schemaVersion,
  method: z.enum(['pca', 'umap']),
  total: z.number().int(),
  sample: z.number().int(),
  k: z.number().int(),
  silhouette: z.array(z.object({ k: z.number().int(), score: z.number() })),
  computedAt: z.string(),
  clusters: z.array(z.object({ cluster: z.number().int(), images: z.number().int(), topLabel: z.string().nullable(), topLabelShare: z.number() })),
  purity: z.number().nullable(),
  points: z
    .array(z.object({ id: z.string(), name: z.string(), x: z.number(), y: z.number(), label: z.string().nullable(), cluster: z.number().int() }))
    .optional(),
});

/** `imgsearch labels --json`, most used first. */
export const labelsOutputSchema = z.object({ schemaVersion, labels: z.array(z.object({ label: z.string(), images: z.number().int() })) });

/** `imgsearch doctor --json`. */
export const doctorOutputSchema = z.object({
  schemaVersion,
  home: z.string(),
  findings: z.array(
    z.object({
      kind: z.enum(['model-index-mismatch', 'stale-leases', 'orphaned-temp-files', 'duplicate-features']),
      detail: z.string(),
      /** What --repair did; null when not repaired. */
      repaired: z.string().nullable(),
    }),
  ),
});

/** `imgsearch ingest --json`: every file listed is accounted for once. */
export const ingestOutputSchema = z.object({
  schemaVersion,
  folder: z.string(),
  files: z.number().int(),
  indexed: z.number().int(),
  unchanged: z.number().int(),
  rejected: z.number().int(),
  rejectedByReason: z.record(z.string(), z.number().int()),
  rejections: z.array(z.object({ name: z.string(), reason: z.string(), detail: z.string() })),
  sidecars: z.number().int(),
  ignored: z.number().int(),
  superseded: z.number().int(),
  deadLettered: z.number().int(),
  pending: z.number().int(),
  modelVersion: z.string(),
});

/** `imgsearch rm --json`: one entry per id given. */
export const rmOutputSchema = z.object({
  schemaVersion,
  results: z.array(
    z.discriminatedUnion('status', [
      z.object({ id: z.string(), status: z.literal('removed'), uri: z.string(), fileDeleted: z.boolean() }),
      z.object({ id: z.string(), status: z.literal('not-found') }),
      z.object({ id: z.string(), status: z.literal('refused'), uri: z.string(), reason: z.string() }),
    ]),
  ),
});

/** `imgsearch model pull --json`. */
export const modelPullOutputSchema = z.object({ schemaVersion, version: z.string(), registered: z.boolean(), manifest: modelManifestSchema });

const spread = z.object({ p50: z.number(), p95: z.number(), max: z.number() }).nullable();
const rateOrNull = z.number().min(0).nullable();
/** One hour or day of prediction-monitoring figures (or the whole window): shared/services/monitoring.ts. */
export const monitorBucketSchema = z.object({
  start: z.string(),
  end: z.string(),
  searches: z.number().int(),
  byKind: z.object({ image: z.number().int(), text: z.number().int(), similar: z.number().int() }),
  zeroResults: z.number().int(),
  zeroResultRate: rateOrNull,
  lowScore: z.number().int(),
  lowScoreRate: rateOrNull,
  latencyMs: z.object({ total: spread, embed: spread, index: spread }),
  topScore: z.object({ p50: z.number(), mean: z.number(), min: z.number() }).nullable(),
  clicks: z.number().int(),
  clickedSearches: z.number().int(),
  clickThroughRate: rateOrNull,
  freshness: z.object({ count: z.number().int(), lagMs: spread }),
  modelVersions: z.record(z.string(), z.number().int()),
});

/** `imgsearch monitor --json` and `GET /api/monitor`. */
export const monitorOutputSchema = z.object({
  schemaVersion,
  since: z.string(),
  until: z.string(),
  by: z.enum(['hour', 'day']),
  lowScoreThreshold: z.number(),
  totals: monitorBucketSchema,
  unmatchedClicks: z.number().int(),
  buckets: z.array(monitorBucketSchema),
});
export type MonitorOutput = z.infer<typeof monitorOutputSchema>;
export type MonitorBucketOutput = z.infer<typeof monitorBucketSchema>;

/** `imgsearch tune --json`: every trial as an experiment run, the winner (best validation recall@1) and the gate's word on it. */
export const tuneOutputSchema = z.object({
  schemaVersion,
  study: z.string(),
  sampler: z.enum(['tpe', 'random']),
  parallel: z.number().int(),
  space: z.record(z.string(), z.object({ type: z.enum(['int', 'float', 'categorical']) }).loose()),
  runs: z.array(experimentRunSchema),
  /** Id of the winning run; null when no trial finished. */
  best: z.string().nullable(),
  decision: z.object({ promote: z.boolean(), reasons: z.array(z.string()), deltas: z.record(z.string(), z.number().nullable()) }).nullable(),
  promoted: z.boolean(),
  current: z.object({ version: z.string(), metrics: evaluationSchema }).nullable(),
  /** The index now live when promoted, else null. */
  index: activationOutputSchema.omit({ schemaVersion: true }).nullable(),
  seconds: z.number(),
});

/** `imgsearch runs list --json`: experiment runs, oldest first. */
export const runsListOutputSchema = z.object({ schemaVersion, runs: z.array(experimentRunSchema) });

/** `imgsearch runs show <id> --json`. */
export const runShowOutputSchema = experimentRunSchema.extend({ schemaVersion });

/** `imgsearch model quantize --json`: the int8 variant registered, its calibration and parity with float32. */
export const modelQuantizeOutputSchema = z.object({
  schemaVersion,
  version: z.string(),
  parent: z.string(),
  calibration: z.object({
    from: z.string(),
    images: z.number().int(),
    skipped: z.number().int(),
    method: z.enum(['percentile', 'minmax']),
    percentile: z.number().nullable(),
  }),
  parity: z.object({ images: z.number().int(), meanCosine: z.number().nullable(), minCosine: z.number().nullable() }),
  quantized: z.object({ convs: z.number().int(), qdqTensors: z.number().int() }),
  bytes: z.object({ fp32: z.number().int(), int8: z.number().int() }),
});

/** `imgsearch model compact --json`: the compact variant registered and its Recall@1 against the full vectors. */
export const modelCompactOutputSchema = z.object({
  schemaVersion,
  version: z.string(),
  parent: z.string(),
  dims: z.number().int(),
  whiten: z.boolean(),
  fittedOn: z.number().int(),
  explainedVariance: z.number(),
  recallAt1: z.object({ full: z.number(), compact: z.number(), queries: z.number().int() }).nullable(),
});

/** Every output, by the command that prints it (the README's table and the tests walk this). */
const driftSignalSchema = z.object({
  /** Vectors compared. */
  sample: z.number().int(),
  status: z.enum(['no-shift', 'drift', 'insufficient']),
  /** PSI per principal component over the reference deciles; `max` is the signal's PSI, `band` its usual reading (< 0.1 none, < 0.25 moderate, else major). */
  psi: z.object({ max: z.number(), band: z.enum(['none', 'moderate', 'major']), critical: z.number(), components: z.array(z.number()) }).nullable(),
  /** Two-sample Kolmogorov–Smirnov on the cosine distance to the reference centroid. */
  centroidKs: z.object({ d: z.number(), pValue: z.number() }).nullable(),
  /** Uploads: PSI of the label mix. */
  labelPsi: z.number().nullable(),
  findings: z.array(z.string()),
  /** Why the signal could not be read (its source failed). */
  error: z.string().optional(),
});

/** `imgsearch drift --json`: the active model's drift report now, and the retraining requests drift checks made (newest last). */
export const driftOutputSchema = z.object({
  schemaVersion,
  modelVersion: z.string(),
  checkedAt: z.string(),
  /** The model's reference profile; null when it has none (see `note`). */
  reference: z.object({ createdAt: z.string(), count: z.number().int(), components: z.number().int() }).nullable(),
  settings: z.object({
    recentUploads: z.number().int(),
    minSample: z.number().int(),
    psiThreshold: z.number(),
    ksThreshold: z.number(),
    minNewLabelled: z.number().int(),
    recallDrop: z.number(),
    cooldownHours: z.number(),
    servedBaseline: z.number().int(),
  }),
  /** queries: sampled image queries against the training profile; servedQueries: those served after the model's served-query reference, against it. */
  signals: z.object({ uploads: driftSignalSchema, queries: driftSignalSchema, servedQueries: driftSignalSchema }).nullable(),
  /** The profile of the model's first `servedBaseline` sampled queries (null until it has served that many). */
  servedReference: z.object({ createdAt: z.string(), count: z.number().int(), from: z.string(), until: z.string(), kept: z.boolean() }).nullable(),
  /** Recall@1 of the active model on labelled images not in its training snapshot, against its recorded figure. */
  recall: z
    .object({ newLabelled: z.number().int(), recallAt1: z.number().nullable(), recorded: z.number().nullable(), drop: z.number().nullable() })
    .nullable(),
  /** What a drift check would do now: `retrain` with its reasons, or why it holds back. */
  decision: driftDecisionSchema,
  note: z.string().optional(),
  /** The last check `up` (or the cloud's scheduled check) ran, when any. */
  lastCheck: driftLastCheckSchema,
  requests: z.array(driftRequestSchema),
});
export type DriftOutput = z.infer<typeof driftOutputSchema>;

export const OUTPUT_SCHEMAS = {
  search: searchOutputSchema,
  status: statusOutputSchema,
  'model list': modelListOutputSchema,
  'model promote / model rollback / index rollback': activationOutputSchema,
  'index versions': indexVersionsOutputSchema,
  'model rm / model prune': modelRemovalOutputSchema,
  'model pull': modelPullOutputSchema,
  'model quantize': modelQuantizeOutputSchema,
  'model compact': modelCompactOutputSchema,
  retrain: retrainOutputSchema,
  tune: tuneOutputSchema,
  'runs list': runsListOutputSchema,
  'runs show': runShowOutputSchema,
  eval: evalOutputSchema,
  labels: labelsOutputSchema,
  map: mapOutputSchema,
  doctor: doctorOutputSchema,
  ingest: ingestOutputSchema,
  rm: rmOutputSchema,
  monitor: monitorOutputSchema,
  drift: driftOutputSchema,
} as const;

/** `{ schemaVersion, ...value }`, typed by the schema it must satisfy. */
export function versioned<T extends z.ZodType>(_schema: T, value: Omit<z.input<T>, 'schemaVersion'>): z.input<T> {
  return { schemaVersion: OUTPUT_SCHEMA_VERSION, ...value } as z.input<T>;
}

/** A search answer as the CLI and the API print it (the API adds thumbnails and the feedback token). */
export function presentSearch(
  res: {
    modelVersion: string;
    query: { kind: 'image' | 'similar' | 'text'; value?: string };
    results: Array<{ id: string; uri: string; score: number; labels: string[]; caption?: string }>;
    feedback?: { queryId: string; token: string };
  },
  options: { thumbnails?: boolean } = {},
): SearchOutput {
  return {
    schemaVersion: OUTPUT_SCHEMA_VERSION,
    modelVersion: res.modelVersion,
    query: res.query,
    ...(res.feedback ? { queryId: res.feedback.queryId, feedbackToken: res.feedback.token } : {}),
    results: res.results.map((h) => ({
      id: h.id,
      uri: h.uri,
      name: h.uri.split('/').pop() ?? h.uri,
      score: Number(h.score.toFixed(6)),
      labels: h.labels,
      ...(h.caption !== undefined ? { caption: h.caption } : {}),
      ...(options.thumbnails ? { thumbnailUrl: `/api/images/${h.id}/thumbnail` } : {}),
    })),
  };
}

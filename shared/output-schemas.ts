import { z } from 'zod';
import { rejectedImageSchema } from './contracts.js';
import { modelManifestSchema } from './model/manifest.js';

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
const numbers = z.record(z.string(), z.number());

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

const evaluationSchema = z.object({
  modelVersion: z.string(),
  imageToImage: numbers,
  textToImage: numbers.nullable(),
  counts: z.object({ queries: z.number().int(), answerableQueries: z.number().int(), corpus: z.number().int(), textQueries: z.number().int() }),
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
      history: z.array(
        z.object({
          epoch: z.number().int(),
          loss: z.number(),
          imageImageLoss: z.number(),
          imageTextLoss: z.number(),
          validationRecallAt1: z.number().nullable(),
          temperature: z.number(),
          seconds: z.number(),
        }),
      ),
      bestEpoch: z.number().int(),
      seconds: z.number(),
      backend: z.string(),
      trainedExamples: z.number().int(),
      validationExamples: z.number().int(),
      hidden: z.number().int(),
    }),
  }),
  current: z.object({ version: z.string(), metrics: evaluationSchema }),
  /** The index now live when promoted, else null. */
  index: activationOutputSchema.omit({ schemaVersion: true }).nullable(),
  plot: z.string().nullable(),
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

/** Every output, by the command that prints it (the README's table and the tests walk this). */
export const OUTPUT_SCHEMAS = {
  search: searchOutputSchema,
  status: statusOutputSchema,
  'model list': modelListOutputSchema,
  'model promote / model rollback / index rollback': activationOutputSchema,
  'index versions': indexVersionsOutputSchema,
  'model rm / model prune': modelRemovalOutputSchema,
  'model pull': modelPullOutputSchema,
  retrain: retrainOutputSchema,
  eval: evalOutputSchema,
  labels: labelsOutputSchema,
  doctor: doctorOutputSchema,
  ingest: ingestOutputSchema,
  rm: rmOutputSchema,
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

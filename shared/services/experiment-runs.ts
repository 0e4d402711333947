import { z } from 'zod';
import { CorruptStateError, NotFoundError, ParseError } from '../errors.js';
import type { BlobStore } from '../ports/blob-store.js';

/**
 * Experiment runs: one record per tuning trial (shared/services/tuning.ts) — parameters, the
 * per-epoch curve, held-out metrics, the gate's decision, the data snapshot, duration, status —
 * kept beside the model registry: locally `<IMGSEARCH_HOME>/runs/<id>.json`, in the cloud
 * `runs/<id>.json` in the models bucket. `imgsearch runs list|show` reads them.
 */
/** One epoch of a training run's curve (also `retrain --json`'s `training.history`, shared/output-schemas.ts). */
export const epochSchema = z.object({
  epoch: z.number().int(),
  loss: z.number(),
  imageImageLoss: z.number(),
  imageTextLoss: z.number(),
  validationRecallAt1: z.number().nullable(),
  temperature: z.number(),
  seconds: z.number(),
});

const numbers = z.record(z.string(), z.number());
/** Held-out metrics of a model version (also `imgsearch eval --json`, shared/output-schemas.ts). */
export const evaluationSchema = z.object({
  modelVersion: z.string(),
  imageToImage: numbers,
  textToImage: numbers.nullable(),
  counts: z.object({ queries: z.number().int(), answerableQueries: z.number().int(), corpus: z.number().int(), textQueries: z.number().int() }),
});

export const experimentRunSchema = z.object({
  /** `<study>-t<trial>`. */
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/),
  /** The tuning run it belongs to, e.g. `tune-20261127230102-a1b2c3`. */
  study: z.string(),
  trial: z.number().int().min(1),
  /** `stopped`: ended early by the stopping rule (nothing registered); `failed`: see `reason`. */
  status: z.enum(['running', 'completed', 'stopped', 'failed']),
  params: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  curve: z.array(epochSchema),
  /** What trials are ranked on (validation Recall@1 at the epoch kept). */
  objective: z.object({ name: z.string(), value: z.number() }).nullable(),
  /** Held-out metrics of the trial's candidate (completed trials). */
  heldOut: evaluationSchema.nullable(),
  gate: z.object({ promote: z.boolean(), reasons: z.array(z.string()), deltas: z.record(z.string(), z.number().nullable()) }).nullable(),
  /** Registered candidate: kept for the study's best trial only (null once a losing candidate is removed). */
  modelVersion: z.string().nullable(),
  promoted: z.boolean(),
  /** Count + hash of the (id, generation) pairs trained and evaluated on (shared/services/retrain.ts dataSnapshot). */
  dataSnapshot: z.string(),
  parentModel: z.string(),
  seed: z.number().int(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  seconds: z.number().nullable(),
  /** Why it was stopped or failed. */
  reason: z.string().nullable(),
});
export type ExperimentRun = z.infer<typeof experimentRunSchema>;

/** Where experiment runs are kept (a port: the local folder and the models bucket implement it through {@link BlobStore}). */
export interface ExperimentRunStore {
  put(run: ExperimentRun): Promise<void>;
  get(id: string): Promise<ExperimentRun | null>;
  /** Oldest first (by start time, then trial). */
  list(): Promise<ExperimentRun[]>;
}

/** Runs as JSON objects `<prefix><id>.json` in a blob store (a folder locally, a bucket in the cloud). */
export class BlobExperimentRunStore implements ExperimentRunStore {
  constructor(
    private readonly blobs: BlobStore,
    private readonly prefix = '',
  ) {}

  async put(run: ExperimentRun): Promise<void> {
    const checked = experimentRunSchema.safeParse(run);
    if (!checked.success) throw new ParseError(`experiment run ${run.id} is invalid: ${checked.error.message}`, { cause: checked.error });
    await this.blobs.write(this.name(run.id), JSON.stringify(checked.data, null, 2), { contentType: 'application/json' });
  }

  async get(id: string): Promise<ExperimentRun | null> {
    if (!experimentRunSchema.shape.id.safeParse(id).success) return null;
    let bytes: Buffer;
    try {
      bytes = await this.blobs.read(this.name(id));
    } catch (err) {
      if (err instanceof NotFoundError || (err as { code?: unknown }).code === 'ENOENT') return null;
      throw err;
    }
    return this.parse(id, bytes);
  }

  async list(): Promise<ExperimentRun[]> {
    const runs: ExperimentRun[] = [];
    for await (const blob of this.blobs.list(this.prefix)) {
      const rest = blob.name.slice(this.prefix.length);
      if (!rest.endsWith('.json') || rest.includes('/')) continue;
      runs.push(this.parse(rest.slice(0, -'.json'.length), await this.blobs.read(blob.name)));
    }
    return runs.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.trial - b.trial));
  }

  private name(id: string): string {
    return `${this.prefix}${id}.json`;
  }

  private parse(id: string, bytes: Buffer): ExperimentRun {
    let json: unknown;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw new CorruptStateError(`experiment run ${this.blobs.uri(this.name(id))} is not JSON: delete it or restore it`, { cause: err });
    }
    const parsed = experimentRunSchema.safeParse(json);
    if (!parsed.success)
      throw new CorruptStateError(`experiment run ${this.blobs.uri(this.name(id))} is malformed: ${parsed.error.message}`, { cause: parsed.error });
    return parsed.data;
  }
}

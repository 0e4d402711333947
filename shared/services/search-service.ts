import { CapabilityError, NotFoundError } from '../errors.js';
import { performance } from 'node:perf_hooks';
import type { Embedder } from '../ports/embedder.js';
import { noSearchEvents, type SearchEventSink } from '../ports/search-events.js';
import type { Hit, QueryFilter, VectorIndex } from '../ports/vector-index.js';
import type { QueryVectorSink } from './drift.js';
import { ServedQueries } from './feedback.js';
import { searchEvent } from './monitoring.js';

export interface SearchRequest {
  k: number;
  filter?: QueryFilter;
  minScore?: number;
}

export interface SearchResponse {
  modelVersion: string;
  query: { kind: 'image' | 'similar' | 'text'; value?: string };
  results: Hit[];
  /** Identifies this answer; its token lets the page report clicks on these results, and only these (feedback.ts). */
  feedback?: { queryId: string; token: string };
}

/**
 * Queries answered with the active model against the live index. The index refuses vectors of
 * another model, and the query vector comes from the model the index was built with, so results
 * never mix two models.
 */
export class SearchService {
  /**
   * @param follow When given, a live index of another model makes the service load that model
   *   (the index decides: while a new index is being built for a promoted model, queries keep being
   *   answered by the old index with the old model, and switch when the alias does). Without it,
   *   such a mismatch is refused.
   * @param served What was served, for click feedback: a key shared by every instance (cloud), or a
   *   random one (one local process).
   * @param events Prediction monitoring: one event per answered search (services/monitoring.ts).
   *   Appending only queues it; a failing event log never fails or slows a search.
   */
  constructor(
    private readonly embedder: () => Embedder,
    private readonly index: () => Promise<VectorIndex | null>,
    private readonly follow?: (modelVersion: string) => Promise<Embedder>,
    readonly served: ServedQueries = new ServedQueries(),
    private readonly events: SearchEventSink = noSearchEvents,
  ) {}

  /** Where image query vectors are sampled for the drift report (drift.ts); none when null. */
  queryVectors: QueryVectorSink | null = null;

  /** The answer, with the token that lets clicks on exactly these results be recorded; its monitoring event is queued. */
  private answer(index: VectorIndex, query: SearchResponse['query'], results: Hit[], req: SearchRequest, clock: Clock): SearchResponse {
    const feedback = this.served.issue(
      query,
      results.map((h) => h.id),
    );
    try {
      const end = performance.now();
      this.events.append(
        searchEvent({
          at: new Date(),
          queryId: feedback.queryId,
          kind: query.kind,
          modelVersion: index.modelVersion,
          indexVersion: index.name,
          k: req.k,
          scores: results.map((h) => h.score),
          latencyMs: { embed: clock.vector - clock.live, index: end - clock.vector, total: end - clock.start },
        }),
      );
    } catch {
      // Monitoring must never cost a search its answer (the sink logs its own failures).
    }
    return { modelVersion: index.modelVersion, query, results, feedback };
  }

  private async live(): Promise<{ index: VectorIndex; embedder: Embedder }> {
    const index = await this.index();
    if (!index) throw new NotFoundError('nothing is indexed yet: add images to the bucket folder or run `imgsearch ingest <dir>`');
    let embedder = this.embedder();
    if (index.modelVersion !== embedder.modelVersion && this.follow) embedder = await this.follow(index.modelVersion);
    if (index.modelVersion !== embedder.modelVersion) {
      throw new CapabilityError(
        `the live index holds vectors of model ${index.modelVersion} but the loaded model is ${embedder.modelVersion}; wait for reindexing to finish or run \`imgsearch model rollback\``,
      );
    }
    return { index, embedder };
  }

  async byImage(image: Buffer, req: SearchRequest): Promise<SearchResponse> {
    const clock = startClock();
    const { index, embedder } = await this.live();
    clock.live = performance.now();
    const prepared = await embedder.prepare(image);
    const { vectors } = await embedder.embedDecoded([prepared]);
    // A sample write this query started (cloud: a batch under query-vectors/) runs alongside the
    // index query and is awaited before the answer leaves: Cloud Run gives the instance CPU only
    // while a request is open. The sink bounds the wait (2 s) and never rejects.
    const sampled = this.queryVectors?.add(embedder.modelVersion, vectors[0]!);
    try {
      clock.vector = performance.now();
      const results = await index.query(vectors[0]!, { k: req.k, filter: req.filter, minScore: req.minScore });
      return this.answer(index, { kind: 'image' }, results, req, clock);
    } finally {
      if (sampled) await sampled;
    }
  }

  async similarTo(id: string, req: SearchRequest): Promise<SearchResponse> {
    const clock = startClock();
    const { index } = await this.live();
    clock.live = performance.now();
    const doc = await index.get(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    clock.vector = performance.now();
    const filter: QueryFilter = { ...req.filter, excludeIds: [...(req.filter?.excludeIds ?? []), id] };
    const results = await index.query(doc.vector, { k: req.k, filter, minScore: req.minScore });
    return this.answer(index, { kind: 'similar', value: id }, results, req, clock);
  }

  async byText(text: string, req: SearchRequest): Promise<SearchResponse> {
    const clock = startClock();
    const { index, embedder } = await this.live();
    clock.live = performance.now();
    if (!embedder.hasTextTower) {
      throw new CapabilityError(
        `model ${embedder.modelVersion} has no text tower yet: run \`imgsearch retrain\` on labelled images (or \`imgsearch model pull clip-vit-b32\`) to enable text search`,
      );
    }
    const [vector] = await embedder.embedTexts([text]);
    clock.vector = performance.now();
    const results = await index.query(vector!, { k: req.k, filter: req.filter, minScore: req.minScore });
    return this.answer(index, { kind: 'text', value: text }, results, req, clock);
  }
}

/** When a search started, had its live index and model, and had its query vector (performance.now() ms). */
interface Clock {
  start: number;
  live: number;
  vector: number;
}

function startClock(): Clock {
  const start = performance.now();
  return { start, live: start, vector: start };
}

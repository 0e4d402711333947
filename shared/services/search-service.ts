import { CapabilityError, NotFoundError } from '../errors.js';
import type { Embedder } from '../ports/embedder.js';
import type { Hit, QueryFilter, VectorIndex } from '../ports/vector-index.js';
import { ServedQueries } from './feedback.js';

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
   */
  constructor(
    private readonly embedder: () => Embedder,
    private readonly index: () => Promise<VectorIndex | null>,
    private readonly follow?: (modelVersion: string) => Promise<Embedder>,
    readonly served: ServedQueries = new ServedQueries(),
  ) {}

  /** The answer, with the token that lets clicks on exactly these results be recorded. */
  private answer(modelVersion: string, query: SearchResponse['query'], results: Hit[]): SearchResponse {
    return {
      modelVersion,
      query,
      results,
      feedback: this.served.issue(
        query,
        results.map((h) => h.id),
      ),
    };
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
    const { index, embedder } = await this.live();
    const prepared = await embedder.prepare(image);
    const { vectors } = await embedder.embedDecoded([prepared]);
    const results = await index.query(vectors[0]!, { k: req.k, filter: req.filter, minScore: req.minScore });
    return this.answer(index.modelVersion, { kind: 'image' }, results);
  }

  async similarTo(id: string, req: SearchRequest): Promise<SearchResponse> {
    const { index } = await this.live();
    const doc = await index.get(id);
    if (!doc) throw new NotFoundError(`no indexed image has id ${id}`);
    const filter: QueryFilter = { ...req.filter, excludeIds: [...(req.filter?.excludeIds ?? []), id] };
    const results = await index.query(doc.vector, { k: req.k, filter, minScore: req.minScore });
    return this.answer(index.modelVersion, { kind: 'similar', value: id }, results);
  }

  async byText(text: string, req: SearchRequest): Promise<SearchResponse> {
    const { index, embedder } = await this.live();
    if (!embedder.hasTextTower) {
      throw new CapabilityError(
        `model ${embedder.modelVersion} has no text tower yet: run \`imgsearch retrain\` on labelled images (or \`imgsearch model pull clip-vit-b32\`) to enable text search`,
      );
    }
    const [vector] = await embedder.embedTexts([text]);
    const results = await index.query(vector!, { k: req.k, filter: req.filter, minScore: req.minScore });
    return this.answer(index.modelVersion, { kind: 'text', value: text }, results);
  }
}

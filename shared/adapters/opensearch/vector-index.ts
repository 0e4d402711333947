import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@opensearch-project/opensearch';
import { compareGenerations as compareGenerationsSafe } from '../../contracts.js';
import { ModelMismatchError, ParseError, TransientError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import type { AnnStatus, DeleteOutcome, DocumentGeneration, Hit, QueryOptions, UpsertOutcome, VectorDocument, VectorIndex } from '../../ports/vector-index.js';
import { actionLine, batchByBytes, checkGeneration, decodeDocument, encodeDocument, encodeTombstone, type StoredSource } from './documents.js';
import { OpenSearchBulkItemError } from './errors.js';
import { knnMethod, type IndexMeta } from './index-body.js';
import type { OpenSearchIndexOptions } from './options.js';
import { knnBehaviour, type ClusterVersion } from './cluster.js';
import { knnSearchBody, parseQueryOptions } from './query-dsl.js';
import type { UnrefreshedWrites } from './refresh.js';
import { backoffDelay, withRetry } from './retry.js';
import { scoreToCosine } from './scores.js';

export interface TransportParams {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD';
  path: string;
  body?: unknown;
  bulkBody?: string;
  querystring?: Record<string, unknown>;
}

/** One HTTP call with the adapter's retry policy; `ignore` statuses come back instead of throwing. */
export type Requester = <T = unknown>(
  what: string,
  params: TransportParams,
  ignore?: number[],
  /** Called on every failed attempt, retried or not. */
  onFailedAttempt?: () => void,
) => Promise<{ statusCode: number; body: T }>;

export function makeRequester(client: Client, options: OpenSearchIndexOptions, logger: Logger): Requester {
  return (what, params, ignore, onFailedAttempt) =>
    withRetry(what, options, logger, async () => {
      try {
        const res = await client.transport.request(params as Parameters<Client['transport']['request']>[0], {
          ignore,
          maxRetries: 0,
        });
        return { statusCode: res.statusCode ?? 0, body: res.body };
      } catch (err) {
        onFailedAttempt?.();
        throw err;
      }
    });
}

/** What the indices of one catalog share: its view of the cluster and of its own writes. */
export interface CatalogSession {
  /** Indices written with refresh=false and not refreshed since (see refresh.ts). */
  readonly unrefreshed: UnrefreshedWrites;
  /** The cluster's version (read once, `GET /`); null when it would not say. */
  clusterVersion(): Promise<ClusterVersion | null>;
}

interface BulkOp {
  id: string;
  body: string;
  /** A request carrying this op failed without an answer: it may have been applied. */
  maybeApplied: boolean;
}

interface ItemResult {
  status: number;
  result?: string;
  error?: { type?: string; reason?: string };
}

interface CurrentState {
  generation: string;
  deleted: boolean;
}

const NOT_DELETED = { bool: { must_not: [{ term: { deleted: true } }] } };

/**
 * One physical k-NN index. Ordering by generation is enforced by OpenSearch itself (external
 * versioning with version = generation), so concurrent writers cannot reorder it; a pre-flight
 * `_mget` of the generations tells created / updated / unchanged / stale apart exactly and keeps
 * vectors that would be refused off the wire. See the report for why `external` and not
 * `external_gte` for upserts: an equal generation must be refused (`unchanged`), not rewritten.
 */
export class OpenSearchVectorIndex implements VectorIndex {
  constructor(
    private readonly request: Requester,
    readonly name: string,
    private readonly meta: IndexMeta,
    private readonly options: OpenSearchIndexOptions,
    private readonly logger: Logger,
    private readonly session: CatalogSession,
  ) {}

  get modelVersion(): string {
    return this.meta.modelVersion;
  }

  get dimension(): number {
    return this.meta.dimension;
  }

  /**
   * OpenSearch keeps the HNSW graphs itself (one per segment, built as documents are refreshed), so
   * the index is always ready and nothing waits to be folded in beyond the refresh interval. The
   * method shown is the one the mapping was created with (engine and size from `_meta`).
   */
  async annStatus(): Promise<AnnStatus> {
    const method = knnMethod({ ...this.options, engine: this.meta.engine, spaceType: this.meta.spaceType }, this.meta.expectedDocs);
    return {
      state: 'ready',
      type: `${method.name}/${method.engine}`,
      params: { ...method.parameters, space_type: method.space_type, ef_search: this.options.efSearch, expected_docs: this.meta.expectedDocs ?? 0 },
      rowsIndexed: await this.count(),
      rowsUnindexed: 0,
      sizeBytes: null,
      lastBuildAt: null,
      lastBuildSeconds: null,
      building: null,
      maintainedBy: 'engine',
    };
  }

  async upsert(docs: VectorDocument[]): Promise<UpsertOutcome[]> {
    const generations = docs.map((d) => this.checkDocument(d));
    // Stryker disable next-line ArrayDeclaration: equivalent, every position is assigned before it is returned
    const outcomes: UpsertOutcome[] = new Array(docs.length);
    for (const round of roundsOfUniqueIds(docs.map((d) => d.id))) {
      const state = await this.currentState(round.map((i) => docs[i]!.id));
      const toSend: { i: number; op: BulkOp; expected: UpsertOutcome }[] = [];
      for (const i of round) {
        const doc = docs[i]!;
        const gen = generations[i]!;
        const cur = state.get(doc.id);
        const cmp = cur ? compareGenerationsSafe(gen, cur.generation) : 1;
        if (cur && cmp <= 0) outcomes[i] = !cur.deleted && cmp === 0 ? 'unchanged' : 'stale';
        else {
          const body = `${actionLine(this.name, doc.id, gen, 'external')}\n${encodeDocument(doc, gen)}\n`;
          toSend.push({ i, op: { id: doc.id, body, maybeApplied: false }, expected: cur && !cur.deleted ? 'updated' : 'created' });
        }
      }
      const results = await this.runBulk(
        toSend.map((s) => s.op),
        'upsert',
      );
      const conflicts: typeof toSend = [];
      for (const s of toSend) {
        const r = results.get(s.op)!;
        if (r.status === 200 || r.status === 201) outcomes[s.i] = r.result === 'created' ? 'created' : s.expected;
        else conflicts.push(s);
      }
      // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, with no conflicts currentState([]) sends nothing and the loop is empty
      if (conflicts.length > 0) {
        // Another writer (or our own earlier, unanswered attempt) got there first.
        const now = await this.currentState(conflicts.map((c) => c.op.id));
        for (const c of conflicts) {
          const cur = now.get(c.op.id);
          const same = cur !== undefined && !cur.deleted && compareGenerationsSafe(cur.generation, generations[c.i]!) === 0;
          outcomes[c.i] = same ? (c.op.maybeApplied ? c.expected : 'unchanged') : 'stale';
        }
      }
    }
    return outcomes;
  }

  async delete(items: { id: string; generation: string }[]): Promise<DeleteOutcome[]> {
    const generations = items.map((it) => checkGeneration(it.id, it.generation));
    // Stryker disable next-line ArrayDeclaration: equivalent, every position is assigned before it is returned
    const outcomes: DeleteOutcome[] = new Array(items.length);
    const at = new Date().toISOString();
    for (const round of roundsOfUniqueIds(items.map((it) => it.id))) {
      const state = await this.currentState(round.map((i) => items[i]!.id));
      const toSend: { i: number; op: BulkOp; expected: DeleteOutcome }[] = [];
      for (const i of round) {
        const { id } = items[i]!;
        const gen = generations[i]!;
        const cur = state.get(id);
        const cmp = cur ? compareGenerationsSafe(gen, cur.generation) : 1;
        if (cur && !cur.deleted && cmp < 0) outcomes[i] = 'stale';
        else if (cur && cur.deleted && cmp <= 0) outcomes[i] = 'absent';
        else {
          // external_gte: deleting the very generation that is indexed is the normal case.
          const body = `${actionLine(this.name, id, gen, 'external_gte')}\n${encodeTombstone(id, gen, this.modelVersion, at)}\n`;
          toSend.push({ i, op: { id, body, maybeApplied: false }, expected: cur && !cur.deleted ? 'deleted' : 'absent' });
        }
      }
      const results = await this.runBulk(
        toSend.map((s) => s.op),
        'delete',
      );
      const conflicts: typeof toSend = [];
      for (const s of toSend) {
        const r = results.get(s.op)!;
        if (r.status === 200 || r.status === 201) outcomes[s.i] = s.expected;
        else conflicts.push(s);
      }
      // Stryker disable next-line ConditionalExpression,EqualityOperator: equivalent, with no conflicts currentState([]) sends nothing and the loop is empty
      if (conflicts.length > 0) {
        const now = await this.currentState(conflicts.map((c) => c.op.id));
        for (const c of conflicts) {
          const cur = now.get(c.op.id);
          if (cur && !cur.deleted) outcomes[c.i] = 'stale';
          else outcomes[c.i] = c.op.maybeApplied ? c.expected : 'absent';
        }
      }
    }
    return outcomes;
  }

  async query(vector: Float32Array, options: QueryOptions): Promise<Hit[]> {
    const opts = parseQueryOptions(options);
    if (vector.length !== this.dimension) {
      throw new ModelMismatchError(
        `Query vector has dimension ${vector.length}; index ${this.name} holds ${this.dimension}-d vectors of model ${this.modelVersion}`,
      );
    }
    if (!vector.every(Number.isFinite)) throw new ParseError('Query vector holds NaN or Infinity');
    // Near-real-time on purpose: a query never forces a refresh (see refresh.ts).
    const behaviour = knnBehaviour(this.meta.engine, this.meta.spaceType, await this.session.clusterVersion());
    const body = knnSearchBody(vector, opts, this.meta.spaceType, behaviour);
    const res = await this.request<SearchResponse>('k-NN query', { method: 'POST', path: `/${encodeURIComponent(this.name)}/_search`, body });
    const hits: Hit[] = [];
    for (const h of res.body.hits?.hits ?? []) {
      const score = scoreToCosine(h._score ?? 0, this.meta.spaceType, behaviour.legacyNativeCosine);
      // Stryker disable next-line ConditionalExpression: equivalent, `score < undefined` is false as well
      if (opts.minScore !== undefined && score < opts.minScore) continue;
      const s = h._source;
      hits.push({
        id: h._id,
        uri: s.uri ?? '',
        score,
        generation: String(s.generation),
        labels: s.labels ?? [],
        ...(s.caption !== undefined ? { caption: s.caption } : {}),
        modelVersion: s.modelVersion ?? this.modelVersion,
      });
    }
    return hits.slice(0, opts.k);
  }

  async get(id: string): Promise<VectorDocument | null> {
    const res = await this.request<{ found?: boolean; _source?: StoredSource }>(
      `get ${id}`,
      {
        // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
        method: 'GET',
        path: `/${encodeURIComponent(this.name)}/_doc/${encodeURIComponent(id)}`,
      },
      [404],
    );
    // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent, a 404 or found:false answer has no _source either
    if (res.statusCode === 404 || !res.body.found || !res.body._source || res.body._source.deleted) return null;
    return decodeDocument(res.body._source);
  }

  /** Counts every document written through this catalog: its own writes are refreshed first. */
  async count(): Promise<number> {
    await this.refreshOwnWrites();
    const res = await this.request<{ count: number }>('count', {
      method: 'POST',
      path: `/${encodeURIComponent(this.name)}/_count`,
      body: { query: NOT_DELETED },
    });
    return res.body.count;
  }

  /**
   * Keyset pages sorted on `id` (doc values), so each live document comes exactly once; like
   * count(), it sees every write made through this catalog.
   */
  async *scan(batchSize = 500): AsyncIterable<VectorDocument[]> {
    for await (const page of this.sourcePages(batchSize)) yield page.map((s) => decodeDocument(s));
  }

  /** Id, uri and generation of every live document: the same pages without the vectors (source filtering). */
  async *scanGenerations(batchSize = 5000): AsyncIterable<DocumentGeneration[]> {
    for await (const page of this.sourcePages(batchSize, ['vector'])) {
      yield page.map((s) => ({ id: s.id, uri: s.uri ?? '', generation: String(s.generation) }));
    }
  }

  /** Keyset pages of live documents' sources sorted on `id`, fields in `excludes` left out. */
  private async *sourcePages(batchSize: number, excludes: string[] = []): AsyncIterable<StoredSource[]> {
    await this.refreshOwnWrites();
    const size = Math.max(1, Math.min(batchSize, 10_000));
    let after: string | undefined;
    for (;;) {
      const body: Record<string, unknown> = { size, query: NOT_DELETED, sort: [{ id: 'asc' }] };
      if (excludes.length > 0) body._source = { excludes };
      if (after !== undefined) body.search_after = [after];
      const res = await this.request<SearchResponse>('scan', { method: 'POST', path: `/${encodeURIComponent(this.name)}/_search`, body });
      const page = res.body.hits?.hits ?? [];
      if (page.length === 0) return;
      yield page.map((h) => h._source);
      if (page.length < size) return;
      after = page[page.length - 1]!._source.id;
    }
  }

  /**
   * `POST <index>/_refresh` when this catalog wrote here with refresh=false since the last one:
   * `_count` and `_search` read the index as of its last refresh ("Refresh Index API").
   */
  private refreshOwnWrites(): Promise<void> {
    return this.session.unrefreshed.refreshIfWritten(this.name, async () => {
      await this.request('refresh', { method: 'POST', path: `/${encodeURIComponent(this.name)}/_refresh` });
    });
  }

  /** Before any request: a vector of another model must never be mixed into this index. */
  private checkDocument(doc: VectorDocument): string {
    if (doc.modelVersion !== this.modelVersion) {
      throw new ModelMismatchError(`Document ${doc.id} was embedded by model ${doc.modelVersion}, but index ${this.name} holds model ${this.modelVersion}`, {
        meta: { id: doc.id, index: this.name },
      });
    }
    if (doc.vector.length !== this.dimension) {
      throw new ModelMismatchError(
        `Document ${doc.id} has a vector of dimension ${doc.vector.length}; index ${this.name} holds dimension ${this.dimension} (model ${this.modelVersion})`,
        {
          meta: { id: doc.id, index: this.name },
        },
      );
    }
    if (!doc.vector.every(Number.isFinite)) throw new ParseError(`Document ${doc.id}: vector holds NaN or Infinity`);
    if (!doc.id) throw new ParseError('Document without an id');
    return checkGeneration(doc.id, doc.generation);
  }

  async generations(ids: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const [id, state] of await this.currentState([...new Set(ids)])) if (!state.deleted) out.set(id, state.generation);
    return out;
  }

  /** Generation and tombstone flag of each id that exists, from one `_mget`. */
  private async currentState(ids: string[]): Promise<Map<string, CurrentState>> {
    const state = new Map<string, CurrentState>();
    if (ids.length === 0) return state;
    const res = await this.request<{ docs: { _id: string; found?: boolean; _source?: Partial<StoredSource> }[] }>('read generations', {
      method: 'POST',
      path: `/${encodeURIComponent(this.name)}/_mget`,
      querystring: { _source_includes: 'generation,deleted' },
      body: { ids },
    });
    // Stryker disable next-line ArrayDeclaration: equivalent, a string element has no `found`, so it is skipped like no element
    for (const d of res.body.docs ?? []) {
      // Stryker disable next-line OptionalChaining: equivalent, a found document always has _source (kept by the mapping; {} when the included fields are absent)
      if (d.found && d._source?.generation !== undefined) {
        state.set(d._id, { generation: String(d._source.generation), deleted: d._source.deleted === true });
      }
    }
    return state;
  }

  /**
   * Sends operations in bulks of at most `bulkMaxBytes`. A failed request is retried whole; items
   * answered 429 / 5xx are retried alone with backoff; 409 comes back to the caller; any other
   * item error fails the call, naming the documents.
   */
  private async runBulk(ops: BulkOp[], action: 'upsert' | 'delete'): Promise<Map<BulkOp, ItemResult>> {
    const results = new Map<BulkOp, ItemResult>();
    const fatal: { id: string; status: number; type: string; reason: string }[] = [];
    let pending = ops;
    // Stryker disable next-line EqualityOperator: equivalent, an empty round ends at `retry.length === 0` below
    for (let attempt = 0; pending.length > 0; attempt++) {
      const retry: BulkOp[] = [];
      for (const batch of batchByBytes(pending, this.options.bulkMaxBytes)) {
        const items = await this.sendBulk(batch);
        batch.forEach((op, k) => {
          const item = items[k]!;
          if (item.status === 429 || item.status >= 500) retry.push(op);
          else if (item.status >= 400 && item.status !== 409) {
            fatal.push({ id: op.id, status: item.status, type: item.error?.type ?? 'error', reason: item.error?.reason ?? '' });
          } else results.set(op, item);
        });
      }
      if (retry.length === 0) break;
      if (attempt >= this.options.maxRetries) {
        throw new TransientError(
          `OpenSearch kept refusing ${retry.length} ${action}(s) in ${this.name} (429/5xx) after ${attempt + 1} attempts: ${retry
            .slice(0, 10)
            .map((o) => o.id)
            .join(', ')}`,
          { meta: { index: this.name, ids: retry.map((o) => o.id) } },
        );
      }
      const delayMs = backoffDelay(attempt, this.options);
      // Stryker disable next-line ObjectLiteral,ArithmeticOperator,StringLiteral: log fields and wording only
      this.logger.warn({ index: this.name, action, items: retry.length, attempt: attempt + 1, delayMs }, 'bulk items throttled; retrying them');
      await sleep(delayMs);
      pending = retry;
    }
    if (fatal.length > 0) throw new OpenSearchBulkItemError(fatal, action, this.name);
    return results;
  }

  private async sendBulk(batch: BulkOp[]): Promise<ItemResult[]> {
    const querystring: Record<string, unknown> = {};
    // wait_for / true: the answer comes once the writes are searchable. false: the next refresh
    // makes them so, and count()/scan() refresh first (see refresh.ts).
    const unrefreshed = this.options.refresh === false;
    if (unrefreshed) this.session.unrefreshed.wrote(this.name);
    else querystring.refresh = this.options.refresh;
    let res: { statusCode: number; body: BulkResponse };
    try {
      res = await this.request<BulkResponse>(
        `bulk ${this.name}`,
        { method: 'POST', path: '/_bulk', bulkBody: batch.map((op) => op.body).join(''), querystring },
        undefined,
        // A request that failed (reset, timeout, 5xx) may still have been applied: a 409 on its
        // retry then means "our own write", not "unchanged".
        () => batch.forEach((op) => (op.maybeApplied = true)),
      );
    } finally {
      if (unrefreshed) this.session.unrefreshed.wrote(this.name);
    }
    if (res.body.items?.length !== batch.length) {
      throw new TransientError(`OpenSearch bulk answer for ${this.name} has ${res.body.items?.length ?? 0} items for ${batch.length} operations`);
    }
    return res.body.items.map((it) => {
      const r = Object.values(it)[0]!;
      return { status: r.status, result: r.result, error: r.error };
    });
  }
}

interface SearchResponse {
  hits?: { hits: { _id: string; _score?: number; _source: StoredSource }[] };
}

interface BulkResponse {
  errors?: boolean;
  items: Record<string, { _id?: string; status: number; result?: string; error?: { type?: string; reason?: string } }>[];
}

/** Positions split so that no id occurs twice in one round (a bulk of one id is order-sensitive). */
function roundsOfUniqueIds(ids: string[]): number[][] {
  const rounds: number[][] = [];
  const seen = new Map<string, number>();
  ids.forEach((id, i) => {
    const r = seen.get(id) ?? 0;
    seen.set(id, r + 1);
    (rounds[r] ??= []).push(i);
  });
  return rounds;
}

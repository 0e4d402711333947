import type { Client } from '@opensearch-project/opensearch';
import { z } from 'zod';
import { IssError, NotFoundError, ParseError } from '../../errors.js';
import { createLogger, type Logger } from '../../logger.js';
import type { IndexVersionInfo, VectorIndex, VectorIndexCatalog } from '../../ports/vector-index.js';
import { createOpenSearchClient, type OpenSearchConnectionOptions } from './client.js';
import { OpenSearchRequestError } from './errors.js';
import { catalogIndexBody, indexBody, type IndexMeta } from './index-body.js';
import { parseOpenSearchIndexOptions, type OpenSearchIndexOptions, type OpenSearchIndexOptionsInput } from './options.js';
import { makeRequester, OpenSearchVectorIndex, type Requester } from './vector-index.js';

const indexMetaSchema = z.object({
  modelVersion: z.string().min(1),
  dimension: z.number().int().min(1),
  createdAt: z.string(),
  engine: z.enum(['lucene', 'faiss', 'nmslib']).default('lucene'),
  spaceType: z.enum(['cosinesimil', 'innerproduct']).default('cosinesimil'),
  alias: z.string().default(''),
});

const catalogStateSchema = z.object({
  alias: z.string(),
  live: z.string().nullable().optional(),
  previous: z.string().nullable().optional(),
  updatedAt: z.string().optional(),
});
type CatalogState = z.infer<typeof catalogStateSchema>;

const STATE_ID = 'state';

/**
 * Physical indices `<alias>-v<N>` behind one alias. The alias moves in ONE `_aliases` call
 * (remove the old target + add the new one), which OpenSearch applies atomically, so searches
 * never see zero or two targets. The previous target is kept in the small `<alias>-catalog`
 * index for `rollback`.
 */
export class OpenSearchIndexCatalog implements VectorIndexCatalog {
  private readonly request: Requester;
  private readonly versionPattern: RegExp;

  constructor(
    private readonly client: Client,
    readonly options: OpenSearchIndexOptions,
    private readonly logger: Logger = createLogger({ name: 'opensearch' }),
    private readonly ownsClient = true,
  ) {
    this.request = makeRequester(client, options, logger);
    this.versionPattern = new RegExp(`^${options.alias}-v(\\d+)$`);
  }

  get alias(): string {
    return this.options.alias;
  }

  private get catalogIndex(): string {
    return `${this.alias}-catalog`;
  }

  async live(): Promise<VectorIndex | null> {
    const targets = await this.aliasTargets();
    if (targets.length === 0) return null;
    if (targets.length > 1) {
      throw new IssError(`Alias ${this.alias} points at ${targets.length} indices (${targets.join(', ')}); expected one. Fix it with swapAlias.`);
    }
    return this.open(targets[0]!);
  }

  async ensureLive(modelVersion: string, dimension: number): Promise<VectorIndex> {
    const live = await this.live();
    if (live) return live;
    const created = await this.createVersion(modelVersion, dimension);
    await this.swapAlias(created.name);
    return created;
  }

  async createVersion(modelVersion: string, dimension: number): Promise<VectorIndex> {
    if (!modelVersion) throw new ParseError('createVersion: modelVersion is required');
    if (!Number.isInteger(dimension) || dimension < 1 || dimension > 16_000) {
      throw new ParseError(`createVersion: dimension must be a whole number from 1 to 16000 (the knn_vector limit), got ${dimension}`);
    }
    // Two creators may pick the same N; the loser sees resource_already_exists and takes the next.
    for (let tries = 0; tries < 5; tries++) {
      const n = Math.max(0, ...(await this.versionNames()).map((v) => this.versionNumber(v))) + 1;
      const name = `${this.alias}-v${n}`;
      const meta: IndexMeta = {
        modelVersion,
        dimension,
        createdAt: new Date().toISOString(),
        engine: this.options.engine,
        spaceType: this.options.spaceType,
        alias: this.alias,
      };
      const res = await this.request<{ error?: { type?: string } }>(
        `create index ${name}`,
        { method: 'PUT', path: `/${name}`, body: indexBody(meta, this.options) },
        [400],
      );
      if (res.statusCode === 400) {
        if (res.body.error?.type === 'resource_already_exists_exception') continue;
        throw new OpenSearchRequestError(`OpenSearch refused to create index ${name}: ${JSON.stringify(res.body.error)}`);
      }
      this.logger.info({ index: name, modelVersion, dimension, engine: meta.engine }, 'created index version');
      return new OpenSearchVectorIndex(this.request, name, meta, this.options, this.logger);
    }
    throw new IssError(`Could not create a new version of ${this.alias}: names kept being taken by concurrent creators`);
  }

  async open(name: string): Promise<VectorIndex> {
    this.checkVersionName(name);
    const res = await this.request<Record<string, { mappings?: { _meta?: unknown } }>>(
      `read mapping of ${name}`,
      { method: 'GET', path: `/${name}/_mapping` },
      [404],
    );
    if (res.statusCode === 404) throw new NotFoundError(`Index version ${name} does not exist`);
    const mapping = res.body[name] ?? Object.values(res.body)[0];
    const meta = indexMetaSchema.safeParse(mapping?.mappings?._meta);
    if (!meta.success) throw new IssError(`Index ${name} has no model version in its mapping _meta: it was not created by this adapter`);
    return new OpenSearchVectorIndex(this.request, name, meta.data, this.options, this.logger);
  }

  async versions(): Promise<IndexVersionInfo[]> {
    const res = await this.request<Record<string, { mappings?: { _meta?: unknown } }>>('list index versions', {
      method: 'GET',
      path: `/${this.alias}-v*/_mapping`,
    });
    const live = new Set(await this.aliasTargets());
    const out: IndexVersionInfo[] = [];
    for (const [name, m] of Object.entries(res.body)) {
      if (!this.versionPattern.test(name)) continue;
      const meta = indexMetaSchema.safeParse(m.mappings?._meta);
      if (!meta.success) continue;
      const index = new OpenSearchVectorIndex(this.request, name, meta.data, this.options, this.logger);
      out.push({
        name,
        modelVersion: meta.data.modelVersion,
        dimension: meta.data.dimension,
        createdAt: meta.data.createdAt,
        count: await index.count(),
        live: live.has(name),
      });
    }
    return out.sort((a, b) => this.versionNumber(a.name) - this.versionNumber(b.name));
  }

  async swapAlias(name: string): Promise<string | null> {
    this.checkVersionName(name);
    await this.open(name); // NotFoundError before touching the alias
    const targets = await this.aliasTargets();
    const previous = targets[0] ?? null;
    if (targets.length === 1 && previous === name) return previous;
    const actions = [
      ...targets.filter((t) => t !== name).map((t) => ({ remove: { index: t, alias: this.alias } })),
      { add: { index: name, alias: this.alias } },
    ];
    await this.request('swap alias', { method: 'POST', path: '/_aliases', body: { actions } });
    await this.writeState({ alias: this.alias, live: name, previous, updatedAt: new Date().toISOString() });
    this.logger.info({ alias: this.alias, live: name, previous }, 'alias swapped');
    return previous;
  }

  async rollback(): Promise<string> {
    const state = await this.readState();
    const previous = state?.previous;
    if (!previous) throw new IssError(`Cannot roll back alias ${this.alias}: there is no previous index version`);
    if (!(await this.exists(previous))) {
      throw new IssError(`Cannot roll back alias ${this.alias}: the previous version ${previous} was dropped`);
    }
    await this.swapAlias(previous);
    return previous;
  }

  async dropVersion(name: string): Promise<void> {
    this.checkVersionName(name);
    const targets = await this.aliasTargets();
    if (targets.includes(name)) throw new IssError(`Cannot drop ${name}: alias ${this.alias} points at it (swap the alias first)`);
    const res = await this.request('drop index', { method: 'DELETE', path: `/${name}` }, [404]);
    if (res.statusCode === 404) throw new NotFoundError(`Index version ${name} does not exist`);
    const state = await this.readState();
    if (state?.previous === name) await this.writeState({ ...state, previous: null, updatedAt: new Date().toISOString() });
    this.logger.info({ index: name }, 'dropped index version');
  }

  async close(): Promise<void> {
    if (this.ownsClient) await this.client.close();
  }

  private async aliasTargets(): Promise<string[]> {
    const res = await this.request<Record<string, unknown>>('resolve alias', { method: 'GET', path: `/_alias/${this.alias}` }, [404]);
    if (res.statusCode === 404) return [];
    return Object.keys(res.body).filter((k) => k !== 'error' && k !== 'status');
  }

  private async versionNames(): Promise<string[]> {
    const res = await this.request<Record<string, unknown>>('list index versions', { method: 'GET', path: `/${this.alias}-v*/_mapping` });
    return Object.keys(res.body).filter((n) => this.versionPattern.test(n));
  }

  private async exists(name: string): Promise<boolean> {
    const res = await this.request('index exists', { method: 'HEAD', path: `/${name}` }, [404]);
    return res.statusCode === 200;
  }

  private versionNumber(name: string): number {
    return Number(this.versionPattern.exec(name)?.[1] ?? 0);
  }

  private checkVersionName(name: string): void {
    if (!this.versionPattern.test(name)) {
      throw new NotFoundError(`${JSON.stringify(name)} is not a version of alias ${this.alias} (expected ${this.alias}-v<N>)`);
    }
  }

  private async readState(): Promise<CatalogState | null> {
    const res = await this.request<{ found?: boolean; _source?: unknown }>(
      'read alias catalog',
      { method: 'GET', path: `/${this.catalogIndex}/_doc/${STATE_ID}` },
      [404],
    );
    if (res.statusCode === 404 || !res.body.found) return null;
    const parsed = catalogStateSchema.safeParse(res.body._source);
    return parsed.success ? parsed.data : null;
  }

  private async writeState(state: CatalogState): Promise<void> {
    const created = await this.request<{ error?: { type?: string } }>(
      'create alias catalog',
      { method: 'PUT', path: `/${this.catalogIndex}`, body: catalogIndexBody(this.options) },
      [400],
    );
    if (created.statusCode === 400 && created.body.error?.type !== 'resource_already_exists_exception') {
      throw new OpenSearchRequestError(`OpenSearch refused to create ${this.catalogIndex}: ${JSON.stringify(created.body.error)}`);
    }
    await this.request('write alias catalog', {
      method: 'PUT',
      path: `/${this.catalogIndex}/_doc/${STATE_ID}`,
      querystring: { refresh: 'wait_for' },
      body: state,
    });
  }
}

export type OpenOpenSearchCatalogConfig = OpenSearchConnectionOptions & OpenSearchIndexOptionsInput & { logger?: Logger };

/** The catalog the CLI and the cloud functions use: `LocalConfig['opensearch']` plus tuning. */
export async function openOpenSearchCatalog(config: OpenOpenSearchCatalogConfig): Promise<OpenSearchIndexCatalog> {
  const { url, username, password, caFile, requestTimeoutMs, logger, ...tuning } = config;
  const options = parseOpenSearchIndexOptions(tuning);
  const client = createOpenSearchClient({ url, username, password, caFile, requestTimeoutMs });
  return new OpenSearchIndexCatalog(client, options, logger);
}

import type { Client } from '@opensearch-project/opensearch';
import { z } from 'zod';
import { AppError, NotFoundError } from '../../errors.js';
import { createLogger, type Logger } from '../../logger.js';
import type { IndexVersionInfo, VectorIndex } from '../../ports/vector-index.js';
import { BaseIndexCatalog } from '../index-catalog-base.js';
import { createOpenSearchClient, type OpenSearchConnectionOptions } from './client.js';
import { parseClusterVersion, type ClusterVersion } from './cluster.js';
import { OpenSearchRequestError } from './errors.js';
import { catalogIndexBody, indexBody, type IndexMeta } from './index-body.js';
import { parseOpenSearchIndexOptions, type OpenSearchIndexOptions, type OpenSearchIndexOptionsInput } from './options.js';
import { UnrefreshedWrites } from './refresh.js';
import { makeRequester, OpenSearchVectorIndex, type CatalogSession, type Requester } from './vector-index.js';

const indexMetaSchema = z.object({
  modelVersion: z.string().min(1),
  dimension: z.number().int().min(1),
  createdAt: z.string(),
  engine: z.enum(['lucene', 'faiss', 'nmslib']).default('lucene'),
  spaceType: z.enum(['cosinesimil', 'innerproduct']).default('cosinesimil'),
  alias: z.string().default(''),
  expectedDocs: z.number().int().min(0).optional(),
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
 * Physical indices `<alias>-v<N>` behind one alias (the rules are BaseIndexCatalog's). The alias
 * moves in ONE `_aliases` call (remove the old target + add the new one), which OpenSearch
 * applies atomically, so searches never see zero or two targets. The previous target is kept in
 * the small `<alias>-catalog` index for `rollback`.
 */
export class OpenSearchIndexCatalog extends BaseIndexCatalog {
  private readonly request: Requester;
  protected readonly dimensionLimit = { max: 16_000, reason: 'the knn_vector limit' };
  private version: Promise<ClusterVersion | null> | undefined;
  /** Shared by every index this catalog opens, so a count sees the writes of any of them. */
  private readonly session: CatalogSession = {
    unrefreshed: new UnrefreshedWrites(),
    clusterVersion: () => this.clusterVersion(),
  };

  constructor(
    private readonly client: Client,
    readonly options: OpenSearchIndexOptions,
    // Stryker disable next-line ObjectLiteral,StringLiteral: the default logger's name is a log field only
    private readonly logger: Logger = createLogger({ name: 'opensearch' }),
    private readonly ownsClient = true,
  ) {
    super();
    this.request = makeRequester(client, options, logger);
  }

  get alias(): string {
    return this.options.alias;
  }

  private get catalogIndex(): string {
    return `${this.alias}-catalog`;
  }

  async open(name: string): Promise<VectorIndex> {
    this.checkVersionName(name);
    const res = await this.request<Record<string, { mappings?: { _meta?: unknown } }>>(
      `read mapping of ${name}`,
      {
        // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
        method: 'GET',
        path: `/${name}/_mapping`,
      },
      [404],
    );
    if (res.statusCode === 404) throw new NotFoundError(`Index version ${name} does not exist`);
    const mapping = res.body[name] ?? Object.values(res.body)[0];
    const meta = indexMetaSchema.safeParse(mapping?.mappings?._meta);
    if (!meta.success) throw new AppError(`Index ${name} has no model version in its mapping _meta: it was not created by this adapter`);
    return new OpenSearchVectorIndex(this.request, name, meta.data, this.options, this.logger, this.session);
  }

  async versions(): Promise<IndexVersionInfo[]> {
    const res = await this.request<Record<string, { mappings?: { _meta?: unknown } }>>('list index versions', {
      // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
      method: 'GET',
      path: `/${this.alias}-v*/_mapping`,
    });
    const live = new Set(await this._aliasTargets());
    const out: IndexVersionInfo[] = [];
    for (const [name, m] of Object.entries(res.body)) {
      if (!this.isVersionName(name)) continue;
      const meta = indexMetaSchema.safeParse(m.mappings?._meta);
      if (!meta.success) continue;
      const index = new OpenSearchVectorIndex(this.request, name, meta.data, this.options, this.logger, this.session);
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

  async close(): Promise<void> {
    if (this.ownsClient) await this.client.close();
  }

  protected async _versionNames(): Promise<string[]> {
    const res = await this.request<Record<string, unknown>>('list index versions', {
      // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
      method: 'GET',
      path: `/${this.alias}-v*/_mapping`,
    });
    return Object.keys(res.body);
  }

  protected async _createVersion(name: string, modelVersion: string, dimension: number): Promise<VectorIndex | null> {
    const meta: IndexMeta = {
      modelVersion,
      dimension,
      createdAt: new Date().toISOString(),
      engine: this.options.engine,
      spaceType: this.options.spaceType,
      alias: this.alias,
      // A new version (a reindex) will hold about as many documents as the live one: its HNSW graph is sized for them.
      expectedDocs: await this.live().then(
        (live) => live?.count() ?? 0,
        () => 0,
      ),
    };
    const res = await this.request<{ error?: { type?: string } }>(
      `create index ${name}`,
      { method: 'PUT', path: `/${name}`, body: indexBody(meta, this.options) },
      [400],
    );
    if (res.statusCode === 400) {
      if (res.body.error?.type === 'resource_already_exists_exception') return null;
      throw new OpenSearchRequestError(`OpenSearch refused to create index ${name}: ${JSON.stringify(res.body.error)}`);
    }
    // Stryker disable next-line ObjectLiteral,StringLiteral: log fields and wording only
    this.logger.info({ index: name, modelVersion, dimension, engine: meta.engine }, 'created index version');
    return new OpenSearchVectorIndex(this.request, name, meta, this.options, this.logger, this.session);
  }

  protected async _aliasTargets(): Promise<string[]> {
    const res = await this.request<Record<string, unknown>>(
      'resolve alias',
      {
        // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
        method: 'GET',
        path: `/_alias/${this.alias}`,
      },
      [404],
    );
    // Each of the next two lines covers for the other: the 404 answer ("alias [x] missing") has only
    // the keys error and status, and no other answer has them.
    // Stryker disable next-line ConditionalExpression: equivalent, the filter below makes [] of the 404 answer too
    if (res.statusCode === 404) return [];
    // Stryker disable next-line MethodExpression,ConditionalExpression,LogicalOperator,StringLiteral: equivalent, only the 404 answer handled above has these keys
    return Object.keys(res.body).filter((k) => k !== 'error' && k !== 'status');
  }

  protected async _pointAlias(name: string, targets: string[], previous: string | null): Promise<void> {
    const actions = [
      ...targets.filter((t) => t !== name).map((t) => ({ remove: { index: t, alias: this.alias } })),
      { add: { index: name, alias: this.alias } },
    ];
    await this.request('swap alias', { method: 'POST', path: '/_aliases', body: { actions } });
    await this.writeState({ alias: this.alias, live: name, previous, updatedAt: new Date().toISOString() });
    // Stryker disable next-line ObjectLiteral,StringLiteral: log fields and wording only
    this.logger.info({ alias: this.alias, live: name, previous }, 'alias swapped');
  }

  protected async _previous(): Promise<string | null> {
    return (await this.readState())?.previous ?? null;
  }

  protected async _forgetPrevious(name: string): Promise<void> {
    const state = await this.readState();
    if (state?.previous === name) await this.writeState({ ...state, previous: null, updatedAt: new Date().toISOString() });
  }

  protected async _exists(name: string): Promise<boolean> {
    // Stryker disable next-line ArrayDeclaration: equivalent, the driver never throws on a 404 answer to HEAD (Transport.js: ignoreStatusCode)
    const res = await this.request('index exists', { method: 'HEAD', path: `/${name}` }, [404]);
    return res.statusCode === 200;
  }

  protected async _drop(name: string): Promise<boolean> {
    const res = await this.request('drop index', { method: 'DELETE', path: `/${name}` }, [404]);
    if (res.statusCode === 404) return false;
    // Stryker disable next-line ObjectLiteral,StringLiteral: log fields and wording only
    this.logger.info({ index: name }, 'dropped index version');
    return true;
  }

  /** Read once per catalog (a failed read is tried again next time). */
  private clusterVersion(): Promise<ClusterVersion | null> {
    if (!this.version) {
      this.version = this.readClusterVersion();
      this.version.catch(() => (this.version = undefined));
    }
    return this.version;
  }

  /**
   * `GET /` ("version.number"): the k-NN plugin's filters and cosine scores depend on it (see
   * cluster.ts). A cluster that will not say (403) is taken to be current, with a warning.
   */
  private async readClusterVersion(): Promise<ClusterVersion | null> {
    const res = await this.request<{ version?: { number?: string } }>(
      'read cluster version',
      // Stryker disable next-line ObjectLiteral,StringLiteral: equivalent, the HTTP client sends GET / for an empty method and path
      { method: 'GET', path: '/' },
      [403, 404],
    );
    // Stryker disable next-line ConditionalExpression: equivalent, a 403 or 404 answer has no version number (parseClusterVersion gives null)
    const version = res.statusCode === 200 ? parseClusterVersion(res.body.version?.number) : null;
    if (!version) {
      this.logger.warn(
        // Stryker disable next-line OptionalChaining: equivalent, the driver always gives a body (an object, or '' when empty)
        { status: res.statusCode, number: res.body?.version?.number },
        'OpenSearch did not report its version: assuming a current one (efficient k-NN filters on lucene and faiss, one cosine score formula)',
      );
    }
    return version;
  }

  private async readState(): Promise<CatalogState | null> {
    const res = await this.request<{ found?: boolean; _source?: unknown }>(
      'read alias catalog',
      {
        // Stryker disable next-line StringLiteral: equivalent, the HTTP client sends GET for an empty method
        method: 'GET',
        path: `/${this.catalogIndex}/_doc/${STATE_ID}`,
      },
      [404],
    );
    // Stryker disable next-line ConditionalExpression,LogicalOperator: equivalent, a 404 or found:false answer has no _source, which the parse below makes null too
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
  const { url, username, password, caFile, caPem, requestTimeoutMs, logger, ...tuning } = config;
  const options = parseOpenSearchIndexOptions(tuning);
  const client = createOpenSearchClient({ url, username, password, caFile, caPem, requestTimeoutMs });
  return new OpenSearchIndexCatalog(client, options, logger);
}

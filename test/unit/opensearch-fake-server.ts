import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small in-memory OpenSearch on 127.0.0.1 for offline tests: it records every request and
 * answers the documented response shapes of the APIs the adapter and the real-cluster suite use
 * (`GET /`, index create / mapping / delete, `_cat/indices?format=json`, _bulk with external or
 * internal versioning, _mget, _doc, _refresh, _count, _search with a brute-force `knn` query, its
 * filter or a boolean post-filter, _alias / _aliases). Faults can be scripted per request.
 *
 * It holds the documented visibility rules, so that a missing refresh fails a test here rather
 * than on a cluster:
 * - Writes are visible to `_search` and `_count` only after a refresh ("Refresh Index API",
 *   https://docs.opensearch.org/latest/api-reference/index-apis/refresh/): an explicit
 *   `POST [<index>]/_refresh`, a write with `refresh=true` or `refresh=wait_for` ("Bulk API",
 *   `refresh` parameter), or the scheduled refresh every `index.refresh_interval` (1 s unless the
 *   index settings say otherwise, `-1` for never). Tests can stop the schedule with
 *   `autoRefresh = false` and refresh by hand with `refreshAll()`.
 * - `GET <index>/_doc/<id>` and `_mget` are realtime ("Get Document API" / "Multi-get Documents
 *   API": `realtime` defaults to true): they see every acknowledged write at once.
 * - Not modelled: search-idle shards (a shard searched for no 30 s skips scheduled refreshes and
 *   its next search waits for one). On a cluster that only ever hides a missing refresh, never
 *   reveals one, so the fake leaves it out.
 *
 * k-NN follows "k-NN search with filters"
 * (https://docs.opensearch.org/latest/vector-search/filter-search-knn/index/) and "Spaces"
 * (https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/) for the
 * OpenSearch version in `version` (default 2.19.1, the image the stack deploys): a `filter` inside
 * the `knn` clause is refused (400) unless the field's engine is lucene (2.4+) or faiss (2.9+),
 * and `_score` is each space type's documented formula, with cosinesimil on nmslib and faiss
 * scored 1 / (1 + d) before 2.19 and (2 − d) / 2 from 2.19 on (documentation-website commit
 * 36abf7e, "Starting 2.19, Approx search uses same cosine formula for lucene, faiss, and Nmslib").
 */
export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: string;
  json?: any;
}

export type Fault =
  | { match: (r: RecordedRequest) => boolean; times?: number; reset: true }
  /** Applies the request, then drops the connection before answering. */
  | { match: (r: RecordedRequest) => boolean; times?: number; resetAfterApplying: true }
  | { match: (r: RecordedRequest) => boolean; times?: number; status: number; body?: unknown }
  | {
      match: (r: RecordedRequest) => boolean;
      times?: number;
      /** Per bulk item: an error answer instead of applying it. */
      items: (id: string) => { status: number; type: string; reason?: string } | undefined;
    };

type ItemFault = (id: string) => { status: number; type: string; reason?: string } | undefined;

interface StoredDoc {
  version: bigint;
  source: any;
}

interface FakeIndex {
  settings: any;
  mappings: any;
  /** Every acknowledged write: what the realtime GET and _mget read. */
  docs: Map<string, StoredDoc>;
  /** The index as of its last refresh: what _search and _count read. */
  searchable: Map<string, StoredDoc>;
  /** When the last refresh took place (scheduled refreshes fall on multiples of the interval). */
  refreshedAt: number;
}

/** OpenSearch's default `index.refresh_interval`. */
export const DEFAULT_REFRESH_INTERVAL_MS = 1000;

export class FakeOpenSearch {
  readonly requests: RecordedRequest[] = [];
  readonly indices = new Map<string, FakeIndex>();
  readonly aliases = new Map<string, Set<string>>();
  private faults: (Fault & { left: number })[] = [];
  private server: Server | undefined;
  url = '';
  /** The OpenSearch version `GET /` reports; the k-NN rules (filters, scores) follow it. */
  version = '2.19.1';
  /** Whether scheduled refreshes happen (every `index.refresh_interval`); false: only explicit ones. */
  autoRefresh = true;
  /** The clock the scheduled refreshes follow. */
  now: () => number = () => Date.now();

  constructor(private readonly credentials?: { username: string; password: string }) {}

  addFault(fault: Fault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 });
  }

  requestsTo(pattern: RegExp, method?: string): RecordedRequest[] {
    return this.requests.filter((r) => pattern.test(r.path) && (!method || r.method === method));
  }

  /** What an explicit `POST /_refresh` does: every write so far becomes searchable. */
  refreshAll(): void {
    for (const index of this.indices.values()) this.refresh(index);
  }

  /** The documents `_search` and `_count` of `name` see now. */
  searchableIds(name: string): string[] {
    this.scheduledRefreshes();
    return [...(this.indices.get(name)?.searchable.keys() ?? [])].sort();
  }

  private refresh(index: FakeIndex): void {
    index.searchable = new Map(index.docs);
    index.refreshedAt = this.now();
  }

  /**
   * The refreshes the schedule would have made by now. Running them when a request arrives is
   * exact: a write is always preceded by this check, so every write not yet searchable happened
   * less than one interval after the last refresh, hence before the one made here.
   */
  private scheduledRefreshes(): void {
    if (!this.autoRefresh) return;
    const now = this.now();
    for (const index of this.indices.values()) {
      const interval = refreshIntervalMs(index.settings);
      if (interval === null || now - index.refreshedAt < interval) continue;
      index.searchable = new Map(index.docs);
      index.refreshedAt = now - ((now - index.refreshedAt) % interval);
    }
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, res, Buffer.concat(chunks).toString('utf8')));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private handle(req: IncomingMessage, res: ServerResponse, body: string): void {
    const u = new URL(req.url ?? '/', 'http://x');
    const rec: RecordedRequest = { method: req.method ?? 'GET', path: decodeURIComponent(u.pathname), query: u.searchParams, headers: req.headers, body };
    if (body && !(req.headers['content-type'] ?? '').includes('ndjson')) {
      try {
        rec.json = JSON.parse(body);
      } catch {
        /* left as text */
      }
    }
    this.requests.push(rec);
    const send = (status: number, payload?: unknown) => {
      const text = payload === undefined ? '' : JSON.stringify(payload);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(rec.method === 'HEAD' ? undefined : text);
    };
    if (this.credentials) {
      const expected = `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
      if (req.headers.authorization !== expected) {
        return send(401, {
          error: {
            root_cause: [{ type: 'security_exception', reason: 'missing authentication credentials' }],
            type: 'security_exception',
            reason: 'missing authentication credentials',
          },
          status: 401,
        });
      }
    }
    this.scheduledRefreshes();
    const fault = this.faults.find((f) => f.left > 0 && f.match(rec));
    let itemFault: ItemFault | undefined;
    if (fault) {
      fault.left--;
      if ('reset' in fault) return void req.socket.destroy();
      if ('resetAfterApplying' in fault) {
        this.route(rec);
        return void req.socket.destroy();
      }
      if ('status' in fault) return send(fault.status, fault.body ?? { error: { type: 'fault', reason: 'scripted' }, status: fault.status });
      itemFault = fault.items;
    }
    try {
      const [status, payload] = this.route(rec, itemFault);
      send(status, payload);
    } catch (err) {
      send(500, { error: { type: 'fake_failure', reason: String(err) }, status: 500 });
    }
  }

  private route(r: RecordedRequest, itemFault?: ItemFault): [number, unknown] {
    const parts = r.path.split('/').filter(Boolean);
    const m = r.method;
    if (parts.length === 0 && m === 'GET') return [200, this.info()];
    if (parts[0] === '_refresh' && (m === 'POST' || m === 'GET')) return this.refreshApi([...this.indices.keys()]);
    if (parts[0] === '_bulk' && m === 'POST') return this.bulk(r, itemFault);
    if (parts[0] === '_cat' && parts[1] === 'indices' && m === 'GET') return [200, this.match(parts[2] ?? '*').map((index) => ({ index }))];
    if (parts[0] === '_aliases' && m === 'POST') return this.updateAliases(r.json);
    if (parts[0] === '_alias' && m === 'GET') {
      const targets = this.aliases.get(parts[1]!);
      if (!targets || targets.size === 0) return [404, { error: `alias [${parts[1]}] missing`, status: 404 }];
      return [200, Object.fromEntries([...targets].map((t) => [t, { aliases: { [parts[1]!]: {} } }]))];
    }
    const [name, op, id] = parts as [string, string | undefined, string | undefined];
    if (op === undefined) {
      if (m === 'PUT') {
        if (this.indices.has(name)) return [400, err(400, 'resource_already_exists_exception', `index [${name}] already exists`)];
        if (name !== name.toLowerCase()) return [400, err(400, 'invalid_index_name_exception', 'must be lowercase')];
        this.indices.set(name, this.newIndex(r.json?.settings ?? {}, r.json?.mappings ?? {}));
        return [200, { acknowledged: true, shards_acknowledged: true, index: name }];
      }
      if (m === 'HEAD') return [this.indices.has(name) ? 200 : 404, undefined];
      if (m === 'DELETE') {
        if (!this.indices.delete(name)) return [404, err(404, 'index_not_found_exception', `no such index [${name}]`)];
        for (const t of this.aliases.values()) t.delete(name);
        return [200, { acknowledged: true }];
      }
    }
    if (op === '_mapping' && m === 'GET') {
      const names = this.match(name);
      if (names.length === 0 && !name.includes('*')) return [404, err(404, 'index_not_found_exception', `no such index [${name}]`)];
      return [200, Object.fromEntries(names.map((n) => [n, { mappings: this.indices.get(n)!.mappings }]))];
    }
    if (op === '_refresh' && (m === 'POST' || m === 'GET')) {
      const names = name.split(',').flatMap((n) => (n.includes('*') ? this.match(n) : [n]));
      const missing = names.find((n) => !this.indices.has(n));
      if (missing) return [404, err(404, 'index_not_found_exception', `no such index [${missing}]`)];
      return this.refreshApi(names);
    }
    const index = this.indices.get(name);
    if (op === '_doc' && m === 'PUT') {
      const target = index ?? this.autoCreate(name);
      const prev = target.docs.get(id!);
      target.docs.set(id!, { version: (prev?.version ?? 0n) + 1n, source: r.json });
      const forced = this.refreshAfterWrite(r, [target]);
      return [prev ? 200 : 201, { _index: name, _id: id, result: prev ? 'updated' : 'created', ...(forced ? { forced_refresh: true } : {}) }];
    }
    if (!index) return [404, err(404, 'index_not_found_exception', `no such index [${name}]`)];
    if (op === '_doc' && m === 'GET') {
      const d = index.docs.get(id!);
      if (!d) return [404, { _index: name, _id: id, found: false }];
      return [200, { _index: name, _id: id, _version: Number(d.version), found: true, _source: d.source }];
    }
    if (op === '_mget') {
      const include = r.query.get('_source_includes')?.split(',');
      return [
        200,
        {
          docs: (r.json.ids as string[]).map((docId) => {
            const d = index.docs.get(docId);
            if (!d) return { _index: name, _id: docId, found: false };
            const source = include ? Object.fromEntries(include.filter((k) => k in d.source).map((k) => [k, d.source[k]])) : d.source;
            return { _index: name, _id: docId, _version: Number(d.version), found: true, _source: source };
          }),
        },
      ];
    }
    if (op === '_count') {
      // A search like any other: it counts what the last refresh made searchable.
      const count = [...index.searchable.entries()].filter(([i, d]) => matches(r.json?.query, i, d.source)).length;
      return [200, { count, _shards: { total: 1, successful: 1, skipped: 0, failed: 0 } }];
    }
    if (op === '_search') return this.search(name, index, r.json ?? {});
    return [400, err(400, 'unsupported', `fake does not support ${m} ${r.path}`)];
  }

  private newIndex(settings: any, mappings: any): FakeIndex {
    return { settings, mappings, docs: new Map(), searchable: new Map(), refreshedAt: this.now() };
  }

  private autoCreate(name: string): FakeIndex {
    const created = this.newIndex({}, {});
    this.indices.set(name, created);
    return created;
  }

  /** `GET /`: the cluster's name and version. */
  private info(): unknown {
    return {
      name: 'fake-node',
      cluster_name: 'fake-cluster',
      cluster_uuid: 'fake-cluster-uuid',
      version: { distribution: 'opensearch', number: this.version, build_type: 'fake', lucene_version: 'fake' },
      tagline: 'The OpenSearch Project: https://opensearch.org/',
    };
  }

  private refreshApi(names: string[]): [number, unknown] {
    for (const n of names) this.refresh(this.indices.get(n)!);
    return [200, { _shards: { total: names.length, successful: names.length, failed: 0 } }];
  }

  /**
   * The `refresh` parameter of a write: `true` (or empty) refreshes the shards written to;
   * `wait_for` answers once a refresh made the write searchable (here at once, as if the
   * scheduled refresh had come); `false` or absent leaves it to the schedule. True when forced.
   */
  private refreshAfterWrite(r: RecordedRequest, written: FakeIndex[]): boolean {
    const mode = r.query.get('refresh');
    if (mode === null || mode === 'false') return false;
    if (mode !== '' && mode !== 'true' && mode !== 'wait_for') throw new Error(`fake: refresh=${mode} is not a documented value`);
    for (const index of new Set(written)) this.refresh(index);
    return mode !== 'wait_for';
  }

  private match(pattern: string): string[] {
    const re = new RegExp(
      `^${pattern
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
    );
    return [...this.indices.keys()].filter((n) => re.test(n));
  }

  private updateAliases(body: { actions: Record<string, { index: string; alias: string }>[] }): [number, unknown] {
    for (const a of body.actions) {
      const [kind, spec] = Object.entries(a)[0]!;
      if (!this.indices.has(spec.index)) return [404, err(404, 'index_not_found_exception', `no such index [${spec.index}]`)];
      if (kind === 'remove' && !this.aliases.get(spec.alias)?.has(spec.index))
        return [404, err(404, 'aliases_not_found_exception', `aliases [${spec.alias}] missing`)];
    }
    for (const a of body.actions) {
      const [kind, spec] = Object.entries(a)[0]!;
      const set = this.aliases.get(spec.alias) ?? new Set<string>();
      this.aliases.set(spec.alias, set);
      if (kind === 'add') set.add(spec.index);
      else set.delete(spec.index);
    }
    return [200, { acknowledged: true }];
  }

  private bulk(r: RecordedRequest, itemFault?: ItemFault): [number, unknown] {
    const lines = r.body.split('\n').filter((l) => l.length > 0);
    const items: any[] = [];
    const written: FakeIndex[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      const actionRaw = lines[i]!;
      const action = JSON.parse(actionRaw).index as { _index: string; _id: string; version_type?: string };
      // Read the version from the raw text: JSON.parse would round an int64. Without one the
      // version is internal: one more than the stored one, never a conflict.
      const external = /"version":(\d+)/.exec(actionRaw)?.[1];
      const source = JSON.parse(lines[i + 1]!);
      const base = { _index: action._index, _id: action._id };
      const forced = itemFault?.(action._id);
      if (forced) {
        items.push({ index: { ...base, status: forced.status, error: { type: forced.type, reason: forced.reason ?? forced.type } } });
        continue;
      }
      const index = this.indices.get(action._index);
      if (!index) {
        items.push({ index: { ...base, status: 404, error: { type: 'index_not_found_exception', reason: 'no such index' } } });
        continue;
      }
      const problem = checkMapping(index.mappings, source);
      if (problem) {
        items.push({ index: { ...base, status: 400, error: { type: 'mapper_parsing_exception', reason: problem } } });
        continue;
      }
      const cur = index.docs.get(action._id);
      const version = external !== undefined ? BigInt(external) : (cur?.version ?? 0n) + 1n;
      const ok = !cur || external === undefined || (action.version_type === 'external_gte' ? version >= cur.version : version > cur.version);
      if (!ok) {
        items.push({
          index: {
            ...base,
            status: 409,
            error: {
              type: 'version_conflict_engine_exception',
              reason: `[${action._id}]: version conflict, current version [${cur!.version}] is higher or equal to the one provided [${version}]`,
            },
          },
        });
        continue;
      }
      index.docs.set(action._id, { version, source });
      written.push(index);
      items.push({ index: { ...base, _version: Number(version), result: cur ? 'updated' : 'created', status: cur ? 200 : 201 } });
    }
    if (this.refreshAfterWrite(r, written)) for (const it of items) if (it.index.status < 300) it.index.forced_refresh = true;
    return [200, { took: 1, errors: items.some((it) => it.index.status >= 300), items }];
  }

  private search(name: string, index: FakeIndex, body: any): [number, unknown] {
    const docs = [...index.searchable.entries()];
    let hits: { id: string; score: number; source: any }[];
    const knnClause = body.query?.knn;
    // The boolean post-filter of "k-NN search with filters": the knn clause in `must`, the filter
    // beside it, applied to the k candidates the k-NN search returned.
    const bool = body.query?.bool;
    const postFiltered = bool && (Array.isArray(bool.must) ? bool.must : [bool.must]).find((c: any) => c?.knn);
    if (knnClause || postFiltered) {
      const [field, spec] = Object.entries(knnClause ?? postFiltered.knn)[0] as [string, { vector: number[]; k: number; filter?: unknown }];
      const method = index.mappings.properties?.[field]?.method;
      if (!method?.engine) throw new Error(`fake: field ${field} has no method.engine in its mapping (the fake does not guess the default engine)`);
      const engine = String(method.engine);
      const space = String(method.space_type ?? 'l2');
      if (spec.filter !== undefined && !engineSupportsFilters(engine, this.version)) {
        const reason = `Engine [${engine.toUpperCase()}] does not support filters`;
        return [400, shardFailure(name, 'illegal_argument_exception', reason)];
      }
      hits = docs
        .filter(([id, d]) => Array.isArray(d.source[field]) && matches(spec.filter, id, d.source))
        .map(([id, d]) => ({ id, score: knnScore(space, engine, this.version, d.source[field], spec.vector), source: d.source }))
        .sort((a, b) => b.score - a.score)
        .slice(0, spec.k);
      if (postFiltered) {
        const rest = { bool: { ...bool, must: (Array.isArray(bool.must) ? bool.must : [bool.must]).filter((c: any) => c !== postFiltered) } };
        hits = hits.filter((h) => matches(rest, h.id, h.source));
      }
    } else {
      hits = docs.filter(([id, d]) => matches(body.query, id, d.source)).map(([id, d]) => ({ id, score: 1, source: d.source }));
      if (body.sort) hits.sort((a, b) => (a.source.id < b.source.id ? -1 : a.source.id > b.source.id ? 1 : 0));
      if (body.search_after) hits = hits.filter((h) => h.source.id > body.search_after[0]);
    }
    if (body.min_score !== undefined) hits = hits.filter((h) => h.score >= body.min_score);
    const excludes: string[] = body._source?.excludes ?? [];
    const page = hits.slice(0, body.size ?? 10);
    return [
      200,
      {
        took: 1,
        timed_out: false,
        hits: {
          total: { value: hits.length, relation: 'eq' },
          max_score: page[0]?.score ?? null,
          hits: page.map((h) => ({
            _index: name,
            _id: h.id,
            _score: h.score,
            _source: Object.fromEntries(Object.entries(h.source).filter(([k]) => !excludes.includes(k))),
            ...(body.sort ? { sort: [h.source.id] } : {}),
          })),
        },
      },
    ];
  }
}

/** "major.minor.patch" at least `major.minor`. */
function versionAtLeast(version: string, major: number, minor: number): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/**
 * Efficient filtering ("k-NN search with filters"): the Lucene engine with HNSW from 2.4, Faiss
 * with HNSW from 2.9 (IVF from 2.10). NMSLIB never: the k-NN plugin refuses with "Engine [NMSLIB]
 * does not support filters" (KNNQueryBuilder.doToQuery).
 */
function engineSupportsFilters(engine: string, version: string): boolean {
  if (engine === 'lucene') return versionAtLeast(version, 2, 4);
  if (engine === 'faiss') return versionAtLeast(version, 2, 9);
  return false;
}

/** The `_score` of one stored vector `x` for query `y`, per the "Spaces" table. */
export function knnScore(space: string, engine: string, version: string, x: number[], y: number[]): number {
  const dot = x.reduce((s, xi, i) => s + xi * y[i]!, 0);
  switch (space) {
    case 'l1':
      return 1 / (1 + x.reduce((s, xi, i) => s + Math.abs(xi - y[i]!), 0));
    case 'l2':
      return 1 / (1 + x.reduce((s, xi, i) => s + (xi - y[i]!) ** 2, 0));
    case 'linf':
      return 1 / (1 + Math.max(...x.map((xi, i) => Math.abs(xi - y[i]!))));
    case 'cosinesimil': {
      const norms = Math.hypot(...x) * Math.hypot(...y);
      if (norms === 0) throw new Error('fake: a zero vector has no cosine (OpenSearch refuses it)');
      const d = 1 - dot / norms;
      return engine === 'lucene' || versionAtLeast(version, 2, 19) ? (2 - d) / 2 : 1 / (1 + d);
    }
    case 'innerproduct': {
      if (engine === 'lucene') return dot > 0 ? dot + 1 : 1 / (1 + -1 * dot);
      const d = -dot;
      return d >= 0 ? 1 / (1 + d) : -d + 1;
    }
    default:
      throw new Error(`fake: space type ${space} is not modelled`);
  }
}

/** `index.refresh_interval` in ms (default 1 s), null for `-1` (no scheduled refresh). */
function refreshIntervalMs(settings: any): number | null {
  const raw = settings?.index?.refresh_interval ?? settings?.['index.refresh_interval'] ?? settings?.refresh_interval;
  if (raw === undefined) return DEFAULT_REFRESH_INTERVAL_MS;
  const text = String(raw);
  if (text === '-1') return null;
  const m = /^(\d+)(ms|s|m)$/.exec(text);
  if (!m) throw new Error(`fake: refresh_interval ${text} is not modelled`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
}

/** A search every shard of which failed with the same error, as OpenSearch answers it. */
function shardFailure(index: string, type: string, reason: string): unknown {
  return {
    error: {
      root_cause: [{ type, reason, index }],
      type: 'search_phase_execution_exception',
      reason: 'all shards failed',
      phase: 'query',
      grouped: true,
      failed_shards: [{ shard: 0, index, node: 'fake-node', reason: { type, reason, index } }],
      caused_by: { type, reason },
    },
    status: 400,
  };
}

function err(status: number, type: string, reason: string): unknown {
  return { error: { root_cause: [{ type, reason }], type, reason }, status };
}

function checkMapping(mappings: any, source: Record<string, unknown>): string | undefined {
  const props = mappings?.properties ?? {};
  for (const [k, v] of Object.entries(source)) {
    const p = props[k];
    if (!p) return mappings?.dynamic === 'strict' ? `mapping set to strict, dynamic introduction of [${k}] is not allowed` : undefined;
    if (p.type === 'knn_vector' && (!Array.isArray(v) || v.length !== p.dimension)) return `Vector dimension mismatch. Expected: ${p.dimension}`;
    if (p.type === 'long' && !/^\d+$/.test(String(v))) return `failed to parse field [${k}] of type [long]`;
  }
  return undefined;
}

/** The query DSL subset the adapter sends: bool, terms, term, prefix, range, ids. */
function matches(q: any, id: string, s: any): boolean {
  if (!q) return true;
  if (q.bool) {
    const all = (xs: unknown) => (Array.isArray(xs) ? xs : xs ? [xs] : []) as any[];
    if (!all(q.bool.filter).every((c) => matches(c, id, s))) return false;
    if (!all(q.bool.must).every((c) => matches(c, id, s))) return false;
    if (all(q.bool.must_not).some((c) => matches(c, id, s))) return false;
    const should = all(q.bool.should);
    if (should.length > 0 && should.filter((c) => matches(c, id, s)).length < (q.bool.minimum_should_match ?? 1)) return false;
    return true;
  }
  const values = (field: string): unknown[] => (Array.isArray(s[field]) ? s[field] : s[field] === undefined ? [] : [s[field]]);
  if (q.terms) {
    const [f, wanted] = Object.entries(q.terms)[0] as [string, unknown[]];
    return values(f).some((v) => wanted.includes(v));
  }
  if (q.term) {
    const [f, spec] = Object.entries(q.term)[0] as [string, any];
    const want = typeof spec === 'object' && spec !== null ? spec.value : spec;
    return values(f).some((v) => v === want);
  }
  if (q.prefix) {
    const [f, spec] = Object.entries(q.prefix)[0] as [string, any];
    const p = typeof spec === 'object' ? spec.value : spec;
    return values(f).some((v) => typeof v === 'string' && v.startsWith(p));
  }
  if (q.range) {
    const [f, spec] = Object.entries(q.range)[0] as [string, any];
    return values(f).some((v) => {
      const t = Date.parse(String(v));
      return (spec.gte === undefined || t >= Date.parse(spec.gte)) && (spec.lte === undefined || t <= Date.parse(spec.lte));
    });
  }
  if (q.ids) return q.ids.values.includes(id);
  if (q.match_all) return true;
  throw new Error(`fake: unsupported query ${JSON.stringify(q)}`);
}

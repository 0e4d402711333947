import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A small in-memory OpenSearch on 127.0.0.1 for offline tests: it records every request and
 * answers the documented response shapes of the APIs the adapter uses (index create / mapping /
 * delete, _bulk with external versioning, _mget, _doc, _count, _search with a brute-force `knn`
 * query and its filter, _alias / _aliases). Faults can be scripted per request.
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
  docs: Map<string, StoredDoc>;
}

export class FakeOpenSearch {
  readonly requests: RecordedRequest[] = [];
  readonly indices = new Map<string, FakeIndex>();
  readonly aliases = new Map<string, Set<string>>();
  private faults: (Fault & { left: number })[] = [];
  private server: Server | undefined;
  url = '';

  constructor(private readonly credentials?: { username: string; password: string }) {}

  addFault(fault: Fault): void {
    this.faults.push({ ...fault, left: fault.times ?? 1 });
  }

  requestsTo(pattern: RegExp, method?: string): RecordedRequest[] {
    return this.requests.filter((r) => pattern.test(r.path) && (!method || r.method === method));
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
    if (parts[0] === '_bulk' && m === 'POST') return this.bulk(r, itemFault);
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
        this.indices.set(name, { settings: r.json?.settings ?? {}, mappings: r.json?.mappings ?? {}, docs: new Map() });
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
    const index = this.indices.get(name);
    if (op === '_doc' && m === 'PUT') {
      const target = index ?? this.autoCreate(name);
      const prev = target.docs.get(id!);
      target.docs.set(id!, { version: (prev?.version ?? 0n) + 1n, source: r.json });
      return [prev ? 200 : 201, { _index: name, _id: id, result: prev ? 'updated' : 'created' }];
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
    if (op === '_count') return [200, { count: [...index.docs.entries()].filter(([i, d]) => matches(r.json?.query, i, d.source)).length }];
    if (op === '_search') return [200, this.search(name, index, r.json ?? {})];
    return [400, err(400, 'unsupported', `fake does not support ${m} ${r.path}`)];
  }

  private autoCreate(name: string): FakeIndex {
    const created = { settings: {}, mappings: {}, docs: new Map<string, StoredDoc>() };
    this.indices.set(name, created);
    return created;
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
    const items: unknown[] = [];
    for (let i = 0; i < lines.length; i += 2) {
      const actionRaw = lines[i]!;
      const action = JSON.parse(actionRaw).index as { _index: string; _id: string; version_type: string };
      // Read the version from the raw text: JSON.parse would round an int64.
      const version = BigInt(/"version":(\d+)/.exec(actionRaw)![1]!);
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
      const ok = !cur || (action.version_type === 'external_gte' ? version >= cur.version : version > cur.version);
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
      items.push({ index: { ...base, _version: Number(version), result: cur ? 'updated' : 'created', status: cur ? 200 : 201 } });
    }
    return [200, { took: 1, errors: items.some((it: any) => it.index.status >= 300), items }];
  }

  private search(name: string, index: FakeIndex, body: any): unknown {
    const knn = body.query?.knn;
    let hits: { id: string; score: number; source: any }[];
    if (knn) {
      const [field, spec] = Object.entries(knn)[0] as [string, { vector: number[]; k: number; filter?: unknown }];
      const space = index.mappings.properties?.[field]?.method?.space_type ?? 'cosinesimil';
      hits = [...index.docs.entries()]
        .filter(([id, d]) => Array.isArray(d.source[field]) && matches(spec.filter, id, d.source))
        .map(([id, d]) => {
          const dot = d.source[field].reduce((s: number, x: number, i: number) => s + x * spec.vector[i]!, 0);
          const cos = dot / (Math.hypot(...d.source[field]) * Math.hypot(...spec.vector) || 1);
          const score = space === 'cosinesimil' ? (1 + cos) / 2 : dot >= 0 ? dot + 1 : 1 / (1 - dot);
          return { id, score, source: d.source };
        })
        .sort((a, b) => b.score - a.score)
        .slice(0, spec.k);
    } else {
      hits = [...index.docs.entries()].filter(([id, d]) => matches(body.query, id, d.source)).map(([id, d]) => ({ id, score: 1, source: d.source }));
      if (body.sort) hits.sort((a, b) => (a.source.id < b.source.id ? -1 : a.source.id > b.source.id ? 1 : 0));
      if (body.search_after) hits = hits.filter((h) => h.source.id > body.search_after[0]);
    }
    if (body.min_score !== undefined) hits = hits.filter((h) => h.score >= body.min_score);
    const excludes: string[] = body._source?.excludes ?? [];
    const page = hits.slice(0, body.size ?? 10);
    return {
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
    };
  }
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

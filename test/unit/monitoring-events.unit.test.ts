import { Writable } from 'node:stream';
import Fastify from 'fastify';
import { describe, expect, it, vi } from 'vitest';
import { ParseError } from '../../shared/errors.js';
import { upsertEmbeddings } from '../../shared/handlers/upsert-vectors.js';
import { monitorOutput, registerMonitorRoutes } from '../../shared/http/monitor-routes.js';
import { monitorOutputSchema } from '../../shared/output-schemas.js';
import type { SearchEventSink } from '../../shared/ports/search-events.js';
import type { Hit } from '../../shared/ports/vector-index.js';
import { monitoredFeedback, ServedQueries, type FeedbackEvent } from '../../shared/services/feedback.js';
import { monitorEventSchema, type MonitorEvent, type SearchMonitorEvent } from '../../shared/services/monitoring.js';
import { SearchService } from '../../shared/services/search-service.js';
import { cloudSearchEvents } from '../../shared/wiring/cloud.js';
import { delivery, MemoryRejections, RecordingBus, strict, type Embedder, type VectorIndex } from '../helpers/strict-fakes.js';
import { silentLogger } from '../../shared/logger.js';

/** Where monitoring events are emitted: the search service, the click recorder, the upsert step; and the figures route. */

class MemorySink implements SearchEventSink {
  events: MonitorEvent[] = [];
  append(e: MonitorEvent) {
    this.events.push(e);
  }
  flush() {
    return Promise.resolve();
  }
}

const hits = (scores: number[]): Hit[] =>
  scores.map((score, i) => ({ id: `doc${i}`, uri: `file:///b/${i}.png`, score, generation: '1', labels: [], modelVersion: 'm1' }));

function service(sink: SearchEventSink, results: number[] = [0.9, 0.8, 0.4]) {
  const embedder = strict<Embedder>('embedder', {
    modelVersion: 'm1',
    dimension: 2,
    hasTextTower: true,
    prepare: async () => ({ pixels: new Float32Array(3), width: 1, height: 1, format: 'png' }),
    embedDecoded: async () => ({ base: [Float32Array.of(1, 0)], vectors: [Float32Array.of(1, 0)] }),
    embedTexts: async () => [Float32Array.of(0, 1)],
  });
  const index = strict<VectorIndex>('index', {
    name: 'images-v7',
    modelVersion: 'm1',
    dimension: 2,
    query: async (_v, o) => hits(results.filter((s) => s >= (o.minScore ?? -1)).slice(0, o.k)),
    get: async (id) => ({ id, uri: 'file:///b/x.png', generation: '1', modelVersion: 'm1', vector: Float32Array.of(1, 0), labels: [], indexedAt: '' }),
  });
  return new SearchService(
    () => embedder,
    async () => index,
    undefined,
    undefined,
    sink,
  );
}

describe('SearchService monitoring events', () => {
  it("emits one event per search of each kind, with versions, k, counts, scores, zero-result flag, latency split and the answer's query id", async () => {
    const sink = new MemorySink();
    const svc = service(sink);
    const a = await svc.byImage(Buffer.from('img'), { k: 2 });
    const b = await svc.byText('red dress', { k: 5 });
    const c = await svc.similarTo('doc0', { k: 3, minScore: 0.95 });
    expect(sink.events).toHaveLength(3);
    for (const e of sink.events) expect(monitorEventSchema.parse(e)).toEqual(e);
    const [ea, eb, ec] = sink.events as SearchMonitorEvent[];
    expect(ea).toMatchObject({
      kind: 'image',
      modelVersion: 'm1',
      indexVersion: 'images-v7',
      k: 2,
      resultCount: 2,
      topScore: 0.9,
      kthScore: 0.8,
      zeroResult: false,
    });
    expect(eb).toMatchObject({ kind: 'text', k: 5, resultCount: 3, topScore: 0.9, kthScore: null, zeroResult: false });
    expect(ec).toMatchObject({ kind: 'similar', k: 3, resultCount: 0, topScore: null, kthScore: null, zeroResult: true });
    expect([ea!.queryId, eb!.queryId, ec!.queryId]).toEqual([a.feedback!.queryId, b.feedback!.queryId, c.feedback!.queryId]);
    for (const e of [ea!, eb!, ec!]) {
      expect(e.latencyMs.embed + e.latencyMs.index).toBeLessThanOrEqual(e.latencyMs.total + 0.01);
      expect(Object.keys(e)).not.toContain('vector');
      expect(JSON.stringify(e)).not.toContain('red dress'); // no query text in the events
    }
  });

  it('a failing event log never fails a search', async () => {
    const throwing: SearchEventSink = {
      append: () => {
        throw new Error('disk on fire');
      },
      flush: () => Promise.reject(new Error('disk on fire')),
    };
    const svc = service(throwing);
    await expect(svc.byImage(Buffer.from('img'), { k: 2 })).resolves.toMatchObject({ results: [{ id: 'doc0' }, { id: 'doc1' }] });
    await expect(svc.byText('shoe', { k: 1 })).resolves.toMatchObject({ results: [{ id: 'doc0' }] });
  });

  it('a search that fails emits no event (only answers are counted)', async () => {
    const sink = new MemorySink();
    const svc = new SearchService(
      () => strict<Embedder>('embedder', { modelVersion: 'm1' }),
      async () => null,
      undefined,
      undefined,
      sink,
    );
    await expect(svc.byImage(Buffer.from('img'), { k: 2 })).rejects.toThrow(/nothing is indexed yet/);
    expect(sink.events).toEqual([]);
  });
});

describe('click events (feedback joined by query id)', () => {
  const event: FeedbackEvent = {
    queryId: 'q-1',
    query: { kind: 'text', value: 'red dress' },
    resultId: 'doc0',
    action: 'open',
    at: '2026-11-27T12:00:00.000Z',
  };
  const served = { queryId: 'q-1', query: event.query, issuedAt: 0 };

  it('a recorded click emits a feedback event with the query id of its search, and no query text', async () => {
    const sink = new MemorySink();
    const recorded: FeedbackEvent[] = [];
    await monitoredFeedback(async (e) => void recorded.push(e), sink)(event, served);
    expect(recorded).toEqual([event]);
    expect(sink.events).toEqual([{ monitor: 'feedback', v: 1, at: event.at, queryId: 'q-1', kind: 'text', action: 'open' }]);
  });

  it('a click the store refused is not counted, and a failing event log does not fail a recorded click', async () => {
    const sink = new MemorySink();
    await expect(monitoredFeedback(() => Promise.reject(new Error('bucket down')), sink)(event, served)).rejects.toThrow('bucket down');
    expect(sink.events).toEqual([]);
    const broken: SearchEventSink = {
      append: () => {
        throw new Error('x');
      },
      flush: async () => undefined,
    };
    await expect(monitoredFeedback(async () => undefined, broken)(event, served)).resolves.toBeUndefined();
  });

  it('the query id of a click is the one of the search answer (token round trip)', async () => {
    const sink = new MemorySink();
    const tokens = new ServedQueries();
    const svc = new SearchService(
      () => strict<Embedder>('embedder', { modelVersion: 'm1', hasTextTower: true, embedTexts: async () => [Float32Array.of(1, 0)] }),
      async () => strict<VectorIndex>('index', { name: 'images-v1', modelVersion: 'm1', query: async () => hits([0.7]) }),
      undefined,
      tokens,
      sink,
    );
    const answer = await svc.byText('shoe', { k: 4 });
    const accepted = tokens.accept(answer.feedback!.token, 'doc0');
    await monitoredFeedback(async () => undefined, sink)(
      { queryId: accepted.queryId, query: accepted.query, resultId: 'doc0', action: 'open', at: new Date().toISOString() },
      accepted,
    );
    expect(sink.events.map((e) => [e.monitor, 'queryId' in e ? e.queryId : null])).toEqual([
      ['search', answer.feedback!.queryId],
      ['feedback', answer.feedback!.queryId],
    ]);
  });
});

describe('freshness events from the upsert step', () => {
  it('one per image created or updated, lag from the object generation (µs) to the upsert; none for unchanged, stale or failed writes', async () => {
    const sink = new MemorySink();
    const bus = new RecordingBus();
    const now = Date.parse('2026-11-27T12:00:00.000Z');
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(now);
    const generation = (msAgo: number) => String((now - msAgo) * 1000);
    const msg = (id: string, msAgo: number) => ({
      op: 'upsert',
      id,
      uri: `file:///b/${id}.png`,
      bucket: 'b',
      name: `${id}.png`,
      generation: generation(msAgo),
      modelVersion: 'm1',
      vector: [1, 0],
      metadata: { labels: [] },
    });
    const outcomes = { a: 'created', b: 'updated', c: 'unchanged', d: 'stale' } as const;
    const index = strict<VectorIndex>('index', {
      name: 'images-v1',
      modelVersion: 'm1',
      dimension: 2,
      upsert: async (docs) => docs.map((d) => outcomes[d.id as keyof typeof outcomes]),
    });
    try {
      await upsertEmbeddings([delivery(msg('a', 1500)), delivery(msg('b', 60_000)), delivery(msg('c', 10)), delivery(msg('d', 10))], {
        index,
        bus: bus.asPort(),
        rejections: new MemoryRejections(),
        logger: silentLogger,
        events: sink,
      });
    } finally {
      vi.useRealTimers();
    }
    expect(sink.events.map((e) => (e.monitor === 'freshness' ? [e.id, e.modelVersion] : null))).toEqual([
      ['a', 'm1'],
      ['b', 'm1'],
    ]);
    for (const e of sink.events) expect(monitorEventSchema.parse(e)).toEqual(e);
    expect(sink.events.map((e) => (e.monitor === 'freshness' ? [e.at, e.lagMs] : null))).toEqual([
      ['2026-11-27T12:00:00.000Z', 1500],
      ['2026-11-27T12:00:00.000Z', 60_000],
    ]);
  });

  it('an upsert that fails emits nothing', async () => {
    const sink = new MemorySink();
    const index = strict<VectorIndex>('index', {
      name: 'images-v1',
      modelVersion: 'm1',
      dimension: 2,
      upsert: () => Promise.reject(new Error('cluster down')),
    });
    const out = await upsertEmbeddings(
      [
        delivery({
          op: 'upsert',
          id: 'a',
          uri: 'u',
          bucket: 'b',
          name: 'a',
          generation: '1795771200000000',
          modelVersion: 'm1',
          vector: [1, 0],
          metadata: { labels: [] },
        }),
      ],
      { index, bus: new RecordingBus().asPort(), rejections: new MemoryRejections(), logger: silentLogger, events: sink },
    );
    expect(out[0]!.status).toBe('retry');
    expect(sink.events).toEqual([]);
  });
});

describe('GET /api/monitor', () => {
  const t = Date.parse('2026-11-27T12:30:00.000Z');
  const sink = new MemorySink();
  sink.events.push(
    {
      monitor: 'search',
      v: 1,
      at: '2026-11-27T12:10:00.000Z',
      queryId: 'q',
      kind: 'image',
      modelVersion: 'm',
      indexVersion: 'i',
      k: 5,
      resultCount: 0,
      topScore: null,
      kthScore: null,
      zeroResult: true,
      latencyMs: { embed: 1, index: 1, total: 2 },
    },
    { monitor: 'feedback', v: 1, at: '2026-11-27T12:11:00.000Z', queryId: 'q', kind: 'image', action: 'open' },
  );
  let flushed = 0;
  const events = {
    read: async function* () {
      yield* sink.events;
    },
    flush: async () => void flushed++,
  };

  it("answers the figures `monitor --json` prints, flushing this process's events first", async () => {
    const app = Fastify();
    registerMonitorRoutes(app, { events, now: () => new Date(t) });
    const res = await app.inject({ method: 'GET', url: '/api/monitor?since=2h&by=hour' });
    expect(res.statusCode).toBe(200);
    const body = monitorOutputSchema.parse(res.json());
    expect(body).toMatchObject({ schemaVersion: 1, by: 'hour', totals: { searches: 1, zeroResults: 1, clicks: 1, clickThroughRate: 1 } });
    expect(body.buckets).toHaveLength(3);
    expect(flushed).toBe(1);
    expect(res.json()).toEqual(await monitorOutput({ events, now: () => new Date(t) }, { since: '2h', by: 'hour' }));
  });

  it.each([
    ['since=24', /since: expected a duration such as 90m, 24h or 7d/],
    ['by=week', /by/],
    ['lowScore=2', /lowScore/],
    ['since=60d', /too many rows .*by day/],
    ['what=1', /what/],
  ])('refuses %s with a message naming the parameter', async (query, message) => {
    await expect(monitorOutput({ events, now: () => new Date(t) }, Object.fromEntries(new URLSearchParams(query)))).rejects.toThrow(ParseError);
    await expect(monitorOutput({ events, now: () => new Date(t) }, Object.fromEntries(new URLSearchParams(query)))).rejects.toThrow(message);
  });
});

describe('cloud adapter', () => {
  it('writes each event as one Cloud Logging JSON line at INFO whatever LOG_LEVEL says, with the event fields at the top level', async () => {
    const chunks: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk.toString());
        done();
      },
    });
    const previous = process.env.LOG_LEVEL;
    process.env.LOG_LEVEL = 'error';
    try {
      const sink = cloudSearchEvents('search', destination);
      const e: MonitorEvent = { monitor: 'feedback', v: 1, at: '2026-11-27T12:11:00.000Z', queryId: 'q', kind: 'image', action: 'open' };
      sink.append(e);
      await sink.flush();
    } finally {
      if (previous === undefined) delete process.env.LOG_LEVEL;
      else process.env.LOG_LEVEL = previous;
    }
    const lines = chunks.join('').trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      severity: 'INFO',
      message: 'search result clicked',
      monitor: 'feedback',
      queryId: 'q',
      kind: 'image',
      action: 'open',
    });
  });
});

import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { buildSearchApp, type FeedbackEvent } from '../../shared/http/search-app.js';
import { silentLogger } from '../../shared/logger.js';
import { blobFeedbackWriter, readFeedbackFile, readFeedbackObjects, ServedQueries, type ServedQuery } from '../../shared/services/feedback.js';
import { SearchService } from '../../shared/services/search-service.js';
import { FakeGcsServer } from './gcp-fake-gcs-server.js';
import { FakeEmbedder, MemoryIndex, normalise } from './functions-fakes.js';

/**
 * Feedback is bounded and verified (issue 11, point 4): a click counts only for a result the service
 * served for that query (proved by the answer's signed token, also on another instance sharing the
 * key), once per query and result, with capped fields and body; the retraining readers stream
 * bounded lines and count a click once.
 */
const KEY = 'k'.repeat(40);

function fixtureIndex(): MemoryIndex {
  const index = new MemoryIndex('images-v1', 'fake-v1', 4);
  const docs: [string, number[]][] = [
    ['cat', [9, 1, 1, 1]],
    ['dog', [1, 9, 1, 1]],
    ['car', [1, 1, 1, 9]],
    ['bus', [1, 1, 2, 9]],
  ];
  for (const [id, v] of docs) {
    index.docs.set(id, {
      id,
      uri: `file:///x/${id}.png`,
      vector: normalise(Float32Array.from(v)),
      generation: '1',
      labels: [],
      modelVersion: 'fake-v1',
    } as never);
  }
  return index;
}

async function appWith(served: ServedQueries, recorded: FeedbackEvent[]): Promise<FastifyInstance> {
  const index = fixtureIndex();
  const embedder = new FakeEmbedder('fake-v1');
  const search = new SearchService(
    () => embedder,
    async () => index,
    undefined,
    served,
  );
  return buildSearchApp({
    search,
    status: async () => ({}) as never,
    getDocument: async (id) => index.get(id),
    readObject: async () => Buffer.alloc(0),
    logger: silentLogger,
    webDir: '/nonexistent',
    recordFeedback: async (event) => {
      recorded.push(event);
    },
  });
}

const post = (app: FastifyInstance, payload: unknown) =>
  app.inject({ method: 'POST', url: '/api/feedback', headers: { 'content-type': 'application/json' }, payload: JSON.stringify(payload) });

describe('POST /api/feedback accepts only what was served, once', () => {
  let app: FastifyInstance;
  const recorded: FeedbackEvent[] = [];
  let now = Date.parse('2026-05-01T10:00:00Z');
  beforeAll(async () => {
    app = await appWith(new ServedQueries({ key: KEY, now: () => now, ttlMs: 3_600_000 }), recorded);
  });
  afterAll(() => app.close());
  beforeEach(() => {
    recorded.length = 0;
  });

  async function similarTo(id: string, k = 2) {
    const res = await app.inject({ method: 'GET', url: `/api/search?similarTo=${id}&k=${k}` });
    expect(res.statusCode).toBe(200);
    return res.json() as { queryId: string; feedbackToken: string; results: { id: string }[] };
  }

  it('records a click on a served result with the query from the token, not from the client', async () => {
    const answer = await similarTo('car');
    expect(answer.results.map((r) => r.id)).toEqual(['bus', 'cat']);
    const res = await post(app, { token: answer.feedbackToken, resultId: 'bus', action: 'open' });
    expect(res.statusCode).toBe(204);
    expect(recorded).toEqual([{ queryId: answer.queryId, query: { kind: 'similar', value: 'car' }, resultId: 'bus', action: 'open', at: expect.any(String) }]);
  });

  it('refuses a result that was never served for that query (it exists in the index)', async () => {
    const answer = await similarTo('car');
    const res = await post(app, { token: answer.feedbackToken, resultId: 'dog', action: 'open' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatch(/not served/);
    expect(recorded).toEqual([]);
  });

  it('refuses the old body shape (a query and any resultId, no token)', async () => {
    const res = await post(app, { query: { kind: 'similar', value: 'x' }, resultId: 'abc', action: 'open' });
    expect(res.statusCode).toBe(400);
    expect(recorded).toEqual([]);
  });

  it('refuses a forged or tampered token, and an expired one', async () => {
    const answer = await similarTo('car');
    const [body, sig] = answer.feedbackToken.split('.');
    const payload = JSON.parse(Buffer.from(body!, 'base64url').toString('utf8'));
    payload.val = 'dog';
    const tampered = `${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${sig}`;
    expect((await post(app, { token: tampered, resultId: 'bus', action: 'open' })).statusCode).toBe(400);
    const foreign = new ServedQueries({ key: 'z'.repeat(40) }).issue({ kind: 'similar', value: 'car' }, ['dog']).token;
    expect((await post(app, { token: foreign, resultId: 'dog', action: 'open' })).statusCode).toBe(400);

    const saved = now;
    now += 2 * 3_600_000;
    try {
      const res = await post(app, { token: answer.feedbackToken, resultId: 'bus', action: 'open' });
      expect(res.statusCode).toBe(400);
      expect(res.json().error).toMatch(/too old/);
    } finally {
      now = saved;
    }
    expect(recorded).toEqual([]);
  });

  it('counts the same query id and result id once, whatever the action or the number of posts', async () => {
    const answer = await similarTo('car');
    for (const action of ['open', 'open', 'more-like-this', 'open']) {
      expect((await post(app, { token: answer.feedbackToken, resultId: 'bus', action })).statusCode).toBe(204);
    }
    await post(app, { token: answer.feedbackToken, resultId: 'cat', action: 'open' });
    expect(recorded.map((e) => e.resultId)).toEqual(['bus', 'cat']);
    // A new search of the same thing is a new query: its click counts.
    const again = await similarTo('car');
    await post(app, { token: again.feedbackToken, resultId: 'bus', action: 'open' });
    expect(recorded.map((e) => e.resultId)).toEqual(['bus', 'cat', 'bus']);
  });

  it('caps fields and the body: a 1 MB post or a 10 kB result id is refused before anything is recorded', async () => {
    const answer = await similarTo('car');
    const big = await post(app, { token: answer.feedbackToken, resultId: 'bus', action: 'open', padding: 'x'.repeat(1024 * 1024 - 200) });
    expect(big.statusCode).toBe(413);
    const longId = await post(app, { token: answer.feedbackToken, resultId: 'b'.repeat(10_000), action: 'open' });
    expect(longId.statusCode).toBe(400);
    const extra = await post(app, { token: answer.feedbackToken, resultId: 'bus', action: 'open', query: { kind: 'text', value: 'spoofed' } });
    expect(extra.statusCode).toBe(400);
    expect(recorded).toEqual([]);
  });

  it('a token issued by one instance is accepted by another that shares the key (Cloud Run), refused by one that does not', async () => {
    const answer = await similarTo('car');
    const otherRecorded: FeedbackEvent[] = [];
    const other = await appWith(new ServedQueries({ key: KEY, now: () => now }), otherRecorded);
    const stranger = await appWith(new ServedQueries(), []);
    try {
      expect((await post(other, { token: answer.feedbackToken, resultId: 'cat', action: 'open' })).statusCode).toBe(204);
      expect(otherRecorded.map((e) => [e.queryId, e.resultId])).toEqual([[answer.queryId, 'cat']]);
      expect((await post(stranger, { token: answer.feedbackToken, resultId: 'cat', action: 'open' })).statusCode).toBe(400);
    } finally {
      await other.close();
      await stranger.close();
    }
  });
});

describe('ServedQueries memory stays bounded', () => {
  it('remembers at most maxRemembered recorded clicks (oldest forgotten first)', () => {
    const served = new ServedQueries({ key: KEY, maxRemembered: 3 });
    for (const id of ['a', 'b', 'c', 'd']) expect(served.firstTime('q', id)).toBe(true);
    expect(served.firstTime('q', 'd')).toBe(false);
    // 'a' was evicted by the bound: a repeat is no longer recognised by this instance (the readers still count it once).
    expect(served.firstTime('q', 'a')).toBe(true);
  });

  it('a token lists hashes of the served ids, so its size does not grow with id length', () => {
    const served = new ServedQueries({ key: KEY });
    const short = served.issue(
      { kind: 'text', value: 'red' },
      Array.from({ length: 200 }, (_, i) => `i${i}`),
    ).token;
    const long = served.issue(
      { kind: 'text', value: 'red' },
      Array.from({ length: 200 }, (_, i) => `${'x'.repeat(400)}${i}`),
    ).token;
    expect(long.length).toBe(short.length);
    expect(long.length).toBeLessThan(8192);
  });
});

describe('retraining reads feedback bounded and deduplicated', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iss-feedback-bounds-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const line = (queryId: string, value: string, resultId: string) =>
    JSON.stringify({ queryId, query: { kind: 'similar', value }, resultId, action: 'open', at: '2026-05-01T10:00:00.000Z' });

  it('streams a 600 MB file whose garbage has no newline (the "Invalid string length" failure) and keeps the events after it', async () => {
    // A sparse file: 600 MB of NUL bytes without a newline (no disk used), then two events.
    const file = join(dir, 'huge.jsonl');
    const fh = await open(file, 'w');
    try {
      await fh.truncate(600 * 1024 * 1024);
      await fh.write(`\n${line('q1', 'a', 'b')}\n${line('q2', 'c', 'd')}\n`, 600 * 1024 * 1024);
    } finally {
      await fh.close();
    }
    const read = await readFeedbackFile(file);
    expect(read.pairs).toEqual([
      { kind: 'image', queryId: 'a', openedId: 'b' },
      { kind: 'image', queryId: 'c', openedId: 'd' },
    ]);
    expect(read.invalid).toBe(1);
  });

  it('skips a line longer than any event without failing, counting it', async () => {
    const file = join(dir, 'long-line.jsonl');
    await writeFile(file, `${line('q1', 'a', 'b')}\n${'{"x":"'.padEnd(200_000, 'y')}"}\n${line('q2', 'c', 'd')}`);
    const read = await readFeedbackFile(file, { maxLineBytes: 64 * 1024 });
    expect(read.pairs.map((p) => p.openedId)).toEqual(['b', 'd']);
    expect(read.invalid).toBe(1);
  });

  it('counts a (query id, result id) once in the file, keeps distinct queries of the same pair', async () => {
    const file = join(dir, 'dupes.jsonl');
    await writeFile(file, [line('q1', 'a', 'b'), line('q1', 'a', 'b'), line('q1', 'a', 'c'), line('q2', 'a', 'b'), ''].join('\n'));
    const read = await readFeedbackFile(file);
    expect(read.pairs.map((p) => p.openedId)).toEqual(['b', 'c', 'b']);
    expect(read.duplicates).toBe(1);
  });
});

describe('cloud feedback objects (fake GCS)', () => {
  const BUCKET = 'iss-features';
  const server = new FakeGcsServer();
  beforeAll(() => server.start());
  afterAll(() => server.stop());

  it('one object per (query id, result id), created only if absent: a second instance recording the same click writes nothing', async () => {
    const store = new GcsBlobStore(server.storage(), BUCKET);
    const served: ServedQuery = { queryId: 'q-1', query: { kind: 'text', value: 'red dress' }, issuedAt: Date.parse('2026-05-01T10:00:00Z') };
    const event = (at: string): FeedbackEvent => ({ queryId: 'q-1', query: served.query, resultId: 'img-3', action: 'open', at });
    await blobFeedbackWriter(store)(event('2026-05-01T10:00:05.000Z'), served);
    await blobFeedbackWriter(store)(event('2026-05-01T10:00:09.000Z'), served);
    const names: string[] = [];
    for await (const info of store.list('feedback/')) names.push(info.name);
    expect(names).toHaveLength(1);
    expect(names[0]).toMatch(/^feedback\/2026-05-01\/2026-05-01T10-00-00-000Z-q-1-[0-9a-f]{16}\.json$/);
    const read = await readFeedbackObjects(store);
    expect(read.pairs).toEqual([{ kind: 'text', query: 'red dress', openedId: 'img-3' }]);
  });
});

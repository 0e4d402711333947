import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { blobFeedbackWriter, readFeedbackFile, readFeedbackObjects } from '../../shared/services/feedback.js';
import { silentLogger } from '../../shared/logger.js';
import { cloudRetrainSources } from '../../shared/wiring/cloud-retrain.js';
import { fakeGcsForSuite } from './gcp-fake-gcs-server.js';

/**
 * Where retraining reads click feedback, and how much. The cloud retrain job reads it where the
 * search service writes it: one object per event under feedback/<day>/ of the features bucket
 * (the trainer may only list and read there). Both sources keep only the newest events.
 */
const BUCKET = 'iss-features';
const server = fakeGcsForSuite();
const store = () => new GcsBlobStore(server.storage(), BUCKET);
let nextQuery = 0;
const event = (at: string, query: { kind: 'image' | 'similar' | 'text'; value?: string }, resultId: string) => ({
  queryId: `q${nextQuery++}`,
  query,
  resultId,
  action: 'open' as const,
  at,
});
const mediaReads = () => server.requests.filter((r) => r.query.alt === 'media').map((r) => decodeURIComponent(r.path.split('/o/')[1]!));

describe('readFeedbackObjects (features bucket, feedback/)', () => {
  it('turns the objects the search service writes into pairs, oldest first, listing only under feedback/', async () => {
    const writer = blobFeedbackWriter(store());
    const write = (e: ReturnType<typeof event>) => writer(e, { queryId: e.queryId, query: e.query, issuedAt: Date.parse(e.at) });
    await write(event('2026-03-02T08:00:00.000Z', { kind: 'text', value: 'red dress' }, 'img-3'));
    await write(event('2026-03-01T09:30:00.000Z', { kind: 'similar', value: 'img-1' }, 'img-2'));
    await write(event('2026-03-02T09:00:00.000Z', { kind: 'image' }, 'img-4'));
    server.put(BUCKET, 'feedback/2026-03-02/torn.json', '{"query":{"kind":"text"');
    server.put(BUCKET, 'features/shard-1.json', '{}');
    server.requests.length = 0;

    const read = await readFeedbackObjects(store());
    expect(read.pairs).toEqual([
      { kind: 'image', queryId: 'img-1', openedId: 'img-2' },
      { kind: 'text', query: 'red dress', openedId: 'img-3' },
    ]);
    expect(read).toMatchObject({ invalid: 1, skipped: 1, objects: 4, older: 0, unreadable: 0 });
    const lists = server.requests.filter((r) => r.method === 'GET' && r.path.endsWith('/o'));
    expect(lists.map((r) => r.query.prefix)).toEqual(['feedback/']);
    expect(mediaReads().every((name) => name.startsWith('feedback/'))).toBe(true);
  });

  it('reads only the newest maxEvents objects, whatever the size of the history', async () => {
    for (let i = 0; i < 9; i++) {
      const at = `2026-03-0${1 + Math.floor(i / 3)}T10:00:0${i}.000Z`;
      server.put(
        BUCKET,
        `feedback/${at.slice(0, 10)}/${at.replace(/[:.]/g, '-')}-0000000${i}.json`,
        JSON.stringify(event(at, { kind: 'similar', value: `q-${i}` }, `r-${i}`)),
      );
    }
    const read = await readFeedbackObjects(store(), { maxEvents: 2, concurrency: 1 });
    expect(read.pairs.map((p) => p.openedId)).toEqual(['r-7', 'r-8']);
    expect(read).toMatchObject({ objects: 2, older: 7 });
    expect(mediaReads()).toHaveLength(2);
  });

  it('skips an object far too large to be an event instead of failing the run', async () => {
    server.put(BUCKET, 'feedback/2026-03-01/big.json', 'x'.repeat(70 * 1024));
    server.put(BUCKET, 'feedback/2026-03-02/ok.json', JSON.stringify(event('2026-03-02T00:00:00.000Z', { kind: 'text', value: 'bag' }, 'img-9')));
    const read = await readFeedbackObjects(store());
    expect(read.pairs).toEqual([{ kind: 'text', query: 'bag', openedId: 'img-9' }]);
    expect(read).toMatchObject({ objects: 2, unreadable: 1, invalid: 0 });
  });

  it('an empty prefix is no feedback', async () => {
    expect(await readFeedbackObjects(store())).toEqual({ pairs: [], invalid: 0, skipped: 0, duplicates: 0, objects: 0, older: 0, unreadable: 0 });
  });
});

describe('the cloud retrain job reads the feedback the search service wrote (jobs/retrain → cloudRetrainSources)', () => {
  it('gives retraining the pairs under feedback/ of FEATURES_BUCKET, newest RETRAIN_MAX_FEEDBACK, each click once', async () => {
    const writer = blobFeedbackWriter(store());
    const click = async (queryId: string, value: string, resultId: string, at: string) =>
      writer(
        { queryId, query: { kind: 'similar', value }, resultId, action: 'open', at },
        { queryId, query: { kind: 'similar', value }, issuedAt: Date.parse(at) },
      );
    await click('q1', 'img-1', 'img-2', '2026-03-01T10:00:00.000Z');
    await click('q1', 'img-1', 'img-2', '2026-03-01T10:00:00.000Z');
    await click('q2', 'img-5', 'img-6', '2026-03-02T10:00:00.000Z');
    await click('q3', 'img-7', 'img-8', '2026-03-03T10:00:00.000Z');
    // Another instance's copy of q3's click under another name (e.g. written before names were per click).
    server.put(
      BUCKET,
      'feedback/2026-03-03/2026-03-03T10-00-01-000Z-other.json',
      JSON.stringify({ queryId: 'q3', query: { kind: 'similar', value: 'img-7' }, resultId: 'img-8', action: 'open', at: '2026-03-03T10:00:01.000Z' }),
    );
    const sources = cloudRetrainSources(server.storage(), { FEATURES_BUCKET: BUCKET, RETRAIN_MAX_FEEDBACK: 3 }, silentLogger);
    expect(await sources.feedback!()).toEqual([
      { kind: 'image', queryId: 'img-5', openedId: 'img-6' },
      { kind: 'image', queryId: 'img-7', openedId: 'img-8' },
    ]);
    expect(mediaReads().every((name) => name.startsWith('feedback/'))).toBe(true);
  });
});

describe('readFeedbackFile (local feedback.jsonl)', () => {
  it('keeps only the newest maxEvents events of a long file; invalid lines anywhere are counted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'iss-feedback-cap-'));
    try {
      const lines = Array.from({ length: 25 }, (_, i) =>
        JSON.stringify(event(`2026-03-01T10:00:${String(i).padStart(2, '0')}.000Z`, { kind: 'similar', value: `q-${i}` }, `r-${i}`)),
      );
      await writeFile(join(dir, 'feedback.jsonl'), `${lines.join('\n')}\n\nnot json\n`);
      const read = await readFeedbackFile(join(dir, 'feedback.jsonl'), { maxEvents: 4 });
      expect(read.pairs.map((p) => p.openedId)).toEqual(['r-21', 'r-22', 'r-23', 'r-24']);
      expect(read).toMatchObject({ invalid: 1, skipped: 0 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../../shared/adapters/opensearch/index.js';
import { TOPICS } from '../../shared/contracts.js';
import { settleUpsertOutcomes, upsertEmbeddings, type UpsertDeps } from '../../shared/handlers/upsert-vectors.js';
import { silentLogger } from '../../shared/logger.js';
import type { VectorIndex } from '../../shared/ports/vector-index.js';
import { delivery, RecordingBus } from '../helpers/strict-fakes.js';
import { MemoryRejections } from './functions-fakes.js';
import { FakeOpenSearch } from './opensearch-fake-server.js';

/**
 * A batch of embedding messages written with one `_bulk` (issue 15, item 6): a `_bulk` answer
 * carries one result per item and a failed item does not fail the others (OpenSearch docs, "Bulk"
 * API: "the response … contains the individual results of each operation", `errors: true` when
 * any failed), so only the messages whose own item failed are retried; the rest are acked. The
 * fake server answers bulk items exactly that way (test/unit/opensearch-fake-server.ts).
 */
const MODEL = 'm1';
const upsertMsg = (id: string, generation = '10') => ({
  op: 'upsert',
  id,
  uri: `gs://photos/${id}.jpg`,
  bucket: 'photos',
  name: `${id}.jpg`,
  generation,
  modelVersion: MODEL,
  vector: [0.6, 0.8, 0, 0],
  metadata: { labels: [] },
});
const deleteMsg = (id: string, generation = '20') => ({ op: 'delete', id, uri: `gs://photos/${id}.jpg`, generation });

let fake: FakeOpenSearch;
let catalog: OpenSearchIndexCatalog;
let index: VectorIndex;
let bus: RecordingBus;
let deps: UpsertDeps;

beforeEach(async () => {
  fake = new FakeOpenSearch();
  await fake.start();
  const client = createOpenSearchClient({ url: fake.url, requestTimeoutMs: 5_000 });
  catalog = new OpenSearchIndexCatalog(client, parseOpenSearchIndexOptions({ backoffBaseMs: 1, backoffMaxMs: 2, maxRetries: 2 }), silentLogger);
  index = await catalog.ensureLive(MODEL, 4);
  bus = new RecordingBus();
  deps = { index, bus: bus.asPort(), rejections: new MemoryRejections(), logger: silentLogger };
});

afterEach(async () => {
  await catalog.close();
  await fake.stop();
});

const bulkRequests = () => fake.requestsTo(/^\/_bulk$/, 'POST');

describe('upsertEmbeddings over OpenSearch: per-item results of one _bulk', () => {
  it('retries only the message whose bulk item was refused; the others are written, then acked', async () => {
    fake.addFault({
      match: (r) => r.path === '/_bulk',
      items: (id) => (id === 'b' ? { status: 400, type: 'mapper_parsing_exception', reason: 'failed to parse' } : undefined),
    });
    const out = await upsertEmbeddings([delivery(upsertMsg('a'), 'A'), delivery(upsertMsg('b'), 'B'), delivery(upsertMsg('c'), 'C')], deps);
    // The batch-mates were applied by the one _bulk; the re-check after the partial failure finds
    // them at their generation, so they may be reported `unchanged`: either way they are acked.
    const byAck = Object.fromEntries(out.map((o) => [o.ackId, o.status]));
    expect(byAck.B).toBe('retry');
    expect([byAck.A, byAck.C].every((s) => s === 'created' || s === 'unchanged')).toBe(true);
    expect(out).toHaveLength(3);
    expect(out.find((o) => o.ackId === 'B')).toMatchObject({ id: 'b', detail: expect.stringMatching(/mapper_parsing_exception/) });
    expect((await index.get('a'))?.generation).toBe('10');
    expect((await index.get('c'))?.generation).toBe('10');
    expect(await index.get('b')).toBeNull();
    // Rejections of the written documents are forgotten, not the refused one's.
    expect((deps.rejections as MemoryRejections).cleared.map((c) => c.id).sort()).toEqual(['a', 'c']);
    await settleUpsertOutcomes(bus.asPort(), out);
    expect(bus.acked.sort()).toEqual(['A', 'C']);
    expect(bus.nacked).toEqual([{ ackId: 'B', reason: expect.stringMatching(/mapper_parsing_exception/) }]);
  });

  it('retries only the items OpenSearch kept throttling (429) past its retries', async () => {
    fake.addFault({
      match: (r) => r.path === '/_bulk',
      times: 50,
      items: (id) => (id === 'b' ? { status: 429, type: 'es_rejected_execution_exception' } : undefined),
    });
    const out = await upsertEmbeddings([delivery(upsertMsg('a'), 'A'), delivery(upsertMsg('b'), 'B')], deps);
    const byAck = Object.fromEntries(out.map((o) => [o.ackId, o.status]));
    expect(byAck.B).toBe('retry');
    expect(['created', 'unchanged']).toContain(byAck.A);
    expect((await index.get('a'))?.generation).toBe('10');
    expect(await index.get('b')).toBeNull();
  });

  it('with one item refused and another throttled past the retries in the same batch, retries exactly those two', async () => {
    fake.addFault({
      match: (r) => r.path === '/_bulk',
      times: 50,
      items: (id) =>
        id === 'bad' ? { status: 400, type: 'mapper_parsing_exception' } : id === 'busy' ? { status: 429, type: 'es_rejected_execution_exception' } : undefined,
    });
    const out = await upsertEmbeddings([delivery(upsertMsg('bad'), 'BAD'), delivery(upsertMsg('busy'), 'BUSY'), delivery(upsertMsg('ok'), 'OK')], deps);
    const byAck = Object.fromEntries(out.map((o) => [o.ackId, o.status]));
    expect(byAck.BAD).toBe('retry');
    expect(byAck.BUSY).toBe('retry');
    expect(['created', 'unchanged']).toContain(byAck.OK);
    expect((await index.get('ok'))?.generation).toBe('10');
  });

  it('retries only the delete whose bulk item was refused', async () => {
    await upsertEmbeddings([delivery(upsertMsg('a'), 'A0'), delivery(upsertMsg('b'), 'B0')], deps);
    fake.addFault({ match: (r) => r.path === '/_bulk', items: (id) => (id === 'a' ? { status: 400, type: 'illegal_argument_exception' } : undefined) });
    const out = await upsertEmbeddings([delivery(deleteMsg('a'), 'A'), delivery(deleteMsg('b'), 'B')], deps);
    const byAck = Object.fromEntries(out.map((o) => [o.ackId, o.status]));
    expect(byAck.A).toBe('retry');
    expect(['deleted', 'absent']).toContain(byAck.B);
    expect(await index.get('a')).not.toBeNull();
    expect(await index.get('b')).toBeNull();
  });

  it('writes a batch of documents with one _bulk, and a stale generation never overwrites a newer one', async () => {
    await upsertEmbeddings([delivery(upsertMsg('x', '200'), 'X0')], deps);
    const before = bulkRequests().length;
    const out = await upsertEmbeddings([delivery(upsertMsg('x', '100'), 'X'), ...['p', 'q', 'r'].map((id) => delivery(upsertMsg(id), id.toUpperCase()))], deps);
    expect(Object.fromEntries(out.map((o) => [o.ackId, o.status]))).toEqual({ X: 'stale', P: 'created', Q: 'created', R: 'created' });
    expect(bulkRequests().length - before).toBe(1);
    expect((await index.get('x'))?.generation).toBe('200');
    expect(bus.published.filter((p) => p.topic === TOPICS.imageEvents)).toEqual([]);
  });
});

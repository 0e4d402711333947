import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { getFunction } from '@google-cloud/functions-framework/testing';
import type { UpsertVectorsResult } from '../functions/upsert-vectors.js';
import { createOpenSearchClient, OpenSearchIndexCatalog, parseOpenSearchIndexOptions } from '../shared/adapters/opensearch/index.js';
import { vectorToBase64 } from '../shared/contracts.js';
import { upsertEmbeddings } from '../shared/handlers/upsert-vectors.js';
import { silentLogger } from '../shared/logger.js';
import type { Delivery, EventBus } from '../shared/ports/event-bus.js';
import type { RejectionLog } from '../shared/ports/rejection-log.js';
import { PUSH_BATCH_MAX } from '../shared/services/upsert-batcher.js';
import { mulberry32 } from '../shared/training/prng.js';
import { FakeOpenSearch } from '../test/unit/opensearch-fake-server.js';

/**
 * Cloud indexing of a backfill (issue 15, item 6): `documents` embedding messages pushed to
 * `upsertVectors` with `inFlight` of them outstanding at once (Pub/Sub push: one message per
 * request), into the project's OpenSearch fake server behind a proxy that gives every request a
 * realistic cost: `latencyMs` of service time on a node whose thread pools are those of the
 * stack's OpenSearch VM (e2-standard-4, 4 vCPUs; OpenSearch docs, "Thread pool settings": `write`
 * — bulk — has one thread per processor, `get` — `_mget` — 1.5 × processors + 1), so requests
 * beyond the pool wait as they would on the node.
 * - one-per-request (the previous release): each pushed message is one handler call, one `_mget`
 *   and one `_bulk` of one document;
 * - batched (this release): the real `upsertVectors` function, whose instance writes the requests
 *   in flight together (shared/services/upsert-batcher.ts, at most {@link PUSH_BATCH_MAX} a batch).
 */
export interface CloudIndexingOptions {
  documents: number;
  dimension: number;
  latencyMs: number;
  inFlight: number;
  processors: number;
}

export interface CloudIndexingVariant {
  documents: number;
  seconds: number;
  documentsPerSecond: number;
  bulkRequests: number;
  otherRequests: number;
  /** Seconds of OpenSearch service time the requests held (`latencyMs` each, on the pools above). */
  serviceSeconds: number;
  /** CPU seconds of this process (the function's code, the client, the proxy and the fake together). */
  cpuSeconds: number;
  indexed: number;
}

export interface CloudIndexingResult extends CloudIndexingOptions {
  onePerRequest: CloudIndexingVariant;
  batched: CloudIndexingVariant;
  ratio: number;
}

/** A fixed pool of `size` slots, each held for the request's service time; the rest queue. */
class Pool {
  private busy = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly size: number) {}
  async hold(ms: number): Promise<void> {
    if (this.busy >= this.size) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.busy += 1;
    await new Promise((r) => setTimeout(r, ms));
    const next = this.queue.shift();
    if (next) next();
    else this.busy -= 1;
  }
}

/** A proxy in front of the fake: each request costs `latencyMs` of a write or read pool slot. */
async function latencyProxy(target: string, options: CloudIndexingOptions) {
  const write = new Pool(options.processors);
  const read = new Pool(Math.floor((options.processors * 3) / 2) + 1);
  const counts = { bulk: 0, other: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const bulk = (req.url ?? '').startsWith('/_bulk');
      if (bulk) counts.bulk += 1;
      else counts.other += 1;
      void (bulk ? write : read).hold(options.latencyMs).then(() => {
        const upstream = http.request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        });
        upstream.on('error', () => res.destroy());
        upstream.end(Buffer.concat(chunks));
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    counts,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

function messages(options: CloudIndexingOptions): unknown[] {
  const random = mulberry32(6);
  return Array.from({ length: options.documents }, (_, i) => {
    const v = Float32Array.from({ length: options.dimension }, () => random() - 0.5);
    const norm = Math.hypot(...v);
    return {
      op: 'upsert',
      id: `doc-${i}`,
      uri: `gs://iss-images/backfill/${i}.jpg`,
      bucket: 'iss-images',
      name: `backfill/${i}.jpg`,
      generation: String(1_700_000_000_000_000 + i),
      modelVersion: 'm1',
      vectorBase64: vectorToBase64(v.map((x) => x / norm)),
      metadata: { labels: [] },
    };
  });
}

const quietBus = { publish: async () => '0' } as unknown as EventBus;
const noRejections: RejectionLog = { record: async () => undefined, clear: async () => undefined, list: async () => [], count: async () => 0 };

/** Runs `send` over every message with `inFlight` outstanding at once. */
async function push(all: unknown[], inFlight: number, send: (payload: unknown, n: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < all.length) {
        const n = next++;
        await send(all[n], n);
      }
    }),
  );
}

async function variant(
  options: CloudIndexingOptions,
  all: unknown[],
  run: (catalog: OpenSearchIndexCatalog, index: Awaited<ReturnType<OpenSearchIndexCatalog['ensureLive']>>) => Promise<void>,
): Promise<CloudIndexingVariant> {
  const fake = new FakeOpenSearch();
  await fake.start();
  const proxy = await latencyProxy(fake.url, options);
  const catalog = new OpenSearchIndexCatalog(
    createOpenSearchClient({ url: proxy.url, requestTimeoutMs: 120_000 }),
    parseOpenSearchIndexOptions({}),
    silentLogger,
  );
  try {
    const index = await catalog.ensureLive('m1', options.dimension);
    const before = { ...proxy.counts };
    const start = process.hrtime.bigint();
    const cpu = process.cpuUsage();
    await run(catalog, index);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    const counts = { bulk: proxy.counts.bulk - before.bulk, other: proxy.counts.other - before.other };
    return {
      documents: all.length,
      seconds,
      documentsPerSecond: all.length / seconds,
      bulkRequests: counts.bulk,
      otherRequests: counts.other,
      serviceSeconds: ((counts.bulk + counts.other) * options.latencyMs) / 1000,
      cpuSeconds: (used.user + used.system) / 1e6,
      indexed: await index.count(),
    };
  } finally {
    await catalog.close();
    await proxy.close();
    await fake.stop();
  }
}

export async function measureCloudIndexing(options: CloudIndexingOptions, line: (s: string) => void): Promise<CloudIndexingResult> {
  const all = messages(options);
  const delivery = (payload: unknown, n: number): Delivery => ({
    ackId: `m${n}`,
    messageId: `m${n}`,
    data: payload,
    attributes: {},
    deliveryAttempt: 1,
    publishTime: new Date().toISOString(),
  });

  const onePerRequest = await variant(options, all, (_catalog, index) =>
    push(all, options.inFlight, async (payload, n) => {
      const [outcome] = await upsertEmbeddings([delivery(payload, n)], { index, bus: quietBus, rejections: noRejections, logger: silentLogger });
      if (outcome?.status !== 'created') throw new Error(`message ${n}: ${JSON.stringify(outcome)}`);
    }),
  );
  line(
    `  one-per-request (previous release): ${onePerRequest.documentsPerSecond.toFixed(0)} documents/s ` +
      `(${onePerRequest.seconds.toFixed(1)} s; ${onePerRequest.bulkRequests} _bulk + ${onePerRequest.otherRequests} other requests holding ${onePerRequest.serviceSeconds.toFixed(0)} s of OpenSearch service time; ${onePerRequest.cpuSeconds.toFixed(1)} s CPU here; ${onePerRequest.indexed} indexed)`,
  );

  const { setDepsForTesting } = await import('../functions/upsert-vectors.js');
  const fn = getFunction('upsertVectors') as unknown as (event: unknown) => Promise<UpsertVectorsResult>;
  const batched = await variant(options, all, async (_catalog, index) => {
    setDepsForTesting({ liveIndex: async () => index, bus: quietBus, rejections: noRejections, logger: silentLogger });
    try {
      await push(all, options.inFlight, async (payload, n) => {
        const event = {
          specversion: '1.0',
          id: `m${n}`,
          source: '//pubsub.googleapis.com/projects/p/topics/iss-embeddings',
          type: 'google.cloud.pubsub.topic.v1.messagePublished',
          data: {
            message: {
              data: Buffer.from(JSON.stringify(payload)).toString('base64'),
              attributes: {},
              messageId: `m${n}`,
              publishTime: new Date().toISOString(),
            },
            subscription: 'projects/p/subscriptions/iss-embeddings-upsert',
          },
        };
        const result = await fn(event);
        if (result.status !== 'done' || result.outcome !== 'created') throw new Error(`message ${n}: ${JSON.stringify(result)}`);
      });
    } finally {
      setDepsForTesting(null);
    }
  });
  line(
    `  batched (this release, up to ${PUSH_BATCH_MAX} a batch): ${batched.documentsPerSecond.toFixed(0)} documents/s ` +
      `(${batched.seconds.toFixed(1)} s; ${batched.bulkRequests} _bulk + ${batched.otherRequests} other requests holding ${batched.serviceSeconds.toFixed(0)} s of OpenSearch service time; ${batched.cpuSeconds.toFixed(1)} s CPU here; ${batched.indexed} indexed)`,
  );
  const ratio = batched.documentsPerSecond / onePerRequest.documentsPerSecond;
  line(`  ratio batched / one-per-request: ${ratio.toFixed(1)}×`);
  return { ...options, onePerRequest, batched, ratio };
}

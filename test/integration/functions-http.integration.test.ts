import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { getTestServer } from '@google-cloud/functions-framework/testing';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { JsonRejectionLog } from '../../shared/adapters/local/json-rejection-log.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-index.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { documentId, TOPICS, type ImageEvent } from '../../shared/contracts.js';
import { silentLogger } from '../../shared/logger.js';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { EventBus } from '../../shared/ports/event-bus.js';
import type { VectorIndex } from '../../shared/ports/vector-index.js';
import { ModelHolder } from '../../shared/services/model-holder.js';
import { createSearchService } from '../../functions/search-server.js';
import { blobFeedbackWriter } from '../../shared/services/feedback.js';
import { FakeEmbedder, MemoryIndex, MemoryRejections, normalise } from '../unit/functions-fakes.js';

/**
 * The entry points over HTTP as Google calls them — Eventarc's binary-mode CloudEvents, Pub/Sub's
 * raw push envelope — served by the Functions Framework's own server, wired to the real local
 * adapters (durable file queue, LanceDB index, JSON rejection log).
 */
let work: string;
let bus: FileQueue;

/** The file queue names topics by id; Pub/Sub paths (`projects/p/topics/t`) map to their last segment. */
function byTopicId(queue: EventBus): EventBus {
  const id = (topic: string) => topic.split('/').pop()!;
  return {
    publish: (topic, data, attributes) => queue.publish(id(topic), data, attributes),
    publishBatch: (topic, items) => queue.publishBatch(id(topic), items),
    pull: (topic, options) => queue.pull(id(topic), options),
    ack: (topic, ackIds) => queue.ack(id(topic), ackIds),
    nack: (topic, ackIds, reason) => queue.nack(id(topic), ackIds, reason),
    extendDeadline: (topic, ackIds, seconds) => queue.extendDeadline(id(topic), ackIds, seconds),
    deadLetter: (topic, ackIds, reason) => queue.deadLetter(id(topic), ackIds, reason),
    listDeadLetters: (topic, limit) => queue.listDeadLetters(id(topic), limit),
    stats: (topic) => queue.stats(id(topic)),
    close: () => Promise.resolve(),
  };
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
const closeServer = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'iss-functions-http-'));
  bus = new FileQueue(path.join(work, 'queue'), { maxDeliveryAttempts: 5 });
});
afterAll(async () => {
  await bus.close();
  await rm(work, { recursive: true, force: true });
});

describe('onObjectEvent over HTTP (Eventarc binary-mode CloudEvent)', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    const mod = await import('../../functions/on-object-event.js');
    mod.setDepsForTesting({
      bus,
      rejections: new JsonRejectionLog(path.join(work, 'rejected')),
      logger: silentLogger,
      settings: { prefix: '', maxBytes: 1_000_000 },
      deadLetterTopic: 'iss-image-events-dead-letter',
    });
    server = getTestServer('onObjectEvent');
    url = await listen(server);
  });
  afterAll(() => closeServer(server));

  const post = (type: string, data: unknown) =>
    fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'ce-specversion': '1.0',
        'ce-id': '8440311425735716',
        'ce-source': '//storage.googleapis.com/projects/_/buckets/iss-images',
        'ce-type': type,
        'ce-subject': 'objects/a/cat.png',
        'ce-time': '2025-03-01T10:00:00.250Z',
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      },
      body: JSON.stringify(data),
    });

  it('publishes finalize and delete events to image-events, in the contract shape', async () => {
    const object = {
      bucket: 'iss-images',
      name: 'a/cat.png',
      generation: '1740823200120456',
      contentType: 'image/png',
      size: '1234',
      updated: '2025-03-01T10:00:00Z',
    };
    expect((await post('google.cloud.storage.object.v1.finalized', object)).status).toBe(200);
    expect((await post('google.cloud.storage.object.v1.deleted', object)).status).toBe(200);
    const deliveries = await bus.pull<ImageEvent>(TOPICS.imageEvents, { maxMessages: 10 });
    expect(deliveries.map((d) => [d.data.eventType, d.data.generation, d.data.size, d.data.eventTime])).toEqual([
      ['finalize', '1740823200120456', 1234, '2025-03-01T10:00:00.250Z'],
      ['delete', '1740823200120456', 1234, '2025-03-01T10:00:00.250Z'],
    ]);
    await bus.ack(
      TOPICS.imageEvents,
      deliveries.map((d) => d.ackId),
    );
  });

  it('answers 200 for a malformed event (no retry storm) and parks it on the dead-letter topic', async () => {
    const res = await post('google.cloud.storage.object.v1.finalized', { bucket: 'iss-images' });
    expect(res.status).toBe(200);
    const [dead] = await bus.pull<{ reason: string }>('iss-image-events-dead-letter', { maxMessages: 10 });
    expect(dead!.data.reason).toMatch(/name/);
    expect(dead!.attributes.reason).toBe(dead!.data.reason);
  });
});

describe('upsertVectors over HTTP (Pub/Sub push envelope)', () => {
  let server: Server;
  let url: string;
  let catalog: LanceDbIndexCatalog;
  let index: VectorIndex;
  let failing = false;

  beforeAll(async () => {
    catalog = await LanceDbIndexCatalog.open(path.join(work, 'index'));
    index = await catalog.ensureLive('m1', 4);
    const mod = await import('../../functions/upsert-vectors.js');
    mod.setDepsForTesting({
      liveIndex: async () => {
        if (failing) throw new Error('connect ECONNREFUSED 10.0.0.5:9200');
        return index;
      },
      bus: byTopicId(bus),
      rejections: new MemoryRejections(),
      logger: silentLogger,
    });
    server = getTestServer('upsertVectors');
    url = await listen(server);
  });
  afterAll(async () => {
    await closeServer(server);
    await catalog.close();
  });

  // The push endpoint carries the topic in its path (infra/components/push-delivery.ts).
  const push = (payload: unknown, raw?: string) =>
    fetch(`${url}/projects/p1/topics/iss-embeddings`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        message: {
          data: Buffer.from(raw ?? JSON.stringify(payload)).toString('base64'),
          attributes: { op: 'upsert' },
          messageId: '136969346945',
          message_id: '136969346945',
          publishTime: '2025-03-01T10:00:05.000Z',
        },
        subscription: 'projects/p1/subscriptions/iss-embeddings-upsert',
        deliveryAttempt: 1,
      }),
    });

  const id = documentId('iss-images', 'a/cat.png');
  const message = (generation: string) => ({
    op: 'upsert',
    id,
    uri: 'gs://iss-images/a/cat.png',
    bucket: 'iss-images',
    name: 'a/cat.png',
    generation,
    modelVersion: 'm1',
    vector: Array.from(normalise(Float32Array.from([1, 2, 3, 4]))),
    metadata: { labels: ['cat'] },
  });

  it('acks (2xx) after writing into the live LanceDB index; a stale generation never overwrites', async () => {
    expect((await push(message('20'))).status).toBe(200);
    expect((await push(message('10'))).status).toBe(200);
    expect((await index.get(id))!.generation).toBe('20');
  });

  it('answers 500 when the index is unreachable, so Pub/Sub redelivers', async () => {
    failing = true;
    try {
      expect((await push(message('30'))).status).toBe(500);
    } finally {
      failing = false;
    }
    expect((await index.get(id))!.generation).toBe('20');
  });

  it('dead-letters a malformed message to <topic>-dead-letter and acks it', async () => {
    expect((await push({ op: 'upsert', id })).status).toBe(200);
    const [dead] = await bus.pull<{ op: string }>('iss-embeddings-dead-letter', { maxMessages: 10 });
    expect(dead!.data).toEqual({ op: 'upsert', id });
    expect(dead!.attributes.reason).toMatch(/malformed embedding message/);
    expect(dead!.attributes.sourceMessageId).toBe('136969346945');
  });
});

describe('search service (Cloud Run entry) with fakes', () => {
  let app: FastifyInstance;
  let url: string;
  const index = new MemoryIndex('images-v1', 'fake-v1', 4);
  const feedback: string[] = [];

  beforeAll(async () => {
    const embedder = new FakeEmbedder('fake-v1');
    const now = new Date().toISOString();
    for (const [name, bytes] of [
      ['a/cat.png', [9, 1, 1, 1]],
      ['a/dog.png', [1, 9, 1, 1]],
      ['a/car.png', [1, 1, 1, 9]],
    ] as const) {
      await index.upsert([
        {
          id: documentId('iss-images', name),
          uri: `gs://iss-images/${name}`,
          generation: '1',
          modelVersion: 'fake-v1',
          vector: normalise(Float32Array.from(bytes)),
          labels: [name.slice(2, 5)],
          indexedAt: now,
        },
      ]);
    }
    const rejections = new MemoryRejections();
    await rejections.record({ id: 'r1', uri: 'gs://iss-images/a/big.png', generation: '3', reason: 'too-large', detail: 'x', at: now });
    app = await createSearchService({
      catalog: { live: async () => index },
      model: {
        get: async () => embedder,
        current: () => embedder,
        forVersion: async (v: string) => (v === embedder.modelVersion ? embedder : Promise.reject(new Error(`unexpected switch to ${v}`))),
      },
      rejections,
      readObject: async () => Buffer.alloc(0),
      recordFeedback: blobFeedbackWriter({
        write: async (name: string, data: string) => {
          feedback.push(`${name} ${data}`);
        },
      }),
      logger: silentLogger,
    });
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(() => app.close());

  it('answers /api/status with the index, model and rejections (queues unknown to it)', async () => {
    const status = await (await fetch(`${url}/api/status`)).json();
    expect(status).toMatchObject({
      indexed: 3,
      pending: -1,
      index: { name: 'images-v1', modelVersion: 'fake-v1' },
      model: { version: 'fake-v1', dimension: 4 },
      rejected: { count: 1, byReason: { 'too-large': 1 } },
      queues: { [TOPICS.imageEvents]: { ready: -1 } },
    });
  });

  it('answers an image search with the nearest image first', async () => {
    const form = new FormData();
    form.append('image', new Blob([Uint8Array.from([8, 1, 2, 1, 0, 0])], { type: 'image/png' }), 'query.png');
    const res = await fetch(`${url}/api/search?k=2`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { modelVersion: string; results: { name: string; score: number }[] };
    expect(body.modelVersion).toBe('fake-v1');
    expect(body.results.map((r) => r.name)).toEqual(['cat.png', 'dog.png']);
  });

  it('serves the collection map like `imgsearch up` (issue 12, point 5): every indexed image placed, and a search located on it', async () => {
    const map = await fetch(`${url}/api/map`);
    expect(map.status).toBe(200);
    const body = (await map.json()) as { points: { id: string; name: string; x: number; y: number; label: string | null }[]; method: string; total: number };
    expect(body.method).toBe('pca');
    expect(body.total).toBe(3);
    expect(body.points.map((p) => p.name).sort()).toEqual(['car.png', 'cat.png', 'dog.png']);
    for (const p of body.points) expect(Number.isFinite(p.x) && Number.isFinite(p.y)).toBe(true);
    // A search on this instance is placed by its query vector: "more like this" of cat lands on cat.
    const cat = body.points.find((p) => p.name === 'cat.png')!;
    const answer = (await (await fetch(`${url}/api/search?similarTo=${encodeURIComponent(cat.id)}&k=1`)).json()) as {
      queryId: string;
      results: { id: string }[];
    };
    const queryId = answer.queryId;
    expect(queryId).toMatch(/\S/);
    const located = (await (await fetch(`${url}/api/map/locate?queryId=${queryId}&ids=${encodeURIComponent(answer.results[0]!.id)}`)).json()) as {
      query: { x: number; y: number } | null;
      results: { id: string; x: number; y: number }[];
    };
    expect(located.query).not.toBeNull();
    expect(Math.hypot(located.query!.x - cat.x, located.query!.y - cat.y)).toBeLessThan(1e-3);
    expect(located.results).toHaveLength(1);
  });

  it('refuses an unusable upload with a clear reason, and records feedback as an object', async () => {
    const form = new FormData();
    form.append('image', new Blob([Uint8Array.from([1])]), 'tiny.png');
    const res = await fetch(`${url}/api/search`, { method: 'POST', body: form });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ reason: 'corrupt-image' });

    // Feedback names a result of an answer, with that answer's token (only served results count).
    const answer = (await (await fetch(`${url}/api/search?similarTo=${encodeURIComponent(documentId('iss-images', 'a/cat.png'))}&k=1`)).json()) as {
      feedbackToken: string;
      results: { id: string }[];
    };
    const fb = await fetch(`${url}/api/feedback`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: answer.feedbackToken, resultId: answer.results[0]!.id, action: 'open' }),
    });
    expect(fb.status).toBe(204);
    expect(feedback[0]).toMatch(/^feedback\/\d{4}-\d{2}-\d{2}\/.+\.json \{"queryId"/);
  });
});

describe('search service on an empty model registry (before the bootstrap job ran)', () => {
  let app: FastifyInstance;
  let url: string;
  let registry: LocalModelRegistry;
  let holder: ModelHolder;
  const hint =
    'the bootstrap job iss-bootstrap-model has not registered the first model; run `gcloud run jobs execute iss-bootstrap-model --region europe-west1 --wait`';
  const index = new MemoryIndex('images-v1', 'fake-v1', 4);
  const manifest: ModelManifest = {
    name: 'fake-tower',
    version: 'fake-v1',
    image: {
      file: 'image.onnx',
      inputName: 'x',
      outputName: 'y',
      width: 2,
      height: 2,
      layout: 'NCHW',
      scale: 1 / 255,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      resize: 'cover',
      dimension: 4,
    },
    dimension: 4,
    normalize: true,
  };
  const loads: string[] = [];

  beforeAll(async () => {
    const now = new Date().toISOString();
    await index.upsert([
      {
        id: documentId('iss-images', 'a/cat.png'),
        uri: 'gs://iss-images/a/cat.png',
        generation: '1',
        modelVersion: 'fake-v1',
        vector: normalise(Float32Array.from([9, 1, 1, 1])),
        labels: [],
        indexedAt: now,
      },
    ]);
    registry = new LocalModelRegistry(path.join(work, 'empty-registry'));
    // The real holder over a real (empty) registry; only the ONNX loading is faked.
    holder = new ModelHolder(registry, {
      maxPixels: 1e7,
      logger: silentLogger,
      absentHint: hint,
      absentRetryMs: 0,
      load: async (_dir, version) => {
        loads.push(version);
        return new FakeEmbedder(version);
      },
    });
    app = await createSearchService({
      catalog: { live: async () => index },
      model: holder,
      rejections: new MemoryRejections(),
      readObject: async () => Buffer.alloc(0),
      logger: silentLogger,
      noModelHint: hint,
    });
    url = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app.close();
    await holder.close();
  });

  const searchByImage = () => {
    const form = new FormData();
    form.append('image', new Blob([Uint8Array.from([8, 1, 2, 1, 0, 0])], { type: 'image/png' }), 'query.png');
    return fetch(`${url}/api/search?k=1`, { method: 'POST', body: form });
  };

  it('starts, serves the page and a status without a model, and answers searches 503 with what to do', async () => {
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);

    const status = await fetch(`${url}/api/status`);
    expect(status.status).toBe(200);
    expect(await status.json()).toMatchObject({ model: null, notice: `no model yet: ${hint}`, indexed: 1, pending: -1 });

    const res = await searchByImage();
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: `no model yet: ${hint}`, code: 'NO_ACTIVE_MODEL' });
    const similar = await fetch(`${url}/api/search?similarTo=${documentId('iss-images', 'a/cat.png')}`);
    expect(similar.status).toBe(503);
    expect(loads).toEqual([]);
  });

  it('picks up the first model once it is registered and promoted, without a restart', async () => {
    await registry.register({ version: 'fake-v1', parent: null, manifest, files: { 'image.onnx': Buffer.from('not read by the fake loader') } });
    await registry.promote('fake-v1');

    const res = await searchByImage();
    expect(res.status).toBe(200);
    const body = (await res.json()) as { modelVersion: string; results: { name: string }[] };
    expect(body.modelVersion).toBe('fake-v1');
    expect(body.results.map((r) => r.name)).toEqual(['cat.png']);
    expect(await (await fetch(`${url}/api/status`)).json()).toMatchObject({ model: { version: 'fake-v1', dimension: 4 } });
    expect(loads).toEqual(['fake-v1']);
  });
});

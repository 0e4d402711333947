import { describe, expect, it } from 'vitest';
import { documentId, TOPICS, vectorFromBase64, vectorToBase64, type ImageEvent } from '../../shared/contracts.js';
import { GenerationMismatchError, ImageRejectedError, ModelMismatchError, ParseError } from '../../shared/errors.js';
import { embedBatch } from '../../shared/handlers/embed-batch.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { upsertEmbeddings } from '../../shared/handlers/upsert-vectors.js';
import { silentLogger } from '../../shared/logger.js';
import type { BlobStore, Embedder, FeatureStore, VectorDocument, VectorIndex } from '../../shared/ports/index.js';
import { SearchService } from '../../shared/services/search-service.js';
import { delivery, MemoryRejections, RecordingBus, strict } from '../helpers/strict-fakes.js';

const event = (over: Partial<ImageEvent> = {}): ImageEvent => ({
  bucket: 'photos',
  name: 'in/cat.jpg',
  generation: '1700000000000001',
  contentType: 'image/jpeg',
  size: 1234,
  eventType: 'finalize',
  eventTime: '2026-01-01T00:00:00.000Z',
  ...over,
});

describe('handleObjectEvent', () => {
  const setup = (prefix = 'in/') => {
    const bus = new RecordingBus();
    const rejections = new MemoryRejections();
    return { bus, rejections, deps: { bus: bus.asPort(), rejections, logger: silentLogger, settings: { prefix, maxBytes: 10_000 } } };
  };

  it('publishes a valid finalize event to image-events with its id', async () => {
    const { bus, deps } = setup();
    const out = await handleObjectEvent(event(), deps);
    expect(out).toEqual({ status: 'published', id: documentId('photos', 'in/cat.jpg'), eventType: 'finalize' });
    expect(bus.published).toHaveLength(1);
    expect(bus.published[0]!.topic).toBe(TOPICS.imageEvents);
    expect(bus.published[0]!.data).toMatchObject({ bucket: 'photos', name: 'in/cat.jpg', generation: '1700000000000001' });
  });

  it('ignores objects outside the prefix and non-image types, publishing nothing', async () => {
    const { bus, deps } = setup();
    expect(await handleObjectEvent(event({ name: 'out/cat.jpg' }), deps)).toMatchObject({ status: 'skipped', reason: 'outside-prefix' });
    expect(await handleObjectEvent(event({ name: 'in/notes.pdf', contentType: 'application/pdf' }), deps)).toMatchObject({
      status: 'skipped',
      reason: 'not-an-image-type',
    });
    expect(await handleObjectEvent(event({ name: 'in/notes.json', contentType: 'application/json' }), deps)).toMatchObject({
      status: 'skipped',
      reason: 'sidecar',
    });
    expect(bus.published).toHaveLength(0);
  });

  it('rejects empty and oversized objects with a recorded reason', async () => {
    const { bus, rejections, deps } = setup();
    expect(await handleObjectEvent(event({ size: 0 }), deps)).toMatchObject({ status: 'rejected', reason: 'empty-file' });
    expect(await handleObjectEvent(event({ name: 'in/big.jpg', size: 20_000 }), deps)).toMatchObject({ status: 'rejected', reason: 'too-large' });
    expect((await rejections.list()).map((r) => r.reason).sort()).toEqual(['empty-file', 'too-large']);
    expect(bus.published).toHaveLength(0);
  });

  it('passes deletes through even with size 0, and throws ParseError on a malformed payload', async () => {
    const { bus, deps } = setup();
    expect(await handleObjectEvent(event({ eventType: 'delete', size: 0 }), deps)).toMatchObject({ status: 'published', eventType: 'delete' });
    expect(bus.published).toHaveLength(1);
    await expect(handleObjectEvent({ bucket: 'b', name: 'x.jpg', generation: 'abc' }, deps)).rejects.toBeInstanceOf(ParseError);
  });
});

function fakeEmbedder(over: Partial<Embedder> = {}): Embedder {
  return strict<Embedder>('embedder', {
    modelVersion: 'm1',
    dimension: 2,
    hasTextTower: false,
    manifest: { name: 'base' } as Embedder['manifest'],
    prepare: async (buf: Buffer) => {
      if (buf.toString() === 'bad') throw new ImageRejectedError('corrupt-image', 'cannot decode');
      return { pixels: new Float32Array(3), width: 10, height: 10, format: 'png' };
    },
    embedDecoded: async (imgs) => ({ base: imgs.map(() => Float32Array.of(1, 0)), vectors: imgs.map(() => Float32Array.of(0, 1)) }),
    ...over,
  });
}

describe('embedBatch', () => {
  const setup = (files: Record<string, string | Error>) => {
    const bus = new RecordingBus();
    const rejections = new MemoryRejections();
    const put: unknown[] = [];
    const blobs = strict<BlobStore>('blobs', {
      bucket: 'photos',
      read: async (name) => {
        const f = files[name];
        if (f instanceof Error) throw f;
        if (f === undefined) throw new Error(`unexpected read ${name}`);
        return Buffer.from(f);
      },
      stat: async () => null,
    });
    const features = strict<FeatureStore>('features', { put: async (r) => void put.push(...r) });
    const index = strict<VectorIndex>('index', { generations: async () => new Map([[documentId('photos', 'old.jpg'), '5']]) });
    return {
      bus,
      rejections,
      put,
      deps: { blobs: () => blobs, embedder: fakeEmbedder(), bus: bus.asPort(), rejections, features, logger: silentLogger, index, limits: { maxBytes: 1e6 } },
    };
  };

  it('embeds good images in one batch, rejects bad ones, skips unchanged, and dead-letters malformed events', async () => {
    const { bus, rejections, put, deps } = setup({ 'a.jpg': 'ok', 'b.jpg': 'bad', 'gone.jpg': new GenerationMismatchError('replaced') });
    const out = await embedBatch(
      [
        delivery(event({ name: 'a.jpg' }), 'A'),
        delivery(event({ name: 'b.jpg' }), 'B'),
        delivery(event({ name: 'gone.jpg' }), 'G'),
        delivery(event({ name: 'old.jpg', generation: '5' }), 'O'),
        delivery(event({ name: 'x.jpg', eventType: 'delete' }), 'D'),
        delivery({ nonsense: true }, 'M'),
      ],
      deps,
    );
    const byAck = Object.fromEntries(out.map((o) => [o.ackId, o.status]));
    expect(byAck).toEqual({ A: 'embedded', B: 'rejected', G: 'superseded', O: 'unchanged', D: 'deleted', M: 'dead-lettered' });
    expect((await rejections.list())[0]).toMatchObject({ reason: 'corrupt-image', detail: 'cannot decode' });
    expect(put).toHaveLength(1);
    const msgs = bus.published.map((p) => p.data as { op: string; modelVersion?: string; vectorBase64?: string });
    expect(msgs.map((m) => m.op).sort()).toEqual(['delete', 'upsert']);
    const up = msgs.find((m) => m.op === 'upsert')!;
    expect(up.modelVersion).toBe('m1');
    expect(Array.from(vectorFromBase64(up.vectorBase64!))).toEqual([0, 1]);
  });

  it('asks for a retry on an unexpected read fault instead of rejecting the image', async () => {
    const { deps, rejections } = setup({ 'a.jpg': new Error('ECONNRESET') });
    const out = await embedBatch([delivery(event({ name: 'a.jpg' }), 'A')], deps);
    expect(out).toMatchObject([{ status: 'retry', ackId: 'A' }]);
    expect(await rejections.count()).toBe(0);
  });
});

describe('upsertEmbeddings', () => {
  const msg = (over: Record<string, unknown> = {}) => ({
    op: 'upsert',
    id: 'id1',
    uri: 'gs://photos/a.jpg',
    bucket: 'photos',
    name: 'a.jpg',
    generation: '10',
    modelVersion: 'm1',
    vector: [0, 1],
    metadata: { labels: ['cat'] },
    ...over,
  });
  const setup = (upsert: VectorIndex['upsert'] = async (docs) => docs.map(() => 'created' as const)) => {
    const bus = new RecordingBus();
    const written: VectorDocument[][] = [];
    const index = strict<VectorIndex>('index', {
      modelVersion: 'm1',
      dimension: 2,
      upsert: async (docs) => {
        written.push(docs);
        return upsert(docs);
      },
    });
    return { bus, written, deps: { index, bus: bus.asPort(), rejections: new MemoryRejections(), logger: silentLogger } };
  };

  it('writes only the newest generation of an id seen twice in one batch', async () => {
    const { written, deps } = setup();
    const out = await upsertEmbeddings(
      [delivery(msg({ generation: '10' }), 'A'), delivery(msg({ generation: '12' }), 'B'), delivery(msg({ generation: '11' }), 'C')],
      deps,
    );
    expect(written).toHaveLength(1);
    expect(written[0]!.map((d) => d.generation)).toEqual(['12']);
    expect(Object.fromEntries(out.map((o) => [o.ackId, o.status]))).toEqual({ A: 'stale', B: 'created', C: 'stale' });
  });

  it('reads base64 float32 vectors exactly, and refuses a payload that is not whole floats', async () => {
    const { written, deps } = setup();
    const v = Float32Array.of(0.1, -0.7);
    await upsertEmbeddings([delivery(msg({ vector: undefined, vectorBase64: vectorToBase64(v) }), 'A')], deps);
    expect(Array.from(written[0]![0]!.vector)).toEqual(Array.from(v));
    const out = await upsertEmbeddings([delivery(msg({ vector: undefined, vectorBase64: 'AAA=' }), 'B')], deps);
    expect(out[0]).toMatchObject({ status: 'dead-lettered', detail: expect.stringMatching(/whole float32/) });
  });

  it('sends a vector of another model version back to be re-embedded, never into the index', async () => {
    const { bus, written, deps } = setup();
    const out = await upsertEmbeddings([delivery(msg({ modelVersion: 'm0' }), 'A')], deps);
    expect(out[0]).toMatchObject({ status: 'requeued' });
    expect(written).toHaveLength(0);
    expect(bus.published[0]).toMatchObject({ topic: TOPICS.imageEvents, data: { name: 'a.jpg', generation: '10', eventType: 'finalize' } });
  });

  it('dead-letters malformed messages and wrong dimensions, and retries on index faults', async () => {
    const { deps } = setup(async () => {
      throw new ModelMismatchError('boom');
    });
    const out = await upsertEmbeddings([delivery({ op: 'upsert' }, 'M'), delivery(msg({ vector: [1, 2, 3] }), 'W'), delivery(msg(), 'F')], deps);
    expect(Object.fromEntries(out.map((o) => [o.ackId, o.status]))).toEqual({ M: 'dead-lettered', W: 'dead-lettered', F: 'retry' });
  });
});

describe('SearchService', () => {
  it('explains that text search needs a text tower', async () => {
    const index = strict<VectorIndex>('index', { modelVersion: 'm1' });
    const svc = new SearchService(
      () => fakeEmbedder(),
      async () => index,
    );
    await expect(svc.byText('red dress', { k: 5 })).rejects.toThrow(/no text tower yet.*imgsearch retrain/);
  });

  it('refuses to answer from an index of another model', async () => {
    const index = strict<VectorIndex>('index', { modelVersion: 'm0' });
    const svc = new SearchService(
      () => fakeEmbedder(),
      async () => index,
    );
    await expect(svc.byImage(Buffer.from('ok'), { k: 5 })).rejects.toThrow(/holds vectors of model m0 but the loaded model is m1/);
  });

  it('follows the live index: queries use the model the index was built with, old or new', async () => {
    // The registry already says m1 (promoted) while the alias still points at m0's index.
    const queried: string[] = [];
    const indexOf = (modelVersion: string) =>
      strict<VectorIndex>('index', {
        modelVersion,
        query: async (vector: Float32Array) => {
          queried.push(`${modelVersion}:${vector[0]}`);
          return [];
        },
      });
    let live = indexOf('m0');
    let loaded = fakeEmbedder();
    const old = fakeEmbedder({ modelVersion: 'm0', embedDecoded: async () => ({ base: [Float32Array.of(7, 0)], vectors: [Float32Array.of(7, 0)] }) });
    const switches: string[] = [];
    const svc = new SearchService(
      () => loaded,
      async () => live,
      async (version) => {
        switches.push(version);
        loaded = version === 'm0' ? old : fakeEmbedder();
        return loaded;
      },
    );
    expect((await svc.byImage(Buffer.from('ok'), { k: 5 })).modelVersion).toBe('m0');
    live = indexOf('m1'); // the reindex job swapped the alias
    expect((await svc.byImage(Buffer.from('ok'), { k: 5 })).modelVersion).toBe('m1');
    expect(switches).toEqual(['m0', 'm1']);
    expect(queried).toEqual(['m0:7', 'm1:0']);
  });
});

import { getFunction } from '@google-cloud/functions-framework/testing';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { documentId, imageEventSchema, TOPICS } from '../../shared/contracts.js';
import { TransientError } from '../../shared/errors.js';
import type { OnObjectEventResult } from '../../functions/on-object-event.js';
import { captureLogger, MemoryRejections, RecordingBus } from './functions-fakes.js';

/** CloudEvents exactly as Eventarc delivers GCS object events (StorageObjectData, int64 as strings). */
function storageEvent(type: 'finalized' | 'deleted' | string, data: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  const name = String(data.name);
  return {
    specversion: '1.0',
    id: `evt-${Math.random().toString(36).slice(2)}`,
    source: '//storage.googleapis.com/projects/_/buckets/iss-images',
    subject: `objects/${name}`,
    type: type.includes('.') ? type : `google.cloud.storage.object.v1.${type}`,
    time: '2025-03-01T10:00:00.250Z',
    datacontenttype: 'application/json',
    data,
    ...extra,
  };
}

function objectData(name: string, generation: string, overrides: Record<string, unknown> = {}) {
  return {
    kind: 'storage#object',
    id: `iss-images/${name}/${generation}`,
    selfLink: `https://www.googleapis.com/storage/v1/b/iss-images/o/${encodeURIComponent(name)}`,
    name,
    bucket: 'iss-images',
    generation,
    metageneration: '1',
    contentType: 'image/jpeg',
    timeCreated: '2025-03-01T10:00:00.120Z',
    updated: '2025-03-01T10:00:00.120Z',
    storageClass: 'STANDARD',
    timeStorageClassUpdated: '2025-03-01T10:00:00.120Z',
    size: '48213',
    md5Hash: 'Y2F0cyBhcmUgbmljZQ==',
    mediaLink: `https://storage.googleapis.com/download/storage/v1/b/iss-images/o/x?generation=${generation}&alt=media`,
    crc32c: 'AAAAAA==',
    etag: 'CLDa8bK5lYQDEAE=',
    ...overrides,
  };
}

const DLQ = 'iss-image-events-dead-letter';
let fn: (event: unknown) => Promise<OnObjectEventResult>;
let setDeps: typeof import('../../functions/on-object-event.js').setDepsForTesting;
let bus: RecordingBus;
let rejections: MemoryRejections;
let logs: ReturnType<typeof captureLogger>;

beforeAll(async () => {
  ({ setDepsForTesting: setDeps } = await import('../../functions/on-object-event.js'));
  fn = getFunction('onObjectEvent') as unknown as typeof fn;
});

beforeEach(() => {
  bus = new RecordingBus();
  rejections = new MemoryRejections();
  logs = captureLogger();
  setDeps({ bus, rejections, logger: logs.logger, settings: { prefix: 'photos/', maxBytes: 1_000_000 }, deadLetterTopic: DLQ, projectId: 'p1' });
});

describe('onObjectEvent (registered with the Functions Framework)', () => {
  it('publishes a finalized image as an ImageEvent that matches the contract', async () => {
    const result = await fn(storageEvent('finalized', objectData('photos/cat.jpg', '1740823200120456')));
    const id = documentId('iss-images', 'photos/cat.jpg');
    expect(result).toEqual({ status: 'published', id, eventType: 'finalize' });
    const [message] = bus.on(TOPICS.imageEvents);
    expect(message!.data).toEqual({
      bucket: 'iss-images',
      name: 'photos/cat.jpg',
      generation: '1740823200120456',
      contentType: 'image/jpeg',
      size: 48213,
      eventType: 'finalize',
      eventTime: '2025-03-01T10:00:00.250Z',
    });
    expect(imageEventSchema.parse(message!.data)).toBeTruthy();
    expect(message!.attributes).toEqual({ id, eventType: 'finalize', generation: '1740823200120456' });
  });

  it('publishes a delete with the deleted generation', async () => {
    await fn(storageEvent('deleted', objectData('photos/cat.jpg', '1740823200120456', { timeDeleted: '2025-03-02T08:00:00Z' })));
    const [message] = bus.on(TOPICS.imageEvents);
    expect(message!.data).toMatchObject({ eventType: 'delete', generation: '1740823200120456', name: 'photos/cat.jpg' });
  });

  it('a replace (finalize with a newer generation) keeps the id and carries the newer generation', async () => {
    await fn(storageEvent('finalized', objectData('photos/cat.jpg', '1740823200120456')));
    await fn(storageEvent('finalized', objectData('photos/cat.jpg', '1740909600000001', { size: '50000' })));
    const events = bus.on(TOPICS.imageEvents);
    expect(events.map((e) => e.attributes.id)).toEqual([documentId('iss-images', 'photos/cat.jpg'), documentId('iss-images', 'photos/cat.jpg')]);
    expect(events.map((e) => (e.data as { generation: string }).generation)).toEqual(['1740823200120456', '1740909600000001']);
  });

  it('ignores objects outside the prefix and non-images, logging the reason, publishing nothing', async () => {
    const outside = await fn(storageEvent('finalized', objectData('exports/cat.jpg', '1')));
    const notImage = await fn(storageEvent('finalized', objectData('photos/notes.csv', '2', { contentType: 'text/csv' })));
    expect(outside).toMatchObject({ status: 'skipped', reason: 'outside-prefix' });
    expect(notImage).toMatchObject({ status: 'skipped', reason: 'not-an-image-type' });
    expect(bus.published).toEqual([]);
    const reasons = logs.lines().map((l) => l.reason);
    expect(reasons).toContain('outside-prefix');
    expect(reasons).toContain('not-an-image-type');
  });

  it('records empty and too-large objects as rejected instead of publishing them', async () => {
    await fn(storageEvent('finalized', objectData('photos/empty.jpg', '3', { size: '0' })));
    await fn(storageEvent('finalized', objectData('photos/huge.jpg', '4', { size: '5000000' })));
    expect(bus.published).toEqual([]);
    expect([...rejections.records.values()].map((r) => [r.uri, r.reason])).toEqual([
      ['gs://iss-images/photos/empty.jpg', 'empty-file'],
      ['gs://iss-images/photos/huge.jpg', 'too-large'],
    ]);
  });

  it('dead-letters an unknown event type with the reason and returns normally', async () => {
    const event = storageEvent('google.cloud.storage.object.v1.metadataUpdated', objectData('photos/cat.jpg', '5'));
    const result = await fn(event);
    expect(result).toMatchObject({ status: 'dead-lettered' });
    const [dead] = bus.on(DLQ);
    expect(dead!.attributes.reason).toMatch(/unsupported CloudEvent type "google\.cloud\.storage\.object\.v1\.metadataUpdated"/);
    expect(dead!.attributes.sourceEventId).toBe(event.id);
    expect(dead!.data).toMatchObject({ cloudEvent: { id: event.id, type: event.type, data: { name: 'photos/cat.jpg' } } });
    expect(bus.on(TOPICS.imageEvents)).toEqual([]);
  });

  it('dead-letters events with missing or invalid fields, naming the field', async () => {
    const { name: _name, ...noName } = objectData('photos/cat.jpg', '6');
    await fn(storageEvent('finalized', noName));
    await fn(storageEvent('finalized', objectData('photos/dog.jpg', 'not-a-number')));
    const reasons = bus.on(DLQ).map((d) => d.attributes.reason);
    expect(reasons[0]).toMatch(/name/);
    expect(reasons[1]).toMatch(/generation/);
  });

  describe('while the image-events topic is unavailable and the dead-letter topic still accepts messages', () => {
    /** What @google-cloud/pubsub rejects a publish with when the service is unreachable (gRPC 14). */
    const unavailable = () => Object.assign(new Error('14 UNAVAILABLE: Connection dropped'), { code: 14, details: 'Connection dropped' });

    it.each([
      ['the gRPC UNAVAILABLE error of the Pub/Sub client', unavailable, /14 UNAVAILABLE/],
      ['a TransientError', () => new TransientError('Pub/Sub unavailable'), /Pub\/Sub unavailable/],
    ])('rethrows %s so Eventarc retries, and dead-letters nothing', async (_what, failure, message) => {
      bus.failPublishTo.set(TOPICS.imageEvents, failure());
      await expect(fn(storageEvent('finalized', objectData('photos/cat.jpg', '7')))).rejects.toThrow(message);
      expect(bus.on(DLQ)).toEqual([]);
      expect(bus.published).toEqual([]);
    });

    it('still dead-letters a malformed event once and returns normally (acknowledged: retrying cannot fix it)', async () => {
      bus.failPublishTo.set(TOPICS.imageEvents, unavailable());
      const event = storageEvent('google.cloud.storage.object.v1.metadataUpdated', objectData('photos/cat.jpg', '9'));
      await expect(fn(event)).resolves.toMatchObject({ status: 'dead-lettered' });
      expect(bus.published.map((p) => [p.topic, p.attributes.sourceEventId])).toEqual([[DLQ, event.id]]);
    });
  });

  it('logs with the Cloud Trace id of the CloudEvent traceparent', async () => {
    await fn(storageEvent('finalized', objectData('outside/cat.jpg', '8'), { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }));
    const line = logs.lines().find((l) => l.reason === 'outside-prefix')!;
    expect(line['logging.googleapis.com/trace']).toBe('projects/p1/traces/4bf92f3577b34da6a3ce929d0e0e4736');
    expect(line.severity).toBe('INFO');
  });
});

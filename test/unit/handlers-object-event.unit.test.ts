import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { TOPICS, type ImageEvent } from '../../shared/contracts.js';
import { handleObjectEvent } from '../../shared/handlers/on-object-event.js';
import { silentLogger } from '../../shared/logger.js';
import { MemoryRejections, RecordingBus } from '../helpers/strict-fakes.js';
import { recordingLogger } from '../helpers/recording-logger.js';

/**
 * The storage-event entry step: what it publishes, rejects and lists as ignored, with the exact
 * records a user sees (`imgsearch status`, the rejections list). Ids are sha256("bucket/name")[:32].
 */
const NOW = '2026-01-02T03:04:05.000Z';
const ID_CAT = '819986aadae97daef740cf5841e86f3a';

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

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(Date.parse(NOW));
});
afterEach(() => vi.useRealTimers());

function setup(maxBytes = 10_000) {
  const bus = new RecordingBus();
  const rejections = new MemoryRejections();
  const ignored = new MemoryRejections();
  const { logger, lines } = recordingLogger();
  return { bus, rejections, ignored, lines, deps: { bus: bus.asPort(), rejections, ignored, logger, settings: { prefix: 'in/', maxBytes } } };
}

describe('handleObjectEvent', () => {
  it('computes the document id from bucket and name (a fixed hash, the same in every process)', async () => {
    const { deps } = setup();
    expect(await handleObjectEvent(event(), deps)).toEqual({ status: 'published', id: ID_CAT, eventType: 'finalize' });
  });

  it('publishes an image event with its id, type and generation as attributes', async () => {
    const { bus, deps } = setup();
    await handleObjectEvent({ ...event(), size: '1234' }, deps);
    expect(bus.published).toEqual([
      {
        topic: TOPICS.imageEvents,
        data: event(),
        attributes: { id: ID_CAT, eventType: 'finalize', generation: '1700000000000001' },
      },
    ]);
  });

  it('publishes an object of exactly the size limit, and rejects one byte more with the sizes in the detail', async () => {
    const { bus, rejections, deps } = setup(1234);
    expect(await handleObjectEvent(event({ size: 1234 }), deps)).toMatchObject({ status: 'published' });
    expect(await handleObjectEvent(event({ size: 1235 }), deps)).toEqual({
      status: 'rejected',
      id: ID_CAT,
      reason: 'too-large',
      detail: '1235 bytes exceeds the limit of 1234',
    });
    expect(bus.published).toHaveLength(1);
    expect(await rejections.list()).toEqual([
      {
        id: ID_CAT,
        uri: 'gs://photos/in/cat.jpg',
        generation: '1700000000000001',
        reason: 'too-large',
        detail: '1235 bytes exceeds the limit of 1234',
        at: NOW,
      },
    ]);
  });

  it('rejects an empty image with the reason a user reads, and logs a warning naming the object', async () => {
    const { rejections, lines, deps } = setup();
    expect(await handleObjectEvent(event({ size: 0 }), deps)).toEqual({
      status: 'rejected',
      id: ID_CAT,
      reason: 'empty-file',
      detail: 'the object is 0 bytes',
    });
    expect(await rejections.list()).toEqual([
      { id: ID_CAT, uri: 'gs://photos/in/cat.jpg', generation: '1700000000000001', reason: 'empty-file', detail: 'the object is 0 bytes', at: NOW },
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({
        severity: 'WARNING',
        id: ID_CAT,
        object: 'in/cat.jpg',
        reason: 'empty-file',
        message: 'rejected in/cat.jpg: the object is 0 bytes',
      }),
    );
  });

  it('lists an object outside the prefix as ignored, with the prefix in the detail, and publishes nothing', async () => {
    const { bus, ignored, rejections, lines, deps } = setup();
    const out = await handleObjectEvent(event({ name: 'out/cat.jpg' }), deps);
    const id = out.id;
    expect(out).toEqual({ status: 'skipped', id, reason: 'outside-prefix' });
    expect(await ignored.list()).toEqual([
      {
        id,
        uri: 'gs://photos/out/cat.jpg',
        generation: '1700000000000001',
        reason: 'outside-prefix',
        detail: 'outside the prefix "in/" that is indexed',
        at: NOW,
      },
    ]);
    expect(lines).toContainEqual(
      expect.objectContaining({ severity: 'INFO', reason: 'outside-prefix', message: 'ignored: out/cat.jpg: outside the prefix "in/" that is indexed' }),
    );
    expect(bus.published).toEqual([]);
    expect(await rejections.count()).toBe(0);
  });

  it('lists sidecars and other non-image types as ignored with their reason and detail', async () => {
    const { bus, ignored, deps } = setup();
    await handleObjectEvent(event({ name: 'in/cat.txt', contentType: 'text/plain' }), deps);
    await handleObjectEvent(event({ name: 'in/doc.pdf', contentType: 'application/pdf' }), deps);
    expect((await ignored.list()).map((r) => [r.uri, r.reason, r.detail])).toEqual([
      ['gs://photos/in/cat.txt', 'sidecar', 'a caption/label sidecar (.json/.txt): read with the image of the same name, not indexed itself'],
      ['gs://photos/in/doc.pdf', 'not-an-image-type', 'content type application/pdf is not an image type that is decoded'],
    ]);
    expect(bus.published).toEqual([]);
  });

  it('forgets an ignored entry when the object becomes an indexable image, is deleted, or is deleted outside the prefix', async () => {
    const { ignored, bus, deps } = setup();
    await handleObjectEvent(event({ name: 'in/x', contentType: 'application/octet-stream' }), deps);
    expect(await ignored.count()).toBe(1);
    await handleObjectEvent(event({ name: 'in/x', contentType: 'image/png', generation: '2' }), deps);
    expect(await ignored.count()).toBe(0);

    await handleObjectEvent(event({ name: 'in/y.pdf', contentType: 'application/pdf' }), deps);
    expect(await ignored.count()).toBe(1);
    expect(await handleObjectEvent(event({ name: 'in/y.pdf', contentType: 'application/pdf', eventType: 'delete' }), deps)).toMatchObject({
      status: 'published',
      eventType: 'delete',
    });
    expect(await ignored.count()).toBe(0);

    await handleObjectEvent(event({ name: 'out/z.jpg' }), deps);
    expect(await ignored.count()).toBe(1);
    expect(await handleObjectEvent(event({ name: 'out/z.jpg', eventType: 'delete' }), deps)).toMatchObject({ status: 'skipped', reason: 'outside-prefix' });
    expect(await ignored.count()).toBe(0);
    expect(bus.published.map((p) => (p.data as ImageEvent).name)).toEqual(['in/x', 'in/y.pdf']);
  });

  it('forgets an ignored entry also when the image is then rejected (it is listed as rejected instead)', async () => {
    const { ignored, rejections, deps } = setup();
    await handleObjectEvent(event({ contentType: 'application/octet-stream', name: 'in/cat' }), deps);
    await handleObjectEvent(event({ contentType: 'image/jpeg', name: 'in/cat', size: 0 }), deps);
    expect(await ignored.count()).toBe(0);
    expect(await rejections.count()).toBe(1);
  });

  it('passes every delete inside the prefix through, whatever its type and size, without a rejection', async () => {
    const { bus, rejections, deps } = setup(10);
    const out = await handleObjectEvent(event({ name: 'in/notes.pdf', contentType: 'application/pdf', size: 99, eventType: 'delete' }), deps);
    expect(out).toMatchObject({ status: 'published', eventType: 'delete' });
    expect(bus.published[0]).toMatchObject({ topic: TOPICS.imageEvents, attributes: { eventType: 'delete', generation: '1700000000000001' } });
    expect(await rejections.count()).toBe(0);
  });

  it('works without an ignored list (the cloud function has none)', async () => {
    const bus = new RecordingBus();
    const deps = { bus: bus.asPort(), rejections: new MemoryRejections(), logger: silentLogger, settings: { prefix: '', maxBytes: 10 } };
    expect(await handleObjectEvent(event({ name: 'a.pdf', contentType: 'application/pdf' }), deps)).toMatchObject({ status: 'skipped' });
    expect(await handleObjectEvent(event({ name: 'a.pdf', contentType: 'application/pdf', eventType: 'delete' }), deps)).toMatchObject({ status: 'published' });
    expect(await handleObjectEvent(event({ name: 'a.jpg', size: 5 }), deps)).toMatchObject({ status: 'published' });
    const prefixed = { ...deps, settings: { prefix: 'in/', maxBytes: 10 } };
    expect(await handleObjectEvent(event({ name: 'out/a.jpg', eventType: 'delete' }), prefixed)).toMatchObject({ status: 'skipped' });
  });

  it('refuses a malformed payload with a ParseError that says so and names the field', async () => {
    const { bus, deps } = setup();
    await expect(handleObjectEvent({ ...event(), generation: 'abc' }, deps)).rejects.toThrow(/^malformed image event: .*generation/);
    expect(bus.published).toEqual([]);
  });
});

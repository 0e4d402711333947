import { beforeEach, describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GenerationMismatchError, AppError, NotFoundError, TransientError } from '../../shared/errors.js';
import { fakeGcsForSuite } from './gcp-fake-gcs-server.js';

const BUCKET = 'iss-images';
const server = fakeGcsForSuite();
let store: GcsBlobStore;

beforeEach(() => {
  store = new GcsBlobStore(server.storage(), BUCKET);
});

describe('GcsBlobStore (real Storage client against a fake JSON API)', () => {
  it('writes with a multipart upload carrying the content type, and returns the new generation', async () => {
    const info = await store.write('photos/a b.jpg', Buffer.from('jpeg-bytes'), { contentType: 'image/jpeg' });
    const upload = server.requests.find((r) => r.method === 'POST')!;
    expect(upload.path).toBe(`/upload/storage/v1/b/${BUCKET}/o`);
    expect(upload.query).toMatchObject({ uploadType: 'multipart', name: 'photos/a b.jpg' });
    expect(upload.query.ifGenerationMatch).toBeUndefined();
    expect(upload.body.toString()).toContain('"contentType":"image/jpeg"');
    expect(upload.body.toString()).toContain('jpeg-bytes');
    expect(info).toMatchObject({ bucket: BUCKET, name: 'photos/a b.jpg', size: 10, contentType: 'image/jpeg' });
    expect(info.generation).toBe(server.get(BUCKET, 'photos/a b.jpg')!.generation);
    expect(typeof info.generation).toBe('string');
  });

  it('reads pinned to a generation with ?generation=, and the bytes match', async () => {
    const stored = server.put(BUCKET, 'x.png', 'png-bytes', 'image/png');
    const data = await store.read('x.png', { generation: stored.generation });
    expect(data.toString()).toBe('png-bytes');
    const media = server.requests.find((r) => r.query.alt === 'media')!;
    expect(media.path).toBe(`/storage/v1/b/${BUCKET}/o/x.png`);
    expect(media.query.generation).toBe(stored.generation);
  });

  it('a replaced object gives GenerationMismatchError; a deleted one NotFoundError', async () => {
    const old = server.put(BUCKET, 'x.png', 'v1');
    const fresh = server.put(BUCKET, 'x.png', 'v2');
    const err = await store.read('x.png', { generation: old.generation }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GenerationMismatchError);
    expect((err as GenerationMismatchError).meta).toMatchObject({ actual: fresh.generation });
    server.buckets.get(BUCKET)!.delete('x.png');
    await expect(store.read('x.png', { generation: fresh.generation })).rejects.toBeInstanceOf(NotFoundError);
    await expect(store.read('never-there')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('maxBytes asks for a byte range and refuses larger objects', async () => {
    server.put(BUCKET, 'big.bin', Buffer.alloc(100, 7));
    await expect(store.read('big.bin', { maxBytes: 10 })).rejects.toThrow(/is 100 bytes, over the 10-byte limit/);
    const media = server.requests.filter((r) => r.query.alt === 'media');
    expect(media).toHaveLength(1);
    expect(media.at(-1)!.headers.range).toBe('bytes=0-10');
    expect((await store.read('big.bin', { maxBytes: 100 })).length).toBe(100);
    await expect(store.read('big.bin', { maxBytes: 0 })).rejects.toThrow(/maxBytes must be a positive integer/);
  });

  it('stat maps object metadata (generation as string) and returns null for absent objects', async () => {
    const stored = server.put(BUCKET, 'a/b.webp', 'abc', 'image/webp');
    expect(await store.stat('a/b.webp')).toEqual({
      bucket: BUCKET,
      name: 'a/b.webp',
      generation: stored.generation,
      size: 3,
      contentType: 'image/webp',
      updated: stored.updated,
    });
    expect(await store.stat('nope')).toBeNull();
  });

  it('lists with a prefix across pages', async () => {
    for (let i = 0; i < 1002; i += 1) server.put(BUCKET, `p/${String(i).padStart(4, '0')}`, 'x');
    server.put(BUCKET, 'q/other', 'x');
    const names: string[] = [];
    for await (const info of store.list('p/')) names.push(info.name);
    expect(names).toHaveLength(1002);
    expect(names[0]).toBe('p/0000');
    const lists = server.requests.filter((r) => r.path === `/storage/v1/b/${BUCKET}/o`);
    expect(lists).toHaveLength(2);
    expect(lists[0]!.query).toMatchObject({ prefix: 'p/', maxResults: '1000' });
    expect(lists[1]!.query.pageToken).toBe('p/0999');
  });

  it('lists from startOffset (names at or after it, GCS startOffset) on every page', async () => {
    for (let i = 0; i < 1600; i += 1) server.put(BUCKET, `p/${String(i).padStart(4, '0')}`, 'x');
    const names: string[] = [];
    for await (const info of store.list('p/', { startOffset: 'p/0500' })) names.push(info.name);
    expect(names).toHaveLength(1100);
    expect([names[0], names.at(-1)]).toEqual(['p/0500', 'p/1599']);
    const lists = server.requests.filter((r) => r.path === `/storage/v1/b/${BUCKET}/o`);
    expect(lists.map((r) => [r.query.startOffset, r.query.pageToken])).toEqual([
      ['p/0500', undefined],
      ['p/0500', 'p/1499'],
    ]);
  });

  it('ifGenerationMatch on write: 0 creates once, a stale generation is refused', async () => {
    const first = await store.write('models/active.json', '{"a":1}', { contentType: 'application/json', ifGenerationMatch: '0' });
    expect(server.requests.at(-1)!.query.ifGenerationMatch).toBe('0');
    await expect(store.write('models/active.json', '{}', { ifGenerationMatch: '0' })).rejects.toBeInstanceOf(GenerationMismatchError);
    const second = await store.write('models/active.json', '{"a":2}', { ifGenerationMatch: first.generation });
    expect(BigInt(second.generation) > BigInt(first.generation)).toBe(true);
    await expect(store.write('models/active.json', '{}', { ifGenerationMatch: first.generation })).rejects.toBeInstanceOf(GenerationMismatchError);
    expect(await store.readVersioned('models/active.json')).toEqual({ data: Buffer.from('{"a":2}'), generation: second.generation });
    expect(await store.readVersioned('absent.json')).toBeNull();
  });

  it('deletes (absent objects are fine) and maps 503 to TransientError', async () => {
    server.put(BUCKET, 'gone', 'x');
    await store.delete('gone');
    expect(server.get(BUCKET, 'gone')).toBeUndefined();
    await store.delete('gone');
    server.failures.push(503);
    await expect(store.stat('anything')).rejects.toBeInstanceOf(TransientError);
  });

  it('rejects bad bucket names, object names and generations with clear errors', () => {
    expect(() => new GcsBlobStore(server.storage(), 'gs://x')).toThrow(/Invalid GCS bucket name/);
    expect(() => store.uri('')).toThrow(AppError);
    expect(store.uri('a/b.jpg')).toBe(`gs://${BUCKET}/a/b.jpg`);
    return expect(store.read('a', { generation: 'abc' })).rejects.toThrow(/int64 decimal string/);
  });
});

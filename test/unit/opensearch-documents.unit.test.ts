import { describe, expect, it } from 'vitest';
import { ParseError } from '../../shared/errors.js';
import { batchByBytes, checkGeneration, decodeDocument, objectNameOf } from '../../shared/adapters/opensearch/documents.js';

/** The document mapping of the OpenSearch adapter (shared/adapters/opensearch/documents.ts), function by function. */
describe('checkGeneration (an external version: a Java long)', () => {
  it('accepts 0 to 2^63 − 1 and normalises leading zeros', () => {
    expect(checkGeneration('a', '0')).toBe('0');
    expect(checkGeneration('a', '007')).toBe('7');
    expect(checkGeneration('a', '9223372036854775807')).toBe('9223372036854775807');
  });

  it('refuses 2^63, signs, fractions, trailing text and more than 19 digits, naming the document', () => {
    for (const bad of ['9223372036854775808', '-1', '1.5', '12abc', '12\n', '', ' 1', '10000000000000000000']) {
      expect(() => checkGeneration('doc-7', bad), bad).toThrow(ParseError);
    }
    expect(() => checkGeneration('doc-7', '12abc')).toThrow(
      new ParseError('Document doc-7: generation "12abc" is not an int64 decimal string (0 to 9223372036854775807)'),
    );
  });
});

describe('objectNameOf', () => {
  it('takes the object name after the bucket, and the absolute path of a file URI', () => {
    expect(objectNameOf('gs://bucket/photos/a.jpg')).toBe('photos/a.jpg');
    expect(objectNameOf('s3://bucket/a.jpg')).toBe('a.jpg');
    expect(objectNameOf('https://host:9000/dir/b.png')).toBe('dir/b.png');
    expect(objectNameOf('file:///home/me/c.jpg')).toBe('/home/me/c.jpg');
    expect(objectNameOf('FILE:///home/me/c.jpg')).toBe('/home/me/c.jpg');
  });

  it('leaves anything that is not scheme://host/name as it is', () => {
    expect(objectNameOf('photos/a.jpg')).toBe('photos/a.jpg');
    expect(objectNameOf('/abs/a.jpg')).toBe('/abs/a.jpg');
    expect(objectNameOf('gs://bucket')).toBe('gs://bucket');
    // A scheme starts with a letter (RFC 3986 §3.1).
    expect(objectNameOf('1x://host/a.jpg')).toBe('1x://host/a.jpg');
    // Never cut at a line break (a file name may hold one): the name would be another file's.
    expect(objectNameOf('file:///x/a\nb.jpg')).toBe('file:///x/a\nb.jpg');
  });
});

describe('decodeDocument', () => {
  it('fills what a sparse source leaves out, and adds no optional keys it lacks', () => {
    const d = decodeDocument({ id: 'a', generation: 5 });
    expect(d).toStrictEqual({ id: 'a', uri: '', generation: '5', modelVersion: '', vector: new Float32Array(0), labels: [], indexedAt: '' });
  });

  it('keeps every field a full source has', () => {
    const d = decodeDocument({
      id: 'b',
      uri: 'gs://bucket/b.jpg',
      name: 'b.jpg',
      generation: '12',
      modelVersion: 'm@1',
      vector: [0.5, -0.25],
      labels: ['cat'],
      caption: 'a cat',
      contentType: 'image/jpeg',
      width: 640,
      height: 480,
      eventTime: '2024-01-02T00:00:00.000Z',
      indexedAt: '2024-01-03T00:00:00.000Z',
      deleted: false,
    });
    expect(d).toStrictEqual({
      id: 'b',
      uri: 'gs://bucket/b.jpg',
      generation: '12',
      modelVersion: 'm@1',
      vector: Float32Array.of(0.5, -0.25),
      labels: ['cat'],
      caption: 'a cat',
      contentType: 'image/jpeg',
      width: 640,
      height: 480,
      eventTime: '2024-01-02T00:00:00.000Z',
      indexedAt: '2024-01-03T00:00:00.000Z',
    });
  });
});

describe('batchByBytes', () => {
  const op = (n: number) => ({ body: 'x'.repeat(n) });

  it('makes no batch of nothing, and puts an oversized operation alone', () => {
    expect(batchByBytes([], 10)).toEqual([]);
    const big = op(50);
    expect(batchByBytes([big], 10)).toEqual([[big]]);
    const [a, b] = [op(3), op(50)];
    expect(batchByBytes([a, b, a], 10)).toEqual([[a], [b], [a]]);
  });

  it('fills a batch up to exactly maxBytes (in UTF-8 bytes) and starts the next one after', () => {
    const [a, b, c] = [op(4), op(6), op(1)];
    expect(batchByBytes([a, b, c], 10)).toEqual([[a, b], [c]]);
    const e = { body: 'é'.repeat(3) }; // 6 bytes in 3 characters
    expect(batchByBytes([e, op(5)], 10)).toEqual([[e], [op(5)]]);
  });
});

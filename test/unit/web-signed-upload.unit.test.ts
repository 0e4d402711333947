import { describe, expect, it } from 'vitest';
// @ts-expect-error the page is plain JavaScript (web/), without type declarations
import { expectedObjectName, followAlso, storageRefusal, uploadLocal, uploadSigned } from '../../web/upload.js';

/**
 * The page's cloud branch without a browser: the file's name, type and size go to the sign route,
 * and the PUT goes to the signed URL with exactly the signed headers; Cloud Storage's XML errors
 * (cloud.google.com/storage/docs/xml-api/reference-status) become messages a person can act on.
 */
describe('the page’s signed upload (cloud)', () => {
  it('asks the server to sign {name, type, size}, then PUTs the file to the URL with every signed header', async () => {
    const file = { name: 'cat.jpg', type: 'image/jpeg', size: 1234 };
    const signed = {
      url: 'https://storage.example/b/incoming/cat.jpg?X-Goog-Signature=s',
      method: 'PUT',
      headers: { 'content-type': 'image/jpeg', 'x-goog-content-length-range': '1,5000', 'x-goog-if-generation-match': '0' },
      object: 'incoming/cat.jpg',
      id: 'x',
    };
    const log: unknown[] = [];
    const progress = () => {};
    const seen: unknown[] = [];
    const out = await uploadSigned(file, progress, {
      onSigned: (s: unknown) => seen.push(s),
      io: {
        getJson: async (url: string, init: { method: string; headers: Record<string, string>; body: string }) => {
          log.push(['sign', url, init.method, init.headers, JSON.parse(init.body)]);
          return signed;
        },
        send: async (method: string, url: string, body: unknown, onProgress: unknown, opts: unknown) => {
          log.push(['put', method, url, body, onProgress, opts]);
          return {};
        },
      },
    });
    expect(log).toEqual([
      ['sign', '/api/uploads/sign', 'POST', { 'content-type': 'application/json' }, { name: 'cat.jpg', type: 'image/jpeg', size: 1234 }],
      ['put', 'PUT', signed.url, file, progress, { headers: signed.headers, toStorage: true }],
    ]);
    expect(seen).toEqual([signed]);
    expect(out).toBe(signed);
  });

  it('sends nothing to the bucket when the server refuses to sign', async () => {
    let puts = 0;
    const err = await uploadSigned({ name: 'a/b.jpg', type: '', size: 1 }, () => {}, {
      io: {
        getJson: async () => {
          throw new Error('cannot upload "a/b.jpg": give a file name, not a path');
        },
        send: async () => void puts++,
      },
    }).catch((e: Error) => e);
    expect(err.message).toMatch(/give a file name/);
    expect(puts).toBe(0);
  });

  it('explains Cloud Storage’s refusals', () => {
    const xml = (code: string) => `<?xml version='1.0' encoding='UTF-8'?><Error><Code>${code}</Code><Message>m</Message></Error>`;
    expect(storageRefusal(412, xml('PreconditionFailed'))).toMatch(/already in the bucket: rename the file/);
    expect(storageRefusal(400, xml('EntityTooLarge'))).toBe('the bucket refused its size (EntityTooLarge)');
    expect(storageRefusal(403, xml('SignatureDoesNotMatch'))).toMatch(/link was refused \(SignatureDoesNotMatch\).*expired/);
    expect(storageRefusal(500, '')).toBe('the bucket answered HTTP 500');
  });
});

/** Security review finding 12: a local upload whose name the server normalised (NFC, trimmed) is followed under the server's name. */
describe('the page’s local upload', () => {
  it('posts the file as multipart "file" and reports the object the server stored', async () => {
    const file = new File([new Uint8Array([1, 2, 3])], 'Cafe\u0301.png', { type: 'image/png' });
    const stored = { name: 'photos/Caf\u00e9.png', id: 'x', generation: '1', size: 3 };
    const log: unknown[] = [];
    const seen: unknown[] = [];
    const out = await uploadLocal(file, () => {}, {
      onStored: (s: unknown) => seen.push(s),
      io: {
        send: async (method: string, url: string, body: FormData) => {
          log.push([method, url, (body.get('file') as File).name]);
          return stored;
        },
      },
    });
    expect(log).toEqual([['POST', '/api/uploads', 'Cafe\u0301.png']]);
    expect(seen).toEqual([stored]);
    expect(out).toBe(stored);
  });

  it('expects the name the server will give (prefix + NFC, trimmed), and follows the row under the server’s name too', () => {
    expect(expectedObjectName('photos/', ' Cafe\u0301.png ')).toBe('photos/Caf\u00e9.png');
    const row = { li: 'row' };
    const rows = new Map([['photos/a.png', [row]]]);
    followAlso(rows, 'photos/a.png', 'photos/a.png');
    expect([...rows.keys()]).toEqual(['photos/a.png']);
    followAlso(rows, 'photos/a.png', 'photos/b.png');
    expect(rows.get('photos/b.png')).toEqual([row]);
    followAlso(rows, 'photos/a.png', 'photos/b.png');
    expect(rows.get('photos/b.png')).toEqual([row]);
  });
});

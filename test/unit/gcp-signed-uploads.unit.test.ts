import { generateKeyPairSync } from 'node:crypto';
import { Storage, type GetSignedUrlConfig } from '@google-cloud/storage';
import { describe, expect, it } from 'vitest';
import { GcsSignedUploads, SIGNED_UPLOAD_TTL_MS, type SigningStorage } from '../../shared/adapters/gcp/gcs-signed-uploads.js';
import { documentId } from '../../shared/contracts.js';
import { NameTakenError } from '../../shared/ports/image-uploads.js';
import type { SdkCall } from '../helpers/recording-sdk.js';

/** A recording Storage: `bucket(b).file(f).exists()` / `.getSignedUrl(cfg)` are recorded and answered (recording-sdk.ts pattern). */
function recordingStorage(calls: SdkCall[], existing: Set<string> = new Set()): SigningStorage {
  return {
    bucket: (bucket) => ({
      file: (name) => ({
        exists: async () => {
          calls.push({ client: 'File', method: 'exists', request: { bucket, name } });
          return [existing.has(name)];
        },
        getSignedUrl: async (config: GetSignedUrlConfig) => {
          calls.push({ client: 'File', method: 'getSignedUrl', request: { bucket, name, config } });
          return [`https://storage.googleapis.com/${bucket}/${encodeURIComponent(name)}?X-Goog-Signature=abc`];
        },
      }),
    }),
  };
}

const NOW = Date.parse('2026-11-27T12:00:00.000Z');

describe('GcsSignedUploads at the SDK boundary', () => {
  it('signs a V4 write URL bound to the content type, the size limit and "no object of that name", for 10 minutes', async () => {
    const calls: SdkCall[] = [];
    const uploads = new GcsSignedUploads(recordingStorage(calls), 'p-iss-images', 'incoming/', 5_000_000, { now: () => NOW });
    const signed = await uploads.sign('incoming/cat.jpg', 'image/jpeg');
    expect(calls).toEqual([
      { client: 'File', method: 'exists', request: { bucket: 'p-iss-images', name: 'incoming/cat.jpg' } },
      {
        client: 'File',
        method: 'getSignedUrl',
        request: {
          bucket: 'p-iss-images',
          name: 'incoming/cat.jpg',
          config: {
            version: 'v4',
            action: 'write',
            contentType: 'image/jpeg',
            extensionHeaders: { 'x-goog-content-length-range': '1,5000000', 'x-goog-if-generation-match': '0' },
            expires: NOW + 600_000,
          },
        },
      },
    ]);
    expect(SIGNED_UPLOAD_TTL_MS).toBe(600_000);
    // The browser must send every signed header with exactly the signed value.
    expect(signed).toEqual({
      url: 'https://storage.googleapis.com/p-iss-images/incoming%2Fcat.jpg?X-Goog-Signature=abc',
      method: 'PUT',
      headers: { 'content-type': 'image/jpeg', 'x-goog-content-length-range': '1,5000000', 'x-goog-if-generation-match': '0' },
      object: 'incoming/cat.jpg',
      id: documentId('p-iss-images', 'incoming/cat.jpg'),
      expiresAt: '2026-11-27T12:10:00.000Z',
    });
  });

  it('refuses a name already in the bucket (409) without signing anything', async () => {
    const calls: SdkCall[] = [];
    const uploads = new GcsSignedUploads(recordingStorage(calls, new Set(['cat.jpg'])), 'b', '', 100);
    const err = await uploads.sign('cat.jpg', 'image/jpeg').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NameTakenError);
    expect((err as NameTakenError).statusCode).toBe(409);
    expect((err as Error).message).toMatch(/already in the bucket.*rename/);
    expect(calls.map((c) => c.method)).toEqual(['exists']);
  });

  it('with the real client, the URL signs the content type, the length range and the generation precondition', async () => {
    // A throwaway key: the client then signs locally (no request); on Cloud Run it calls signBlob instead.
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const storage = new Storage({
      projectId: 'p',
      credentials: { client_email: 'search@p.iam.gserviceaccount.com', private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
    });
    const signed = await new GcsSignedUploads(
      { bucket: (b) => ({ file: (n) => ({ exists: async () => [false], getSignedUrl: (c) => storage.bucket(b).file(n).getSignedUrl(c) }) }) },
      'p-iss-images',
      '',
      1234,
    ).sign('dog.png', 'image/png');
    const url = new URL(signed.url);
    expect(url.origin).toBe('https://storage.googleapis.com');
    expect(url.pathname).toBe('/p-iss-images/dog.png');
    expect(url.searchParams.get('X-Goog-Algorithm')).toBe('GOOG4-RSA-SHA256');
    expect(url.searchParams.get('X-Goog-Expires')).toBe('600');
    expect(url.searchParams.get('X-Goog-SignedHeaders')).toBe('content-type;host;x-goog-content-length-range;x-goog-if-generation-match');
    expect(url.searchParams.get('X-Goog-Credential')).toMatch(/^search@p\.iam\.gserviceaccount\.com\//);
  });
});

import type { GetSignedUrlConfig } from '@google-cloud/storage';
import { documentId } from '../../contracts.js';
import { NameTakenError, type SignedImageUploads, type SignedUpload } from '../../ports/image-uploads.js';

/** The part of `@google-cloud/storage`'s Storage this adapter uses. */
export interface SigningStorage {
  bucket(name: string): { file(name: string): { exists(): Promise<[boolean]>; getSignedUrl(config: GetSignedUrlConfig): Promise<[string]> } };
}

/** How long a signed upload URL works: long enough for a large file on a slow line, short enough to be useless later. */
export const SIGNED_UPLOAD_TTL_MS = 10 * 60 * 1000;

/**
 * Uploads from the page in the cloud: V4 signed PUT URLs for one new object in the images bucket
 * (under the watched prefix), sent by the browser straight to Cloud Storage; the object's
 * finalize event then runs the normal pipeline.
 *
 * Docs this follows:
 * - V4 signing with the client library, `file.getSignedUrl({ version: 'v4', action: 'write', contentType,
 *   extensionHeaders, expires })`: https://cloud.google.com/storage/docs/access-control/signing-urls-with-helpers
 *   (every extension header is part of the signature: the browser must send each with exactly this value).
 * - `x-goog-content-length-range: MIN,MAX` (a PUT whose body is outside the range fails with 400) and
 *   `x-goog-if-generation-match: 0` (the request succeeds only when no live object has that name, else
 *   412 Precondition Failed): https://cloud.google.com/storage/docs/xml-api/reference-headers
 * - Signing without a key file (Cloud Run): the client asks the IAM Credentials API to sign
 *   (https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/signBlob), which needs
 *   `iam.serviceAccounts.signBlob` on the service's own account (roles/iam.serviceAccountTokenCreator granted to
 *   itself: https://cloud.google.com/storage/docs/authentication/creating-signatures), and the URL works only if the
 *   signer may do the request itself: `storage.objects.create` on the bucket (roles/storage.objectCreator).
 *   Both grants: infra/components/search.ts.
 * The existence check before signing (`storage.objects.get`, which the service has as objectViewer) only
 * gives a clear 409 early; the precondition is what guarantees nothing is overwritten.
 */
export class GcsSignedUploads implements SignedImageUploads {
  constructor(
    private readonly storage: SigningStorage,
    readonly bucket: string,
    readonly prefix: string,
    readonly maxBytes: number,
    private readonly options: { ttlMs?: number; now?: () => number } = {},
  ) {}

  async sign(name: string, contentType: string): Promise<SignedUpload> {
    const file = this.storage.bucket(this.bucket).file(name);
    const [exists] = await file.exists();
    if (exists) {
      throw new NameTakenError(`an image named ${JSON.stringify(name)} is already in the bucket: rename the file, or delete the existing one first`);
    }
    const expires = (this.options.now ?? Date.now)() + (this.options.ttlMs ?? SIGNED_UPLOAD_TTL_MS);
    const extensionHeaders = { 'x-goog-content-length-range': `1,${this.maxBytes}`, 'x-goog-if-generation-match': '0' };
    const [url] = await file.getSignedUrl({ version: 'v4', action: 'write', contentType, extensionHeaders, expires });
    return {
      url,
      method: 'PUT',
      headers: { 'content-type': contentType, ...extensionHeaders },
      object: name,
      id: documentId(this.bucket, name),
      expiresAt: new Date(expires).toISOString(),
    };
  }
}

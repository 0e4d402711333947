import { AppError } from '../errors.js';

/**
 * Adding images to the bucket from the page: the server writes the bytes into the watched folder
 * (local `imgsearch up`); the event pipeline takes it from there. An existing object is never
 * replaced silently. The cloud search service never receives the bytes: it hands the browser a
 * short-lived signed URL for one new object ({@link SignedImageUploads}), and the page sends the
 * file to the bucket itself.
 */
export interface UploadedObject {
  /** Object name in the bucket (the prefix included). */
  name: string;
  /** Document id the object will have once indexed (contracts.ts documentId). */
  id: string;
  generation: string;
  size: number;
}

/** Where uploads go, whichever way the bytes travel. */
export interface UploadTarget {
  /** The bucket (a folder's absolute path locally), for document ids. */
  readonly bucket: string;
  /** Prepended to every uploaded name (the indexed prefix). */
  readonly prefix: string;
  /** Largest object accepted (bytes): the pipeline's own limit. */
  readonly maxBytes: number;
}

/** The server receives the bytes and writes them (local `imgsearch up`). */
export interface ImageUploads extends UploadTarget {
  /**
   * Writes `data` as `name`, only if no object has that name (NameTakenError otherwise). `data` may
   * arrive in chunks (an upload streamed from the request); if it fails midway nothing is written.
   */
  put(name: string, data: Buffer | AsyncIterable<Uint8Array>): Promise<UploadedObject>;
}

/** One upload the browser makes itself: `method` to `url` with exactly `headers` (all of them are signed). */
export interface SignedUpload {
  url: string;
  method: 'PUT';
  headers: Record<string, string>;
  /** Object name in the bucket (the prefix included). */
  object: string;
  /** Document id the object will have once indexed. */
  id: string;
  /** When the URL stops working (ISO 8601). */
  expiresAt: string;
}

/**
 * The browser sends the bytes straight to the bucket (the Cloud Run search service): the server
 * signs a URL that creates one new object of one content type and at most `maxBytes`, and never
 * replaces an existing one.
 */
export interface SignedImageUploads extends UploadTarget {
  /** A signed upload for object `name` (already checked and prefixed) of `contentType`; NameTakenError when it exists. */
  sign(name: string, contentType: string): Promise<SignedUpload>;
}

/** An object with that name already exists: an upload never replaces it (409). */
export class NameTakenError extends AppError {
  override readonly code = 'NAME_TAKEN';
  readonly statusCode = 409;
}

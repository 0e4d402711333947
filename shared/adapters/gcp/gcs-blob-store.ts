import type { Bucket, File, FileMetadata, Storage } from '@google-cloud/storage';
import { objectUri } from '../../contracts.js';
import { GenerationMismatchError, AppError, NotFoundError } from '../../errors.js';
import type { BlobInfo, BlobStore, ListOptions } from '../../ports/blob-store.js';
import { httpStatusOf, rethrowGcsError } from './gcp-errors.js';

export interface GcsWriteOptions {
  contentType?: string;
  /**
   * Precondition on the object's current generation: `'0'` = only if it does not exist yet.
   * A mismatch throws {@link GenerationMismatchError} (HTTP 412).
   */
  ifGenerationMatch?: string;
}

/** Objects up to this size are sent in one multipart request; larger ones use a resumable upload. */
const RESUMABLE_THRESHOLD = 8 * 1024 * 1024;
const LIST_PAGE_SIZE = 1000;

/**
 * {@link BlobStore} on one Google Cloud Storage bucket through the official JSON API client.
 * Reads pinned to a generation fetch exactly that generation (`?generation=`): the bytes the
 * event was about, or a clear error when that generation is gone.
 */
export class GcsBlobStore implements BlobStore {
  readonly bucket: string;
  private readonly handle: Bucket;

  constructor(storage: Storage, bucket: string) {
    if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(bucket)) {
      throw new AppError(`Invalid GCS bucket name ${JSON.stringify(bucket)}: use the bare name, e.g. "my-images" (no gs:// prefix)`);
    }
    this.bucket = bucket;
    this.handle = storage.bucket(bucket);
  }

  uri(name: string): string {
    return objectUri(this.bucket, checkName(name));
  }

  file(name: string, generation?: string): File {
    return this.handle.file(checkName(name), generation === undefined ? undefined : { generation: checkGeneration(generation) });
  }

  async read(name: string, options: { generation?: string; maxBytes?: number } = {}): Promise<Buffer> {
    const meta = { bucket: this.bucket, name, generation: options.generation };
    if (options.maxBytes !== undefined && !(Number.isInteger(options.maxBytes) && options.maxBytes > 0)) {
      throw new AppError(`maxBytes must be a positive integer, got ${options.maxBytes}`);
    }
    let data: Buffer;
    try {
      // With maxBytes, ask for one byte more than allowed: getting it proves the object is too
      // large without downloading all of it (and without a separate metadata request).
      const range = options.maxBytes === undefined ? {} : { start: 0, end: options.maxBytes };
      [data] = await this.file(name, options.generation).download(range);
    } catch (err) {
      const status = httpStatusOf(err);
      if (status === 412) {
        throw new GenerationMismatchError(`gs://${this.bucket}/${name} is no longer at generation ${options.generation}`, { cause: err, meta });
      }
      if (status === 404) {
        // A pinned generation that is gone: replaced (mismatch) or deleted (not found)?
        const current = options.generation === undefined ? null : await this.stat(name);
        if (current) {
          throw new GenerationMismatchError(`gs://${this.bucket}/${name} is at generation ${current.generation}, not ${options.generation}`, {
            cause: err,
            meta: { ...meta, actual: current.generation },
          });
        }
        throw new NotFoundError(`gs://${this.bucket}/${name} not found`, { cause: err, meta });
      }
      return rethrowGcsError(err, `Reading gs://${this.bucket}/${name}`, meta);
    }
    if (options.maxBytes !== undefined && data.length > options.maxBytes) {
      // Rare path: one more request to name the actual size in the error.
      const size = (await this.stat(name))?.size;
      throw new AppError(`gs://${this.bucket}/${name} is ${size ?? 'over'} bytes, over the ${options.maxBytes}-byte limit`, {
        meta: { ...meta, size, maxBytes: options.maxBytes },
      });
    }
    return data;
  }

  async stat(name: string): Promise<BlobInfo | null> {
    try {
      const [metadata] = await this.file(name).getMetadata();
      return this.infoOf(metadata, name);
    } catch (err) {
      if (httpStatusOf(err) === 404) return null;
      return rethrowGcsError(err, `Reading metadata of gs://${this.bucket}/${name}`, { name });
    }
  }

  /** Lists page by page (1000 a request) so that a huge bucket never sits in memory; `startOffset` is the API's own. */
  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<BlobInfo> {
    const { startOffset } = options;
    let pageToken: string | undefined;
    do {
      let files: File[];
      let next: { pageToken?: string };
      try {
        [files, next] = await this.handle.getFiles({
          prefix,
          autoPaginate: false,
          maxResults: LIST_PAGE_SIZE,
          pageToken,
          ...(startOffset ? { startOffset } : {}),
        });
      } catch (err) {
        return rethrowGcsError(err, `Listing gs://${this.bucket}/${prefix}`, { prefix, startOffset });
      }
      for (const file of files) yield this.infoOf(file.metadata, file.name);
      pageToken = next?.pageToken || undefined;
    } while (pageToken);
  }

  async write(name: string, data: Buffer | string, options: GcsWriteOptions = {}): Promise<BlobInfo> {
    const file = this.file(name);
    const body = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    try {
      await file.save(body, {
        // Without an explicit type the client derives it from the name (`.jpg` → image/jpeg).
        ...(options.contentType ? { contentType: options.contentType } : {}),
        resumable: body.length > RESUMABLE_THRESHOLD,
        ...(options.ifGenerationMatch === undefined ? {} : { preconditionOpts: { ifGenerationMatch: checkGeneration(options.ifGenerationMatch) } }),
      });
    } catch (err) {
      if (httpStatusOf(err) === 412) {
        throw new GenerationMismatchError(`gs://${this.bucket}/${name} changed: it is no longer at generation ${options.ifGenerationMatch}`, {
          cause: err,
          meta: { bucket: this.bucket, name, expected: options.ifGenerationMatch },
        });
      }
      return rethrowGcsError(err, `Writing gs://${this.bucket}/${name}`, { name });
    }
    return this.infoOf(file.metadata, name);
  }

  /** Deleting an absent object is not an error (deletes are retried). */
  async delete(name: string): Promise<void> {
    try {
      await this.file(name).delete({ ignoreNotFound: true });
    } catch (err) {
      return rethrowGcsError(err, `Deleting gs://${this.bucket}/${name}`, { name });
    }
  }

  /**
   * The object's content with the generation it was read at (or null when absent), for
   * read-modify-write cycles guarded by `write(..., { ifGenerationMatch })`.
   */
  async readVersioned(name: string): Promise<{ data: Buffer; generation: string } | null> {
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const info = await this.stat(name);
      if (!info) return null;
      try {
        return { data: await this.read(name, { generation: info.generation }), generation: info.generation };
      } catch (err) {
        // Replaced between the two requests: read the newer one.
        if (!(err instanceof GenerationMismatchError) && !(err instanceof NotFoundError)) throw err;
      }
    }
    throw new GenerationMismatchError(`gs://${this.bucket}/${name} keeps changing while being read`);
  }

  private infoOf(metadata: FileMetadata, name: string): BlobInfo {
    return {
      bucket: this.bucket,
      name: metadata.name ?? name,
      generation: String(metadata.generation ?? '0'),
      size: Number(metadata.size ?? 0),
      contentType: metadata.contentType ?? 'application/octet-stream',
      updated: metadata.updated ?? metadata.timeCreated ?? new Date(0).toISOString(),
    };
  }
}

function checkName(name: string): string {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 1024 || /[\r\n]/.test(name)) {
    throw new AppError(`Invalid GCS object name ${JSON.stringify(name)}: 1–1024 bytes of UTF-8, no newlines`);
  }
  return name;
}

function checkGeneration(generation: string): string {
  if (!/^\d{1,19}$/.test(generation)) {
    throw new AppError(`Invalid generation ${JSON.stringify(generation)}: must be an int64 decimal string`);
  }
  return generation;
}

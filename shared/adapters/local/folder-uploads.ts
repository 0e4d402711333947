import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { documentId } from '../../contracts.js';
import { NameTakenError, type ImageUploads, type UploadedObject } from '../../ports/image-uploads.js';
import { fsyncDir } from './atomic-file.js';
import type { FolderBlobStore } from './folder-blob-store.js';

/**
 * Uploads from the page into the watched folder. The bytes are written to a hidden `.…part` file
 * beside the target (the watcher ignores those, folder-blob-store.ts isIgnoredName), synced, then
 * hard-linked to the final name: link(2) fails with EEXIST instead of replacing, so an existing
 * file is never overwritten, and the watcher only ever sees a complete file appear.
 */
export class FolderUploads implements ImageUploads {
  readonly bucket: string;

  constructor(
    private readonly folder: FolderBlobStore,
    readonly prefix: string,
    readonly maxBytes: number,
  ) {
    this.bucket = folder.bucket;
  }

  /** `data` in chunks is written to the partial file as it arrives (never held whole in memory); a failing source leaves nothing. */
  async put(name: string, data: Buffer | AsyncIterable<Uint8Array>): Promise<UploadedObject> {
    const target = this.folder.resolve(name);
    const dir = path.dirname(target);
    await fs.mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.part`);
    try {
      const handle = await fs.open(tmp, 'wx');
      try {
        if (Buffer.isBuffer(data)) await handle.writeFile(data);
        // Each chunk at the current position (FileHandle.writeFile writes all of it, from there on).
        else for await (const chunk of data) await handle.writeFile(chunk);
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await fs.link(tmp, target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new NameTakenError(`an image named ${JSON.stringify(name)} is already in the bucket: rename the file, or delete the existing one first`, {
            cause: err,
          });
        }
        throw err;
      }
    } finally {
      await fs.rm(tmp, { force: true });
    }
    await fsyncDir(dir);
    const info = await this.folder.stat(name);
    if (!info) throw new Error(`uploaded ${name} vanished right after being written`);
    return { name, id: documentId(this.bucket, name), generation: info.generation, size: info.size };
  }
}

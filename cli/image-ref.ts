import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { VectorIndex } from '../shared/ports/vector-index.js';
import { UsageError } from './options.js';

/** A document id as the index stores it (32 hex digits, shown by `imgsearch search`). */
const ID = /^[0-9a-f]{32}$/;

/**
 * An indexed image named by its id, or by its file path: the id of that file in the folder it was
 * ingested from (folders are not recorded, so each ancestor folder is tried as the bucket). The
 * file need not exist any more. Returns null when the path names no indexed image.
 */
export async function imageIdOf(index: Pick<VectorIndex, 'get'>, value: string): Promise<string | null> {
  if (ID.test(value)) return value;
  const { documentId } = await import('../shared/contracts.js');
  const abs = path.resolve(value);
  for (let dir = path.dirname(abs); ; dir = path.dirname(dir)) {
    const id = documentId(dir, path.relative(dir, abs).split(path.sep).join('/'));
    if (await index.get(id)) return id;
    if (path.dirname(dir) === dir) return null;
  }
}

/** `--similar <idOrPath>`: an id, or the path of an existing indexed image file. */
export async function similarId(index: Pick<VectorIndex, 'get'>, value: string): Promise<string> {
  const st = await fs.stat(value).catch(() => null);
  if (!st?.isFile()) return value;
  const id = await imageIdOf(index, value);
  if (id) return id;
  throw new UsageError(`${value} is not an indexed image (ingest its folder first, or give an id from \`imgsearch search\`)`);
}

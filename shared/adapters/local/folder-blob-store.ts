import { closeSync, constants, fstatSync, openSync, promises as fs, readSync, statSync, type BigIntStats } from 'node:fs';
import path from 'node:path';
import { objectUri } from '../../contracts.js';
import { GenerationMismatchError, AppError, NotFoundError } from '../../errors.js';
import type { BlobInfo, BlobStore, ListOptions } from '../../ports/blob-store.js';
import { isNotFound, writeFileAtomic } from './atomic-file.js';

/**
 * A folder standing in for a GCS bucket. Object names are POSIX paths relative to the root; the
 * generation is the later of the file's mtime and ctime in microseconds, so replacing a file yields a newer generation
 * exactly as GCS does.
 */
const CONTENT_TYPES: Record<string, string> = {
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
  gif: 'image/gif',
  tif: 'image/tiff',
  tiff: 'image/tiff',
  avif: 'image/avif',
  heic: 'image/heic',
  bmp: 'image/bmp',
  svg: 'image/svg+xml',
  txt: 'text/plain',
  json: 'application/json',
};

export function contentTypeFor(name: string): string {
  const ext = path.posix.extname(name).slice(1).toLowerCase();
  return CONTENT_TYPES[ext] ?? 'application/octet-stream';
}

/** Hidden files/dirs and partial writes (`*.tmp`, `*.part`, `name~`) are not objects. */
export function isIgnoredName(name: string): boolean {
  return name.split('/').some((part) => part.startsWith('.')) || /(\.tmp|\.part|~)$/i.test(name);
}

export function generationOf(stats: BigIntStats): string {
  // The later of mtime and ctime: a file replaced with an older mtime (`cp -p`, an archive, a
  // camera's clock) still gets a newer generation, since the kernel sets ctime to now on every change.
  const ns = stats.ctimeNs > stats.mtimeNs ? stats.ctimeNs : stats.mtimeNs;
  return (ns / 1000n).toString();
}

/** Files stat'ed at once while listing (libuv's pool runs 4 at a time; a smaller window lets searches in between). */
const STAT_WINDOW = 16;

/**
 * Files up to this size are read, and single files stat'ed, on the calling thread: from the page
 * cache that takes microseconds, while each asynchronous call is a round trip through libuv's
 * thread pool (a kernel wake-up each way) that cost more CPU than the read itself for a
 * Fashion-MNIST PNG (BENCHMARKS.md, pipeline throughput). Larger files, and the stats of a whole
 * listing, stay asynchronous so the event loop (searches) never waits on them.
 */
const SMALL_FILE_BYTES = 256 * 1024;

/**
 * A small file read on the calling thread, or null when what is there now is not a small regular
 * file (the caller then reads it off the event loop). Everything is checked on the descriptor, not
 * the path, so a swap since the caller's stat cannot make it block or read without bound:
 * O_NONBLOCK — a FIFO does not wait for a writer; fstat — a FIFO, a device (a symlink to
 * /dev/zero) or a file grown past the limit is not read here; at most `size` bytes are read.
 */
export function readSmallFile(file: string): Buffer | null {
  const fd = openSync(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  try {
    const stats = fstatSync(fd);
    const size = stats.size;
    if (!stats.isFile() || size > SMALL_FILE_BYTES) return null;
    const data = Buffer.allocUnsafe(size);
    let filled = 0;
    while (filled < size) {
      const n = readSync(fd, data, filled, size - filled, filled);
      if (n === 0) break;
      filled += n;
    }
    return data.subarray(0, filled);
  } finally {
    closeSync(fd);
  }
}

export class FolderBlobStore implements BlobStore {
  readonly bucket: string;

  constructor(rootDir: string) {
    this.bucket = path.resolve(rootDir);
  }

  /** `file:///abs/root/name`, the same string as `objectUri(bucket, name)` used for documents. */
  uri(name: string): string {
    this.resolve(name);
    return objectUri(this.bucket, name);
  }

  /** Absolute path of an object; refuses names that would escape the root. */
  resolve(name: string): string {
    const normal = path.posix.normalize(name.replace(/\\/g, '/'));
    if (!name || normal.startsWith('../') || normal === '..' || path.posix.isAbsolute(normal)) {
      throw new AppError(`Invalid object name ${JSON.stringify(name)}: must be a relative path inside ${this.bucket}`);
    }
    return path.join(this.bucket, ...normal.split('/'));
  }

  /** Object name of an absolute path under the root. */
  nameOf(absPath: string): string {
    return path.relative(this.bucket, absPath).split(path.sep).join('/');
  }

  async read(name: string, options: { generation?: string; maxBytes?: number } = {}): Promise<Buffer> {
    const file = this.resolve(name);
    const info = await this.stat(name);
    if (!info) throw new NotFoundError(`Object ${name} not found in ${this.bucket}`, { meta: { name } });
    if (options.generation !== undefined && info.generation !== options.generation) {
      throw new GenerationMismatchError(`Object ${name} is at generation ${info.generation}, not ${options.generation}`, {
        meta: { name, expected: options.generation, actual: info.generation },
      });
    }
    if (options.maxBytes !== undefined && info.size > options.maxBytes) {
      throw new AppError(`Object ${name} is ${info.size} bytes, over the ${options.maxBytes}-byte limit`, {
        meta: { name, size: info.size, maxBytes: options.maxBytes },
      });
    }
    try {
      const data = (info.size <= SMALL_FILE_BYTES ? readSmallFile(file) : null) ?? (await this.readAsync(file, info.size));
      // The file may have been replaced between stat and read: re-check so a generation-pinned
      // read never returns bytes of another generation.
      if (options.generation !== undefined) {
        const after = await this.stat(name);
        if (after?.generation !== options.generation) {
          throw new GenerationMismatchError(`Object ${name} changed while being read`, { meta: { name } });
        }
      }
      return data;
    } catch (err) {
      if (isNotFound(err)) throw new NotFoundError(`Object ${name} not found in ${this.bucket}`, { cause: err, meta: { name } });
      throw err;
    }
  }

  async stat(name: string): Promise<BlobInfo | null> {
    const file = this.resolve(name);
    try {
      const stats = statSync(file, { bigint: true, throwIfNoEntry: false });
      return stats?.isFile() ? this.infoOf(name, stats) : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    }
  }

  /** A regular file off the event loop; anything else (a FIFO, a device) is refused, not read. */
  private async readAsync(file: string, statSize: number): Promise<Buffer> {
    const handle = await fs.open(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw new NotFoundError(`${file} is no longer a regular file`);
      // Never more than the size checked against the limit: a file still growing is read as far as
      // it had grown then (a generation-pinned read is refused by the check after reading).
      const size = Math.min(stats.size, statSize);
      const data = Buffer.allocUnsafe(size);
      let filled = 0;
      while (filled < size) {
        const { bytesRead } = await handle.read(data, filled, size - filled, filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      return data.subarray(0, filled);
    } finally {
      await handle.close();
    }
  }

  /** stat() off the event loop, for listings (thousands of files one after another). */
  private async statAsync(name: string): Promise<BlobInfo | null> {
    try {
      const stats = await fs.stat(this.resolve(name), { bigint: true });
      return stats.isFile() ? this.infoOf(name, stats) : null;
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw err;
    }
  }

  infoOf(name: string, stats: BigIntStats): BlobInfo {
    return {
      bucket: this.bucket,
      name,
      generation: generationOf(stats),
      size: Number(stats.size),
      contentType: contentTypeFor(name),
      updated: new Date(Number(stats.mtimeMs)).toISOString(),
    };
  }

  /** Files under `prefix`, sorted by name (from `startOffset` on, as GCS); hidden and partially written files are skipped. */
  async *list(prefix = '', options: ListOptions = {}): AsyncIterable<BlobInfo> {
    const { startOffset = '' } = options;
    const names: string[] = [];
    // Walk only the deepest folder the prefix names (`a/b/c` → a/b/), not the whole bucket.
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    await this.walk(folder ? this.resolve(folder) : this.bucket, names);
    names.sort();
    const matching = names.filter((name) => name.startsWith(prefix) && name >= startOffset);
    // Stats run a window at a time (the listing `up` compares with the index at start is one stat
    // per file: 60k of them one after another would leave libuv's thread pool mostly idle).
    for (let i = 0; i < matching.length; i += STAT_WINDOW) {
      const infos = await Promise.all(matching.slice(i, i + STAT_WINDOW).map((name) => this.statAsync(name)));
      for (const info of infos) if (info) yield info;
    }
  }

  private async walk(dir: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await fs.readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const entry of entries) {
      const abs = path.join(dir, entry.name);
      const name = this.nameOf(abs);
      if (isIgnoredName(name)) continue;
      if (entry.isDirectory()) await this.walk(abs, out);
      else if (entry.isFile()) out.push(name);
    }
  }

  async write(name: string, data: Buffer | string): Promise<BlobInfo> {
    await writeFileAtomic(this.resolve(name), data);
    const info = await this.stat(name);
    if (!info) throw new NotFoundError(`Object ${name} vanished right after being written`);
    return info;
  }

  async delete(name: string): Promise<void> {
    await fs.rm(this.resolve(name), { force: true });
  }
}

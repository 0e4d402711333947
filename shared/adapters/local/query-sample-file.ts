import { promises as fs } from 'node:fs';
import type { Logger } from '../../logger.js';
import type { QueryVectorSample, SampledQuery } from '../../services/drift.js';
import { decodeQueryVector, encodeQueryVector } from '../../services/query-vector-objects.js';
import { writeJsonAtomic } from './atomic-file.js';

interface StoredEntry {
  modelVersion: string;
  /** When it was served, ms since the epoch (absent in samples written before it was kept: read as 0, the oldest). */
  at?: number;
  /** Float32 little-endian, base64. */
  vector: string;
}

/**
 * The last `capacity` query vectors (search space), kept in memory and written to one JSON file
 * in the data directory (atomically) at most every `flushMs` and on {@link flush}: a bounded,
 * durable sample for the drift report, readable by another process (`imgsearch drift`).
 */
export class FileQueryVectorSample implements QueryVectorSample {
  private entries: StoredEntry[] = [];
  private loaded = false;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly options: { capacity: number; flushMs?: number; logger?: Logger },
  ) {}

  private async load(): Promise<void> {
    if (this.loaded) return;
    try {
      const raw = JSON.parse(await fs.readFile(this.file, 'utf8')) as { entries?: StoredEntry[] };
      const fromDisk = Array.isArray(raw.entries) ? raw.entries.filter((e) => typeof e.vector === 'string' && typeof e.modelVersion === 'string') : [];
      // Entries added before the file was read are newer.
      this.entries = [...fromDisk, ...this.entries].slice(-this.options.capacity);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.options.logger?.warn({ err, file: this.file }, 'query sample unreadable: starting a new one');
    }
    this.loaded = true;
  }

  add(modelVersion: string, vector: Float32Array): void {
    this.entries.push({ modelVersion, at: Date.now(), vector: encodeQueryVector(vector) });
    if (this.entries.length > this.options.capacity) this.entries.splice(0, this.entries.length - this.options.capacity);
    this.dirty = true;
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush().catch((err: unknown) => this.options.logger?.warn({ err, file: this.file }, 'query sample not saved'));
    }, this.options.flushMs ?? 10_000);
    this.timer.unref();
  }

  /** Oldest first (entries are kept in the order they were served). */
  async recent(modelVersion: string): Promise<SampledQuery[]> {
    await this.load();
    return this.entries.flatMap((e) => {
      const vector = e.modelVersion === modelVersion ? decodeQueryVector(e.vector) : null;
      return vector ? [{ at: typeof e.at === 'number' ? e.at : 0, vector }] : [];
    });
  }

  /** Writes the sample now (also done by the timer); a no-op when nothing changed. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.writing = this.writing.then(async () => {
      if (!this.dirty) return;
      await this.load();
      this.dirty = false;
      await writeJsonAtomic(this.file, { entries: this.entries });
    });
    await this.writing;
  }
}

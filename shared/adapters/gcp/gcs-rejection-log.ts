import { compareGenerations, rejectedImageSchema, type RejectedImage } from '../../contracts.js';
import { GenerationMismatchError, AppError, NotFoundError } from '../../errors.js';
import type { BlobStore } from '../../ports/blob-store.js';
import type { RejectionLog } from '../../ports/rejection-log.js';
import type { GcsWriteOptions } from './gcs-blob-store.js';

const ID = /^[A-Za-z0-9_-]{1,128}$/;
const CONFLICT_RETRIES = 5;
const READ_CONCURRENCY = 16;

/**
 * {@link RejectionLog} in a bucket: one JSON object per document id under `<prefix>/` (default
 * `rejected/` of the features bucket), the latest generation's rejection winning. Many function
 * instances write at once, so a record is a read-compare-write guarded by the object's generation
 * (`ifGenerationMatch` on GCS; stores without preconditions simply overwrite).
 */
export class GcsRejectionLog implements RejectionLog {
  private readonly prefix: string;

  constructor(
    private readonly blobs: BlobStore,
    options: { prefix?: string } = {},
  ) {
    this.prefix = `${(options.prefix ?? 'rejected').replace(/^\/+|\/+$/g, '')}/`;
  }

  async record(rejection: RejectedImage): Promise<void> {
    const parsed = rejectedImageSchema.parse(rejection);
    const name = this.object(parsed.id);
    await this.withRetry(name, async (existing, generation) => {
      // An older generation's rejection never replaces a newer one's.
      if (existing && isGeneration(existing.generation) && isGeneration(parsed.generation) && compareGenerations(parsed.generation, existing.generation) < 0)
        return;
      const options: GcsWriteOptions = { contentType: 'application/json', ifGenerationMatch: generation ?? '0' };
      await this.blobs.write(name, JSON.stringify(parsed), options);
    });
  }

  async clear(id: string, generation?: string): Promise<void> {
    const name = this.object(id);
    if (generation === undefined) return this.blobs.delete(name);
    await this.withRetry(name, async (existing) => {
      if (!existing) return;
      // A newer generation was rejected after the one being cleared: keep that record.
      if (isGeneration(existing.generation) && isGeneration(generation) && compareGenerations(existing.generation, generation) > 0) return;
      await this.blobs.delete(name);
    });
  }

  async list(limit = 100): Promise<RejectedImage[]> {
    const names: string[] = [];
    for await (const info of this.blobs.list(this.prefix)) if (info.name.endsWith('.json')) names.push(info.name);
    const out: RejectedImage[] = [];
    for (let i = 0; i < names.length; i += READ_CONCURRENCY) {
      const chunk = await Promise.all(names.slice(i, i + READ_CONCURRENCY).map((n) => this.readRecord(n)));
      for (const r of chunk) if (r) out.push(r);
    }
    // Newest first: what the user just uploaded is what they look for.
    return out.sort((a, b) => b.at.localeCompare(a.at)).slice(0, limit);
  }

  async count(): Promise<number> {
    let n = 0;
    for await (const info of this.blobs.list(this.prefix)) if (info.name.endsWith('.json')) n += 1;
    return n;
  }

  private object(id: string): string {
    if (!ID.test(id)) throw new AppError(`Invalid rejection id ${JSON.stringify(id)}: expected a document id (letters, digits, '_' or '-')`);
    return `${this.prefix}${id}.json`;
  }

  /** Runs `fn` with the current record and its object generation; retries when another writer won. */
  private async withRetry(name: string, fn: (existing: RejectedImage | null, generation: string | null) => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt += 1) {
      const info = await this.blobs.stat(name);
      const existing = info ? await this.readRecord(name, info.generation) : null;
      try {
        // A record that vanished between stat and read is written as new (generation 0).
        return await fn(existing, existing ? info!.generation : null);
      } catch (err) {
        if (!(err instanceof GenerationMismatchError) || attempt >= CONFLICT_RETRIES) throw err;
      }
    }
  }

  private async readRecord(name: string, generation?: string): Promise<RejectedImage | null> {
    let text: string;
    try {
      text = (await this.blobs.read(name, generation ? { generation } : {})).toString('utf8');
    } catch (err) {
      if (err instanceof NotFoundError || err instanceof GenerationMismatchError) return null;
      throw err;
    }
    const parsed = rejectedImageSchema.safeParse(safeJson(text));
    const id = name.slice(this.prefix.length).replace(/\.json$/, '');
    // An unreadable record is shown, not hidden: the image it stands for is still not indexed.
    return parsed.success ? parsed.data : { id, uri: '', generation: '0', reason: 'unreadable-record', detail: text.slice(0, 200), at: '' };
  }
}

function isGeneration(g: string): boolean {
  return /^\d{1,19}$/.test(g);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

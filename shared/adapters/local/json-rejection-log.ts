import { promises as fs } from 'node:fs';
import path from 'node:path';
import { compareGenerations, rejectedImageSchema, type RejectedImage } from '../../contracts.js';
import { AppError, CorruptStateError } from '../../errors.js';
import { silentLogger, type Logger } from '../../logger.js';
import type { RejectionLog } from '../../ports/rejection-log.js';
import { KeyedMutex, isNotFound, readJsonFile, writeJsonAtomic } from './atomic-file.js';

/**
 * Rejected images, one JSON file per document id (the latest rejection wins), so `status` and
 * the web page can list them and a later good generation clears them.
 */
const ID = /^[A-Za-z0-9_-]{1,128}$/;
const mutex = new KeyedMutex();

export class JsonRejectionLog implements RejectionLog {
  readonly dir: string;
  private readonly logger: Logger;

  constructor(dir: string, options: { logger?: Logger } = {}) {
    this.dir = path.resolve(dir);
    this.logger = options.logger ?? silentLogger;
  }

  /**
   * A record, or null when there is none — or when it is unreadable (cut short by a crash): a
   * record only explains why an image was refused, so a bad one is skipped with a warning (and
   * replaced by the next rejection of that image) rather than failing the listing or the write.
   */
  private async read(file: string): Promise<RejectedImage | null> {
    try {
      return await readJsonFile(file, null, { schema: rejectedImageSchema, fix: 'skipped; it is replaced when the image is rejected again' });
    } catch (err) {
      if (!(err instanceof CorruptStateError)) throw err;
      this.logger.warn({ err, file }, 'unreadable rejection record skipped');
      return null;
    }
  }

  private file(id: string): string {
    if (!ID.test(id)) throw new AppError(`Invalid rejection id ${JSON.stringify(id)}: expected a document id (letters, digits, '_' or '-')`);
    return path.join(this.dir, `${id}.json`);
  }

  async record(rejection: RejectedImage): Promise<void> {
    const parsed = rejectedImageSchema.parse(rejection);
    const file = this.file(parsed.id);
    await mutex.run(file, async () => {
      const existing = await this.read(file);
      // An older generation's rejection never replaces a newer one's.
      if (existing && /^\d+$/.test(existing.generation) && /^\d+$/.test(parsed.generation) && compareGenerations(parsed.generation, existing.generation) < 0)
        return;
      await writeJsonAtomic(file, parsed);
    });
  }

  async clear(id: string, generation?: string): Promise<void> {
    const file = this.file(id);
    await mutex.run(file, async () => {
      if (generation !== undefined) {
        const existing = await this.read(file);
        // A newer generation was rejected after the one being cleared: keep that record.
        if (existing && /^\d+$/.test(existing.generation) && compareGenerations(existing.generation, generation) > 0) return;
      }
      await fs.rm(file, { force: true });
    });
  }

  async list(limit = 100): Promise<RejectedImage[]> {
    const out: RejectedImage[] = [];
    for (const name of await this.names()) {
      const record = await this.read(path.join(this.dir, name));
      if (record) out.push(record);
    }
    // Newest first: what the user just uploaded is what they look for.
    return out.sort((a, b) => b.at.localeCompare(a.at)).slice(0, limit);
  }

  async count(): Promise<number> {
    return (await this.names()).length;
  }

  private async names(): Promise<string[]> {
    try {
      return (await fs.readdir(this.dir)).filter((n) => n.endsWith('.json'));
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
  }
}

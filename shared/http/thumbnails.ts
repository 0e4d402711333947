import sharp from 'sharp';
import type { ConcurrencyGate } from './limits.js';

/**
 * Thumbnails made once per image version and kept in a cache bounded by bytes (least recently
 * used first out), so the page's grid does not decode originals on every request. Concurrent
 * requests for one thumbnail share one decode; decodes run through a {@link ConcurrencyGate}.
 */
export class ThumbnailCache {
  private readonly entries = new Map<string, Buffer>();
  private readonly inflight = new Map<string, Promise<Buffer>>();
  private bytes = 0;

  constructor(
    private readonly gate: ConcurrencyGate,
    private readonly maxBytes: number,
    private readonly maxPixels = 100_000_000,
  ) {}

  /** The JPEG thumbnail of `key` (id and generation), made from `read()` if not cached. */
  async get(key: string, read: () => Promise<Buffer>): Promise<Buffer> {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit); // most recently used last
      return hit;
    }
    let pending = this.inflight.get(key);
    if (!pending) {
      pending = this.gate.run(async () => this.make(await read()));
      this.inflight.set(key, pending);
      void pending.then(
        (thumb) => this.store(key, thumb),
        () => undefined,
      );
      void pending.finally(() => this.inflight.delete(key)).catch(() => undefined);
    }
    return pending;
  }

  private make(original: Buffer): Promise<Buffer> {
    const upright = sharp(original, { limitInputPixels: this.maxPixels })
      .rotate()
      .resize(256, 256, { fit: 'inside', withoutEnlargement: false, kernel: 'nearest' });
    // Stryker disable next-line ObjectLiteral: equivalent, 80 is also sharp's default JPEG quality; kept explicit for readers
    return upright.jpeg({ quality: 80 }).toBuffer();
  }

  private store(key: string, thumb: Buffer): void {
    if (thumb.length > this.maxBytes) return;
    // Stryker disable next-line ConditionalExpression: equivalent, unreachable today: get() stores a key only from its one in-flight read, and a key is cached before that read leaves `inflight`; kept so a double store could never count bytes twice
    if (this.entries.has(key)) return;
    this.entries.set(key, thumb);
    this.bytes += thumb.length;
    for (const [oldest, buf] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= buf.length;
    }
  }
}

import { AppError } from '../errors.js';

/**
 * What one search app instance accepts before it sheds load. Every figure bounds memory or CPU
 * that a client (or many) could otherwise take: the defaults fit a 2-core machine serving one
 * person's page, and leave headroom for scripts.
 */
export interface HttpLimits {
  /** Largest query image upload (bytes): refused from its Content-Length, or cut while streaming. */
  maxQueryBytes: number;
  /**
   * Query images decoded and embedded at once, and how many may wait; more answer 503 with
   * Retry-After at once. Uploads being read count too, so at most (concurrent + queued) bodies are
   * held in memory.
   */
  queryDecodes: { concurrent: number; queued: number };
  /** Thumbnail decodes at once and waiting (beyond: 503), and the cache of made thumbnails (bytes). */
  thumbnails: { concurrent: number; queued: number; cacheBytes: number };
  /** Per client (IP address): searches per minute, and every other request per minute. */
  rateLimit: { searchesPerMinute: number; requestsPerMinute: number };
  /**
   * `requestMs`: whole request (headers and body) before 408; `headersMs`: headers alone;
   * `keepAliveMs`: idle keep-alive connection; `connectionMs`: socket inactivity; `checkIntervalMs`:
   * how often Node checks the first two.
   */
  timeouts: { requestMs: number; headersMs: number; keepAliveMs: number; connectionMs: number; checkIntervalMs: number };
  /** Open connections at once (beyond: refused by the server). */
  maxConnections: number;
}

export const defaultHttpLimits: HttpLimits = {
  maxQueryBytes: 10 * 1024 * 1024,
  queryDecodes: { concurrent: 2, queued: 8 },
  thumbnails: { concurrent: 2, queued: 48, cacheBytes: 32 * 1024 * 1024 },
  rateLimit: { searchesPerMinute: 240, requestsPerMinute: 1200 },
  timeouts: { requestMs: 30_000, headersMs: 10_000, keepAliveMs: 5_000, connectionMs: 60_000, checkIntervalMs: 1_000 },
  maxConnections: 512,
};

/** Limits given in part (options, tests) over the defaults, one level deep. */
export type HttpLimitOverrides = { [K in keyof HttpLimits]?: HttpLimits[K] extends object ? Partial<HttpLimits[K]> : HttpLimits[K] };

export function resolveHttpLimits(overrides: HttpLimitOverrides = {}): HttpLimits {
  const out = { ...defaultHttpLimits } as Record<string, unknown>;
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    const base = (defaultHttpLimits as unknown as Record<string, unknown>)[key];
    // A group (every non-scalar default is an object; none is null) is merged key by key.
    out[key] = typeof base === 'object' ? { ...base, ...(value as object) } : value;
  }
  return out as unknown as HttpLimits;
}

/** The server is busy: answered 503 with Retry-After instead of queueing without bound. */
export class OverloadedError extends AppError {
  override readonly code = 'OVERLOADED';
  readonly statusCode = 503;
  constructor(
    what: string,
    readonly retryAfterSeconds: number,
  ) {
    super(`the server is busy with other ${what}; retry in ${retryAfterSeconds} s`);
  }
}

/**
 * At most `concurrent` tasks run at once and `queued` wait (first come, first served); a task
 * beyond that is refused at once with {@link OverloadedError}.
 */
export class ConcurrencyGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly what: string,
    private readonly concurrent: number,
    private readonly queued: number,
    private readonly retryAfterSeconds = 1,
  ) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrent) this.running += 1;
    else if (this.waiting.length < this.queued) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else throw new OverloadedError(this.what, this.retryAfterSeconds);
    try {
      return await task();
    } finally {
      // The slot passes to the next waiter, or is freed.
      const next = this.waiting.shift();
      if (next) next();
      else this.running -= 1;
    }
  }
}

/**
 * The collection map's request bounds, in a module of their own: the HTTP routes and the CLI check
 * requests with them without loading the map service (whose worker the cloud search image does not
 * carry).
 */
import { AppError } from '../errors.js';

export const MAP_SAMPLE_DEFAULT = 10_000;
export const MAP_SAMPLE_MAX = 20_000;
export const MAP_K_MIN = 2;
export const MAP_K_MAX = 12;

/**
 * The sample sizes a map is computed for on request (security review finding 2): a requested size
 * is rounded up to the next of these, so a caller varying `sample` cannot make every request a
 * fresh build (each map is cached per size).
 */
export const MAP_SAMPLE_SIZES = [1000, 2000, 5000, 10_000, MAP_SAMPLE_MAX] as const;

/** `sample` rounded up to the next of {@link MAP_SAMPLE_SIZES} (1..{@link MAP_SAMPLE_MAX}). */
export function snapMapSample(sample: number): number {
  return MAP_SAMPLE_SIZES.find((size) => size >= sample) ?? MAP_SAMPLE_MAX;
}

/** Seconds a client is told to wait when another map is being computed (a PCA view of 20,000 images takes a few). */
export const MAP_BUSY_RETRY_SECONDS = 5;

/**
 * Another map is being computed: one map is built at a time, and a request for a different one is
 * refused rather than queued (security review finding 2). The HTTP route answers 503 with
 * Retry-After.
 */
export class MapBusyError extends AppError {
  override readonly code = 'MAP_BUSY';
  constructor(readonly retryAfterSeconds: number) {
    super(`another collection map is being computed; retry in ${retryAfterSeconds} s`);
  }
}

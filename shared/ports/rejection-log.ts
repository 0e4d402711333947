import type { RejectedImage } from '../contracts.js';

/** Images that could not be indexed, with a reason: never silently dropped. */
export interface RejectionLog {
  record(rejection: RejectedImage): Promise<void>;
  /** Forgets an id once a newer generation was indexed (or the object deleted). */
  clear(id: string, generation?: string): Promise<void>;
  list(limit?: number): Promise<RejectedImage[]>;
  count(): Promise<number>;
}

/**
 * Explicit outcomes of a handler for expected cases; handlers throw only for faults worth a retry.
 */
export type ObjectEventOutcome =
  | { status: 'published'; id: string; eventType: 'finalize' | 'delete' }
  | { status: 'skipped'; id: string; reason: string }
  | { status: 'rejected'; id: string; reason: string; detail: string };

export type EmbedOutcome =
  | { status: 'embedded'; id: string; ackId: string }
  | { status: 'deleted'; id: string; ackId: string }
  | { status: 'unchanged'; id: string; ackId: string }
  | { status: 'superseded'; id: string; ackId: string; detail: string }
  | { status: 'rejected'; id: string; ackId: string; reason: string; detail: string }
  | { status: 'dead-lettered'; ackId: string; detail: string }
  | { status: 'retry'; id: string; ackId: string; detail: string };

export type UpsertHandlerOutcome =
  | { status: 'created' | 'updated' | 'unchanged' | 'stale'; id: string; ackId: string }
  | { status: 'deleted' | 'stale-delete' | 'absent'; id: string; ackId: string }
  | { status: 'requeued'; id: string; ackId: string; detail: string }
  | { status: 'dead-lettered'; ackId: string; detail: string }
  | { status: 'retry'; id: string; ackId: string; detail: string };

export function countBy<T extends { status: string }>(outcomes: T[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o.status] = (counts[o.status] ?? 0) + 1;
  return counts;
}

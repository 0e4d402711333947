/**
 * Names of the Pub/Sub resources the stack creates beside each topic, stated once: the Pulumi
 * program (infra/components/messaging.ts) creates them under these names, and the cloud EventBus
 * (shared/wiring/cloud.ts, the adapter's defaults) reaches them by the same names. A topic may be
 * an id (`iss-image-events`) or a full name (`projects/p/topics/iss-image-events`).
 *
 * - dead-letter topic of `<topic>`: `<topic>-dead-letter` (the subscriptions' dead-letter policy
 *   forwards there, and the handlers publish what they refuse there);
 * - dead-letter inbox of `<topic>`: the pull subscription `<topic>-dead-letter-inbox` on that
 *   dead-letter topic, where dead letters wait to be read (`listDeadLetters`, `gcloud pubsub
 *   subscriptions pull`).
 */
const DEAD_LETTER_SUFFIX = '-dead-letter';
const INBOX_SUFFIX = '-inbox';
const FULL_TOPIC_NAME = /^(projects\/[^/]+)\/topics\/([^/]+)$/;

/** `<topic>-dead-letter`, an id for an id, a full topic name for a full topic name. */
export function deadLetterTopicOf(topic: string): string {
  return `${topic}${DEAD_LETTER_SUFFIX}`;
}

/**
 * `<topic>-dead-letter-inbox`: the subscription id for a topic id, the full subscription name
 * (`projects/p/subscriptions/…`) for a full topic name.
 */
export function deadLetterInboxOf(topic: string): string {
  const full = FULL_TOPIC_NAME.exec(topic);
  if (full) return `${full[1]}/subscriptions/${deadLetterTopicOf(full[2]!)}${INBOX_SUFFIX}`;
  return `${deadLetterTopicOf(topic)}${INBOX_SUFFIX}`;
}

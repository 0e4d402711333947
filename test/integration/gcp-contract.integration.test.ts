import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PubSub } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsModelRegistry } from '../../shared/adapters/gcp/gcs-model-registry.js';
import { PubSubEventBus } from '../../shared/adapters/gcp/pubsub-event-bus.js';
import type { BlobInfo, BlobStore } from '../../shared/ports/blob-store.js';
import type { Delivery } from '../../shared/ports/event-bus.js';
import { describeBlobStoreContract } from '../contracts/blob-store.contract.js';
import { describeFeatureStoreContract } from '../contracts/feature-store.contract.js';
import { describeModelRegistryContract } from '../contracts/model-registry.contract.js';
import { deadLetterInboxOf, deadLetterTopicOf } from '../../shared/adapters/gcp/pubsub-names.js';

/**
 * The port contracts against real Google Cloud Storage and Pub/Sub. Needs:
 *   GCP_TEST_PROJECT       project id
 *   GCP_TEST_BUCKET        an existing bucket the credentials can write (objects go under a
 *                          random `iss-it-<run>/` prefix and are deleted afterwards)
 *   GCP_TEST_TOPIC_PREFIX  prefix for the topics/subscriptions this test creates and deletes
 * and Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or `gcloud auth
 * application-default login`). Without them the suite is skipped with the reason printed.
 */
const env = process.env;
const adcFile = path.join(os.homedir(), '.config', 'gcloud', 'application_default_credentials.json');
const missing = [
  !env.GCP_TEST_PROJECT && 'GCP_TEST_PROJECT',
  !env.GCP_TEST_BUCKET && 'GCP_TEST_BUCKET',
  !env.GCP_TEST_TOPIC_PREFIX && 'GCP_TEST_TOPIC_PREFIX',
  !env.GOOGLE_APPLICATION_CREDENTIALS && !existsSync(adcFile) && 'credentials (GOOGLE_APPLICATION_CREDENTIALS or application-default login)',
].filter((m): m is string => Boolean(m));

const run = `iss-it-${Date.now()}-${randomBytes(3).toString('hex')}`;

/** Scopes a blob store to a folder, so the contract sees an empty bucket of its own. */
class PrefixedBlobStore implements BlobStore {
  constructor(
    private readonly inner: GcsBlobStore,
    private readonly prefix: string,
  ) {}
  get bucket(): string {
    return this.inner.bucket;
  }
  uri(name: string): string {
    return this.inner.uri(this.prefix + name);
  }
  read(name: string, options?: { generation?: string; maxBytes?: number }): Promise<Buffer> {
    return this.inner.read(this.prefix + name, options);
  }
  async stat(name: string): Promise<BlobInfo | null> {
    const info = await this.inner.stat(this.prefix + name);
    return info && { ...info, name };
  }
  async *list(prefix = ''): AsyncIterable<BlobInfo> {
    for await (const info of this.inner.list(this.prefix + prefix)) yield { ...info, name: info.name.slice(this.prefix.length) };
  }
  async write(name: string, data: Buffer | string, options?: { contentType?: string }): Promise<BlobInfo> {
    return { ...(await this.inner.write(this.prefix + name, data, options)), name };
  }
  delete(name: string): Promise<void> {
    return this.inner.delete(this.prefix + name);
  }
}

if (missing.length > 0) {
  console.warn(`gcp-contract integration tests skipped: set ${missing.join(', ')}`);
  describe.skip('GCP contracts (real services)', () => {
    it('needs GCP_TEST_PROJECT, GCP_TEST_BUCKET, GCP_TEST_TOPIC_PREFIX and credentials', () => {});
  });
} else {
  const projectId = env.GCP_TEST_PROJECT!;
  const bucket = env.GCP_TEST_BUCKET!;
  const storage = new Storage({ projectId });
  let n = 0;
  const scope = () => `${run}/${(n += 1)}/`;
  const cleanupPrefix = async (prefix: string) => {
    await storage.bucket(bucket).deleteFiles({ prefix, force: true });
  };

  describeBlobStoreContract('GCS (real)', async () => {
    const prefix = scope();
    return { store: new PrefixedBlobStore(new GcsBlobStore(storage, bucket), prefix), cleanup: () => cleanupPrefix(prefix) };
  });

  describeModelRegistryContract('GCS (real)', async () => {
    const prefix = scope();
    const cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-gcs-it-'));
    return {
      registry: new GcsModelRegistry({ storage, bucket, prefix: `${prefix}models`, cacheDir }),
      cleanup: async () => {
        await cleanupPrefix(prefix);
        await fs.rm(cacheDir, { recursive: true, force: true });
      },
    };
  });

  describeFeatureStoreContract('GCS shards (real)', async () => {
    const prefix = scope();
    return { store: new GcsFeatureStore(new GcsBlobStore(storage, bucket), { prefix: `${prefix}features` }), cleanup: () => cleanupPrefix(prefix) };
  });

  describe('PubSubEventBus (real Pub/Sub)', () => {
    const pubsub = new PubSub({ projectId });
    const base = `${env.GCP_TEST_TOPIC_PREFIX}-${run}`.slice(0, 200);
    let bus: PubSubEventBus;

    beforeAll(async () => {
      // Named as the stack names them (shared/adapters/gcp/pubsub-names.ts): the adapter finds them by these names.
      const [dlq] = await pubsub.createTopic(deadLetterTopicOf(base));
      await dlq.createSubscription(deadLetterInboxOf(base));
      const [topic] = await pubsub.createTopic(base);
      await topic.createSubscription(`${base}-sub`, {
        ackDeadlineSeconds: 10,
        deadLetterPolicy: { deadLetterTopic: dlq.name, maxDeliveryAttempts: 5 },
      });
      bus = new PubSubEventBus({
        pubsub,
        projectId,
        topicFor: () => base,
        subscriptionFor: () => `${base}-sub`,
        deadLetterTopicFor: () => deadLetterTopicOf(base),
        pullTimeoutMs: 5000,
      });
    });

    afterAll(async () => {
      await bus?.close();
      for (const s of [`${base}-sub`, deadLetterInboxOf(base)])
        await pubsub
          .subscription(s)
          .delete()
          .catch(() => {});
      for (const t of [base, deadLetterTopicOf(base)])
        await pubsub
          .topic(t)
          .delete()
          .catch(() => {});
      await pubsub.close();
    });

    /** Pull may answer empty right after a publish: retry for up to a minute. */
    async function pullUntil(topic: string, count: number): Promise<Delivery[]> {
      const got: Delivery[] = [];
      const until = Date.now() + 60_000;
      while (got.length < count && Date.now() < until) got.push(...(await bus.pull(topic, { maxMessages: 10 })));
      return got;
    }

    it('publishes, pulls, nacks (attempt 2), dead-letters with a reason and acks', async () => {
      const id = await bus.publish('events', { n: 1 }, { kind: 'it' });
      const [first] = await pullUntil('events', 1);
      expect(first).toMatchObject({ messageId: id, data: { n: 1 }, attributes: { kind: 'it' }, deliveryAttempt: 1 });
      await bus.nack('events', [first!.ackId], 'try again');
      const [second] = await pullUntil('events', 1);
      expect(second).toMatchObject({ messageId: id, deliveryAttempt: 2 });
      await bus.deadLetter('events', [second!.ackId], 'invalid-event: test');
      let letters: Awaited<ReturnType<PubSubEventBus['listDeadLetters']>> = [];
      const until = Date.now() + 60_000;
      while (letters.length === 0 && Date.now() < until) letters = await bus.listDeadLetters('events', 10);
      expect(letters[0]).toMatchObject({ messageId: id, data: { n: 1 }, reason: 'invalid-event: test', deliveryAttempt: 2 });
    });
  });
}

import { beforeAll, describe, expect, test } from 'vitest';
import { buildStack, ofType, type RecordedResource } from '../../infra/testing/mocks.js';

/**
 * The stack side of batched cloud indexing (issue 15, item 6): `upsertVectors` stays a Pub/Sub
 * push target (one message per request, cloud.google.com/pubsub/docs/push) and serves a batch of
 * pushed requests per instance, which it writes with one `_bulk` (shared/services/upsert-batcher.ts).
 */
const FN = 'gcp:cloudfunctionsv2/function:Function';
const SUB = 'gcp:pubsub/subscription:Subscription';

let all: RecordedResource[];
const upsertFunction = () => ofType(all, FN).find((f) => f.inputs.name === 'iss-upsert-vectors')!;

beforeAll(async () => {
  all = await buildStack();
});

describe('indexing: a batch of pushes per instance', () => {
  test('upsertVectors serves 100 requests at once on one vCPU, within the ack deadline of its subscription', () => {
    const config = upsertFunction().inputs.serviceConfig;
    expect(config.maxInstanceRequestConcurrency).toBe(100);
    expect(config.availableCpu).toBe('1');
    expect(config.availableMemory).toBe('1Gi');
    const subscription = ofType(all, SUB).find((s) => s.inputs.name === 'iss-embeddings-upsert')!;
    // A request (its batch's write included) must answer before Pub/Sub redelivers the message.
    expect(config.timeoutSeconds).toBeLessThanOrEqual(subscription.inputs.ackDeadlineSeconds);
    expect(subscription.inputs.deadLetterPolicy.deadLetterTopic).toMatch(/iss-embeddings-dead-letter$/);
  });

  test('a function serving more than one request at a time has at least one vCPU (Cloud Run refuses concurrency above 1 below that)', () => {
    for (const f of ofType(all, FN)) {
      const { maxInstanceRequestConcurrency: concurrency, availableCpu } = f.inputs.serviceConfig;
      if ((concurrency ?? 1) > 1) expect(Number(availableCpu), f.inputs.name).toBeGreaterThanOrEqual(1);
    }
  });

  test('the other functions keep one request per instance', () => {
    const others = ofType(all, FN).filter((f) => f.inputs.name !== 'iss-upsert-vectors');
    expect(others.length).toBeGreaterThan(0);
    for (const f of others) expect(f.inputs.serviceConfig.maxInstanceRequestConcurrency ?? 1, f.inputs.name).toBe(1);
  });

  test('pushed, not pulled: the indexing identity holds no Pub/Sub subscriber role, and only the push identity may invoke it', () => {
    const member = 'serviceAccount:iss-upsert@iss-test-project.iam.gserviceaccount.com';
    const grants = all.filter((r) => r.type.includes('IAMMember') || r.type.includes('IamMember'));
    expect(grants.filter((g) => g.inputs.member === member && /pubsub\.(subscriber|editor|admin)/.test(g.inputs.role))).toEqual([]);
    const invokers = ofType(all, 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember').filter(
      (g) => g.inputs.role === 'roles/run.invoker' && JSON.stringify(g.inputs.name ?? '').includes('upsert-vectors'),
    );
    expect(invokers.map((g) => g.inputs.member)).toEqual(['serviceAccount:iss-push-upsert@iss-test-project.iam.gserviceaccount.com']);
  });
});

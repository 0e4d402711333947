import { beforeAll, describe, expect, test } from 'vitest';
import { buildStack, ofType, type RecordedResource } from '../../infra/testing/mocks.js';

/**
 * The scheduled drift check in the Pulumi program (realistic mocks, infra/testing/mocks.ts):
 * Scheduler → startDriftCheck (OIDC) → the drift job in the trainer image, which publishes retrain
 * requests to the same retrain-requests topic the retraining cron publishes to. Exact roles are
 * checked with every other workload's in infra-policies.unit.test.ts.
 */
describe('drift check in the stack', () => {
  let all: RecordedResource[];
  beforeAll(async () => {
    all = await buildStack({});
  });

  const scheduler = (name: string) => ofType(all, 'gcp:cloudscheduler/job:Job').find((j) => j.inputs.name === name)!;
  const job = () => ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-drift-check')!;

  test('a Scheduler tick calls startDriftCheck with an OIDC token of its own account', () => {
    const tick = scheduler('iss-drift-check');
    const fn = ofType(all, 'gcp:cloudfunctionsv2/function:Function').find((f) => f.inputs.buildConfig.entryPoint === 'startDriftCheck')!;
    expect(tick.inputs.schedule).toBe('0 */6 * * *');
    expect(tick.inputs.httpTarget).toMatchObject({
      httpMethod: 'POST',
      oidcToken: { serviceAccountEmail: 'iss-drift-tick@iss-test-project.iam.gserviceaccount.com' },
    });
    expect(tick.inputs.httpTarget.uri).toBe(fn.outputs.url);
    // The tick's account may invoke that function and nothing else.
    const invokes = ofType(all, 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember').filter(
      (m) => m.inputs.member === 'serviceAccount:iss-drift-tick@iss-test-project.iam.gserviceaccount.com',
    );
    expect(invokes.map((m) => m.inputs.role)).toEqual(['roles/run.invoker']);
  });

  test('the drift job runs the drift check bundle of the trainer image, as its own account, with the retrain-requests topic', () => {
    const task = job().inputs.template.template;
    expect(task.serviceAccount).toBe('iss-drift@iss-test-project.iam.gserviceaccount.com');
    expect(task.containers[0].image).toBe(
      ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-reindex')!.inputs.template.template.containers[0].image,
    );
    expect(task.containers[0].args).toEqual(['--enable-source-maps', '/app/dist/drift-check.js']);
    const env = Object.fromEntries(task.containers[0].envs.map((e: { name: string; value?: string }) => [e.name, e.value]));
    expect(env).toMatchObject({
      TOPIC_RETRAIN_REQUESTS: 'iss-retrain-requests',
      MODELS_BUCKET: 'iss-test-project-iss-models',
      FEATURES_BUCKET: 'iss-test-project-iss-features',
    });
    // No OpenSearch credentials and no VPC: it reads buckets and publishes a message.
    expect(task.vpcAccess).toBeUndefined();
    expect(task.containers[0].envs.some((e: { valueSource?: unknown }) => e.valueSource)).toBe(false);
  });

  test('its requests go where the retraining cron publishes: the topic startRetraining is pushed from', () => {
    const cron = scheduler('iss-retrain');
    const publisher = ofType(all, 'gcp:pubsub/topicIAMMember:TopicIAMMember').find(
      (m) => m.inputs.member === 'serviceAccount:iss-drift@iss-test-project.iam.gserviceaccount.com',
    )!;
    expect(publisher.inputs.role).toBe('roles/pubsub.publisher');
    expect(cron.inputs.pubsubTarget.topicName).toMatch(new RegExp(`/${publisher.inputs.topic}$`));
  });

  test('a failing drift job or starter is watched like the other jobs and functions', () => {
    const policies = ofType(all, 'gcp:monitoring/alertPolicy:AlertPolicy').map((p) => JSON.stringify(p.inputs));
    expect(policies.some((p) => p.includes('iss-drift-check'))).toBe(true);
  });
});

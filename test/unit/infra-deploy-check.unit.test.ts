import * as pulumi from '@pulumi/pulumi';
import { beforeAll, describe, expect, test } from 'vitest';
import { runChecks, type Finding } from '../../infra/deploy-check/checks.js';
import { DEPLOY_MODES } from '../../infra/deploy-check/modes.js';
import { CLOUD_RUN_GPU_JOB_REGIONS } from '../../infra/config.js';
import { createStack } from '../../infra/stack.js';
import { buildStack, ofType, TEST_PROJECT_NUMBER, type Program, type RecordedResource } from '../../infra/testing/mocks.js';
import type { RawStackConfig } from '../../infra/config.js';
import type { CheckOptions } from '../../infra/deploy-check/checks.js';

/**
 * The deploy check on the stack as it is (no finding, in every mode), and one regression case per
 * first-deploy defect found in review: each case puts the defect back into the program (through a
 * transformation that rewrites what the old code declared) and expects the check to name it.
 */
const options = (region = 'us-central1'): CheckOptions => ({ projectNumber: TEST_PROJECT_NUMBER, region, gpuRegions: CLOUD_RUN_GPU_JOB_REGIONS });

async function findings(raw: Partial<RawStackConfig> = {}, inject?: pulumi.ResourceTransformation, extra: Partial<CheckOptions> = {}): Promise<Finding[]> {
  const program: Program = (cfg, opts) => createStack(cfg, { transformations: [...(inject ? [inject] : []), ...opts.transformations] });
  const all = await buildStack(raw, program);
  return runChecks(all, { ...options(raw.region), ...extra }).findings;
}

const messages = (f: Finding[]) => f.map((x) => `[${x.rule}] ${x.message}`);

/** A transformation that rewrites the props (or options) of the resources it matches. */
function rewrite(
  match: (a: pulumi.ResourceTransformationArgs) => boolean,
  change: (a: pulumi.ResourceTransformationArgs) => pulumi.ResourceTransformationResult,
): pulumi.ResourceTransformation {
  return (a) => (match(a) ? change(a) : undefined);
}

describe('the deploy check passes on the stack as it is', () => {
  test.each(DEPLOY_MODES)('%s', async (_name, raw) => {
    expect(messages(await findings(raw))).toEqual([]);
  });
});

describe('regression cases: each first-deploy defect is found', () => {
  let all: RecordedResource[];
  beforeAll(async () => {
    all = await buildStack({});
  });

  test('1. a workload that writes the registry without write access (search/embed registering the first model)', async () => {
    const f = messages(
      await findings({}, undefined, {
        extraCalls: {
          search: [
            {
              adapter: 'GcsModelRegistry',
              method: 'register',
              on: { bucket: { kind: 'bucket', env: 'MODELS_BUCKET', prefix: 'models/' } },
              why: 'ensureActiveModel',
            },
          ],
          embedJob: [
            {
              adapter: 'GcsModelRegistry',
              method: 'promote',
              on: { bucket: { kind: 'bucket', env: 'MODELS_BUCKET', prefix: 'models/' } },
              why: 'ensureActiveModel',
            },
          ],
        },
      }),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[permissions\] search .*GcsModelRegistry\.register .*needs storage\.objects\.create on bucket iss-test-project-iss-models/),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[permissions\] embedJob .*GcsModelRegistry\.promote .*needs storage\.objects\.(create|delete) on bucket iss-test-project-iss-models/,
      ),
    );
    // The fix: one bootstrap job holds write access, and runs during `pulumi up` after its grant.
    const job = ofType(all, 'gcp:cloudrunv2/job:Job').find((j) => j.inputs.name === 'iss-bootstrap-model')!;
    expect(job.inputs.runExecutionToken).toBe('initial-default');
  });

  test('2. launchers that list executions with only jobsExecutorWithOverrides', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:cloudrunv2/jobIamMember:JobIamMember' && a.props.role === 'roles/run.viewer',
          (a) => ({ props: { ...a.props, role: 'roles/run.jobsExecutorWithOverrides' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[permissions\] dispatchEmbed .*CloudRunJobLauncher\.run .*needs run\.executions\.list on runJob iss-embed/),
    );
    expect(f).toContainEqual(expect.stringMatching(/^\[permissions\] retrainJob .*needs run\.executions\.list on runJob iss-reindex/));
  });

  test('3. function builds that cannot read gcf-v2-sources-<number>-<region>', async () => {
    // The old grants: objectViewer on the stack's own sources bucket, artifact writer, log writer.
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:projects/iAMMember:IAMMember' && a.props.role === 'roles/run.builder',
          (a) => ({ props: { ...a.props, role: 'roles/logging.logWriter' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[platform-permissions\] build of function iss-upsert-vectors: .*iss-fn-build@.* needs storage\.objects\.get on bucket gcf-v2-sources-123456789012-us-central1/,
      ),
    );
    expect(f).toContainEqual(expect.stringMatching(/artifactregistry\.repositories\.uploadArtifacts/));
  });

  test('4. a full service path where Eventarc and log filters want the service name', async () => {
    const full = (s: string) => `projects/iss-test-project/locations/us-central1/services/${s}`;
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:eventarc/trigger:Trigger' || a.type === 'gcp:logging/metric:Metric',
          (a) =>
            a.type === 'gcp:eventarc/trigger:Trigger'
              ? { props: { ...a.props, destination: { cloudRunService: { service: full('iss-on-object-event'), region: 'us-central1' } } }, opts: a.opts }
              : {
                  props: {
                    ...a.props,
                    filter: pulumi.output(a.props.filter).apply((x: string) => x.replace(/"(iss-[a-z-]+)"/g, (_m, s: string) => `"${full(s)}"`)),
                  },
                  opts: a.opts,
                },
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[names\] Eventarc trigger iss-object-finalized: destination\.cloudRunService\.service is "projects\/.*": Eventarc wants the Cloud Run service name/,
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[names\] log metric iss-index-errors filters on service_name "projects\/.*iss-upsert-vectors", .*never counts/),
    );
  });

  test("5a. triggers created before Eventarc's agent exists and IAM has propagated", async () => {
    const noAgent = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:projects/serviceIdentity:ServiceIdentity' && a.props.service === 'eventarc.googleapis.com',
          (a) => ({ props: { ...a.props, service: 'eventarcpublishing.googleapis.com' }, opts: a.opts }),
        ),
      ),
    );
    expect(noAgent).toContainEqual(expect.stringMatching(/^\[start-up order\] ingest-finalized: Eventarc's service agent is created lazily/));
    const noWait = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:eventarc/trigger:Trigger',
          (a) => ({ props: a.props, opts: { ...a.opts, dependsOn: [] } }),
        ),
      ),
    );
    expect(noWait).toContainEqual(expect.stringMatching(/^\[start-up order\] ingest-finalized must wait for IAM propagation after service-agents-eventarc/));
  });

  test('5b. alert policies created in the same instant as their log-based metrics', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:monitoring/alertPolicy:AlertPolicy',
          (a) => ({ props: a.props, opts: { ...a.opts, dependsOn: [] } }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[start-up order\] monitoring-function-errors must wait for IAM propagation after monitoring-function-errors .*404/),
    );
  });

  test('5c. a project where Cloud Resource Manager is off (project IAM bindings and the project lookup)', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:projects/service:Service' && a.props.service === 'cloudresourcemanager.googleapis.com',
          (a) => ({ props: { ...a.props, service: 'oslogin.googleapis.com' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[apis\] gcp:projects\/iAMMember:IAMMember .* cloudresourcemanager\.googleapis\.com, which the stack does not enable/),
    );
  });

  test('10a. the Vertex AI image pull needs the Vertex AI service agent to exist', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:projects/serviceIdentity:ServiceIdentity' && a.props.service === 'aiplatform.googleapis.com',
          (a) => ({ props: { ...a.props, service: 'notebooks.googleapis.com' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/Vertex AI pulling the trainer image: .*gcp-sa-aiplatform.* needs artifactregistry\.repositories\.downloadArtifacts/),
    );
  });

  test('a resource created outside the provider that waits for API enablement is found', () => {
    const moved = all.map((r) => (r.name === 'messaging-image-events' ? { ...r, provider: undefined } : r));
    const f = messages(runChecks(moved, options()).findings);
    expect(f).toEqual([expect.stringMatching(/^\[apis\] messaging-image-events \(gcp:pubsub\/topic:Topic\) is not created through a provider that waits/)]);
  });

  test('a GPU job in a region without Cloud Run GPUs is found (the config refuses it too)', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:cloudrunv2/job:Job' && a.name === 'embedding-job',
          (a) => ({ props: { ...a.props, location: 'southamerica-east1' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(expect.stringMatching(/^\[locations\] Cloud Run job iss-embed asks for a GPU in southamerica-east1/));
  });

  test("a trigger outside its bucket's location is found", async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:storage/bucket:Bucket' && a.name === 'storage-images',
          (a) => ({ props: { ...a.props, location: 'EU' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(expect.stringMatching(/^\[locations\] Eventarc trigger iss-object-finalized is in us-central1 but bucket .* is in EU/));
  });

  test('removing an invoker grant (push, scheduler, trigger) is found', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember',
          (a) => ({ props: { ...a.props, role: 'roles/run.viewer' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[platform-permissions\] push from iss-embeddings-upsert: .*iss-push-upsert@.* needs run\.routes\.invoke on runService iss-upsert-vectors/,
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[platform-permissions\] Scheduler job iss-embed-dispatch: .* needs run\.routes\.invoke on runService iss-dispatch-embed/),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[platform-permissions\] Eventarc trigger iss-object-deleted delivering to iss-on-object-event: .* needs run\.routes\.invoke/),
    );
  });

  test('signed upload URLs without the signer’s grants (signBlob on itself, create on the images bucket) or the IAM Credentials API are found', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.name === 'search-signs-as-itself' || a.name === 'search-images-creator',
          (a) => ({
            props: { ...a.props, role: a.type.includes('serviceaccount') ? 'roles/iam.serviceAccountUser' : 'roles/storage.objectViewer' },
            opts: a.opts,
          }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[permissions\] search \(runs as iss-search@.*\): GcsSignedUploads\.sign .* needs iam\.serviceAccounts\.signBlob on serviceAccount iss-search@/,
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[permissions\] search .*GcsSignedUploads\.sign .* needs storage\.objects\.create on bucket iss-test-project-iss-images;/),
    );
    const apiOff = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:projects/service:Service' && a.props.service === 'iamcredentials.googleapis.com',
          (a) => ({ props: { ...a.props, service: 'iap.googleapis.com' }, opts: a.opts }),
        ),
      ),
    );
    expect(apiOff).toContainEqual('[apis] search calls iamcredentials.googleapis.com at run time, which the stack does not enable');
  });

  test('removing the dead-letter grants of the Pub/Sub service agent is found', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:pubsub/topicIAMMember:TopicIAMMember' && String(a.name).includes('dead-letter-agent'),
          (a) => ({ props: { ...a.props, role: 'roles/pubsub.subscriber' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[platform-permissions\] dead-lettering from iss-image-events-embed \(Pub\/Sub service agent\): .* needs pubsub\.topics\.publish on topic iss-image-events-dead-letter/,
      ),
    );
  });
});

describe('exposure of the search service (issue 11, point 9)', () => {
  const isSearch = (a: pulumi.ResourceTransformationArgs) => a.type === 'gcp:cloudrunv2/service:Service' && String(a.props.name).endsWith('-search');

  test('public without Cloud Armor (the old `search.public: true`: invoker check off, run.app URL open) fails', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(isSearch, (a) => ({ props: { ...a.props, invokerIamDisabled: true, ingress: 'INGRESS_TRAFFIC_ALL' }, opts: a.opts })),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(/^\[exposure\] service iss-search: its invoker check is off and ingress is INGRESS_TRAFFIC_ALL: its run\.app URL bypasses/),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[exposure\] service iss-search: its invoker check is off, but no load-balancer backend .* Cloud Armor policy with a rate-limiting rule/,
      ),
    );
  });

  test('an allUsers invoker grant counts as public too', async () => {
    const all = await buildStack({});
    const grant: RecordedResource = {
      type: 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember',
      name: 'sneaky-public',
      inputs: { name: 'iss-search', location: 'us-central1', role: 'roles/run.invoker', member: 'allUsers' },
      outputs: {},
      dependsOn: [],
    };
    const f = messages(runChecks([...all, grant], options()).findings);
    expect(f).toContainEqual(expect.stringMatching(/^\[exposure\] service iss-search: allUsers holds roles\/run\.invoker and ingress is INGRESS_TRAFFIC_ALL/));
  });

  test('public behind the load balancer, but its Cloud Armor policy has no rate-limiting rule, fails', async () => {
    const f = messages(
      await findings(
        { search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>,
        rewrite(
          (a) => a.type === 'gcp:compute/securityPolicy:SecurityPolicy',
          (a) => ({ props: { ...a.props, rules: (a.props.rules as { action: string }[]).filter((r) => r.action !== 'throttle') }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toEqual([expect.stringMatching(/^\[exposure\] service iss-search: its invoker check is off, but no load-balancer backend/)]);
  });

  test("public with the HTTPS proxy on Google's default SSL policy (COMPATIBLE: TLS 1.0 and weak ciphers) fails", async () => {
    const f = messages(
      await findings(
        { search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>,
        rewrite(
          (a) => a.type === 'gcp:compute/targetHttpsProxy:TargetHttpsProxy',
          (a) => ({ props: { ...a.props, sslPolicy: undefined }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toEqual([
      expect.stringMatching(
        /^\[exposure\] service iss-search: its HTTPS proxy iss-search-https has no SSL policy with profile MODERN .* and minTlsVersion TLS_1_2/,
      ),
    ]);
  });

  test('public with an SSL policy that still admits TLS 1.0 fails', async () => {
    const f = messages(
      await findings(
        { search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>,
        rewrite(
          (a) => a.type === 'gcp:compute/sSLPolicy:SSLPolicy',
          (a) => ({ props: { ...a.props, profile: 'COMPATIBLE', minTlsVersion: 'TLS_1_0' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toEqual([expect.stringMatching(/^\[exposure\] service iss-search: its HTTPS proxy iss-search-https has no SSL policy with profile MODERN/)]);
  });

  test('public with its run.app URL still on (internal VPC traffic reaches it without identity) fails', async () => {
    const f = messages(
      await findings(
        { search: { access: 'public', domain: 'search.example.com' } } as Partial<RawStackConfig>,
        rewrite(isSearch, (a) => ({ props: { ...a.props, defaultUriDisabled: undefined }, opts: a.opts })),
      ),
    );
    expect(f).toEqual([expect.stringMatching(/^\[exposure\] service iss-search: its invoker check is off and its run\.app URL is on: .*defaultUriDisabled/)]);
  });

  test("IAP without the IAP agent's invoker grant fails", async () => {
    const f = messages(
      await findings(
        { search: { access: 'iap', iapMembers: ['group:team@example.com'] } } as Partial<RawStackConfig>,
        rewrite(
          (a) => a.type === 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember' && a.name.endsWith('iap-agent-invoker'),
          (a) => ({ props: { ...a.props, role: 'roles/run.viewer' }, opts: a.opts }),
        ),
      ),
    );
    expect(f).toEqual([
      expect.stringMatching(
        /^\[exposure\] service iss-search is behind IAP, but serviceAccount:service-123456789012@gcp-sa-iap\.iam\.gserviceaccount\.com .* holds no run\.routes\.invoke/,
      ),
    ]);
  });

  test('the default search service is private: invoker check on, no allUsers, not behind IAP', async () => {
    const all = await buildStack({});
    const [search] = ofType(all, 'gcp:cloudrunv2/service:Service');
    expect(search!.inputs).toMatchObject({ invokerIamDisabled: false, iapEnabled: false, ingress: 'INGRESS_TRAFFIC_ALL' });
    const members = [
      ...ofType(all, 'gcp:cloudrunv2/serviceIamMember:ServiceIamMember'),
      ...ofType(all, 'gcp:iap/webCloudRunServiceIamMember:WebCloudRunServiceIamMember'),
    ].map((g) => g.inputs.member);
    expect(members.filter((m) => /^all(Authenticated)?Users$/.test(m))).toEqual([]);
  });
});

describe('a new cloud call without a grant makes the check fail', () => {
  test.each<[string, Parameters<typeof findings>[2], RegExp]>([
    [
      'GCS: the embed job writing the models bucket',
      { extraCalls: { embedJob: [{ adapter: 'GcsBlobStore', method: 'write', on: { bucket: { kind: 'bucket', env: 'MODELS_BUCKET' } }, why: 'new call' }] } },
      /^\[permissions\] embedJob .*GcsBlobStore\.write \(new call\) needs storage\.objects\.create on bucket iss-test-project-iss-models/,
    ],
    [
      'Pub/Sub: the embed job publishing to image-events',
      {
        extraCalls: {
          embedJob: [{ adapter: 'PubSubEventBus', method: 'publish', on: { topic: { kind: 'topic', env: 'TOPIC_IMAGE_EVENTS' } }, why: 'new call' }],
        },
      },
      /^\[permissions\] embedJob .*PubSubEventBus\.publish \(new call\) needs pubsub\.topics\.publish on topic iss-image-events/,
    ],
    [
      'Cloud Run: startRetraining starting the reindex job itself',
      {
        extraCalls: {
          startRetraining: [{ adapter: 'CloudRunJobLauncher', method: 'run', on: { runJob: { kind: 'runJob', env: 'REINDEX_JOB_NAME' } }, why: 'new call' }],
        },
      },
      /^\[permissions\] startRetraining .*CloudRunJobLauncher\.run \(new call\) needs run\.executions\.list on runJob iss-reindex/,
    ],
    [
      'Vertex AI: the trainer listing custom jobs',
      { extraCalls: { retrainJob: [{ adapter: 'VertexJobLauncher', method: 'running', on: {}, why: 'new call' }] } },
      /^\[permissions\] retrainJob .*VertexJobLauncher\.running \(new call\) needs aiplatform\.customJobs\.list on the project/,
    ],
    [
      'a resource the workload is not configured with',
      {
        extraCalls: {
          search: [{ adapter: 'PubSubEventBus', method: 'publish', on: { topic: { kind: 'topic', env: 'TOPIC_IMAGE_EVENTS' } }, why: 'new call' }],
        },
      },
      /^\[permissions\] search: PubSubEventBus\.publish needs pubsub\.topics\.publish, but TOPIC_IMAGE_EVENTS is not in its environment/,
    ],
  ])('%s', async (_name, extra, expected) => {
    expect(messages(await findings({}, undefined, extra))).toContainEqual(expect.stringMatching(expected));
  });
});

test('switching dispatchEmbed to the pull backlog probe without the subscriber grant is found', async () => {
  const f = messages(
    await findings(
      {},
      rewrite(
        (a) => a.type === 'gcp:cloudfunctionsv2/function:Function' && a.props.name === 'iss-dispatch-embed',
        (a) => ({
          props: {
            ...a.props,
            serviceConfig: pulumi
              .output(a.props.serviceConfig)
              .apply((c: Record<string, any>) => ({ ...c, environmentVariables: { ...c.environmentVariables, BACKLOG_PROBE: 'pull' } })),
          },
          opts: a.opts,
        }),
      ),
    ),
  );
  expect(f).toEqual([
    expect.stringMatching(
      /^\[permissions\] dispatchEmbed .*PullBacklog\.backlog .*needs pubsub\.subscriptions\.consume on subscription iss-image-events-embed/,
    ),
  ]);
});

describe('least privilege and first-deploy policies', () => {
  let all: RecordedResource[];
  beforeAll(async () => {
    all = await buildStack({});
  });

  test('security review 4: with embed.imagePrefix, the search service’s create grant (conditioned on the prefix) covers what its signed URLs create', async () => {
    expect(messages(await findings({ embed: { imagePrefix: 'incoming/' } } as Partial<RawStackConfig>))).toEqual([]);
    // The need is checked under the prefix: a grant on another prefix does not cover it.
    const other = rewrite(
      (a) => a.type === 'gcp:storage/bucketIAMMember:BucketIAMMember' && a.name === 'search-images-creator',
      (a) => ({
        props: {
          ...a.props,
          condition: {
            ...a.props.condition,
            expression: pulumi.output(a.props.condition.expression).apply((e: string) => e.replaceAll('incoming/', 'elsewhere/')),
          },
        },
        opts: a.opts,
      }),
    );
    expect(messages(await findings({ embed: { imagePrefix: 'incoming/' } } as Partial<RawStackConfig>, other))).toContainEqual(
      expect.stringMatching(
        /^\[permissions\] search .*GcsSignedUploads\.sign .*needs storage\.objects\.create on bucket iss-test-project-iss-images \(objects under incoming\/\)/,
      ),
    );
  });

  test('query vectors: a drift grant whose condition admits no listing, or a search grant without create, is found', async () => {
    const f = messages(
      await findings(
        {},
        rewrite(
          (a) => a.type === 'gcp:storage/bucketIAMMember:BucketIAMMember' && (a.name === 'drift-queries-viewer' || a.name === 'search-query-sample-creator'),
          (a) =>
            a.name === 'drift-queries-viewer'
              ? {
                  // Objects by name only: the list request (checked on the bucket) is no longer admitted.
                  props: {
                    ...a.props,
                    condition: { ...a.props.condition, expression: pulumi.output(a.props.condition.expression).apply((e: string) => e.split(' || ')[0]) },
                  },
                  opts: a.opts,
                }
              : { props: { ...a.props, role: 'roles/storage.objectViewer' }, opts: a.opts },
        ),
      ),
    );
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[permissions\] driftJob .*GcsBlobStore\.list .*needs storage\.objects\.list on bucket iss-test-project-iss-features \(objects under query-vectors\/\)/,
      ),
    );
    expect(f).not.toContainEqual(expect.stringMatching(/^\[permissions\] driftJob .*GcsBlobStore\.read /));
    expect(f).toContainEqual(
      expect.stringMatching(
        /^\[permissions\] search .*GcsBlobStore\.writeNew .*needs storage\.objects\.create on bucket iss-test-project-iss-features \(objects under query-vectors\/\)/,
      ),
    );
  });

  test('security review 10: the drift starter runs its job without overrides, so roles/run.jobsExecutor suffices', async () => {
    const starter = ofType(all, 'gcp:cloudrunv2/jobIamMember:JobIamMember').filter(
      (g) => g.inputs.member === 'serviceAccount:iss-drift-start@iss-test-project.iam.gserviceaccount.com',
    );
    expect(starter.map((g) => g.inputs.role).sort()).toEqual(['roles/run.jobsExecutor', 'roles/run.viewer']);
    // Were it to pass overrides again, jobsExecutor would not do: the check names the missing permission.
    const f = messages(
      await findings({}, undefined, {
        extraCalls: {
          startDriftCheck: [
            { adapter: 'CloudRunJobLauncher', method: 'run', on: { runJob: { kind: 'runJob', env: 'DRIFT_JOB_NAME' } }, why: 'with overrides' },
          ],
        },
      }),
    );
    expect(f).toContainEqual(expect.stringMatching(/^\[permissions\] startDriftCheck .*needs run\.jobs\.runWithOverrides on runJob iss-drift-check/));
  });

  test('10b. no identity holds a broad predefined role on the project where a narrow one exists', () => {
    const projectRoles = ofType(all, 'gcp:projects/iAMMember:IAMMember').map((g) => g.inputs.role);
    expect(projectRoles).not.toContain('roles/aiplatform.user');
    expect(projectRoles).not.toContain('roles/artifactregistry.writer');
    const custom = ofType(all, 'gcp:projects/iAMCustomRole:IAMCustomRole');
    expect(custom.map((r) => r.inputs.permissions.sort())).toEqual([
      ['aiplatform.customJobs.create', 'aiplatform.customJobs.get', 'aiplatform.customJobs.list'],
    ]);
  });

  test('10c. every grant on the features bucket is limited to the prefixes the workload uses', () => {
    const features = ofType(all, 'gcp:storage/bucketIAMMember:BucketIAMMember').filter((g) => g.inputs.bucket === 'iss-test-project-iss-features');
    expect(features.length).toBeGreaterThan(6);
    for (const g of features)
      expect(g.inputs.condition?.expression, g.name).toMatch(/objects\/(features|rejected|feedback|query-vectors|embeddings\/shards)\//);
  });

  test('10d. two stacks in one project use different Vertex AI job display names', async () => {
    const name = (rs: RecordedResource[]) =>
      ofType(rs, 'gcp:cloudfunctionsv2/function:Function').find((f) => f.inputs.name.endsWith('start-retraining'))!.inputs.serviceConfig.environmentVariables
        .RETRAIN_JOB_DISPLAY_NAME;
    const other = await buildStack({ prefix: 'dev' });
    expect(name(all)).toBe('iss-retrain');
    expect(name(other)).toBe('dev-retrain');
  });

  test('9. images are never built on `pulumi preview`', () => {
    const images = ofType(all, 'docker-build:index:Image');
    expect(images).toHaveLength(3);
    for (const i of images) expect(i.inputs.buildOnPreview, i.name).toBe(false);
  });

  test('8. functions run compiled JavaScript: no tsx loader at cold start', () => {
    for (const f of ofType(all, 'gcp:cloudfunctionsv2/function:Function')) {
      expect(f.inputs.serviceConfig.environmentVariables.NODE_OPTIONS ?? '', f.name).not.toMatch(/tsx/);
    }
    for (const j of [
      ...ofType(all, 'gcp:cloudrunv2/job:Job').map((x) => x.inputs.template.template),
      ...ofType(all, 'gcp:cloudrunv2/service:Service').map((x) => x.inputs.template),
    ]) {
      expect(j.containers[0].args.join(' ')).not.toMatch(/tsx|\.ts$/);
    }
  });
});

import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import { cloudRunEnv, plainEnv, type EnvValues } from '../env.js';
import { cloudRunJobMember, grantOnBucket, grantOnSubscription, grantOnTopic } from '../grants.js';
import { grantOnProject, serviceAccount, serviceAccountMember } from '../iam.js';
import { workloadLabels, type Placement } from '../placement.js';
import { containerCommand } from '../packaging.js';
import { NodeFunction } from './node-function.js';

export interface EmbeddingArgs extends Placement {
  settings: ParsedStackConfig['embed'];
  deletionProtection: boolean;
  /** Embed job image (CUDA runtime + node; runs on CPU too). */
  image: pulumi.Input<string>;
  buckets: { images: pulumi.Input<string>; models: pulumi.Input<string>; features: pulumi.Input<string> };
  imageEventsSubscription: pulumi.Input<string>;
  /** Dead-letter topic of image-events: the job dead-letters unusable payloads itself. */
  imageEventsDeadLetterTopic: pulumi.Input<string>;
  embeddingsTopic: pulumi.Input<string>;
  sourcesBucket: pulumi.Input<string>;
  buildServiceAccountId: pulumi.Input<string>;
  /** Env values shared by all workloads; EMBED_JOB_NAME and ONNX_EXECUTION_PROVIDER are added here. */
  env: EnvValues;
}

/**
 * Embedding at scale: a Cloud Run job whose tasks each pull a share of the image-events backlog,
 * decode, run the ONNX model in batches (CUDA on an NVIDIA L4, or CPU with `embed.gpu: false`)
 * and publish embeddings. A Scheduler tick calls `dispatchEmbed`, which starts the job only when
 * the subscription has a backlog, so an idle pipeline costs no GPU time.
 */
export class Embedding extends pulumi.ComponentResource {
  public readonly job: gcp.cloudrunv2.Job;
  public readonly dispatch: NodeFunction;
  public readonly tick: gcp.cloudscheduler.Job;
  public readonly jobName: string;

  constructor(name: string, args: EmbeddingArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:embedding:GpuJob', name, {}, opts);
    const parent = { parent: this };
    const s = args.settings;
    this.jobName = `${args.prefix}-embed`;

    const runner = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'embed',
        project: args.project,
        purpose: 'Embed job: reads images and models, writes feature shards, pulls image events, publishes embeddings',
      },
      parent,
    );
    const member = serviceAccountMember(runner.email);
    const grants = [
      grantOnBucket(`${name}-images-viewer`, args.buckets.images, { role: 'roles/storage.objectViewer', member }, parent),
      grantOnBucket(`${name}-models-viewer`, args.buckets.models, { role: 'roles/storage.objectViewer', member }, parent),
      // Base embeddings, embedding shards sent by reference, rejection records: each prefix alone.
      ...(['features/', 'embeddings/shards/', 'rejected/'] as const).map((prefix) =>
        grantOnBucket(`${name}-features-user-${prefix.split('/')[0]}`, args.buckets.features, { role: 'roles/storage.objectUser', member, prefix }, parent),
      ),
      grantOnSubscription(
        `${name}-image-events-subscriber`,
        args.project,
        args.imageEventsSubscription,
        {
          role: 'roles/pubsub.subscriber',
          member,
        },
        parent,
      ),
      grantOnTopic(`${name}-embeddings-publisher`, args.project, args.embeddingsTopic, { role: 'roles/pubsub.publisher', member }, parent),
      grantOnTopic(
        `${name}-dead-letter-publisher`,
        args.project,
        args.imageEventsDeadLetterTopic,
        {
          role: 'roles/pubsub.publisher',
          member,
        },
        parent,
      ),
    ];

    const env: EnvValues = { ...args.env, ONNX_EXECUTION_PROVIDER: s.gpu ? 'cuda' : 'cpu', EMBED_JOB_NAME: this.jobName };
    this.job = new gcp.cloudrunv2.Job(
      `${name}-job`,
      {
        project: args.project,
        location: args.region,
        name: this.jobName,
        labels: { ...workloadLabels(args.labels, 'embedJob'), accelerator: s.gpu ? s.gpuType : 'none' },
        deletionProtection: args.deletionProtection,
        template: {
          taskCount: s.taskCount,
          parallelism: s.parallelism,
          template: {
            serviceAccount: runner.email,
            timeout: s.taskTimeout,
            maxRetries: s.maxRetries,
            ...(s.gpu
              ? {
                  nodeSelector: { accelerator: s.gpuType },
                  // Jobs run GPUs without zonal redundancy (the quota that exists for jobs).
                  gpuZonalRedundancyDisabled: true,
                }
              : {}),
            containers: [
              {
                image: args.image,
                ...containerCommand('embed', 'jobs/embed/main.ts'),
                envs: cloudRunEnv('embedJob', env),
                resources: {
                  limits: {
                    cpu: String(s.cpu),
                    memory: s.memory,
                    ...(s.gpu ? { 'nvidia.com/gpu': '1' } : {}),
                  },
                },
              },
            ],
          },
        },
      },
      { ...parent, dependsOn: grants },
    );

    const dispatcher = serviceAccount(
      `${name}-dispatch-sa`,
      {
        prefix: args.prefix,
        suffix: 'dispatch',
        project: args.project,
        purpose: 'dispatchEmbed: reads the image-events backlog and starts the embed job',
      },
      parent,
    );
    const dispatcherMember = serviceAccountMember(dispatcher.email);
    cloudRunJobMember(
      `${name}-dispatch-runs-job`,
      {
        project: args.project,
        location: args.region,
        job: this.job.name,
        // With overrides: the dispatcher sizes taskCount to the backlog.
        role: 'roles/run.jobsExecutorWithOverrides',
        member: dispatcherMember,
      },
      parent,
    );
    // The launcher lists the job's executions first, so that one runs at a time.
    cloudRunJobMember(
      `${name}-dispatch-lists-executions`,
      {
        project: args.project,
        location: args.region,
        job: this.job.name,
        role: 'roles/run.viewer',
        member: dispatcherMember,
      },
      parent,
    );
    // The backlog (num_undelivered_messages) is a Cloud Monitoring metric: no resource-level read
    // exists. Nothing on the subscription: BACKLOG_PROBE stays unset (the Monitoring probe).
    grantOnProject(
      `${name}-dispatch-reads-metrics`,
      {
        project: args.project,
        role: 'roles/monitoring.viewer',
        member: dispatcherMember,
      },
      parent,
    );

    const scheduler = serviceAccount(
      `${name}-tick-sa`,
      {
        prefix: args.prefix,
        suffix: 'embed-tick',
        project: args.project,
        purpose: 'Cloud Scheduler: calls dispatchEmbed with an OIDC token',
      },
      parent,
    );

    this.dispatch = new NodeFunction(
      `${name}-dispatch`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        target: 'dispatchEmbed',
        functionName: `${args.prefix}-dispatch-embed`,
        sourcesBucket: args.sourcesBucket,
        serviceAccountEmail: dispatcher.email,
        buildServiceAccountId: args.buildServiceAccountId,
        environment: plainEnv('dispatchEmbed', env),
        timeoutSeconds: 60,
        maxInstances: 1,
        invokers: [serviceAccountMember(scheduler.email)],
      },
      parent,
    );

    this.tick = new gcp.cloudscheduler.Job(
      `${name}-tick`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-embed-dispatch`,
        description: 'Starts the embed job when image events are waiting',
        schedule: s.dispatchSchedule,
        timeZone: 'Etc/UTC',
        attemptDeadline: '60s',
        retryConfig: { retryCount: 0 },
        httpTarget: {
          uri: this.dispatch.uri,
          httpMethod: 'POST',
          oidcToken: { serviceAccountEmail: scheduler.email, audience: this.dispatch.uri },
        },
      },
      parent,
    );

    this.registerOutputs({ job: this.job.name, dispatch: this.dispatch.uri, tick: this.tick.name });
  }
}

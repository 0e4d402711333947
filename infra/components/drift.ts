import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { plainEnv, type EnvValues } from '../env.js';
import { cloudRunJobMember, grantOnBucket, grantOnTopic } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import { containerCommand } from '../packaging.js';
import { cpuJob, type TrainerWorkloadArgs } from './cpu-job.js';
import { NodeFunction } from './node-function.js';

export interface DriftArgs extends TrainerWorkloadArgs {
  /** Cron of the check (default every 6 hours, UTC). */
  schedule?: string;
}

/**
 * The scheduled drift check (README "Drift"): a Scheduler tick calls `startDriftCheck`, which
 * starts the drift job (jobs/drift-check in the trainer image — a function may not ship the model
 * runtime) unless it is running. The job compares recent uploads, and the image queries the search
 * service sampled under query-vectors/, with the active model's profile,
 * checks Recall@1 on newly labelled images, and when that calls for it publishes a retrain request
 * with its reason to `retrain-requests` — where the retraining cron publishes, so the same
 * startRetraining → Vertex AI path follows. Each identity holds only what its step needs.
 */
export class Drift extends pulumi.ComponentResource {
  public readonly job: gcp.cloudrunv2.Job;
  public readonly start: NodeFunction;
  public readonly tick: gcp.cloudscheduler.Job;
  public readonly checker: gcp.serviceaccount.Account;

  constructor(name: string, args: DriftArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:drift:ScheduledCheck', name, {}, opts);
    const parent = { parent: this };

    this.checker = serviceAccount(
      `${name}-job-sa`,
      {
        prefix: args.prefix,
        suffix: 'drift',
        project: args.project,
        purpose: 'Drift check job: reads the registry, features and sampled queries, keeps its state, requests retraining',
      },
      parent,
    );
    const checkerMember = serviceAccountMember(this.checker.email);
    const grants = [
      // Reads the active model, its head and its drift profile.
      grantOnBucket(`${name}-models-viewer`, args.buckets.models, { role: 'roles/storage.objectViewer', member: checkerMember, prefix: 'models/' }, parent),
      // Its state (last report, requests made: the cooldown), replaced on every run: drift/ only.
      grantOnBucket(`${name}-state-user`, args.buckets.models, { role: 'roles/storage.objectUser', member: checkerMember, prefix: 'drift/' }, parent),
      // Recent uploads and newly labelled images: the stored base embeddings; nothing written there.
      grantOnBucket(
        `${name}-features-viewer`,
        args.buckets.features,
        { role: 'roles/storage.objectViewer', member: checkerMember, prefix: 'features/' },
        parent,
      ),
      // The image queries the search service sampled (query-vectors/): listed and read, never written.
      grantOnBucket(
        `${name}-queries-viewer`,
        args.buckets.features,
        { role: 'roles/storage.objectViewer', member: checkerMember, prefix: 'query-vectors/' },
        parent,
      ),
      // The retrain request with its reason.
      grantOnTopic(
        `${name}-requests-publisher`,
        args.project,
        args.retrainRequests.topic.name,
        { role: 'roles/pubsub.publisher', member: checkerMember },
        parent,
      ),
    ];

    const jobName = `${args.prefix}-drift-check`;
    const env: EnvValues = { ...args.env, DRIFT_JOB_NAME: jobName };
    this.job = cpuJob(
      `${name}-job`,
      {
        project: args.project,
        region: args.region,
        labels: args.labels,
        jobName,
        workload: 'driftJob',
        deletionProtection: args.deletionProtection,
        serviceAccount: this.checker.email,
        image: args.trainerImage,
        command: containerCommand('trainer', 'jobs/drift-check/main.ts'),
        env,
        timeout: '1800s',
        // The next tick checks again: a failed check is not retried in place.
        maxRetries: 0,
      },
      { ...parent, dependsOn: grants },
    );

    const starter = serviceAccount(
      `${name}-start-sa`,
      { prefix: args.prefix, suffix: 'drift-start', project: args.project, purpose: 'startDriftCheck: starts the drift check job' },
      parent,
    );
    const starterMember = serviceAccountMember(starter.email);
    const starterGrants = [
      // startDriftCheck runs the job with no overrides (the launcher then sends none): run.jobs.run is
      // enough (roles/run.jobsExecutor, cloud.google.com/run/docs/reference/iam/roles); it lists executions first (one at a time).
      cloudRunJobMember(
        `${name}-start-runs-job`,
        { project: args.project, location: args.region, job: this.job.name, role: 'roles/run.jobsExecutor', member: starterMember },
        parent,
      ),
      cloudRunJobMember(
        `${name}-start-lists-executions`,
        { project: args.project, location: args.region, job: this.job.name, role: 'roles/run.viewer', member: starterMember },
        parent,
      ),
    ];

    const scheduler = serviceAccount(
      `${name}-tick-sa`,
      { prefix: args.prefix, suffix: 'drift-tick', project: args.project, purpose: 'Cloud Scheduler: calls startDriftCheck with an OIDC token' },
      parent,
    );
    this.start = new NodeFunction(
      `${name}-start`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        target: 'startDriftCheck',
        functionName: `${args.prefix}-start-drift-check`,
        sourcesBucket: args.sourcesBucket,
        serviceAccountEmail: starter.email,
        buildServiceAccountId: args.buildServiceAccountId,
        environment: plainEnv('startDriftCheck', env),
        timeoutSeconds: 60,
        maxInstances: 1,
        invokers: [serviceAccountMember(scheduler.email)],
      },
      { ...parent, dependsOn: starterGrants },
    );

    this.tick = new gcp.cloudscheduler.Job(
      `${name}-tick`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-drift-check`,
        description: 'Checks the active model for drift; requests a retraining when it calls for one',
        schedule: args.schedule ?? '0 */6 * * *',
        timeZone: 'Etc/UTC',
        attemptDeadline: '60s',
        retryConfig: { retryCount: 0 },
        httpTarget: {
          uri: this.start.uri,
          httpMethod: 'POST',
          oidcToken: { serviceAccountEmail: scheduler.email, audience: this.start.uri },
        },
      },
      parent,
    );

    this.registerOutputs({ job: this.job.name, start: this.start.serviceName, tick: this.tick.name });
  }
}

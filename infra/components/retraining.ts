import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import { plainEnv, type EnvValues, type SecretIds } from '../env.js';
import { cloudRunJobMember, grantOnBucket, grantOnSecret, grantOnServiceAccount, grantOnTopic } from '../grants.js';
import { grantCustomRoleOnProject, serviceAccount, serviceAccountMember } from '../iam.js';
import { DeadLetteredSubscription } from './messaging.js';
import { containerCommand } from '../packaging.js';
import { cpuJob, type TrainerWorkloadArgs } from './cpu-job.js';
import { NodeFunction } from './node-function.js';
import { pushEndpoint, pushIdentity } from './push-delivery.js';

export interface RetrainingArgs extends TrainerWorkloadArgs {
  settings: ParsedStackConfig['retrain'];
  messaging: ParsedStackConfig['messaging'];
  opensearchSecrets: { ids: SecretIds; secrets: gcp.secretmanager.Secret[] };
  vpcConnector?: pulumi.Input<string>;
  pubsubServiceAgent: pulumi.Input<string>;
}

/**
 * Scheduled retraining: Scheduler publishes to retrain-requests on the configured cron; a
 * dead-lettered push subscription calls `startRetraining`, which creates a Vertex AI custom job
 * (trainer image, machine type, trainer account; env GCP_PROJECT, GCP_REGION, MODELS_BUCKET,
 * FEATURES_BUCKET, REINDEX_JOB_NAME; request args as `--key=value` flags). Reindexing into a
 * private cluster runs as a Cloud Run job on the VPC connector, which a Vertex AI job cannot use:
 * the trainer starts it after a promotion, so only the reindex job holds the OpenSearch secrets.
 */
export class Retraining extends pulumi.ComponentResource {
  public readonly cron: gcp.cloudscheduler.Job;
  public readonly start: NodeFunction;
  public readonly reindexJob: gcp.cloudrunv2.Job;
  public readonly trainer: gcp.serviceaccount.Account;

  constructor(name: string, args: RetrainingArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:retraining:Pipeline', name, {}, opts);
    const parent = { parent: this };
    const secretGrants = (prefix: string, member: pulumi.Input<string>) =>
      args.opensearchSecrets.secrets.map((secret, i) =>
        grantOnSecret(`${prefix}-secret-accessor-${i}`, args.project, secret.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
      );

    // The identity of the Vertex AI job: trains on stored features, writes new model versions.
    this.trainer = serviceAccount(
      `${name}-trainer-sa`,
      {
        prefix: args.prefix,
        suffix: 'trainer',
        project: args.project,
        purpose: 'Vertex AI retraining job: reads features, writes model versions to the registry',
      },
      parent,
    );
    const trainerMember = serviceAccountMember(this.trainer.email);
    // Registers candidates (files, manifest, metrics) and moves the active pointer.
    grantOnBucket(`${name}-trainer-models-user`, args.buckets.models, { role: 'roles/storage.objectUser', member: trainerMember }, parent);
    // Reads base embeddings and click feedback; writes nothing there.
    grantOnBucket(
      `${name}-trainer-features-viewer`,
      args.buckets.features,
      { role: 'roles/storage.objectViewer', member: trainerMember, prefix: 'features/' },
      parent,
    );
    grantOnBucket(
      `${name}-trainer-feedback-viewer`,
      args.buckets.features,
      { role: 'roles/storage.objectViewer', member: trainerMember, prefix: 'feedback/' },
      parent,
    );

    const reindexer = serviceAccount(
      `${name}-reindex-sa`,
      {
        prefix: args.prefix,
        suffix: 'reindex',
        project: args.project,
        purpose: 'Reindex job: re-projects stored features into a new index version and swaps the alias',
      },
      parent,
    );
    const reindexMember = serviceAccountMember(reindexer.email);
    const reindexGrants = [
      grantOnBucket(`${name}-reindex-models-viewer`, args.buckets.models, { role: 'roles/storage.objectViewer', member: reindexMember }, parent),
      grantOnBucket(
        `${name}-reindex-features-viewer`,
        args.buckets.features,
        { role: 'roles/storage.objectViewer', member: reindexMember, prefix: 'features/' },
        parent,
      ),
      ...secretGrants(`${name}-reindex`, reindexMember),
    ];
    const reindexJobName = `${args.prefix}-reindex`;
    this.reindexJob = cpuJob(
      `${name}-reindex-job`,
      {
        project: args.project,
        region: args.region,
        labels: args.labels,
        jobName: reindexJobName,
        workload: 'reindexJob',
        deletionProtection: args.deletionProtection,
        serviceAccount: reindexer.email,
        image: args.trainerImage,
        command: containerCommand('trainer', 'jobs/reindex/main.ts'),
        env: args.env,
        secrets: args.opensearchSecrets.ids,
        timeout: '7200s',
        maxRetries: 1,
        vpcConnector: args.vpcConnector,
      },
      { ...parent, dependsOn: reindexGrants },
    );

    // The trainer starts the reindex job (REINDEX_JOB_NAME) with the Cloud Run job launcher, which
    // lists executions (one at a time) and passes overrides: jobsExecutorWithOverrides, on this job only.
    cloudRunJobMember(
      `${name}-trainer-runs-reindex`,
      {
        project: args.project,
        location: args.region,
        job: this.reindexJob.name,
        role: 'roles/run.jobsExecutorWithOverrides',
        member: trainerMember,
      },
      parent,
    );
    cloudRunJobMember(
      `${name}-trainer-lists-reindex`,
      {
        project: args.project,
        location: args.region,
        job: this.reindexJob.name,
        role: 'roles/run.viewer',
        member: trainerMember,
      },
      parent,
    );

    if (args.settings.tune) {
      // Hyperparameter search (`iss:retrain.tune`): the trainer, run with `--tune=true`, creates a
      // Vertex AI hyperparameter tuning job whose trials run this same image as the trainer account
      // and report their metric the cloudml-hypertune way (shared/services/tuning.ts). Tuning jobs
      // have no resource-level IAM either: a custom role with the two permissions it uses.
      const tunerRole = new gcp.projects.IAMCustomRole(
        `${name}-tune-role`,
        {
          project: args.project,
          roleId: `${args.prefix.replace(/-/g, '_')}_retrain_tuner`,
          title: `${args.prefix} hyperparameter tuning`,
          description: 'Creates and watches the Vertex AI hyperparameter tuning jobs of scheduled retraining',
          permissions: ['aiplatform.hyperparameterTuningJobs.create', 'aiplatform.hyperparameterTuningJobs.get'],
        },
        parent,
      );
      grantCustomRoleOnProject(`${name}-trainer-tuning-jobs`, { project: args.project, role: tunerRole, member: trainerMember }, parent);
      // The trials run as the trainer account itself: creating them needs actAs on it.
      grantOnServiceAccount(`${name}-trainer-acts-as-itself`, this.trainer.name, { role: 'roles/iam.serviceAccountUser', member: trainerMember }, parent);
    }

    const starter = serviceAccount(
      `${name}-start-sa`,
      {
        prefix: args.prefix,
        suffix: 'retrain-start',
        project: args.project,
        purpose: 'startRetraining: creates the Vertex AI custom job that runs as the trainer account',
      },
      parent,
    );
    const starterMember = serviceAccountMember(starter.email);
    // Vertex AI custom jobs have no resource-level IAM, and roles/aiplatform.user holds 446
    // permissions: a custom role with the three the launcher uses, bound on the project.
    const starterRole = new gcp.projects.IAMCustomRole(
      `${name}-start-role`,
      {
        project: args.project,
        // Role ids allow letters, digits, _ and . only; a deleted id stays reserved for 7 days.
        roleId: `${args.prefix.replace(/-/g, '_')}_retrain_starter`,
        title: `${args.prefix} retraining starter`,
        description: 'Creates and lists the Vertex AI custom jobs of scheduled retraining',
        permissions: ['aiplatform.customJobs.create', 'aiplatform.customJobs.get', 'aiplatform.customJobs.list'],
      },
      parent,
    );
    const starterGrants = [
      grantCustomRoleOnProject(`${name}-start-vertex-jobs`, { project: args.project, role: starterRole, member: starterMember }, parent),
      // To create a job that runs as the trainer account.
      grantOnServiceAccount(`${name}-start-acts-as-trainer`, this.trainer.name, { role: 'roles/iam.serviceAccountUser', member: starterMember }, parent),
      // Malformed requests are published to `<retrain-requests>-dead-letter` with the reason.
      grantOnTopic(
        `${name}-start-dead-letter-publisher`,
        args.project,
        args.retrainRequests.deadLetterTopic.name,
        {
          role: 'roles/pubsub.publisher',
          member: starterMember,
        },
        parent,
      ),
    ];

    const pusher = pushIdentity(
      `${name}-push-sa`,
      {
        prefix: args.prefix,
        project: args.project,
        suffix: 'push-retrain',
        purpose: 'Pub/Sub push from retrain-requests to startRetraining',
        pubsubServiceAgent: args.pubsubServiceAgent,
      },
      parent,
    );

    const env: EnvValues = {
      ...args.env,
      TRAINER_IMAGE: args.trainerImage,
      TRAINER_MACHINE_TYPE: args.settings.machineType,
      TRAINER_SERVICE_ACCOUNT: this.trainer.email,
      REINDEX_JOB_NAME: reindexJobName,
      // Vertex AI jobs are found by display name: the stack prefix keeps two stacks in one project apart.
      RETRAIN_JOB_DISPLAY_NAME: `${args.prefix}-retrain`,
    };
    this.start = new NodeFunction(
      `${name}-start`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        target: 'startRetraining',
        functionName: `${args.prefix}-start-retraining`,
        sourcesBucket: args.sourcesBucket,
        serviceAccountEmail: starter.email,
        buildServiceAccountId: args.buildServiceAccountId,
        // No secrets and no VPC connector: it only calls the Vertex AI API.
        environment: plainEnv('startRetraining', env),
        timeoutSeconds: 120,
        maxInstances: 1,
        invokers: [serviceAccountMember(pusher.email)],
      },
      { ...parent, dependsOn: starterGrants },
    );

    new DeadLetteredSubscription(
      `${name}-requests-start`,
      {
        project: args.project,
        subscriptionName: `${args.prefix}-retrain-requests-start`,
        source: args.retrainRequests,
        settings: args.messaging,
        pubsubServiceAgent: args.pubsubServiceAgent,
        labels: args.labels,
        push: {
          endpoint: pushEndpoint(this.start.uri, args.project, args.retrainRequests.topic.name),
          serviceAccountEmail: pusher.email,
          audience: this.start.uri,
        },
      },
      parent,
    );

    this.cron = new gcp.cloudscheduler.Job(
      `${name}-cron`,
      {
        project: args.project,
        region: args.region,
        name: `${args.prefix}-retrain`,
        description: 'Asks for a retraining run',
        schedule: args.settings.schedule,
        timeZone: 'Etc/UTC',
        pubsubTarget: {
          topicName: args.retrainRequests.topic.id,
          data: Buffer.from(JSON.stringify({ reason: 'scheduled', args: scheduledArgs(args.settings) })).toString('base64'),
          attributes: { source: 'cloud-scheduler' },
        },
      },
      parent,
    );

    this.registerOutputs({ cron: this.cron.name, start: this.start.serviceName, reindexJob: this.reindexJob.name });
  }
}

/**
 * The job flags a scheduled request carries: `args` for one retraining; with `tune`, the flags of a
 * tuning run (jobs/retrain `--tune=true`), keeping only the `args` a study takes (seed, margin, heldOut).
 */
export function scheduledArgs(settings: ParsedStackConfig['retrain']): Record<string, string> {
  const { tune, args } = settings;
  if (!tune) return { ...args };
  const shared = Object.fromEntries(Object.entries(args).filter(([k]) => k === 'seed' || k === 'margin' || k === 'heldOut'));
  return {
    ...shared,
    tune: 'true',
    trials: String(tune.trials),
    parallel: String(tune.parallel),
    algorithm: tune.algorithm,
    ...(tune.space ? { space: JSON.stringify(tune.space) } : {}),
  };
}

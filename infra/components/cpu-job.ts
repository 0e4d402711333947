import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { cloudRunEnv, type EnvValues, type SecretIds, type Workload } from '../env.js';
import { workloadLabels, type Placement } from '../placement.js';
import type { DeadLetteredTopic } from './messaging.js';

/** What the components around the trainer image (retraining, drift check) are given alike. */
export interface TrainerWorkloadArgs extends Placement {
  deletionProtection: boolean;
  /** The trainer image: the model runtime, the retrainer and the jobs that use them. */
  trainerImage: pulumi.Input<string>;
  /** Where retraining is requested (by the Scheduler cron and by the drift check). */
  retrainRequests: DeadLetteredTopic;
  buckets: { models: pulumi.Input<string>; features: pulumi.Input<string> };
  /** Where function sources are uploaded, and the account Cloud Build runs as. */
  sourcesBucket: pulumi.Input<string>;
  buildServiceAccountId: pulumi.Input<string>;
  env: EnvValues;
}

export interface CpuJobArgs extends Pick<Placement, 'project' | 'region' | 'labels'> {
  /** The Cloud Run job's name (the launchers find it by this name). */
  jobName: pulumi.Input<string>;
  /** Whose environment variables (env.ts) and `workload` label the job carries. */
  workload: Workload;
  deletionProtection: boolean;
  serviceAccount: pulumi.Input<string>;
  image: pulumi.Input<string>;
  /** Container command of the entry in that image (packaging.ts containerCommand). */
  command: { commands: string[]; args: string[] };
  env: EnvValues;
  secrets?: SecretIds;
  /** Task timeout, e.g. `1800s`. */
  timeout: string;
  maxRetries: number;
  /** Serverless VPC Access connector, for jobs that reach a private OpenSearch. */
  vpcConnector?: pulumi.Input<string>;
  /** Runs the job once at `pulumi up` (and again when the token changes), waiting for it to succeed. */
  runExecutionToken?: string;
}

/**
 * A single-task Cloud Run job on 2 CPUs / 4 GiB from the trainer image: the model bootstrap, the
 * reindex and the drift check. (The embed job has its own shape: GPU, tasks in parallel.)
 */
export function cpuJob(name: string, args: CpuJobArgs, opts?: pulumi.CustomResourceOptions): gcp.cloudrunv2.Job {
  return new gcp.cloudrunv2.Job(
    name,
    {
      project: args.project,
      location: args.region,
      name: args.jobName,
      labels: workloadLabels(args.labels, args.workload),
      deletionProtection: args.deletionProtection,
      ...(args.runExecutionToken !== undefined ? { runExecutionToken: args.runExecutionToken } : {}),
      template: {
        taskCount: 1,
        template: {
          serviceAccount: args.serviceAccount,
          timeout: args.timeout,
          maxRetries: args.maxRetries,
          ...(args.vpcConnector ? { vpcAccess: { connector: args.vpcConnector, egress: 'PRIVATE_RANGES_ONLY' } } : {}),
          containers: [
            {
              image: args.image,
              ...args.command,
              envs: cloudRunEnv(args.workload, args.env, args.secrets),
              resources: { limits: { cpu: '2', memory: '4Gi' } },
            },
          ],
        },
      },
    },
    opts,
  );
}

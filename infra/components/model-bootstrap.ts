import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import type { EnvValues } from '../env.js';
import { grantOnBucket } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import type { Placement } from '../placement.js';
import { cpuJob } from './cpu-job.js';
import { propagationWait } from './service-agents.js';

/** The bootstrap job's name; embed and search name it in their "no model yet" errors. */
export const bootstrapJobName = (prefix: string) => `${prefix}-bootstrap-model`;

export interface ModelBootstrapArgs extends Placement {
  settings: ParsedStackConfig['model'];
  deletionProtection: boolean;
  /** Trainer image: it holds the offline converter (tfjs + the nsfwjs package). */
  image: pulumi.Input<string>;
  /** Container command of the bootstrap entry in that image. */
  command: { commands: string[]; args: string[] };
  modelsBucket: pulumi.Input<string>;
  env: EnvValues;
}

/**
 * Registers the first model, once, during `pulumi up`: the only workload with write access to the
 * registry besides the trainer. Search and embedding only read it, so on a fresh project nothing
 * else could create a model (the search container used to exit before listening, failing the
 * service's creation). The job is idempotent: with an active model it does nothing. The execution
 * token makes `pulumi up` run it and wait for it to succeed; changing `iss:model.initial` runs it
 * again (it still leaves an existing active model alone: promote a pulled model with the CLI).
 */
export class ModelBootstrap extends pulumi.ComponentResource {
  public readonly job: gcp.cloudrunv2.Job;

  constructor(name: string, args: ModelBootstrapArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:model:Bootstrap', name, {}, opts);
    const parent = { parent: this };
    const runner = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'bootstrap',
        project: args.project,
        purpose: 'Bootstrap job: registers and activates the first model in the registry',
      },
      parent,
    );
    const member = serviceAccountMember(runner.email);
    const canWrite = grantOnBucket(`${name}-models-user`, args.modelsBucket, { role: 'roles/storage.objectUser', member, prefix: 'models/' }, parent);
    // The execution starts right after the grant: wait until Cloud Storage honours it.
    const settled = propagationWait(`${name}-iam-settled`, [canWrite], parent);

    this.job = cpuJob(
      `${name}-job`,
      {
        project: args.project,
        region: args.region,
        labels: args.labels,
        jobName: bootstrapJobName(args.prefix),
        workload: 'bootstrapModel',
        deletionProtection: args.deletionProtection,
        runExecutionToken: `initial-${args.settings.initial}`,
        serviceAccount: runner.email,
        image: args.image,
        command: args.command,
        env: { ...args.env, INITIAL_MODEL: args.settings.initial },
        timeout: '1800s',
        maxRetries: 2,
      },
      { ...parent, dependsOn: [canWrite, settled] },
    );
    this.registerOutputs({ job: this.job.name });
  }
}

import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import { cloudRunEnv, type EnvValues } from '../env.js';
import { grantOnBucket } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import { workloadLabels, type Placement } from '../placement.js';
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

    this.job = new gcp.cloudrunv2.Job(
      `${name}-job`,
      {
        project: args.project,
        location: args.region,
        name: bootstrapJobName(args.prefix),
        labels: workloadLabels(args.labels, 'bootstrapModel'),
        deletionProtection: args.deletionProtection,
        runExecutionToken: `initial-${args.settings.initial}`,
        template: {
          taskCount: 1,
          template: {
            serviceAccount: runner.email,
            timeout: '1800s',
            maxRetries: 2,
            containers: [
              {
                image: args.image,
                ...args.command,
                envs: cloudRunEnv('bootstrapModel', { ...args.env, INITIAL_MODEL: args.settings.initial }),
                resources: { limits: { cpu: '2', memory: '4Gi' } },
              },
            ],
          },
        },
      },
      { ...parent, dependsOn: [canWrite, settled] },
    );
    this.registerOutputs({ job: this.job.name });
  }
}

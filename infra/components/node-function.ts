import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { cloudRunServiceMember } from '../grants.js';
import { grantOnProject, serviceAccount, serviceAccountMember } from '../iam.js';
import { functionArchive, sourceDigest, type FunctionTarget } from '../function-source.js';
import { workloadLabels, type Placement } from '../placement.js';

export interface NodeFunctionArgs extends Placement {
  /** Functions Framework target; also picks the module the archive starts (FUNCTION_MODULES). */
  target: FunctionTarget;
  /** Physical name of the function (and of its Cloud Run service). */
  functionName: string;
  /** Bucket holding the source archives. */
  sourcesBucket: pulumi.Input<string>;
  /** Runtime identity. */
  serviceAccountEmail: pulumi.Input<string>;
  /** Identity Cloud Build uses to build the function. */
  buildServiceAccountId: pulumi.Input<string>;
  /** Plain environment variables (the workload's list from env.ts). */
  environment: Record<string, pulumi.Input<string>>;
  /** Secret Manager backed variables. */
  secretEnvironment?: pulumi.Input<gcp.types.input.cloudfunctionsv2.FunctionServiceConfigSecretEnvironmentVariable>[];
  /** Serverless VPC Access connector for private endpoints (OpenSearch VM). */
  vpcConnector?: pulumi.Input<string>;
  memory?: string;
  /** vCPUs per instance (default: derived from memory); serving several requests at once needs at least 1. */
  cpu?: string;
  /** Requests one instance serves at once (default 1). */
  concurrency?: number;
  timeoutSeconds?: number;
  maxInstances?: number;
  /** Accounts allowed to invoke (Scheduler, Eventarc, Pub/Sub push): run.invoker on the service. */
  invokers?: pulumi.Input<string>[];
}

/**
 * A Cloud Functions (gen2) deployment of one functions-framework target from this repository.
 * Every function is HTTP-triggered with internal-only ingress: Eventarc, Pub/Sub push and Cloud
 * Scheduler deliver to it with OIDC tokens of accounts given run.invoker on the service.
 */
export class NodeFunction extends pulumi.ComponentResource {
  public readonly function: gcp.cloudfunctionsv2.Function;
  /** Name of the underlying Cloud Run service (for IAM and Eventarc destinations). */
  public readonly serviceName: pulumi.Output<string>;
  public readonly uri: pulumi.Output<string>;

  constructor(name: string, args: NodeFunctionArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:functions:NodeFunction', name, {}, opts);

    const source = new gcp.storage.BucketObject(
      `${name}-source`,
      {
        bucket: args.sourcesBucket,
        // The digest in the name makes a code change a new object, which redeploys the function.
        name: `functions/${args.target}-${sourceDigest(args.target)}.zip`,
        source: functionArchive(args.target),
      },
      { parent: this },
    );

    this.function = new gcp.cloudfunctionsv2.Function(
      `${name}-function`,
      {
        project: args.project,
        location: args.region,
        name: args.functionName,
        labels: workloadLabels(args.labels, args.target),
        buildConfig: {
          runtime: 'nodejs22',
          entryPoint: args.target,
          serviceAccount: args.buildServiceAccountId,
          source: { storageSource: { bucket: args.sourcesBucket, object: source.name } },
        },
        serviceConfig: {
          serviceAccountEmail: args.serviceAccountEmail,
          availableMemory: args.memory ?? '512Mi',
          availableCpu: args.cpu,
          maxInstanceRequestConcurrency: args.concurrency,
          timeoutSeconds: args.timeoutSeconds ?? 300,
          maxInstanceCount: args.maxInstances ?? 10,
          ingressSettings: 'ALLOW_INTERNAL_ONLY',
          allTrafficOnLatestRevision: true,
          // The archive is compiled JavaScript (infra/packaging.ts): no loader at cold start; the
          // source maps make stack traces name the TypeScript files (≈ 20–60 ms per cold start).
          environmentVariables: { ...args.environment, NODE_OPTIONS: '--enable-source-maps' },
          secretEnvironmentVariables: args.secretEnvironment,
          vpcConnector: args.vpcConnector,
          vpcConnectorEgressSettings: args.vpcConnector ? 'PRIVATE_RANGES_ONLY' : undefined,
        },
      },
      { parent: this },
    );

    // serviceConfig.service is the full path projects/P/locations/L/services/S; Eventarc destinations,
    // run.invoker bindings and log filters (resource.labels.service_name) want the name S.
    this.serviceName = this.function.serviceConfig.apply((c) => (c?.service ?? args.functionName).split('/').pop()!);
    this.uri = this.function.url;

    (args.invokers ?? []).forEach((member, i) =>
      cloudRunServiceMember(
        `${name}-invoker-${i}`,
        {
          project: args.project,
          location: args.region,
          service: this.serviceName,
          role: 'roles/run.invoker',
          member,
        },
        { parent: this },
      ),
    );

    this.registerOutputs({ serviceName: this.serviceName, uri: this.uri });
  }
}

export interface FunctionBuilderArgs extends Placement {
  sourcesBucket: pulumi.Input<string>;
}

/**
 * The identity Cloud Build uses for function builds. Without one, builds run as the Compute
 * default account, which new projects no longer give any role.
 */
export class FunctionBuilder extends pulumi.ComponentResource {
  public readonly account: gcp.serviceaccount.Account;

  constructor(name: string, args: FunctionBuilderArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:functions:Builder', name, {}, opts);
    const parent = { parent: this };
    this.account = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'fn-build',
        project: args.project,
        purpose: 'Builds the Cloud Functions from their source archives',
      },
      parent,
    );
    const member = serviceAccountMember(this.account.email);
    // Google's build service account page (cloud.google.com/functions/docs/securing/build-custom-sa):
    // the build reads the source copied to gcf-v2-sources-<number>-<region>, pushes to gcf-artifacts
    // and writes logs; both are created by Google on the first deployment, so this is project-wide.
    // run.builder holds 6 permissions (no list, no delete of objects), against 78 for cloudbuild.builds.builder.
    grantOnProject(`${name}-builder`, { project: args.project, role: 'roles/run.builder', member }, parent);
    this.registerOutputs({ account: this.account.email });
  }
}

import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import { cloudRunEnv, type EnvValues, type SecretIds } from '../env.js';
import { grantOnBucket, grantOnSecret } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import { containerCommand } from '../packaging.js';
import { workloadLabels, type Placement } from '../placement.js';

export interface SearchArgs extends Placement {
  settings: ParsedStackConfig['search'];
  deletionProtection: boolean;
  image: pulumi.Input<string>;
  buckets: { images: pulumi.Input<string>; models: pulumi.Input<string>; features: pulumi.Input<string> };
  opensearchSecrets: { ids: SecretIds; secrets: gcp.secretmanager.Secret[] };
  vpcConnector?: pulumi.Input<string>;
  env: EnvValues;
}

/**
 * The search API and web page as a Cloud Run service. `search.public: true` turns the invoker
 * check off (anyone with the URL may search); otherwise callers need roles/run.invoker.
 */
export class Search extends pulumi.ComponentResource {
  public readonly service: gcp.cloudrunv2.Service;
  public readonly url: pulumi.Output<string>;

  constructor(name: string, args: SearchArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:search:Service', name, {}, opts);
    const parent = { parent: this };
    const s = args.settings;

    const runner = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'search',
        project: args.project,
        purpose: 'Search service: queries OpenSearch, loads the model, serves images, records feedback',
      },
      parent,
    );
    const member = serviceAccountMember(runner.email);
    const grants = [
      grantOnBucket(`${name}-images-viewer`, args.buckets.images, { role: 'roles/storage.objectViewer', member }, parent),
      grantOnBucket(`${name}-models-viewer`, args.buckets.models, { role: 'roles/storage.objectViewer', member }, parent),
      // Reads rejection records (rejected/) for the status page.
      grantOnBucket(`${name}-features-viewer`, args.buckets.features, { role: 'roles/storage.objectViewer', member, prefix: 'rejected/' }, parent),
      // Writes click feedback as new, uniquely named objects under feedback/: create is enough,
      // so the service can never overwrite or delete a feature shard or a rejection record.
      grantOnBucket(`${name}-features-creator`, args.buckets.features, { role: 'roles/storage.objectCreator', member, prefix: 'feedback/' }, parent),
      ...args.opensearchSecrets.secrets.map((secret, i) =>
        grantOnSecret(`${name}-secret-accessor-${i}`, args.project, secret.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
      ),
    ];

    this.service = new gcp.cloudrunv2.Service(
      `${name}-service`,
      {
        project: args.project,
        location: args.region,
        name: `${args.prefix}-search`,
        labels: workloadLabels(args.labels, 'search'),
        deletionProtection: args.deletionProtection,
        ingress: 'INGRESS_TRAFFIC_ALL',
        invokerIamDisabled: s.public,
        template: {
          serviceAccount: runner.email,
          scaling: { minInstanceCount: s.minInstances, maxInstanceCount: s.maxInstances },
          vpcAccess: args.vpcConnector ? { connector: args.vpcConnector, egress: 'PRIVATE_RANGES_ONLY' } : undefined,
          containers: [
            {
              image: args.image,
              ...containerCommand('search', 'functions/search-server.ts'),
              ports: { containerPort: 8080 },
              envs: cloudRunEnv('search', args.env, args.opensearchSecrets.ids),
              resources: { limits: { cpu: String(s.cpu), memory: s.memory }, cpuIdle: true, startupCpuBoost: true },
              // TCP, not HTTP: the probe must not depend on a route the service may rename.
              startupProbe: { tcpSocket: { port: 8080 }, periodSeconds: 5, failureThreshold: 24 },
            },
          ],
        },
      },
      { ...parent, dependsOn: grants },
    );
    this.url = this.service.uri;
    this.registerOutputs({ url: this.url });
  }
}

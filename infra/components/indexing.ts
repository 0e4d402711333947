import * as pulumi from '@pulumi/pulumi';
import type { ParsedStackConfig } from '../config.js';
import { functionSecretEnv, plainEnv, type EnvValues } from '../env.js';
import { grantOnBucket, grantOnSecret, grantOnTopic } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import type { Placement } from '../placement.js';
import { DeadLetteredSubscription, type DeadLetteredTopic } from './messaging.js';
import { NodeFunction } from './node-function.js';
import { PUSH_BATCH_MAX } from '../../shared/services/upsert-batcher.js';
import { OpenSearch } from './opensearch.js';
import { pushEndpoint, pushIdentity } from './push-delivery.js';

export interface IndexingArgs extends Placement {
  opensearch: ParsedStackConfig['opensearch'];
  messaging: ParsedStackConfig['messaging'];
  opensearchUrl?: string;
  opensearchUsername: pulumi.Input<string>;
  opensearchPassword: pulumi.Input<string>;
  embeddings: DeadLetteredTopic;
  imageEventsTopic: pulumi.Input<string>;
  /** Feature store: shards read, delete tombstones written, rejection records cleared. */
  featuresBucket: pulumi.Input<string>;
  sourcesBucket: pulumi.Input<string>;
  buildServiceAccountId: pulumi.Input<string>;
  pubsubServiceAgent: pulumi.Input<string>;
  env: EnvValues;
}

/**
 * The vector index and what keeps it current: OpenSearch (external or a private VM), and
 * `upsertVectors`, fed by a dead-lettered push subscription on `embeddings`.
 */
export class Indexing extends pulumi.ComponentResource {
  public readonly opensearch: OpenSearch;
  public readonly upsert: NodeFunction;
  public readonly subscription: DeadLetteredSubscription;

  constructor(name: string, args: IndexingArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:indexing:Indexing', name, {}, opts);
    const parent = { parent: this };

    this.opensearch = new OpenSearch(
      `${name}-opensearch`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        settings: args.opensearch,
        url: args.opensearchUrl,
        username: args.opensearchUsername,
        password: args.opensearchPassword,
      },
      parent,
    );

    const runner = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'upsert',
        project: args.project,
        purpose: 'upsertVectors: reads feature shards, writes OpenSearch and delete tombstones, re-queues stale events',
      },
      parent,
    );
    const member = serviceAccountMember(runner.email);
    const grants = [
      ...this.opensearch.secrets.map((secret, i) =>
        grantOnSecret(`${name}-secret-accessor-${i}`, args.project, secret.secretId, { role: 'roles/secretmanager.secretAccessor', member }, parent),
      ),
      // No models role: vectors arrive computed; the model version is only compared as a string.
      // Tombstones under features/, rejection records cleared under rejected/, shards read.
      grantOnBucket(`${name}-features-user`, args.featuresBucket, { role: 'roles/storage.objectUser', member, prefix: 'features/' }, parent),
      grantOnBucket(`${name}-rejected-user`, args.featuresBucket, { role: 'roles/storage.objectUser', member, prefix: 'rejected/' }, parent),
      grantOnBucket(`${name}-shards-viewer`, args.featuresBucket, { role: 'roles/storage.objectViewer', member, prefix: 'embeddings/shards/' }, parent),
      grantOnTopic(`${name}-image-events-publisher`, args.project, args.imageEventsTopic, { role: 'roles/pubsub.publisher', member }, parent),
      grantOnTopic(
        `${name}-dead-letter-publisher`,
        args.project,
        args.embeddings.deadLetterTopic.name,
        {
          role: 'roles/pubsub.publisher',
          member,
        },
        parent,
      ),
    ];

    const pusher = pushIdentity(
      `${name}-push-sa`,
      {
        prefix: args.prefix,
        project: args.project,
        suffix: 'push-upsert',
        purpose: 'Pub/Sub push from embeddings to upsertVectors',
        pubsubServiceAgent: args.pubsubServiceAgent,
      },
      parent,
    );

    this.upsert = new NodeFunction(
      `${name}-upsert`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        target: 'upsertVectors',
        functionName: `${args.prefix}-upsert-vectors`,
        sourcesBucket: args.sourcesBucket,
        serviceAccountEmail: runner.email,
        buildServiceAccountId: args.buildServiceAccountId,
        environment: plainEnv('upsertVectors', args.env),
        secretEnvironment: functionSecretEnv('upsertVectors', args.project, this.opensearch.secretIds),
        vpcConnector: this.opensearch.connectorId,
        memory: '1Gi',
        // Pub/Sub push sends one message per request; the requests one instance serves at once are
        // written with one _bulk per batch (shared/services/upsert-batcher.ts), so an instance takes
        // up to a batch of them. Cloud Run serves more than one request at a time only with ≥ 1 vCPU.
        cpu: '1',
        concurrency: PUSH_BATCH_MAX,
        timeoutSeconds: args.messaging.ackDeadlineSeconds,
        invokers: [serviceAccountMember(pusher.email)],
      },
      { ...parent, dependsOn: grants },
    );

    this.subscription = new DeadLetteredSubscription(
      `${name}-embeddings-upsert`,
      {
        project: args.project,
        subscriptionName: `${args.prefix}-embeddings-upsert`,
        source: args.embeddings,
        settings: args.messaging,
        pubsubServiceAgent: args.pubsubServiceAgent,
        labels: args.labels,
        push: {
          endpoint: pushEndpoint(this.upsert.uri, args.project, args.embeddings.topic.name),
          serviceAccountEmail: pusher.email,
          audience: this.upsert.uri,
        },
      },
      parent,
    );

    this.registerOutputs({ upsert: this.upsert.serviceName, opensearchUrl: this.opensearch.url });
  }
}

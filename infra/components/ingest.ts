import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { plainEnv, type EnvValues } from '../env.js';
import { grantOnBucket, grantOnTopic } from '../grants.js';
import { grantOnProject, serviceAccount, serviceAccountMember } from '../iam.js';
import type { Placement } from '../placement.js';
import { NodeFunction } from './node-function.js';
import { propagationWait } from './service-agents.js';

export interface ObjectEventsArgs extends Placement {
  imagesBucket: pulumi.Input<string>;
  /** Where rejected uploads are recorded (`rejected/`). */
  featuresBucket: pulumi.Input<string>;
  imageEventsTopic: pulumi.Input<string>;
  /** Malformed storage events are published here (`<image-events>-dead-letter`). */
  imageEventsDeadLetterTopic: pulumi.Input<string>;
  sourcesBucket: pulumi.Input<string>;
  buildServiceAccountId: pulumi.Input<string>;
  /** Cloud Storage's service agent: Eventarc GCS triggers publish through it. */
  storageServiceAgent: pulumi.Input<string>;
  /** Eventarc's service agent (created explicitly): it validates the trigger when it is created. */
  eventarcAgent: pulumi.Resource;
  env: EnvValues;
}

/** The Eventarc event types onObjectEvent receives from the images bucket. */
export const OBJECT_EVENT_TYPES = ['google.cloud.storage.object.v1.finalized', 'google.cloud.storage.object.v1.deleted'] as const;

/**
 * Uploads and deletions in the images bucket reach `onObjectEvent` through two Eventarc triggers
 * (finalized, deleted) that deliver to the function's service; it validates the object and
 * publishes an image event.
 */
export class ObjectEvents extends pulumi.ComponentResource {
  public readonly function: NodeFunction;
  public readonly triggers: gcp.eventarc.Trigger[];

  constructor(name: string, args: ObjectEventsArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:ingest:ObjectEvents', name, {}, opts);
    const parent = { parent: this };

    const runtime = serviceAccount(
      `${name}-sa`,
      {
        prefix: args.prefix,
        suffix: 'object-events',
        project: args.project,
        purpose: 'onObjectEvent: validates storage events, publishes image events, records rejected uploads',
      },
      parent,
    );
    const runtimeMember = serviceAccountMember(runtime.email);
    // No role on the images bucket: the object's metadata arrives in the event and is never read back.
    const runtimeGrants = [
      // Rejection records are read-compare-written under rejected/ (overwrite = delete + create).
      grantOnBucket(`${name}-features-user`, args.featuresBucket, { role: 'roles/storage.objectUser', member: runtimeMember, prefix: 'rejected/' }, parent),
      grantOnTopic(
        `${name}-image-events-publisher`,
        args.project,
        args.imageEventsTopic,
        {
          role: 'roles/pubsub.publisher',
          member: runtimeMember,
        },
        parent,
      ),
      grantOnTopic(
        `${name}-dead-letter-publisher`,
        args.project,
        args.imageEventsDeadLetterTopic,
        {
          role: 'roles/pubsub.publisher',
          member: runtimeMember,
        },
        parent,
      ),
    ];

    const trigger = serviceAccount(
      `${name}-trigger-sa`,
      {
        prefix: args.prefix,
        suffix: 'eventarc',
        project: args.project,
        purpose: 'Eventarc triggers: receive images-bucket events and invoke onObjectEvent',
      },
      parent,
    );
    const triggerMember = serviceAccountMember(trigger.email);
    const canReceive = grantOnProject(
      `${name}-event-receiver`,
      {
        project: args.project,
        role: 'roles/eventarc.eventReceiver',
        member: triggerMember,
      },
      parent,
    );
    // Eventarc GCS triggers publish through a topic as Cloud Storage's service agent.
    const agentCanPublish = grantOnProject(
      `${name}-gcs-agent-publisher`,
      {
        project: args.project,
        role: 'roles/pubsub.publisher',
        member: serviceAccountMember(args.storageServiceAgent),
      },
      parent,
    );

    this.function = new NodeFunction(
      `${name}-on-object-event`,
      {
        project: args.project,
        region: args.region,
        prefix: args.prefix,
        labels: args.labels,
        target: 'onObjectEvent',
        functionName: `${args.prefix}-on-object-event`,
        sourcesBucket: args.sourcesBucket,
        serviceAccountEmail: runtime.email,
        buildServiceAccountId: args.buildServiceAccountId,
        environment: plainEnv('onObjectEvent', args.env),
        invokers: [triggerMember],
      },
      { ...parent, dependsOn: runtimeGrants },
    );

    // Eventarc checks its agent, the trigger account's eventReceiver role and the storage agent's
    // publisher role when the trigger is created; each takes minutes to propagate on a fresh project.
    const settled = propagationWait(`${name}-iam-settled`, [args.eventarcAgent, canReceive, agentCanPublish], parent);
    this.triggers = OBJECT_EVENT_TYPES.map(
      (type) =>
        new gcp.eventarc.Trigger(
          `${name}-${type.split('.').pop()}`,
          {
            project: args.project,
            location: args.region,
            name: `${args.prefix}-object-${type.split('.').pop()}`,
            labels: args.labels,
            matchingCriterias: [
              { attribute: 'type', value: type },
              { attribute: 'bucket', value: args.imagesBucket },
            ],
            destination: { cloudRunService: { service: this.function.serviceName, region: args.region } },
            serviceAccount: trigger.email,
          },
          { ...parent, dependsOn: [settled, this.function] },
        ),
    );

    this.registerOutputs({ function: this.function.serviceName });
  }
}

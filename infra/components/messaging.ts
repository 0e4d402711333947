import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { deadLetterInboxOf, deadLetterTopicOf } from '../../shared/adapters/gcp/pubsub-names.js';
import { TOPICS } from '../../shared/contracts.js';
import type { ParsedStackConfig } from '../config.js';
import { grantOnSubscription, grantOnTopic } from '../grants.js';
import { serviceAccountMember } from '../iam.js';
import type { Placement } from '../placement.js';

type MessagingSettings = ParsedStackConfig['messaging'];

/** One topic with its dead-letter topic and the inbox subscription where dead letters wait. */
export interface DeadLetteredTopic {
  topic: gcp.pubsub.Topic;
  deadLetterTopic: gcp.pubsub.Topic;
  /** Pull subscription on the dead-letter topic: inspect with `gcloud pubsub subscriptions pull`. */
  deadLetterInbox: gcp.pubsub.Subscription;
}

export interface MessagingArgs extends Placement {
  settings: MessagingSettings;
  /** Pub/Sub service agent (service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com). */
  pubsubServiceAgent: pulumi.Input<string>;
}

/**
 * The three topics of the pipeline (image-events, embeddings, retrain-requests), each with a
 * dead-letter topic and an inbox on it, and the embed job's pull subscription on image-events.
 * Push subscriptions that feed functions are made by their components with
 * {@link DeadLetteredSubscription}, so every subscription dead-letters the same way.
 */
export class Messaging extends pulumi.ComponentResource {
  public readonly imageEvents: DeadLetteredTopic;
  public readonly embeddings: DeadLetteredTopic;
  public readonly retrainRequests: DeadLetteredTopic;
  /** The embed job pulls image events from here (SUBSCRIPTION_IMAGE_EVENTS). */
  public readonly imageEventsSubscription: gcp.pubsub.Subscription;

  constructor(name: string, args: MessagingArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:messaging:Topics', name, {}, opts);
    const agent = serviceAccountMember(args.pubsubServiceAgent);

    const deadLettered = (key: string, topicName: string): DeadLetteredTopic => {
      const physical = `${args.prefix}-${topicName}`;
      const topic = new gcp.pubsub.Topic(`${name}-${key}`, { project: args.project, name: physical, labels: args.labels }, { parent: this });
      const deadLetterTopic = new gcp.pubsub.Topic(
        `${name}-${key}-dead-letter`,
        // The naming rules the cloud EventBus reaches these by: shared/adapters/gcp/pubsub-names.ts.
        { project: args.project, name: deadLetterTopicOf(physical), labels: args.labels },
        { parent: this },
      );
      const deadLetterInbox = new gcp.pubsub.Subscription(
        `${name}-${key}-dead-letter-inbox`,
        {
          project: args.project,
          name: deadLetterInboxOf(physical),
          topic: deadLetterTopic.id,
          labels: { ...args.labels, role: 'dead-letter-inbox' },
          ackDeadlineSeconds: 60,
          // Dead letters wait the longest Pub/Sub allows, and the inbox itself never expires.
          messageRetentionDuration: '604800s',
          expirationPolicy: { ttl: '' },
        },
        { parent: this },
      );
      // Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter topic.
      grantOnTopic(
        `${name}-${key}-dead-letter-agent-publisher`,
        args.project,
        deadLetterTopic.name,
        {
          role: 'roles/pubsub.publisher',
          member: agent,
        },
        { parent: this },
      );
      return { topic, deadLetterTopic, deadLetterInbox };
    };

    this.imageEvents = deadLettered('image-events', TOPICS.imageEvents);
    this.embeddings = deadLettered('embeddings', TOPICS.embeddings);
    this.retrainRequests = deadLettered('retrain-requests', TOPICS.retrainRequests);

    this.imageEventsSubscription = new DeadLetteredSubscription(
      `${name}-image-events-embed`,
      {
        project: args.project,
        subscriptionName: `${args.prefix}-${TOPICS.imageEvents}-embed`,
        source: this.imageEvents,
        settings: args.settings,
        pubsubServiceAgent: args.pubsubServiceAgent,
        labels: args.labels,
      },
      { parent: this },
    ).subscription;

    this.registerOutputs({
      imageEvents: this.imageEvents.topic.name,
      embeddings: this.embeddings.topic.name,
      retrainRequests: this.retrainRequests.topic.name,
      imageEventsSubscription: this.imageEventsSubscription.name,
    });
  }
}

export interface DeadLetteredSubscriptionArgs {
  project: string;
  subscriptionName: string;
  source: DeadLetteredTopic;
  settings: MessagingSettings;
  pubsubServiceAgent: pulumi.Input<string>;
  labels: Record<string, string>;
  /** Push delivery to an HTTP endpoint with an OIDC token of this account; pull when absent. */
  push?: { endpoint: pulumi.Input<string>; serviceAccountEmail: pulumi.Input<string>; audience: pulumi.Input<string> };
}

/**
 * A subscription with bounded retries and a dead-letter policy: after `maxDeliveryAttempts`
 * failed deliveries the message moves to the topic's dead-letter topic instead of cycling forever.
 */
export class DeadLetteredSubscription extends pulumi.ComponentResource {
  public readonly subscription: gcp.pubsub.Subscription;

  constructor(name: string, args: DeadLetteredSubscriptionArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:messaging:DeadLetteredSubscription', name, {}, opts);
    const s = args.settings;
    this.subscription = new gcp.pubsub.Subscription(
      `${name}-subscription`,
      {
        project: args.project,
        name: args.subscriptionName,
        topic: args.source.topic.id,
        labels: args.labels,
        // A push request times out at the ack deadline: give handlers the same budget as pulls.
        ackDeadlineSeconds: s.ackDeadlineSeconds,
        messageRetentionDuration: s.messageRetention,
        expirationPolicy: { ttl: '' },
        deadLetterPolicy: { deadLetterTopic: args.source.deadLetterTopic.id, maxDeliveryAttempts: s.maxDeliveryAttempts },
        retryPolicy: { minimumBackoff: s.minBackoff, maximumBackoff: s.maxBackoff },
        pushConfig: args.push
          ? {
              pushEndpoint: args.push.endpoint,
              oidcToken: { serviceAccountEmail: args.push.serviceAccountEmail, audience: args.push.audience },
            }
          : undefined,
      },
      { parent: this },
    );
    // To forward a message to the dead-letter topic, the service agent must be able to ack it here.
    grantOnSubscription(
      `${name}-agent-subscriber`,
      args.project,
      this.subscription.name,
      {
        role: 'roles/pubsub.subscriber',
        member: serviceAccountMember(args.pubsubServiceAgent),
      },
      { parent: this },
    );
    this.registerOutputs({ subscription: this.subscription.name });
  }
}

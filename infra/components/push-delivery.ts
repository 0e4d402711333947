import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import { grantOnServiceAccount } from '../grants.js';
import { serviceAccount, serviceAccountMember } from '../iam.js';
import type { Placement } from '../placement.js';

/**
 * The identity a push subscription signs its OIDC tokens with. Pub/Sub's service agent mints the
 * tokens, so it needs tokenCreator on this one account (not on the project).
 */
export function pushIdentity(
  name: string,
  args: Pick<Placement, 'prefix' | 'project'> & { suffix: string; purpose: string; pubsubServiceAgent: pulumi.Input<string> },
  opts: pulumi.CustomResourceOptions,
): gcp.serviceaccount.Account {
  const account = serviceAccount(name, { prefix: args.prefix, suffix: args.suffix, project: args.project, purpose: args.purpose }, opts);
  grantOnServiceAccount(
    `${name}-agent-token-creator`,
    account.name,
    {
      role: 'roles/iam.serviceAccountTokenCreator',
      member: serviceAccountMember(args.pubsubServiceAgent),
    },
    opts,
  );
  return account;
}

/**
 * Push endpoint for a functions-framework CloudEvent function fed by our own subscription: the
 * framework turns a raw Pub/Sub push into a `google.cloud.pubsub.topic.v1.messagePublished`
 * CloudEvent and reads the topic from this path.
 */
export function pushEndpoint(uri: pulumi.Input<string>, project: string, topicName: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.interpolate`${uri}/projects/${project}/topics/${topicName}`;
}

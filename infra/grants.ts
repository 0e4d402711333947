import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import type { AllowedRole } from './iam.js';

/**
 * Resource-level grants. Each helper takes only a role from the allow-list (iam.ts), so a
 * primitive or unlisted role does not compile; the unit tests check the deployed set again.
 */
type Grant = { role: AllowedRole; member: pulumi.Input<string> };

/**
 * An IAM condition limiting a bucket grant to objects under `prefix`
 * (cloud.google.com/storage/docs/access-control/iam#conditions). Object calls are checked against
 * `resource.name`; a list request is checked on the bucket, so listing is allowed only under the
 * same prefix through the `objectListPrefix` attribute.
 */
export function objectPrefixCondition(bucket: pulumi.Input<string>, prefix: string) {
  return {
    title: `only ${prefix}`,
    description: `Objects under ${prefix} only`,
    expression: pulumi.interpolate`resource.name.startsWith("projects/_/buckets/${bucket}/objects/${prefix}") || api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("${prefix}")`,
  };
}
type Opts = pulumi.CustomResourceOptions;

export const grantOnBucket = (name: string, bucket: pulumi.Input<string>, g: Grant & { prefix?: string }, opts: Opts) =>
  new gcp.storage.BucketIAMMember(
    name,
    { bucket, role: g.role, member: g.member, ...(g.prefix ? { condition: objectPrefixCondition(bucket, g.prefix) } : {}) },
    opts,
  );

export const grantOnTopic = (name: string, project: string, topic: pulumi.Input<string>, g: Grant, opts: Opts) =>
  new gcp.pubsub.TopicIAMMember(name, { project, topic, role: g.role, member: g.member }, opts);

export const grantOnSubscription = (name: string, project: string, subscription: pulumi.Input<string>, g: Grant, opts: Opts) =>
  new gcp.pubsub.SubscriptionIAMMember(name, { project, subscription, role: g.role, member: g.member }, opts);

export const grantOnSecret = (name: string, project: string, secretId: pulumi.Input<string>, g: Grant, opts: Opts) =>
  new gcp.secretmanager.SecretIamMember(name, { project, secretId, role: g.role, member: g.member }, opts);

/** A role on a service account (serviceAccountUser to run as it, tokenCreator to mint its tokens). */
export const grantOnServiceAccount = (name: string, serviceAccountId: pulumi.Input<string>, g: Grant, opts: Opts) =>
  new gcp.serviceaccount.IAMMember(name, { serviceAccountId, role: g.role, member: g.member }, opts);

export const grantOnRepository = (name: string, args: { project: string; location: string; repository: pulumi.Input<string> }, g: Grant, opts: Opts) =>
  new gcp.artifactregistry.RepositoryIamMember(name, { ...args, role: g.role, member: g.member }, opts);

/** A role on one Cloud Run service (gen2 functions are Cloud Run services too). */
export function cloudRunServiceMember(
  name: string,
  args: { project: string; location: string; service: pulumi.Input<string> } & Grant,
  opts: Opts,
): gcp.cloudrunv2.ServiceIamMember {
  return new gcp.cloudrunv2.ServiceIamMember(
    name,
    { project: args.project, location: args.location, name: args.service, role: args.role, member: args.member },
    opts,
  );
}

/** A role on one Cloud Run job. */
export function cloudRunJobMember(
  name: string,
  args: { project: string; location: string; job: pulumi.Input<string> } & Grant,
  opts: Opts,
): gcp.cloudrunv2.JobIamMember {
  return new gcp.cloudrunv2.JobIamMember(name, { project: args.project, location: args.location, name: args.job, role: args.role, member: args.member }, opts);
}

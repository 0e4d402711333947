import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';

/**
 * The only roles this program grants. All predefined and narrow; primitive roles
 * (owner/editor/viewer) are never granted. Most are bound on one resource (a bucket, topic,
 * subscription, secret, job or service); PROJECT_LEVEL_ROLES are the few that have no
 * resource-level binding (Vertex AI jobs, Eventarc receivers, metrics reads, log writes).
 */
export const ALLOWED_ROLES = [
  'roles/storage.objectViewer',
  'roles/storage.objectUser',
  // Create only (no overwrite, no delete): for writers of uniquely named records (search feedback).
  'roles/storage.objectCreator',
  'roles/pubsub.publisher',
  'roles/pubsub.subscriber',
  'roles/run.invoker',
  'roles/run.jobsExecutorWithOverrides',
  // run.jobs.run without overrides (and run.executions.cancel): the drift starter, which passes none.
  'roles/run.jobsExecutor',
  // Lists a job's executions (the launchers start one run at a time): jobsExecutorWithOverrides
  // holds only run.jobs.run, run.jobs.runWithOverrides and run.executions.cancel.
  'roles/run.viewer',
  // What Google's "build service account" page asks for gen2 function builds: read the source
  // Google copies to gcf-v2-sources-<number>-<region>, push the image, write build logs.
  'roles/run.builder',
  'roles/secretmanager.secretAccessor',
  'roles/artifactregistry.reader',
  'roles/iam.serviceAccountUser',
  'roles/iam.serviceAccountTokenCreator',
  'roles/eventarc.eventReceiver',
  'roles/monitoring.viewer',
  'roles/monitoring.metricWriter',
  'roles/logging.logWriter',
  // `search.access: iap`: who may open the page through IAP (bound on the search service's IAP resource).
  'roles/iap.httpsResourceAccessor',
] as const;
export type AllowedRole = (typeof ALLOWED_ROLES)[number];

/** Roles that may be bound on the project because the service offers no narrower binding. */
export const PROJECT_LEVEL_ROLES: readonly AllowedRole[] = [
  'roles/eventarc.eventReceiver',
  'roles/monitoring.viewer',
  'roles/monitoring.metricWriter',
  'roles/logging.logWriter',
  // Function builds read gcf-v2-sources-<number>-<region> and push to gcf-artifacts: both buckets
  // and repositories Google creates on the first deployment, so nothing narrower can be bound.
  'roles/run.builder',
  // Only for Cloud Storage's service agent, which Eventarc GCS triggers publish through.
  'roles/pubsub.publisher',
];

export function serviceAccountMember(email: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.interpolate`serviceAccount:${email}`;
}

/** One service account per component: `${prefix}-${suffix}` must fit the 30-character id limit. */
export function serviceAccount(
  name: string,
  args: { prefix: string; suffix: string; project: string; purpose: string },
  opts: pulumi.CustomResourceOptions,
): gcp.serviceaccount.Account {
  const accountId = `${args.prefix}-${args.suffix}`;
  if (accountId.length > 30) throw new Error(`service account id "${accountId}" is longer than 30 characters; shorten iss:prefix`);
  return new gcp.serviceaccount.Account(name, { project: args.project, accountId, displayName: accountId, description: args.purpose }, opts);
}

/** A project-level grant, refused at program time unless the role is on PROJECT_LEVEL_ROLES. */
export function grantOnProject(
  name: string,
  args: { project: string; role: AllowedRole; member: pulumi.Input<string> },
  opts: pulumi.CustomResourceOptions,
): gcp.projects.IAMMember {
  if (!PROJECT_LEVEL_ROLES.includes(args.role)) {
    throw new Error(`${args.role} must be bound on a resource, not on the project (${name})`);
  }
  return new gcp.projects.IAMMember(name, args, opts);
}

/**
 * A project-level grant of one of the stack's own custom roles (a handful of permissions where the
 * predefined role holds hundreds, e.g. Vertex AI custom jobs, which have no resource-level IAM).
 */
export function grantCustomRoleOnProject(
  name: string,
  args: { project: string; role: gcp.projects.IAMCustomRole; member: pulumi.Input<string> },
  opts: pulumi.CustomResourceOptions,
): gcp.projects.IAMMember {
  return new gcp.projects.IAMMember(name, { project: args.project, role: args.role.name, member: args.member }, opts);
}

import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';

/** The Google APIs the stack uses. */
export const REQUIRED_APIS = [
  'aiplatform.googleapis.com',
  'artifactregistry.googleapis.com',
  'cloudbuild.googleapis.com',
  'cloudfunctions.googleapis.com',
  // Project IAM bindings and the project lookup go through Resource Manager, off in some new projects.
  'cloudresourcemanager.googleapis.com',
  'cloudscheduler.googleapis.com',
  'compute.googleapis.com',
  'eventarc.googleapis.com',
  'iam.googleapis.com',
  // IAM Credentials (signBlob): the search service signs upload URLs as itself, without a key.
  'iamcredentials.googleapis.com',
  // Identity-Aware Proxy (search.access: iap); enabling it costs nothing when unused.
  'iap.googleapis.com',
  'logging.googleapis.com',
  'monitoring.googleapis.com',
  'pubsub.googleapis.com',
  'run.googleapis.com',
  'secretmanager.googleapis.com',
  'storage.googleapis.com',
  'vpcaccess.googleapis.com',
] as const;

export interface ProjectApisArgs {
  project: string;
  region: string;
  labels: Record<string, string>;
}

/**
 * Enables the APIs and hands out a provider that depends on them. Every Google resource is made
 * through this provider (components pass it to their children), so nothing is created before its
 * API is on, on the very first `pulumi up` of a fresh project.
 */
export class ProjectApis extends pulumi.ComponentResource {
  public readonly provider: gcp.Provider;

  constructor(name: string, args: ProjectApisArgs, opts?: pulumi.ComponentResourceOptions) {
    super('iss:project:Apis', name, {}, opts);
    const services = REQUIRED_APIS.map(
      (service) =>
        new gcp.projects.Service(
          `${name}-${service.split('.')[0]}`,
          // Leaving APIs on at teardown avoids breaking anything else in the project.
          { project: args.project, service, disableOnDestroy: false, disableDependentServices: false },
          { parent: this },
        ),
    );
    this.provider = new gcp.Provider(
      `${name}-provider`,
      { project: args.project, region: args.region, defaultLabels: args.labels },
      { parent: this, dependsOn: services },
    );
    this.registerOutputs({});
  }
}

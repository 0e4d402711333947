import * as gcp from '@pulumi/gcp';
import * as pulumi from '@pulumi/pulumi';
import * as time from '@pulumiverse/time';
import type { Placement } from '../placement.js';

/**
 * How long a new IAM binding or service agent takes to be seen everywhere. Google documents
 * "typically within 2 minutes" for policy changes (cloud.google.com/iam/docs/access-change-propagation)
 * and asks to wait after enabling Eventarc before its agent can be used
 * (cloud.google.com/eventarc/docs/run/roles-permissions).
 */
export const IAM_PROPAGATION = '120s';

/**
 * The Google-managed service agents the stack relies on in the same `pulumi up` that enables their
 * APIs. They are otherwise created lazily on first use, with their role granted some time later,
 * which made the first `up` of a fresh project fail (Eventarc triggers, Pub/Sub dead-lettering,
 * Vertex AI image pulls). Creating them explicitly gives their emails and an order to wait on.
 */
export class ServiceAgents extends pulumi.ComponentResource {
  public readonly pubsub: gcp.projects.ServiceIdentity;
  public readonly eventarc: gcp.projects.ServiceIdentity;
  public readonly aiplatform: gcp.projects.ServiceIdentity;
  /** IAP's agent, when the search service is behind IAP: it invokes the service for signed-in users. */
  public readonly iap?: gcp.projects.ServiceIdentity;

  constructor(name: string, args: Pick<Placement, 'project'> & { iap?: boolean }, opts?: pulumi.ComponentResourceOptions) {
    super('iss:project:ServiceAgents', name, {}, opts);
    const identity = (key: string, service: string) => new gcp.projects.ServiceIdentity(`${name}-${key}`, { project: args.project, service }, { parent: this });
    this.pubsub = identity('pubsub', 'pubsub.googleapis.com');
    this.eventarc = identity('eventarc', 'eventarc.googleapis.com');
    this.aiplatform = identity('aiplatform', 'aiplatform.googleapis.com');
    if (args.iap) this.iap = identity('iap', 'iap.googleapis.com');
    this.registerOutputs({ pubsub: this.pubsub.email, eventarc: this.eventarc.email, aiplatform: this.aiplatform.email });
  }
}

/**
 * A pause after `after` is created, for what Google applies asynchronously (IAM bindings, new
 * service agents, new log-based metrics); resources that need it to have settled depend on it.
 */
export function propagationWait(name: string, after: pulumi.Resource[], opts: pulumi.CustomResourceOptions, duration = IAM_PROPAGATION): time.Sleep {
  return new time.Sleep(name, { createDuration: duration }, { ...opts, dependsOn: after });
}

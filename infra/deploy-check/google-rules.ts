import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AdapterName } from '../../shared/adapters/gcp/access.js';

/**
 * What Google Cloud enforces, as data the deploy check reads. Each table names its source.
 */

const here = path.dirname(fileURLToPath(import.meta.url));

interface RoleData {
  source: string;
  retrieved: string;
  roles: Record<string, string[]>;
}

/**
 * Predefined roles and their permissions: a subset of Google's role definitions, vendored from the
 * public dataset named in data/gcp-roles.json (`source`, `retrieved`).
 */
export const ROLE_DATA: RoleData = JSON.parse(readFileSync(path.join(here, 'data', 'gcp-roles.json'), 'utf8'));

/**
 * Google-managed service agents the stack relies on: email pattern and the role Google grants each
 * on the project. Source: "Service agents" (https://cloud.google.com/iam/docs/service-agents).
 * `createdBy: 'identity'` marks agents that exist (with their role) only once something has
 * created them: lazily on first use, or explicitly with `gcp.projects.ServiceIdentity`
 * (`google_project_service_identity`); relying on them in the same `pulumi up` that enables the API
 * needs the explicit creation. Cloud Storage's agent is created by reading it
 * (`storage.getProjectServiceAccount`) and has no project role of its own.
 */
export const SERVICE_AGENTS = {
  pubsub: {
    email: 'service-{number}@gcp-sa-pubsub.iam.gserviceaccount.com',
    role: 'roles/pubsub.serviceAgent',
    createdBy: 'identity',
    service: 'pubsub.googleapis.com',
  },
  eventarc: {
    email: 'service-{number}@gcp-sa-eventarc.iam.gserviceaccount.com',
    role: 'roles/eventarc.serviceAgent',
    createdBy: 'identity',
    service: 'eventarc.googleapis.com',
  },
  aiplatform: {
    email: 'service-{number}@gcp-sa-aiplatform.iam.gserviceaccount.com',
    role: 'roles/aiplatform.serviceAgent',
    createdBy: 'identity',
    service: 'aiplatform.googleapis.com',
  },
  storage: { email: 'service-{number}@gs-project-accounts.iam.gserviceaccount.com', role: null, createdBy: 'read', service: 'storage.googleapis.com' },
  run: {
    email: 'service-{number}@serverless-robot-prod.iam.gserviceaccount.com',
    role: 'roles/run.serviceAgent',
    createdBy: 'api',
    service: 'run.googleapis.com',
  },
  cloudfunctions: {
    email: 'service-{number}@gcf-admin-robot.iam.gserviceaccount.com',
    role: 'roles/cloudfunctions.serviceAgent',
    createdBy: 'api',
    service: 'cloudfunctions.googleapis.com',
  },
  // Identity-Aware Proxy calls an IAP-enabled Cloud Run service as this agent; Google grants it no
  // role there (cloud.google.com/run/docs/securing/identity-aware-proxy-cloud-run: grant it
  // roles/run.invoker on the service).
  iap: { email: 'service-{number}@gcp-sa-iap.iam.gserviceaccount.com', role: null, createdBy: 'identity', service: 'iap.googleapis.com' },
  cloudscheduler: {
    email: 'service-{number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com',
    role: 'roles/cloudscheduler.serviceAgent',
    createdBy: 'api',
    service: 'cloudscheduler.googleapis.com',
  },
} as const;
export type AgentName = keyof typeof SERVICE_AGENTS;

export const agentEmail = (agent: AgentName, projectNumber: string) => SERVICE_AGENTS[agent].email.replace('{number}', projectNumber);

/**
 * The service API each resource type is created through (Pulumi GCP provider type → Google API).
 * Sources: each resource's page in the provider docs names its REST API
 * (pulumi.com/registry/packages/gcp/api-docs); project IAM and `getProject` go through Cloud
 * Resource Manager (cloud.google.com/resource-manager/reference/rest). Enabling services itself
 * needs serviceusage.googleapis.com, which new projects have on (docs/DEPLOY.md prerequisites).
 * A type missing here fails the check, so a new resource type cannot skip the API rule.
 */
export const RESOURCE_APIS: Record<string, string[]> = {
  'gcp:projects/service:Service': ['serviceusage.googleapis.com'],
  'gcp:projects/serviceIdentity:ServiceIdentity': ['serviceusage.googleapis.com'],
  'gcp:projects/iAMMember:IAMMember': ['cloudresourcemanager.googleapis.com'],
  'gcp:projects/iAMCustomRole:IAMCustomRole': ['iam.googleapis.com'],
  'gcp:serviceaccount/account:Account': ['iam.googleapis.com'],
  'gcp:serviceaccount/iAMMember:IAMMember': ['iam.googleapis.com'],
  'gcp:storage/bucket:Bucket': ['storage.googleapis.com'],
  'gcp:storage/bucketObject:BucketObject': ['storage.googleapis.com'],
  'gcp:storage/bucketIAMMember:BucketIAMMember': ['storage.googleapis.com'],
  'gcp:pubsub/topic:Topic': ['pubsub.googleapis.com'],
  'gcp:pubsub/subscription:Subscription': ['pubsub.googleapis.com'],
  'gcp:pubsub/topicIAMMember:TopicIAMMember': ['pubsub.googleapis.com'],
  'gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember': ['pubsub.googleapis.com'],
  // Gen2 functions are built by Cloud Build into Artifact Registry and run as Cloud Run services.
  'gcp:cloudfunctionsv2/function:Function': [
    'cloudfunctions.googleapis.com',
    'cloudbuild.googleapis.com',
    'artifactregistry.googleapis.com',
    'run.googleapis.com',
  ],
  'gcp:cloudrunv2/service:Service': ['run.googleapis.com'],
  'gcp:cloudrunv2/job:Job': ['run.googleapis.com'],
  'gcp:cloudrunv2/serviceIamMember:ServiceIamMember': ['run.googleapis.com'],
  'gcp:cloudrunv2/jobIamMember:JobIamMember': ['run.googleapis.com'],
  // GCS triggers deliver through a Pub/Sub topic Eventarc creates.
  'gcp:eventarc/trigger:Trigger': ['eventarc.googleapis.com', 'pubsub.googleapis.com'],
  'gcp:cloudscheduler/job:Job': ['cloudscheduler.googleapis.com'],
  'gcp:secretmanager/secret:Secret': ['secretmanager.googleapis.com'],
  'gcp:secretmanager/secretVersion:SecretVersion': ['secretmanager.googleapis.com'],
  'gcp:secretmanager/secretIamMember:SecretIamMember': ['secretmanager.googleapis.com'],
  'gcp:artifactregistry/repository:Repository': ['artifactregistry.googleapis.com'],
  'gcp:artifactregistry/repositoryIamMember:RepositoryIamMember': ['artifactregistry.googleapis.com'],
  'gcp:compute/network:Network': ['compute.googleapis.com'],
  'gcp:compute/subnetwork:Subnetwork': ['compute.googleapis.com'],
  'gcp:compute/firewall:Firewall': ['compute.googleapis.com'],
  'gcp:compute/address:Address': ['compute.googleapis.com'],
  'gcp:compute/disk:Disk': ['compute.googleapis.com'],
  'gcp:compute/instance:Instance': ['compute.googleapis.com'],
  // The public search service's external HTTPS load balancer with Cloud Armor (compute API).
  'gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup': ['compute.googleapis.com'],
  'gcp:compute/backendService:BackendService': ['compute.googleapis.com'],
  'gcp:compute/securityPolicy:SecurityPolicy': ['compute.googleapis.com'],
  'gcp:compute/uRLMap:URLMap': ['compute.googleapis.com'],
  'gcp:compute/managedSslCertificate:ManagedSslCertificate': ['compute.googleapis.com'],
  'gcp:compute/sSLPolicy:SSLPolicy': ['compute.googleapis.com'],
  'gcp:compute/targetHttpsProxy:TargetHttpsProxy': ['compute.googleapis.com'],
  'gcp:compute/globalAddress:GlobalAddress': ['compute.googleapis.com'],
  'gcp:compute/globalForwardingRule:GlobalForwardingRule': ['compute.googleapis.com'],
  'gcp:iap/webCloudRunServiceIamMember:WebCloudRunServiceIamMember': ['iap.googleapis.com'],
  'gcp:vpcaccess/connector:Connector': ['vpcaccess.googleapis.com'],
  'gcp:logging/metric:Metric': ['logging.googleapis.com'],
  'gcp:monitoring/alertPolicy:AlertPolicy': ['monitoring.googleapis.com'],
  'gcp:monitoring/notificationChannel:NotificationChannel': ['monitoring.googleapis.com'],
  'gcp:monitoring/dashboard:Dashboard': ['monitoring.googleapis.com'],
};

/** The API each adapter's client library calls at run time (its endpoint host). */
export const ADAPTER_APIS: Record<AdapterName, string> = {
  GcsBlobStore: 'storage.googleapis.com',
  GcsModelRegistry: 'storage.googleapis.com',
  GcsFeatureStore: 'storage.googleapis.com',
  GcsRejectionLog: 'storage.googleapis.com',
  EmbeddingShards: 'storage.googleapis.com',
  PubSubEventBus: 'pubsub.googleapis.com',
  CloudRunJobLauncher: 'run.googleapis.com',
  VertexJobLauncher: 'aiplatform.googleapis.com',
  MonitoringBacklog: 'monitoring.googleapis.com',
  PullBacklog: 'pubsub.googleapis.com',
  // Signing without a key calls IAM Credentials signBlob (its existence check is a storage.googleapis.com
  // call, which the same workload's GcsBlobStore needs enabled anyway).
  GcsSignedUploads: 'iamcredentials.googleapis.com',
};

/**
 * Name formats Google enforces where the stack passes names between resources.
 *  - Eventarc `destination.cloudRunService.service`: the service *name*, not a path
 *    (cloud.google.com/eventarc/docs/reference/rest/v1/projects.locations.triggers#CloudRun).
 *  - Cloud Run service/job ids: lowercase letters, digits, hyphens, start with a letter, at most
 *    49 characters (cloud.google.com/run/docs/reference/rest/v2/projects.locations.services/create).
 *  - Service account ids: 6–30 characters (cloud.google.com/iam/docs/service-accounts-create).
 *  - Serverless VPC Access connector names: at most 25 characters, `^[a-z][-a-z0-9]{0,23}[a-z0-9]$`.
 *  - Bucket names: 3–63 characters per dot-separated part (cloud.google.com/storage/docs/buckets#naming).
 *  - Pub/Sub ids: 3–255 characters, start with a letter, not `goog`
 *    (cloud.google.com/pubsub/docs/create-topic#resource_names).
 *  - Log-based metric names used in `resource.labels.service_name` filters are compared with the
 *    short Cloud Run service name (cloud.google.com/run/docs/logging#resource-labels).
 */
export const NAME_RULES = {
  cloudRunName: /^[a-z](?:[-a-z0-9]{0,47}[a-z0-9])?$/,
  serviceAccountId: /^[a-z](?:[-a-z0-9]{4,28}[a-z0-9])$/,
  connectorName: /^[a-z][-a-z0-9]{0,23}[a-z0-9]$/,
  bucketName: /^[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]$/,
  pubsubId: /^(?!goog)[A-Za-z][-A-Za-z0-9_.~+%]{2,254}$/,
};

import * as pulumi from '@pulumi/pulumi';
import { parseStackConfig, type RawStackConfig, type StackConfig } from '../config.js';
import { createStack } from '../stack.js';

/**
 * Offline harness for the Pulumi program: `pulumi.runtime.setMocks` stands in for the engine and
 * the provider and records every resource the program registers, with its provider and what it
 * waits for. Outputs are what Google's APIs return, not the inputs echoed back: a Cloud Functions
 * gen2 `serviceConfig.service` is the full `projects/P/locations/L/services/S` path, a secret's
 * `name` is `projects/<number>/secrets/S`, a topic's `id` is `projects/P/topics/T`, a service
 * identity's email is `service-<number>@gcp-sa-<svc>…`. So a program that passes a full path where
 * Google wants a short name fails the deploy check (infra/deploy-check), as it would in a project.
 * Shapes follow the v1/v2 REST resources of each API and the Pulumi GCP provider's output
 * properties (registry: pulumi.com/registry/packages/gcp/api-docs).
 */
// Provider inputs are deep, resource-specific shapes; tests read them like JSON documents.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Inputs = Record<string, any>;

export interface RecordedResource {
  type: string;
  name: string;
  inputs: Inputs;
  /** Outputs the mock returned (computed like the real API). */
  outputs: Inputs;
  /** Provider reference (`urn::id`) the resource was created with, when not the default one. */
  provider?: string;
  /** Logical names this resource waits for: its `dependsOn` and the resources its inputs came from (a dependency on a component is expanded by the deploy check). */
  dependsOn: string[];
  /** Logical name of the parent (component) resource. */
  parent?: string;
}

export const TEST_PROJECT = 'iss-test-project';
export const TEST_PROJECT_NUMBER = '123456789012';
/** A password OpenSearch's strength check accepts (iss:opensearchPassword in tests). */
export const TEST_OPENSEARCH_PASSWORD = 'Vq7#pLm2!xRt9@wKz4';

const recorded: RecordedResource[] = [];
/** Dependencies, filled in by the transformation as resources are declared (resolved after settle). */
const pendingDeps = new Map<string, { explicit: Promise<string[]>; parent?: string }>();

const hash = (s: string) => {
  let h = 0;
  for (const c of s) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  return h.toString(36).padStart(7, '0').slice(0, 10);
};
const regionCode = (region: string) => ({ 'us-central1': 'uc', 'europe-west1': 'ew', 'europe-west4': 'ez', 'asia-southeast1': 'as' })[region] ?? 'xx';

/** The outputs Google's API (through the Pulumi provider) returns for a resource of this type. */
function computed(type: string, name: string, inputs: Inputs): { id?: string; outputs?: Inputs } {
  const project = inputs.project ?? TEST_PROJECT;
  const physical = inputs.name ?? name;
  const location = inputs.location ?? inputs.region ?? 'us-central1';
  switch (type) {
    case 'gcp:serviceaccount/account:Account': {
      const email = `${inputs.accountId}@${project}.iam.gserviceaccount.com`;
      return {
        id: `projects/${project}/serviceAccounts/${email}`,
        outputs: {
          email,
          name: `projects/${project}/serviceAccounts/${email}`,
          member: `serviceAccount:${email}`,
          uniqueId: `1${hash(email).replace(/\D/g, '7').padEnd(20, '3')}`,
        },
      };
    }
    case 'gcp:projects/serviceIdentity:ServiceIdentity': {
      const agent = String(inputs.service).split('.')[0];
      const domain = agent === 'aiplatform' ? 'gcp-sa-aiplatform' : `gcp-sa-${agent}`;
      const email = `service-${TEST_PROJECT_NUMBER}@${domain}.iam.gserviceaccount.com`;
      return { id: `projects/${project}/services/${inputs.service}`, outputs: { email, member: `serviceAccount:${email}` } };
    }
    case 'gcp:projects/iAMCustomRole:IAMCustomRole':
      return { id: `projects/${project}/roles/${inputs.roleId}`, outputs: { name: `projects/${project}/roles/${inputs.roleId}`, deleted: false } };
    case 'gcp:storage/bucket:Bucket':
      return {
        id: physical,
        outputs: { url: `gs://${physical}`, selfLink: `https://www.googleapis.com/storage/v1/b/${physical}`, location: String(inputs.location).toUpperCase() },
      };
    case 'gcp:storage/bucketObject:BucketObject':
      return {
        id: `${inputs.bucket}-${physical}`,
        outputs: {
          generation: 1732700000000000,
          mediaLink: `https://storage.googleapis.com/download/storage/v1/b/${inputs.bucket}/o/${encodeURIComponent(physical)}`,
          md5hash: 'q1w2e3==',
        },
      };
    case 'gcp:pubsub/topic:Topic':
      return { id: `projects/${project}/topics/${physical}` };
    case 'gcp:pubsub/subscription:Subscription':
      return { id: `projects/${project}/subscriptions/${physical}` };
    case 'gcp:cloudfunctionsv2/function:Function': {
      const service = `projects/${project}/locations/${location}/services/${physical}`;
      const uri = `https://${physical}-${hash(physical)}-${regionCode(location)}.a.run.app`;
      return {
        id: `projects/${project}/locations/${location}/functions/${physical}`,
        outputs: {
          url: `https://${location}-${project}.cloudfunctions.net/${physical}`,
          state: 'ACTIVE',
          environment: 'GEN_2',
          serviceConfig: { ...inputs.serviceConfig, service, uri, revision: `${physical}-00001-abc` },
        },
      };
    }
    case 'gcp:cloudrunv2/service:Service':
      return {
        id: `projects/${project}/locations/${location}/services/${physical}`,
        outputs: { uri: `https://${physical}-${hash(physical)}-${regionCode(location)}.a.run.app`, uid: hash(`uid${physical}`) },
      };
    case 'gcp:cloudrunv2/job:Job':
      return {
        id: `projects/${project}/locations/${location}/jobs/${physical}`,
        outputs: { uid: hash(`uid${physical}`), executionCount: inputs.runExecutionToken ? 1 : 0 },
      };
    case 'gcp:secretmanager/secret:Secret':
      return { id: `projects/${project}/secrets/${inputs.secretId}`, outputs: { name: `projects/${TEST_PROJECT_NUMBER}/secrets/${inputs.secretId}` } };
    case 'gcp:secretmanager/secretVersion:SecretVersion': {
      const secret = String(inputs.secret).replace(`projects/${TEST_PROJECT}/`, `projects/${TEST_PROJECT_NUMBER}/`);
      return { id: `${secret}/versions/1`, outputs: { name: `${secret}/versions/1`, version: '1' } };
    }
    case 'gcp:artifactregistry/repository:Repository':
      return { id: `projects/${project}/locations/${location}/repositories/${inputs.repositoryId}`, outputs: { name: inputs.repositoryId } };
    case 'gcp:compute/network:Network':
      return {
        id: `projects/${project}/global/networks/${physical}`,
        outputs: { selfLink: `https://www.googleapis.com/compute/v1/projects/${project}/global/networks/${physical}` },
      };
    case 'gcp:compute/subnetwork:Subnetwork':
      return { id: `projects/${project}/regions/${inputs.region}/subnetworks/${physical}` };
    case 'gcp:compute/address:Address':
      return { id: `projects/${project}/regions/${inputs.region}/addresses/${physical}`, outputs: { address: '10.10.0.5' } };
    case 'gcp:compute/disk:Disk':
      return { id: `projects/${project}/zones/${inputs.zone}/disks/${physical}` };
    case 'gcp:compute/instance:Instance':
      return { id: `projects/${project}/zones/${inputs.zone}/instances/${physical}`, outputs: { instanceId: '4455667788990011223' } };
    case 'gcp:vpcaccess/connector:Connector':
      return { id: `projects/${project}/locations/${inputs.region}/connectors/${physical}` };
    case 'gcp:eventarc/trigger:Trigger':
      return {
        id: `projects/${project}/locations/${location}/triggers/${physical}`,
        outputs: {
          uid: hash(physical),
          transport: {
            pubsubs: [
              {
                topic: `projects/${project}/topics/eventarc-${location}-${physical}-123`,
                subscription: `projects/${project}/subscriptions/eventarc-${location}-${physical}-sub-123`,
              },
            ],
          },
        },
      };
    case 'gcp:cloudscheduler/job:Job':
      return { id: `projects/${project}/locations/${inputs.region}/jobs/${physical}`, outputs: { state: 'ENABLED' } };
    case 'gcp:logging/metric:Metric':
      return { id: physical };
    case 'gcp:monitoring/alertPolicy:AlertPolicy': {
      const id = `projects/${project}/alertPolicies/${parseInt(hash(name), 36) % 1e15}`;
      return { id, outputs: { name: id } };
    }
    case 'gcp:monitoring/notificationChannel:NotificationChannel':
      return { id: `projects/${project}/notificationChannels/1234567890`, outputs: { name: `projects/${project}/notificationChannels/1234567890` } };
    case 'gcp:monitoring/dashboard:Dashboard':
      return { id: `projects/${TEST_PROJECT_NUMBER}/dashboards/${hash(name)}` };
    case 'gcp:projects/service:Service':
      return { id: `${project}/${inputs.service}` };
    case 'docker-build:index:Image':
      return { outputs: { ref: `${inputs.tags?.[0] ?? name}@sha256:${'0'.repeat(64)}`, digest: `sha256:${'0'.repeat(64)}` } };
    case 'time:index/sleep:Sleep':
      return { id: new Date(0).toISOString() };
    // The public search service's load balancer (search.access: public).
    case 'gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup': {
      const id = `projects/${project}/regions/${inputs.region}/networkEndpointGroups/${physical}`;
      return { id, outputs: { selfLink: `https://www.googleapis.com/compute/v1/${id}` } };
    }
    case 'gcp:compute/securityPolicy:SecurityPolicy': {
      const id = `projects/${project}/global/securityPolicies/${physical}`;
      return { id, outputs: { selfLink: `https://www.googleapis.com/compute/v1/${id}` } };
    }
    case 'gcp:compute/backendService:BackendService':
      return { id: `projects/${project}/global/backendServices/${physical}` };
    case 'gcp:compute/uRLMap:URLMap':
      return { id: `projects/${project}/global/urlMaps/${physical}` };
    case 'gcp:compute/managedSslCertificate:ManagedSslCertificate':
      return { id: `projects/${project}/global/sslCertificates/${physical}` };
    case 'gcp:compute/sSLPolicy:SSLPolicy': {
      const id = `projects/${project}/global/sslPolicies/${physical}`;
      return { id, outputs: { selfLink: `https://www.googleapis.com/compute/v1/${id}` } };
    }
    case 'gcp:compute/targetHttpsProxy:TargetHttpsProxy':
      return { id: `projects/${project}/global/targetHttpsProxies/${physical}` };
    case 'gcp:compute/globalAddress:GlobalAddress':
      return { id: `projects/${project}/global/addresses/${physical}`, outputs: { address: '203.0.113.10' } };
    // Generated secrets (computed by the providers at deploy time).
    case 'random:index/randomPassword:RandomPassword':
      return { id: 'none', outputs: { result: 'x'.repeat(inputs.length ?? 32) } };
    case 'tls:index/privateKey:PrivateKey':
      return {
        outputs: {
          privateKeyPem: `-----BEGIN PRIVATE KEY-----\n${hash(name)}\n-----END PRIVATE KEY-----\n`,
          privateKeyPemPkcs8: `-----BEGIN PRIVATE KEY-----\n${hash(name)}\n-----END PRIVATE KEY-----\n`,
        },
      };
    case 'tls:index/selfSignedCert:SelfSignedCert':
    case 'tls:index/locallySignedCert:LocallySignedCert':
      return { outputs: { certPem: `-----BEGIN CERTIFICATE-----\n${hash(name)}\n-----END CERTIFICATE-----\n` } };
    case 'tls:index/certRequest:CertRequest':
      return { outputs: { certRequestPem: `-----BEGIN CERTIFICATE REQUEST-----\n${hash(name)}\n-----END CERTIFICATE REQUEST-----\n` } };
    default:
      return { outputs: {} };
  }
}

/** Names of the resources an input value or a dependsOn list refers to. */
async function namesOf(value: unknown, names: Map<pulumi.Resource, string>, seen = new Set<unknown>()): Promise<string[]> {
  if (value === null || value === undefined || typeof value !== 'object' || seen.has(value)) return [];
  seen.add(value);
  if (pulumi.Resource.isInstance(value)) return names.has(value) ? [names.get(value)!] : [];
  if (pulumi.Output.isInstance(value)) {
    const out = value as unknown as { allResources?: () => Promise<Set<pulumi.Resource>>; resources: () => Set<pulumi.Resource> };
    const resources = out.allResources ? await out.allResources() : out.resources();
    return [...resources].flatMap((r) => (names.has(r) ? [names.get(r)!] : []));
  }
  if (value instanceof Promise) return namesOf(await value, names, seen);
  const nested = await Promise.all(Object.values(value as Record<string, unknown>).map((v) => namesOf(v, names, seen)));
  return nested.flat();
}

const resourceNames = new Map<pulumi.Resource, string>();

/** Records, for each resource as it is declared, what it waits for (explicit and through inputs). */
const recordDependencies: pulumi.ResourceTransformation = (args) => {
  resourceNames.set(args.resource, args.name);
  const parent = args.opts.parent ? resourceNames.get(args.opts.parent) : undefined;
  pendingDeps.set(`${args.type}::${args.name}`, {
    parent,
    explicit: Promise.all([namesOf(args.opts.dependsOn, resourceNames), namesOf(args.props, resourceNames)]).then(([a, b]) => [...new Set([...a, ...b])]),
  });
  return undefined;
};

let installed: Promise<void> | undefined;

/** Installs the mocks once per test file. */
export function installMocks(): Promise<void> {
  installed ??= pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        const { id, outputs = {} } = computed(args.type, args.name, args.inputs);
        const state = { name: args.inputs.name ?? args.name, ...args.inputs, ...outputs };
        recorded.push({ type: args.type, name: args.name, inputs: args.inputs, outputs: state, provider: args.provider, dependsOn: [] });
        return { id: id ?? `${args.name}-id`, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        switch (args.token) {
          case 'gcp:organizations/getProject:getProject':
            return { number: TEST_PROJECT_NUMBER, projectId: args.inputs.projectId, name: `projects/${TEST_PROJECT_NUMBER}` };
          case 'gcp:storage/getProjectServiceAccount:getProjectServiceAccount':
            // Reading it also creates Cloud Storage's service agent (the API documents this).
            return {
              emailAddress: `service-${TEST_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com`,
              member: `serviceAccount:service-${TEST_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com`,
            };
          case 'gcp:organizations/getClientConfig:getClientConfig':
            return { accessToken: 'test-token', project: TEST_PROJECT };
          default:
            throw new Error(`no mock for the data source ${args.token}: add what Google returns to infra/testing/mocks.ts`);
        }
      },
    },
    'image-semantic-search',
    'test',
    false,
  );
  return installed;
}

/** Waits until the program stops registering resources (mock registration is asynchronous). */
async function settle(): Promise<void> {
  let seen = -1;
  let quiet = 0;
  while (quiet < 3) {
    await new Promise((r) => setTimeout(r, 10));
    if (recorded.length === seen) quiet += 1;
    else {
      seen = recorded.length;
      quiet = 0;
    }
  }
}

export function testConfig(raw: Partial<RawStackConfig> = {}): StackConfig {
  return {
    ...parseStackConfig({ project: TEST_PROJECT, region: 'us-central1', prefix: 'iss', images: { build: true }, ...raw }),
    opensearchUsername: pulumi.secret('admin'),
    opensearchPassword: pulumi.secret(TEST_OPENSEARCH_PASSWORD),
  };
}

/** A program to build under the mocks: the stack itself by default. */
export type Program = (cfg: StackConfig, opts: { transformations: pulumi.ResourceTransformation[] }) => unknown;

/** Builds the whole stack with this config and returns every resource it registered. */
export async function buildStack(raw: Partial<RawStackConfig> = {}, program: Program = createStack): Promise<RecordedResource[]> {
  await installMocks();
  await settle();
  recorded.length = 0;
  pendingDeps.clear();
  program(testConfig(raw), { transformations: [recordDependencies] });
  await settle();
  const all = recorded.slice();
  for (const r of all) {
    const deps = pendingDeps.get(`${r.type}::${r.name}`);
    if (!deps) continue;
    r.parent = deps.parent;
    r.dependsOn = await deps.explicit;
  }
  return all;
}

/** The resources of one type. */
export const ofType = (resources: RecordedResource[], type: string) => resources.filter((r) => r.type === type);

import * as pulumi from '@pulumi/pulumi';
import { parseStackConfig, type RawStackConfig, type StackConfig } from '../config.js';
import { createStack } from '../stack.js';

/**
 * Offline harness for the Pulumi program: `pulumi.runtime.setMocks` stands in for the engine and
 * the provider, records every resource the program registers, and fills in the few outputs a
 * real provider would compute (emails, URLs, ids). Used by test/unit/infra-*.unit.test.ts.
 */
// Provider inputs are deep, resource-specific shapes; tests read them like JSON documents.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Inputs = Record<string, any>;

export interface RecordedResource {
  type: string;
  name: string;
  inputs: Inputs;
}

export const TEST_PROJECT = 'iss-test-project';
export const TEST_PROJECT_NUMBER = '123456789012';

const recorded: RecordedResource[] = [];

function computed(type: string, name: string, inputs: Inputs): Record<string, unknown> {
  const project = inputs.project ?? TEST_PROJECT;
  const physical = inputs.name ?? name;
  switch (type) {
    case 'gcp:serviceaccount/account:Account': {
      const email = `${inputs.accountId}@${project}.iam.gserviceaccount.com`;
      return { email, name: `projects/${project}/serviceAccounts/${email}`, member: `serviceAccount:${email}` };
    }
    case 'gcp:cloudfunctionsv2/function:Function': {
      const uri = `https://${physical}-abc123-uc.a.run.app`;
      return { url: uri, serviceConfig: { ...inputs.serviceConfig, service: physical, uri } };
    }
    case 'gcp:cloudrunv2/service:Service':
      return { uri: `https://${physical}-abc123-uc.a.run.app` };
    case 'gcp:compute/address:Address':
      return { address: '10.10.0.5' };
    case 'gcp:pubsub/topic:Topic':
      return { id: `projects/${project}/topics/${physical}` };
    case 'gcp:vpcaccess/connector:Connector':
      return { id: `projects/${project}/locations/${inputs.region}/connectors/${physical}` };
    case 'docker-build:index:Image':
      return { ref: `${inputs.tags?.[0] ?? name}@sha256:${'0'.repeat(64)}` };
    default:
      return {};
  }
}

let installed: Promise<void> | undefined;

/** Installs the mocks once per test file. */
export function installMocks(): Promise<void> {
  installed ??= pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        recorded.push({ type: args.type, name: args.name, inputs: args.inputs });
        const extra = computed(args.type, args.name, args.inputs);
        const state = { name: args.inputs.name ?? args.name, ...args.inputs, ...extra };
        return { id: (extra.id as string | undefined) ?? `${args.name}-id`, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        switch (args.token) {
          case 'gcp:organizations/getProject:getProject':
            return { number: TEST_PROJECT_NUMBER, projectId: args.inputs.projectId };
          case 'gcp:storage/getProjectServiceAccount:getProjectServiceAccount':
            return { emailAddress: `service-${TEST_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com` };
          case 'gcp:organizations/getClientConfig:getClientConfig':
            return { accessToken: 'test-token', project: TEST_PROJECT };
          default:
            return args.inputs;
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
    opensearchPassword: pulumi.secret('correct-horse-battery-staple'),
  };
}

/** Builds the whole stack with this config and returns every resource it registered. */
export async function buildStack(raw: Partial<RawStackConfig> = {}): Promise<RecordedResource[]> {
  await installMocks();
  await settle();
  recorded.length = 0;
  createStack(testConfig(raw));
  await settle();
  return recorded.slice();
}

/** The resources of one type. */
export const ofType = (resources: RecordedResource[], type: string) => resources.filter((r) => r.type === type);

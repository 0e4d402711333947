import * as pulumi from '@pulumi/pulumi';
import { beforeAll, describe, expect, it } from 'vitest';
import { installMocks } from '../../infra/testing/mocks.js';
import * as gcp from '@pulumi/gcp';
import { cloudRunJobMember, grantOnBucket, objectPrefixCondition } from '../../infra/grants.js';
import { grantCustomRoleOnProject, grantOnProject, serviceAccount, serviceAccountMember } from '../../infra/iam.js';

/**
 * The IAM helpers, each exercised inside its own test: the stack-wide policy tests build the stack
 * once per file, so a helper's mutation there is attributed to no single test (mutation testing,
 * docs/MUTATION.md). Expected values are literals.
 */
const valueOf = <T>(output: pulumi.Output<T>): Promise<T> => new Promise((resolve) => output.apply(resolve));

beforeAll(() => installMocks());

describe('IAM helpers', () => {
  it('a prefix condition limits object calls and listing to the prefix (Cloud Storage IAM conditions)', async () => {
    const condition = objectPrefixCondition('iss-features', 'feedback/');
    expect(condition.title).toBe('only feedback/');
    expect(condition.description).toBe('Objects under feedback/ only');
    expect(await valueOf(condition.expression)).toBe(
      'resource.name.startsWith("projects/_/buckets/iss-features/objects/feedback/") || api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("feedback/")',
    );
  });

  it('a bucket grant carries the prefix condition only when a prefix is given', async () => {
    const member = 'serviceAccount:a@p.iam.gserviceaccount.com';
    const limited = grantOnBucket('limited', 'iss-features', { role: 'roles/storage.objectViewer', member, prefix: 'features/' }, {});
    const whole = grantOnBucket('whole', 'iss-features', { role: 'roles/storage.objectViewer', member }, {});
    const c = await valueOf(limited.condition);
    expect(c?.title).toBe('only features/');
    expect(c?.expression).toMatch(/^resource\.name\.startsWith\("projects\/_\/buckets\/iss-features\/objects\/features\/"\)/);
    expect(await valueOf(whole.condition)).toBeUndefined();
    expect(await valueOf(limited.role)).toBe('roles/storage.objectViewer');
    expect(await valueOf(limited.member)).toBe(member);
  });

  it('a service account id longer than 30 characters is refused at program time, naming the fix', async () => {
    const thirty = serviceAccount('sa30', { prefix: 'a'.repeat(20), suffix: 'b'.repeat(9), project: 'p', purpose: 'x' }, {});
    expect(await valueOf(thirty.accountId)).toBe(`${'a'.repeat(20)}-${'b'.repeat(9)}`);
    expect(() => serviceAccount('sa31', { prefix: 'a'.repeat(20), suffix: 'b'.repeat(10), project: 'p', purpose: 'x' }, {})).toThrow(
      `service account id "${'a'.repeat(20)}-${'b'.repeat(10)}" is longer than 30 characters; shorten iss:prefix`,
    );
  });

  it('project-level grants only for roles that have no resource-level binding', async () => {
    const ok = grantOnProject('writer', { project: 'p', role: 'roles/logging.logWriter', member: 'serviceAccount:x@p.iam.gserviceaccount.com' }, {});
    expect(await valueOf(ok.role)).toBe('roles/logging.logWriter');
    expect(() => grantOnProject('bad', { project: 'p', role: 'roles/storage.objectViewer', member: 'serviceAccount:x@p.iam.gserviceaccount.com' }, {})).toThrow(
      'roles/storage.objectViewer must be bound on a resource, not on the project (bad)',
    );
  });
  it('members and job/custom-role grants say who, on what, with which role', async () => {
    expect(await valueOf(serviceAccountMember('a@p.iam.gserviceaccount.com'))).toBe('serviceAccount:a@p.iam.gserviceaccount.com');
    const job = cloudRunJobMember(
      'viewer',
      { project: 'p', location: 'us-central1', job: 'iss-embed', role: 'roles/run.viewer', member: 'serviceAccount:x@p.iam.gserviceaccount.com' },
      {},
    );
    expect(await valueOf(job.name)).toBe('iss-embed');
    expect(await valueOf(job.location)).toBe('us-central1');
    expect(await valueOf(job.role)).toBe('roles/run.viewer');
    const role = new gcp.projects.IAMCustomRole('starter', {
      project: 'p',
      roleId: 'issVertexStarter',
      title: 't',
      permissions: ['aiplatform.customJobs.create'],
    });
    const custom = grantCustomRoleOnProject('starter-grant', { project: 'p', role, member: 'serviceAccount:x@p.iam.gserviceaccount.com' }, {});
    expect(await valueOf(custom.role)).toBe(await valueOf(role.name));
    expect(await valueOf(custom.role)).toMatch(/^projects\/p\/roles\/issVertexStarter$/);
    expect(await valueOf(custom.member)).toBe('serviceAccount:x@p.iam.gserviceaccount.com');
  });
});

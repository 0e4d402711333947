import type { CloudWorkload } from '../../shared/wiring/cloud-access.js';
import { RETRAIN_JOB_SPEC_ENV } from '../../shared/wiring/cloud-config.js';
import type { RecordedResource } from '../testing/mocks.js';
import { ROLE_DATA, SERVICE_AGENTS } from './google-rules.js';

/**
 * The deployed stack as the deploy check sees it: which identity runs which workload with which
 * environment, every IAM grant (on what, with what condition), and a way to find resources by the
 * names Google knows them by. Built from the resources the program registered under the mocks.
 */

/** What a grant is bound on. `project` covers everything in the project. */
export type GrantTarget =
  { kind: 'project' } | { kind: 'bucket' | 'topic' | 'subscription' | 'runJob' | 'runService' | 'secret' | 'serviceAccount' | 'repository'; name: string };

export interface Grant {
  /** Logical name of the IAM resource (for messages and ordering). */
  resource: string;
  member: string;
  role: string;
  target: GrantTarget;
  /** Object-name prefix a Cloud Storage IAM condition limits object calls to. */
  prefix?: string;
  /** Prefix the condition allows listing under (`storage.googleapis.com/objectListPrefix`). */
  listPrefix?: string;
}

export interface Workload {
  name: CloudWorkload;
  /** The Pulumi resource that runs it (function, job, service); the trainer runs in Vertex AI. */
  resource?: RecordedResource;
  identity: string;
  env: Record<string, string>;
  /** Secret Manager secret ids behind env variables. */
  secrets: string[];
  /** URL(s) it is reached at (functions, services). */
  urls: string[];
}

export const WORKLOAD_LABEL = 'workload';

const short = (nameOrPath: string) => nameOrPath.split('/').pop()!;
const emailOfAccountId = (id: string) => short(id);

/**
 * The prefixes of a Cloud Storage IAM condition as infra/grants.ts `objectPrefixCondition` writes it
 * (cloud.google.com/storage/docs/access-control/iam#conditions): object names under
 * `resource.name.startsWith("projects/_/buckets/B/objects/P")`, listing under
 * `api.getAttribute("storage.googleapis.com/objectListPrefix", "").startsWith("P")`.
 */
export function prefixesOfCondition(expression: string | undefined): { prefix?: string; listPrefix?: string } {
  if (!expression) return {};
  const objects = /resource\.name\.startsWith\("projects\/_\/buckets\/[^/]+\/objects\/([^"]*)"\)/.exec(expression);
  const list = /api\.getAttribute\("storage\.googleapis\.com\/objectListPrefix", ""\)\.startsWith\("([^"]*)"\)/.exec(expression);
  if (!objects && !list) throw new Error(`the deploy check cannot read the IAM condition ${JSON.stringify(expression)}`);
  return { ...(objects ? { prefix: objects[1] } : {}), ...(list ? { listPrefix: list[1] } : {}) };
}

export class StackModel {
  readonly grants: Grant[] = [];
  readonly workloads = new Map<CloudWorkload, Workload>();
  /** Custom role name → permissions. */
  readonly customRoles = new Map<string, string[]>();
  readonly enabledApis = new Set<string>();
  /** Services whose agent the stack creates explicitly (`ServiceIdentity`). */
  readonly createdAgents = new Set<string>();
  private readonly byName = new Map<string, RecordedResource>();

  constructor(
    readonly resources: RecordedResource[],
    readonly projectNumber: string,
  ) {
    for (const r of resources) this.byName.set(r.name, r);
    for (const r of this.ofType('gcp:projects/service:Service')) this.enabledApis.add(r.inputs.service);
    for (const r of this.ofType('gcp:projects/serviceIdentity:ServiceIdentity')) this.createdAgents.add(r.inputs.service);
    for (const r of this.ofType('gcp:projects/iAMCustomRole:IAMCustomRole')) this.customRoles.set(r.outputs.name, r.inputs.permissions ?? []);
    this.readGrants();
    this.readWorkloads();
  }

  ofType(type: string): RecordedResource[] {
    return this.resources.filter((r) => r.type === type);
  }

  /** A resource of a type whose Google-side name (short name, id or full path) is `name`. */
  find(type: string, name: string): RecordedResource | undefined {
    const want = short(name);
    return this.ofType(type).find(
      (r) => [r.inputs.name, r.inputs.accountId, r.inputs.secretId, r.inputs.repositoryId, r.outputs.email].includes(want) || r.outputs.email === name,
    );
  }

  private readGrants(): void {
    const add = (r: RecordedResource, target: GrantTarget) =>
      this.grants.push({ resource: r.name, member: r.inputs.member, role: r.inputs.role, target, ...prefixesOfCondition(r.inputs.condition?.expression) });
    for (const r of this.ofType('gcp:projects/iAMMember:IAMMember')) add(r, { kind: 'project' });
    for (const r of this.ofType('gcp:storage/bucketIAMMember:BucketIAMMember')) add(r, { kind: 'bucket', name: short(r.inputs.bucket) });
    for (const r of this.ofType('gcp:pubsub/topicIAMMember:TopicIAMMember')) add(r, { kind: 'topic', name: short(r.inputs.topic) });
    for (const r of this.ofType('gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember')) add(r, { kind: 'subscription', name: short(r.inputs.subscription) });
    for (const r of this.ofType('gcp:cloudrunv2/jobIamMember:JobIamMember')) add(r, { kind: 'runJob', name: short(r.inputs.name) });
    for (const r of this.ofType('gcp:cloudrunv2/serviceIamMember:ServiceIamMember')) add(r, { kind: 'runService', name: short(r.inputs.name) });
    for (const r of this.ofType('gcp:secretmanager/secretIamMember:SecretIamMember')) add(r, { kind: 'secret', name: short(r.inputs.secretId) });
    for (const r of this.ofType('gcp:serviceaccount/iAMMember:IAMMember'))
      add(r, { kind: 'serviceAccount', name: emailOfAccountId(r.inputs.serviceAccountId) });
    for (const r of this.ofType('gcp:artifactregistry/repositoryIamMember:RepositoryIamMember'))
      add(r, { kind: 'repository', name: short(r.inputs.repository) });
    // Service agents hold their Google-granted role on the project, once they exist.
    for (const agent of ['pubsub', 'eventarc', 'aiplatform', 'run', 'cloudfunctions', 'cloudscheduler'] as const) {
      const info = AGENT_ROLES[agent];
      if (info.createdBy === 'identity' && !this.createdAgents.has(info.service)) continue;
      this.grants.push({
        resource: `(Google) ${agent} service agent`,
        member: `serviceAccount:${info.email.replace('{number}', this.projectNumber)}`,
        role: info.role,
        target: { kind: 'project' },
      });
    }
  }

  private readWorkloads(): void {
    const label = (r: RecordedResource): CloudWorkload | undefined =>
      r.inputs.labels?.[WORKLOAD_LABEL]?.replace(/-([a-z])/g, (_: string, c: string) => c.toUpperCase());
    for (const fn of this.ofType('gcp:cloudfunctionsv2/function:Function')) {
      const name = label(fn);
      if (!name) continue;
      const sc = fn.inputs.serviceConfig ?? {};
      this.workloads.set(name, {
        name,
        resource: fn,
        identity: sc.serviceAccountEmail,
        env: { ...(sc.environmentVariables ?? {}) },
        secrets: (sc.secretEnvironmentVariables ?? []).map((s: { secret: string }) => short(s.secret)),
        urls: [fn.outputs.url, fn.outputs.serviceConfig?.uri].filter(Boolean),
      });
    }
    for (const type of ['gcp:cloudrunv2/job:Job', 'gcp:cloudrunv2/service:Service']) {
      for (const r of this.ofType(type)) {
        const name = label(r);
        if (!name) continue;
        const template = type.endsWith('Job') ? r.inputs.template.template : r.inputs.template;
        const envs: { name: string; value?: string; valueSource?: { secretKeyRef?: { secret: string } } }[] = template.containers?.[0]?.envs ?? [];
        this.workloads.set(name, {
          name,
          resource: r,
          identity: template.serviceAccount,
          env: Object.fromEntries(envs.filter((e) => e.value !== undefined).map((e) => [e.name, e.value!])),
          secrets: envs.flatMap((e) => (e.valueSource?.secretKeyRef ? [short(e.valueSource.secretKeyRef.secret)] : [])),
          urls: r.outputs.uri ? [r.outputs.uri] : [],
        });
      }
    }
    // The Vertex AI job runs as TRAINER_SERVICE_ACCOUNT with the settings startRetraining puts in its spec.
    const starter = this.workloads.get('startRetraining');
    if (starter?.env.TRAINER_SERVICE_ACCOUNT) {
      const pick: readonly string[] = RETRAIN_JOB_SPEC_ENV;
      this.workloads.set('retrainJob', {
        name: 'retrainJob',
        identity: starter.env.TRAINER_SERVICE_ACCOUNT,
        env: Object.fromEntries(pick.filter((k) => starter.env[k] !== undefined).map((k) => [k, starter.env[k]!])),
        secrets: [],
        urls: [],
      });
    }
  }

  /** Permissions a role holds (predefined from Google's data, or one of the stack's custom roles). */
  permissionsOf(role: string): string[] | undefined {
    return this.customRoles.get(role) ?? ROLES[role];
  }

  /** Grants that give `member` the permission on the target (project grants cover everything). */
  holders(member: string, permission: string, target: GrantTarget, objectPrefix?: string): Grant[] {
    return this.grants.filter((g) => {
      if (g.member !== member) return false;
      if (!this.permissionsOf(g.role)?.includes(permission)) return false;
      if (g.target.kind === 'project') return true;
      if (target.kind === 'project' || g.target.kind !== target.kind || g.target.name !== target.name) return false;
      if (g.prefix === undefined && g.listPrefix === undefined) return true;
      // A prefix condition covers object calls under its prefix, and listing only through its
      // objectListPrefix clause (a list request is checked on the bucket, not on an object).
      if (objectPrefix === undefined) return false;
      if (permission === 'storage.objects.list') return g.listPrefix !== undefined && objectPrefix.startsWith(g.listPrefix);
      return g.prefix !== undefined && objectPrefix.startsWith(g.prefix);
    });
  }

  /** Transitive dependencies of a resource: what must exist before it is created. */
  dependenciesOf(name: string): Set<string> {
    const out = new Set<string>();
    const stack = [name];
    while (stack.length > 0) {
      const current = this.byName.get(stack.pop()!);
      if (!current) continue;
      for (const dep of current.dependsOn) {
        if (out.has(dep)) continue;
        out.add(dep);
        stack.push(dep);
        // Depending on a component means waiting for everything inside it.
        for (const child of this.descendantsOf(dep)) {
          if (out.has(child)) continue;
          out.add(child);
          stack.push(child);
        }
      }
    }
    return out;
  }

  descendantsOf(name: string): string[] {
    const children = this.resources.filter((r) => r.parent === name).map((r) => r.name);
    return [...children, ...children.flatMap((c) => this.descendantsOf(c))];
  }
}

const ROLES = ROLE_DATA.roles;
const AGENT_ROLES = SERVICE_AGENTS as unknown as Record<string, { email: string; role: string; createdBy: string; service: string }>;

import { deadLetterTopicOf } from '../../shared/adapters/gcp/pubsub-names.js';
import {
  accessNeeds,
  callApplies,
  CLOUD_WORKLOADS,
  WORKLOAD_CALLS,
  type CloudWorkload,
  type ResourceRef,
  type WorkloadCall,
} from '../../shared/wiring/cloud-access.js';
import type { RecordedResource } from '../testing/mocks.js';
import { ADAPTER_APIS, agentEmail, NAME_RULES, RESOURCE_APIS } from './google-rules.js';
import { StackModel, type GrantTarget, type Workload } from './stack-model.js';

/**
 * The rules of the deploy check. Each returns findings naming what fails in a fresh project and
 * why; an empty list means the rule holds. They read only what the program registered (under the
 * realistic mocks of infra/testing/mocks.ts) and Google's data in google-rules.ts.
 */
export type RuleName = 'permissions' | 'platform-permissions' | 'apis' | 'names' | 'locations' | 'start-up order' | 'exposure';

export interface Finding {
  rule: RuleName;
  message: string;
}

export interface CheckOptions {
  projectNumber: string;
  region: string;
  /** Regions where Cloud Run jobs can have an NVIDIA L4 (infra/config.ts). */
  gpuRegions?: readonly string[];
  /** Calls added to a workload's own (tests: "a new call without a grant fails"). */
  extraCalls?: Partial<Record<CloudWorkload, WorkloadCall[]>>;
}

const sa = (email: string) => `serviceAccount:${email}`;
const short = (s: string) => s.split('/').pop()!;

function describeTarget(t: GrantTarget, prefix?: string): string {
  return t.kind === 'project' ? 'the project' : `${t.kind} ${t.name}${prefix ? ` (objects under ${prefix})` : ''}`;
}

/** Resolves a workload's resource reference to the resource Google would check, or a finding. */
function resolve(model: StackModel, w: Workload, ref: ResourceRef): { target: GrantTarget; prefix?: string } | { missing: string } {
  if (ref.kind === 'project') return { target: { kind: 'project' } };
  if ('pushSource' in ref) {
    const sub = model
      .ofType('gcp:pubsub/subscription:Subscription')
      .find((s) => w.urls.some((u) => String(s.inputs.pushConfig?.pushEndpoint ?? '').startsWith(u)));
    if (!sub) return { missing: `no push subscription delivers to ${w.name}` };
    const source = short(sub.inputs.topic);
    const topic = ref.deadLetter ? deadLetterTopicOf(source) : source;
    return model.find('gcp:pubsub/topic:Topic', topic)
      ? { target: { kind: 'topic', name: topic } }
      : { missing: `topic ${topic} (from its push subscription) does not exist` };
  }
  if ('self' in ref) {
    return model.find('gcp:serviceaccount/account:Account', w.identity)
      ? { target: { kind: 'serviceAccount', name: w.identity } }
      : { missing: `its own service account ${w.identity} is not in the stack` };
  }
  const value = w.env[ref.env];
  if (value === undefined) return { missing: `${ref.env} is not in its environment` };
  switch (ref.kind) {
    case 'bucket':
      return model.find('gcp:storage/bucket:Bucket', value)
        ? { target: { kind: 'bucket', name: value }, prefix: ref.prefix ?? (ref.prefixEnv ? (w.env[ref.prefixEnv] ?? '') : '') }
        : { missing: `bucket ${value} (${ref.env}) is not in the stack` };
    case 'topic': {
      const name = ref.deadLetter ? deadLetterTopicOf(short(value)) : short(value);
      return model.find('gcp:pubsub/topic:Topic', name) ? { target: { kind: 'topic', name } } : { missing: `topic ${name} (${ref.env}) is not in the stack` };
    }
    case 'subscription':
      return model.find('gcp:pubsub/subscription:Subscription', value)
        ? { target: { kind: 'subscription', name: short(value) } }
        : { missing: `subscription ${value} (${ref.env}) is not in the stack` };
    case 'runJob':
      return model.find('gcp:cloudrunv2/job:Job', value)
        ? { target: { kind: 'runJob', name: value } }
        : { missing: `Cloud Run job ${value} (${ref.env}) is not in the stack` };
    case 'serviceAccount':
      return model.find('gcp:serviceaccount/account:Account', value)
        ? { target: { kind: 'serviceAccount', name: value } }
        : { missing: `service account ${value} (${ref.env}) is not in the stack` };
  }
}

/** Every permission the workloads' code needs (adapters it wires), checked against the grants. */
export function checkWorkloadPermissions(model: StackModel, options: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  for (const name of CLOUD_WORKLOADS) {
    const w = model.workloads.get(name);
    if (!w) {
      findings.push({ rule: 'permissions', message: `workload ${name} is not deployed (no resource labelled workload=${name})` });
      continue;
    }
    const calls = [...WORKLOAD_CALLS[name], ...(options.extraCalls?.[name] ?? [])].filter((c) => callApplies(c, w.env));
    for (const need of accessNeeds(name, calls)) {
      const where = resolve(model, w, need.resource);
      if ('missing' in where) {
        findings.push({ rule: 'permissions', message: `${name}: ${need.call} needs ${need.permission}, but ${where.missing}` });
        continue;
      }
      if (model.holders(sa(w.identity), need.permission, where.target, where.prefix).length === 0) {
        findings.push({
          rule: 'permissions',
          message: `${name} (runs as ${w.identity}): ${need.call} (${need.why}) needs ${need.permission} on ${describeTarget(where.target, where.prefix)}; no role the stack grants holds it there`,
        });
      }
    }
    // Secret-backed variables are resolved by Cloud Run as the workload's identity.
    for (const secret of w.secrets) {
      if (model.holders(sa(w.identity), 'secretmanager.versions.access', { kind: 'secret', name: secret }).length === 0) {
        findings.push({
          rule: 'permissions',
          message: `${name} (runs as ${w.identity}): its secret variable from ${secret} needs secretmanager.versions.access on secret ${secret}`,
        });
      }
    }
  }
  return findings;
}

/** The Cloud Run service behind a URL (gen2 functions are Cloud Run services). */
function serviceAt(model: StackModel, url: string): string | undefined {
  for (const fn of model.ofType('gcp:cloudfunctionsv2/function:Function')) {
    if ([fn.outputs.url, fn.outputs.serviceConfig?.uri].some((u) => u && url.startsWith(u))) return fn.inputs.name;
  }
  return model.ofType('gcp:cloudrunv2/service:Service').find((s) => s.outputs.uri && url.startsWith(s.outputs.uri))?.inputs.name;
}

/** What Google's own machinery does as some identity: push, dead-letter, triggers, schedules, builds. */
export function checkPlatformPermissions(model: StackModel, options: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  const need = (who: string, permission: string, target: GrantTarget, what: string, prefix?: string) => {
    if (model.holders(who, permission, target, prefix).length === 0) {
      findings.push({ rule: 'platform-permissions', message: `${what}: ${who} needs ${permission} on ${describeTarget(target, prefix)}` });
    }
  };
  const pubsubAgent = sa(agentEmail('pubsub', options.projectNumber));

  for (const sub of model.ofType('gcp:pubsub/subscription:Subscription')) {
    const name = sub.inputs.name;
    if (sub.inputs.deadLetterPolicy) {
      const dlt = short(sub.inputs.deadLetterPolicy.deadLetterTopic);
      need(pubsubAgent, 'pubsub.topics.publish', { kind: 'topic', name: dlt }, `dead-lettering from ${name} (Pub/Sub service agent)`);
      need(pubsubAgent, 'pubsub.subscriptions.consume', { kind: 'subscription', name }, `dead-lettering from ${name} (Pub/Sub service agent)`);
    }
    const push = sub.inputs.pushConfig;
    if (push?.pushEndpoint) {
      const service = serviceAt(model, push.pushEndpoint);
      if (!service)
        findings.push({
          rule: 'platform-permissions',
          message: `push subscription ${name} delivers to ${push.pushEndpoint}, which no function or service of the stack serves`,
        });
      const pusher = push.oidcToken?.serviceAccountEmail;
      if (!pusher)
        findings.push({ rule: 'platform-permissions', message: `push subscription ${name} sends no OIDC token: the internal-only function would answer 403` });
      else {
        if (service) need(sa(pusher), 'run.routes.invoke', { kind: 'runService', name: service }, `push from ${name}`);
        need(pubsubAgent, 'iam.serviceAccounts.getOpenIdToken', { kind: 'serviceAccount', name: pusher }, `push from ${name} (Pub/Sub mints the OIDC token)`);
      }
    }
  }

  const storageAgent = sa(agentEmail('storage', options.projectNumber));
  for (const trigger of model.ofType('gcp:eventarc/trigger:Trigger')) {
    const what = `Eventarc trigger ${trigger.inputs.name}`;
    const service = trigger.inputs.destination?.cloudRunService?.service as string | undefined;
    if (
      service &&
      model.find('gcp:cloudrunv2/service:Service', service) === undefined &&
      !model.ofType('gcp:cloudfunctionsv2/function:Function').some((f) => f.inputs.name === service)
    ) {
      findings.push({ rule: 'platform-permissions', message: `${what}: destination service "${service}" is not a Cloud Run service of the stack` });
    }
    const account = trigger.inputs.serviceAccount;
    if (!account) findings.push({ rule: 'platform-permissions', message: `${what} has no service account: it would run as the Compute default account` });
    else {
      need(sa(account), 'eventarc.events.receiveEvent', { kind: 'project' }, what);
      if (service) need(sa(account), 'run.routes.invoke', { kind: 'runService', name: short(service) }, `${what} delivering to ${short(service)}`);
    }
    // Direct GCS events are published by Cloud Storage's service agent to Eventarc's topic.
    need(storageAgent, 'pubsub.topics.publish', { kind: 'project' }, `${what} (Cloud Storage service agent publishes the events)`);
  }

  const schedulerAgent = sa(agentEmail('cloudscheduler', options.projectNumber));
  for (const job of model.ofType('gcp:cloudscheduler/job:Job')) {
    const http = job.inputs.httpTarget;
    if (http) {
      const service = serviceAt(model, http.uri);
      const caller = http.oidcToken?.serviceAccountEmail;
      if (!service)
        findings.push({ rule: 'platform-permissions', message: `Scheduler job ${job.inputs.name} calls ${http.uri}, which no service of the stack serves` });
      if (!caller) findings.push({ rule: 'platform-permissions', message: `Scheduler job ${job.inputs.name} sends no OIDC token` });
      if (service && caller) need(sa(caller), 'run.routes.invoke', { kind: 'runService', name: service }, `Scheduler job ${job.inputs.name}`);
      if (caller)
        need(
          schedulerAgent,
          'iam.serviceAccounts.getOpenIdToken',
          { kind: 'serviceAccount', name: caller },
          `Scheduler job ${job.inputs.name} (Scheduler mints the OIDC token)`,
        );
    }
    if (job.inputs.pubsubTarget)
      need(schedulerAgent, 'pubsub.topics.publish', { kind: 'topic', name: short(job.inputs.pubsubTarget.topicName) }, `Scheduler job ${job.inputs.name}`);
  }

  // Gen2 builds: the source is copied to Google's gcf-v2-sources bucket, built by the build
  // account, pushed to Artifact Registry (cloud.google.com/functions/docs/building#build_service_account).
  const sourcesBucket = `gcf-v2-sources-${options.projectNumber}-${options.region}`;
  for (const fn of model.ofType('gcp:cloudfunctionsv2/function:Function')) {
    const builder = fn.inputs.buildConfig?.serviceAccount as string | undefined;
    const what = `build of function ${fn.inputs.name}`;
    if (!builder) {
      findings.push({
        rule: 'platform-permissions',
        message: `${what} names no build service account: it would use the Compute default account, which new projects give no role`,
      });
      continue;
    }
    // Cloud Functions' agent copies the archive from the stack's bucket into gcf-v2-sources.
    const source = fn.inputs.buildConfig?.source?.storageSource;
    if (source)
      need(
        sa(agentEmail('cloudfunctions', options.projectNumber)),
        'storage.objects.get',
        { kind: 'bucket', name: source.bucket },
        `${what} (Cloud Functions copies the source)`,
        source.object,
      );
    const who = sa(short(builder));
    need(who, 'storage.objects.get', { kind: 'bucket', name: sourcesBucket }, what, 'functions/');
    need(
      who,
      'artifactregistry.repositories.uploadArtifacts',
      fn.inputs.buildConfig.dockerRepository ? { kind: 'repository', name: short(fn.inputs.buildConfig.dockerRepository) } : { kind: 'project' },
      what,
    );
    need(who, 'logging.logEntries.create', { kind: 'project' }, what);
  }

  // Vertex AI pulls the trainer image as its service agent; startRetraining needs actAs on the trainer (above).
  if (model.workloads.has('retrainJob')) {
    need(
      sa(agentEmail('aiplatform', options.projectNumber)),
      'artifactregistry.repositories.downloadArtifacts',
      { kind: 'project' },
      'Vertex AI pulling the trainer image',
    );
    // A scheduled tuning run (`iss:retrain.tune`, jobs/retrain --tune=true): the trainer creates and
    // watches a hyperparameter tuning job whose trials run as the trainer account itself.
    const trainer = model.workloads.get('retrainJob')!.identity;
    const tuning = model
      .ofType('gcp:cloudscheduler/job:Job')
      .some((j) => /"tune":"true"/.test(Buffer.from(String(j.inputs.pubsubTarget?.data ?? ''), 'base64').toString('utf8')));
    if (tuning && trainer) {
      const what = 'the scheduled hyperparameter tuning run';
      for (const permission of ['aiplatform.hyperparameterTuningJobs.create', 'aiplatform.hyperparameterTuningJobs.get'])
        need(sa(trainer), permission, { kind: 'project' }, what);
      need(sa(trainer), 'iam.serviceAccounts.actAs', { kind: 'serviceAccount', name: trainer }, `${what} (its trials run as the trainer)`);
    }
  }

  for (const vm of model.ofType('gcp:compute/instance:Instance')) {
    const email = vm.inputs.serviceAccount?.email;
    const script = String(vm.inputs.metadata?.['startup-script'] ?? '');
    for (const secret of model.ofType('gcp:secretmanager/secret:Secret')) {
      if (script.includes(`/secrets/${secret.inputs.secretId}/`))
        need(sa(email), 'secretmanager.versions.access', { kind: 'secret', name: secret.inputs.secretId }, `VM ${vm.inputs.name} start-up script`);
    }
    for (const repo of model.ofType('gcp:artifactregistry/repository:Repository')) {
      if (script.includes(`/${repo.inputs.repositoryId}/`))
        need(
          sa(email),
          'artifactregistry.repositories.downloadArtifacts',
          { kind: 'repository', name: repo.inputs.repositoryId },
          `VM ${vm.inputs.name} pulling its image`,
        );
    }
  }
  return findings;
}

/** Every resource and every client call goes through an API the stack enables, and waits for it. */
export function checkApis(model: StackModel, alwaysOn: readonly string[] = ['serviceusage.googleapis.com']): Finding[] {
  const findings: Finding[] = [];
  const enabled = new Set([...model.enabledApis, ...alwaysOn]);
  const providers = model.ofType('pulumi:providers:gcp');
  const gated = providers.filter((p) => model.ofType('gcp:projects/service:Service').every((s) => p.dependsOn.includes(s.name)));
  const gatedIds = gated.map((p) => `::${p.name}::`);
  const seenTypes = new Set<string>();
  for (const r of model.resources) {
    if (!r.type.startsWith('gcp:')) continue;
    const apis = RESOURCE_APIS[r.type];
    if (!apis) {
      if (!seenTypes.has(r.type))
        findings.push({ rule: 'apis', message: `resource type ${r.type} has no API in google-rules.ts RESOURCE_APIS: add the service it is created through` });
      seenTypes.add(r.type);
      continue;
    }
    for (const api of apis)
      if (!enabled.has(api) && !seenTypes.has(`${r.type}|${api}`)) {
        seenTypes.add(`${r.type}|${api}`);
        findings.push({ rule: 'apis', message: `${r.type} (e.g. ${r.name}) is created through ${api}, which the stack does not enable` });
      }
    if (r.type !== 'gcp:projects/service:Service' && !gatedIds.some((id) => r.provider?.includes(id))) {
      findings.push({ rule: 'apis', message: `${r.name} (${r.type}) is not created through a provider that waits for the APIs to be enabled` });
    }
  }
  for (const name of CLOUD_WORKLOADS) {
    const apis = new Set(WORKLOAD_CALLS[name].map((c) => ADAPTER_APIS[c.adapter]));
    if ((model.workloads.get(name)?.secrets.length ?? 0) > 0) apis.add('secretmanager.googleapis.com');
    for (const api of apis)
      if (!enabled.has(api)) findings.push({ rule: 'apis', message: `${name} calls ${api} at run time, which the stack does not enable` });
  }
  return findings;
}

/** Names passed between resources are the kind Google expects; names fit Google's limits. */
export function checkNames(model: StackModel): Finding[] {
  const findings: Finding[] = [];
  const bad = (what: string, value: unknown, rule: RegExp, why: string) => {
    if (typeof value !== 'string' || !rule.test(value)) findings.push({ rule: 'names', message: `${what} is ${JSON.stringify(value)}: ${why}` });
  };
  for (const t of model.ofType('gcp:eventarc/trigger:Trigger')) {
    bad(
      `Eventarc trigger ${t.inputs.name}: destination.cloudRunService.service`,
      t.inputs.destination?.cloudRunService?.service,
      NAME_RULES.cloudRunName,
      'Eventarc wants the Cloud Run service name, not a resource path',
    );
  }
  const serviceNames = new Set([
    ...model.ofType('gcp:cloudfunctionsv2/function:Function').map((f) => f.inputs.name),
    ...model.ofType('gcp:cloudrunv2/service:Service').map((s) => s.inputs.name),
  ]);
  for (const m of model.ofType('gcp:logging/metric:Metric')) {
    const match = /resource\.labels\.service_name = one_of\(([^)]*)\)/.exec(m.inputs.filter ?? '');
    for (const value of match ? [...match[1].matchAll(/"([^"]*)"/g)].map((x) => x[1]) : []) {
      if (!serviceNames.has(value))
        findings.push({
          rule: 'names',
          message: `log metric ${m.inputs.name} filters on service_name "${value}", which is not the name of a service of the stack: the metric never counts`,
        });
    }
  }
  for (const a of model.ofType('gcp:serviceaccount/account:Account'))
    bad(`service account id`, a.inputs.accountId, NAME_RULES.serviceAccountId, '6–30 lowercase letters, digits, hyphens');
  for (const type of ['gcp:cloudrunv2/job:Job', 'gcp:cloudrunv2/service:Service', 'gcp:cloudfunctionsv2/function:Function']) {
    for (const r of model.ofType(type))
      bad(`${type.split(':').pop()} name`, r.inputs.name, NAME_RULES.cloudRunName, 'at most 49 lowercase letters, digits, hyphens');
  }
  for (const c of model.ofType('gcp:vpcaccess/connector:Connector'))
    bad('VPC connector name', c.inputs.name, NAME_RULES.connectorName, 'at most 25 characters');
  for (const b of model.ofType('gcp:storage/bucket:Bucket')) bad('bucket name', b.inputs.name, NAME_RULES.bucketName, '3–63 characters');
  for (const type of ['gcp:pubsub/topic:Topic', 'gcp:pubsub/subscription:Subscription']) {
    for (const r of model.ofType(type)) bad(`${type.split(':').pop()} id`, r.inputs.name, NAME_RULES.pubsubId, '3–255 characters, starting with a letter');
  }
  return findings;
}

/** Triggers where their buckets are; GPUs where Cloud Run has them. */
export function checkLocations(model: StackModel, options: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  for (const t of model.ofType('gcp:eventarc/trigger:Trigger')) {
    const bucketName = t.inputs.matchingCriterias?.find((c: { attribute: string }) => c.attribute === 'bucket')?.value;
    const bucket = bucketName ? model.find('gcp:storage/bucket:Bucket', bucketName) : undefined;
    if (!bucket) {
      findings.push({ rule: 'locations', message: `Eventarc trigger ${t.inputs.name} watches bucket ${bucketName}, which is not in the stack` });
      continue;
    }
    // cloud.google.com/eventarc/docs/run/create-trigger-storage-gcloud: the trigger's location must
    // match the bucket's (a multi-region bucket needs a trigger in that multi-region).
    const loc = String(bucket.inputs.location).toLowerCase();
    if (loc !== String(t.inputs.location).toLowerCase()) {
      findings.push({
        rule: 'locations',
        message: `Eventarc trigger ${t.inputs.name} is in ${t.inputs.location} but bucket ${bucketName} is in ${bucket.inputs.location}: Eventarc refuses a trigger outside the bucket's location`,
      });
    }
  }
  for (const job of model.ofType('gcp:cloudrunv2/job:Job')) {
    const task = job.inputs.template?.template;
    const limits = task?.containers?.[0]?.resources?.limits ?? {};
    if (!limits['nvidia.com/gpu']) continue;
    if (options.gpuRegions && !options.gpuRegions.includes(job.inputs.location)) {
      findings.push({
        rule: 'locations',
        message: `Cloud Run job ${job.inputs.name} asks for a GPU in ${job.inputs.location}, which has no Cloud Run GPUs (${options.gpuRegions.join(', ')})`,
      });
    }
  }
  return findings;
}

/** What must exist, or have propagated, before what (one `pulumi up` on a fresh project). */
export function checkOrder(model: StackModel, options: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  const sleeps = model.ofType('time:index/sleep:Sleep');
  const waitsFor = (r: RecordedResource, deps: string[], what: string) => {
    const all = model.dependenciesOf(r.name);
    for (const d of deps) if (!all.has(d)) findings.push({ rule: 'start-up order', message: `${r.name} must wait for ${d} (${what})` });
  };
  const propagated = (r: RecordedResource, grantsOrAgents: string[], what: string) => {
    const all = model.dependenciesOf(r.name);
    const ok = sleeps.some((s) => all.has(s.name) && grantsOrAgents.every((g) => model.dependenciesOf(s.name).has(g)));
    if (!ok) findings.push({ rule: 'start-up order', message: `${r.name} must wait for IAM propagation after ${grantsOrAgents.join(', ')} (${what})` });
  };

  const eventarcAgent = model.ofType('gcp:projects/serviceIdentity:ServiceIdentity').find((s) => s.inputs.service === 'eventarc.googleapis.com');
  for (const t of model.ofType('gcp:eventarc/trigger:Trigger')) {
    if (!eventarcAgent) {
      findings.push({
        rule: 'start-up order',
        message: `${t.name}: Eventarc's service agent is created lazily and its permissions lag behind API enablement; create it (gcp.projects.ServiceIdentity eventarc.googleapis.com) before the triggers`,
      });
      continue;
    }
    const member = sa(t.inputs.serviceAccount);
    const grants = model.grants.filter((g) => g.member === member && g.target.kind === 'project').map((g) => g.resource);
    const storagePublisher = model.grants.filter((g) => g.member === sa(agentEmail('storage', options.projectNumber))).map((g) => g.resource);
    propagated(t, [eventarcAgent.name, ...grants, ...storagePublisher], 'Eventarc checks its agent and the trigger account when the trigger is created');
  }

  for (const alert of model.ofType('gcp:monitoring/alertPolicy:AlertPolicy')) {
    const filters = (alert.inputs.conditions ?? []).map((c: { conditionThreshold?: { filter?: string } }) => c.conditionThreshold?.filter ?? '').join(' ');
    const metrics = [...filters.matchAll(/logging\.googleapis\.com\/user\/([\w-]+)/g)].map((m) => m[1]);
    for (const metricName of metrics) {
      const metric = model.ofType('gcp:logging/metric:Metric').find((m) => m.inputs.name === metricName);
      if (!metric) {
        findings.push({ rule: 'start-up order', message: `${alert.name} uses log metric ${metricName}, which the stack does not create` });
        continue;
      }
      propagated(alert, [metric.name], 'a new log-based metric is unknown to Cloud Monitoring for minutes: alert policies on it answer 404');
    }
  }

  for (const job of model.ofType('gcp:cloudrunv2/job:Job')) {
    if (!job.inputs.runExecutionToken && !job.inputs.startExecutionToken) continue;
    const member = sa(job.inputs.template?.template?.serviceAccount);
    const grants = model.grants.filter((g) => g.member === member && !g.resource.startsWith('(Google)')).map((g) => g.resource);
    waitsFor(job, grants, 'the job runs during `pulumi up` and needs its grants in place');
  }

  for (const vm of model.ofType('gcp:compute/instance:Instance')) {
    const member = sa(vm.inputs.serviceAccount?.email);
    const grants = model.grants.filter((g) => g.member === member && g.target.kind !== 'project').map((g) => g.resource);
    waitsFor(vm, grants, 'its start-up script reads the password and pulls the image as the VM identity');
  }
  return findings;
}

/**
 * Who can reach each Cloud Run service (README "Security model"):
 *  - a service anyone may invoke (invoker check off, or allUsers/allAuthenticatedUsers invokers)
 *    must be reachable only through an external load balancer (ingress internal-and-LB: otherwise
 *    its run.app URL bypasses everything) whose backend for it carries a Cloud Armor policy with a
 *    rate-limiting rule (throttle or rate_based_ban): Cloud Armor attaches only to LB backends
 *    (cloud.google.com/armor/docs/security-policy-overview), a serverless NEG puts Cloud Run behind one;
 *    its run.app URL must be disabled (defaultUriDisabled: "internal" ingress still admits VPC traffic
 *    there, without identity or Cloud Armor), and each HTTPS proxy in front of it must carry an SSL
 *    policy with profile MODERN or RESTRICTED and TLS 1.2 or later (without one Google applies
 *    COMPATIBLE with TLS 1.0: cloud.google.com/load-balancing/docs/ssl-policies-concepts);
 *  - an IAP-enabled service must let IAP's service agent invoke it (run.routes.invoke), and that
 *    agent must be created in the same `up` (cloud.google.com/run/docs/securing/identity-aware-proxy-cloud-run).
 */
export function checkExposure(model: StackModel, options: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  const negs = model.ofType('gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup');
  const backends = model.ofType('gcp:compute/backendService:BackendService');
  const policies = model.ofType('gcp:compute/securityPolicy:SecurityPolicy');
  const urlMaps = model.ofType('gcp:compute/uRLMap:URLMap');
  const httpsProxies = model.ofType('gcp:compute/targetHttpsProxy:TargetHttpsProxy');
  const sslPolicies = model.ofType('gcp:compute/sSLPolicy:SSLPolicy');
  for (const svc of model.ofType('gcp:cloudrunv2/service:Service')) {
    const name = svc.inputs.name as string;
    const openGrant = model.grants.find(
      (g) =>
        ['allUsers', 'allAuthenticatedUsers'].includes(g.member) && g.target.kind === 'runService' && g.target.name === name && g.role === 'roles/run.invoker',
    );
    const open = svc.inputs.invokerIamDisabled === true || openGrant !== undefined;
    if (open) {
      const how = openGrant ? `${openGrant.member} holds roles/run.invoker` : 'its invoker check is off';
      if (svc.inputs.ingress !== 'INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER')
        findings.push({
          rule: 'exposure',
          message: `service ${name}: ${how} and ingress is ${svc.inputs.ingress ?? 'INGRESS_TRAFFIC_ALL'}: its run.app URL bypasses any load balancer and Cloud Armor (use INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER)`,
        });
      const myNegs = negs.filter((n) => short(String(n.inputs.cloudRun?.service ?? '')) === name).map((n) => n.inputs.name as string);
      const myBackends = backends.filter((b) => (b.inputs.backends ?? []).some((x: { group?: string }) => myNegs.includes(short(String(x.group ?? '')))));
      const limited = myBackends.some((b) => {
        const policy = b.inputs.securityPolicy ? policies.find((p) => p.inputs.name === short(String(b.inputs.securityPolicy))) : undefined;
        return (policy?.inputs.rules ?? []).some(
          (r: { action?: string; rateLimitOptions?: unknown }) => ['throttle', 'rate_based_ban'].includes(r.action ?? '') && r.rateLimitOptions,
        );
      });
      if (!limited)
        findings.push({
          rule: 'exposure',
          message: `service ${name}: ${how}, but no load-balancer backend (serverless NEG) for it has a Cloud Armor policy with a rate-limiting rule: anyone may send it unlimited requests`,
        });
      if (svc.inputs.defaultUriDisabled !== true)
        findings.push({
          rule: 'exposure',
          message: `service ${name}: ${how} and its run.app URL is on: internal (VPC) traffic reaches it there without identity or Cloud Armor (set defaultUriDisabled: true)`,
        });
      const backendNames = myBackends.map((b) => b.inputs.name as string);
      const routesToMe = (m: RecordedResource) =>
        [m.inputs.defaultService, ...(m.inputs.pathMatchers ?? []).map((p: { defaultService?: string }) => p.defaultService)].some((x) =>
          backendNames.includes(short(String(x ?? ''))),
        );
      const myUrlMaps = urlMaps.filter(routesToMe).map((m) => m.inputs.name as string);
      for (const proxy of httpsProxies.filter((p) => myUrlMaps.includes(short(String(p.inputs.urlMap ?? ''))))) {
        const ssl = proxy.inputs.sslPolicy ? sslPolicies.find((p) => p.inputs.name === short(String(proxy.inputs.sslPolicy))) : undefined;
        const strong = ['MODERN', 'RESTRICTED'].includes(ssl?.inputs.profile) && ['TLS_1_2', 'TLS_1_3'].includes(ssl?.inputs.minTlsVersion);
        if (!strong)
          findings.push({
            rule: 'exposure',
            message: `service ${name}: its HTTPS proxy ${proxy.inputs.name} has no SSL policy with profile MODERN (or RESTRICTED) and minTlsVersion TLS_1_2 (or later): Google's default COMPATIBLE policy admits TLS 1.0 and weak ciphers`,
          });
      }
    }
    if (svc.inputs.iapEnabled === true) {
      const agent = `serviceAccount:${agentEmail('iap', options.projectNumber)}`;
      if (!model.ofType('gcp:projects/serviceIdentity:ServiceIdentity').some((s) => s.inputs.service === 'iap.googleapis.com'))
        findings.push({
          rule: 'exposure',
          message: `service ${name} is behind IAP, but IAP's service agent is not created (gcp.projects.ServiceIdentity iap.googleapis.com): its invoker grant would fail`,
        });
      if (model.holders(agent, 'run.routes.invoke', { kind: 'runService', name }).length === 0)
        findings.push({
          rule: 'exposure',
          message: `service ${name} is behind IAP, but ${agent} (IAP's service agent) holds no run.routes.invoke on it: every signed-in user would get 403`,
        });
    }
  }
  return findings;
}

export function runChecks(resources: RecordedResource[], options: CheckOptions): { model: StackModel; findings: Finding[] } {
  const model = new StackModel(resources, options.projectNumber);
  const findings = [
    ...checkWorkloadPermissions(model, options),
    ...checkPlatformPermissions(model, options),
    ...checkApis(model),
    ...checkNames(model),
    ...checkLocations(model, options),
    ...checkOrder(model, options),
    ...checkExposure(model, options),
  ];
  return { model, findings };
}

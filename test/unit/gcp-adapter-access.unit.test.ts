import { generateKeyPairSync } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { v1 as aiplatformV1 } from '@google-cloud/aiplatform';
import { PubSub, type v1 as pubsubV1 } from '@google-cloud/pubsub';
import { Storage } from '@google-cloud/storage';
import type { v2 as runV2 } from '@google-cloud/run';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MonitoringBacklogProbe, PullBacklogProbe } from '../../functions/backlog.js';
import * as accessModule from '../../shared/adapters/gcp/access.js';
import { ADAPTER_ACCESS, type Access, type AdapterMethod, type AdapterName, type ResourceKind } from '../../shared/adapters/gcp/access.js';
import { CloudRunJobLauncher } from '../../shared/adapters/gcp/cloud-run-job-launcher.js';
import * as embeddingShards from '../../shared/adapters/gcp/embedding-shards.js';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsModelRegistry } from '../../shared/adapters/gcp/gcs-model-registry.js';
import { GcsRejectionLog } from '../../shared/adapters/gcp/gcs-rejection-log.js';
import { GcsSignedUploads } from '../../shared/adapters/gcp/gcs-signed-uploads.js';
import { PubSubEventBus } from '../../shared/adapters/gcp/pubsub-event-bus.js';
import { VertexJobLauncher } from '../../shared/adapters/gcp/vertex-job-launcher.js';
import { GenerationMismatchError } from '../../shared/errors.js';
import { testManifest } from '../contracts/model-registry.contract.js';
import { recordingAuth, recordingClient, type SdkCall } from '../helpers/recording-sdk.js';
import { FakeGcsServer, type RecordedRequest } from './gcp-fake-gcs-server.js';

/**
 * Proof that the access tables of shared/adapters/gcp/access.ts are true: every method of every
 * Google Cloud adapter runs against recording doubles of the SDKs (the real `@google-cloud/storage`
 * client against {@link FakeGcsServer}; recording gax clients for Pub/Sub, Cloud Run and Vertex AI;
 * a recording `auth.request` for Cloud Monitoring), each recorded request is mapped to the IAM
 * permission Google documents for it ({@link GOOGLE_PERMISSIONS}), and the test fails when a
 * method issues a request its table entry does not declare — so a new SDK call that is not
 * declared (and so not granted by the stack, see infra/deploy-check) fails CI, not production.
 *
 * It also fails when a table entry has no driver here, and when an adapter gains a member that is
 * neither in its table, nor a listed private helper, nor a listed request-free member.
 */

// ---------------------------------------------------------------------------------------------
// What Google documents each request needs
// ---------------------------------------------------------------------------------------------

/** A request recorded during one adapter call, classified. */
interface SdkRequest {
  /** What was sent, for messages: `POST /upload/storage/v1/b/…`, `SubscriberClient.pull projects/…`. */
  label: string;
  /** The documented API method it is, or null when no row of {@link GOOGLE_PERMISSIONS} covers it. */
  operation: Operation | null;
  /** Kind of the resource the request names (from the bucket / resource name in the request). */
  target: ResourceKind | 'unrecognised';
  /** Object insert that may replace a live object (no `ifGenerationMatch=0`, and one existed). */
  overwrites?: boolean;
  /** `runJob` carrying per-execution overrides. */
  withOverrides?: boolean;
  /** Service account a Vertex AI custom job runs as. */
  serviceAccount?: string;
}

const GCS_DOC = 'https://cloud.google.com/storage/docs/json_api/v1/objects';
const PUBSUB_DOC = 'https://cloud.google.com/pubsub/docs/access-control';
const RUN_DOC = 'https://cloud.google.com/run/docs/reference/iam/permissions';
const VERTEX_DOC = 'https://cloud.google.com/vertex-ai/docs/general/access-control';
const on = (permission: string, kind: ResourceKind | 'unrecognised'): Access => ({ permission, on: kind as ResourceKind });

/**
 * THE mapping from SDK request to IAM permission, one row per documented API method, with the page
 * ("Required permissions" / permission reference) it comes from. The resource kind comes from the
 * request itself (`target`), so a publish aimed at a subscription would not match a topic grant.
 */
const GOOGLE_PERMISSIONS = {
  // Cloud Storage JSON API, "Required permissions" of each method.
  'storage objects.get': {
    doc: `${GCS_DOC}/get`,
    requests: 'GET /storage/v1/b/B/o/NAME (metadata, or media with alt=media)',
    needs: (r: SdkRequest) => [on('storage.objects.get', r.target)],
  },
  'storage objects.list': {
    doc: `${GCS_DOC}/list`,
    requests: 'GET /storage/v1/b/B/o',
    needs: (r: SdkRequest) => [on('storage.objects.list', r.target)],
  },
  'storage objects.insert': {
    doc: `${GCS_DOC}/insert`,
    requests: 'POST /upload/storage/v1/b/B/o (uploadType=multipart|media|resumable), PUT …&upload_id= (resumable chunks)',
    // "storage.objects.delete: only required if the upload overwrites an existing object" — modelled
    // as: no ifGenerationMatch=0 precondition and an object was at that name (see FakeGcsServer).
    needs: (r: SdkRequest) => [on('storage.objects.create', r.target), ...(r.overwrites ? [on('storage.objects.delete', r.target)] : [])],
  },
  'storage objects.delete': {
    doc: `${GCS_DOC}/delete`,
    requests: 'DELETE /storage/v1/b/B/o/NAME',
    needs: (r: SdkRequest) => [on('storage.objects.delete', r.target)],
  },
  'storage objects.patch': {
    doc: `${GCS_DOC}/patch`,
    requests: 'PATCH /storage/v1/b/B/o/NAME',
    needs: (r: SdkRequest) => [on('storage.objects.update', r.target)],
  },
  'storage objects.update': {
    doc: `${GCS_DOC}/update`,
    requests: 'PUT /storage/v1/b/B/o/NAME',
    needs: (r: SdkRequest) => [on('storage.objects.update', r.target)],
  },
  'storage objects.rewrite': {
    doc: `${GCS_DOC}/rewrite`,
    requests: 'POST /storage/v1/b/B/o/NAME/rewriteTo/b/B2/o/NAME2',
    needs: (r: SdkRequest) => [on('storage.objects.create', r.target), on('storage.objects.get', r.target)],
  },
  'storage objects.copy': {
    doc: `${GCS_DOC}/copy`,
    requests: 'POST /storage/v1/b/B/o/NAME/copyTo/b/B2/o/NAME2',
    needs: (r: SdkRequest) => [on('storage.objects.create', r.target), on('storage.objects.get', r.target)],
  },
  'storage objects.compose': {
    doc: `${GCS_DOC}/compose`,
    requests: 'POST /storage/v1/b/B/o/NAME/compose',
    needs: (r: SdkRequest) => [on('storage.objects.create', r.target), on('storage.objects.get', r.target)],
  },
  'storage buckets.get': {
    doc: 'https://cloud.google.com/storage/docs/json_api/v1/buckets/get',
    requests: 'GET /storage/v1/b/B',
    needs: (r: SdkRequest) => [on('storage.buckets.get', r.target)],
  },
  // Pub/Sub access control, "Required permissions" table (Publisher / Subscriber RPCs).
  'pubsub Publisher.Publish': {
    doc: PUBSUB_DOC,
    requests: 'PublisherClient.publish { topic }',
    needs: (r: SdkRequest) => [on('pubsub.topics.publish', r.target)],
  },
  'pubsub Subscriber.Pull': {
    doc: PUBSUB_DOC,
    requests: 'SubscriberClient.pull / streamingPull { subscription }',
    needs: (r: SdkRequest) => [on('pubsub.subscriptions.consume', r.target)],
  },
  'pubsub Subscriber.Acknowledge': {
    doc: PUBSUB_DOC,
    requests: 'SubscriberClient.acknowledge { subscription }',
    needs: (r: SdkRequest) => [on('pubsub.subscriptions.consume', r.target)],
  },
  'pubsub Subscriber.ModifyAckDeadline': {
    doc: PUBSUB_DOC,
    requests: 'SubscriberClient.modifyAckDeadline { subscription }',
    needs: (r: SdkRequest) => [on('pubsub.subscriptions.consume', r.target)],
  },
  // Cloud Run IAM permissions reference (Admin API v2).
  'run jobs.run': {
    doc: RUN_DOC,
    requests: 'JobsClient.runJob { name } — with overrides: run.jobs.runWithOverrides, without: run.jobs.run',
    needs: (r: SdkRequest) => [on(r.withOverrides ? 'run.jobs.runWithOverrides' : 'run.jobs.run', r.target)],
  },
  'run executions.list': {
    doc: RUN_DOC,
    requests: 'ExecutionsClient.listExecutions(Async) { parent: job }',
    needs: (r: SdkRequest) => [on('run.executions.list', r.target)],
  },
  // Vertex AI access control (IAM permissions); actAs: https://cloud.google.com/iam/docs/service-accounts-actas
  'aiplatform customJobs.create': {
    doc: VERTEX_DOC,
    requests: 'JobServiceClient.createCustomJob { parent, customJob.jobSpec.serviceAccount? }',
    needs: (r: SdkRequest) => [on('aiplatform.customJobs.create', r.target), ...(r.serviceAccount ? [on('iam.serviceAccounts.actAs', 'serviceAccount')] : [])],
  },
  'aiplatform customJobs.list': {
    doc: VERTEX_DOC,
    requests: 'JobServiceClient.listCustomJobs(Async) { parent }',
    needs: (r: SdkRequest) => [on('aiplatform.customJobs.list', r.target)],
  },
  // Cloud Monitoring API v3, projects.timeSeries.list (REST through google-auth-library).
  'monitoring timeSeries.list': {
    doc: 'https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list',
    requests: 'GET https://monitoring.googleapis.com/v3/projects/P/timeSeries',
    needs: (r: SdkRequest) => [on('monitoring.timeSeries.list', r.target)],
  },
} as const satisfies Record<string, { doc: string; requests: string; needs(r: SdkRequest): Access[] }>;
type Operation = keyof typeof GOOGLE_PERMISSIONS;

/** Kind of a Google resource name. */
function kindOf(name: unknown): ResourceKind | 'unrecognised' {
  const n = String(name ?? '');
  if (/^projects\/[^/]+\/topics\/[^/]+$/.test(n)) return 'topic';
  if (/^projects\/[^/]+\/subscriptions\/[^/]+$/.test(n)) return 'subscription';
  if (/^projects\/[^/]+\/locations\/[^/]+\/jobs\/[^/]+$/.test(n)) return 'runJob';
  if (/^projects\/[^/]+(\/locations\/[^/]+)?$/.test(n)) return 'project';
  return 'unrecognised';
}

/** A request the real Storage client sent to the fake JSON API. */
function gcsRequest(r: RecordedRequest): SdkRequest {
  const query = new URLSearchParams(r.query).toString();
  const overwrites = r.existedBefore === true && r.query.ifGenerationMatch !== '0';
  const label = `${r.method} ${decodeURIComponent(r.path)}${query ? `?${decodeURIComponent(query)}` : ''}${overwrites ? ' (over an existing object)' : ''}`;
  const of = (operation: Operation | null): SdkRequest => ({
    label,
    operation,
    target: 'bucket',
    ...(operation === 'storage objects.insert' ? { overwrites } : {}),
  });
  const p = r.path;
  if (/^\/upload\/storage\/v1\/b\/[^/]+\/o$/.test(p)) {
    if (r.method === 'POST' && ['multipart', 'media', 'resumable'].includes(r.query.uploadType ?? '')) return of('storage objects.insert');
    if (r.method === 'PUT' && r.query.upload_id) return of('storage objects.insert');
    return of(null);
  }
  if (/^\/storage\/v1\/b\/[^/]+$/.test(p)) return of(r.method === 'GET' ? 'storage buckets.get' : null);
  if (/^\/storage\/v1\/b\/[^/]+\/o$/.test(p)) return of(r.method === 'GET' ? 'storage objects.list' : null);
  if (/^\/storage\/v1\/b\/[^/]+\/o\/[^/]+\/(rewriteTo|copyTo)\/b\/[^/]+\/o\/[^/]+$/.test(p) && r.method === 'POST') {
    return of(p.includes('/rewriteTo/') ? 'storage objects.rewrite' : 'storage objects.copy');
  }
  if (/^\/storage\/v1\/b\/[^/]+\/o\/[^/]+\/compose$/.test(p) && r.method === 'POST') return of('storage objects.compose');
  if (/^\/storage\/v1\/b\/[^/]+\/o\/[^/]+$/.test(p)) {
    const byMethod: Record<string, Operation> = {
      GET: 'storage objects.get',
      DELETE: 'storage objects.delete',
      PATCH: 'storage objects.patch',
      PUT: 'storage objects.update',
    };
    return of(byMethod[r.method] ?? null);
  }
  return of(null);
}

/** SDK client methods that send no API request (e.g. closing the channel). */
const LOCAL_SDK_METHODS = new Set(['close', 'initialize']);

/** A call on a recording gax client (or `auth.request`), or null for a local method. */
function sdkRequest(call: SdkCall): SdkRequest | null {
  const q = (call.request ?? {}) as Record<string, any>;
  const rpc = `${call.client}.${call.method}`;
  switch (rpc) {
    case 'PublisherClient.publish':
      return { label: `${rpc} ${q.topic}`, operation: 'pubsub Publisher.Publish', target: kindOf(q.topic) };
    case 'SubscriberClient.pull':
    case 'SubscriberClient.streamingPull':
      return { label: `${rpc} ${q.subscription}`, operation: 'pubsub Subscriber.Pull', target: kindOf(q.subscription) };
    case 'SubscriberClient.acknowledge':
      return { label: `${rpc} ${q.subscription}`, operation: 'pubsub Subscriber.Acknowledge', target: kindOf(q.subscription) };
    case 'SubscriberClient.modifyAckDeadline':
      return { label: `${rpc} ${q.subscription} (${q.ackDeadlineSeconds}s)`, operation: 'pubsub Subscriber.ModifyAckDeadline', target: kindOf(q.subscription) };
    case 'JobsClient.runJob':
      return {
        label: `${rpc} ${q.name}${q.overrides ? ' with overrides' : ''}`,
        operation: 'run jobs.run',
        target: kindOf(q.name),
        withOverrides: q.overrides !== undefined && q.overrides !== null,
      };
    case 'ExecutionsClient.listExecutions':
    case 'ExecutionsClient.listExecutionsAsync':
      return { label: `${rpc} ${q.parent}`, operation: 'run executions.list', target: kindOf(q.parent) };
    case 'JobServiceClient.createCustomJob': {
      const serviceAccount = q.customJob?.jobSpec?.serviceAccount as string | undefined;
      return {
        label: `${rpc} ${q.parent}${serviceAccount ? ` as ${serviceAccount}` : ''}`,
        operation: 'aiplatform customJobs.create',
        target: kindOf(q.parent),
        ...(serviceAccount ? { serviceAccount } : {}),
      };
    }
    case 'JobServiceClient.listCustomJobs':
    case 'JobServiceClient.listCustomJobsAsync':
      return { label: `${rpc} ${q.parent}`, operation: 'aiplatform customJobs.list', target: kindOf(q.parent) };
    case 'GoogleAuth.request': {
      const method = String(q.method ?? 'GET').toUpperCase();
      const url = new URL(String(q.url));
      const label = `${method} ${url.origin}${url.pathname}`;
      const series = /^\/v3\/(projects\/[^/]+)\/timeSeries$/.exec(url.pathname);
      if (url.host === 'monitoring.googleapis.com' && method === 'GET' && series) {
        return { label, operation: 'monitoring timeSeries.list', target: kindOf(series[1]) };
      }
      return { label, operation: null, target: 'unrecognised' };
    }
    default:
      if (LOCAL_SDK_METHODS.has(call.method)) return null;
      return { label: `${rpc}(${JSON.stringify(call.request)?.slice(0, 200) ?? ''})`, operation: null, target: 'unrecognised' };
  }
}

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

const server = new FakeGcsServer();
const sdkCalls: SdkCall[] = [];
/** Requests observed by the running driver; null outside a driver. */
let observed: SdkRequest[] | null = null;

/**
 * Runs one adapter call and records what it sends. Only requests inside `observe` count: a
 * driver seeds data (through the adapters or the fake server) outside it.
 */
async function observe<T>(call: () => T | Promise<T>): Promise<T> {
  if (!observed) throw new Error('observe() outside a driver');
  server.requests.length = 0;
  sdkCalls.length = 0;
  try {
    return await call();
  } finally {
    observed.push(...server.requests.map(gcsRequest));
    for (const c of sdkCalls) {
      const request = sdkRequest(c);
      if (request) observed.push(request);
    }
    server.requests.length = 0;
    sdkCalls.length = 0;
  }
}

/** Runs a driver and returns what it observed, failing on a driver error only after the requests were judged. */
async function drive(driver: () => Promise<unknown>): Promise<{ requests: SdkRequest[]; error?: unknown }> {
  observed = [];
  try {
    await driver();
    return { requests: observed };
  } catch (error) {
    return { requests: observed, error };
  } finally {
    observed = null;
  }
}

/** Name of the exported table constant, e.g. `GCS_MODEL_REGISTRY_ACCESS`. */
function tableName(adapter: AdapterName): string {
  const entry = Object.entries(accessModule).find(([name, value]) => value === ADAPTER_ACCESS[adapter] && name !== 'ADAPTER_ACCESS');
  return entry?.[0] ?? `ADAPTER_ACCESS.${adapter}`;
}

/** One message per request permission the table entry does not declare (or per unmapped request). */
function undeclared(adapter: AdapterName, method: string, requests: SdkRequest[]): string[] {
  const declared = (ADAPTER_ACCESS[adapter] as Record<string, readonly Access[]>)[method] ?? [];
  const where = `${tableName(adapter)}.${method}`;
  const messages = new Set<string>();
  for (const r of requests) {
    if (!r.operation) {
      messages.add(
        `${adapter}.${method} issued ${r.label}, which no row of GOOGLE_PERMISSIONS maps to a documented permission: ` +
          `add the API method with the permission Google documents for it, then declare it in ${where}`,
      );
      continue;
    }
    for (const need of GOOGLE_PERMISSIONS[r.operation].needs(r)) {
      if (declared.some((d) => d.permission === need.permission && d.on === need.on)) continue;
      const sameName = declared.find((d) => d.permission === need.permission);
      messages.add(
        `${adapter}.${method} issued ${r.label} (${need.permission} on a ${need.on}) which ${where} does not declare` +
          (sameName ? ` (it declares ${need.permission} on a ${sameName.on})` : ''),
      );
    }
  }
  return [...messages];
}

// ---------------------------------------------------------------------------------------------
// Adapters wired to the doubles
// ---------------------------------------------------------------------------------------------

const BUCKET = 'iss-access-test';
const PROJECT = 'p1';
const REGION = 'europe-west1';
const TRAINER = 'retrain@p1.iam.gserviceaccount.com';
let cacheDir = '';

const blobs = () => new GcsBlobStore(server.storage(), BUCKET);
const registry = () => new GcsModelRegistry({ storage: server.storage(), bucket: BUCKET, cacheDir });
const register = (r: GcsModelRegistry, version: string) =>
  r.register({ version, parent: null, manifest: testManifest(version), files: { 'image.onnx': Buffer.from(`w-${version}`) } });
const features = () => new GcsFeatureStore(blobs());
const vec = (x: number) => Float32Array.from([x, x + 1, x + 2]);
const feature = (id: string, generation: string, x: number) => ({ id, uri: `gs://img/${id}.jpg`, generation, baseModel: 'b1', vector: vec(x), labels: [] });
const rejections = () => new GcsRejectionLog(blobs());
const rejection = (id: string, generation: string) => ({
  id,
  uri: `gs://img/${id}.jpg`,
  generation,
  reason: 'too-large',
  detail: 'over the limit',
  at: `2025-03-01T10:00:0${generation.slice(-1)}Z`,
});

async function drain<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

function received(id: number) {
  return {
    ackId: `ack-${id}`,
    deliveryAttempt: 1,
    message: { messageId: `m-${id}`, data: Buffer.from(JSON.stringify({ n: id })), attributes: {}, publishTime: { seconds: 1_700_000_000 } },
  };
}

/** The real PubSub client (publishing through the gax client it keeps in `pubsub.api`) and a v1 subscriber, both recording. */
function eventBus(): PubSubEventBus {
  const pubsub = new PubSub({ projectId: PROJECT });
  let next = 0;
  const api = pubsub.api as Record<string, unknown>;
  api.PublisherClient = recordingClient('PublisherClient', sdkCalls, {
    publish: (q: { messages: unknown[] }) => ({ messageIds: q.messages.map(() => `id-${(next += 1)}`) }),
  });
  api.SubscriberClient = recordingClient('SubscriberClient', sdkCalls);
  const v1Subscriber = recordingClient<pubsubV1.SubscriberClient>('SubscriberClient', sdkCalls, {
    pull: () => ({ receivedMessages: [received(1), received(2)] }),
  });
  return new PubSubEventBus({
    pubsub,
    v1Subscriber,
    projectId: PROJECT,
    topicFor: (t) => `iss-${t}`,
    subscriptionFor: (t) => `iss-${t}-sub`,
    deadLetterTopicFor: (t) => `iss-${t}-dead-letter`,
    backlog: async () => ({ ready: 3 }),
  });
}

const JOB = `projects/${PROJECT}/locations/${REGION}/jobs/iss-embed`;
const finished = { name: `${JOB}/executions/old`, completionTime: { seconds: 100 }, succeededCount: 1 };
const live = { name: `${JOB}/executions/live`, startTime: { seconds: 200 } };

function cloudRun(executions: object[]): CloudRunJobLauncher {
  return new CloudRunJobLauncher({
    jobs: recordingClient<runV2.JobsClient>('JobsClient', sdkCalls, {
      runJob: (q: { name: string }) => ({ name: 'operations/op-1', metadata: { name: `${q.name}/executions/new` } }),
    }),
    executions: recordingClient<runV2.ExecutionsClient>('ExecutionsClient', sdkCalls, {
      listExecutionsAsync: () => executions,
      listExecutions: () => executions,
    }),
    projectId: PROJECT,
    region: REGION,
    jobNameFor: (job) => `iss-${job}`,
  });
}

function vertex(active: object[], serviceAccount?: string): VertexJobLauncher {
  return new VertexJobLauncher({
    client: recordingClient<aiplatformV1.JobServiceClient>('JobServiceClient', sdkCalls, {
      listCustomJobsAsync: () => active,
      listCustomJobs: () => active,
      createCustomJob: (q: { parent: string; customJob: { displayName: string } }) => ({
        name: `${q.parent}/customJobs/1`,
        displayName: q.customJob.displayName,
        state: 'JOB_STATE_PENDING',
      }),
    }),
    projectId: PROJECT,
    region: REGION,
    jobs: { retrain: { imageUri: 'europe-docker.pkg.dev/p1/iss/retrain:1', machineType: 'n1-standard-8', ...(serviceAccount ? { serviceAccount } : {}) } },
  });
}

/**
 * Signed uploads through the real client against the fake server. With a key in the credentials
 * the client signs locally (on Cloud Run it calls signBlob, which the table declares); the URL's
 * own PUT is the browser's, not the adapter's.
 */
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const signedUploads = () =>
  new GcsSignedUploads(
    new Storage({
      apiEndpoint: server.endpoint,
      projectId: 'test-project',
      credentials: { client_email: 'search@p1.iam.gserviceaccount.com', private_key: signingKey },
    }),
    BUCKET,
    'incoming/',
    1000,
  );

function backlogProbe(): MonitoringBacklogProbe {
  const auth = recordingAuth(sdkCalls, () => ({ timeSeries: [{ points: [{ interval: { endTime: '2025-03-01T10:00:00Z' }, value: { int64Value: '42' } }] }] }));
  return new MonitoringBacklogProbe({
    auth: auth as never,
    projectId: PROJECT,
    subscriptionId: 'iss-image-events-sub',
    now: () => Date.parse('2025-03-01T10:02:00Z'),
  });
}

// ---------------------------------------------------------------------------------------------
// Drivers: every table entry, with the data its method needs seeded first
// ---------------------------------------------------------------------------------------------

type Driver = () => Promise<void>;

/** One driver per table entry (the type makes a missing one a compile error; the test below a failure). */
const DRIVERS: { [A in AdapterName]: Record<AdapterMethod<A>, Driver> } = {
  GcsSignedUploads: {
    sign: async () => {
      server.put(BUCKET, 'incoming/taken.jpg', 'x');
      const signed = await observe(() => signedUploads().sign('incoming/new.jpg', 'image/jpeg'));
      expect(new URL(signed.url).searchParams.get('X-Goog-SignedHeaders')).toBe('content-type;host;x-goog-content-length-range;x-goog-if-generation-match');
      await observe(() => expect(signedUploads().sign('incoming/taken.jpg', 'image/jpeg')).rejects.toMatchObject({ code: 'NAME_TAKEN' }));
    },
  },
  GcsBlobStore: {
    read: async () => {
      const store = blobs();
      const old = server.put(BUCKET, 'photos/a.jpg', 'first');
      const current = server.put(BUCKET, 'photos/a.jpg', 'second');
      server.put(BUCKET, 'big.bin', Buffer.alloc(64));
      expect((await observe(() => store.read('photos/a.jpg'))).toString()).toBe('second');
      expect((await observe(() => store.read('photos/a.jpg', { generation: current.generation }))).toString()).toBe('second');
      // A replaced generation: the 404 is followed by a stat telling a mismatch from a deletion.
      await observe(() => expect(store.read('photos/a.jpg', { generation: old.generation })).rejects.toBeInstanceOf(GenerationMismatchError));
      // Over maxBytes: a stat names the size.
      await observe(() => expect(store.read('big.bin', { maxBytes: 10 })).rejects.toThrow(/over the 10-byte limit/));
    },
    stat: async () => {
      const store = blobs();
      server.put(BUCKET, 'a.txt', 'x');
      expect(await observe(() => store.stat('a.txt'))).not.toBeNull();
      expect(await observe(() => store.stat('absent.txt'))).toBeNull();
    },
    readVersioned: async () => {
      const store = blobs();
      server.put(BUCKET, 'state.json', '{}');
      expect(await observe(() => store.readVersioned('state.json'))).toMatchObject({ generation: server.get(BUCKET, 'state.json')!.generation });
      expect(await observe(() => store.readVersioned('absent.json'))).toBeNull();
    },
    list: async () => {
      const store = blobs();
      for (const n of ['p/1', 'p/2', 'q/3']) server.put(BUCKET, n, 'x');
      expect((await observe(() => drain(store.list('p/')))).map((b) => b.name)).toEqual(['p/1', 'p/2']);
    },
    write: async () => {
      const store = blobs();
      const existing = server.put(BUCKET, 'state.json', '{}');
      // Replaces the object: insert over an existing name, with and without a generation guard.
      await observe(() => store.write('state.json', '{"a":1}'));
      await observe(() => store.write('state.json', '{"a":2}', { ifGenerationMatch: server.get(BUCKET, 'state.json')!.generation }));
      await observe(() => expect(store.write('state.json', '{}', { ifGenerationMatch: existing.generation })).rejects.toBeInstanceOf(GenerationMismatchError));
      await observe(() => store.write('fresh.json', '{}', { contentType: 'application/json' }));
    },
    writeNew: async () => {
      const store = blobs();
      // `write` of a name that never existed (feedback events, shards): create only.
      await observe(() => store.write('feedback/0001-a.json', '{"click":1}', { contentType: 'application/json' }));
      await observe(() => store.write('feedback/b.json', '{}', { ifGenerationMatch: '0' }));
    },
    delete: async () => {
      const store = blobs();
      server.put(BUCKET, 'old.bin', 'x');
      await observe(() => store.delete('old.bin'));
      await observe(() => store.delete('never-there.bin'));
      expect(server.get(BUCKET, 'old.bin')).toBeUndefined();
    },
  },
  GcsModelRegistry: {
    list: async () => {
      const r = registry();
      await register(r, 'v1');
      await register(r, 'v2');
      await r.promote('v1');
      const versions = await observe(() => registry().list());
      expect(versions.map((v) => [v.version, v.active])).toEqual([
        ['v1', true],
        ['v2', false],
      ]);
    },
    get: async () => {
      const r = registry();
      await register(r, 'v1');
      expect(await observe(() => r.get('v1'))).toMatchObject({ version: 'v1' });
      expect(await observe(() => r.get('v9'))).toBeNull();
    },
    active: async () => {
      const r = registry();
      await register(r, 'v1');
      expect(await observe(() => r.active())).toBeNull();
      await r.promote('v1');
      expect(await observe(() => r.active())).toMatchObject({ version: 'v1', active: true });
    },
    localPath: async () => {
      await register(registry(), 'v1');
      const dir = await observe(() => registry().localPath('v1'));
      expect((await fs.readdir(dir)).sort()).toEqual(['image.onnx', 'manifest.json', 'meta.json']);
    },
    register: async () => {
      const r = registry();
      await observe(() => register(r, 'v1'));
      await observe(() => expect(register(r, 'v1')).rejects.toThrow(/already registered/));
    },
    setMetrics: async () => {
      const r = registry();
      await register(r, 'v1');
      await observe(() => r.setMetrics('v1', { imageToImage: { recallAt10: 0.9 } }));
      expect((await r.get('v1'))!.metrics).toEqual({ imageToImage: { recallAt10: 0.9 } });
    },
    promote: async () => {
      const r = registry();
      await register(r, 'v1');
      await register(r, 'v2');
      await observe(() => r.promote('v1')); // creates active.json
      await observe(() => r.promote('v2')); // replaces it
      await observe(() => r.promote('v2')); // already active: no write
    },
    rollback: async () => {
      const r = registry();
      await register(r, 'v1');
      await register(r, 'v2');
      await r.promote('v1');
      await r.promote('v2');
      expect(await observe(() => r.rollback())).toBe('v1');
    },
    remove: async () => {
      const r = registry();
      await register(r, 'v1');
      await register(r, 'v2');
      await r.promote('v1');
      await observe(() => expect(r.remove('v1')).rejects.toThrow(/it is active/));
      await observe(() => r.remove('v2'));
      expect(await r.get('v2')).toBeNull();
    },
  },
  GcsFeatureStore: {
    put: async () => {
      await observe(() => features().put([feature('a', '5', 1)]));
      // A second writer: lists and reads the existing shard, then writes its own.
      await observe(() => features().put([feature('b', '5', 2)]));
    },
    delete: async () => {
      await features().put([feature('a', '5', 1)]);
      await observe(() => features().delete([{ id: 'a', generation: '6' }]));
    },
    get: async () => {
      await features().put([feature('a', '5', 1)]);
      expect(await observe(() => features().get('a'))).toMatchObject({ id: 'a' });
    },
    count: async () => {
      await features().put([feature('a', '5', 1), feature('b', '5', 2)]);
      expect(await observe(() => features().count())).toBe(2);
    },
    scan: async () => {
      await features().put([feature('a', '5', 1)]);
      await features().put([feature('b', '5', 2)]);
      expect(
        (await observe(() => drain(features().scan())))
          .flat()
          .map((f) => f.id)
          .sort(),
      ).toEqual(['a', 'b']);
    },
    compact: async () => {
      await features().put([feature('a', '5', 1)]);
      await features().put([feature('b', '5', 2)]);
      await features().delete([{ id: 'a', generation: '6' }]);
      expect(await observe(() => features().compact())).toEqual({ shardsBefore: 3, rows: 2 });
    },
  },
  GcsRejectionLog: {
    record: async () => {
      const log = rejections();
      await observe(() => log.record(rejection('doc1', '5'))); // new record (ifGenerationMatch=0)
      await observe(() => log.record(rejection('doc1', '6'))); // replaces it (ifGenerationMatch=<generation>)
      await observe(() => log.record(rejection('doc1', '4'))); // older: kept as is
      expect(JSON.parse(server.get(BUCKET, 'rejected/doc1.json')!.data.toString())).toMatchObject({ generation: '6' });
    },
    clear: async () => {
      const log = rejections();
      await log.record(rejection('doc1', '5'));
      await log.record(rejection('doc2', '5'));
      await observe(() => log.clear('doc1', '5'));
      await observe(() => log.clear('doc2'));
      await observe(() => log.clear('doc3', '1'));
      expect(await log.count()).toBe(0);
    },
    list: async () => {
      const log = rejections();
      await log.record(rejection('doc1', '5'));
      await log.record(rejection('doc2', '6'));
      expect((await observe(() => log.list())).map((r) => r.id)).toEqual(['doc2', 'doc1']);
    },
    count: async () => {
      const log = rejections();
      await log.record(rejection('doc1', '5'));
      expect(await observe(() => log.count())).toBe(1);
    },
  },
  EmbeddingShards: {
    write: async () => {
      const { rows } = await observe(() => embeddingShards.writeEmbeddingShard(blobs(), [vec(1), vec(2)]));
      expect(rows).toBe(2);
    },
    read: async () => {
      const { refs } = await embeddingShards.writeEmbeddingShard(blobs(), [vec(1), vec(2)]);
      expect(Array.from(await observe(() => embeddingShards.readEmbeddingShard(blobs(), refs[1]!)))).toEqual([2, 3, 4]);
      expect(Array.from(await observe(() => new embeddingShards.EmbeddingShardReader(blobs()).read(refs[0]!)))).toEqual([1, 2, 3]);
    },
  },
  PubSubEventBus: {
    publish: async () => {
      expect(await observe(() => eventBus().publish('image-events', { name: 'a.jpg' }, { eventType: 'finalize' }))).toBe('id-1');
    },
    publishBatch: async () => {
      expect(await observe(() => eventBus().publishBatch('embeddings', [{ data: 1 }, { data: 2, attributes: { k: 'v' } }]))).toEqual(['id-1', 'id-2']);
    },
    pull: async () => {
      const bus = eventBus();
      expect(await observe(() => bus.pull('image-events', { maxMessages: 10 }))).toHaveLength(2);
      await observe(() => bus.pull('image-events', { maxMessages: 10, ackDeadlineSeconds: 120 }));
    },
    ack: async () => {
      const bus = eventBus();
      const deliveries = await bus.pull('image-events', { maxMessages: 10 });
      await observe(() =>
        bus.ack(
          'image-events',
          deliveries.map((d) => d.ackId),
        ),
      );
    },
    nack: async () => {
      const bus = eventBus();
      const deliveries = await bus.pull('image-events', { maxMessages: 10 });
      await observe(() =>
        bus.nack(
          'image-events',
          deliveries.map((d) => d.ackId),
          'transient',
        ),
      );
    },
    extendDeadline: async () => {
      const bus = eventBus();
      const deliveries = await bus.pull('image-events', { maxMessages: 10 });
      await observe(() =>
        bus.extendDeadline(
          'image-events',
          deliveries.map((d) => d.ackId),
          300,
        ),
      );
    },
    deadLetter: async () => {
      const bus = eventBus();
      await bus.pull('image-events', { maxMessages: 10 });
      await observe(() => bus.deadLetter('image-events', ['ack-1'], 'undecodable image'));
    },
    listDeadLetters: async () => {
      expect(await observe(() => eventBus().listDeadLetters('image-events', 10))).toHaveLength(2);
    },
  },
  CloudRunJobLauncher: {
    running: async () => {
      expect(await observe(() => cloudRun([finished]).running('embed'))).toBeNull();
      expect(await observe(() => cloudRun([live]).running('embed'))).toMatchObject({ executionId: live.name });
    },
    run: async () => {
      expect(await observe(() => cloudRun([finished]).run('embed', { maxMessages: '500' }))).toMatchObject({ executionId: `${JOB}/executions/new` });
      expect(await observe(() => cloudRun([live]).run('embed', {}))).toMatchObject({ executionId: live.name });
    },
    // startDriftCheck's run: no arguments, so no overrides (the drift starter holds run.jobsExecutor only).
    runWithoutOverrides: async () => {
      expect(await observe(() => cloudRun([finished]).run('embed', {}))).toMatchObject({ executionId: `${JOB}/executions/new` });
    },
  },
  VertexJobLauncher: {
    running: async () => {
      expect(await observe(() => vertex([]).running('retrain'))).toBeNull();
    },
    run: async () => {
      await observe(() => vertex([], TRAINER).run('retrain', { reason: 'schedule' }));
      await observe(() => vertex([]).run('retrain', {}));
      const active = { name: 'projects/p1/locations/europe-west1/customJobs/7', displayName: 'iss-retrain', state: 'JOB_STATE_RUNNING' };
      expect(await observe(() => vertex([active], TRAINER).run('retrain', {}))).toMatchObject({ executionId: active.name });
    },
  },
  MonitoringBacklog: {
    backlog: async () => {
      expect(await observe(() => backlogProbe().undelivered())).toBe(42);
    },
  },
  PullBacklog: {
    backlog: async () => {
      const subscriber = recordingClient<ConstructorParameters<typeof PullBacklogProbe>[0]['subscriber']>('SubscriberClient', sdkCalls, {
        pull: () => ({ receivedMessages: [{ ackId: 'a1' }] }),
      });
      expect(
        await observe(() => new PullBacklogProbe({ subscriber, subscription: `projects/${PROJECT}/subscriptions/iss-image-events-sub` }).undelivered()),
      ).toBe(1);
    },
  },
};

// ---------------------------------------------------------------------------------------------
// Adapter surfaces: every member is declared, private, or request-free
// ---------------------------------------------------------------------------------------------

interface Surface {
  /** The adapter's members: `Class.prototype` own names (qualified `Class.member` for module adapters). */
  members(): string[];
  /** Source file, to confirm the listed private helpers are declared `private`. */
  source: string;
  /** Members whose table entry has another name (member → table key), with why. */
  aliases?: Record<string, { key: string; why: string }>;
  /** Table keys that are a use of a member rather than a member. */
  uses?: Record<string, string>;
  /** Private helpers, reached only through the public members driven above. */
  privateHelpers: Record<string, string>;
  /** Public members that send no request: each is driven below and must record none. */
  requestFree: Record<string, { why: string; drive: Driver }>;
}

const protoMembers = (cls: { prototype: object }, qualify = '') =>
  Object.getOwnPropertyNames(cls.prototype)
    .filter((n) => n !== 'constructor')
    .map((n) => `${qualify}${n}`);

const SURFACES: Record<AdapterName, Surface> = {
  GcsSignedUploads: {
    members: () => protoMembers(GcsSignedUploads),
    source: 'shared/adapters/gcp/gcs-signed-uploads.ts',
    privateHelpers: {},
    requestFree: {},
  },
  GcsBlobStore: {
    members: () => protoMembers(GcsBlobStore),
    source: 'shared/adapters/gcp/gcs-blob-store.ts',
    uses: { writeNew: '`write` of a name that never existed before (unique names): create alone' },
    privateHelpers: { infoOf: 'maps object metadata to BlobInfo' },
    requestFree: {
      uri: { why: 'formats gs://bucket/name', drive: async () => void (await observe(() => blobs().uri('a.jpg'))) },
      file: { why: 'returns an SDK File handle; building it sends nothing', drive: async () => void (await observe(() => blobs().file('a.jpg', '1'))) },
    },
  },
  GcsModelRegistry: {
    members: () => protoMembers(GcsModelRegistry),
    source: 'shared/adapters/gcp/gcs-model-registry.ts',
    privateHelpers: {
      download: 'body of localPath',
      load: 'reads meta.json + manifest.json for list/get/active/register',
      readActive: 'readVersioned of active.json for list/get/active/promote/rollback',
      updateActive: 'read-modify-write of active.json for promote/rollback',
      withRetry: 'conflict retry loop',
      writeJson: 'blobs.write of JSON for register/setMetrics/promote/rollback',
      object: 'object name',
      fileName: 'object name',
      checkVersion: 'validation',
    },
    requestFree: {},
  },
  GcsFeatureStore: {
    members: () => protoMembers(GcsFeatureStore),
    source: 'shared/adapters/gcp/gcs-feature-store.ts',
    privateHelpers: {
      refresh: 'lists and reads new shards for every public method',
      apply: 'in-memory view update',
      supersedes: 'generation comparison',
      writeShard: 'blobs.write of a new shard for put/delete/compact',
      readShard: 'blobs.read of a shard',
      withShardRetry: 'retry of get',
      resetView: 'in-memory reset',
    },
    requestFree: {
      dimension: { why: 'getter over in-memory state', drive: async () => void (await observe(() => features().dimension)) },
    },
  },
  GcsRejectionLog: {
    members: () => protoMembers(GcsRejectionLog),
    source: 'shared/adapters/gcp/gcs-rejection-log.ts',
    privateHelpers: { object: 'object name', withRetry: 'stat + read + conflict retry of record/clear', readRecord: 'blobs.read of one record' },
    requestFree: {},
  },
  EmbeddingShards: {
    // Module functions plus the reader class.
    members: () =>
      Object.entries(embeddingShards).flatMap(([name, value]) =>
        typeof value === 'function' && /^class\b/.test(Function.prototype.toString.call(value))
          ? protoMembers(value as { prototype: object }, `${name}.`)
          : [name],
      ),
    source: 'shared/adapters/gcp/embedding-shards.ts',
    aliases: {
      writeEmbeddingShard: { key: 'write', why: 'the table names module functions by what they do' },
      readEmbeddingShard: { key: 'read', why: 'one vector through a one-shard EmbeddingShardReader' },
      'EmbeddingShardReader.read': { key: 'read', why: 'many vectors, each shard read once' },
    },
    privateHelpers: { 'EmbeddingShardReader.shard': 'cached blobs.read of one shard' },
    requestFree: {
      encodeEmbeddingShard: { why: 'pure codec', drive: async () => void (await observe(() => embeddingShards.encodeEmbeddingShard([vec(1)]))) },
      decodeEmbeddingShard: {
        why: 'pure codec',
        drive: async () => void (await observe(() => embeddingShards.decodeEmbeddingShard(embeddingShards.encodeEmbeddingShard([vec(1)])))),
      },
    },
  },
  PubSubEventBus: {
    members: () => protoMembers(PubSubEventBus),
    source: 'shared/adapters/gcp/pubsub-event-bus.ts',
    privateHelpers: {
      topicHandle: 'cached pubsub.topic(name) handle',
      subscriberClient: 'the v1 SubscriberClient (constructing it sends nothing)',
      subscriptionPath: 'name formatting',
      pullFrom: 'SubscriberClient.pull for pull/listDeadLetters',
      modifyDeadline: 'SubscriberClient.modifyAckDeadline for pull/nack/extendDeadline/listDeadLetters',
      toDelivery: 'message mapping',
      forgetOldLeases: 'in-memory cleanup',
    },
    requestFree: {
      stats: {
        why: 'in-memory leases plus the injected `backlog` callback (whose own access is its adapter’s, e.g. MonitoringBacklog)',
        drive: async () => {
          const bus = eventBus();
          await bus.pull('image-events', { maxMessages: 10 });
          expect(await observe(() => bus.stats('image-events'))).toEqual({ ready: 3, inflight: 2, deadLettered: -1 });
        },
      },
      close: {
        why: 'flushes publishes already awaited by publish/publishBatch; closes only a subscriber it created (no API request)',
        drive: async () => {
          const bus = eventBus();
          await bus.publish('image-events', {});
          await observe(() => bus.close());
        },
      },
    },
  },
  CloudRunJobLauncher: {
    members: () => protoMembers(CloudRunJobLauncher),
    source: 'shared/adapters/gcp/cloud-run-job-launcher.ts',
    uses: { runWithoutOverrides: '`run` of a job whose run carries no args, env or task count: the request has no overrides' },
    privateHelpers: { start: 'body of run', jobPath: 'name formatting' },
    requestFree: {},
  },
  VertexJobLauncher: {
    members: () => protoMembers(VertexJobLauncher),
    source: 'shared/adapters/gcp/vertex-job-launcher.ts',
    privateHelpers: { start: 'body of run', parent: 'name formatting', displayName: 'name formatting' },
    requestFree: {},
  },
  MonitoringBacklog: {
    members: () => protoMembers(MonitoringBacklogProbe),
    source: 'functions/backlog.ts',
    aliases: { undelivered: { key: 'backlog', why: 'shared/wiring/cloud-access.ts names the call MonitoringBacklog.backlog' } },
    privateHelpers: {},
    requestFree: {},
  },
  PullBacklog: {
    members: () => protoMembers(PullBacklogProbe),
    source: 'functions/backlog.ts',
    aliases: { undelivered: { key: 'backlog', why: 'shared/wiring/cloud-access.ts names the call PullBacklog.backlog' } },
    privateHelpers: {},
    requestFree: {},
  },
};

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  await server.start();
});
afterAll(async () => {
  await server.stop();
});
beforeEach(async () => {
  server.reset();
  sdkCalls.length = 0;
  cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-access-'));
});
afterEach(async () => {
  await fs.rm(cacheDir, { recursive: true, force: true });
});

const TABLE_ENTRIES = (Object.keys(ADAPTER_ACCESS) as AdapterName[]).flatMap((adapter) =>
  Object.keys(ADAPTER_ACCESS[adapter]).map((method) => ({ name: `${adapter}.${method}`, adapter, method })),
);

describe('the access tables declare every permission their methods need', () => {
  it.each(TABLE_ENTRIES)('$name issues only requests its table entry declares', async ({ adapter, method }) => {
    const driver = (DRIVERS[adapter] as Record<string, Driver | undefined>)[method];
    if (!driver) throw new Error(`${adapter}.${method} is in ${tableName(adapter)} but has no driver in DRIVERS: add one that runs the method`);
    const { requests, error } = await drive(driver);
    const problems = undeclared(adapter, method, requests);
    if (problems.length > 0) throw new Error(problems.join('\n'), { cause: error });
    if (error) throw error;
    // A driver that records nothing does not exercise the method (every entry declares something).
    expect(requests.length, `the driver of ${adapter}.${method} recorded no request`).toBeGreaterThan(0);
  });

  it.each(
    Object.entries(SURFACES).flatMap(([adapter, s]) =>
      Object.entries(s.requestFree).map(([member, m]) => ({ name: `${adapter}.${member}`, why: m.why, drive: m.drive })),
    ),
  )('$name sends no request ($why)', async ({ name, drive: driver }) => {
    const { requests, error } = await drive(driver);
    if (error) throw error;
    expect(
      requests.map((r) => r.label),
      `${name} is listed as request-free`,
    ).toEqual([]);
  });
});

describe('every adapter member is in its table, a private helper, or request-free', () => {
  it.each(Object.keys(SURFACES) as AdapterName[])('%s', async (adapter) => {
    const surface = SURFACES[adapter];
    const table = ADAPTER_ACCESS[adapter] as Record<string, readonly Access[]>;
    const source = await fs.readFile(path.join(process.cwd(), surface.source), 'utf8');
    const reached = new Set<string>(Object.keys(surface.uses ?? {}));
    const problems: string[] = [];
    for (const member of surface.members()) {
      const key = surface.aliases?.[member]?.key ?? member;
      if (key in table) {
        reached.add(key);
      } else if (member in surface.privateHelpers) {
        const bare = member.split('.').pop()!;
        if (!new RegExp(`\\bprivate\\s+(?:async\\s+)?(?:\\*\\s*)?(?:get\\s+)?${bare}\\s*[(<]`).test(source)) {
          problems.push(`${adapter}: ${member} is listed as a private helper but ${surface.source} does not declare it private`);
        }
      } else if (!(member in surface.requestFree)) {
        problems.push(
          `${adapter}.${member} is not in ${tableName(adapter)}: declare the permissions its requests need ` +
            `(and add a driver here), or list it as request-free / a private helper in SURFACES with the reason`,
        );
      }
    }
    for (const key of Object.keys(table)) {
      if (!reached.has(key)) problems.push(`${tableName(adapter)}.${key} names no member of ${adapter} (renamed or removed?)`);
    }
    expect(problems).toEqual([]);
  });
});

describe('the request → permission mapping', () => {
  const upload = (query: Record<string, string>, existedBefore: boolean): RecordedRequest => ({
    method: 'POST',
    path: `/upload/storage/v1/b/${BUCKET}/o`,
    query: { uploadType: 'multipart', name: 'x', ...query },
    headers: {},
    body: Buffer.alloc(0),
    existedBefore,
  });
  const needs = (r: SdkRequest) => (r.operation ? GOOGLE_PERMISSIONS[r.operation].needs(r).map((a) => `${a.permission}@${a.on}`) : null);

  it('an upload needs delete only when it may replace a live object', () => {
    expect(needs(gcsRequest(upload({}, false)))).toEqual(['storage.objects.create@bucket']);
    expect(needs(gcsRequest(upload({}, true)))).toEqual(['storage.objects.create@bucket', 'storage.objects.delete@bucket']);
    expect(needs(gcsRequest(upload({ ifGenerationMatch: '17' }, true)))).toEqual(['storage.objects.create@bucket', 'storage.objects.delete@bucket']);
    expect(needs(gcsRequest(upload({ ifGenerationMatch: '0' }, true)))).toEqual(['storage.objects.create@bucket']);
  });

  it('maps the other documented requests, and leaves unknown ones unmapped', () => {
    const gcs = (method: string, p: string, query: Record<string, string> = {}) =>
      needs(gcsRequest({ method, path: p, query, headers: {}, body: Buffer.alloc(0) }));
    const o = `/storage/v1/b/${BUCKET}/o`;
    expect(gcs('GET', `${o}/a%2Fb`, { alt: 'media' })).toEqual(['storage.objects.get@bucket']);
    expect(gcs('GET', o, { prefix: 'a/' })).toEqual(['storage.objects.list@bucket']);
    expect(gcs('DELETE', `${o}/a`)).toEqual(['storage.objects.delete@bucket']);
    expect(gcs('PATCH', `${o}/a`)).toEqual(['storage.objects.update@bucket']);
    expect(gcs('POST', `${o}/a/rewriteTo/b/${BUCKET}/o/b`)).toEqual(['storage.objects.create@bucket', 'storage.objects.get@bucket']);
    expect(gcs('POST', `/storage/v1/b/${BUCKET}/iam/testPermissions`)).toBeNull();
    const rpc = (client: string, method: string, request: unknown) => needs(sdkRequest({ client, method, request })!);
    expect(rpc('JobsClient', 'runJob', { name: JOB })).toEqual(['run.jobs.run@runJob']);
    expect(rpc('JobsClient', 'runJob', { name: JOB, overrides: {} })).toEqual(['run.jobs.runWithOverrides@runJob']);
    expect(rpc('JobServiceClient', 'createCustomJob', { parent: 'projects/p1/locations/r', customJob: { jobSpec: { serviceAccount: TRAINER } } })).toEqual([
      'aiplatform.customJobs.create@project',
      'iam.serviceAccounts.actAs@serviceAccount',
    ]);
    expect(rpc('SubscriberClient', 'getSubscription', { subscription: 'projects/p1/subscriptions/s' })).toBeNull();
    expect(sdkRequest({ client: 'SubscriberClient', method: 'close', request: undefined })).toBeNull();
  });
});

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import { getFunction, getTestServer } from '@google-cloud/functions-framework/testing';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CloudRunJobLauncher } from '../../shared/adapters/gcp/cloud-run-job-launcher.js';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import type { FeatureRecord } from '../../shared/ports/feature-store.js';
import type { JobExecution, JobLauncher } from '../../shared/ports/job-launcher.js';
import {
  BlobDriftStateStore,
  buildDriftProfile,
  DRIFT_PROFILE_FILE,
  MAX_RETRAIN_REASON,
  retrainRequestPublisher,
  runDriftCheck,
} from '../../shared/services/drift.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';
import { retrainRequestSchema, type StartRetrainingResult } from '../../functions/start-retraining.js';
import type { StartDriftCheckResult } from '../../functions/drift-check.js';
import { tempDir } from '../helpers/cli.js';
import { fmPixelsManifest, fmPixelsRecord } from '../helpers/fm-pixels.js';
import { captureLogger, RecordingBus } from './functions-fakes.js';

/**
 * The cloud drift check: the Scheduler's function starting the drift job (through the Functions
 * Framework test server, Cloud Run v2 clients faked at their method boundary as in
 * functions-dispatch-retrain.unit.test.ts), and the job's request reaching startRetraining as a
 * Pub/Sub message it accepts — on real Fashion-MNIST data, one class flooding in.
 */
function fakeRun() {
  const executions: { name: string; createTime: { seconds: number }; completionTime?: { seconds: number } }[] = [];
  const runRequests: unknown[] = [];
  const jobs = {
    async runJob(request: { name: string }) {
      runRequests.push(request);
      const execution = { name: `${request.name}/executions/e${executions.length + 1}`, createTime: { seconds: 1_740_000_000 + executions.length } };
      executions.unshift(execution);
      return [{ name: 'operations/op1', metadata: execution }];
    },
  };
  const executionsClient = {
    async *listExecutionsAsync() {
      yield* executions;
    },
  };
  return { jobs, executions: executionsClient, runRequests, finishAll: () => executions.forEach((e) => (e.completionTime = { seconds: 1_740_000_100 })) };
}

describe('startDriftCheck (HTTP, through the Functions Framework test server)', () => {
  let server: Server;
  let url: string;
  let run: ReturnType<typeof fakeRun>;
  let setDeps: typeof import('../../functions/drift-check.js').setDepsForTesting;

  beforeAll(async () => {
    ({ setDepsForTesting: setDeps } = await import('../../functions/drift-check.js'));
    server = getTestServer('startDriftCheck');
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  beforeEach(() => {
    run = fakeRun();
    const launcher = new CloudRunJobLauncher({
      jobs: run.jobs as never,
      executions: run.executions as never,
      projectId: 'p1',
      region: 'europe-west1',
      jobNameFor: (job) => (job === 'drift-check' ? 'iss-drift-check' : job),
      overridesFor: (_job, args) => ({ env: args }),
    });
    setDeps({ launcher, logger: captureLogger().logger });
  });

  const tick = async () => {
    const res = await fetch(url, { method: 'POST' });
    return { status: res.status, body: (await res.json()) as StartDriftCheckResult };
  };

  it('starts the drift job, not a second one while it runs, and again once it finished', async () => {
    const first = await tick();
    expect(first).toMatchObject({
      status: 200,
      body: { started: true, execution: { executionId: 'projects/p1/locations/europe-west1/jobs/iss-drift-check/executions/e1' } },
    });
    expect((await tick()).body).toMatchObject({ started: false, execution: { executionId: first.body.execution.executionId } });
    expect(run.runRequests).toHaveLength(1);
    run.finishAll();
    expect((await tick()).body).toMatchObject({
      started: true,
      execution: { executionId: 'projects/p1/locations/europe-west1/jobs/iss-drift-check/executions/e2' },
    });
  });

  it('answers 500 with the error when Cloud Run refuses (the next tick retries)', async () => {
    setDeps({
      launcher: {
        running: async () => Promise.reject(new Error('PERMISSION_DENIED run.executions.list')),
        run: async () => ({}) as JobExecution,
      } as JobLauncher,
      logger: captureLogger().logger,
    });
    expect(await tick()).toEqual({ status: 500, body: { error: 'PERMISSION_DENIED run.executions.list' } as never });
  });
});

describe('the drift job: its retrain request goes through startRetraining', () => {
  const manifest = fmPixelsManifest;
  let work: string;
  let registry: LocalModelRegistry;
  let features: PerTowerFeatureStore;

  beforeAll(async () => {
    work = await tempDir('drift-cloud');
    const fm = await readFashionMnist({ split: 'train', limit: 4000 });
    const order = shuffledIndices(fm.images.length, mulberry32(5));
    const rec = (i: number, generation: number): FeatureRecord => fmPixelsRecord(i, fm.images[i]!, fm.classNames[fm.labels[i]!]!, generation, 'gs://images');
    const reference = Array.from(order.subarray(0, 1500), (i, k) => rec(i, 1_000 + k));
    const bags = Array.from(order.subarray(1500))
      .filter((i) => fm.labels[i] === 8)
      .slice(0, 250)
      .map((i, k) => rec(i, 100_000 + k));
    // The version's profile is the artifact `retrain` saves (test/integration/drift-check covers that path).
    registry = new LocalModelRegistry(path.join(work, 'models'));
    await registry.register({
      version: manifest.version,
      parent: null,
      manifest,
      files: { 'image.onnx': Buffer.from('not run'), [DRIFT_PROFILE_FILE]: Buffer.from(JSON.stringify(buildDriftProfile(manifest.version, reference))) },
      metrics: { imageToImage: { 'recall@1': 0.8 } },
    });
    await registry.promote(manifest.version);
    features = await PerTowerFeatureStore.open(path.join(work, 'features'));
    await features.put([...reference, ...bags]);
  });
  afterAll(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('publishes { reason, args } to retrain-requests, which startRetraining accepts and acts on with that reason', async () => {
    const bus = new RecordingBus();
    const { logger, lines } = captureLogger();
    const report = await runDriftCheck(
      {
        registry,
        features,
        state: new BlobDriftStateStore(new FolderBlobStore(path.join(work, 'state'))),
        requestRetrain: retrainRequestPublisher(bus, 'iss-retrain-requests', logger),
        logger,
      },
      { recentUploads: 250 },
    );
    expect(report.decision.retrain).toBe(true);
    const [message] = bus.on('iss-retrain-requests');
    expect(bus.published).toHaveLength(1);
    const request = retrainRequestSchema.parse(message!.data);
    expect(request.reason).toMatch(/^drift check: drift \(uploads: PSI \d/);
    expect(request.reason.length).toBeLessThanOrEqual(MAX_RETRAIN_REASON);
    expect(message!.attributes).toEqual({ source: 'drift-check' });
    // The whole reason is in the log, not only the cut one.
    expect(lines().find((l) => (l.message ?? l.msg) === 'retraining requested')).toMatchObject({
      topic: 'iss-retrain-requests',
      reason: `drift check: ${report.decision.reasons.join(' | ')}`,
    });

    // Delivered as Pub/Sub pushes it to startRetraining.
    const runs: Record<string, string>[] = [];
    const launcher: JobLauncher = {
      async run(job, args) {
        runs.push(args);
        return { job, executionId: 'projects/p1/locations/europe-west1/customJobs/1', state: 'running', startedAt: '2025-03-01T00:00:00Z' };
      },
      running: async () => null,
    };
    (await import('../../functions/start-retraining.js')).setDepsForTesting({ launcher, bus: new RecordingBus(), logger: captureLogger().logger });
    const startRetraining = getFunction('startRetraining') as unknown as (event: unknown) => Promise<StartRetrainingResult>;
    const result = await startRetraining({
      specversion: '1.0',
      id: '7',
      source: '//pubsub.googleapis.com/projects/p1/topics/iss-retrain-requests',
      type: 'google.cloud.pubsub.topic.v1.messagePublished',
      data: { message: { data: Buffer.from(JSON.stringify(message!.data)).toString('base64'), attributes: message!.attributes, messageId: '7' } },
    });
    expect(result).toMatchObject({ status: 'started', reason: request.reason });
    expect(runs).toEqual([{}]);
  });

  it('cuts a long reason to what startRetraining accepts', async () => {
    const bus = new RecordingBus();
    await retrainRequestPublisher(bus, 't')('x'.repeat(500));
    const request = retrainRequestSchema.parse(bus.published[0]!.data);
    expect(request.reason).toHaveLength(MAX_RETRAIN_REASON);
    expect(request.reason.endsWith('…')).toBe(true);
  });
});

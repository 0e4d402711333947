import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getFunction, getTestServer } from '@google-cloud/functions-framework/testing';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CloudRunJobLauncher } from '../../shared/adapters/gcp/cloud-run-job-launcher.js';
import type { JobExecution, JobLauncher } from '../../shared/ports/job-launcher.js';
import { MonitoringBacklogProbe, PullBacklogProbe } from '../../functions/backlog.js';
import type { StartRetrainingResult } from '../../functions/start-retraining.js';
import { captureLogger, RecordingBus } from './functions-fakes.js';

/**
 * Cloud Run v2 clients as the launcher calls them: `runJob` starts an execution that stays
 * running (no completionTime) until the test finishes it; `listExecutionsAsync` lists newest first.
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

describe('dispatchEmbed (HTTP, through the Functions Framework test server)', () => {
  let server: Server;
  let url: string;
  let backlog = 0;
  let run: ReturnType<typeof fakeRun>;
  let setDeps: typeof import('../../functions/dispatch-embed.js').setDepsForTesting;

  beforeAll(async () => {
    ({ setDepsForTesting: setDeps } = await import('../../functions/dispatch-embed.js'));
    server = getTestServer('dispatchEmbed');
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  beforeEach(() => {
    run = fakeRun();
    backlog = 0;
    const launcher = new CloudRunJobLauncher({
      jobs: run.jobs as never,
      executions: run.executions as never,
      projectId: 'p1',
      region: 'europe-west1',
      jobNameFor: (job) => `iss-${job}`,
      overridesFor: (_job, args) => ({ env: args }),
    });
    setDeps({ backlog: { undelivered: async () => backlog }, launcher, logger: captureLogger().logger });
  });

  const tick = async () => {
    const res = await fetch(url, { method: 'POST' });
    return { status: res.status, body: (await res.json()) as { backlog: number; started: boolean; execution: JobExecution | null } };
  };

  it('does not start the job without a backlog', async () => {
    expect(await tick()).toEqual({ status: 200, body: { backlog: 0, started: false, execution: null } });
    expect(run.runRequests).toEqual([]);
  });

  it('starts the job once when events wait, and not a second time while it runs', async () => {
    backlog = 250;
    const first = await tick();
    expect(first.body).toMatchObject({ backlog: 250, started: true, execution: { job: 'embed', state: 'running' } });
    expect(first.body.execution!.executionId).toBe('projects/p1/locations/europe-west1/jobs/iss-embed/executions/e1');
    const second = await tick();
    expect(second.body).toMatchObject({ backlog: 250, started: false, execution: { executionId: first.body.execution!.executionId } });
    expect(run.runRequests).toHaveLength(1);
    // Nothing to override: the request carries no overrides at all, so the container keeps its
    // args (the job's entry point) and the run needs only run.jobs.run.
    expect(run.runRequests[0]).toEqual({ name: 'projects/p1/locations/europe-west1/jobs/iss-embed' });

    run.finishAll();
    const third = await tick();
    expect(third.body).toMatchObject({ started: true, execution: { executionId: 'projects/p1/locations/europe-west1/jobs/iss-embed/executions/e2' } });
  });

  it('answers 500 with the error when the backlog cannot be read (the next tick retries)', async () => {
    setDeps({
      backlog: { undelivered: async () => Promise.reject(new Error('PERMISSION_DENIED monitoring')) },
      launcher: {} as JobLauncher,
      logger: captureLogger().logger,
    });
    const res = await tick();
    expect(res).toEqual({ status: 500, body: { error: 'PERMISSION_DENIED monitoring' } as never });
  });
});

describe('backlog probes', () => {
  it('reads the newest num_undelivered_messages sample from Cloud Monitoring', async () => {
    const requests: { url: string; params: Record<string, string> }[] = [];
    const probe = new MonitoringBacklogProbe({
      auth: {
        request: (async (opts: { url: string; params: Record<string, string> }) => {
          requests.push(opts);
          return {
            data: {
              timeSeries: [
                {
                  points: [
                    { interval: { endTime: '2025-03-01T10:01:00Z' }, value: { int64Value: '42' } },
                    { interval: { endTime: '2025-03-01T10:00:00Z' }, value: { int64Value: '7' } },
                  ],
                },
              ],
            },
          };
        }) as never,
      },
      projectId: 'p1',
      subscriptionId: 'projects/p1/subscriptions/iss-image-events-embed',
      now: () => Date.parse('2025-03-01T10:02:00Z'),
    });
    expect(await probe.undelivered()).toBe(42);
    expect(requests[0]!.url).toBe('https://monitoring.googleapis.com/v3/projects/p1/timeSeries');
    expect(requests[0]!.params.filter).toContain('resource.labels.subscription_id="iss-image-events-embed"');
    expect(requests[0]!.params['interval.startTime']).toBe('2025-03-01T09:57:00.000Z');
  });

  it('counts no time series as no backlog, and refuses an unexpected answer', async () => {
    const probe = (data: unknown) => new MonitoringBacklogProbe({ auth: { request: (async () => ({ data })) as never }, projectId: 'p1', subscriptionId: 's' });
    expect(await probe({}).undelivered()).toBe(0);
    await expect(probe({ timeSeries: 'nope' }).undelivered()).rejects.toThrow(/Unexpected Cloud Monitoring answer/);
  });

  it('pull probe: pulls one message and releases it at once', async () => {
    const calls: string[] = [];
    const subscriber = {
      pull: async () => {
        calls.push('pull');
        return [{ receivedMessages: [{ ackId: 'a1', message: { data: Buffer.from('{}') } }] }];
      },
      modifyAckDeadline: async (req: { ackIds: string[]; ackDeadlineSeconds: number }) => {
        calls.push(`modAck ${req.ackIds.join(',')} ${req.ackDeadlineSeconds}`);
        return [{}];
      },
    };
    expect(await new PullBacklogProbe({ subscriber: subscriber as never, subscription: 'projects/p1/subscriptions/s' }).undelivered()).toBe(1);
    expect(calls).toEqual(['pull', 'modAck a1 0']);
    const empty = { pull: async () => Promise.reject(Object.assign(new Error('deadline'), { code: 4 })), modifyAckDeadline: async () => [{}] };
    expect(await new PullBacklogProbe({ subscriber: empty as never, subscription: 's' }).undelivered()).toBe(0);
  });
});

describe('startRetraining', () => {
  let fn: (event: unknown) => Promise<StartRetrainingResult>;
  let setDeps: typeof import('../../functions/start-retraining.js').setDepsForTesting;
  let bus: RecordingBus;
  let runs: Record<string, string>[];
  let running: JobExecution | null;

  const event = (payload: unknown, raw?: string) => ({
    specversion: '1.0',
    id: '99',
    source: '//pubsub.googleapis.com/projects/p1/topics/iss-retrain-requests',
    type: 'google.cloud.pubsub.topic.v1.messagePublished',
    data: { message: { data: Buffer.from(raw ?? JSON.stringify(payload)).toString('base64'), attributes: { source: 'cloud-scheduler' }, messageId: '99' } },
  });

  beforeAll(async () => {
    ({ setDepsForTesting: setDeps } = await import('../../functions/start-retraining.js'));
    fn = getFunction('startRetraining') as unknown as typeof fn;
  });
  beforeEach(() => {
    bus = new RecordingBus();
    runs = [];
    running = null;
    const launcher: JobLauncher = {
      async run(job, args) {
        runs.push(args);
        running = { job, executionId: `projects/p1/locations/europe-west1/customJobs/${runs.length}`, state: 'running', startedAt: '2025-03-01T00:00:00Z' };
        return running;
      },
      running: async () => running,
    };
    setDeps({ launcher, bus, logger: captureLogger().logger });
  });

  it('starts the Vertex AI job for a scheduled request, and not a second one while it runs', async () => {
    await expect(fn(event({ reason: 'scheduled' }))).resolves.toMatchObject({ status: 'started', reason: 'scheduled' });
    await expect(fn(event({ reason: 'scheduled' }))).resolves.toMatchObject({ status: 'already-running' });
    expect(runs).toEqual([{}]);
  });

  it('passes validated job arguments', async () => {
    await fn(event({ reason: 'manual', args: { epochs: '20' } }));
    expect(runs).toEqual([{ epochs: '20' }]);
  });

  it('dead-letters a malformed request to <topic>-dead-letter with the reason', async () => {
    await expect(fn(event({ reason: 'x', args: { '--evil': 'y' } }))).resolves.toMatchObject({ status: 'dead-lettered' });
    await fn(event(null, 'not json'));
    const dead = bus.on('projects/p1/topics/iss-retrain-requests-dead-letter');
    expect(dead.map((d) => d.attributes.reason)).toEqual([
      expect.stringMatching(/args\.--evil: argument name "--evil" must be/),
      expect.stringMatching(/malformed retrain request/),
    ]);
    expect(runs).toEqual([]);
  });

  it('throws when Vertex AI cannot be reached (redelivered)', async () => {
    setDeps({ launcher: { run: async () => Promise.reject(new Error('UNAVAILABLE')), running: async () => null }, bus, logger: captureLogger().logger });
    await expect(fn(event({ reason: 'scheduled' }))).rejects.toThrow('UNAVAILABLE');
  });
});

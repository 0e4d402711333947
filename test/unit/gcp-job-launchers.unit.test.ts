import { v1 as aiplatform } from '@google-cloud/aiplatform';
import { v2 as run } from '@google-cloud/run';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CloudRunJobLauncher } from '../../shared/adapters/gcp/cloud-run-job-launcher.js';
import { VertexJobLauncher } from '../../shared/adapters/gcp/vertex-job-launcher.js';
import { ConfigError, AppError } from '../../shared/errors.js';

/** Real gax clients with their RPC methods stubbed: the tests assert the exact request objects. */
const JOB_PATH = 'projects/p1/locations/europe-west1/jobs/iss-embed';

async function* iterate<T>(items: T[]): AsyncGenerator<T> {
  for (const item of items) yield item;
}

describe('CloudRunJobLauncher', () => {
  let jobs: run.JobsClient;
  let executions: run.ExecutionsClient;
  let launcher: CloudRunJobLauncher;

  beforeEach(() => {
    jobs = new run.JobsClient({ projectId: 'p1' });
    executions = new run.ExecutionsClient({ projectId: 'p1' });
    launcher = new CloudRunJobLauncher({
      jobs,
      executions,
      projectId: 'p1',
      region: 'europe-west1',
      jobNameFor: (job) => `iss-${job}`,
    });
  });
  afterEach(() => vi.restoreAllMocks());

  it('starts an execution with container overrides when none is running', async () => {
    const list = vi
      .spyOn(executions, 'listExecutionsAsync')
      .mockReturnValue(iterate([{ name: `${JOB_PATH}/executions/old`, completionTime: { seconds: 100 }, succeededCount: 1 }]) as never);
    const runJob = vi.spyOn(jobs, 'runJob').mockResolvedValue([
      {
        name: 'projects/p1/locations/europe-west1/operations/op1',
        metadata: { name: `${JOB_PATH}/executions/iss-embed-x1`, createTime: { seconds: 1_700_000_000 } },
      },
    ] as never);
    const execution = await launcher.run('embed', { maxMessages: '500', prefix: 'photos/' });
    expect(list).toHaveBeenCalledWith({ parent: JOB_PATH, pageSize: 20 });
    expect(runJob).toHaveBeenCalledWith({
      name: JOB_PATH,
      overrides: { containerOverrides: [{ args: ['--maxMessages=500', '--prefix=photos/'], env: [] }] },
    });
    expect(execution).toEqual({ job: 'embed', executionId: `${JOB_PATH}/executions/iss-embed-x1`, state: 'running', startedAt: '2023-11-14T22:13:20.000Z' });
  });

  it('sends no overrides when a run has none, so roles/run.jobsExecutor (run.jobs.run) is enough (security review, finding 10)', async () => {
    // Cloud Run IAM permissions (cloud.google.com/run/docs/reference/iam/permissions): jobs.run needs
    // run.jobs.run; a request carrying `overrides` needs run.jobs.runWithOverrides.
    vi.spyOn(executions, 'listExecutionsAsync').mockReturnValue(iterate([]) as never);
    const runJob = vi.spyOn(jobs, 'runJob').mockResolvedValue([{ name: 'operations/op1', metadata: { name: `${JOB_PATH}/executions/x` } }] as never);
    await launcher.run('embed', {});
    const plain = new CloudRunJobLauncher({
      jobs,
      executions,
      projectId: 'p1',
      region: 'europe-west1',
      jobNameFor: (j) => `iss-${j}`,
      overridesFor: (_j, a) => ({ env: a }),
    });
    await plain.run('embed', {});
    expect(runJob.mock.calls).toEqual([[{ name: JOB_PATH }], [{ name: JOB_PATH }]]);
  });

  it('returns the running execution instead of starting another', async () => {
    vi.spyOn(executions, 'listExecutionsAsync').mockImplementation(
      () => iterate([{ name: `${JOB_PATH}/executions/live`, startTime: { seconds: 1_700_000_100 }, runningCount: 3 }]) as never,
    );
    const runJob = vi.spyOn(jobs, 'runJob');
    const execution = await launcher.run('embed', {});
    expect(runJob).not.toHaveBeenCalled();
    expect(execution).toMatchObject({ executionId: `${JOB_PATH}/executions/live`, state: 'running' });
    expect(await launcher.running('embed')).toMatchObject({ executionId: `${JOB_PATH}/executions/live` });
  });

  it('two concurrent runs in one process start one execution', async () => {
    vi.spyOn(executions, 'listExecutionsAsync').mockImplementation(() => iterate([]) as never);
    const runJob = vi.spyOn(jobs, 'runJob').mockResolvedValue([{ name: 'op', metadata: { name: `${JOB_PATH}/executions/e1` } }] as never);
    const [a, b] = await Promise.all([launcher.run('embed', {}), launcher.run('embed', {})]);
    expect(runJob).toHaveBeenCalledTimes(1);
    expect(a).toEqual(b);
  });

  it('passes env and taskCount from overridesFor, and rejects bad input', async () => {
    vi.spyOn(executions, 'listExecutionsAsync').mockImplementation(() => iterate([]) as never);
    const runJob = vi.spyOn(jobs, 'runJob').mockResolvedValue([{ name: 'op', metadata: { name: `${JOB_PATH}/executions/e2` } }] as never);
    const custom = new CloudRunJobLauncher({
      jobs,
      executions,
      projectId: 'p1',
      region: 'europe-west1',
      jobNameFor: (job) => `iss-${job}`,
      overridesFor: (_job, args) => ({ args: ['embed'], env: { BATCH: args.batch! }, taskCount: Number(args.tasks) }),
    });
    await custom.run('embed', { batch: '32', tasks: '4' });
    expect(runJob.mock.calls[0]![0]).toEqual({
      name: JOB_PATH,
      overrides: { containerOverrides: [{ args: ['embed'], env: [{ name: 'BATCH', value: '32' }] }], taskCount: 4 },
    });
    await expect(custom.run('embed', { batch: '1', tasks: '0' })).rejects.toThrow(/taskCount must be a positive integer/);
    await expect(launcher.run('embed', { 'x --evil': '1' })).rejects.toThrow(/argument name/);
    await expect(launcher.run('Bad_Job', {})).rejects.toThrow(AppError);
  });
});

describe('VertexJobLauncher', () => {
  let client: aiplatform.JobServiceClient;
  let launcher: VertexJobLauncher;
  const PARENT = 'projects/p1/locations/us-central1';

  beforeEach(() => {
    client = new aiplatform.JobServiceClient({ projectId: 'p1', apiEndpoint: 'us-central1-aiplatform.googleapis.com' });
    launcher = new VertexJobLauncher({
      client,
      projectId: 'p1',
      region: 'us-central1',
      jobs: {
        retrain: {
          imageUri: 'europe-docker.pkg.dev/p1/iss/retrain:abc',
          machineType: 'n1-standard-8',
          acceleratorType: 'NVIDIA_TESLA_T4',
          serviceAccount: 'retrain@p1.iam.gserviceaccount.com',
          env: { LOG_LEVEL: 'info' },
          labels: { app: 'iss' },
        },
      },
    });
  });
  afterEach(() => vi.restoreAllMocks());

  it('creates a custom job with one worker pool when none is active', async () => {
    const list = vi.spyOn(client, 'listCustomJobsAsync').mockReturnValue(iterate([]) as never);
    const create = vi
      .spyOn(client, 'createCustomJob')
      .mockResolvedValue([
        { name: `${PARENT}/customJobs/123`, displayName: 'iss-retrain', state: 'JOB_STATE_PENDING', createTime: { seconds: '1700000000' } },
      ] as never);
    const execution = await launcher.run('retrain', { reason: 'schedule' });
    expect(list).toHaveBeenCalledWith({
      parent: PARENT,
      filter: 'display_name="iss-retrain" AND (state="JOB_STATE_QUEUED" OR state="JOB_STATE_PENDING" OR state="JOB_STATE_RUNNING")',
      pageSize: 10,
    });
    expect(create).toHaveBeenCalledWith({
      parent: PARENT,
      customJob: {
        displayName: 'iss-retrain',
        labels: { app: 'iss', 'iss-job': 'retrain' },
        jobSpec: {
          workerPoolSpecs: [
            {
              machineSpec: { machineType: 'n1-standard-8', acceleratorType: 'NVIDIA_TESLA_T4', acceleratorCount: 1 },
              replicaCount: 1,
              containerSpec: {
                imageUri: 'europe-docker.pkg.dev/p1/iss/retrain:abc',
                args: ['--reason=schedule'],
                env: [{ name: 'LOG_LEVEL', value: 'info' }],
              },
            },
          ],
          serviceAccount: 'retrain@p1.iam.gserviceaccount.com',
        },
      },
    });
    expect(execution).toEqual({ job: 'retrain', executionId: `${PARENT}/customJobs/123`, state: 'running', startedAt: '2023-11-14T22:13:20.000Z' });
  });

  it('refuses a second concurrent run: returns the active job', async () => {
    vi.spyOn(client, 'listCustomJobsAsync').mockReturnValue(
      iterate([{ name: `${PARENT}/customJobs/9`, displayName: 'iss-retrain', state: 'JOB_STATE_RUNNING', startTime: { seconds: 5 } }]) as never,
    );
    const create = vi.spyOn(client, 'createCustomJob');
    expect(await launcher.run('retrain', {})).toMatchObject({ executionId: `${PARENT}/customJobs/9`, state: 'running' });
    expect(create).not.toHaveBeenCalled();
  });

  it('ignores list results that are not active (lax server filter) and reports unknown jobs clearly', async () => {
    vi.spyOn(client, 'listCustomJobsAsync').mockReturnValue(iterate([{ name: 'x', displayName: 'iss-retrain', state: 'JOB_STATE_SUCCEEDED' }]) as never);
    expect(await launcher.running('retrain')).toBeNull();
    await expect(launcher.run('embed', {})).rejects.toThrow(ConfigError);
    await expect(launcher.run('embed', {})).rejects.toThrow(/configured: retrain/);
    expect(
      () => new VertexJobLauncher({ client, projectId: 'p1', region: 'r', jobs: { retrain: { imageUri: 'i', machineType: 'm', labels: { App: 'x' } } } }),
    ).toThrow(/label App=x/);
  });
});

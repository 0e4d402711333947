import { describe, expect, test } from 'vitest';
import { retrainRequestSchema } from '../../functions/start-retraining.js';
import { parseStackConfig, type RawStackConfig } from '../../infra/config.js';
import { runChecks } from '../../infra/deploy-check/checks.js';
import { CLOUD_RUN_GPU_JOB_REGIONS } from '../../infra/config.js';
import { createStack } from '../../infra/stack.js';
import { buildStack, ofType, TEST_PROJECT_NUMBER, type Program, type RecordedResource } from '../../infra/testing/mocks.js';
import { argsToFlags } from '../../shared/adapters/gcp/job-args.js';
import { parseTuningJobArgs } from '../../shared/services/tuning.js';
import { RETRAIN_JOB_SPEC_ENV } from '../../shared/wiring/cloud-config.js';

/**
 * `iss:retrain.tune` in the Pulumi program (realistic mocks of infra/testing): the scheduled
 * request becomes a tuning run the trainer understands, and the trainer gets exactly what a
 * Vertex AI hyperparameter tuning job needs — two permissions in a custom role, and actAs on its
 * own account for the trials — and nothing of it when tuning is off.
 */
const TRAINER = 'serviceAccount:iss-trainer@iss-test-project.iam.gserviceaccount.com';

function trainerGrants(all: RecordedResource[]): string[] {
  const project = ofType(all, 'gcp:projects/iAMMember:IAMMember')
    .filter((g) => g.inputs.member === TRAINER)
    .map((g) => `${g.inputs.role} on project`);
  const accounts = ofType(all, 'gcp:serviceaccount/iAMMember:IAMMember')
    .filter((g) => g.inputs.member === TRAINER)
    .map((g) => `${g.inputs.role} on ${String(g.inputs.serviceAccountId).split('/').pop()!.split('@')[0]}`);
  return [...project, ...accounts].sort();
}

function scheduledRequest(all: RecordedResource[]) {
  const cron = ofType(all, 'gcp:cloudscheduler/job:Job').find((j) => j.inputs.name === 'iss-retrain')!;
  return retrainRequestSchema.parse(JSON.parse(Buffer.from(cron.inputs.pubsubTarget.data, 'base64').toString('utf8')));
}

const SPACE = { hidden: { type: 'int', min: 256, max: 2048, log: true }, learnableTemperature: { type: 'categorical', values: [true, false] } };

describe('scheduled hyperparameter search (iss:retrain.tune)', () => {
  test('off by default: no tuning role, the trainer keeps its plain grants, the request is a plain retraining', async () => {
    const all = await buildStack({ retrain: { schedule: '15 4 * * 1', args: { epochs: '8' } } } as Partial<RawStackConfig>);
    expect(ofType(all, 'gcp:projects/iAMCustomRole:IAMCustomRole').map((r) => r.inputs.roleId)).not.toContain('iss_retrain_tuner');
    expect(trainerGrants(all)).toEqual([]);
    const request = scheduledRequest(all);
    expect(request.args).toEqual({ epochs: '8' });
    expect(parseTuningJobArgs(argsToFlags('retrain', request.args))).toBeNull();
  });

  test('on: the scheduled request is a tuning run with the configured trials, parallelism and space', async () => {
    const all = await buildStack({
      retrain: { schedule: '15 4 * * 1', args: { epochs: '8', seed: '7' }, tune: { trials: 6, parallel: 3, space: SPACE } },
    } as Partial<RawStackConfig>);
    const request = scheduledRequest(all);
    // What startRetraining hands the trainer as container args (functions/start-retraining.ts).
    const parsed = parseTuningJobArgs(argsToFlags('retrain', request.args));
    expect(parsed).toMatchObject({ mode: 'study', trials: 6, parallel: 3, seed: 7, algorithm: 'ALGORITHM_UNSPECIFIED' });
    expect(parsed!.space).toEqual({ hidden: { ...SPACE.hidden }, learnableTemperature: { ...SPACE.learnableTemperature } });
    // epochs is a flag of one retraining, not of a study: left out rather than refused by the job.
    expect(request.args.epochs).toBeUndefined();
  });

  test('on: the trainer may create and read tuning jobs (a custom role of two permissions) and act as itself, nothing more', async () => {
    const all = await buildStack({ retrain: { schedule: '15 4 * * 1', args: {}, tune: { trials: 4, parallel: 2 } } } as Partial<RawStackConfig>);
    const role = ofType(all, 'gcp:projects/iAMCustomRole:IAMCustomRole').find((r) => r.inputs.roleId === 'iss_retrain_tuner')!;
    expect([...role.inputs.permissions].sort()).toEqual(['aiplatform.hyperparameterTuningJobs.create', 'aiplatform.hyperparameterTuningJobs.get']);
    expect(trainerGrants(all)).toEqual(['projects/iss-test-project/roles/iss_retrain_tuner on project', 'roles/iam.serviceAccountUser on iss-trainer']);
    // startRetraining forwards the trainer's image, machine and identity into the job spec: the trials' spec.
    const start = ofType(all, 'gcp:cloudfunctionsv2/function:Function').find((f) => f.inputs.buildConfig.entryPoint === 'startRetraining')!;
    const env = start.inputs.serviceConfig.environmentVariables;
    for (const name of ['TRAINER_IMAGE', 'TRAINER_MACHINE_TYPE', 'TRAINER_SERVICE_ACCOUNT'] as const) {
      expect(RETRAIN_JOB_SPEC_ENV).toContain(name);
      expect(env[name], name).toBeTruthy();
    }
  });

  test('the stack refuses a tuning setting the job could not run', () => {
    const base = { project: 'p-123456', region: 'europe-west1', alertEmail: 'ops@example.com' };
    expect(() => parseStackConfig({ ...base, retrain: { tune: { trials: 2, parallel: 4 } } })).toThrow(/retrain\.tune\.parallel.*must not exceed trials/);
    expect(() => parseStackConfig({ ...base, retrain: { tune: { trials: 0 } } })).toThrow(/retrain\.tune\.trials/);
    expect(() => parseStackConfig({ ...base, retrain: { tune: { algorithm: 'GRID' } } })).toThrow(/retrain\.tune\.algorithm/);
  });

  test('the deploy check passes with tuning on, and names the grant when the trainer may not act as itself', async () => {
    const raw = { retrain: { schedule: '15 4 * * 1', args: {}, tune: { trials: 4, parallel: 2 } } } as Partial<RawStackConfig>;
    const check = async (program?: Program) =>
      runChecks(await buildStack(raw, program), {
        projectNumber: TEST_PROJECT_NUMBER,
        region: 'us-central1',
        gpuRegions: CLOUD_RUN_GPU_JOB_REGIONS,
      }).findings.map((f) => f.message);
    expect(await check()).toEqual([]);
    // The defect: the actAs grant goes to another account (as if bound on the starter, not the trainer).
    const withoutActAs: Program = (cfg, opts) =>
      createStack(cfg, {
        transformations: [
          (a) =>
            a.name === 'retraining-trainer-acts-as-itself'
              ? { props: { ...a.props, member: 'serviceAccount:someone-else@iss-test-project.iam.gserviceaccount.com' }, opts: a.opts }
              : undefined,
          ...opts.transformations,
        ],
      });
    expect(await check(withoutActAs)).toEqual([
      expect.stringMatching(
        /scheduled hyperparameter tuning run \(its trials run as the trainer\): serviceAccount:iss-trainer@.* needs iam\.serviceAccounts\.actAs/,
      ),
    ]);
  });
});

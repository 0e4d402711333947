import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as pulumi from '@pulumi/pulumi';
import { describe, expect, test } from 'vitest';
import { CLOUD_RUN_GPU_JOB_REGIONS, DERIVED_NAMES, derivedName, loadStackConfig, maxPrefixLength, parseStackConfig } from '../../infra/config.js';
import { checkOpenSearchAdminPassword } from '../../infra/opensearch-password.js';
import { ConfigError } from '../../shared/errors.js';

const base = { project: 'my-project-1' };
/** A random password OpenSearch accepts. */
const STRONG = 'k7#Vq9!xLm2$Rt';

/** The ConfigError message of a config that must be refused. */
function refusal(raw: Record<string, unknown>, secrets?: { opensearchPassword?: string }): string {
  try {
    parseStackConfig(raw, secrets);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected the config to be refused');
}

describe('stack config', () => {
  test('defaults fill every setting', () => {
    const cfg = parseStackConfig(base);
    expect(cfg).toMatchObject({
      region: 'us-central1',
      prefix: 'iss',
      embed: { gpu: true, gpuType: 'nvidia-l4', taskCount: 4, parallelism: 2, dispatchSchedule: '*/5 * * * *' },
      messaging: { maxDeliveryAttempts: 5 },
      opensearch: { mode: 'vm', connectorCidr: '10.8.0.0/28' },
      retrain: { schedule: '0 3 * * 0' },
      search: { access: 'private', iapMembers: [], querySampleRate: 0.1 },
      storage: { feedbackRetentionDays: 90, querySampleRetentionDays: 7 },
    });
  });

  test('search.querySampleRate: a share of image queries from 0 (off) to 1, anything else refused with the fix', () => {
    expect(parseStackConfig({ ...base, search: { querySampleRate: 0 } }).search.querySampleRate).toBe(0);
    expect(parseStackConfig({ ...base, search: { querySampleRate: 1 } }).search.querySampleRate).toBe(1);
    for (const bad of [-0.1, 1.5]) {
      expect(refusal({ ...base, search: { querySampleRate: bad } })).toMatch(
        /iss:search\.querySampleRate: must be from 0 \(off\) to 1 \(every query\) \(fix: pulumi config set --path iss:search\.querySampleRate <value>\)/,
      );
    }
    expect(refusal({ ...base, search: { querySampleRate: '0.1' } })).toMatch(/iss:search\.querySampleRate/);
  });

  test('search access: private by default; the deprecated public flag maps to access "public"; each mode asks for what it needs', () => {
    expect(parseStackConfig({ ...base, search: { public: true, domain: 'search.example.com' } }).search.access).toBe('public');
    expect(() => parseStackConfig({ ...base, search: { access: 'public' } })).toThrow(/iss:search\.domain: access "public" needs domain/);
    expect(() => parseStackConfig({ ...base, search: { access: 'iap' } })).toThrow(/iss:search\.iapMembers: access "iap" needs iapMembers/);
    expect(() => parseStackConfig({ ...base, search: { access: 'iap', iapMembers: ['ana@example.com'] } })).toThrow(/iapMembers\[0\]: must be "user:…"/);
  });

  test('invalid config fails with a message naming the setting and the fix', () => {
    const bad = () => parseStackConfig({ ...base, embed: { taskCount: 0 }, messaging: { maxDeliveryAttempts: 2 } });
    expect(bad).toThrow(ConfigError);
    expect(bad).toThrow(/iss:embed\.taskCount: .*fix: pulumi config set --path iss:embed\.taskCount/);
    expect(bad).toThrow(/iss:messaging\.maxDeliveryAttempts/);
  });

  test('a missing project names gcp:project', () => {
    expect(() => parseStackConfig({})).toThrow(/gcp:project: .*pulumi config set gcp:project/);
  });

  test('cross-field rules: parallelism, GPU minimums, backoff order, external URL', () => {
    expect(() => parseStackConfig({ ...base, embed: { taskCount: 2, parallelism: 3 } })).toThrow(
      /iss:embed\.parallelism: parallelism must not exceed taskCount/,
    );
    expect(() => parseStackConfig({ ...base, embed: { memory: '8Gi' } })).toThrow(/iss:embed\.memory: a GPU task needs memory >= 16Gi/);
    expect(() => parseStackConfig({ ...base, embed: { gpu: false, cpu: 2, memory: '4Gi' } })).not.toThrow();
    expect(() => parseStackConfig({ ...base, messaging: { minBackoff: '60s', maxBackoff: '30s' } })).toThrow(/iss:messaging\.minBackoff/);
    expect(() => parseStackConfig({ ...base, opensearch: { mode: 'external' } })).toThrow(
      /iss:opensearchUrl: required when iss:opensearch\.mode is "external"/,
    );
  });

  test('opensearchUrl (plain config, kept in the state in clear) refuses credentials in it, pointing to the secrets', () => {
    const external = { ...base, opensearch: { mode: 'external' } };
    for (const url of ['https://admin:s3cret@search.example.com:9200', 'https://admin@search.example.com:9200', 'https://:s3cret@search.example.com']) {
      const message = refusal({ ...external, opensearchUrl: url });
      expect(message, url).toMatch(/iss:opensearchUrl: .*user name or password/);
      expect(message, url).toMatch(/iss:opensearchUsername/);
      expect(message, url).toMatch(/--secret iss:opensearchPassword/);
      // The refusal never echoes the password it found.
      expect(message, url).not.toContain('s3cret');
    }
    expect(parseStackConfig({ ...external, opensearchUrl: 'https://search.example.com:9200' }).opensearchUrl).toBe('https://search.example.com:9200');
  });

  test('crons are checked', () => {
    expect(() => parseStackConfig({ ...base, retrain: { schedule: 'every sunday' } })).toThrow(/iss:retrain\.schedule: must be a 5-field unix-cron/);
    expect(() => parseStackConfig({ ...base, retrain: { args: { layers: '3' } } })).toThrow(/iss:retrain\.args/);
    expect(() => parseStackConfig({ ...base, retrain: { args: { epochs: 'many' } } })).toThrow(/iss:retrain\.args\.epochs: a number/);
    expect(() => parseStackConfig({ ...base, embed: { dispatchSchedule: '*/10 * * * *' } })).not.toThrow();
  });

  test('unknown keys are refused (a typo must not silently fall back to a default)', () => {
    expect(() => parseStackConfig({ ...base, embed: { taskcount: 8 } })).toThrow(/iss:embed/);
  });

  test('loadStackConfig reads Pulumi config and fails early on a bad value', async () => {
    pulumi.runtime.setAllConfig(
      {
        'gcp:project': 'my-project-1',
        'iss:embed': JSON.stringify({ taskCount: 8, parallelism: 4 }),
        'iss:model': JSON.stringify({ initial: 'clip-vit-b32' }),
        'iss:opensearchPassword': STRONG,
      },
      ['iss:opensearchPassword'],
    );
    const cfg = loadStackConfig();
    expect(cfg.embed.taskCount).toBe(8);
    expect(cfg.model.initial).toBe('clip-vit-b32');
    expect(pulumi.Output.isInstance(cfg.opensearchPassword)).toBe(true);
    expect(await pulumi.isSecret(cfg.opensearchPassword)).toBe(true);

    pulumi.runtime.setAllConfig({ 'gcp:project': 'my-project-1', 'iss:search': JSON.stringify({ public: 'yes' }), 'iss:opensearchPassword': STRONG }, [
      'iss:opensearchPassword',
    ]);
    expect(() => loadStackConfig()).toThrow(/iss:search\.public/);
  });

  test('loadStackConfig stops preview/up on a weak admin password in vm mode, without printing it', () => {
    pulumi.runtime.setAllConfig({ 'gcp:project': 'my-project-1', 'iss:opensearchPassword': 'Passw0rd!' }, ['iss:opensearchPassword']);
    expect(() => loadStackConfig()).toThrow(ConfigError);
    let message = '';
    try {
      loadStackConfig();
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/iss:opensearchPassword: OpenSearch would refuse it .*strength score is 1 of 4/);
    expect(message).toContain('fix: pulumi config set --secret iss:opensearchPassword <a strong password>');
    expect(message).not.toContain('Passw0rd');

    pulumi.runtime.setAllConfig({ 'gcp:project': 'my-project-1' });
    expect(() => loadStackConfig()).toThrow(/iss:opensearchPassword: required \(fix: pulumi config set --secret iss:opensearchPassword/);

    // An external cluster keeps its own password policy: only presence is required.
    pulumi.runtime.setAllConfig(
      {
        'gcp:project': 'my-project-1',
        'iss:opensearch': JSON.stringify({ mode: 'external' }),
        'iss:opensearchUrl': 'https://search.example.com:9200',
        'iss:opensearchUsername': 'svc',
        'iss:opensearchPassword': 'pw',
      },
      ['iss:opensearchPassword', 'iss:opensearchUsername'],
    );
    expect(loadStackConfig().opensearch.mode).toBe('external');
  });

  test('Pulumi.example.yaml is a valid stack file', () => {
    // js-yaml ships with @pulumi/pulumi (transitive dependency), enough to read our own sample.
    const yaml = createRequire(import.meta.url)('js-yaml') as { load(text: string): { config: Record<string, unknown> } };
    const { config } = yaml.load(readFileSync(new URL('../../Pulumi.example.yaml', import.meta.url), 'utf8'));
    const raw: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(config)) raw[key.replace(/^(gcp|iss):/, '')] = value;
    const cfg = parseStackConfig(raw);
    expect(cfg.project).toBe('my-project-id');
    expect(cfg.embed.dispatchSchedule).toBe('*/5 * * * *');
    expect(cfg.embed.maxBytes).toBe(104857600);
  });

  test('model.initial defaults to the built-in model and takes only known models', () => {
    expect(parseStackConfig(base).model).toEqual({ initial: 'default' });
    expect(parseStackConfig({ ...base, model: { initial: 'clip-vit-b32' } }).model.initial).toBe('clip-vit-b32');
    expect(refusal({ ...base, model: { initial: 'clip-vit-l14' } })).toMatch(/iss:model\.initial/);
  });
});

describe('regions and Cloud Run limits', () => {
  test('a GPU embed job in a region without Cloud Run GPUs is refused, naming the regions that have them', () => {
    const msg = refusal({ ...base, region: 'us-east1' });
    expect(msg).toMatch(/gcp:region: iss:embed\.gpu is true but Cloud Run jobs have no GPU \(NVIDIA L4\) in us-east1/);
    for (const r of ['us-central1', 'europe-west1', 'europe-west4', 'asia-southeast1']) expect(msg).toContain(r);
    expect(msg).toContain('asia-south1 (by invitation only)');
    expect(msg).toContain('fix: pulumi config set gcp:region us-central1, or run the embed job on CPU: pulumi config set --path iss:embed.gpu false');
    // us-east4 has GPUs for services and worker pools, not (yet) for jobs.
    expect(refusal({ ...base, region: 'us-east4' })).toMatch(/no GPU .* in us-east4/);
    for (const region of CLOUD_RUN_GPU_JOB_REGIONS) expect(() => parseStackConfig({ ...base, region })).not.toThrow();
    expect(() => parseStackConfig({ ...base, region: 'us-east1', embed: { gpu: false, cpu: 4, memory: '8Gi' } })).not.toThrow();
  });

  test('L4 instance bounds: 4-8 CPU, 16-32Gi, at most 4Gi per CPU', () => {
    expect(() => parseStackConfig({ ...base, embed: { cpu: 8, memory: '32Gi' } })).not.toThrow();
    expect(() => parseStackConfig({ ...base, embed: { cpu: 4, memory: '16Gi' } })).not.toThrow();
    expect(refusal({ ...base, embed: { cpu: 8, memory: '48Gi' } })).toMatch(/iss:embed\.memory: Cloud Run allows at most 32Gi/);
    expect(refusal({ ...base, embed: { cpu: 4, memory: '32Gi' } })).toMatch(/iss:embed\.memory: 32Gi needs at least 8 CPUs/);
    expect(refusal({ ...base, embed: { cpu: 4, memory: '20Gi' } })).toMatch(/iss:embed\.memory: 20Gi needs at least 6 CPUs/);
    expect(refusal({ ...base, embed: { cpu: 2, memory: '16Gi' } })).toMatch(/iss:embed\.cpu: a GPU task needs cpu >= 4/);
    expect(refusal({ ...base, embed: { cpu: 16 } })).toMatch(/iss:embed\.cpu/);
    expect(refusal({ ...base, embed: { cpu: 5, memory: '16Gi' } })).toMatch(/iss:embed\.cpu: Cloud Run takes 1, 2, 4, 6, 8 CPUs, not 5/);
    expect(refusal({ ...base, embed: { gpuType: 'nvidia-a100' } })).toMatch(/iss:embed\.gpuType/);
    // The same table applies to the CPU-only job and the search service.
    expect(refusal({ ...base, embed: { gpu: false, cpu: 1, memory: '8Gi' } })).toMatch(/iss:embed\.memory: 8Gi needs at least 2 CPUs/);
    expect(refusal({ ...base, search: { cpu: 8, memory: '2Gi' } })).toMatch(/iss:search\.memory: 8 CPUs need at least 4Gi/);
  });

  test('the images bucket must be in gcp:region, where its Eventarc triggers are', () => {
    expect(() => parseStackConfig({ ...base, region: 'europe-west1', storage: { location: 'europe-west1' } })).not.toThrow();
    expect(() => parseStackConfig({ ...base, region: 'europe-west1', storage: { location: 'EUROPE-WEST1' } })).not.toThrow();
    // A multi-region bucket "containing" the region still needs a trigger in the multi-region.
    expect(refusal({ ...base, storage: { location: 'US' } })).toMatch(
      /iss:storage\.location: the buckets must be in gcp:region \(us-central1\), not US: .*\(fix: pulumi config rm --path iss:storage\.location\)/,
    );
    expect(refusal({ ...base, region: 'europe-west4', storage: { location: 'europe-west1' } })).toMatch(
      /must be in gcp:region \(europe-west4\), not europe-west1/,
    );
  });

  test('every name derived from the prefix fits its Google limit, or the prefix is refused naming the resource and the limit', () => {
    // 16 characters is the longest prefix: "<prefix>-retrain-start" / "<prefix>-object-events" are 30.
    expect(maxPrefixLength('my-project-1')).toBe(16);
    expect(() => parseStackConfig({ ...base, prefix: 'imagesearch-prod' })).not.toThrow();
    const msg = refusal({ ...base, prefix: 'image-search-prod' });
    expect(msg).toMatch(
      /iss:prefix: "image-search-prod" makes names Google refuses: service account id must be 6-30 characters: "image-search-prod-object-events" has 31, "image-search-prod-retrain-start" has 31/,
    );
    expect(msg).toContain('fix: pulumi config set iss:prefix <at most 16 characters>');
    expect(refusal({ ...base, prefix: 'a-very-long-stack-prefix-x' })).toMatch(
      /Serverless VPC Access connector name must be 1-25 characters: "a-very-long-stack-prefix-x-conn" has 31/,
    );
    // Buckets carry the project id: with the longest project id (30) they allow 23, still above 16.
    const project = 'p'.repeat(30);
    expect(maxPrefixLength(project)).toBe(16);
    expect(refusal({ project, prefix: 'a-very-long-stack-prefix-x' })).toMatch(
      new RegExp(`bucket name must be 3-63 characters: .*"${project}-a-very-long-stack-prefix-x-features" has 66`),
    );
    // Every suffix the components use is covered by the one list.
    const names = Object.entries(DERIVED_NAMES).flatMap(([kind, r]) =>
      r.suffixes.map((sfx) => derivedName(kind as keyof typeof DERIVED_NAMES, { project: 'p1', prefix: 'iss' }, sfx)),
    );
    expect(names).toContain('iss-retrain-start');
    expect(names).toContain('iss-conn');
    expect(names).toContain('p1-iss-features');
    expect(refusal({ ...base, prefix: 'Bad_Prefix' })).toMatch(/iss:prefix: must be lowercase letters/);
  });

  test('one error lists every bad setting, the cross-setting ones included', () => {
    const msg = refusal(
      { ...base, region: 'us-east1', prefix: 'image-search-prod', storage: { location: 'US' }, embed: { taskCount: 0 } },
      { opensearchPassword: 'admin' },
    );
    for (const setting of ['iss:embed.taskCount', 'gcp:region', 'iss:prefix', 'iss:storage.location', 'iss:opensearchPassword'])
      expect(msg).toContain(`- ${setting}:`);
  });
});

describe('OpenSearch admin password (OpenSearch >= 2.12 strength check)', () => {
  test.each([
    ['admin', /at least 8 are required/],
    ['Password1!', /strength score is 1 of 4/],
    ['correct-horse-battery-staple', /lacks an uppercase letter, a digit/],
    ['Passw0rd!', /strength score is 1 of 4/],
    ['Admin123!', /strength score/],
    ['admin!Admin1', /too similar to the user name "admin"/],
    ['Abcdefgh1234', /lacks a special character/],
  ])('%s is refused', (pw, why) => {
    const problems = checkOpenSearchAdminPassword(pw);
    expect(problems.join('; ')).toMatch(why);
    // Never quoted ("admin" is also the user name the similarity rule names).
    if (pw !== 'admin') for (const p of problems) expect(p).not.toContain(pw);
  });

  test('strong random passwords pass', () => {
    for (const pw of [STRONG, 'iss-Test-Pw-7f3K9q!x', 'Vq7#pLm2!xRt9@wKz4']) expect(checkOpenSearchAdminPassword(pw)).toEqual([]);
  });

  test('length bounds and line breaks', () => {
    expect(checkOpenSearchAdminPassword(`${STRONG}${'x'.repeat(100)}`).join()).toMatch(/at most 100 are allowed/);
    expect(checkOpenSearchAdminPassword(`${STRONG}\n`).join()).toMatch(/line break/);
  });
});

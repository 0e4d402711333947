import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as pulumi from '@pulumi/pulumi';
import { describe, expect, test } from 'vitest';
import { loadStackConfig, parseStackConfig } from '../../infra/config.js';
import { ConfigError } from '../../shared/errors.js';

const base = { project: 'my-project-1' };

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
      search: { public: false },
    });
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
    expect(() => parseStackConfig({ ...base, embed: { taskCount: 2, parallelism: 3 } })).toThrow(/iss:embed\.parallelism: parallelism must not exceed taskCount/);
    expect(() => parseStackConfig({ ...base, embed: { memory: '8Gi' } })).toThrow(/iss:embed\.memory: a GPU task needs memory >= 16Gi/);
    expect(() => parseStackConfig({ ...base, embed: { gpu: false, cpu: 2, memory: '4Gi' } })).not.toThrow();
    expect(() => parseStackConfig({ ...base, messaging: { minBackoff: '60s', maxBackoff: '30s' } })).toThrow(/iss:messaging\.minBackoff/);
    expect(() => parseStackConfig({ ...base, opensearch: { mode: 'external' } })).toThrow(/iss:opensearchUrl: required when iss:opensearch\.mode is "external"/);
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

  test('loadStackConfig reads Pulumi config and fails early on a bad value', () => {
    pulumi.runtime.setAllConfig({ 'gcp:project': 'my-project-1', 'iss:embed': JSON.stringify({ taskCount: 8, parallelism: 4 }), 'iss:opensearchPassword': 'pw' }, ['iss:opensearchPassword']);
    const cfg = loadStackConfig();
    expect(cfg.embed.taskCount).toBe(8);
    expect(pulumi.Output.isInstance(cfg.opensearchPassword)).toBe(true);

    pulumi.runtime.setAllConfig({ 'gcp:project': 'my-project-1', 'iss:search': JSON.stringify({ public: 'yes' }) });
    expect(() => loadStackConfig()).toThrow(/iss:search\.public/);
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
});

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

/**
 * The dependency rules of eslint.config.js, checked on small in-memory files at virtual paths:
 * each forbidden import gets the rule's error, each allowed one none. The files do not exist;
 * ESLint applies the config block of the path it is told.
 */
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let eslint: ESLint;

beforeAll(() => {
  eslint = new ESLint({ cwd: root });
});

async function boundaryErrors(filePath: string, code: string): Promise<{ ruleId: string | null; message: string }[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(root, filePath) });
  return result!.messages
    .filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'no-restricted-syntax')
    .map((m) => ({ ruleId: m.ruleId, message: m.message }));
}

describe('dependency rules (eslint.config.js)', () => {
  const forbidden: { file: string; code: string; rule: 'no-restricted-imports' | 'no-restricted-syntax'; says: RegExp }[] = [
    {
      file: 'cli/x.ts',
      code: "import { main } from '../jobs/retrain/main.js';\nvoid main;\n",
      rule: 'no-restricted-imports',
      says: /cli\/ must not import jobs\//,
    },
    {
      file: 'cli/commands/x.ts',
      code: "export { upsertVectors } from '../../functions/upsert-vectors.js';\n",
      rule: 'no-restricted-imports',
      says: /cli\/ must not import functions\//,
    },
    {
      file: 'cli/commands/x.ts',
      code: "export const m = await import('../../jobs/retrain/retrain-job.js');\n",
      rule: 'no-restricted-syntax',
      says: /cli\/ must not import jobs\//,
    },
    {
      file: 'jobs/embed/x.ts',
      code: "import { dispatchEmbed } from '../../functions/dispatch-embed.js';\nvoid dispatchEmbed;\n",
      rule: 'no-restricted-imports',
      says: /jobs\/ must not import functions\//,
    },
    {
      file: 'jobs/retrain/x.ts',
      code: "import type { LocalRuntime } from '../../cli/runtime.js';\nexport type R = LocalRuntime;\n",
      rule: 'no-restricted-imports',
      says: /jobs\/ must not import cli\//,
    },
    {
      file: 'functions/x.ts',
      code: "import { runEmbedJob } from '../jobs/embed/embed-job.js';\nvoid runEmbedJob;\n",
      rule: 'no-restricted-imports',
      says: /functions\/ must not import jobs\//,
    },
    {
      file: 'functions/x.ts',
      code: "import { configFrom } from '../cli/options.js';\nvoid configFrom;\n",
      rule: 'no-restricted-imports',
      says: /functions\/ must not import cli\//,
    },
    {
      file: 'shared/x.ts',
      code: "import { Stack } from '../infra/stack.js';\nvoid Stack;\n",
      rule: 'no-restricted-imports',
      says: /shared\/ must not import infra\//,
    },
    {
      file: 'shared/services/x.ts',
      code: "import { main } from '../../cli/main.js';\nvoid main;\n",
      rule: 'no-restricted-imports',
      says: /shared\/ must not import cli\//,
    },
    {
      file: 'shared/wiring/x.ts',
      code: "import { upsertVectors } from '../../functions/upsert-vectors.js';\nvoid upsertVectors;\n",
      rule: 'no-restricted-imports',
      says: /shared\/ must not import functions\//,
    },
    {
      file: 'shared/handlers/x.ts',
      code: "import { Storage } from '@google-cloud/storage';\nvoid Storage;\n",
      rule: 'no-restricted-imports',
      says: /cloud SDK \(@google-cloud\/\*\)/,
    },
    {
      file: 'shared/services/x.ts',
      code: "import { Client } from '@opensearch-project/opensearch';\nvoid Client;\n",
      rule: 'no-restricted-imports',
      says: /cloud SDK \(@opensearch-project\/\*\)/,
    },
    {
      file: 'shared/services/x.ts',
      code: "import * as lancedb from '@lancedb/lancedb';\nvoid lancedb;\n",
      rule: 'no-restricted-imports',
      says: /cloud SDK \(@lancedb\/\*\)/,
    },
    {
      file: 'shared/handlers/x.ts',
      code: "import { GoogleError } from 'google-gax';\nvoid GoogleError;\n",
      rule: 'no-restricted-imports',
      says: /cloud SDK \(google-gax\)/,
    },
    {
      file: 'shared/services/x.ts',
      code: "export const run = () => import('@google-cloud/run');\n",
      rule: 'no-restricted-syntax',
      says: /cloud SDK \(@google-cloud\/\*\)/,
    },
    {
      file: 'shared/handlers/x.ts',
      code: "export type P = import('@google-cloud/pubsub').PubSub;\n",
      rule: 'no-restricted-syntax',
      says: /cloud SDK \(@google-cloud\/\*\)/,
    },
    // shared/'s own rules still hold in the folders with stricter ones.
    {
      file: 'shared/handlers/x.ts',
      code: "import { x } from '../../jobs/embed/main.js';\nvoid x;\n",
      rule: 'no-restricted-imports',
      says: /shared\/ must not import jobs\//,
    },
    {
      file: 'infra/components/x.ts',
      code: "import { cloudConfig } from '../../functions/search-server.js';\nvoid cloudConfig;\n",
      rule: 'no-restricted-imports',
      says: /infra\/ must not import functions\//,
    },
    {
      file: 'infra/x.ts',
      code: "import { openLocalRuntime } from '../cli/options.js';\nvoid openLocalRuntime;\n",
      rule: 'no-restricted-imports',
      says: /infra\/ must not import cli\//,
    },
  ];

  for (const { file, code, rule, says } of forbidden) {
    it(`${file}: ${code.split('\n')[0]} → ${rule}`, async () => {
      const errors = await boundaryErrors(file, code);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatchObject({ ruleId: rule });
      expect(errors[0]!.message).toMatch(says);
    });
  }

  const allowed: { file: string; code: string }[] = [
    {
      file: 'jobs/embed/x.ts',
      code: "import { cloudConfig } from '../../shared/wiring/cloud-config.js';\nimport { storageClient } from '../../shared/wiring/cloud.js';\nvoid cloudConfig;\nvoid storageClient;\n",
    },
    {
      file: 'cli/commands/x.ts',
      code: "import { openLocalRuntime } from '../../shared/wiring/local.js';\nexport const m = await import('../../shared/services/reindex.js');\nvoid openLocalRuntime;\n",
    },
    {
      file: 'functions/x.ts',
      code: "import { cloudEventBus } from '../shared/wiring/cloud.js';\nimport * as functions from '@google-cloud/functions-framework';\nimport { deliveryFromPubSubCloudEvent } from './cloud-events.js';\nvoid cloudEventBus;\nvoid functions;\nvoid deliveryFromPubSubCloudEvent;\n",
    },
    {
      file: 'shared/adapters/gcp/x.ts',
      code: "import { Storage } from '@google-cloud/storage';\nimport type { BlobStore } from '../../ports/blob-store.js';\nexport type S = [Storage, BlobStore];\n",
    },
    {
      file: 'shared/wiring/x.ts',
      code: "import { PubSub } from '@google-cloud/pubsub';\nimport { ModelHolder } from '../services/model-holder.js';\nvoid PubSub;\nvoid ModelHolder;\n",
    },
    {
      file: 'shared/services/x.ts',
      code: "import type { EventBus } from '../ports/event-bus.js';\nimport { embedBatch } from '../handlers/embed-batch.js';\nexport type B = EventBus;\nvoid embedBatch;\n",
    },
    {
      file: 'infra/x.ts',
      code: "import { entryPointSchemas } from '../shared/wiring/cloud-config.js';\nimport * as gcp from '@pulumi/gcp';\nvoid entryPointSchemas;\nvoid gcp;\n",
    },
    // Tests may import anything (an infra policy test reads the entry points' schemas).
    {
      file: 'test/unit/x.unit.test.ts',
      code: "import { upsertVectors } from '../../functions/upsert-vectors.js';\nimport { main } from '../../jobs/retrain/main.js';\nvoid upsertVectors;\nvoid main;\n",
    },
  ];

  for (const { file, code } of allowed) {
    it(`${file}: allowed imports get no boundary error`, async () => {
      expect(await boundaryErrors(file, code)).toEqual([]);
    });
  }

  it('the focused-test rule still holds where a boundary block replaces no-restricted-syntax', async () => {
    const errors = await boundaryErrors('shared/services/x.ts', "declare const it: { only(name: string, fn: () => void): void };\nit.only('x', () => {});\n");
    expect(errors).toEqual([{ ruleId: 'no-restricted-syntax', message: 'no focused tests' }]);
  });
});

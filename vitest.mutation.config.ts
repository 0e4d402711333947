import { defineConfig } from 'vitest/config';

/**
 * The tests StrykerJS runs against each mutant (`npm run test:mutation`): the unit tier plus the
 * integration files that exercise the mutated modules with real embedded components (LanceDB, the
 * file queue, the pipeline handlers). Training, ONNX parity and the browser tier are left out:
 * they take seconds to minutes per run and cover none of the mutated modules' logic that the tests
 * here do not.
 */
export default defineConfig({
  test: {
    include: [
      'test/unit/**/*.test.ts',
      'test/integration/local-lancedb.integration.test.ts',
      'test/integration/local-adapters.integration.test.ts',
      'test/integration/pipeline-bad-input.integration.test.ts',
      'test/integration/local-queue-crash.integration.test.ts',
      'test/integration/ann-maintenance.integration.test.ts',
      'test/integration/http-protections.integration.test.ts',
    ],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});

import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'infra/**/*.test.ts'],
    // The fault suite's slow cases (the 10,000-file burst) run in `npm run test:faults` only.
    exclude: [...configDefaults.exclude, 'test/faults/**/*.slow.fault.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    pool: 'forks',
    // 2 cores: heavy tiers (ONNX inference, browser) are not run side by side.
    maxWorkers: 2,
  },
});

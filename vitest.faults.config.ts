import { defineConfig } from 'vitest/config';

/**
 * The fault suite (`npm run test:faults`): real `imgsearch` processes under injected faults, one
 * file at a time, the slow 10,000-file burst included. `npm test` runs the same files except the
 * `*.slow.fault.test.ts` ones (vitest.config.ts).
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.fault.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 300_000,
    pool: 'forks',
    maxWorkers: 1,
  },
});

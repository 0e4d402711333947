import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/logger.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import { ModelHolder, NoActiveModelError } from '../../shared/services/model-holder.js';
import { strict } from '../helpers/strict-fakes.js';
import { FakeEmbedder } from './functions-fakes.js';

describe('ModelHolder before the first model exists', () => {
  it('throws NoActiveModelError (HTTP 503) and asks the registry again only after absentRetryMs', async () => {
    let active: ModelVersion | null = null;
    let reads = 0;
    const registry = strict<ModelRegistry>('registry', {
      active: async () => {
        reads += 1;
        return active;
      },
      localPath: async (v: string) => `/models/${v}`,
    });
    let t = 1000;
    const holder = new ModelHolder(registry, {
      maxPixels: 1e7,
      logger: silentLogger,
      absentRetryMs: 5000,
      absentHint: 'run the bootstrap job',
      now: () => t,
      load: async (_d, v) => new FakeEmbedder(v),
    });

    const first = holder.get();
    await expect(first).rejects.toThrow(NoActiveModelError);
    await expect(first).rejects.toMatchObject({ message: 'no model yet: run the bootstrap job', code: 'NO_ACTIVE_MODEL', statusCode: 503 });
    t += 4000;
    await expect(holder.get()).rejects.toThrow(NoActiveModelError);
    expect(reads).toBe(1); // within the retry interval: the registry is not asked again

    active = { version: 'm1' } as ModelVersion;
    t += 1000;
    expect((await holder.get()).modelVersion).toBe('m1');
    expect(reads).toBe(2);
    expect(holder.current().modelVersion).toBe('m1');
  });
});

import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FileQueryVectorSample } from '../../shared/adapters/local/query-sample-file.js';
import { configFromEnv, parseEnv } from '../../shared/config.js';
import { ConfigError } from '../../shared/errors.js';
import { driftSettingsSchema, PeriodicDriftCheck } from '../../shared/services/drift.js';
import { tempDir } from '../helpers/cli.js';
import { SearchService } from '../../shared/services/search-service.js';
import { captureLogger, FakeEmbedder, MemoryIndex } from './functions-fakes.js';

describe('drift settings (IMGSEARCH_DRIFT_*)', () => {
  it('defaults to the documented thresholds, the same as the cloud check', () => {
    const { drift } = configFromEnv(parseEnv({}), '/tmp');
    expect(drift).toEqual({
      checkMinutes: 60,
      querySample: 1000,
      settings: {
        recentUploads: 1000,
        minSample: 200,
        psiThreshold: 0.25,
        ksThreshold: 0.2,
        minNewLabelled: 200,
        recallDrop: 0.05,
        cooldownHours: 24,
        servedBaseline: 500,
      },
    });
    expect(driftSettingsSchema.parse({})).toEqual(drift.settings);
  });

  it('refuses bad values with the variable and how to fix it', () => {
    const bad = () => parseEnv({ IMGSEARCH_DRIFT_PSI: 'high', IMGSEARCH_DRIFT_RECALL_DROP: '1.5', IMGSEARCH_DRIFT_CHECK_MINUTES: '-1' });
    expect(bad).toThrow(ConfigError);
    const message = (() => {
      try {
        bad();
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    expect(message).toMatch(/IMGSEARCH_DRIFT_PSI.*e\.g\. IMGSEARCH_DRIFT_PSI=0\.25/);
    expect(message).toMatch(/IMGSEARCH_DRIFT_RECALL_DROP.*IMGSEARCH_DRIFT_RECALL_DROP=0\.05/);
    expect(message).toMatch(/IMGSEARCH_DRIFT_CHECK_MINUTES.*0 \(no drift checks in `up`\)/);
  });

  it('refuses a query sample too small to hold the served-query reference and a judgeable sample after it', () => {
    expect(() => parseEnv({ IMGSEARCH_DRIFT_QUERY_SAMPLE: '650' })).toThrow(
      /IMGSEARCH_DRIFT_QUERY_SAMPLE=650 .* IMGSEARCH_DRIFT_SERVED_BASELINE \(500\) \+ IMGSEARCH_DRIFT_MIN_SAMPLE \(200\) = 700; raise it, e\.g\. IMGSEARCH_DRIFT_QUERY_SAMPLE=1000/,
    );
    // Enough, or none kept at all (no query signals): accepted.
    expect(configFromEnv(parseEnv({ IMGSEARCH_DRIFT_QUERY_SAMPLE: '700' }), '/tmp').drift.querySample).toBe(700);
    expect(configFromEnv(parseEnv({ IMGSEARCH_DRIFT_QUERY_SAMPLE: '0' }), '/tmp').drift.querySample).toBe(0);
    expect(configFromEnv(parseEnv({ IMGSEARCH_DRIFT_QUERY_SAMPLE: '300', IMGSEARCH_DRIFT_SERVED_BASELINE: '100' }), '/tmp').drift.settings.servedBaseline).toBe(
      100,
    );
  });
});

describe('PeriodicDriftCheck (`up`)', () => {
  afterEach(() => vi.useRealTimers());

  it('checks once per period, one at a time, keeps going after a failure, and stops', async () => {
    vi.useFakeTimers();
    const { logger, lines } = captureLogger();
    let calls = 0;
    let release: (() => void) | null = null;
    const periodic = new PeriodicDriftCheck(
      async () => {
        calls++;
        if (calls === 2) throw new Error('feature store unreadable');
        if (calls === 3) await new Promise<void>((r) => (release = r));
      },
      60_000,
      logger,
    );
    periodic.start();
    await vi.advanceTimersByTimeAsync(59_000);
    expect(calls).toBe(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(2);
    expect(
      lines().some(
        (l) =>
          (l.message ?? l.msg) === 'drift check failed; trying again at the next period' &&
          (l.err as { message: string }).message === 'feature store unreadable',
      ),
    ).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(3);
    // The third (a long retraining) is still running: no second check starts meanwhile.
    await vi.advanceTimersByTimeAsync(180_000);
    expect(calls).toBe(3);
    release!();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(4);
    periodic.stop();
    await vi.advanceTimersByTimeAsync(600_000);
    expect(calls).toBe(4);
  });
});

describe('FileQueryVectorSample', () => {
  it('keeps the most recent vectors up to its capacity, per model, across processes', async () => {
    const file = path.join(await tempDir('query-sample'), 'drift', 'queries.json');
    const sample = new FileQueryVectorSample(file, { capacity: 3 });
    const before = Date.now();
    for (let i = 1; i <= 5; i++) sample.add(i === 4 ? 'm2' : 'm1', Float32Array.of(i, -i));
    await sample.flush();
    const reread = new FileQueryVectorSample(file, { capacity: 3 });
    // Kept: 3, 4 (m2), 5 — the oldest two dropped; oldest first, each with when it was served.
    const m1 = await reread.recent('m1');
    expect(m1.map((q) => Array.from(q.vector))).toEqual([
      [3, -3],
      [5, -5],
    ]);
    expect(m1[0]!.at).toBeGreaterThanOrEqual(before);
    expect(m1[1]!.at).toBeGreaterThanOrEqual(m1[0]!.at);
    expect(m1[1]!.at).toBeLessThanOrEqual(Date.now());
    expect((await reread.recent('m2')).map((q) => Array.from(q.vector))).toEqual([[4, -4]]);
  });

  it('starts a new sample, with a warning, from an unreadable file', async () => {
    const dir = await tempDir('query-sample');
    const file = path.join(dir, 'queries.json');
    await fs.writeFile(file, '{ not json');
    const { logger, lines } = captureLogger();
    const sample = new FileQueryVectorSample(file, { capacity: 10, logger });
    expect(await sample.recent('m1')).toEqual([]);
    expect(lines().some((l) => (l.message ?? l.msg) === 'query sample unreadable: starting a new one')).toBe(true);
    sample.add('m1', Float32Array.of(1));
    await sample.flush();
    expect(JSON.parse(await fs.readFile(file, 'utf8')).entries).toHaveLength(1);
  });
});

describe('the search service samples image-query vectors for drift', () => {
  it('hands each image query vector, with the model that embedded it, to the sample; similar-to queries add nothing', async () => {
    const index = new MemoryIndex('idx-1', 'fake-v1', 4);
    await index.upsert([{ id: 'a', uri: 'file:///a.png', generation: '1', modelVersion: 'fake-v1', vector: Float32Array.of(1, 0, 0, 0), labels: [] }] as never);
    const service = new SearchService(
      () => new FakeEmbedder(),
      async () => index,
    );
    const added: { modelVersion: string; vector: number[] }[] = [];
    service.queryVectors = { add: (modelVersion, vector) => void added.push({ modelVersion, vector: Array.from(vector) }) };
    await service.byImage(Buffer.from([3, 0, 4, 0]), { k: 1 });
    await service.similarTo('a', { k: 1 });
    expect(added).toEqual([{ modelVersion: 'fake-v1', vector: [0.6000000238418579, 0, 0.800000011920929, 0] }]);
  });
});

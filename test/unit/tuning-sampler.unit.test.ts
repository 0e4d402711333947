import { describe, expect, it } from 'vitest';
import { ParseError } from '../../shared/errors.js';
import { mulberry32 } from '../../shared/training/prng.js';
import {
  DEFAULT_SEARCH_SPACE,
  defaultTrialParams,
  medianStoppingReason,
  parseSearchSpace,
  randomSampler,
  tpeSampler,
  trialRetrainOptions,
  type Observation,
  type Sampler,
  type SearchSpace,
  type TrialParams,
} from '../../shared/services/tuning.js';

/** A search space of the trainer's real options, with a known optimum away from the centre. */
const SPACE: SearchSpace = parseSearchSpace({
  learningRate: { type: 'float', min: 1e-4, max: 1e-2, log: true },
  temperature: { type: 'float', min: 0.02, max: 0.5, log: true },
  imageTextWeight: { type: 'float', min: 0, max: 4 },
  hidden: { type: 'int', min: 64, max: 2048, log: true },
  batchSize: { type: 'categorical', values: [64, 128, 256, 512] },
});

/** Smooth, with its maximum 0 at lr 3e-3, temperature 0.05, weight 3, hidden 1400, batch 128. */
function objective(p: TrialParams): number {
  const sq = (x: number) => x * x;
  return -(
    sq(Math.log10(Number(p.learningRate)) - Math.log10(3e-3)) +
    sq(Math.log10(Number(p.temperature)) - Math.log10(0.05)) +
    sq((Number(p.imageTextWeight) - 3) / 4) +
    sq(Math.log2(Number(p.hidden)) - Math.log2(1400)) / 25 +
    (p.batchSize === 128 ? 0 : 0.3)
  );
}

function bestAfter(sampler: Sampler, seed: number, trials: number): number {
  const random = mulberry32(seed);
  const seen: Observation[] = [];
  for (let i = 0; i < trials; i++) {
    const params = sampler.suggest(SPACE, seen, random);
    seen.push({ params, value: objective(params) });
  }
  return Math.max(...seen.map((o) => o.value));
}

describe('search space', () => {
  it('accepts ranges and choices of trainer options and keeps them in bounds', () => {
    const random = mulberry32(1);
    for (let i = 0; i < 200; i++) {
      const p = randomSampler().suggest(SPACE, [], random);
      expect(Number(p.learningRate)).toBeGreaterThanOrEqual(1e-4);
      expect(Number(p.learningRate)).toBeLessThanOrEqual(1e-2);
      expect(Number.isInteger(p.hidden)).toBe(true);
      expect(Number(p.hidden)).toBeGreaterThanOrEqual(64);
      expect(Number(p.hidden)).toBeLessThanOrEqual(2048);
      expect([64, 128, 256, 512]).toContain(p.batchSize);
    }
  });

  it('refuses an unknown option, naming the ones that can be searched', () => {
    expect(() => parseSearchSpace({ hiden: { type: 'int', min: 1, max: 2 } })).toThrow(ParseError);
    expect(() => parseSearchSpace({ hiden: { type: 'int', min: 1, max: 2 } })).toThrow(/hiden.*not a trainer option.*hidden/);
  });

  it('refuses options that would change what trials are compared on', () => {
    for (const key of ['seed', 'heldOutFraction', 'validationFraction', 'margin']) {
      expect(() => parseSearchSpace({ [key]: { type: 'float', min: 0.1, max: 0.2 } }), key).toThrow(/cannot be searched/);
    }
  });

  it('refuses values the trainer would refuse, empty ranges and log ranges through zero', () => {
    expect(() => parseSearchSpace({ hidden: { type: 'int', min: 0, max: 64 } })).toThrow(/hidden/);
    expect(() => parseSearchSpace({ learningRate: { type: 'float', min: 0.01, max: 0.001 } })).toThrow(/min.*below max/);
    expect(() => parseSearchSpace({ imageTextWeight: { type: 'float', min: 0, max: 2, log: true } })).toThrow(/log.*above 0/);
    expect(() => parseSearchSpace({ learnableTemperature: { type: 'categorical', values: ['yes'] } })).toThrow(/learnableTemperature/);
    expect(() => parseSearchSpace({ batchSize: { type: 'categorical', values: [] } })).toThrow(/batchSize/);
    expect(() => parseSearchSpace({})).toThrow(/at least one option/);
  });

  it('takes a boolean option as a categorical choice', () => {
    const space = parseSearchSpace({ learnableTemperature: { type: 'categorical', values: [true, false] } });
    const seen = new Set<unknown>();
    const random = mulberry32(3);
    for (let i = 0; i < 20; i++) seen.add(randomSampler().suggest(space, [], random).learnableTemperature);
    expect([...seen].sort()).toEqual([false, true]);
  });

  it('searches an option the trainer gains later with no change here (unlockBlocks of item 4)', () => {
    const space = parseSearchSpace({ unlockBlocks: { type: 'categorical', values: [0, 2] }, hidden: { type: 'int', min: 256, max: 1024 } });
    expect(trialRetrainOptions({ unlockBlocks: 2, hidden: 512 })).toEqual({ training: { unlockBlocks: 2, hidden: 512 } });
    expect(defaultTrialParams(space)).toEqual({ unlockBlocks: 0, hidden: 512 });
    expect(() => parseSearchSpace({ unlockBlocks: { type: 'int', min: 0, max: 9 } })).toThrow(/9 is not a valid unlockBlocks/);
  });

  it('puts trainer options under training and retrain options at the top', () => {
    expect(trialRetrainOptions({ epochs: 12, hidden: 256, learningRate: 0.002 })).toEqual({ epochs: 12, training: { hidden: 256, learningRate: 0.002 } });
  });

  it('starts from the trainer defaults when they lie inside the space', () => {
    // The defaults of shared/training/lit-options.ts, written out here.
    expect(defaultTrialParams(DEFAULT_SEARCH_SPACE)).toEqual({ hidden: 512, learningRate: 0.001, temperature: 0.1, imageTextWeight: 1, batchSize: 256 });
    expect(defaultTrialParams(parseSearchSpace({ hidden: { type: 'int', min: 1024, max: 2048 } }))).toBeNull();
  });
});

describe('samplers', () => {
  it('are reproducible from the seed', () => {
    const run = (sampler: Sampler) => {
      const random = mulberry32(9);
      const seen: Observation[] = [];
      for (let i = 0; i < 12; i++) {
        const params = sampler.suggest(SPACE, seen, random);
        seen.push({ params, value: objective(params) });
      }
      return seen;
    };
    expect(run(tpeSampler())).toEqual(run(tpeSampler()));
    expect(run(randomSampler())).toEqual(run(randomSampler()));
  });

  it('TPE finds better optima than random search on the same budget, over 20 seeds', () => {
    const seeds = Array.from({ length: 20 }, (_, i) => 1000 + i);
    const tpe = seeds.map((s) => bestAfter(tpeSampler(), s, 40));
    const random = seeds.map((s) => bestAfter(randomSampler(), s, 40));
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const wins = tpe.filter((t, i) => t > random[i]!).length;
    // Measured when written: TPE ahead on 16 of 20 seeds, mean best −0.144 vs −0.292 (a gap of
    // 0.148). Asserted with room: 13 of 20, and half the gap.
    expect(wins).toBeGreaterThanOrEqual(13);
    expect(mean(tpe) - mean(random)).toBeGreaterThan(0.07);
  });
});

describe('median stopping rule', () => {
  const done = [
    [0.5, 0.6, 0.7, 0.72, 0.73],
    [0.55, 0.65, 0.7, 0.71],
    [0.6, 0.66, 0.69, 0.7, 0.7, 0.71],
  ];

  it('stops a trial whose best is below the median of the others’ running averages', () => {
    // Running averages at epoch 3: 0.6, 0.633, 0.65 → median 0.633; this trial's best is 0.45.
    expect(medianStoppingReason([0.3, 0.4, 0.45], done, { graceEpochs: 3, minTrials: 3 })).toMatch(/0\.4500 < median 0\.6333 at epoch 3/);
  });

  it('lets a trial at or above the median go on', () => {
    expect(medianStoppingReason([0.5, 0.6, 0.64], done, { graceEpochs: 3, minTrials: 3 })).toBeNull();
  });

  it('waits for the grace epochs and for enough finished trials', () => {
    expect(medianStoppingReason([0.1, 0.1], done, { graceEpochs: 3, minTrials: 3 })).toBeNull();
    expect(medianStoppingReason([0.1, 0.1, 0.1], done.slice(0, 2), { graceEpochs: 3, minTrials: 3 })).toBeNull();
  });

  it('never stops a trial without a validation curve', () => {
    expect(medianStoppingReason([null, null, null, null], done, { graceEpochs: 3, minTrials: 3 })).toBeNull();
  });
});

import { beforeAll, describe, expect, it } from 'vitest';
import { readFashionMnist } from '../../shared/datasets/fashion-mnist.js';
import {
  buildDriftProfile,
  compareWithProfile,
  decideRetrain,
  driftSettingsSchema,
  kolmogorovSmirnov,
  psi,
  psiBand,
  psiCritical,
  servedReferenceOf,
  type ProfiledRecord,
  type SampledQuery,
} from '../../shared/services/drift.js';
import { mulberry32, shuffledIndices } from '../../shared/training/prng.js';

/**
 * The drift statistics on real data: Fashion-MNIST images (raw pixels as the embedding: a real,
 * meaningful image representation — exact cosine on them retrieves the same class 86% of the
 * time, docs FACTS). A reference built on a seeded sample; a different seeded sample of the same
 * distribution must stay far below the thresholds, one class flooding in far above them.
 */
const SETTINGS = driftSettingsSchema.parse({});
const POOL = 6000;
const REFERENCE = 2000;
/** 385 of the pool's images are bags: 300 of them flood in. */
const RECENT = 300;

describe('drift statistics on Fashion-MNIST', () => {
  let pool: ProfiledRecord[];
  let reference: ProfiledRecord[];
  let rest: ProfiledRecord[];
  let profile: ReturnType<typeof buildDriftProfile>;

  beforeAll(async () => {
    const fm = await readFashionMnist({ split: 'train', limit: POOL });
    pool = fm.images.map((img, i) => ({
      id: `fm-${i}`,
      generation: String(1_000_000 + i),
      labels: [fm.classNames[fm.labels[i]!]!],
      vector: Float32Array.from(img, (p) => p / 255),
    }));
    const order = shuffledIndices(pool.length, mulberry32(7));
    reference = Array.from(order.subarray(0, REFERENCE), (i) => pool[i]!);
    rest = Array.from(order.subarray(REFERENCE), (i) => pool[i]!);
    profile = buildDriftProfile('ref', reference);
  });

  it('PSI and KS match hand-computed values', () => {
    expect(psi([0.5, 0.5], [0.5, 0.5])).toBe(0);
    // (0.25 − 0.5)·ln(0.5) + (0.75 − 0.5)·ln(1.5)
    expect(psi([0.5, 0.5], [0.25, 0.75])).toBeCloseTo(0.2747, 4);
    expect([psiBand(0.05), psiBand(0.1), psiBand(0.25)]).toEqual(['none', 'moderate', 'major']);
    expect(kolmogorovSmirnov([1, 2, 3], [4, 5, 6]).d).toBe(1);
    expect(kolmogorovSmirnov([1, 2, 3, 4], [3, 4, 5, 6]).d).toBe(0.5);
    const same = Array.from({ length: 500 }, (_, i) => i);
    expect(kolmogorovSmirnov(same, same)).toEqual({ d: 0, pValue: 1 });
  });

  it('flags one class flooding in, and not a different sample of the same distribution (margins reported)', () => {
    const unshiftedSample = rest.slice(0, RECENT);
    const flooding = rest.filter((r) => r.labels[0] === 'Bag').slice(0, RECENT);
    expect(flooding).toHaveLength(RECENT);
    const unshifted = compareWithProfile(
      profile,
      unshiftedSample.map((r) => r.vector),
      SETTINGS,
      unshiftedSample.map((r) => r.labels),
    );
    const shifted = compareWithProfile(
      profile,
      flooding.map((r) => r.vector),
      SETTINGS,
      flooding.map((r) => r.labels),
    );
    console.log(
      `drift statistics (thresholds PSI ${SETTINGS.psiThreshold}, KS D ${SETTINGS.ksThreshold}):\n` +
        `  unshifted: max PSI ${unshifted.psi!.max.toFixed(4)}, KS D ${unshifted.centroidKs!.d.toFixed(4)} (p ${unshifted.centroidKs!.pValue.toFixed(3)}), label PSI ${unshifted.labelPsi!.toFixed(4)}\n` +
        `  shifted:   max PSI ${shifted.psi!.max.toFixed(4)}, KS D ${shifted.centroidKs!.d.toFixed(4)} (p ${shifted.centroidKs!.pValue.toExponential(2)}), label PSI ${shifted.labelPsi!.toFixed(4)}`,
    );
    expect(unshifted.status).toBe('no-shift');
    expect(unshifted.findings).toEqual([]);
    // Well below: less than half of each threshold (measured: max PSI 0.074, KS D 0.059, label PSI 0.035).
    expect(unshifted.psi!.max).toBeLessThan(SETTINGS.psiThreshold / 2);
    expect(unshifted.centroidKs!.d).toBeLessThan(SETTINGS.ksThreshold / 2);
    expect(unshifted.labelPsi!).toBeLessThan(SETTINGS.psiThreshold / 2);

    expect(shifted.status).toBe('drift');
    // Well above: at least 4× the threshold (measured: max PSI 2.97, label PSI 8.24).
    expect(shifted.psi!.max).toBeGreaterThan(4 * SETTINGS.psiThreshold);
    expect(shifted.labelPsi!).toBeGreaterThan(4 * SETTINGS.psiThreshold);
    expect(shifted.findings.join('\n')).toMatch(/PSI .* on component/);
    expect(shifted.findings.join('\n')).toMatch(/label-mix PSI/);
  });

  it('does not judge a sample below the minimum size', () => {
    const report = compareWithProfile(
      profile,
      rest.slice(0, SETTINGS.minSample - 1).map((r) => r.vector),
      SETTINGS,
    );
    expect(report).toMatchObject({ status: 'insufficient', psi: null, findings: [] });
  });

  it('builds the same profile from the same data and seed, and keys every image present at training', () => {
    const a = buildDriftProfile('ref', reference.slice(0, 300), reference);
    const b = buildDriftProfile('ref', reference.slice(0, 300), reference);
    expect({ ...a, createdAt: '' }).toEqual({ ...b, createdAt: '' });
    expect(a.trainingKeys).toHaveLength(REFERENCE);
    expect(a.basis).toHaveLength(8);
    // Orthonormal axes.
    const dotp = (x: number[], y: number[]) => x.reduce((s, v, i) => s + v * y[i]!, 0);
    expect(dotp(a.basis[0]!, a.basis[0]!)).toBeCloseTo(1, 4);
    expect(Math.abs(dotp(a.basis[0]!, a.basis[1]!))).toBeLessThan(1e-4);
    // Each reference decile holds about a tenth of the training embeddings.
    for (const c of profile.components) for (const f of c.fractions) expect(f).toBeCloseTo(0.1, 2);
  });
});

describe('the served-query reference at the default sizes (500 kept, then as few as 200 compared)', () => {
  const TRIALS = 150;
  const KEPT = SETTINGS.servedBaseline;
  const COMPARED = SETTINGS.minSample;
  let profile: ReturnType<typeof buildDriftProfile>;
  let mixed: Float32Array[];
  let trousers: Float32Array[];
  let bags: Float32Array[];

  beforeAll(async () => {
    const fm = await readFashionMnist({ split: 'train', limit: 20_000 });
    const vector = (i: number) => Float32Array.from(fm.images[i]!, (p) => p / 255);
    const training = Array.from({ length: 2000 }, (_, i): ProfiledRecord => ({ id: `t${i}`, generation: '1', labels: [], vector: vector(i) }));
    profile = buildDriftProfile('m', training);
    const rest = Array.from({ length: fm.images.length - 2000 }, (_, k) => k + 2000);
    mixed = rest.map(vector);
    trousers = rest.filter((i) => fm.labels[i] === 1).map(vector);
    bags = rest.filter((i) => fm.labels[i] === 8).map(vector);
  }, 60_000);

  /** Queries `kept` then `later`, drawn (seeded, without replacement) from the pools, one a second. */
  function stream(seed: number, keptPool: Float32Array[], laterPool: Float32Array[]): SampledQuery[] {
    const random = mulberry32(seed);
    const a = shuffledIndices(keptPool.length, random);
    const b = shuffledIndices(laterPool.length, random);
    const first = Array.from(a.subarray(0, KEPT), (i) => keptPool[i]!);
    // The same pool for both: the later queries are others than the kept ones.
    const later = Array.from((keptPool === laterPool ? a.subarray(KEPT) : b).subarray(0, COMPARED), (i) => laterPool[i]!);
    return [...first, ...later].map((vector, k) => ({ at: k * 1000, vector }));
  }

  function verdicts(keptPool: Float32Array[], laterPool: Float32Array[], seed0: number) {
    let flagged = 0;
    let bandAlone = 0;
    for (let t = 0; t < TRIALS; t++) {
      const sampled = stream(seed0 + t, keptPool, laterPool);
      const reference = servedReferenceOf(profile, 'm', sampled, KEPT, new Date(0))!;
      const report = compareWithProfile(
        reference.profile,
        sampled.filter((q) => q.at > reference.until).map((q) => q.vector),
        SETTINGS,
      );
      expect(report.sample).toBe(COMPARED);
      if (report.status === 'drift') flagged++;
      if (report.psi!.max >= SETTINGS.psiThreshold) bandAlone++;
    }
    return { flagged, bandAlone };
  }

  it('the significance level of the largest of 8 PSIs is above the 0.25 band for 500 against 100, below it from 200', () => {
    // χ²(9) at 1 − 0.01/8 is 27.29 (exact); Wilson–Hilferty gives it within 1%.
    expect(psiCritical(10, 1, 1e12, 8) / 27.295).toBeCloseTo(1, 2);
    expect(psiCritical(10, KEPT, 100, 8)).toBeGreaterThan(0.3);
    expect(psiCritical(10, KEPT, COMPARED, 8)).toBeLessThan(SETTINGS.psiThreshold);
    expect(psiCritical(10, 50_000, 1000, 8)).toBeLessThan(0.03);
  });

  it('flags almost no same-distribution sample — every class, or one class only — and almost every change of class', () => {
    const everyClass = verdicts(mixed, mixed, 1);
    const oneClass = verdicts(trousers, trousers, 1_000);
    const changed = verdicts(mixed, bags, 2_000);
    console.log(
      `served reference, ${TRIALS} trials each, flagged (0.25 band alone): every class ${everyClass.flagged} (${everyClass.bandAlone}), ` +
        `trousers only ${oneClass.flagged} (${oneClass.bandAlone}), every class then bags ${changed.flagged}`,
    );
    // At most 2% false alarms where 1% is the design level; the band alone would flag far more.
    expect(everyClass.flagged).toBeLessThanOrEqual(0.02 * TRIALS);
    expect(oneClass.flagged).toBeLessThanOrEqual(0.02 * TRIALS);
    expect(changed.flagged).toBeGreaterThanOrEqual(0.95 * TRIALS);
  });
});

describe('the retraining decision', () => {
  const settings = { minNewLabelled: 200, recallDrop: 0.05, cooldownHours: 24 };
  const now = new Date('2026-01-02T12:00:00Z');
  const noRecall = null;

  it('asks for a retraining on drift with enough new labelled images, with the reason', () => {
    const d = decideRetrain({ drifted: ['uploads: PSI 0.9 on component 1 ≥ 0.25'], newLabelled: 250, recall: noRecall }, settings, undefined, now);
    expect(d.retrain).toBe(true);
    expect(d.reasons[0]).toMatch(/^drift \(uploads: PSI 0.9 on component 1 ≥ 0.25\) with 250 new labelled images \(≥ 200\)$/);
  });

  it('does not retrain on drift alone when too few new labelled images exist', () => {
    expect(decideRetrain({ drifted: ['uploads: x'], newLabelled: 199, recall: noRecall }, settings, undefined, now)).toEqual({ retrain: false, reasons: [] });
  });

  it('asks for a retraining when Recall@1 on new labelled images dropped more than configured, and not when less', () => {
    const drop = { newLabelled: 40, recallAt1: 0.7, recorded: 0.8, drop: 0.1 };
    const d = decideRetrain({ drifted: [], newLabelled: 40, recall: drop }, settings, undefined, now);
    expect(d.retrain).toBe(true);
    expect(d.reasons[0]).toMatch(/Recall@1 on 40 new labelled images 0.700 is 0.100 below the recorded 0.800/);
    const small = { newLabelled: 40, recallAt1: 0.77, recorded: 0.8, drop: 0.03 };
    expect(decideRetrain({ drifted: [], newLabelled: 40, recall: small }, settings, undefined, now).retrain).toBe(false);
  });

  it('holds a request back within the cooldown, saying why, and lets it through after', () => {
    const input = { drifted: ['uploads: x'], newLabelled: 500, recall: noRecall };
    const recent = { at: '2026-01-02T02:00:00Z', modelVersion: 'm', reasons: ['r'], outcome: 'requested' as const };
    const held = decideRetrain(input, settings, recent, now);
    expect(held.retrain).toBe(false);
    expect(held.heldBack).toMatch(/cooldown: a retraining was requested 10.0 h ago/);
    expect(decideRetrain(input, settings, { ...recent, at: '2026-01-01T11:00:00Z' }, now).retrain).toBe(true);
    // A failed request does not start the cooldown.
    expect(decideRetrain(input, settings, { ...recent, outcome: 'failed' }, now).retrain).toBe(true);
  });
});

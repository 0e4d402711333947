import { describe, expect, it } from 'vitest';
import { meanAveragePrecisionAtK, precisionAtK, recallAtK, retrievedShareAtK, sharesLabel } from '../../shared/evaluation/metrics.js';
import { isHeldOut } from '../../shared/evaluation/split.js';

const T = true;
const F = false;

describe('retrieval metrics (hand-computed)', () => {
  const lists = [
    { flags: [T, F, T, F], totalRelevant: 2 }, // hit at 1 and 3
    { flags: [F, F, F, T], totalRelevant: 3 }, // first hit at 4
    { flags: [F, F, F, F], totalRelevant: 0 }, // unanswerable: skipped
  ];

  it('recall@k = share of answerable queries with a relevant hit in the top k', () => {
    expect(recallAtK(lists, 1)).toBe(0.5);
    expect(recallAtK(lists, 3)).toBe(0.5);
    expect(recallAtK(lists, 4)).toBe(1);
  });

  it('precision@k divides by k', () => {
    expect(precisionAtK(lists, 2)).toBeCloseTo((1 / 2 + 0) / 2);
    expect(precisionAtK(lists, 4)).toBeCloseTo((2 / 4 + 1 / 4) / 2);
  });

  it('IR recall@k divides by all relevant items', () => {
    expect(retrievedShareAtK(lists, 4)).toBeCloseTo((2 / 2 + 1 / 3) / 2);
  });

  it('AP@k = (1/min(R,k)) Σ P@i·rel_i', () => {
    // q1: (1/1 + 2/3) / 2 = 0.8333; q2: (1/4) / min(3,4) = 0.0833
    expect(meanAveragePrecisionAtK(lists, 4)).toBeCloseTo((5 / 6 + 1 / 12) / 2, 10);
    // At k=2 q1 only sees its first hit: (1/1)/min(2,2) = 0.5; q2: 0.
    expect(meanAveragePrecisionAtK(lists, 2)).toBeCloseTo(0.25, 10);
  });

  it('rejects k < 1', () => {
    expect(() => recallAtK(lists, 0)).toThrow(RangeError);
    expect(() => meanAveragePrecisionAtK(lists, 1.5)).toThrow(/positive integer/);
  });

  it('sharesLabel: any common label', () => {
    expect(sharesLabel(['a', 'b'], ['c', 'b'])).toBe(true);
    expect(sharesLabel(['a'], [])).toBe(false);
  });
});

describe('held-out split', () => {
  it('is deterministic per id and close to the requested fraction', () => {
    const ids = Array.from({ length: 5000 }, (_, i) => `doc-${i}`);
    const held = ids.filter((id) => isHeldOut(id, 0.1));
    expect(ids.filter((id) => isHeldOut(id, 0.1))).toEqual(held);
    expect(held.length / ids.length).toBeGreaterThan(0.08);
    expect(held.length / ids.length).toBeLessThan(0.12);
  });

  it('rejects fractions outside [0, 1)', () => {
    expect(() => isHeldOut('x', 1)).toThrow(/held-out fraction/);
    expect(() => isHeldOut('x', -0.1)).toThrow(RangeError);
  });
});

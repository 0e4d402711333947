import { describe, expect, it } from 'vitest';
import { gateDecision } from '../../shared/training/gate.js';
import { ParseError } from '../../shared/errors.js';

const m = (r1: number, p10?: number) => ({ imageToImage: { 'recall@1': r1 }, textToImage: p10 === undefined ? null : { 'precision@10': p10 } });

describe('promotion gate', () => {
  it('promotes a candidate that beats recall@1 by at least the margin', () => {
    const d = gateDecision(m(0.86), m(0.82), { margin: 0.01 });
    expect(d.promote).toBe(true);
    expect(d.deltas['recall@1']).toBeCloseTo(0.04);
    expect(d.reasons.join(' ')).toMatch(/beats/);
  });

  it('refuses a candidate below the margin, with a reason', () => {
    const d = gateDecision(m(0.825), m(0.82), { margin: 0.01 });
    expect(d.promote).toBe(false);
    expect(d.reasons[0]).toMatch(/< margin 0.01/);
  });

  it('when both have text, text precision@10 must not fall below the text margin', () => {
    expect(gateDecision(m(0.9, 0.7), m(0.8, 0.9), { margin: 0.01 }).promote).toBe(false);
    expect(gateDecision(m(0.9, 0.95), m(0.8, 0.9), { margin: 0.01 }).promote).toBe(true);
    expect(gateDecision(m(0.9, 0.89), m(0.8, 0.9), { margin: 0.01, textMargin: -0.02 }).promote).toBe(true);
  });

  it('by default holds text to no loss: a tie passes, a loss is refused (non-inferiority, not a second gain)', () => {
    // The 60k case: Recall@1 +0.022 with text precision@10 0.98 vs 0.98 — refused when text had to gain the margin too.
    const tie = gateDecision(m(0.9178, 0.98), m(0.8961, 0.98));
    expect(tie.promote).toBe(true);
    expect(tie.reasons[1]).toBe('text→image precision@10 0.9800 vs 0.9800: change 0.0000 ≥ 0');
    expect(gateDecision(m(0.9183, 0.95), m(0.8961, 0.98)).promote).toBe(false);
    expect(gateDecision(m(0.9183, 0.97), m(0.8961, 0.98), { textMargin: -0.02 }).promote).toBe(true);
    expect(gateDecision(m(0.91, 0.98), m(0.8961, 0.98)).promote).toBe(true);
    expect(gateDecision(m(0.91, 0.98), m(0.8961, 0.98), { textMargin: 0.005 }).promote).toBe(false); // a gain asked explicitly
  });

  it('a candidate adding text is not held back by text; one losing text is refused', () => {
    expect(gateDecision(m(0.9, 0.8), m(0.8), { margin: 0.01 }).promote).toBe(true);
    expect(gateDecision(m(0.9), m(0.8, 0.8), { margin: 0.01 }).promote).toBe(false);
  });

  describe('at the margin (expected values are literals)', () => {
    it('promotes a recall@1 gain exactly equal to the margin', () => {
      // 0.75 − 0.5 = 0.25 exactly in binary floating point: no rounding is involved.
      const d = gateDecision(m(0.75), m(0.5), { margin: 0.25 });
      expect(d.promote).toBe(true);
      expect(d.deltas['recall@1']).toBe(0.25);
    });

    it('refuses a recall@1 gain one step below the margin', () => {
      const d = gateDecision(m(0.749999999), m(0.5), { margin: 0.25 });
      expect(d.promote).toBe(false);
      expect(d.reasons[0]).toMatch(/< margin 0.25/);
    });

    it('promotes one more hit out of 200 at the default margin of 0.005, although 0.815 − 0.81 computes to 0.004999999999999893', () => {
      const d = gateDecision(m(0.815), m(0.81));
      expect(d.deltas['recall@1']).toBe(0.004999999999999893);
      expect(d.promote).toBe(true);
      expect(gateDecision(m(0.814999999), m(0.81)).promote).toBe(false);
    });

    it('promotes the gain of 0.0055 a real retraining won against the margin of 0.005', () => {
      expect(gateDecision(m(0.8255), m(0.82), { margin: 0.005 }).promote).toBe(true);
    });

    it('holds text precision@10 to its margin at equality, a tolerated loss included', () => {
      expect(gateDecision(m(0.9, 0.75), m(0.8, 0.5), { margin: 0.01, textMargin: 0.25 }).promote).toBe(true);
      expect(gateDecision(m(0.9, 0.749999999), m(0.8, 0.5), { margin: 0.01, textMargin: 0.25 }).promote).toBe(false);
      // 0.88 − 0.9 computes to -0.020000000000000018: still exactly the tolerated loss of 0.02.
      expect(gateDecision(m(0.9, 0.88), m(0.8, 0.9), { margin: 0.01, textMargin: -0.02 }).promote).toBe(true);
      expect(gateDecision(m(0.9, 0.879999999), m(0.8, 0.9), { margin: 0.01, textMargin: -0.02 }).promote).toBe(false);
    });
  });

  it('promotes when there is nothing to compare with', () => {
    expect(gateDecision(m(0.5), null).promote).toBe(true);
  });

  it('rejects malformed metrics and options', () => {
    expect(() => gateDecision({ imageToImage: {} } as never, m(0.8))).toThrow(ParseError);
    expect(() => gateDecision(m(0.9), m(0.8), { margin: 2 })).toThrow(/gate options/);
  });
  describe('the reasons a person reads (literal texts)', () => {
    it('states each comparison with its figures', () => {
      expect(gateDecision(m(0.86, 0.7), m(0.82, 0.5), { margin: 0.01, textMargin: 0.1 }).reasons).toEqual([
        'image→image recall@1 0.8600 beats 0.8200 by 0.0400 ≥ margin 0.01',
        'text→image precision@10 0.7000 vs 0.5000: change 0.2000 ≥ 0.1',
      ]);
      const refused = gateDecision(m(0.825, 0.45), m(0.82, 0.5), { margin: 0.01 });
      expect(refused.reasons).toEqual([
        'image→image recall@1 0.8250 vs 0.8200: gain 0.0050 < margin 0.01',
        'text→image precision@10 0.4500 vs 0.5000: change -0.0500 < 0',
      ]);
      expect(refused.deltas['precision@10']).toBeCloseTo(-0.05, 12);
    });

    it('says when the candidate adds or loses text search', () => {
      const adds = gateDecision(m(0.9, 0.8), m(0.8), { margin: 0.01 });
      expect(adds.reasons).toEqual([
        'image→image recall@1 0.9000 beats 0.8000 by 0.1000 ≥ margin 0.01',
        'the candidate adds text search (precision@10 0.8000)',
      ]);
      expect(adds.deltas['precision@10']).toBeNull();
      const loses = gateDecision(m(0.9), m(0.8, 0.8), { margin: 0.01 });
      expect(loses.reasons[1]).toBe('the candidate has no text tower but the current model answers text queries');
      expect(loses.deltas['precision@10']).toBeNull();
      expect(gateDecision(m(0.9), m(0.8), { margin: 0.01 }).reasons).toHaveLength(1);
    });

    it('with nothing to compare, says so and reports the candidate recall@1 as the gain', () => {
      expect(gateDecision(m(0.5, 0.4), null)).toEqual({
        promote: true,
        reasons: ['no active model to compare with'],
        deltas: { 'recall@1': 0.5, 'precision@10': null },
      });
    });

    it('names which metrics or options are invalid, and where', () => {
      expect(() => gateDecision(null as never, null)).toThrow('candidate metrics are invalid: metrics: Invalid input: expected object, received null');
      expect(() => gateDecision(m(0.5), { imageToImage: { 'recall@1': 2 } })).toThrow('current metrics are invalid: imageToImage.recall@1:');
      expect(() => gateDecision(m(0.5), m(0.4), 'x' as never)).toThrow('Invalid gate options: options: Invalid input: expected object, received string');
    });
  });
});

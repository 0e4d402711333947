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

  it('a candidate adding text is not held back by text; one losing text is refused', () => {
    expect(gateDecision(m(0.9, 0.8), m(0.8), { margin: 0.01 }).promote).toBe(true);
    expect(gateDecision(m(0.9), m(0.8, 0.8), { margin: 0.01 }).promote).toBe(false);
  });

  it('promotes when there is nothing to compare with', () => {
    expect(gateDecision(m(0.5), null).promote).toBe(true);
  });

  it('rejects malformed metrics and options', () => {
    expect(() => gateDecision({ imageToImage: {} } as never, m(0.8))).toThrow(ParseError);
    expect(() => gateDecision(m(0.9), m(0.8), { margin: 2 })).toThrow(/gate options/);
  });
});

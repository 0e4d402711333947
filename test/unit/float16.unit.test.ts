import { describe, expect, it } from 'vitest';
import { float16BitsFromBytes, float16BitsToBytes, fromFloat16Bits, toFloat16Bits } from '../../shared/model/float16.js';
import { mulberry32 } from '../../shared/training/prng.js';

/**
 * The half-precision conversions the feature store keeps block activations through, against the
 * IEEE 754 definition: every half-precision value comes back bit for bit, and any other value
 * rounds to a neighbour no further than half the gap between the two half-precision values around
 * it (ties to the even one).
 */
const halfValues = (): Array<{ bits: number; value: number }> => {
  const out: Array<{ bits: number; value: number }> = [];
  for (let bits = 0; bits < 0x10000; bits++) {
    const exponent = (bits >> 10) & 0x1f;
    if (exponent === 0x1f) continue; // ±Infinity, NaN
    const mantissa = bits & 0x3ff;
    const magnitude = exponent === 0 ? mantissa * 2 ** -24 : (1 + mantissa / 1024) * 2 ** (exponent - 15);
    out.push({ bits, value: bits & 0x8000 ? -magnitude : magnitude });
  }
  return out;
};

describe('half precision', () => {
  it('keeps every finite half-precision value bit for bit, both ways', () => {
    const all = halfValues();
    const bits = toFloat16Bits(all.map((h) => h.value));
    all.forEach((h, i) => {
      if (h.value === 0 && h.bits === 0x8000) return; // −0: compared below
      expect(bits[i]).toBe(h.bits);
    });
    expect(Array.from(fromFloat16Bits(Uint16Array.from(all.map((h) => h.bits))))).toEqual(all.map((h) => h.value));
    expect(Object.is(fromFloat16Bits(toFloat16Bits([-0]))[0], -0)).toBe(true);
  });

  it('rounds any other value to the nearer neighbour — including just below a power of two, where Arrow 18 halved it', () => {
    const finite = halfValues()
      .filter((h) => h.value > 0)
      .map((h) => h.value)
      .sort((a, b) => a - b);
    const random = mulberry32(11);
    const probes: number[] = [-7.99999, -1.999992, 0.499988, 0.12498, 7.998047828674316, 1.999511957168579];
    for (let i = 0; i < 20_000; i++) probes.push((random() - 0.5) * 24, (random() - 0.5) * 0.02);
    // Midpoints between neighbours (ties go to the even mantissa) and the values just around them.
    for (let i = 0; i + 1 < finite.length; i += 97) {
      const mid = (finite[i]! + finite[i + 1]!) / 2;
      probes.push(mid, Math.fround(mid * (1 + 1e-7)), Math.fround(mid * (1 - 1e-7)));
    }
    const back = fromFloat16Bits(toFloat16Bits(probes));
    probes.forEach((x, i) => {
      const y = back[i]!;
      const a = Math.abs(x);
      // The half-precision values around |x|.
      let lo = 0;
      let hi = finite.length - 1;
      while (hi - lo > 1) {
        const m = (lo + hi) >> 1;
        if (finite[m]! <= a) lo = m;
        else hi = m;
      }
      const below = finite[lo]! <= a ? finite[lo]! : 0;
      const above = finite[lo]! <= a ? finite[hi]! : finite[lo]!;
      const expected = a - below < above - a ? below : a - below > above - a ? above : null;
      if (expected !== null) expect(Math.abs(y)).toBe(expected);
      else expect([below, above]).toContain(Math.abs(y)); // a tie: one of the two (the even one)
      expect(Math.sign(y) || 1).toBe(Math.sign(x) || 1);
    });
    // The defect this replaced: apache-arrow 18.1's util.float64ToUint16(-7.99999) widens back to -4.
    expect(fromFloat16Bits(toFloat16Bits([-7.99999]))[0]).toBe(-8);
  });

  it('stores bits as little-endian bytes and refuses an odd byte count', () => {
    const bits = toFloat16Bits([1, -2, 0.5, 65504]);
    expect(Array.from(float16BitsToBytes(bits))).toEqual([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b]);
    expect(Array.from(float16BitsFromBytes(float16BitsToBytes(bits)))).toEqual(Array.from(bits));
    expect(() => float16BitsFromBytes(new Uint8Array(3))).toThrow(/odd byte count/);
  });
});

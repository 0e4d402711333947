import { Float16Array } from '@petamoriken/float16';
import { util } from 'apache-arrow';
import { ParseError } from '../errors.js';

/**
 * IEEE 754 half precision (what the feature store keeps block activations in: half the bytes of
 * float32; a value loses at most half a unit in the last place, 2⁻¹¹ of itself).
 *
 * Rounding to half precision is @petamoriken/float16's (the Float16Array polyfill of the TC39
 * proposal, round-half-to-even, tested against test262). Apache Arrow's `util.float64ToUint16`
 * (apache-arrow 18.1) drops the carry when rounding up to the next power of two: a value within
 * half a unit below 2ᵏ came back as 2ᵏ⁻¹ (−7.99999 → −4, 0.49999 → 0.25), about 2 values in 10,000
 * of a uniform range (test/unit/float16.unit.test.ts). Widening back is exact and stays Arrow's
 * (already a dependency for LanceDB), tabulated once for all 65,536 bit patterns.
 */
export function toFloat16Bits(values: ArrayLike<number>): Uint16Array {
  const half = new Float16Array(values.length);
  half.set(values);
  return new Uint16Array(half.buffer, 0, values.length);
}

/** Every half-precision value as float32, by its bits (256 kB, built on first use from Arrow's exact widening). */
let widened: Float32Array | null = null;
function widenTable(): Float32Array {
  if (!widened) {
    widened = new Float32Array(0x10000);
    for (let bits = 0; bits < 0x10000; bits++) widened[bits] = util.uint16ToFloat64(bits);
  }
  return widened;
}

/**
 * Half-precision bits → float32, written into `out` at `offset` when given (a batch buffer). A table
 * lookup per value: training and the layout rebuild widen 7,840 values per image per pass.
 */
export function fromFloat16Bits(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length), offset = 0): Float32Array {
  const table = widenTable();
  for (let i = 0; i < bits.length; i++) out[offset + i] = table[bits[i]!]!;
  return out;
}

/** Half-precision bits as little-endian bytes (how the feature stores keep FeatureRecord.activation). */
export function float16BitsToBytes(bits: Uint16Array): Uint8Array {
  const le = new Uint8Array(bits.length * 2);
  const view = new DataView(le.buffer);
  for (let i = 0; i < bits.length; i++) view.setUint16(2 * i, bits[i]!, true);
  return le;
}

/** Little-endian bytes back to half-precision bits; an odd byte count is not half-precision data. */
export function float16BitsFromBytes(bytes: Uint8Array): Uint16Array {
  if (bytes.length % 2 !== 0) throw new ParseError(`${bytes.length} bytes are not half-precision values (odd byte count)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bits = new Uint16Array(bytes.length >> 1);
  for (let i = 0; i < bits.length; i++) bits[i] = view.getUint16(2 * i, true);
  return bits;
}

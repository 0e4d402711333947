import { util } from 'apache-arrow';
import { ParseError } from '../errors.js';

/**
 * IEEE 754 half precision (what the feature store keeps block activations in: half the bytes of
 * float32, and activations of a ReLU6 network lose < 0.1 % to the rounding). The conversions are
 * Apache Arrow's (already a dependency for LanceDB), which also reads Float16 columns.
 */
export function toFloat16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = util.float64ToUint16(values[i]!);
  return out;
}

/** Half-precision bits → float32, written into `out` at `offset` when given (a batch buffer). */
export function fromFloat16Bits(bits: Uint16Array, out: Float32Array = new Float32Array(bits.length), offset = 0): Float32Array {
  for (let i = 0; i < bits.length; i++) out[offset + i] = util.uint16ToFloat64(bits[i]!);
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

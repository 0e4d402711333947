import { util } from 'apache-arrow';

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

import { beforeAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../shared/training/prng.js';
import { initTf, tf } from '../../shared/training/tf-backend.js';
import { channelAffine, columnSums, mm, relu6 } from '../../shared/training/tf-math.js';

/**
 * The ops whose gradients are written by hand for the wasm backend (shared/training/tf-math.ts)
 * against tfjs-core's autodiff of their plain definitions, on the backend training uses: same
 * values, same gradients for every input. A swapped transpose, a missing scale or a wrong mask
 * makes one of these differ by far more than rounding.
 */
const random = mulberry32(5);
const tensor = (shape: number[], lo = -1, hi = 1) =>
  tf.tensor(
    Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => lo + (hi - lo) * random()),
    shape,
  );
const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!;
const maxAbs = (a: tf.Tensor) => tf.max(tf.abs(a)).dataSync()[0]!;

/** Σ upstream ⊙ f(inputs): its gradient with respect to each input is f's vector-Jacobian product with `upstream`. */
function gradsOf(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], upstream: tf.Tensor): tf.Tensor[] {
  return tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), upstream)))(inputs);
}

beforeAll(async () => {
  expect(await initTf()).toBe('wasm');
});

describe('hand-written gradients agree with autodiff of the plain ops', () => {
  it('mm: both operand orders of the weight gradient (the smaller operand second)', () => {
    // [rows,k]·[k,m] with a larger than dy and with dy larger than a: both branches of the weight gradient.
    for (const [rows, k, m] of [
      [40, 24, 6],
      [40, 6, 24],
    ] as const) {
      const a = tensor([rows, k]);
      const b = tensor([k, m]);
      const up = tensor([rows, m]);
      const mine = gradsOf((x, y) => mm(x as tf.Tensor2D, y as tf.Tensor2D), [a, b], up);
      const ref = gradsOf((x, y) => tf.matMul(x as tf.Tensor2D, y as tf.Tensor2D), [a, b], up);
      expect(maxDiff(mm(a as tf.Tensor2D, b as tf.Tensor2D), tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D))).toBeLessThan(1e-5);
      for (let i = 0; i < 2; i++) {
        expect(maxAbs(ref[i]!)).toBeGreaterThan(0.5);
        expect(maxDiff(mine[i]!, ref[i]!)).toBeLessThan(1e-4);
      }
    }
  });

  it('columnSums: the sum over rows', () => {
    const x = tensor([37, 5]);
    expect(maxDiff(columnSums(x as tf.Tensor2D), tf.sum(x, 0))).toBeLessThan(1e-5);
    expect(columnSums(x as tf.Tensor2D).shape).toEqual([5]);
  });

  it('channelAffine: x, scale and shift of a 4-D map', () => {
    const x = tensor([3, 4, 4, 6]);
    const scale = tensor([6], 0.5, 2);
    const shift = tensor([6]);
    const up = tensor([3, 4, 4, 6]);
    const mine = gradsOf((a, s, b) => channelAffine(a!, s as tf.Tensor1D, b as tf.Tensor1D), [x, scale, shift], up);
    const ref = gradsOf((a, s, b) => tf.add(tf.mul(a!, s!), b!), [x, scale, shift], up);
    expect(maxDiff(channelAffine(x, scale as tf.Tensor1D, shift as tf.Tensor1D), tf.add(tf.mul(x, scale), shift))).toBeLessThan(1e-5);
    for (let i = 0; i < 3; i++) {
      expect(maxAbs(ref[i]!)).toBeGreaterThan(0.5);
      expect(maxDiff(mine[i]!, ref[i]!)).toBeLessThan(1e-4);
    }
  });

  it('relu6: passes the gradient only where 0 < x < 6 (TensorFlow Relu6Grad: none at either kink)', () => {
    const x = tensor([500], -3, 9);
    const up = tensor([500]);
    const [mine] = gradsOf((a) => relu6(a!), [x], up);
    const [ref] = gradsOf((a) => tf.relu6(a!), [x], up);
    expect(maxDiff(relu6(x), tf.clipByValue(x, 0, 6))).toBe(0);
    expect(maxDiff(mine!, ref!)).toBe(0);
    const g = mine!.dataSync();
    const xs = x.dataSync();
    expect(Array.from(xs).filter((v, i) => (v <= 0 || v >= 6) && g[i] !== 0)).toEqual([]);
    expect(Array.from(xs).filter((v, i) => v > 0 && v < 6 && g[i] === 0)).toEqual([]);
    const kinks = tf.tensor1d([0, 6, 3]);
    expect(Array.from(gradsOf((a) => relu6(a!), [kinks], tf.ones([3]))[0]!.dataSync())).toEqual([0, 0, 1]);
  });
});

import { tf } from './tf-backend.js';

/**
 * TensorFlow.js vector math shared by the LiT trainer and its inference (one definition, so the
 * trained graph and the reference it is checked against normalise the same way). The plain
 * TypeScript versions are in shared/vector-math.ts.
 */

/** Each row divided by its L2 norm: x / √(Σ x² + 1e-12) (the epsilon keeps zero rows finite and differentiable). */
export function l2NormaliseRows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.sqrt(tf.add(tf.sum(tf.square(x), 1, true), 1e-12))) as tf.Tensor2D;
}

// -------------------------------------------------------------------------------------------------
// Ops with gradients written for the wasm backend. tfjs-core's own gradients are correct but slow
// there (tf.profile of one unlock-2 step, batch 256; BENCHMARKS.md "Fine-tuning the top blocks"):
// a transposed BatchMatMul is ~10× slower than transpose + plain matMul; reducing over the leading
// axes (the gradient of a per-channel broadcast: BatchNormalization's scale and shift, a bias) took
// 3.8 s of a 10 s step; clipByValue's gradient is four element-wise kernels. With these ops a step
// takes 4.5× less time (`npm run bench -- --only tower-step`).

type Grad = Parameters<typeof tf.customGrad>[0];

/**
 * Σ over rows of x [R,C] → [C], as xᵀ·ones[R,1] (a transposed-A product with a one-column second
 * operand; ones[1,R]·x would make XNNPACK pack all of x on every call, 5× slower).
 */
export function columnSums(x: tf.Tensor2D): tf.Tensor1D {
  return tf.reshape(tf.matMul(x, tf.ones([x.shape[0], 1]), true, false), [x.shape[1]]);
}

/** aᵀ·dy for a weight gradient: the smaller operand goes second (XNNPACK packs the second operand on every call). */
function transposedProduct(a: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  return a.size <= dy.size ? tf.transpose(tf.matMul(tf.transpose(dy), a)) : tf.matMul(tf.transpose(a) as tf.Tensor2D, dy);
}

/** a·b whose gradient uses explicit transposes and plain matMuls (see above). */
export const mm = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
      tf.matMul(dy as tf.Tensor2D, tf.transpose(saved[1]!) as tf.Tensor2D),
      transposedProduct(saved[0] as tf.Tensor2D, dy as tf.Tensor2D),
    ],
  };
}) as unknown as Grad) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

/**
 * x·scale + shift per channel (the last axis), for x of any rank and scale, shift [C]: inference-mode
 * BatchNormalization, or a bias (scale 1). Its scale and shift gradients are column sums.
 */
export const channelAffine = tf.customGrad(((x: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, scale]);
  return {
    value: tf.add(tf.mul(x, scale), shift),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [input, s] = saved as [tf.Tensor, tf.Tensor1D];
      const c = s.shape[0];
      const rows = (t: tf.Tensor) => tf.reshape(t, [t.size / c, c]) as tf.Tensor2D;
      return [tf.mul(dy, s), columnSums(rows(tf.mul(dy, input))), columnSums(rows(dy))];
    },
  };
}) as unknown as Grad) as unknown as <T extends tf.Tensor>(x: T, scale: tf.Tensor1D, shift: tf.Tensor1D) => T;

/**
 * min(max(x, 0), 6) (MobileNetV2's ReLU6) whose gradient is dy where 0 < x < 6, from two step
 * masks: TensorFlow's Relu6Grad convention (0 at both kinks), which Keras trained the tower with.
 * tfjs' clipByValue passes the gradient at x = 0 (so a channel BatchNormalization maps to exactly 0
 * — MobileNetV2 has such dead channels — would get a shift gradient), tf.relu6 at x = 6.
 */
export const relu6 = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const y = tf.relu6(x);
  save([y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, tf.mul(tf.step(saved[0]!), tf.step(tf.sub(6, saved[0]!)))),
  };
}) as unknown as Grad) as unknown as <T extends tf.Tensor>(x: T) => T;

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

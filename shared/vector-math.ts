/**
 * Plain-TypeScript vector math on embeddings (Float32Array), in one place. Embeddings are
 * L2-normalised everywhere in the pipeline, so cosine similarity is their dot product.
 * (The TensorFlow.js versions for training live in shared/training/tf-math.ts; the ONNX graph
 * builds its own L2 normalisation in shared/model/keras-to-onnx.ts and shared/training/onnx-export.ts.)
 * The collection map's matrix numerics (PCA, k-means, silhouette, reservoir sampling) sit beside
 * it in shared/map-math.ts.
 */

/** Σ a[i]·b[i]; the two must have the same dimension. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`dot product of dimensions ${a.length} and ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** ‖v‖ (Euclidean length). */
export function l2Norm(v: ArrayLike<number>): number {
  return Math.sqrt(dot(v, v));
}

/** v / ‖v‖ as a new array; a zero vector stays zero. */
export function l2Normalise(v: Float32Array): Float32Array {
  return l2NormaliseInPlace(Float32Array.from(v));
}

/** Divides v by ‖v‖ in place and returns it (no copy, for freshly built vectors); a zero vector stays zero. */
export function l2NormaliseInPlace(v: Float32Array): Float32Array {
  const norm = l2Norm(v);
  if (norm === 0) return v;
  for (let i = 0; i < v.length; i++) v[i] = v[i]! / norm;
  return v;
}

/** Arithmetic mean of the values; 0 for none. */
export function mean(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]!;
  return values.length === 0 ? 0 : s / values.length;
}

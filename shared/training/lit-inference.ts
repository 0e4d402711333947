import { ParseError } from '../errors.js';
import { HashedNgramFeaturizer } from '../text/hashed-ngram.js';
import type { HeadWeights, TextTowerWeights } from './lit-trainer.js';
import { initTf, tf } from './tf-backend.js';
import { l2NormaliseRows } from './tf-math.js';

/**
 * Inference with trained LiT weights in TensorFlow.js — used by training/evaluation before the
 * ONNX files exist, and as the reference the ONNX export is checked against.
 */

/** Projects base embeddings with a head: batches of `batchSize` rows (re-indexing without decoding). */
export async function reprojectBatch(head: HeadWeights, baseVectors: Float32Array[], batchSize = 4096): Promise<Float32Array[]> {
  await initTf();
  const { inputDimension: d, hidden: h, outputDimension: e } = head;
  const w1 = tf.tensor2d(head.w1, [d, h]);
  const b1 = tf.tensor1d(head.b1);
  const w2 = tf.tensor2d(head.w2, [h, e]);
  const ws = tf.tensor2d(head.wSkip, [d, e]);
  const b2 = tf.tensor1d(head.b2);
  const out: Float32Array[] = [];
  try {
    for (let s = 0; s < baseVectors.length; s += batchSize) {
      const rows = baseVectors.slice(s, s + batchSize);
      const x = new Float32Array(rows.length * d);
      rows.forEach((v, i) => {
        if (v.length !== d) throw new ParseError(`base vector ${s + i} has dimension ${v.length}, the head expects ${d}`);
        x.set(v, i * d);
      });
      const y = tf.tidy(() => {
        const xs = tf.tensor2d(x, [rows.length, d]);
        const hidden = tf.relu(tf.add(tf.matMul(xs, w1), b1));
        return l2NormaliseRows(tf.add(tf.add(tf.matMul(hidden, w2), tf.matMul(xs, ws)), b2) as tf.Tensor2D);
      });
      const data = (await y.data()) as Float32Array;
      y.dispose();
      for (let i = 0; i < rows.length; i++) out.push(data.slice(i * e, (i + 1) * e));
    }
  } finally {
    for (const t of [w1, b1, w2, ws, b2]) t.dispose();
  }
  return out;
}

/** Embeds texts with a hashed-n-gram text tower. */
export async function embedTextsWithTower(tower: TextTowerWeights, texts: string[]): Promise<Float32Array[]> {
  await initTf();
  if (texts.length === 0) return [];
  const featurizer = new HashedNgramFeaturizer({ buckets: tower.buckets });
  const e = tower.outputDimension;
  const y = tf.tidy(() => {
    const w = tf.tensor2d(tower.w, [tower.buckets, e]);
    return l2NormaliseRows(tf.matMul(tf.tensor2d(featurizer.dense(texts), [texts.length, tower.buckets]), w));
  });
  const data = (await y.data()) as Float32Array;
  y.dispose();
  return texts.map((_, i) => data.slice(i * e, (i + 1) * e));
}

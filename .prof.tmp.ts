import { initTf, tf } from '/work/main/shared/training/tf-backend.js';
await initTf(undefined, (process.env.BK as 'cpu') ?? 'wasm');
const time = async (name: string, f: () => tf.Tensor | tf.Scalar | null) => {
  { const r = f(); if (r) { await r.data(); r.dispose(); } }
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) { const r = f(); if (r) { await r.data(); r.dispose(); } }
  console.log(name, ((performance.now() - t0) / 5).toFixed(1), 'ms');
};
const x = tf.randomNormal([256, 784]);
const dy = tf.randomNormal([256, 512]);
const w1 = tf.variable(tf.randomNormal([784, 512]));
await time('matmul fwd', () => tf.matMul(x, w1));
await time('transpose+mm A', () => tf.tidy(() => tf.matMul(tf.transpose(x), dy)));
await time('transpose+mm B', () => tf.tidy(() => tf.matMul(dy, tf.transpose(w1))));

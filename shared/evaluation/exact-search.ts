import { initTf, tf } from '../training/tf-backend.js';

/**
 * Exact cosine (inner product on L2-normalised vectors) top-k with TensorFlow.js matMul + topk.
 * The corpus is walked in chunks, each uploaded once and scored against every query, and a running
 * top-k per query is merged in JS — memory stays at one chunk plus the queries, whatever the corpus.
 */
export interface TopK {
  /** Per query: corpus indices, best first. */
  indices: Int32Array[];
  scores: Float32Array[];
}

export interface ExactSearchOptions {
  /** Corpus rows scored per matMul (default 8192). */
  chunkSize?: number;
  /** Queries per matMul (default 1024). */
  queryBatch?: number;
}

function pack(vectors: Float32Array[], from: number, to: number, dim: number): Float32Array {
  const out = new Float32Array((to - from) * dim);
  for (let i = from; i < to; i++) {
    const v = vectors[i]!;
    if (v.length !== dim) throw new RangeError(`vector ${i} has dimension ${v.length}, expected ${dim}`);
    out.set(v, (i - from) * dim);
  }
  return out;
}

export async function exactTopK(queries: Float32Array[], corpus: Float32Array[], k: number, options: ExactSearchOptions = {}): Promise<TopK> {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`k must be a positive integer, got ${k}`);
  const dim = queries[0]?.length ?? corpus[0]?.length ?? 0;
  const best = queries.map(() => ({ idx: new Int32Array(0), score: new Float32Array(0) }));
  if (queries.length === 0 || corpus.length === 0) return { indices: best.map((b) => b.idx), scores: best.map((b) => b.score) };
  await initTf();
  const chunkSize = options.chunkSize ?? 8192;
  const queryBatch = options.queryBatch ?? 1024;
  const queryTensors: tf.Tensor2D[] = [];
  for (let q = 0; q < queries.length; q += queryBatch) {
    const end = Math.min(queries.length, q + queryBatch);
    queryTensors.push(tf.tensor2d(pack(queries, q, end, dim), [end - q, dim]));
  }
  try {
    for (let c = 0; c < corpus.length; c += chunkSize) {
      const cEnd = Math.min(corpus.length, c + chunkSize);
      // Transposed once per chunk: wasm's transposed matMul is ~10× slower than a plain one.
      const chunk = tf.tidy(() => tf.transpose(tf.tensor2d(pack(corpus, c, cEnd, dim), [cEnd - c, dim])) as tf.Tensor2D);
      const kk = Math.min(k, cEnd - c);
      for (let b = 0; b < queryTensors.length; b++) {
        const { values, indices } = tf.tidy(() => tf.topk(tf.matMul(queryTensors[b]!, chunk), kk, true));
        const [vals, idxs] = await Promise.all([values.data() as Promise<Float32Array>, indices.data() as Promise<Int32Array>]);
        values.dispose();
        indices.dispose();
        const rows = vals.length / kk;
        for (let r = 0; r < rows; r++) {
          const slot = best[b * queryBatch + r]!;
          const mergedScore = new Float32Array(Math.min(k, slot.score.length + kk));
          const mergedIdx = new Int32Array(mergedScore.length);
          let i = 0;
          let j = 0;
          for (let m = 0; m < mergedScore.length; m++) {
            // Ties keep the earlier corpus index first, so results do not depend on chunking.
            const takeOld = j >= kk || (i < slot.score.length && slot.score[i]! >= vals[r * kk + j]!);
            if (takeOld) {
              mergedScore[m] = slot.score[i]!;
              mergedIdx[m] = slot.idx[i]!;
              i++;
            } else {
              mergedScore[m] = vals[r * kk + j]!;
              mergedIdx[m] = c + idxs[r * kk + j]!;
              j++;
            }
          }
          slot.score = mergedScore;
          slot.idx = mergedIdx;
        }
      }
      chunk.dispose();
    }
  } finally {
    for (const t of queryTensors) t.dispose();
  }
  return { indices: best.map((b) => b.idx), scores: best.map((b) => b.score) };
}

import { performance } from 'node:perf_hooks';
import { DEFAULT_ACTIVATION, DEFAULT_FEATURE_LAYERS } from '../shared/model/default-model.js';
import { loadNsfwjsMobilenetV2 } from '../shared/model/nsfwjs-mobilenet.js';
import { mulberry32 } from '../shared/training/prng.js';
import { initTf, tf } from '../shared/training/tf-backend.js';
import { TowerBlocks } from '../shared/training/tower-blocks.js';

/**
 * What one training step of the unlocked tower blocks costs (`imgsearch retrain --unlock-blocks N`):
 * forward from the stored block-13 activations to the base embedding, then the gradients of every
 * unlocked weight, for one batch — with the hand-written gradients of shared/training/tf-math.ts
 * (the default) and with tfjs-core's own (the baseline), alternating in one process on the wasm
 * backend. Activations are seeded uniform [0, 2) (what a ReLU6 map holds; the values only move the
 * ReLU masks). Figures: BENCHMARKS.md, "Fine-tuning the top blocks".
 */
export interface TowerStepResult {
  unlock: number;
  batch: number;
  rounds: number;
  /** ms per image of a step: forward + gradients. */
  fastMsPerImage: number;
  tfjsMsPerImage: number;
  forwardMsPerImage: number;
  /** tfjs / fast. */
  speedup: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchTowerStep(options: { unlock?: number; batch?: number; rounds?: number } = {}): Promise<TowerStepResult> {
  const unlock = options.unlock ?? 2;
  const batch = options.batch ?? 256;
  const rounds = options.rounds ?? 5;
  await initTf();
  const random = mulberry32(17);
  const shape = [7, 7, 160] as const;
  const act = tf.tensor4d(
    Float32Array.from({ length: batch * 7 * 7 * 160 }, () => 2 * random()),
    [batch, ...shape],
  );
  const artifacts = loadNsfwjsMobilenetV2();
  const time = (gradients: 'fast' | 'tfjs', withGrads: boolean): number => {
    // One tower at a time: tfjs variable names are global.
    const tower = new TowerBlocks(artifacts, { activation: { layer: DEFAULT_ACTIVATION.layer, shape }, features: DEFAULT_FEATURE_LAYERS, unlock, gradients });
    try {
      const vars = tower.trainable();
      const step = () =>
        tf.tidy(() => {
          if (!withGrads) return void tower.forward(act, null).dataSync();
          const { grads } = tf.variableGrads(() => tf.sum(tf.square(tower.forward(act, null))) as tf.Scalar, vars);
          for (const g of Object.values(grads)) g.dataSync();
        });
      step(); // warm-up: kernels, XNNPACK operators
      const t0 = performance.now();
      step();
      return (performance.now() - t0) / batch;
    } finally {
      tower.dispose();
    }
  };
  const fast: number[] = [];
  const reference: number[] = [];
  const forward: number[] = [];
  for (let r = 0; r < rounds; r++) {
    fast.push(time('fast', true));
    reference.push(time('tfjs', true));
    forward.push(time('fast', false));
  }
  act.dispose();
  const f = median(fast);
  const t = median(reference);
  return { unlock, batch, rounds, fastMsPerImage: f, tfjsMsPerImage: t, forwardMsPerImage: median(forward), speedup: t / f };
}

export function formatTowerStep(r: TowerStepResult): string[] {
  return [
    `  unlock ${r.unlock}, batch ${r.batch}, median of ${r.rounds} alternating rounds (wasm backend, one thread)`,
    `    forward only: ${r.forwardMsPerImage.toFixed(2)} ms per image`,
    `    forward + gradients, tfjs-core's gradients (baseline): ${r.tfjsMsPerImage.toFixed(2)} ms per image`,
    `    forward + gradients, hand-written (tf-math.ts): ${r.fastMsPerImage.toFixed(2)} ms per image — ${r.speedup.toFixed(2)}× faster`,
  ];
}

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { silentLogger, type Logger } from '../logger.js';

/**
 * TensorFlow.js with the WebAssembly backend (XNNPACK, SIMD): about 20× faster than the pure-JS
 * `cpu` backend for the dense layers we train. Chosen once per process; if wasm cannot start (no
 * WebAssembly, missing .wasm file) we fall back to `cpu`, which has every kernel.
 * Every op the trainer uses (BatchMatMul, Relu, Max, Sum, Exp, Log, Sqrt, RealDiv, Multiply, Add,
 * Sub, TopK, Transpose) has a wasm kernel; gradients are defined once in tfjs-core for all backends.
 * We avoid Gather/UnsortedSegmentSum because wasm has no UnsortedSegmentSum kernel (Gather's gradient).
 */
let ready: Promise<string> | undefined;

export function initTf(logger: Logger = silentLogger, preferred: 'wasm' | 'cpu' = 'wasm'): Promise<string> {
  ready ??= (async () => {
    let ok = false;
    if (preferred === 'wasm') {
      try {
        ok = await tf.setBackend('wasm');
      } catch (err) {
        logger.warn({ err }, 'tfjs wasm backend unavailable, falling back to cpu');
      }
    }
    if (!ok) await tf.setBackend('cpu');
    await tf.ready();
    logger.debug({ backend: tf.getBackend() }, 'tfjs backend ready');
    return tf.getBackend();
  })();
  return ready;
}

export { tf };

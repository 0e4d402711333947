import { OnnxGraphBuilder } from '../model/onnx/graph-builder.js';
import type { HeadWeights, TextTowerWeights } from './lit-trainer.js';

/**
 * Trained LiT weights as ONNX (written by the graph builder the image tower's converter uses, at
 * its opset) so inference runs in onnxruntime like the image tower:
 *  - head: x[N,D] → normalise(Relu(x·W1 + b1)·W2 + x·Wskip + b2) → [N,E]
 *  - hashed-n-gram text tower: dense bag x[N,B] → normalise(x·W) → [N,E]
 * Normalisation is LpNormalization(p=2) over the last axis.
 */
export const HEAD_INPUT = 'base';
export const HEAD_OUTPUT = 'embedding';
export const TEXT_INPUT = 'ngrams';
export const TEXT_OUTPUT = 'embedding';

const PRODUCER = 'image-semantic-search lit-trainer';

function check(name: string, data: Float32Array, expected: number): void {
  if (data.length !== expected) throw new RangeError(`${name} has ${data.length} values, expected ${expected}`);
}

export function headToOnnx(head: HeadWeights): Buffer {
  const { inputDimension: d, hidden: h, outputDimension: e } = head;
  check('w1', head.w1, d * h);
  check('b1', head.b1, h);
  check('w2', head.w2, h * e);
  check('wSkip', head.wSkip, d * e);
  check('b2', head.b2, e);
  const g = new OnnxGraphBuilder();
  g.input(HEAD_INPUT, ['batch', d]);
  const w1 = g.floats(head.w1, [d, h], 'w1');
  const b1 = g.floats(head.b1, [h], 'b1');
  const w2 = g.floats(head.w2, [h, e], 'w2');
  const wSkip = g.floats(head.wSkip, [d, e], 'w_skip');
  const b2 = g.floats(head.b2, [e], 'b2');
  const hidden = g.node('Relu', [g.node('Gemm', [HEAD_INPUT, w1, b1], {}, 'hidden_pre')], {}, 'hidden');
  const mlp = g.node('MatMul', [hidden, w2], {}, 'mlp');
  const skip = g.node('Gemm', [HEAD_INPUT, wSkip, b2], {}, 'skip');
  const projected = g.node('Add', [mlp, skip], {}, 'projected');
  g.node('LpNormalization', [projected], { axis: -1, p: 2 }, HEAD_OUTPUT);
  g.output(HEAD_OUTPUT, ['batch', e]);
  return Buffer.from(g.encode({ graphName: 'lit_head', producerName: PRODUCER, docString: `LiT projection head ${d}→${h}→${e}` }));
}

export function textTowerToOnnx(tower: TextTowerWeights): Buffer {
  const { buckets: b, outputDimension: e } = tower;
  check('w', tower.w, b * e);
  const g = new OnnxGraphBuilder();
  g.input(TEXT_INPUT, ['batch', b]);
  const projected = g.node('MatMul', [TEXT_INPUT, g.floats(tower.w, [b, e], 'w')], {}, 'projected');
  g.node('LpNormalization', [projected], { axis: -1, p: 2 }, TEXT_OUTPUT);
  g.output(TEXT_OUTPUT, ['batch', e]);
  return Buffer.from(g.encode({ graphName: 'hashed_ngram_text_tower', producerName: PRODUCER, docString: `hashed n-gram embedding bag ${b}→${e}` }));
}

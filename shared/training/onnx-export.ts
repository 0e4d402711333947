import onnxProto from 'onnx-proto';
import type { HeadWeights, TextTowerWeights } from './lit-trainer.js';

const { onnx } = onnxProto;

/**
 * Trained LiT weights as ONNX (opset 17) so inference runs in onnxruntime like the image tower:
 *  - head: x[N,D] → normalise(Relu(x·W1 + b1)·W2 + x·Wskip + b2) → [N,E]
 *  - hashed-n-gram text tower: dense bag x[N,B] → normalise(x·W) → [N,E]
 * Normalisation is LpNormalization(p=2) over the last axis.
 */
export const LIT_ONNX_OPSET = 17;
export const HEAD_INPUT = 'base';
export const HEAD_OUTPUT = 'embedding';
export const TEXT_INPUT = 'ngrams';
export const TEXT_OUTPUT = 'embedding';

type Init = onnxProto.onnx.ITensorProto;

function floats(name: string, data: Float32Array, dims: number[]): Init {
  // Copy so the tensor's bytes are exactly this array (not a view of a larger buffer).
  const copy = Float32Array.from(data);
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(copy.buffer) };
}

function valueInfo(name: string, dims: Array<number | string>): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

function node(opType: string, input: string[], output: string[], attrs: Record<string, number> = {}): onnxProto.onnx.INodeProto {
  return {
    opType,
    input,
    output,
    name: output[0],
    attribute: Object.entries(attrs).map(([name, i]) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i })),
  };
}

function model(graphName: string, nodes: onnxProto.onnx.INodeProto[], initializer: Init[], input: onnxProto.onnx.IValueInfoProto, output: onnxProto.onnx.IValueInfoProto, doc: string): Uint8Array {
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: LIT_ONNX_OPSET }],
      producerName: 'image-semantic-search lit-trainer',
      docString: doc,
      graph: { name: graphName, node: nodes, initializer, input: [input], output: [output] },
    }),
  ).finish();
}

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
  const nodes = [
    node('Gemm', [HEAD_INPUT, 'w1', 'b1'], ['hidden_pre']),
    node('Relu', ['hidden_pre'], ['hidden']),
    node('MatMul', ['hidden', 'w2'], ['mlp']),
    node('Gemm', [HEAD_INPUT, 'w_skip', 'b2'], ['skip']),
    node('Add', ['mlp', 'skip'], ['projected']),
    node('LpNormalization', ['projected'], [HEAD_OUTPUT], { axis: -1, p: 2 }),
  ];
  const init = [floats('w1', head.w1, [d, h]), floats('b1', head.b1, [h]), floats('w2', head.w2, [h, e]), floats('w_skip', head.wSkip, [d, e]), floats('b2', head.b2, [e])];
  return Buffer.from(model('lit_head', nodes, init, valueInfo(HEAD_INPUT, ['batch', d]), valueInfo(HEAD_OUTPUT, ['batch', e]), `LiT projection head ${d}→${h}→${e}`));
}

export function textTowerToOnnx(tower: TextTowerWeights): Buffer {
  const { buckets: b, outputDimension: e } = tower;
  check('w', tower.w, b * e);
  const nodes = [node('MatMul', [TEXT_INPUT, 'w'], ['projected']), node('LpNormalization', ['projected'], [TEXT_OUTPUT], { axis: -1, p: 2 })];
  return Buffer.from(model('hashed_ngram_text_tower', nodes, [floats('w', tower.w, [b, e])], valueInfo(TEXT_INPUT, ['batch', b]), valueInfo(TEXT_OUTPUT, ['batch', e]), `hashed n-gram embedding bag ${b}→${e}`));
}

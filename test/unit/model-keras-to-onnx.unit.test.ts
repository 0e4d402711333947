import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { beforeAll, describe, expect, it } from 'vitest';
import { decodeKerasWeights, kerasToOnnx, type KerasLayer, type KerasModelArtifacts, type KerasWeightSpec } from '../../shared/model/keras-to-onnx.js';

/**
 * A small synthetic Keras model using every supported layer class (padding folded into a strided
 * conv, BN folded and not folded, ReLU6, depthwise with multiplier, Add, 'same' average pooling,
 * Flatten of a 3×3 map, Dense + softmax), with uint8-quantised weights; the converted ONNX must
 * agree with tfjs' own Keras implementation.
 */
let seed = 7;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;

function layer(name: string, className: string, config: Record<string, unknown>, inbound: string[]): KerasLayer {
  return {
    name,
    class_name: className,
    config: { name, trainable: false, ...config },
    inbound_nodes: inbound.length ? [inbound.map((n) => [n, 0, 0, {}])] : [],
  };
}

function syntheticModel(): KerasModelArtifacts {
  const conv = { data_format: 'channels_last', dilation_rate: [1, 1], activation: 'linear' };
  const bn = { axis: -1, epsilon: 0.001, center: true, scale: true, momentum: 0.99 };
  const layers: KerasLayer[] = [
    layer('in', 'InputLayer', { batch_input_shape: [null, 6, 6, 2], dtype: 'float32', sparse: false }, []),
    layer(
      'pad',
      'ZeroPadding2D',
      {
        padding: [
          [0, 1],
          [0, 1],
        ],
        data_format: 'channels_last',
      },
      ['in'],
    ),
    layer('c1', 'Conv2D', { ...conv, filters: 3, kernel_size: [3, 3], strides: [2, 2], padding: 'valid', use_bias: true }, ['pad']),
    layer('bn1', 'BatchNormalization', bn, ['c1']),
    layer('r1', 'ReLU', { max_value: 6, negative_slope: 0, threshold: 0 }, ['bn1']),
    layer('dw', 'DepthwiseConv2D', { ...conv, kernel_size: [3, 3], strides: [1, 1], padding: 'same', use_bias: false, depth_multiplier: 2 }, ['r1']),
    layer('c2', 'Conv2D', { ...conv, activation: 'relu', filters: 3, kernel_size: [1, 1], strides: [1, 1], padding: 'same', use_bias: true }, ['dw']),
    layer('add', 'Add', {}, ['r1', 'c2']),
    layer('bn2', 'BatchNormalization', bn, ['add']),
    layer('ap', 'AveragePooling2D', { pool_size: [2, 2], strides: [1, 1], padding: 'same', data_format: 'channels_last' }, ['bn2']),
    layer('fl', 'Flatten', { data_format: 'channels_last' }, ['ap']),
    layer('drop', 'Dropout', { rate: 0.5 }, ['fl']),
    layer('d', 'Dense', { units: 4, activation: 'softmax', use_bias: true }, ['drop']),
  ];
  const shapes: Array<[string, number[]]> = [
    ['c1/kernel', [3, 3, 2, 3]],
    ['c1/bias', [3]],
    ['bn1/gamma', [3]],
    ['bn1/beta', [3]],
    ['bn1/moving_mean', [3]],
    ['bn1/moving_variance', [3]],
    ['dw/depthwise_kernel', [3, 3, 3, 2]],
    ['c2/kernel', [1, 1, 6, 3]],
    ['c2/bias', [3]],
    ['bn2/gamma', [3]],
    ['bn2/beta', [3]],
    ['bn2/moving_mean', [3]],
    ['bn2/moving_variance', [3]],
    ['d/kernel', [27, 4]],
    ['d/bias', [4]],
  ];
  const specs: KerasWeightSpec[] = [];
  const bytes: number[] = [];
  for (const [name, shape] of shapes) {
    const positive = name.includes('variance') || name.includes('gamma');
    const min = positive ? 0.5 : -1;
    const scale = positive ? 1 / 255 : 2 / 255;
    specs.push({ name, shape, dtype: 'float32', quantization: { min, scale, dtype: 'uint8' } });
    const count = shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < count; i++) bytes.push(Math.floor(((random() + 1) / 2) * 255.99));
  }
  return {
    modelTopology: { model_config: { class_name: 'Model', config: { layers, input_layers: [['in', 0, 0]], output_layers: [['d', 0, 0]] } as never } },
    weightsManifest: [{ paths: ['shard'], weights: specs }],
    weightData: new Uint8Array(bytes).buffer,
  };
}

let artifacts: KerasModelArtifacts;
let input: Float32Array;
const N = 3;

beforeAll(async () => {
  await tf.setBackend('cpu');
  artifacts = syntheticModel();
  input = Float32Array.from({ length: N * 6 * 6 * 2 }, () => (random() + 1) / 2);
});

async function reference(features: Array<{ layer: string; weight: number }>, thumb: boolean): Promise<Float32Array> {
  const model = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: { ...artifacts.modelTopology, keras_version: '2.2.4', backend: 'tensorflow' } as never,
      weightSpecs: artifacts.weightsManifest[0]!.weights as never,
      weightData: artifacts.weightData,
    }),
  );
  const sub = tf.model({ inputs: model.inputs, outputs: features.map((f) => model.getLayer(f.layer).output as tf.SymbolicTensor) });
  return tf.tidy(() => {
    const x = tf.tensor4d(input, [N, 6, 6, 2]);
    const raw = sub.predict(x);
    const outs = Array.isArray(raw) ? raw : [raw];
    const l2 = (t: tf.Tensor) => t.div(t.norm('euclidean', 1, true).maximum(1e-12));
    const parts = outs.map((o, i) => l2(o.rank === 4 ? o.mean([1, 2]) : o).mul(features[i]!.weight));
    if (thumb) {
      let t = tf.avgPool(x, 3, 3, 'valid').transpose([0, 3, 1, 2]).reshape([N, -1]);
      t = t.sub(t.mean(1, true));
      parts.push(l2(t).mul(0.7));
    }
    return l2(tf.concat(parts, 1)).dataSync() as Float32Array;
  });
}

async function converted(features: Array<{ layer: string; weight: number }>, thumb: boolean): Promise<Float32Array> {
  const m = kerasToOnnx(artifacts, { features, thumbnail: thumb ? { size: 2, colour: 'rgb', centre: true, weight: 0.7 } : undefined });
  const session = await ort.InferenceSession.create(m.bytes);
  const out = await session.run({ [m.inputName]: new ort.Tensor('float32', input, [N, 6, 6, 2]) });
  expect(out[m.outputNames[0]!]!.dims).toEqual([N, m.outputDimensions[0]]);
  return out[m.outputNames[0]!]!.data as Float32Array;
}

describe('kerasToOnnx', () => {
  it('matches tfjs on a model with every supported layer class, weighted and with a thumbnail', async () => {
    const features = [
      { layer: 'bn1', weight: 1 },
      { layer: 'bn2', weight: 0.5 },
      { layer: 'fl', weight: 1.5 },
      { layer: 'd', weight: 2 },
    ];
    const [want, got] = [await reference(features, true), await converted(features, true)];
    expect(got.length).toBe(want.length);
    const diff = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i]!)));
    expect(diff).toBeLessThan(1e-5);
  });

  it('dequantises uint8 weights as min + q·scale', () => {
    const w = decodeKerasWeights({
      weightsManifest: [{ paths: ['x'], weights: [{ name: 'a', shape: [3], dtype: 'float32', quantization: { min: -1, scale: 0.5, dtype: 'uint8' } }] }],
      weightData: new Uint8Array([0, 2, 5]).buffer,
    });
    expect(Array.from(w.get('a')!)).toEqual([-1, 0, 1.5]);
  });

  it('says what is wrong: unknown layer, unsupported layer class, bad thumbnail size, short weight data', () => {
    expect(() => kerasToOnnx(artifacts, { features: [{ layer: 'nope' }] })).toThrow(/feature layer "nope" is not in the model/);
    const withLstm = structuredClone(artifacts);
    withLstm.weightData = artifacts.weightData;
    withLstm.modelTopology.model_config!.config.layers.push(layer('lstm', 'LSTM', {}, ['fl']));
    expect(() => kerasToOnnx(withLstm, { features: [{ layer: 'lstm' }] })).toThrow(/Keras layer class LSTM is not supported/);
    expect(() => kerasToOnnx(artifacts, { features: [], thumbnail: { size: 4, colour: 'grey', centre: false, weight: 1 } })).toThrow(/must divide/);
    expect(() => kerasToOnnx({ ...artifacts, weightData: artifacts.weightData.slice(0, 10) }, { features: [{ layer: 'd' }] })).toThrow(/weight data ends/);
  });
});

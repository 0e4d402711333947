import { ParseError } from '../../errors.js';
import { OnnxDataType, type GraphTensor, type OnnxGraphBuilder } from '../onnx/graph-builder.js';
import type { KerasWeights } from './tfjs-weights.js';
import type { KerasLayer, KerasTopology } from './topology.js';

/** Layer classes that can absorb the ZeroPadding2D before them into their own pads. */
const FOLDABLE_INTO_CONV = new Set(['Conv2D', 'DepthwiseConv2D']);

export interface ImageInput {
  /** Name of the graph input. */
  name: string;
  /** Take raw 0–255 RGB as uint8, Cast and × scale inside the graph. */
  uint8Input?: { scale: number };
}

/**
 * Translates Keras layers into ONNX nodes, on demand and once each: asking for a layer translates
 * what it reads first, so only what leads to the requested layers enters the graph. Tensors are
 * NCHW (or [N,C] after Flatten/Dense); N is -1.
 *
 * Folding keeps the graph small and fast: a BatchNormalization that is the only reader of a linear
 * conv is folded into the conv's weights, a ZeroPadding2D read only by a conv into the conv's pads,
 * and ReLU(max_value) becomes Clip.
 */
export class KerasLayerTranslator {
  private readonly done = new Map<string, GraphTensor>();
  private imageShape: [number, number, number] | undefined;
  private nchwImage: GraphTensor | undefined;

  constructor(
    private readonly topology: KerasTopology,
    private readonly weights: KerasWeights,
    private readonly graph: OnnxGraphBuilder,
    private readonly image: ImageInput,
  ) {}

  /** [height, width, channels] of one input image, once the InputLayer has been translated. */
  get inputShape(): [number, number, number] | undefined {
    return this.imageShape;
  }

  /** The output of a layer, translating it (and what it reads) on first use. */
  tensorOf(layerName: string): GraphTensor {
    const cached = this.done.get(layerName);
    if (cached) return cached;
    const tensor = this.translate(this.topology.layer(layerName));
    this.done.set(layerName, tensor);
    return tensor;
  }

  /** The input image as NCHW, translating the InputLayer if no layer has reached it yet. */
  nchwInput(): GraphTensor {
    if (!this.nchwImage) this.tensorOf(this.topology.inputLayerName());
    return this.nchwImage!;
  }

  private translate(layer: KerasLayer): GraphTensor {
    const cfg = layer.config;
    switch (layer.class_name) {
      case 'InputLayer':
        return this.input(layer);
      case 'ZeroPadding2D':
        return this.zeroPadding(layer);
      case 'Conv2D':
      case 'DepthwiseConv2D':
        return this.conv(layer);
      case 'BatchNormalization':
        return this.batchNorm(layer);
      case 'ReLU':
        return this.relu(layer);
      case 'Activation':
        return this.activation(this.single(layer), String(cfg.activation), layer.name);
      case 'Add': {
        const inputs = this.topology.inboundNames(layer).map((n) => this.tensorOf(n));
        return this.graph.tensor(
          'Sum',
          inputs.map((t) => t.name),
          inputs[0]!.shape,
          {},
          layer.name,
        );
      }
      case 'AveragePooling2D':
        return this.averagePooling(layer);
      case 'GlobalAveragePooling2D':
        return this.graph.globalAveragePool(this.single(layer), layer.name);
      case 'Flatten':
        return this.flatten(layer);
      case 'Dense':
        return this.dense(layer);
      case 'Dropout':
        return this.single(layer);
      default:
        throw unsupported(layer.name, `layer ${layer.name}: Keras layer class ${layer.class_name} is not supported`);
    }
  }

  private input(layer: KerasLayer): GraphTensor {
    const shape = layer.config.batch_input_shape as Array<number | null> | undefined;
    if (!shape || shape.length !== 4 || shape.slice(1).some((d) => typeof d !== 'number')) {
      throw unsupported(layer.name, `input ${layer.name}: expected batch_input_shape [null,H,W,C], got ${JSON.stringify(shape)}`);
    }
    if (this.nchwImage) throw unsupported(layer.name, 'models with more than one input are not supported');
    const [h, w, c] = shape.slice(1) as [number, number, number];
    this.imageShape = [h, w, c];
    const { uint8Input } = this.image;
    this.graph.input(this.image.name, ['batch', h, w, c], uint8Input ? OnnxDataType.UINT8 : OnnxDataType.FLOAT);
    let pixels = this.image.name;
    if (uint8Input) {
      const cast = this.graph.node('Cast', [pixels], { to: OnnxDataType.FLOAT }, `${layer.name}_float`);
      pixels = this.graph.node('Mul', [cast, this.graph.scalar(uint8Input.scale)], {}, `${layer.name}_scaled`);
    }
    // Images arrive NHWC (as sharp writes them); ONNX convolutions want NCHW: transpose once.
    this.nchwImage = this.graph.tensor('Transpose', [pixels], [-1, c, h, w], { perm: [0, 3, 1, 2] }, `${layer.name}_nchw`);
    return this.nchwImage;
  }

  private zeroPadding(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    const [[top, bottom], [left, right]] = paddingOf(layer);
    const [n, c, h, w] = input.shape as [number, number, number, number];
    const pads = [0, 0, top, left, 0, 0, bottom, right];
    return this.graph.tensor('Pad', [input.name, this.graph.int64s(pads)], [n, c, h + top + bottom, w + left + right], { mode: 'constant' }, layer.name);
  }

  private conv(layer: KerasLayer): GraphTensor {
    const cfg = layer.config;
    const depthwise = layer.class_name === 'DepthwiseConv2D';
    if (cfg.data_format && cfg.data_format !== 'channels_last') throw unsupported(layer.name, `${layer.name}: only channels_last is supported`);
    let [inbound] = this.topology.inboundNames(layer);
    let extraPads = [0, 0, 0, 0]; // top, left, bottom, right
    const padLayer = this.topology.find(inbound!);
    if (padLayer?.class_name === 'ZeroPadding2D' && this.onlyReader(padLayer.name, layer.name)) {
      const [[top, bottom], [left, right]] = paddingOf(padLayer);
      extraPads = [top, left, bottom, right];
      inbound = this.topology.inboundNames(padLayer)[0];
    }
    const input = this.tensorOf(inbound!);
    const [, inC, inH, inW] = input.shape as [number, number, number, number];
    const kernel = this.weights.get(layer.name, depthwise ? 'depthwise_kernel' : 'kernel');
    const [kh, kw] = cfg.kernel_size as [number, number];
    const [sh, sw] = cfg.strides as [number, number];
    const [dh, dw] = (cfg.dilation_rate as [number, number] | undefined) ?? [1, 1];
    const multiplier = depthwise ? ((cfg.depth_multiplier as number | undefined) ?? 1) : 1;
    const outC = depthwise ? inC * multiplier : (cfg.filters as number);
    const weight = onnxConvWeight(kernel, { kh, kw, inC, outC, depthwise, multiplier });
    const bias = new Float64Array(outC);
    if (cfg.use_bias) this.weights.get(layer.name, 'bias').forEach((b, i) => (bias[i] = b));

    const paddedH = inH + extraPads[0]! + extraPads[2]!;
    const paddedW = inW + extraPads[1]! + extraPads[3]!;
    const [padTop, padBottom, outH] = convPadding(cfg.padding as string, paddedH, kh, sh, dh, layer.name);
    const [padLeft, padRight, outW] = convPadding(cfg.padding as string, paddedW, kw, sw, dw, layer.name);
    const pads = [padTop + extraPads[0]!, padLeft + extraPads[1]!, padBottom + extraPads[2]!, padRight + extraPads[3]!];

    // Fold the BatchNormalization that alone reads this conv: w' = w·s, b' = (b − mean)·s + beta.
    const activation = (cfg.activation as string | undefined) ?? 'linear';
    let name = layer.name;
    const readers = this.topology.readersOf(layer.name);
    const bnLayer = readers.length === 1 ? this.topology.find(readers[0]!) : undefined;
    if (bnLayer?.class_name === 'BatchNormalization' && activation === 'linear') {
      const { scale, shift } = this.batchNormAffine(bnLayer, outC);
      const perOut = weight.length / outC;
      for (let co = 0; co < outC; co++) {
        for (let i = 0; i < perOut; i++) weight[co * perOut + i]! *= scale[co]!;
        bias[co] = bias[co]! * scale[co]! + shift[co]!;
      }
      name = bnLayer.name;
    }
    const out = this.graph.tensor(
      'Conv',
      [input.name, this.graph.floats(weight, [outC, depthwise ? 1 : inC, kh, kw]), this.graph.floats(bias, [outC])],
      [-1, outC, outH, outW],
      { kernel_shape: [kh, kw], strides: [sh, sw], dilations: [dh, dw], pads, group: depthwise ? inC : 1 },
      name,
    );
    if (name !== layer.name) {
      this.done.set(bnLayer!.name, out);
      return out; // the conv's own (pre-BN) output is read by nobody else
    }
    return this.activation(out, activation, `${layer.name}_act`);
  }

  /** BatchNormalization as y = x·scale + shift per channel. */
  private batchNormAffine(layer: KerasLayer, channels: number): { scale: Float64Array; shift: Float64Array } {
    const cfg = layer.config;
    const axis = (cfg.axis as number | number[] | undefined) ?? -1;
    if (!(axis === -1 || axis === 3 || (Array.isArray(axis) && axis.length === 1 && (axis[0] === -1 || axis[0] === 3)))) {
      throw unsupported(layer.name, `${layer.name}: BatchNormalization over axis ${JSON.stringify(axis)} is not supported`);
    }
    const eps = (cfg.epsilon as number | undefined) ?? 1e-3;
    const gamma = cfg.scale === false ? new Float32Array(channels).fill(1) : this.weights.get(layer.name, 'gamma');
    const beta = cfg.center === false ? new Float32Array(channels) : this.weights.get(layer.name, 'beta');
    const mean = this.weights.get(layer.name, 'moving_mean');
    const variance = this.weights.get(layer.name, 'moving_variance');
    const scale = new Float64Array(channels);
    const shift = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      scale[c] = gamma[c]! / Math.sqrt(variance[c]! + eps);
      shift[c] = beta[c]! - mean[c]! * scale[c]!;
    }
    return { scale, shift };
  }

  private batchNorm(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    // Translating the conv before it may have folded this BN into it already.
    const folded = this.done.get(layer.name);
    if (folded) return folded;
    const channels = input.shape[1]!;
    const { scale, shift } = this.batchNormAffine(layer, channels);
    const broadcast = input.shape.length === 4 ? [channels, 1, 1] : [channels];
    const scaled = this.graph.node('Mul', [input.name, this.graph.floats(scale, broadcast)]);
    return this.graph.tensor('Add', [scaled, this.graph.floats(shift, broadcast)], input.shape, {}, layer.name);
  }

  private relu(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    const cfg = layer.config;
    const maxValue = cfg.max_value as number | null | undefined;
    if (((cfg.negative_slope as number | undefined) ?? 0) !== 0 || ((cfg.threshold as number | undefined) ?? 0) !== 0) {
      throw unsupported(layer.name, `${layer.name}: ReLU with negative_slope/threshold is not supported`);
    }
    if (maxValue === null || maxValue === undefined) return this.graph.tensor('Relu', [input.name], input.shape, {}, layer.name);
    return this.graph.tensor('Clip', [input.name, this.graph.scalar(0), this.graph.scalar(maxValue)], input.shape, {}, layer.name);
  }

  /** A Keras `activation` (of an Activation, Conv or Dense layer); `name` is the node's output. */
  private activation(input: GraphTensor, activation: string, name: string): GraphTensor {
    const g = this.graph;
    switch (activation) {
      case 'linear':
        return input;
      case 'relu':
        return g.tensor('Relu', [input.name], input.shape, {}, name);
      case 'relu6':
        return g.tensor('Clip', [input.name, g.scalar(0), g.scalar(6)], input.shape, {}, name);
      case 'sigmoid':
        return g.tensor('Sigmoid', [input.name], input.shape, {}, name);
      case 'tanh':
        return g.tensor('Tanh', [input.name], input.shape, {}, name);
      case 'softmax':
        return g.tensor('Softmax', [input.name], input.shape, { axis: -1 }, name);
      default:
        throw unsupported(name, `activation ${activation} (${name}) is not supported`);
    }
  }

  private averagePooling(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    const cfg = layer.config;
    const [kh, kw] = cfg.pool_size as [number, number];
    const [sh, sw] = (cfg.strides as [number, number] | null) ?? [kh, kw];
    const [, c, h, w] = input.shape as [number, number, number, number];
    const [pt, pb, oh] = convPadding(cfg.padding as string, h, kh, sh, 1, layer.name);
    const [pl, pr, ow] = convPadding(cfg.padding as string, w, kw, sw, 1, layer.name);
    // count_include_pad = 0 matches Keras 'same' average pooling (padding not counted).
    return this.graph.tensor('AveragePool', [input.name], [-1, c, oh, ow], { kernel_shape: [kh, kw], strides: [sh, sw], pads: [pt, pl, pb, pr] }, layer.name);
  }

  private flatten(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    if (input.shape.length === 2) return input;
    const [, c, h, w] = input.shape as [number, number, number, number];
    // Keras flattens channels_last (H, W, C order): transpose back unless the map is 1×1.
    const source = h === 1 && w === 1 ? input.name : this.graph.node('Transpose', [input.name], { perm: [0, 2, 3, 1] });
    return this.graph.tensor('Flatten', [source], [-1, c * h * w], { axis: 1 }, layer.name);
  }

  private dense(layer: KerasLayer): GraphTensor {
    const input = this.single(layer);
    if (input.shape.length !== 2) throw unsupported(layer.name, `${layer.name}: Dense on a rank-${input.shape.length} tensor is not supported`);
    const units = layer.config.units as number;
    const kernel = this.weights.get(layer.name, 'kernel');
    let out = this.graph.tensor('MatMul', [input.name, this.graph.floats(kernel, [input.shape[1]!, units])], [-1, units]);
    if (layer.config.use_bias) {
      out = this.graph.tensor('Add', [out.name, this.graph.floats(this.weights.get(layer.name, 'bias'), [units])], [-1, units]);
    }
    return this.activation(out, String(layer.config.activation ?? 'linear'), layer.name);
  }

  private single(layer: KerasLayer): GraphTensor {
    const inbound = this.topology.inboundNames(layer);
    if (inbound.length !== 1) throw unsupported(layer.name, `layer ${layer.name} expects one input, has ${inbound.length}`);
    return this.tensorOf(inbound[0]!);
  }

  /** Whether `reader` alone reads `layerName` and can absorb it (a conv taking a padding's pads). */
  private onlyReader(layerName: string, reader: string): boolean {
    const readers = this.topology.readersOf(layerName);
    return readers.length === 1 && readers[0] === reader && FOLDABLE_INTO_CONV.has(this.topology.layer(reader).class_name);
  }
}

/** The model uses something the converter does not translate; `layer` names where. */
function unsupported(layer: string, message: string): ParseError {
  return new ParseError(message, { meta: { layer } });
}

/**
 * Keras kernel [kh,kw,in,out] (depthwise: [kh,kw,in,mult]) → ONNX [out, in/group, kh, kw], in
 * float64 so folding a BatchNormalization into it rounds once.
 */
function onnxConvWeight(
  kernel: Float32Array,
  { kh, kw, inC, outC, depthwise, multiplier }: { kh: number; kw: number; inC: number; outC: number; depthwise: boolean; multiplier: number },
): Float64Array {
  const weight = new Float64Array(outC * (depthwise ? 1 : inC) * kh * kw);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      if (depthwise) {
        for (let ci = 0; ci < inC; ci++) {
          for (let m = 0; m < multiplier; m++) {
            weight[((ci * multiplier + m) * kh + y) * kw + x] = kernel[((y * kw + x) * inC + ci) * multiplier + m]!;
          }
        }
      } else {
        for (let ci = 0; ci < inC; ci++) {
          for (let co = 0; co < outC; co++) {
            weight[((co * inC + ci) * kh + y) * kw + x] = kernel[((y * kw + x) * inC + ci) * outC + co]!;
          }
        }
      }
    }
  }
  return weight;
}

function paddingOf(layer: KerasLayer): [[number, number], [number, number]] {
  const padding = layer.config.padding as number | [number, number] | [[number, number], [number, number]];
  if (typeof padding === 'number')
    return [
      [padding, padding],
      [padding, padding],
    ];
  const [a, b] = padding;
  if (typeof a === 'number' && typeof b === 'number')
    return [
      [a, a],
      [b, b],
    ];
  return padding as [[number, number], [number, number]];
}

/** TensorFlow's 'valid' / 'same' padding: [before, after, output size]. 'same' puts the extra pixel after. */
function convPadding(mode: string, size: number, kernel: number, stride: number, dilation: number, layer: string): [number, number, number] {
  const effective = (kernel - 1) * dilation + 1;
  if (mode === 'valid') return [0, 0, Math.floor((size - effective) / stride) + 1];
  if (mode !== 'same') throw unsupported(layer, `padding mode ${mode} is not supported`);
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + effective - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2), out];
}

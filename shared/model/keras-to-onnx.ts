import onnxProto from 'onnx-proto';

/**
 * Converts a Keras functional model (the JSON topology + weight manifest that tfjs uses) into an
 * ONNX ModelProto that onnxruntime loads from bytes, keeping only what leads to the requested
 * feature layers. The result is an embedding model:
 *
 *   input [N,H,W,3] (NHWC, what the preprocessor writes) → one Transpose to NCHW → the backbone
 *   → for each feature layer: global average pool, L2-normalise, × weight
 *   → optional "thumbnail" branch computed from the input itself (average-pooled pixels)
 *   → concatenate → L2-normalise → output [N,D].
 *
 * Folding keeps the graph small and fast: BatchNormalization is folded into the conv before it,
 * ZeroPadding2D into the conv's pads, ReLU(max_value) becomes Clip. Layer names are parameters, so
 * any Keras CNN made of the supported layer classes converts the same way.
 */
const { onnx } = onnxProto;

export const KERAS_TO_ONNX_CONVERTER_VERSION = 1;
export const ONNX_OPSET = 17;

export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: Array<Array<[string, number, number, unknown?]>>;
}

export interface KerasWeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { min?: number; scale?: number; dtype: 'uint8' | 'uint16' | 'float16' };
}

export interface KerasModelArtifacts {
  modelTopology: {
    model_config?: { class_name: string; config: { layers: KerasLayer[] } };
    config?: { layers: KerasLayer[] };
  };
  weightsManifest: Array<{ paths: string[]; weights: KerasWeightSpec[] }>;
  weightData: ArrayBuffer;
}

export interface FeatureLayer {
  /** Keras layer name, e.g. `block_12_add` or `out_relu`. */
  layer: string;
  /** Multiplies the layer's L2-normalised pooled vector before concatenation (default 1). */
  weight?: number;
}

/** Pixels of the input itself, average-pooled to size×size: what raw-pixel retrieval sees. */
export interface ThumbnailBranch {
  /** Side of the thumbnail; must divide the input's width and height. */
  size: number;
  colour: 'grey' | 'rgb';
  /** Subtract the thumbnail's own mean before normalising (brightness-invariant). */
  centre: boolean;
  weight: number;
}

export interface KerasToOnnxOptions {
  features: FeatureLayer[];
  thumbnail?: ThumbnailBranch;
  inputName?: string;
  outputName?: string;
  /**
   * Take raw 0–255 RGB as uint8 and scale it inside the graph (Cast, then × scale): a quarter of
   * the bytes to fill and move per image, and no normalisation pass in JavaScript.
   */
  uint8Input?: { scale: number };
  /**
   * For measuring: one output per feature (pooled, L2-normalised, unweighted, named by
   * {@link separateOutputName}) plus the thumbnail when set, instead of the single concatenated output.
   */
  separateOutputs?: boolean;
  /** Recorded in the model's doc string. */
  docString?: string;
}

export interface ConvertedModel {
  bytes: Uint8Array;
  inputName: string;
  /** The concatenated output, or one name per feature (+ `thumbnail`) with `separateOutputs`. */
  outputNames: string[];
  /** Dimension of each output, in `outputNames` order. */
  outputDimensions: number[];
  /** [height, width, channels] of one input image. */
  inputShape: [number, number, number];
}

type Shape = number[]; // NCHW (or [N,C] after flatten/dense); N is -1.

interface Tensor {
  name: string;
  shape: Shape;
}

const L2_EPSILON = 1e-12;
const FOLDABLE_INTO_CONV = new Set(['Conv2D', 'DepthwiseConv2D']);

export function kerasToOnnx(artifacts: KerasModelArtifacts, options: KerasToOnnxOptions): ConvertedModel {
  if (options.features.length === 0 && !options.thumbnail) {
    throw new Error('kerasToOnnx: at least one feature layer or a thumbnail branch is required');
  }
  return new Converter(artifacts, options).convert();
}

/** Dequantises the weight shard(s): q → min + q*scale for uint8/uint16, float32 as is. */
export function decodeKerasWeights(artifacts: Pick<KerasModelArtifacts, 'weightsManifest' | 'weightData'>): Map<string, Float32Array> {
  const bytes = new Uint8Array(artifacts.weightData);
  const weights = new Map<string, Float32Array>();
  let offset = 0;
  for (const group of artifacts.weightsManifest) {
    for (const spec of group.weights) {
      const count = spec.shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(count);
      const q = spec.quantization;
      const width = q ? ({ uint8: 1, uint16: 2, float16: 2 } as const)[q.dtype] : 4;
      if (offset + count * width > bytes.length) {
        throw new Error(`weight data ends before weight ${spec.name} (${bytes.length} bytes)`);
      }
      if (q && (q.dtype === 'uint8' || q.dtype === 'uint16')) {
        const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * width);
        const min = q.min ?? 0;
        const scale = q.scale ?? 1;
        for (let i = 0; i < count; i++) {
          out[i] = min + (width === 1 ? view.getUint8(i) : view.getUint16(2 * i, true)) * scale;
        }
        offset += count * width;
      } else if (!q && spec.dtype === 'float32') {
        const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
        for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
        offset += count * 4;
      } else {
        throw new Error(`weight ${spec.name}: unsupported dtype ${spec.dtype}/${q?.dtype ?? 'none'}`);
      }
      weights.set(spec.name, out);
    }
  }
  if (offset !== bytes.length) {
    throw new Error(`weight manifest describes ${offset} bytes but the data has ${bytes.length}`);
  }
  return weights;
}

class Converter {
  private readonly layers = new Map<string, KerasLayer>();
  private readonly consumers = new Map<string, string[]>();
  private readonly weights: Map<string, Float32Array>;
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly done = new Map<string, Tensor>();
  private readonly inputName: string;
  private inputShape: [number, number, number] | undefined;
  private nchwInput: Tensor | undefined;
  private counter = 0;

  constructor(
    artifacts: KerasModelArtifacts,
    private readonly options: KerasToOnnxOptions,
  ) {
    const layers = artifacts.modelTopology.model_config?.config.layers ?? artifacts.modelTopology.config?.layers;
    if (!layers) throw new Error('Keras topology has no model_config.config.layers');
    for (const layer of layers) {
      this.layers.set(layer.name, layer);
      for (const inbound of this.inboundNames(layer)) {
        this.consumers.set(inbound, [...(this.consumers.get(inbound) ?? []), layer.name]);
      }
    }
    // A requested feature layer is read by the output too, so it is never folded away.
    for (const feature of options.features) {
      if (!this.layers.has(feature.layer)) {
        throw new Error(`feature layer "${feature.layer}" is not in the model`);
      }
      this.consumers.set(feature.layer, [...(this.consumers.get(feature.layer) ?? []), '<output>']);
    }
    this.weights = decodeKerasWeights(artifacts);
    this.inputName = options.inputName ?? 'pixels';
  }

  convert(): ConvertedModel {
    const branches: Array<{ name: string; tensor: Tensor; weight: number }> = [];
    for (const feature of this.options.features) {
      const pooled = this.l2Normalise(this.globalPool(this.tensorOf(feature.layer)));
      branches.push({ name: feature.layer, tensor: pooled, weight: feature.weight ?? 1 });
    }
    if (this.options.thumbnail) {
      branches.push({ name: 'thumbnail', tensor: this.thumbnail(this.options.thumbnail), weight: this.options.thumbnail.weight });
    }
    let outputs: Tensor[];
    if (this.options.separateOutputs) {
      outputs = branches.map((b) => this.node('Identity', [b.tensor.name], b.tensor.shape, {}, separateOutputName(b.name)));
    } else {
      const weighted = branches.map((b) =>
        b.weight === 1 ? b.tensor : this.node('Mul', [b.tensor.name, this.scalar(b.weight)], b.tensor.shape),
      );
      const dimension = weighted.reduce((sum, t) => sum + t.shape[1]!, 0);
      const concat = weighted.length === 1 ? weighted[0]! : this.node('Concat', weighted.map((t) => t.name), [-1, dimension], { axis: 1 });
      outputs = [this.l2Normalise(concat, this.options.outputName ?? 'embedding')];
    }
    if (!this.inputShape) throw new Error('the model has no InputLayer on the path to the outputs');
    const [h, w, c] = this.inputShape;
    const model = onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: ONNX_OPSET }],
      producerName: 'image-semantic-search keras-to-onnx',
      producerVersion: String(KERAS_TO_ONNX_CONVERTER_VERSION),
      docString: this.options.docString ?? '',
      graph: {
        name: 'embedding',
        node: this.nodes,
        initializer: this.initializers,
        input: [valueInfo(this.inputName, ['batch', h, w, c], this.options.uint8Input ? onnx.TensorProto.DataType.UINT8 : onnx.TensorProto.DataType.FLOAT)],
        output: outputs.map((t) => valueInfo(t.name, ['batch', t.shape[1]!])),
      },
    });
    return {
      bytes: onnx.ModelProto.encode(model).finish(),
      inputName: this.inputName,
      outputNames: outputs.map((t) => t.name),
      outputDimensions: outputs.map((t) => t.shape[1]!),
      inputShape: this.inputShape,
    };
  }

  // ---- layers -------------------------------------------------------------------------------

  private tensorOf(layerName: string): Tensor {
    const cached = this.done.get(layerName);
    if (cached) return cached;
    const layer = this.layers.get(layerName);
    if (!layer) throw new Error(`layer "${layerName}" is not in the model`);
    const tensor = this.convertLayer(layer);
    this.done.set(layerName, tensor);
    return tensor;
  }

  private convertLayer(layer: KerasLayer): Tensor {
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
        const inputs = this.inboundNames(layer).map((n) => this.tensorOf(n));
        return this.node('Sum', inputs.map((t) => t.name), inputs[0]!.shape, {}, layer.name);
      }
      case 'AveragePooling2D':
        return this.averagePooling(layer);
      case 'GlobalAveragePooling2D':
        return this.globalPool(this.single(layer), layer.name);
      case 'Flatten':
        return this.flatten(layer);
      case 'Dense':
        return this.dense(layer);
      case 'Dropout':
        return this.single(layer);
      default:
        throw new Error(`layer ${layer.name}: Keras layer class ${layer.class_name} is not supported`);
    }
  }

  private input(layer: KerasLayer): Tensor {
    const shape = layer.config.batch_input_shape as Array<number | null> | undefined;
    if (!shape || shape.length !== 4 || shape.slice(1).some((d) => typeof d !== 'number')) {
      throw new Error(`input ${layer.name}: expected batch_input_shape [null,H,W,C], got ${JSON.stringify(shape)}`);
    }
    if (this.nchwInput) throw new Error('models with more than one input are not supported');
    const [h, w, c] = shape.slice(1) as [number, number, number];
    this.inputShape = [h, w, c];
    let pixels = this.inputName;
    if (this.options.uint8Input) {
      const cast = this.node('Cast', [pixels], [-1, h, w, c], { to: onnx.TensorProto.DataType.FLOAT }, `${layer.name}_float`);
      pixels = this.node('Mul', [cast.name, this.scalar(this.options.uint8Input.scale)], [-1, h, w, c], {}, `${layer.name}_scaled`).name;
    }
    // Images arrive NHWC (as sharp writes them); ONNX convolutions want NCHW: transpose once.
    this.nchwInput = this.node('Transpose', [pixels], [-1, c, h, w], { perm: [0, 3, 1, 2] }, `${layer.name}_nchw`);
    return this.nchwInput;
  }

  private zeroPadding(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    const [[top, bottom], [left, right]] = paddingOf(layer);
    const [n, c, h, w] = input.shape as [number, number, number, number];
    const pads = [0, 0, top, left, 0, 0, bottom, right];
    return this.node('Pad', [input.name, this.int64s(pads)], [n, c, h + top + bottom, w + left + right], { mode: 'constant' }, layer.name);
  }

  private conv(layer: KerasLayer): Tensor {
    const cfg = layer.config;
    const depthwise = layer.class_name === 'DepthwiseConv2D';
    if (cfg.data_format && cfg.data_format !== 'channels_last') throw new Error(`${layer.name}: only channels_last is supported`);
    let [inbound] = this.inboundNames(layer);
    let extraPads = [0, 0, 0, 0]; // top, left, bottom, right
    const padLayer = this.layers.get(inbound!);
    if (padLayer?.class_name === 'ZeroPadding2D' && this.onlyConsumer(padLayer.name, layer.name)) {
      const [[top, bottom], [left, right]] = paddingOf(padLayer);
      extraPads = [top, left, bottom, right];
      inbound = this.inboundNames(padLayer)[0];
    }
    const input = this.tensorOf(inbound!);
    const [, inC, inH, inW] = input.shape as [number, number, number, number];
    const kernel = this.weight(layer.name, depthwise ? 'depthwise_kernel' : 'kernel');
    const [kh, kw] = cfg.kernel_size as [number, number];
    const [sh, sw] = cfg.strides as [number, number];
    const [dh, dw] = (cfg.dilation_rate as [number, number] | undefined) ?? [1, 1];
    const multiplier = depthwise ? ((cfg.depth_multiplier as number | undefined) ?? 1) : 1;
    const outC = depthwise ? inC * multiplier : (cfg.filters as number);
    // Keras kernel [kh,kw,in,out] (depthwise: [kh,kw,in,mult]) → ONNX [out, in/group, kh, kw].
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
    const bias = new Float64Array(outC);
    if (cfg.use_bias) this.weight(layer.name, 'bias').forEach((b, i) => (bias[i] = b));

    const paddedH = inH + extraPads[0]! + extraPads[2]!;
    const paddedW = inW + extraPads[1]! + extraPads[3]!;
    const [padTop, padBottom, outH] = convPadding(cfg.padding as string, paddedH, kh, sh, dh);
    const [padLeft, padRight, outW] = convPadding(cfg.padding as string, paddedW, kw, sw, dw);
    const pads = [padTop + extraPads[0]!, padLeft + extraPads[1]!, padBottom + extraPads[2]!, padRight + extraPads[3]!];

    // Fold the BatchNormalization that alone reads this conv: w' = w·s, b' = (b − mean)·s + beta.
    const activation = (cfg.activation as string | undefined) ?? 'linear';
    let name = layer.name;
    const consumers = this.consumers.get(layer.name) ?? [];
    const bnLayer = consumers.length === 1 ? this.layers.get(consumers[0]!) : undefined;
    if (bnLayer?.class_name === 'BatchNormalization' && activation === 'linear') {
      const { scale, shift } = this.batchNormAffine(bnLayer, outC);
      const perOut = weight.length / outC;
      for (let co = 0; co < outC; co++) {
        for (let i = 0; i < perOut; i++) weight[co * perOut + i]! *= scale[co]!;
        bias[co] = bias[co]! * scale[co]! + shift[co]!;
      }
      name = bnLayer.name;
    }
    const out = this.node(
      'Conv',
      [input.name, this.floats(weight, [outC, depthwise ? 1 : inC, kh, kw]), this.floats(bias, [outC])],
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
      throw new Error(`${layer.name}: BatchNormalization over axis ${JSON.stringify(axis)} is not supported`);
    }
    const eps = (cfg.epsilon as number | undefined) ?? 1e-3;
    const gamma = cfg.scale === false ? new Float32Array(channels).fill(1) : this.weight(layer.name, 'gamma');
    const beta = cfg.center === false ? new Float32Array(channels) : this.weight(layer.name, 'beta');
    const mean = this.weight(layer.name, 'moving_mean');
    const variance = this.weight(layer.name, 'moving_variance');
    const scale = new Float64Array(channels);
    const shift = new Float64Array(channels);
    for (let c = 0; c < channels; c++) {
      scale[c] = gamma[c]! / Math.sqrt(variance[c]! + eps);
      shift[c] = beta[c]! - mean[c]! * scale[c]!;
    }
    return { scale, shift };
  }

  private batchNorm(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    // Converting the conv before it may have folded this BN into it already.
    const folded = this.done.get(layer.name);
    if (folded) return folded;
    const channels = input.shape[1]!;
    const { scale, shift } = this.batchNormAffine(layer, channels);
    const broadcast = input.shape.length === 4 ? [channels, 1, 1] : [channels];
    const scaled = this.node('Mul', [input.name, this.floats(scale, broadcast)], input.shape);
    return this.node('Add', [scaled.name, this.floats(shift, broadcast)], input.shape, {}, layer.name);
  }

  private relu(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    const cfg = layer.config;
    const maxValue = cfg.max_value as number | null | undefined;
    if (((cfg.negative_slope as number | undefined) ?? 0) !== 0 || ((cfg.threshold as number | undefined) ?? 0) !== 0) {
      throw new Error(`${layer.name}: ReLU with negative_slope/threshold is not supported`);
    }
    if (maxValue === null || maxValue === undefined) return this.node('Relu', [input.name], input.shape, {}, layer.name);
    return this.node('Clip', [input.name, this.scalar(0), this.scalar(maxValue)], input.shape, {}, layer.name);
  }

  private activation(input: Tensor, activation: string, name: string): Tensor {
    switch (activation) {
      case 'linear':
        return input;
      case 'relu':
        return this.node('Relu', [input.name], input.shape, {}, name);
      case 'relu6':
        return this.node('Clip', [input.name, this.scalar(0), this.scalar(6)], input.shape, {}, name);
      case 'sigmoid':
        return this.node('Sigmoid', [input.name], input.shape, {}, name);
      case 'tanh':
        return this.node('Tanh', [input.name], input.shape, {}, name);
      case 'softmax':
        return this.node('Softmax', [input.name], input.shape, { axis: -1 }, name);
      default:
        throw new Error(`activation ${activation} (${name}) is not supported`);
    }
  }

  private averagePooling(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    const cfg = layer.config;
    const [kh, kw] = cfg.pool_size as [number, number];
    const [sh, sw] = (cfg.strides as [number, number] | null) ?? [kh, kw];
    const [, c, h, w] = input.shape as [number, number, number, number];
    const [pt, pb, oh] = convPadding(cfg.padding as string, h, kh, sh, 1);
    const [pl, pr, ow] = convPadding(cfg.padding as string, w, kw, sw, 1);
    // count_include_pad = 0 matches Keras 'same' average pooling (padding not counted).
    return this.node('AveragePool', [input.name], [-1, c, oh, ow], { kernel_shape: [kh, kw], strides: [sh, sw], pads: [pt, pl, pb, pr] }, layer.name);
  }

  private flatten(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    if (input.shape.length === 2) return input;
    const [, c, h, w] = input.shape as [number, number, number, number];
    // Keras flattens channels_last (H, W, C order): transpose back unless the map is 1×1.
    const source = h === 1 && w === 1 ? input : this.node('Transpose', [input.name], [-1, h, w, c], { perm: [0, 2, 3, 1] });
    return this.node('Flatten', [source.name], [-1, c * h * w], { axis: 1 }, layer.name);
  }

  private dense(layer: KerasLayer): Tensor {
    const input = this.single(layer);
    if (input.shape.length !== 2) throw new Error(`${layer.name}: Dense on a rank-${input.shape.length} tensor is not supported`);
    const units = layer.config.units as number;
    const kernel = this.weight(layer.name, 'kernel');
    let out = this.node('MatMul', [input.name, this.floats(kernel, [input.shape[1]!, units])], [-1, units]);
    if (layer.config.use_bias) out = this.node('Add', [out.name, this.floats(this.weight(layer.name, 'bias'), [units])], [-1, units]);
    return this.activation(out, String(layer.config.activation ?? 'linear'), layer.name);
  }

  // ---- embedding head -----------------------------------------------------------------------

  private globalPool(input: Tensor, name?: string): Tensor {
    if (input.shape.length === 2) return input;
    const [, c] = input.shape as [number, number];
    const pooled = this.node('GlobalAveragePool', [input.name], [-1, c, 1, 1]);
    return this.node('Flatten', [pooled.name], [-1, c], { axis: 1 }, name);
  }

  private thumbnail(branch: ThumbnailBranch): Tensor {
    if (!this.nchwInput) this.tensorOf(this.findInputLayer());
    const input = this.nchwInput!;
    const [, c, h, w] = input.shape as [number, number, number, number];
    if (!Number.isInteger(branch.size) || branch.size < 1 || h % branch.size !== 0 || w % branch.size !== 0) {
      throw new Error(`thumbnail size ${branch.size} must divide the input size ${w}x${h}`);
    }
    const [kh, kw] = [h / branch.size, w / branch.size];
    let t = this.node('AveragePool', [input.name], [-1, c, branch.size, branch.size], { kernel_shape: [kh, kw], strides: [kh, kw] });
    if (branch.colour === 'grey') t = this.node('ReduceMean', [t.name], [-1, 1, branch.size, branch.size], { axes: [1], keepdims: 1 });
    const dim = t.shape[1]! * branch.size * branch.size;
    t = this.node('Flatten', [t.name], [-1, dim], { axis: 1 });
    if (branch.centre) {
      const mean = this.node('ReduceMean', [t.name], [-1, 1], { axes: [1], keepdims: 1 });
      t = this.node('Sub', [t.name, mean.name], [-1, dim]);
    }
    return this.l2Normalise(t);
  }

  /** x / max(‖x‖, ε): unlike LpNormalization, a zero vector stays zero instead of NaN. */
  private l2Normalise(input: Tensor, name?: string): Tensor {
    const norm = this.node('ReduceL2', [input.name], [-1, 1], { axes: [1], keepdims: 1 });
    const safe = this.node('Max', [norm.name, this.scalar(L2_EPSILON)], [-1, 1]);
    return this.node('Div', [input.name, safe.name], input.shape, {}, name);
  }

  // ---- helpers ------------------------------------------------------------------------------

  private findInputLayer(): string {
    for (const layer of this.layers.values()) if (layer.class_name === 'InputLayer') return layer.name;
    throw new Error('the model has no InputLayer');
  }

  private inboundNames(layer: KerasLayer): string[] {
    if (layer.inbound_nodes.length > 1) throw new Error(`layer ${layer.name} is shared (called more than once): not supported`);
    return (layer.inbound_nodes[0] ?? []).map(([name]) => name);
  }

  private single(layer: KerasLayer): Tensor {
    const inbound = this.inboundNames(layer);
    if (inbound.length !== 1) throw new Error(`layer ${layer.name} expects one input, has ${inbound.length}`);
    return this.tensorOf(inbound[0]!);
  }

  private onlyConsumer(layerName: string, consumer: string): boolean {
    const consumers = this.consumers.get(layerName) ?? [];
    return consumers.length === 1 && consumers[0] === consumer && FOLDABLE_INTO_CONV.has(this.layers.get(consumer)!.class_name);
  }

  private weight(layerName: string, param: string): Float32Array {
    const exact = this.weights.get(`${layerName}/${param}`);
    if (exact) return exact;
    for (const [name, value] of this.weights) if (name.endsWith(`/${layerName}/${param}`)) return value;
    throw new Error(`weight ${layerName}/${param} is missing from the weight manifest`);
  }

  private node(opType: string, inputs: string[], shape: Shape, attributes: Record<string, number | number[] | string> = {}, name?: string): Tensor {
    const output = name ?? `${opType.toLowerCase()}_${this.counter++}`;
    this.nodes.push({
      opType,
      name: output,
      input: inputs,
      output: [output],
      attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
    });
    return { name: output, shape };
  }

  private floats(values: ArrayLike<number>, dims: number[]): string {
    const name = `const_${this.counter++}`;
    const data = Float32Array.from(values as ArrayLike<number>);
    this.initializers.push({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(data.buffer) });
    return name;
  }

  private scalar(value: number): string {
    return this.floats([value], []);
  }

  private int64s(values: number[]): string {
    const name = `const_${this.counter++}`;
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims: [values.length], dataType: onnx.TensorProto.DataType.INT64, rawData: new Uint8Array(data.buffer) });
    return name;
  }
}

/** Name of a branch's output in a `separateOutputs` model: `feature_<layer>` or `feature_thumbnail`. */
export function separateOutputName(branch: string): string {
  return `feature_${branch}`;
}

function paddingOf(layer: KerasLayer): [[number, number], [number, number]] {
  const padding = layer.config.padding as number | [number, number] | [[number, number], [number, number]];
  if (typeof padding === 'number') return [[padding, padding], [padding, padding]];
  const [a, b] = padding;
  if (typeof a === 'number' && typeof b === 'number') return [[a, a], [b, b]];
  return padding as [[number, number], [number, number]];
}

/** TensorFlow's 'valid' / 'same' padding: [before, after, output size]. 'same' puts the extra pixel after. */
function convPadding(mode: string, size: number, kernel: number, stride: number, dilation: number): [number, number, number] {
  const effective = (kernel - 1) * dilation + 1;
  if (mode === 'valid') return [0, 0, Math.floor((size - effective) / stride) + 1];
  if (mode !== 'same') throw new Error(`padding mode ${mode} is not supported`);
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + effective - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2), out];
}

function attribute(name: string, value: number | number[] | string): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  return { name, type: T.INT, i: value };
}

function valueInfo(name: string, dims: Array<number | string>, elemType: number = onnx.TensorProto.DataType.FLOAT): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

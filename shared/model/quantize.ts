import * as ort from 'onnxruntime-node';
import type onnxProto from 'onnx-proto';
import { ConfigError } from '../errors.js';
import { ONNX_OPSET, OnnxDataType, OnnxGraphBuilder } from './onnx/graph-builder.js';

/**
 * Static int8 quantisation of an ONNX image tower in the QDQ format, following onnxruntime's
 * "Quantize ONNX Models" guide (https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
 *
 * - Representation: QDQ ("tensor-oriented"): a QuantizeLinear → DequantizeLinear pair on every
 *   tensor that enters or leaves a Conv, DequantizeLinear on the int8 weights and int32 biases. The
 *   graph stays a float graph that any runtime can run; onnxruntime's CPU execution provider
 *   recognises each `DQ(x), DQ(w), DQ(b) → Conv → Q` unit at graph optimisation and runs it as
 *   one QLinearConv (its QDQ selectors / "QDQ transformer"), `DQ, DQ → Add → Q` as QLinearAdd.
 * - Data types: activations uint8, weights int8 ("U8S8"), the guide's recommended combination on
 *   x86-64 for the CPU EP. Without VNNI, U8S8 can saturate in the int16 intermediate of AVX2's
 *   vpmaddubsw (the guide's "reduce_range" note); this machine has AVX512-VNNI, so full 8-bit
 *   weights are used.
 * - Weights: per-channel (axis 0, one scale per output channel), symmetric (zero point 0,
 *   scale = max|w_c| / 127): the guide's `per_channel=True` with symmetric weights. Per-channel
 *   matters for MobileNet-style depthwise convolutions whose BatchNormalization-folded channels
 *   differ in range by orders of magnitude.
 * - Bias: int32 with scale = x_scale · w_scale[c], zero point 0 (the QLinearConv convention).
 * - Activations: uint8, calibrated on sample images. Method `percentile` (default, as
 *   onnxruntime's `CalibrationMethod.Percentile`, 99.999 %): per tensor, histograms of its positive
 *   values and of |x| of its negative values over every calibration image (2048 bins each, widened
 *   by merging bins when a larger value arrives); the range ends where that share of the values
 *   falls; `minmax` takes the extremes seen. A tensor never negative (after ReLU/ReLU6, the input
 *   pixels) gets [0, p]: zero point 0, scale p/255. A signed one (linear bottleneck outputs,
 *   residual sums) gets the symmetric [−p, p] of |x|: zero point 128, scale p/127 — measured on
 *   Fashion-MNIST against an asymmetric [−p₋, p₊] per side, it keeps the embedding closer to float32
 *   (mean cosine 0.9925 vs 0.9902 on 400 test images).
 * - ReLU6: a Conv read only by a Clip/Relu gets its QDQ pair after the Clip, calibrated there; the
 *   quantised range [0, range ≤ 6] lies within the Clip's, so onnxruntime's ClipQuantFusion /
 *   ReluQuantFusion drop the Clip and fuse Conv + Q.
 * - Residual `Sum` of two inputs is written as `Add` (the same operation) so it fuses into QLinearAdd.
 *
 * Pooling, the thumbnail branch, normalisation and concatenation stay float: they are a small
 * share of the time, and keeping them float keeps the embedding's last steps exact.
 */
export const QUANTIZER_VERSION = 1;

export type CalibrationMethod = 'percentile' | 'minmax';

export interface QuantizeOptions {
  method?: CalibrationMethod;
  /** For `percentile`: share of |x| kept inside the range, in percent (default 99.999). */
  percentile?: number;
  /** intra-op threads for the calibration runs. */
  threads?: number;
}

/** One batch of the model's input: raw tensor data and its dims. */
export interface CalibrationBatch {
  data: Uint8Array | Float32Array;
  dims: number[];
}

/** Where the QDQ pairs go, read from the float graph. */
export interface QuantizationPlan {
  /** Conv nodes (by output name) whose weights are constant: quantised. */
  convs: string[];
  /** Tensors that get a QuantizeLinear → DequantizeLinear pair. */
  tensors: string[];
  /** Float tensors read through the pair by every reader (else only by quantised Convs and residual Adds). */
  allReaders: Set<string>;
}

export interface ActivationRange {
  /** The range [lo, hi] the calibration method chose: [0, hi] for a tensor never negative, else [−m, m]. */
  lo: number;
  hi: number;
  /** Extremes seen over the calibration images. */
  min: number;
  max: number;
}

export interface QuantizedModel {
  bytes: Uint8Array;
  plan: QuantizationPlan;
  ranges: Map<string, ActivationRange>;
  calibrationImages: number;
  method: CalibrationMethod;
  percentile: number | null;
}

type Model = onnxProto.onnx.ModelProto;
type Node = onnxProto.onnx.INodeProto;
type Tensor = onnxProto.onnx.ITensorProto;

const FUSABLE_ACTIVATIONS = new Set(['Relu', 'Clip']);
/** Producers of a quantised Conv's output (the Conv, or the ReLU/ReLU6 after it). */
const CONV_PRODUCERS = new Set(['Conv', 'Relu', 'Clip']);

/** Finds the Convs to quantise and the tensors around them. */
export function planQuantization(model: Model): QuantizationPlan {
  const graph = model.graph!;
  const opset = model.opsetImport?.find((o) => !o.domain)?.version;
  if (Number(opset) !== ONNX_OPSET) {
    throw new ConfigError(`quantisation rewrites models of opset ${ONNX_OPSET} (this project's converter); this model is opset ${String(opset)}`);
  }
  const constants = new Set((graph.initializer ?? []).map((t) => t.name!));
  const readers = readersOf(graph.node ?? []);
  const producers = new Map((graph.node ?? []).map((n) => [n.output![0]!, n]));
  const candidate = (n: Node) => n.opType === 'Conv' && constants.has(n.input![1]!) && (!n.input![2] || constants.has(n.input![2]));
  const convs: string[] = [];
  const tensors = new Set<string>();
  for (const node of graph.node ?? []) {
    if (!candidate(node)) continue;
    const out = node.output![0]!;
    const after = readers.get(out) ?? [];
    const post = after.length === 1 && FUSABLE_ACTIVATIONS.has(after[0]!.opType!) ? after[0]!.output![0]! : out;
    convs.push(out);
    tensors.add(node.input![0]!);
    tensors.add(post);
  }
  if (convs.length === 0) throw new ConfigError('the model has no Conv with constant weights: nothing to quantise');
  // Readers of a Conv's output must all read it dequantised (Conv + Q fuse only when Q is its one
  // reader); other tensors (a residual sum, the input) are read dequantised by int8 units only.
  const allReaders = new Set([...tensors].filter((t) => CONV_PRODUCERS.has(producers.get(t)?.opType ?? '')));
  return { convs, tensors: [...tensors], allReaders };
}

/**
 * Histograms of the positive values and of |x| of the negative values, with a fixed number of bins
 * over [0, range); when a larger value arrives the range doubles and pairs of bins merge, so earlier
 * batches are never re-read.
 */
export class RangeHistogram {
  readonly positive: Float64Array;
  readonly negative: Float64Array;
  range = 0;
  min = Infinity;
  max = -Infinity;
  total = 0;

  constructor(readonly bins = 2048) {
    this.positive = new Float64Array(bins);
    this.negative = new Float64Array(bins);
  }

  add(values: Float32Array): void {
    let lo = this.min;
    let hi = this.max;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    this.min = lo;
    this.max = hi;
    this.total += values.length;
    const abs = Math.max(Math.abs(lo), Math.abs(hi));
    if (abs === 0) {
      this.positive[0]! += values.length;
      return;
    }
    if (this.range === 0) this.range = abs;
    while (abs > this.range) this.widen();
    const perUnit = this.bins / this.range;
    const last = this.bins - 1;
    const { positive, negative } = this;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (v >= 0) {
        const b = Math.floor(v * perUnit);
        positive[b > last ? last : b]! += 1;
      } else {
        const b = Math.floor(-v * perUnit);
        negative[b > last ? last : b]! += 1;
      }
    }
  }

  private widen(): void {
    const half = this.bins / 2;
    for (const counts of [this.positive, this.negative]) {
      for (let b = 0; b < half; b++) counts[b] = counts[2 * b]! + counts[2 * b + 1]!;
      counts.fill(0, half);
    }
    this.range *= 2;
  }

  /**
   * The magnitude below which `percent` % of the values fall (upper edge of that bin, at most the
   * extreme): `positive` of the values ≥ 0, `negative` of |x| of the values < 0, `both` of every |x|.
   */
  percentile(percent: number, side: 'positive' | 'negative' | 'both'): number {
    const counts = side === 'positive' ? this.positive : side === 'negative' ? this.negative : this.positive.map((c, b) => c + this.negative[b]!);
    const extreme = Math.max(side === 'negative' ? 0 : Math.max(0, this.max), side === 'positive' ? 0 : Math.max(0, -this.min));
    const sideTotal = counts.reduce((a, b) => a + b, 0);
    if (sideTotal === 0 || extreme === 0) return 0;
    const target = (sideTotal * percent) / 100;
    let seen = 0;
    for (let b = 0; b < this.bins; b++) {
      seen += counts[b]!;
      if (seen >= target) return Math.min(extreme, ((b + 1) * this.range) / this.bins);
    }
    return extreme;
  }
}

/**
 * Runs the float model on the calibration batches with every planned tensor as an extra output,
 * and returns each tensor's range by the chosen method.
 */
export async function calibrate(
  model: Model,
  plan: QuantizationPlan,
  batches: AsyncIterable<CalibrationBatch>,
  options: QuantizeOptions = {},
): Promise<{ ranges: Map<string, ActivationRange>; images: number }> {
  const method = options.method ?? 'percentile';
  const percent = options.percentile ?? 99.999;
  if (method === 'percentile' && !(percent > 0 && percent <= 100)) throw new ConfigError(`percentile must be in (0, 100], got ${percent}`);
  const graph = model.graph!;
  const builder = new OnnxGraphBuilder();
  for (const t of graph.initializer ?? []) builder.copyInitializer(t);
  for (const n of graph.node ?? []) builder.copyNode(n);
  for (const i of graph.input ?? []) builder.copyInput(i);
  for (const o of graph.output ?? []) builder.copyOutput(o);
  const declared = new Set((graph.output ?? []).map((o) => o.name!));
  for (const t of plan.tensors) if (!declared.has(t)) builder.outputOfAnyShape(t);
  const bytes = builder.encode({ graphName: graph.name ?? 'calibration', producerName: 'image-semantic-search quantize (calibration)', docString: '' });
  const session = await ort.InferenceSession.create(bytes, {
    graphOptimizationLevel: 'basic',
    ...(options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {}),
  });
  const inputName = session.inputNames[0]!;
  const histograms = new Map(plan.tensors.map((t) => [t, new RangeHistogram()]));
  let images = 0;
  try {
    for await (const batch of batches) {
      const tensor = batch.data instanceof Uint8Array ? new ort.Tensor('uint8', batch.data, batch.dims) : new ort.Tensor('float32', batch.data, batch.dims);
      const out = await session.run({ [inputName]: tensor }, plan.tensors);
      for (const t of plan.tensors) {
        histograms.get(t)!.add(out[t]!.data as Float32Array);
        out[t]!.dispose();
      }
      images += batch.dims[0]!;
    }
  } finally {
    await session.release();
  }
  if (images === 0) throw new ConfigError('calibration needs at least one image');
  const ranges = new Map<string, ActivationRange>();
  for (const [t, h] of histograms) {
    if (h.min >= 0) {
      ranges.set(t, { lo: 0, hi: method === 'minmax' ? h.max : h.percentile(percent, 'positive'), min: h.min, max: h.max });
    } else {
      const magnitude = method === 'minmax' ? Math.max(-h.min, h.max) : h.percentile(percent, 'both');
      ranges.set(t, { lo: -magnitude, hi: magnitude, min: h.min, max: h.max });
    }
  }
  return { ranges, images };
}

/** uint8 activation parameters of a calibrated range (see the module comment). */
export function activationParams(r: ActivationRange): { scale: number; zeroPoint: number } {
  if (r.lo >= 0) return r.hi > 0 ? { scale: r.hi / 255, zeroPoint: 0 } : { scale: 1, zeroPoint: 0 };
  const magnitude = Math.max(-r.lo, r.hi);
  return { scale: magnitude / 127, zeroPoint: 128 };
}

/** Per-output-channel symmetric int8 weights: one scale per slice of axis 0. */
export function quantizeWeightsPerChannel(weights: Float32Array, channels: number): { values: Int8Array; scales: Float32Array } {
  const per = weights.length / channels;
  if (!Number.isInteger(per)) throw new ConfigError(`${weights.length} weights do not split into ${channels} channels`);
  const values = new Int8Array(weights.length);
  const scales = new Float32Array(channels);
  for (let c = 0; c < channels; c++) {
    let m = 0;
    for (let i = c * per; i < (c + 1) * per; i++) m = Math.max(m, Math.abs(weights[i]!));
    const scale = m > 0 ? m / 127 : 1;
    scales[c] = scale;
    for (let i = c * per; i < (c + 1) * per; i++) values[i] = Math.max(-127, Math.min(127, Math.round(weights[i]! / scale)));
  }
  return { values, scales };
}

/** Writes the QDQ model: the float graph with the planned pairs, int8 weights and int32 biases. */
export function buildQdqModel(model: Model, plan: QuantizationPlan, ranges: Map<string, ActivationRange>, docString: string): Uint8Array {
  const graph = model.graph!;
  const initializers = new Map((graph.initializer ?? []).map((t) => [t.name!, t]));
  const convs = new Set(plan.convs);
  const quantised = new Set(plan.tensors);
  const replaced = new Set<string>();
  for (const node of graph.node ?? []) {
    if (node.opType === 'Conv' && convs.has(node.output![0]!)) for (const name of node.input!.slice(1)) if (name) replaced.add(name);
  }
  const b = new OnnxGraphBuilder('qdq_');
  for (const i of graph.input ?? []) b.copyInput(i);
  for (const o of graph.output ?? []) b.copyOutput(o);
  for (const t of graph.initializer ?? []) if (!replaced.has(t.name!)) b.copyInitializer(t);
  const params = new Map<string, { scale: string; zeroPoint: string; value: { scale: number; zeroPoint: number } }>();
  for (const t of plan.tensors) {
    const range = ranges.get(t);
    if (!range) throw new ConfigError(`no calibrated range for tensor ${t}`);
    const value = activationParams(range);
    params.set(t, { scale: b.scalar(value.scale), zeroPoint: b.integers([value.zeroPoint], [], 'uint8'), value });
  }
  const dequantised = (t: string) => `${t}_dequantized`;
  const int8Unit = (reader: Node) =>
    (reader.opType === 'Conv' && convs.has(reader.output![0]!)) || ((reader.opType === 'Sum' || reader.opType === 'Add') && reader.input!.length === 2);
  const readName = (input: string, reader: Node) => (quantised.has(input) && (plan.allReaders.has(input) || int8Unit(reader)) ? dequantised(input) : input);
  for (const t of plan.tensors) if (graph.input?.some((i) => i.name === t)) addPair(b, t, params.get(t)!);
  for (const node of graph.node ?? []) {
    const inputs = node.input!.map((name) => (name ? readName(name, node) : name));
    if (node.opType === 'Conv' && convs.has(node.output![0]!)) {
      const x = params.get(node.input![0]!)!;
      const weight = initializers.get(node.input![1]!)!;
      const outC = Number(weight.dims![0]);
      const q = quantizeWeightsPerChannel(floatsOf(weight), outC);
      const w = b.node(
        'DequantizeLinear',
        [b.integers(q.values, weight.dims!.map(Number), 'int8'), b.floats(q.scales, [outC]), b.integers(new Int8Array(outC), [outC], 'int8')],
        {
          axis: 0,
        },
      );
      inputs[1] = w;
      if (node.input![2]) {
        const bias = floatsOf(initializers.get(node.input![2])!);
        const scales = q.scales.map((s) => s * x.value.scale);
        const qb = Int32Array.from(bias, (v, c) => Math.max(-2147483647, Math.min(2147483647, Math.round(v / scales[c]!))));
        inputs[2] = b.node('DequantizeLinear', [b.integers(qb, [outC], 'int32'), b.floats(scales, [outC]), b.integers(new Int32Array(outC), [outC], 'int32')], {
          axis: 0,
        });
      }
    }
    const opType = node.opType === 'Sum' && inputs.length === 2 ? 'Add' : node.opType;
    b.copyNode({ ...node, opType, input: inputs });
    for (const out of node.output ?? []) if (quantised.has(out)) addPair(b, out, params.get(out)!);
  }
  return b.encode({
    graphName: graph.name ?? 'embedding',
    producerName: 'image-semantic-search quantize',
    producerVersion: String(QUANTIZER_VERSION),
    docString,
  });
}

function addPair(b: OnnxGraphBuilder, tensor: string, p: { scale: string; zeroPoint: string }): void {
  const q = b.node('QuantizeLinear', [tensor, p.scale, p.zeroPoint], {}, `${tensor}_quantized`);
  b.node('DequantizeLinear', [q, p.scale, p.zeroPoint], {}, `${tensor}_dequantized`);
}

/**
 * Calibrates the float model on the batches and writes its QDQ int8 variant. The result keeps the
 * float model's inputs and outputs, so the same manifest (with `precision: 'int8'`) describes it.
 */
export async function quantizeModel(fp32: Uint8Array, batches: AsyncIterable<CalibrationBatch>, options: QuantizeOptions = {}): Promise<QuantizedModel> {
  const model = OnnxGraphBuilder.decode(fp32);
  const plan = planQuantization(model);
  const method = options.method ?? 'percentile';
  const percentile = method === 'percentile' ? (options.percentile ?? 99.999) : null;
  const { ranges, images } = await calibrate(model, plan, batches, options);
  const doc = `int8 QDQ (weights per-channel symmetric int8, activations uint8, ${method}${percentile === null ? '' : ` ${percentile}%`} over ${images} images) of: ${model.docString ?? ''}`;
  return { bytes: buildQdqModel(model, plan, ranges, doc), plan, ranges, calibrationImages: images, method, percentile };
}

/** Op types of a model (e.g. the optimised model onnxruntime writes), with their counts. */
export function opTypeCounts(bytes: Uint8Array): Map<string, number> {
  const counts = new Map<string, number>();
  for (const n of OnnxGraphBuilder.decode(bytes).graph?.node ?? []) counts.set(n.opType!, (counts.get(n.opType!) ?? 0) + 1);
  return counts;
}

function readersOf(nodes: Node[]): Map<string, Node[]> {
  const readers = new Map<string, Node[]>();
  for (const n of nodes) {
    for (const i of n.input ?? []) {
      if (!i) continue;
      const list = readers.get(i) ?? [];
      list.push(n);
      readers.set(i, list);
    }
  }
  return readers;
}

function floatsOf(t: Tensor): Float32Array {
  if (t.dataType !== OnnxDataType.FLOAT) throw new ConfigError(`initializer ${t.name} is not float32`);
  if (t.rawData && t.rawData.length > 0) {
    const raw = t.rawData;
    return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  }
  return Float32Array.from(t.floatData ?? []);
}

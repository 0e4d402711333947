import { ConfigError, ParseError } from '../errors.js';
import type { FeatureLayer, KerasLayer, KerasModelArtifacts, KerasWeightSpec } from '../model/keras-to-onnx.js';
import { decodeKerasWeights } from '../model/keras-to-onnx.js';
import { regionWindows } from '../model/base-embedding.js';
import { KerasTopology } from '../model/keras/topology.js';
import { l2Normalise } from '../vector-math.js';
import { tf } from './tf-backend.js';
import { channelAffine, columnSums, l2NormaliseRows, mm, relu6 } from './tf-math.js';

/**
 * The top of the image tower in TensorFlow.js, rebuilt from the same Keras weights the ONNX tower
 * is converted from (shared/model/keras-to-onnx.ts), starting at the stored intermediate
 * activation (manifest `image.activation`, e.g. `block_13_project_BN`): blocks 14–16 and the last
 * 1×1 conv of MobileNetV2, then the base embedding (pooled, L2-normalised, weighted feature layers
 * + the thumbnail branch, concatenated, L2-normalised) — so it computes what the ONNX tower does.
 *
 * The top `unlock` units of {@link UNLOCKABLE_BLOCKS} are trainable: their conv kernels, biases and
 * BatchNormalization γ/β (the moving statistics stay frozen: inference-mode BN, as the ONNX export
 * folds it). Everything below is frozen and never differentiated.
 *
 * Kernels the wasm backend has no gradient for (Conv2DBackpropFilter, depthwise backprop) are
 * avoided: a 1×1 conv is a matMul over [N·H·W, C], and a trainable depthwise conv has its own
 * gradient ({@link depthwiseConvSame}) made of kernels wasm has.
 *
 * The thumbnail branch reads pixels, which are not stored: its weighted part is taken from the
 * stored base embedding itself ({@link TowerBlocks.thumbnailPart}).
 */

/** Units that `--unlock-blocks N` unlocks, top N from the end; `Conv_1` is the last 1×1 conv (+ its BN and `out_relu`). */
export const UNLOCKABLE_BLOCKS = ['block_14', 'block_15', 'block_16', 'Conv_1'] as const;
export const MAX_UNLOCK_BLOCKS = UNLOCKABLE_BLOCKS.length;

export interface TowerBlocksSpec {
  /** The stored activation: the layer and its [height, width, channels]. */
  activation: { layer: string; shape: readonly [number, number, number] };
  /**
   * The feature layers of the base embedding this tower computes, in output order (default model:
   * block_15_add, out_relu); a layer with `grid` > 1 is pooled over regions (base-embedding.ts).
   */
  features: readonly FeatureLayer[];
  /**
   * The layout of the base embeddings the records hold (the tower that embedded them), when it is
   * not `features`: where {@link TowerBlocks.thumbnailPart} finds the thumbnail part.
   */
  storedFeatures?: readonly FeatureLayer[];
  /** Trainable units from the top (0 … {@link MAX_UNLOCK_BLOCKS}). */
  unlock: number;
  /**
   * 'tfjs': the unlocked layers use tfjs-core's own gradients for every op the wasm backend can
   * differentiate (matMul, the BatchNormalization affine, bias, tf.relu6) — the reference the tests and
   * `npm run bench -- --only tower-step` compare the default against. 'fast' (default): the
   * hand-written gradients of tf-math.ts, same values, 4.5× less time per step on wasm.
   */
  gradients?: 'fast' | 'tfjs';
}

/** The unit a layer belongs to: `block_14_expand_BN` → `block_14`; `Conv_1`, `Conv_1_bn`, `out_relu` → `Conv_1`. */
export function blockOf(layerName: string): string {
  const m = /^(block_\d+)_/.exec(layerName);
  if (m) return m[1]!;
  if (layerName === 'out_relu' || layerName.startsWith('Conv_1')) return 'Conv_1';
  return layerName;
}

type Param = { name: string; full: string; tensor: tf.Tensor | tf.Variable; trainable: boolean };

export class TowerBlocks {
  readonly unlocked: readonly string[];
  /** Values of each feature layer's part (channels, × grid² when pooled over regions), in order. */
  readonly featureDims: number[];
  /** The layout of the base embeddings the records hold ({@link TowerBlocksSpec.storedFeatures}; see {@link adoptLayout}). */
  private storedLayout: readonly FeatureLayer[];
  /** Values of each part of that layout. */
  private storedParts: number[];
  private readonly topology: KerasTopology;
  private readonly weights: Map<string, Float32Array>;
  private readonly order: KerasWeightSpec[];
  /** Per layer: its parameters (`kernel`, `bias`, `gamma`, …) as tensors or variables. */
  private readonly params = new Map<string, Map<string, Param>>();
  private readonly needed: KerasLayer[] = [];

  constructor(
    artifacts: KerasModelArtifacts,
    readonly spec: TowerBlocksSpec,
  ) {
    if (!Number.isInteger(spec.unlock) || spec.unlock < 0 || spec.unlock > MAX_UNLOCK_BLOCKS) {
      throw new ConfigError(`unlock must be a whole number from 0 to ${MAX_UNLOCK_BLOCKS}, got ${spec.unlock}`);
    }
    if (spec.features.length === 0) throw new ConfigError('the tower needs at least one feature layer');
    this.unlocked = UNLOCKABLE_BLOCKS.slice(MAX_UNLOCK_BLOCKS - spec.unlock);
    this.topology = new KerasTopology(artifacts.modelTopology);
    this.weights = decodeKerasWeights(artifacts);
    this.order = artifacts.weightsManifest.flatMap((g) => g.weights);
    const seen = new Set<string>();
    const visit = (name: string): void => {
      if (seen.has(name) || name === spec.activation.layer) return;
      seen.add(name);
      const layer = this.topology.layer(name);
      if (layer.class_name === 'InputLayer') {
        throw new ConfigError(`feature layers must all be above the activation layer ${spec.activation.layer}; ${name} is not`);
      }
      for (const inbound of this.topology.inboundNames(layer)) visit(inbound);
      this.needed.push(layer); // after what it reads: topological order
    };
    const stored = spec.storedFeatures ?? spec.features;
    if (stored.length === 0) throw new ConfigError('the stored base embeddings need at least one feature layer');
    for (const f of [...spec.features, ...stored]) visit(f.layer);
    this.storedLayout = stored;
    for (const unit of this.unlocked) {
      if (!this.needed.some((l) => blockOf(l.name) === unit))
        throw new ConfigError(`block ${unit} is not between ${spec.activation.layer} and the feature layers`);
    }
    for (const layer of this.needed) this.createParams(layer);
    this.featureDims = this.dimsOf(spec.features);
    this.storedParts = this.dimsOf(stored);
  }

  /** Values of each part of a layout whose layers this tower computes. */
  dimsOf(layers: readonly FeatureLayer[]): number[] {
    return tf.tidy(() => {
      const [h, w, c] = this.spec.activation.shape;
      const maps = this.forwardMaps(tf.zeros([1, h, w, c]) as tf.Tensor4D);
      return layers.map((f) => {
        const map = maps.get(f.layer);
        if (!map) throw new ConfigError(`feature layer ${f.layer} is not computed by these blocks`);
        return this.pool(map, f.grid ?? 1).shape[1]!;
      });
    });
  }

  /** The layout of the base embeddings the records hold. */
  get storedFeatures(): readonly FeatureLayer[] {
    return this.storedLayout;
  }

  /** Values of each part of {@link storedFeatures}. */
  get storedDims(): readonly number[] {
    return this.storedParts;
  }

  /**
   * From now on the records' base embeddings are in this tower's own layout: after they were rebuilt
   * in it (a new layout), the blocks read the thumbnail part from the rebuilt vectors.
   */
  adoptLayout(): void {
    this.storedLayout = this.spec.features;
    this.storedParts = [...this.featureDims];
  }

  private paramNames(layer: KerasLayer): string[] {
    const cfg = layer.config;
    switch (layer.class_name) {
      case 'Conv2D':
        return cfg.use_bias ? ['kernel', 'bias'] : ['kernel'];
      case 'DepthwiseConv2D':
        return cfg.use_bias ? ['depthwise_kernel', 'bias'] : ['depthwise_kernel'];
      case 'BatchNormalization':
        return [...(cfg.scale === false ? [] : ['gamma']), ...(cfg.center === false ? [] : ['beta']), 'moving_mean', 'moving_variance'];
      default:
        return [];
    }
  }

  private fullName(layer: string, param: string): string {
    const exact = `${layer}/${param}`;
    if (this.weights.has(exact)) return exact;
    for (const name of this.weights.keys()) if (name.endsWith(`/${exact}`)) return name;
    throw new ParseError(`weight ${exact} is missing from the weight manifest`, { meta: { layer } });
  }

  private createParams(layer: KerasLayer): void {
    const trainableLayer = this.unlocked.includes(blockOf(layer.name));
    const map = new Map<string, Param>();
    for (const name of this.paramNames(layer)) {
      const full = this.fullName(layer.name, name);
      const spec = this.order.find((s) => s.name === full)!;
      const values = this.weights.get(full)!;
      const trainable = trainableLayer && !name.startsWith('moving_');
      const tensor = trainable ? tf.variable(tf.tensor(values, spec.shape), true, `tower/${full}`) : tf.tensor(values, spec.shape);
      map.set(name, { name, full, tensor, trainable });
    }
    this.params.set(layer.name, map);
  }

  private param(layer: string, name: string): tf.Tensor | undefined {
    return this.params.get(layer)?.get(name)?.tensor;
  }

  /** The trainable variables (empty when nothing is unlocked). */
  trainable(): tf.Variable[] {
    return [...this.params.values()].flatMap((m) => [...m.values()].filter((p) => p.trainable).map((p) => p.tensor as tf.Variable));
  }

  /** Activations [N,H,W,C] → every needed layer's output (NHWC). */
  private forwardMaps(activation: tf.Tensor4D): Map<string, tf.Tensor4D> {
    const out = new Map<string, tf.Tensor4D>([[this.spec.activation.layer, activation]]);
    for (const layer of this.needed) {
      const inputs = this.topology.inboundNames(layer).map((n) => out.get(n)!);
      out.set(layer.name, this.apply(layer, inputs));
    }
    return out;
  }

  private apply(layer: KerasLayer, inputs: tf.Tensor4D[]): tf.Tensor4D {
    const cfg = layer.config;
    const x = inputs[0]!;
    const trainable = this.unlocked.includes(blockOf(layer.name));
    // Hand-written gradients (tf-math.ts) where a gradient flows, unless the reference is asked for.
    const fast = trainable && this.spec.gradients !== 'tfjs';
    switch (layer.class_name) {
      case 'Conv2D': {
        const [kh, kw] = cfg.kernel_size as [number, number];
        const [sh, sw] = cfg.strides as [number, number];
        if (kh !== 1 || kw !== 1 || sh !== 1 || sw !== 1) throw unsupported(layer, 'only 1×1 stride-1 convolutions are rebuilt above the activation');
        const [n, h, w, c] = x.shape;
        const kernel = this.param(layer.name, 'kernel')!;
        const cOut = kernel.shape[3]!;
        const flat = tf.reshape(x, [n * h * w, c]) as tf.Tensor2D;
        const k2 = tf.reshape(kernel, [c, cOut]) as tf.Tensor2D;
        let y = fast ? mm(flat, k2) : tf.matMul(flat, k2);
        const bias = this.param(layer.name, 'bias') as tf.Tensor1D | undefined;
        if (bias) y = fast ? channelAffine(y, tf.onesLike(bias), bias) : tf.add(y, bias);
        return activate(tf.reshape(y, [n, h, w, cOut]) as tf.Tensor4D, String(cfg.activation ?? 'linear'), layer, fast);
      }
      case 'DepthwiseConv2D': {
        const [kh, kw] = cfg.kernel_size as [number, number];
        const [sh, sw] = cfg.strides as [number, number];
        if (sh !== 1 || sw !== 1 || cfg.padding !== 'same' || ((cfg.depth_multiplier as number | undefined) ?? 1) !== 1 || kh % 2 === 0 || kw % 2 === 0) {
          throw unsupported(layer, 'only stride-1 "same" depthwise convolutions with odd kernels are rebuilt above the activation');
        }
        const kernel = this.param(layer.name, 'depthwise_kernel')!; // [kh,kw,C,1]
        // Frozen: forward only. Trainable: the same kernel, with the gradient of depthwiseConvSame.
        let y: tf.Tensor4D = trainable ? depthwiseConvSame(x, kernel as tf.Tensor4D) : tf.depthwiseConv2d(x, kernel as tf.Tensor4D, 1, 'same');
        const bias = this.param(layer.name, 'bias') as tf.Tensor1D | undefined;
        if (bias) y = fast ? channelAffine(y, tf.onesLike(bias), bias) : tf.add(y, bias);
        return activate(y, String(cfg.activation ?? 'linear'), layer, fast);
      }
      case 'BatchNormalization': {
        const c = x.shape[3];
        const eps = (cfg.epsilon as number | undefined) ?? 1e-3;
        const gamma = this.param(layer.name, 'gamma') ?? tf.ones([c]);
        const beta = this.param(layer.name, 'beta') ?? tf.zeros([c]);
        const scale = tf.mul(gamma, tf.rsqrt(tf.add(this.param(layer.name, 'moving_variance')!, eps)));
        const shift = tf.sub(beta, tf.mul(this.param(layer.name, 'moving_mean')!, scale));
        return fast ? channelAffine(x, scale as tf.Tensor1D, shift as tf.Tensor1D) : (tf.add(tf.mul(x, scale), shift) as tf.Tensor4D);
      }
      case 'ReLU': {
        const max = cfg.max_value as number | null | undefined;
        if (max === null || max === undefined) return tf.relu(x);
        if (max === 6) return fast ? relu6(x) : tf.relu6(x);
        return tf.clipByValue(x, 0, max) as tf.Tensor4D;
      }
      case 'Activation':
        return activate(x, String(cfg.activation), layer, fast);
      case 'Add':
        return tf.addN(inputs);
      case 'Dropout':
        return x;
      default:
        throw unsupported(layer, `Keras layer class ${layer.class_name} is not rebuilt above the activation`);
    }
  }

  /**
   * Activations [N,H,W,C] (+ the weighted thumbnail part [N,T] taken from the stored base, or null
   * when the tower has no thumbnail) → base embeddings [N,D], L2-normalised.
   */
  forward(activation: tf.Tensor4D, thumbnail: tf.Tensor2D | null): tf.Tensor2D {
    const maps = this.forwardMaps(activation);
    const parts: tf.Tensor2D[] = this.spec.features.map((f) => {
      const pooled = l2NormaliseRows(this.pool(maps.get(f.layer)!, f.grid ?? 1));
      const weight = f.weight ?? 1;
      return weight === 1 ? pooled : (tf.mul(pooled, weight) as tf.Tensor2D);
    });
    if (thumbnail) parts.push(thumbnail);
    return l2NormaliseRows(parts.length === 1 ? parts[0]! : (tf.concat(parts, 1) as tf.Tensor2D));
  }

  /**
   * Global average pooling, or the mean of each of grid×grid windows ({@link regionWindows}, as the
   * ONNX AveragePool computes them) flattened channel-major like the ONNX Flatten of [N,C,g,g].
   * Slices and means: ops the wasm backend differentiates, should a pooled layer lie above an
   * unlocked unit.
   */
  private pool(map: tf.Tensor4D, grid: number): tf.Tensor2D {
    if (grid <= 1) return tf.mean(map, [1, 2]) as tf.Tensor2D;
    const [n, h, w, c] = map.shape;
    const [y, x] = [regionWindows(h, grid), regionWindows(w, grid)];
    const cells: tf.Tensor2D[] = [];
    for (let i = 0; i < grid; i++)
      for (let j = 0; j < grid; j++) cells.push(tf.mean(tf.slice(map, [0, i * y.stride, j * x.stride, 0], [n, y.kernel, x.kernel, c]), [1, 2]) as tf.Tensor2D);
    return tf.reshape(tf.stack(cells, 2), [n, c * grid * grid]) as tf.Tensor2D;
  }

  /**
   * The thumbnail branch's weighted part (what went into the concatenation) recovered from a stored
   * base embedding: the base is that concatenation divided by its norm, and the first feature
   * part had norm `weight₁` before the division, so the norm is `weight₁ / ‖base[0:d₁]‖`.
   * Null when the base has no thumbnail part.
   */
  thumbnailPart(base: Float32Array): Float32Array | null {
    const offset = this.storedParts.reduce((a, b) => a + b, 0);
    if (base.length < offset) throw new ParseError(`base embedding has ${base.length} values, the tower's feature layers alone have ${offset}`);
    if (base.length === offset) return null;
    const ratio = this.storedScale(base);
    const out = new Float32Array(base.length - offset);
    for (let i = 0; i < out.length; i++) out[i] = base[offset + i]! * ratio;
    return out;
  }

  /**
   * What a stored base embedding was divided by (its concatenation's norm), as `weight₁ / ‖part₁‖`:
   * multiplying a stored part by it gives back the part as concatenated (unit vector × weight).
   */
  storedScale(base: Float32Array): number {
    const first = base.subarray(0, this.storedParts[0]);
    let norm = 0;
    for (const v of first) norm += v * v;
    norm = Math.sqrt(norm);
    return norm > 0 ? (this.storedLayout[0]!.weight ?? 1) / norm : 0;
  }

  /** Current values of the trainable variables (for keeping the best epoch). */
  snapshot(): tf.Tensor[] {
    return this.trainable().map((v) => v.clone());
  }

  restore(saved: tf.Tensor[]): void {
    this.trainable().forEach((v, i) => v.assign(saved[i]!));
  }

  /**
   * The whole Keras model's weights with the tuned ones in place, as float32 artifacts the ONNX
   * converter takes (same topology, same weight order): the tuned tower for the registry.
   */
  async exportArtifacts(topology: KerasModelArtifacts['modelTopology']): Promise<KerasModelArtifacts> {
    const tuned = new Map<string, Float32Array>();
    for (const map of this.params.values()) {
      for (const p of map.values()) if (p.trainable) tuned.set(p.full, (await p.tensor.data()) as Float32Array);
    }
    const total = this.order.reduce((sum, s) => sum + s.shape.reduce((a, b) => a * b, 1), 0);
    const data = new Float32Array(total);
    let offset = 0;
    const specs: KerasWeightSpec[] = this.order.map((s) => {
      const values = tuned.get(s.name) ?? this.weights.get(s.name)!;
      data.set(values, offset);
      offset += values.length;
      return { name: s.name, shape: s.shape, dtype: 'float32' };
    });
    return { modelTopology: topology, weightsManifest: [{ paths: ['tuned.bin'], weights: specs }], weightData: data.buffer };
  }

  /** Tuned parameters as name → values (for the registry's record of what changed). */
  tunedParameterCount(): number {
    return this.trainable().reduce((sum, v) => sum + v.size, 0);
  }

  dispose(): void {
    for (const map of this.params.values()) for (const p of map.values()) p.tensor.dispose();
  }
}

/**
 * Stride-1 'same' depthwise convolution (odd kernel [kh,kw,C,1]) with a gradient the wasm backend
 * can run: it has the forward kernel but neither backprop kernel. dx is the depthwise convolution
 * of dy with the spatially flipped kernel (what a 'same' correlation's transpose is for an odd
 * kernel); dk[i,j,c] = Σ_{n,h,w} x_padded[n,h+i,w+j,c]·dy[n,h,w,c], one tap at a time so only one
 * shifted copy of the maps is alive at once (the sum as a column sum: see tf-math.ts).
 */
export const depthwiseConvSame = tf.customGrad(((x: tf.Tensor, kernel: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, kernel]);
  return {
    value: tf.depthwiseConv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, 1, 'same'),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [input, k] = saved as [tf.Tensor4D, tf.Tensor4D];
      const [kh, kw, c] = k.shape;
      const [, h, w] = input.shape;
      const dx = tf.depthwiseConv2d(dy as tf.Tensor4D, tf.reverse(k, [0, 1]) as tf.Tensor4D, 1, 'same');
      const [ph, pw] = [(kh - 1) / 2, (kw - 1) / 2];
      const padded = tf.pad(input, [
        [0, 0],
        [ph, ph],
        [pw, pw],
        [0, 0],
      ]);
      const taps: tf.Tensor1D[] = [];
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++)
          taps.push(tf.tidy(() => columnSums(tf.reshape(tf.mul(tf.slice(padded, [0, i, j, 0], [-1, h, w, c]), dy), [-1, c]) as tf.Tensor2D)));
      }
      const dk = tf.reshape(tf.stack(taps), [kh, kw, c, 1]);
      for (const t of taps) t.dispose();
      padded.dispose();
      return [dx, dk];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor4D, kernel: tf.Tensor4D) => tf.Tensor4D;

function activate(x: tf.Tensor4D, activation: string, layer: KerasLayer, fast: boolean): tf.Tensor4D {
  switch (activation) {
    case 'linear':
      return x;
    case 'relu':
      return tf.relu(x);
    case 'relu6':
      return fast ? relu6(x) : tf.relu6(x);
    default:
      throw unsupported(layer, `activation ${activation} is not rebuilt above the activation`);
  }
}

function unsupported(layer: KerasLayer, message: string): ConfigError {
  return new ConfigError(`${layer.name}: ${message}`, { meta: { layer: layer.name } });
}

/** Base embeddings of stored activations (fp16 decoded) in batches, with the tower as it is now (no gradient). */
export async function towerEmbeddings(
  tower: TowerBlocks,
  items: { activation: Float32Array | ((out: Float32Array, offset: number) => void); base: Float32Array }[],
  batchSize = 128,
): Promise<Float32Array[]> {
  const [h, w, c] = tower.spec.activation.shape;
  const size = h * w * c;
  const out: Float32Array[] = [];
  for (let s = 0; s < items.length; s += batchSize) {
    const chunk = items.slice(s, s + batchSize);
    const { act, thumbs, thumbDim } = packBatch(tower, chunk, size);
    const y = tf.tidy(() => tower.forward(tf.tensor4d(act, [chunk.length, h, w, c]), thumbDim > 0 ? tf.tensor2d(thumbs, [chunk.length, thumbDim]) : null));
    const data = (await y.data()) as Float32Array;
    const d = y.shape[1]!;
    y.dispose();
    for (let i = 0; i < chunk.length; i++) out.push(l2Normalise(data.slice(i * d, (i + 1) * d)));
  }
  return out;
}

/** One batch's activations (flat NHWC) and thumbnail parts (flat), for {@link TowerBlocks.forward}. */
export function packBatch(
  tower: TowerBlocks,
  items: { activation: Float32Array | ((out: Float32Array, offset: number) => void); base: Float32Array }[],
  size: number,
): { act: Float32Array; thumbs: Float32Array; thumbDim: number } {
  const act = new Float32Array(items.length * size);
  const parts = items.map((it) => tower.thumbnailPart(it.base));
  const thumbDim = parts[0]?.length ?? 0;
  const thumbs = new Float32Array(items.length * thumbDim);
  items.forEach((it, i) => {
    if (typeof it.activation === 'function') it.activation(act, i * size);
    else {
      if (it.activation.length !== size) throw new ParseError(`activation ${i} has ${it.activation.length} values, the tower expects ${size}`);
      act.set(it.activation, i * size);
    }
    if (thumbDim > 0) thumbs.set(parts[i]!, i * thumbDim);
  });
  return { act, thumbs, thumbDim };
}

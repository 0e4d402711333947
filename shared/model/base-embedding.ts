import { ConfigError } from '../errors.js';
import type { GraphTensor, OnnxGraphBuilder } from './onnx/graph-builder.js';

/**
 * The base embedding built on top of a CNN backbone, as ONNX nodes: which layers are read and how
 * they become one vector.
 *
 *   for each feature layer: global average pool (or a grid×grid regional pool, flattened),
 *     L2-normalise, × weight
 *   → optional "thumbnail" branch computed from the input itself (average-pooled pixels)
 *   → concatenate → L2-normalise → output [N,D].
 */
export interface FeatureLayer {
  /** Keras layer name, e.g. `block_12_add` or `out_relu`. */
  layer: string;
  /** Multiplies the layer's L2-normalised pooled vector before concatenation (default 1). */
  weight?: number;
  /**
   * Regional pooling: average over grid×grid overlapping windows of the map instead of the whole
   * map, flattened channel-major (C·grid² values) — where things are, not only what is there.
   * Absent or 1 = global average pooling. Windows: {@link regionWindows}.
   */
  grid?: number;
}

/**
 * The grid×grid windows regional pooling averages over a side of `size`: stride ⌊size/grid⌋,
 * window size − (grid−1)·stride, so they cover the side and overlap when it does not divide
 * (7 → 3×3: [0,3), [2,5), [4,7); 7 → 2×2: [0,4), [3,7)). The same windows in the ONNX graph
 * (AveragePool, no padding) and in the tfjs blocks (shared/training/tower-blocks.ts).
 */
export function regionWindows(size: number, grid: number): { kernel: number; stride: number } {
  if (!Number.isInteger(grid) || grid < 1 || grid > size) {
    throw new ConfigError(`a regional-pooling grid must be a whole number from 1 to the map's side ${size}, got ${grid}`);
  }
  const stride = Math.floor(size / grid);
  return { kernel: size - (grid - 1) * stride, stride };
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

export interface BaseEmbeddingOptions {
  features: FeatureLayer[];
  thumbnail?: ThumbnailBranch;
  outputName?: string;
  /**
   * For measuring: one output per feature (pooled, L2-normalised, unweighted, named by
   * {@link separateOutputName}) plus the thumbnail when set, instead of the single concatenated output.
   */
  separateOutputs?: boolean;
}

/** What the embedding reads from the backbone. */
export interface Backbone {
  /** A layer's output, NCHW or [N,C]. */
  tensorOf(layer: string): GraphTensor;
  /** The input image, NCHW. */
  nchwInput(): GraphTensor;
}

/** Name of a branch's output in a `separateOutputs` model: `feature_<layer>` or `feature_thumbnail`. */
export function separateOutputName(branch: string): string {
  return `feature_${branch}`;
}

/**
 * Adds the embedding's nodes and declares its output(s) [batch, D]; returns them in output order.
 * Needs at least one feature layer or a thumbnail.
 */
export function addBaseEmbedding(graph: OnnxGraphBuilder, backbone: Backbone, options: BaseEmbeddingOptions): GraphTensor[] {
  const branches: Array<{ name: string; tensor: GraphTensor; weight: number }> = [];
  for (const feature of options.features) {
    const map = backbone.tensorOf(feature.layer);
    const pooled = graph.l2Normalise((feature.grid ?? 1) > 1 ? regionalPool(graph, map, feature.grid!) : graph.globalAveragePool(map));
    branches.push({ name: feature.layer, tensor: pooled, weight: feature.weight ?? 1 });
  }
  if (options.thumbnail) {
    branches.push({ name: 'thumbnail', tensor: thumbnail(graph, backbone.nchwInput(), options.thumbnail), weight: options.thumbnail.weight });
  }
  let outputs: GraphTensor[];
  if (options.separateOutputs) {
    outputs = branches.map((b) => graph.tensor('Identity', [b.tensor.name], b.tensor.shape, {}, separateOutputName(b.name)));
  } else {
    const weighted = branches.map((b) => (b.weight === 1 ? b.tensor : graph.tensor('Mul', [b.tensor.name, graph.scalar(b.weight)], b.tensor.shape)));
    const dimension = weighted.reduce((sum, t) => sum + t.shape[1]!, 0);
    const concat =
      weighted.length === 1
        ? weighted[0]!
        : graph.tensor(
            'Concat',
            weighted.map((t) => t.name),
            [-1, dimension],
            { axis: 1 },
          );
    outputs = [graph.l2Normalise(concat, options.outputName ?? 'embedding')];
  }
  for (const t of outputs) graph.output(t.name, ['batch', t.shape[1]!]);
  return outputs;
}

function regionalPool(graph: OnnxGraphBuilder, map: GraphTensor, grid: number): GraphTensor {
  if (map.shape.length !== 4) throw new ConfigError(`regional pooling needs a feature map; ${map.name} has shape [${map.shape.join(', ')}]`);
  const [, c, h, w] = map.shape as [number, number, number, number];
  const [y, x] = [regionWindows(h, grid), regionWindows(w, grid)];
  const pooled = graph.tensor('AveragePool', [map.name], [-1, c, grid, grid], { kernel_shape: [y.kernel, x.kernel], strides: [y.stride, x.stride] });
  return graph.tensor('Flatten', [pooled.name], [-1, c * grid * grid], { axis: 1 });
}

function thumbnail(graph: OnnxGraphBuilder, input: GraphTensor, branch: ThumbnailBranch): GraphTensor {
  const [, c, h, w] = input.shape as [number, number, number, number];
  if (!Number.isInteger(branch.size) || branch.size < 1 || h % branch.size !== 0 || w % branch.size !== 0) {
    throw new ConfigError(`thumbnail size ${branch.size} must divide the input size ${w}x${h}`);
  }
  const [kh, kw] = [h / branch.size, w / branch.size];
  let t = graph.tensor('AveragePool', [input.name], [-1, c, branch.size, branch.size], { kernel_shape: [kh, kw], strides: [kh, kw] });
  if (branch.colour === 'grey') t = graph.tensor('ReduceMean', [t.name], [-1, 1, branch.size, branch.size], { axes: [1], keepdims: 1 });
  const dim = t.shape[1]! * branch.size * branch.size;
  t = graph.tensor('Flatten', [t.name], [-1, dim], { axis: 1 });
  if (branch.centre) {
    const mean = graph.node('ReduceMean', [t.name], { axes: [1], keepdims: 1 });
    t = graph.tensor('Sub', [t.name, mean], [-1, dim]);
  }
  return graph.l2Normalise(t);
}

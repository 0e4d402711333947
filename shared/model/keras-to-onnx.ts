import { ConfigError, ParseError } from '../errors.js';
import { addBaseEmbedding, type BaseEmbeddingOptions } from './base-embedding.js';
import { KerasLayerTranslator } from './keras/layers.js';
import { KerasWeights } from './keras/tfjs-weights.js';
import { KerasTopology, type KerasModelArtifacts } from './keras/topology.js';
import { OnnxGraphBuilder } from './onnx/graph-builder.js';

/**
 * Converts a Keras functional model (the JSON topology + weight manifest that tfjs uses) into an
 * ONNX ModelProto that onnxruntime loads from bytes, keeping only what leads to the requested
 * feature layers. The result is an embedding model:
 *
 *   input [N,H,W,3] (NHWC, what the preprocessor writes) → one Transpose to NCHW → the backbone
 *   (keras/layers.ts) → the base embedding (base-embedding.ts) → output [N,D].
 *
 * Layer names are parameters, so any Keras CNN made of the supported layer classes converts the
 * same way.
 */
export const KERAS_TO_ONNX_CONVERTER_VERSION = 1;
export { ONNX_OPSET } from './onnx/graph-builder.js';
export { decodeKerasWeights, type KerasWeightSpec } from './keras/tfjs-weights.js';
export type { KerasLayer, KerasModelArtifacts } from './keras/topology.js';
export { separateOutputName, type FeatureLayer, type ThumbnailBranch } from './base-embedding.js';

export interface KerasToOnnxOptions extends BaseEmbeddingOptions {
  inputName?: string;
  /**
   * Take raw 0–255 RGB as uint8 and scale it inside the graph (Cast, then × scale): a quarter of
   * the bytes to fill and move per image, and no normalisation pass in JavaScript.
   */
  uint8Input?: { scale: number };
  /** Recorded in the model's doc string. */
  docString?: string;
  /** A second output: this layer's activation, channels-last and flattened to [N, H·W·C]. */
  activationOutput?: { layer: string; name: string };
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
  /** [height, width, channels] of the activation output, when one was asked for. */
  activationShape?: [number, number, number];
}

export function kerasToOnnx(artifacts: KerasModelArtifacts, options: KerasToOnnxOptions): ConvertedModel {
  if (options.features.length === 0 && !options.thumbnail) {
    throw new ConfigError('kerasToOnnx: at least one feature layer or a thumbnail branch is required');
  }
  const topology = new KerasTopology(artifacts.modelTopology);
  // A requested feature layer is read by the output too, so it is never folded away.
  for (const feature of options.features) {
    if (!topology.find(feature.layer)) {
      throw new ConfigError(`feature layer "${feature.layer}" is not in the model`, { meta: { layer: feature.layer } });
    }
    topology.addReader(feature.layer, '<output>');
  }
  const activationLayer = options.activationOutput?.layer;
  if (activationLayer !== undefined) {
    if (!topology.find(activationLayer)) {
      throw new ConfigError(`activation layer "${activationLayer}" is not in the model`, { meta: { layer: activationLayer } });
    }
    topology.addReader(activationLayer, '<output>');
  }
  const weights = new KerasWeights(artifacts);
  const inputName = options.inputName ?? 'pixels';
  const graph = new OnnxGraphBuilder();
  const backbone = new KerasLayerTranslator(topology, weights, graph, { name: inputName, uint8Input: options.uint8Input });
  const outputs = addBaseEmbedding(graph, backbone, options);
  const inputShape = backbone.inputShape;
  if (!inputShape) throw new ParseError('the model has no InputLayer on the path to the outputs');
  let activationShape: [number, number, number] | undefined;
  if (options.activationOutput) {
    const tensor = backbone.tensorOf(options.activationOutput.layer);
    if (tensor.shape.length !== 4) throw new ConfigError(`activation layer "${options.activationOutput.layer}" is not a feature map`);
    const [, c, h, w] = tensor.shape as [number, number, number, number];
    // NCHW → NHWC, flattened: the layout TensorFlow.js (and Keras) use, read by shared/training/tower-blocks.ts.
    const nhwc = graph.node('Transpose', [tensor.name], { perm: [0, 2, 3, 1] });
    graph.node('Flatten', [nhwc], { axis: 1 }, options.activationOutput.name);
    graph.output(options.activationOutput.name, ['batch', h * w * c]);
    activationShape = [h, w, c];
  }
  return {
    bytes: graph.encode({
      graphName: 'embedding',
      producerName: 'image-semantic-search keras-to-onnx',
      producerVersion: String(KERAS_TO_ONNX_CONVERTER_VERSION),
      docString: options.docString ?? '',
    }),
    inputName,
    outputNames: outputs.map((t) => t.name),
    outputDimensions: outputs.map((t) => t.shape[1]!),
    inputShape,
    ...(activationShape ? { activationShape } : {}),
  };
}

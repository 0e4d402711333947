import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

/** The opset every graph of this project is written for. */
export const ONNX_OPSET = 17;
const IR_VERSION = 8;

/** ONNX element types, for graph inputs and the `to` attribute of Cast. */
export const OnnxDataType = onnx.TensorProto.DataType;

export type AttributeValue = number | number[] | string;

/** A dimension of a graph input or output: a fixed size, or a symbolic one such as `'batch'`. */
export type Dim = number | string;

/** A value of the graph with the static shape its producer computed (a batch dimension is -1). */
export interface GraphTensor {
  name: string;
  shape: number[];
}

export interface ModelInfo {
  graphName: string;
  producerName: string;
  producerVersion?: string;
  docString: string;
}

/** The ε of {@link OnnxGraphBuilder.l2Normalise}. */
const L2_EPSILON = 1e-12;

/**
 * The one place that writes ONNX protos: a graph is grown node by node (initializers, nodes,
 * inputs, outputs), then encoded as a ModelProto that onnxruntime loads from bytes. Used by the
 * Keras converter (image tower) and by the LiT export (trained head, text tower).
 */
export class OnnxGraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  /** Numbers unnamed nodes and initializers, in the order they are added. */
  private counter = 0;

  /** `namePrefix` starts every generated name: a rewrite uses one the source model's names do not start with. */
  constructor(private readonly namePrefix = '') {}

  /** Adds a node with one output, named `name` or `<op>_<n>`; returns the output's name. */
  node(opType: string, inputs: string[], attributes: Record<string, AttributeValue> = {}, name?: string): string {
    const output = name ?? `${this.namePrefix}${opType.toLowerCase()}_${this.counter++}`;
    this.nodes.push({
      opType,
      name: output,
      input: inputs,
      output: [output],
      attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
    });
    return output;
  }

  /** {@link node}, for a caller that tracks shapes: the output carries the given shape. */
  tensor(opType: string, inputs: string[], shape: number[], attributes: Record<string, AttributeValue> = {}, name?: string): GraphTensor {
    return { name: this.node(opType, inputs, attributes, name), shape };
  }

  /** A float32 initializer (a copy of `values`), named `name` or `const_<n>`; returns its name. */
  floats(values: ArrayLike<number>, dims: number[], name?: string): string {
    const initializer = name ?? `${this.namePrefix}const_${this.counter++}`;
    // Copy so the tensor's bytes are exactly these values (not a view of a larger buffer).
    const data = Float32Array.from(values);
    this.initializers.push({ name: initializer, dims, dataType: OnnxDataType.FLOAT, rawData: new Uint8Array(data.buffer) });
    return initializer;
  }

  /** A float32 scalar initializer; returns its name. */
  scalar(value: number): string {
    return this.floats([value], []);
  }

  /** A 1-D int64 initializer (pads, axes, shapes); returns its name. */
  int64s(values: number[]): string {
    const name = `${this.namePrefix}const_${this.counter++}`;
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, dims: [values.length], dataType: OnnxDataType.INT64, rawData: new Uint8Array(data.buffer) });
    return name;
  }

  /**
   * Row-wise x / max(‖x‖₂, ε) of an [N,D] tensor: unlike LpNormalization, a zero vector stays zero
   * instead of NaN.
   */
  l2Normalise(input: GraphTensor, name?: string): GraphTensor {
    const norm = this.node('ReduceL2', [input.name], { axes: [1], keepdims: 1 });
    const safe = this.node('Max', [norm, this.scalar(L2_EPSILON)]);
    return this.tensor('Div', [input.name, safe], input.shape, {}, name);
  }

  /** Global average pooling of an [N,C,H,W] tensor, flattened to [N,C]; an [N,C] tensor is returned as is. */
  globalAveragePool(input: GraphTensor, name?: string): GraphTensor {
    if (input.shape.length === 2) return input;
    const [, c] = input.shape as [number, number];
    const pooled = this.node('GlobalAveragePool', [input.name]);
    return this.tensor('Flatten', [pooled], [-1, c], { axis: 1 }, name);
  }

  /** Declares a graph input (float32 unless `elemType` says otherwise). */
  input(name: string, dims: Dim[], elemType: number = OnnxDataType.FLOAT): void {
    this.inputs.push(valueInfo(name, dims, elemType));
  }

  /** Declares a float32 graph output. */
  output(name: string, dims: Dim[]): void {
    this.outputs.push(valueInfo(name, dims, OnnxDataType.FLOAT));
  }

  /** An int8, uint8 or int32 initializer (quantised weights, zero points, biases); returns its name. */
  integers(values: ArrayLike<number>, dims: number[], dataType: 'int8' | 'uint8' | 'int32', name?: string): string {
    const initializer = name ?? `${this.namePrefix}const_${this.counter++}`;
    const data = dataType === 'int8' ? Int8Array.from(values) : dataType === 'uint8' ? Uint8Array.from(values) : Int32Array.from(values);
    const type = { int8: OnnxDataType.INT8, uint8: OnnxDataType.UINT8, int32: OnnxDataType.INT32 }[dataType];
    this.initializers.push({ name: initializer, dims, dataType: type, rawData: new Uint8Array(data.buffer) });
    return initializer;
  }

  /**
   * Rewriting an existing model (quantisation, calibration outputs): its nodes, initializers and
   * value infos are copied as they are, attributes of any type included.
   */
  copyNode(node: onnxProto.onnx.INodeProto): void {
    this.nodes.push(node);
  }
  copyInitializer(tensor: onnxProto.onnx.ITensorProto): void {
    this.initializers.push(tensor);
  }
  copyInput(info: onnxProto.onnx.IValueInfoProto): void {
    this.inputs.push(info);
  }
  copyOutput(info: onnxProto.onnx.IValueInfoProto): void {
    this.outputs.push(info);
  }
  /** A float32 graph output of unknown shape (an intermediate tensor read for calibration). */
  outputOfAnyShape(name: string): void {
    this.outputs.push({ name, type: { tensorType: { elemType: OnnxDataType.FLOAT } } });
  }

  /** Decodes a ModelProto written by {@link encode} (or any ONNX file) for rewriting. */
  static decode(bytes: Uint8Array): onnxProto.onnx.ModelProto {
    return onnx.ModelProto.decode(bytes);
  }

  /** The ModelProto's bytes (IR 8, {@link ONNX_OPSET}). */
  encode(info: ModelInfo): Uint8Array {
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: '', version: ONNX_OPSET }],
      producerName: info.producerName,
      ...(info.producerVersion === undefined ? {} : { producerVersion: info.producerVersion }),
      docString: info.docString,
      graph: { name: info.graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function attribute(name: string, value: AttributeValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  return { name, type: T.INT, i: value };
}

function valueInfo(name: string, dims: Dim[], elemType: number): onnxProto.onnx.IValueInfoProto {
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

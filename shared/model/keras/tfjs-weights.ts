import { ParseError } from '../../errors.js';

/**
 * The weights of a Keras model as tfjs stores them: a manifest of named, shaped (and possibly
 * quantised) tensors, and the concatenated bytes of its shard(s) in manifest order.
 */
export interface KerasWeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { min?: number; scale?: number; dtype: 'uint8' | 'uint16' | 'float16' };
}

export interface TfjsWeightArtifacts {
  weightsManifest: Array<{ paths: string[]; weights: KerasWeightSpec[] }>;
  weightData: ArrayBuffer;
}

/** Dequantises the weight shard(s): q → min + q*scale for uint8/uint16, float32 as is. */
export function decodeKerasWeights(artifacts: TfjsWeightArtifacts): Map<string, Float32Array> {
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
        throw new ParseError(`weight data ends before weight ${spec.name} (${bytes.length} bytes)`, { meta: { weight: spec.name } });
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
        throw new ParseError(`weight ${spec.name}: unsupported dtype ${spec.dtype}/${q?.dtype ?? 'none'}`, { meta: { weight: spec.name } });
      }
      weights.set(spec.name, out);
    }
  }
  if (offset !== bytes.length) {
    throw new ParseError(`weight manifest describes ${offset} bytes but the data has ${bytes.length}`);
  }
  return weights;
}

/** Decoded weights, looked up by layer and parameter (`<layer>/<param>`, optionally under a model prefix). */
export class KerasWeights {
  private readonly byName: Map<string, Float32Array>;

  constructor(artifacts: TfjsWeightArtifacts) {
    this.byName = decodeKerasWeights(artifacts);
  }

  get(layerName: string, param: string): Float32Array {
    const exact = this.byName.get(`${layerName}/${param}`);
    if (exact) return exact;
    for (const [name, value] of this.byName) if (name.endsWith(`/${layerName}/${param}`)) return value;
    throw new ParseError(`weight ${layerName}/${param} is missing from the weight manifest`, { meta: { layer: layerName } });
  }
}

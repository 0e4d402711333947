import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { ConfigError } from '../errors.js';
import type { ModelManifest } from './manifest.js';

/**
 * The runtime side of compact vectors: opening a model's projection step (manifest `projection`)
 * and applying it. Kept apart from the fitting (compact-projection.ts, which needs TensorFlow.js
 * and ml-matrix) so that every deployable that loads a model stays free of them.
 */
export const PROJECTION_FILE = 'projection.onnx';

export interface Projection {
  readonly inputDimension: number;
  readonly outputDimension: number;
  /** [N,inDim] → [N,outDim] (L2-normalised), one run for the batch. */
  apply(vectors: Float32Array[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

/** Opens the manifest's projection, if it has one. */
export async function loadProjection(
  manifest: ModelManifest,
  dir: string,
  sessionOptions: ort.InferenceSession.SessionOptions = {},
): Promise<Projection | undefined> {
  const spec = manifest.projection;
  if (!spec) return undefined;
  return openProjection(join(dir, spec.file), spec, sessionOptions);
}

/** A projection from its file (or bytes, before it is registered) and manifest entry. */
export async function openProjection(
  source: string | Uint8Array,
  spec: NonNullable<ModelManifest['projection']>,
  sessionOptions: ort.InferenceSession.SessionOptions = {},
): Promise<Projection> {
  const session =
    typeof source === 'string' ? await ort.InferenceSession.create(source, sessionOptions) : await ort.InferenceSession.create(source, sessionOptions);
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  if (!inputName || !outputName) throw new ConfigError(`projection ${spec.file} must have one input and one output`);
  return {
    inputDimension: spec.inputDimension,
    outputDimension: spec.outputDimension,
    async apply(vectors) {
      if (vectors.length === 0) return [];
      const data = new Float32Array(vectors.length * spec.inputDimension);
      vectors.forEach((v, i) => {
        if (v.length !== spec.inputDimension)
          throw new ConfigError(`projection input has dimension ${v.length}, the projection expects ${spec.inputDimension}`);
        data.set(v, i * spec.inputDimension);
      });
      const out = (await session.run({ [inputName]: new ort.Tensor('float32', data, [vectors.length, spec.inputDimension]) }))[outputName]!;
      const dim = out.dims[1] as number;
      if (dim !== spec.outputDimension) throw new ConfigError(`projection ${spec.file} returned dimension ${dim}, the manifest says ${spec.outputDimension}`);
      const values = out.data as Float32Array;
      return vectors.map((_, i) => values.slice(i * dim, (i + 1) * dim));
    },
    close: () => session.release(),
  };
}

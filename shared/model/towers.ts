import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { l2NormaliseInPlace } from '../vector-math.js';
import type { ModelManifest } from './manifest.js';

/**
 * Optional parts of a model besides the image tower: the trained projection head and the text
 * tower. Each is loaded from the manifest's folder.
 */

export interface Head {
  readonly inputDimension: number;
  readonly outputDimension: number;
  /** [N,inDim] → [N,outDim], one run for the batch (not normalised here). */
  apply(base: Float32Array[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

export interface TextTower {
  readonly dimension: number;
  embed(texts: string[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}

export interface TowerSessionOptions {
  sessionOptions?: ort.InferenceSession.SessionOptions;
}

/** The head file is an ONNX model with one input [N,inputDimension] and one output [N,outputDimension]. */
export async function loadHead(manifest: ModelManifest, dir: string, options: TowerSessionOptions = {}): Promise<Head | undefined> {
  const spec = manifest.head;
  if (!spec) return undefined;
  const session = await ort.InferenceSession.create(join(dir, spec.file), options.sessionOptions ?? {});
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  if (!inputName || !outputName) throw new Error(`head ${spec.file} must have one input and one output`);
  return {
    inputDimension: spec.inputDimension,
    outputDimension: spec.outputDimension,
    async apply(base) {
      if (base.length === 0) return [];
      const data = new Float32Array(base.length * spec.inputDimension);
      base.forEach((v, i) => {
        if (v.length !== spec.inputDimension) {
          throw new Error(`head input has dimension ${v.length}, the head expects ${spec.inputDimension}`);
        }
        data.set(v, i * spec.inputDimension);
      });
      const result = await session.run({ [inputName]: new ort.Tensor('float32', data, [base.length, spec.inputDimension]) });
      const out = result[outputName]!;
      const dim = out.dims[1] as number;
      if (dim !== spec.outputDimension) {
        throw new Error(`head ${spec.file} returned dimension ${dim}, the manifest says ${spec.outputDimension}`);
      }
      const values = out.data as Float32Array;
      return base.map((_, i) => values.slice(i * dim, (i + 1) * dim));
    },
    close: () => session.release(),
  };
}

/** Text towers are model-specific; the kinds are filled in as models with text arrive. */
export async function loadTextTower(manifest: ModelManifest, dir: string, _options: TowerSessionOptions = {}): Promise<TextTower | undefined> {
  const spec = manifest.text;
  if (!spec) return undefined;
  if (spec.kind === 'clip') {
    // CLIP-class encoder: BPE ids [N,contextLength] (int64) → [N,dimension]; normalised here.
    const { ClipTokenizer } = await import('../text/clip-tokenizer.js');
    const tokenizer = await ClipTokenizer.fromFile(join(dir, spec.tokenizerFile));
    const clipSession = await ort.InferenceSession.create(join(dir, spec.file), _options.sessionOptions ?? {});
    for (const [names, name, what] of [
      [clipSession.inputNames, spec.inputName, 'input'],
      [clipSession.outputNames, spec.outputName, 'output'],
    ] as const) {
      if (!names.includes(name)) throw new Error(`text tower ${spec.file} has no ${what} named "${name}" (it has: ${names.join(', ')})`);
    }
    return {
      dimension: spec.dimension,
      async embed(texts) {
        if (texts.length === 0) return [];
        const ids = new ort.Tensor('int64', tokenizer.tokenize(texts, spec.contextLength), [texts.length, spec.contextLength]);
        const out = (await clipSession.run({ [spec.inputName]: ids }))[spec.outputName]!;
        const dim = out.dims[1] as number;
        if (dim !== spec.dimension) throw new Error(`text tower ${spec.file} returned dimension ${dim}, the manifest says ${spec.dimension}`);
        const values = out.data as Float32Array;
        return texts.map((_, i) => l2NormaliseInPlace(values.slice(i * dim, (i + 1) * dim)));
      },
      close: () => clipSession.release(),
    };
  }
  // Hashed word/char n-grams as a dense [N,buckets] bag → ONNX embedding-bag (shared/training/onnx-export.ts).
  const { HashedNgramFeaturizer } = await import('../text/hashed-ngram.js');
  const featurizer = new HashedNgramFeaturizer({ buckets: spec.buckets });
  const session = await ort.InferenceSession.create(join(dir, spec.file), _options.sessionOptions ?? {});
  const [inputName] = session.inputNames;
  const [outputName] = session.outputNames;
  if (!inputName || !outputName) throw new Error(`text tower ${spec.file} must have one input and one output`);
  return {
    dimension: spec.dimension,
    async embed(texts) {
      if (texts.length === 0) return [];
      texts.forEach((t, i) => {
        if (typeof t !== 'string' || featurizer.featurize(t).indices.length === 0) {
          throw new Error(`text ${i} has no letters or digits to embed: ${JSON.stringify(t)}`);
        }
      });
      const input = new ort.Tensor('float32', featurizer.dense(texts), [texts.length, spec.buckets]);
      const out = (await session.run({ [inputName]: input }))[outputName]!;
      const dim = out.dims[1] as number;
      if (dim !== spec.dimension) throw new Error(`text tower ${spec.file} returned dimension ${dim}, the manifest says ${spec.dimension}`);
      const values = out.data as Float32Array;
      return texts.map((_, i) => values.slice(i * dim, (i + 1) * dim));
    },
    close: () => session.release(),
  };
}

import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';

/** Input of a run: float32, or uint8 for a model that takes raw pixel bytes. */
export type InputData = Float32Array | Uint8Array;

/** ONNX tensor type of an input array. */
export function tensorTypeOf(data: InputData): 'float32' | 'uint8' {
  return data instanceof Uint8Array ? 'uint8' : 'float32';
}

/** One float32 output of a run. */
export interface RunOutput {
  data: Float32Array;
  dims: readonly number[];
}

/** A run's main output, plus the extra outputs asked for (by name). */
export type RunResult = RunOutput & { extra?: Record<string, RunOutput> };

/** Runs one float32 (or uint8) input → one float32 output (and optionally more) of an ONNX model. */
export interface TensorRunner {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(inputName: string, data: InputData, dims: number[], outputName: string, extraOutputs?: readonly string[]): Promise<RunResult>;
  release(): Promise<void>;
}

/** In the calling thread (simple; blocks the event loop for the duration of each run). */
export class InThreadRunner implements TensorRunner {
  constructor(private readonly session: ort.InferenceSession) {}

  static async create(path: string, options: ort.InferenceSession.SessionOptions): Promise<InThreadRunner> {
    return new InThreadRunner(await ort.InferenceSession.create(path, options));
  }

  get inputNames() {
    return this.session.inputNames;
  }
  get outputNames() {
    return this.session.outputNames;
  }

  async run(inputName: string, data: InputData, dims: number[], outputName: string, extraOutputs: readonly string[] = []): Promise<RunResult> {
    const tensor = data instanceof Uint8Array ? new ort.Tensor('uint8', data, dims) : new ort.Tensor('float32', data, dims);
    const out = await this.session.run({ [inputName]: tensor }, [outputName, ...extraOutputs]);
    const t = out[outputName]!;
    const result: RunResult = { data: t.data as Float32Array, dims: t.dims };
    if (extraOutputs.length > 0) result.extra = Object.fromEntries(extraOutputs.map((n) => [n, { data: out[n]!.data as Float32Array, dims: out[n]!.dims }]));
    return result;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

type Pending = { resolve: (r: RunResult) => void; reject: (e: Error) => void };

/**
 * In a worker thread: the input buffer is transferred (not copied) and the main thread keeps
 * serving I/O while the model runs, so decoding, queueing and indexing overlap with inference.
 */
export class WorkerRunner implements TensorRunner {
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();
  private failure: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly inputNames: readonly string[],
    readonly outputNames: readonly string[],
  ) {
    worker.on('message', (msg: { type: string; id: number; data?: Float32Array; dims?: number[]; extra?: Record<string, RunOutput>; message?: string }) => {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.type === 'result') p.resolve({ data: msg.data!, dims: msg.dims!, ...(msg.extra ? { extra: msg.extra } : {}) });
      else p.reject(new Error(`inference failed: ${msg.message}`));
    });
    const fail = (err: Error) => {
      this.failure = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the inference worker exited (code ${code})`)));
  }

  static async create(path: string, options: ort.InferenceSession.SessionOptions): Promise<WorkerRunner> {
    const worker = new Worker(new URL('./inference-worker.mjs', import.meta.url), { workerData: { path, options } });
    const ready = await new Promise<{ inputNames: string[]; outputNames: string[] }>((resolve, reject) => {
      worker.once('message', (msg: { type: string; inputNames: string[]; outputNames: string[]; message?: string }) => {
        if (msg.type === 'ready') resolve(msg);
        else reject(new Error(msg.message ?? 'the inference worker failed to start'));
      });
      worker.once('error', reject);
    }).catch(async (err: Error) => {
      await worker.terminate();
      throw err;
    });
    return new WorkerRunner(worker, ready.inputNames, ready.outputNames);
  }

  run(inputName: string, data: InputData, dims: number[], outputName: string, extraOutputs: readonly string[] = []): Promise<RunResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise<RunResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Transfer when the array owns its buffer; a view into a larger buffer is copied.
      const owned = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
      this.worker.postMessage({ type: 'run', id, inputName, data: owned, dataType: tensorTypeOf(owned), dims, outputName, extraOutputs: [...extraOutputs] }, [
        owned.buffer as ArrayBuffer,
      ]);
    });
  }

  async release(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

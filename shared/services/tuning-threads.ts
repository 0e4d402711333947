import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { AppError } from '../errors.js';
import { silentLogger, type Logger } from '../logger.js';
import type { FeatureRecord, FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import type { EpochStats, FeedbackPair } from '../training/lit-trainer.js';
import { TrialStoppedError, type TrialResult, type TrialRunner, type TrialSpec } from './tuning.js';

/**
 * `imgsearch tune --parallel P`: trials in worker threads, P at a time. TensorFlow.js runs its
 * kernels on the thread that calls it, so trials in one thread take turns on one core; a thread
 * per trial gives each its own core (the CLI bounds P by the cores). Each thread runs `retrain()`
 * (tuning-trial-thread.ts) on:
 *  - the records, shared read-only: one SharedArrayBuffer of vectors, no copy per thread;
 *  - the registry of this thread, over a MessagePort (registering a candidate is a few writes;
 *    keeping them here keeps one writer of the registry, as the writer lock promises);
 *  - a stop flag in shared memory, which the trial reads after every epoch.
 */
export interface ThreadRunnerSetup {
  records: readonly FeatureRecord[];
  feedback: FeedbackPair[];
  registry: ModelRegistry;
  /** Where a trial's feature writes go (a tuned tower's base vectors), also through the port. */
  store?: Pick<FeatureStore, 'put' | 'delete'>;
  logger?: Logger;
}

/** The registry methods a trial calls through `retrain()` (never promote/rollback/remove: trials activate nothing). */
export const TRIAL_REGISTRY_METHODS = ['active', 'get', 'list', 'localPath', 'register', 'setMetrics'] as const;
type RegistryMethod = (typeof TRIAL_REGISTRY_METHODS)[number];

export interface SharedRecords {
  meta: Omit<FeatureRecord, 'vector'>[];
  /** Start of each record's vector in `vectors` (in floats), and its length. */
  offsets: number[];
  lengths: number[];
  vectors: SharedArrayBuffer;
}

export function shareRecords(records: readonly FeatureRecord[]): SharedRecords {
  const total = records.reduce((n, r) => n + r.vector.length, 0);
  const vectors = new SharedArrayBuffer(total * 4);
  const view = new Float32Array(vectors);
  const offsets: number[] = [];
  const lengths: number[] = [];
  let at = 0;
  const meta = records.map(({ vector, ...rest }) => {
    view.set(vector, at);
    offsets.push(at);
    lengths.push(vector.length);
    at += vector.length;
    return rest;
  });
  return { meta, offsets, lengths, vectors };
}

export function unshareRecords(shared: SharedRecords): FeatureRecord[] {
  return shared.meta.map((m, i) => ({ ...m, vector: new Float32Array(shared.vectors, shared.offsets[i]! * 4, shared.lengths[i]!) }));
}

/** Messages a trial thread posts. */
export type TrialThreadMessage =
  | { type: 'epoch'; stats: EpochStats }
  | { type: 'done'; result: TrialResult }
  | { type: 'stopped'; epoch: number }
  | { type: 'failed'; error: { name: string; message: string; code?: string; stack?: string } };

export interface TrialThreadData {
  spec: TrialSpec;
  records: SharedRecords;
  feedback: FeedbackPair[];
  /** Int32Array(2): [1 = stop now, the epoch last answered]. */
  stop: SharedArrayBuffer;
  registryPort: MessagePort;
  logLevel: string;
}

/** Feature-store calls a trial makes through the port (writes of a tuned tower's base vectors). */
export const TRIAL_STORE_METHODS = ['put', 'delete'] as const;

/** Answers a trial thread's registry (and feature-store write) calls with the real ones. */
function serveRegistry(port: MessagePort, registry: ModelRegistry, store: Pick<FeatureStore, 'put' | 'delete'> | undefined, logger: Logger): void {
  port.on('message', (msg: { id: number; target?: 'features'; method: RegistryMethod; args: unknown[] }) => {
    void (async () => {
      try {
        if (msg.target === 'features') {
          const method = msg.method as unknown as (typeof TRIAL_STORE_METHODS)[number];
          if (!store || !TRIAL_STORE_METHODS.includes(method)) throw new AppError(`a tuning trial may not call features.${String(method)}`);
          const value = await (store[method] as (...a: unknown[]) => Promise<unknown>)(...msg.args);
          port.postMessage({ id: msg.id, ok: true, value });
          return;
        }
        if (!TRIAL_REGISTRY_METHODS.includes(msg.method)) throw new AppError(`a tuning trial may not call registry.${String(msg.method)}`);
        const args = msg.method === 'register' ? [withBuffers(msg.args[0] as Parameters<ModelRegistry['register']>[0])] : msg.args;
        const value = await (registry[msg.method] as (...a: unknown[]) => Promise<unknown>)(...args);
        port.postMessage({ id: msg.id, ok: true, value });
      } catch (err) {
        logger.warn({ err, method: msg.method }, 'registry call of a tuning trial failed');
        const e = err as Error & { code?: string };
        port.postMessage({ id: msg.id, ok: false, error: { name: e.name, message: e.message, code: e.code } });
      }
    })();
  });
}

/** Buffers arrive as Uint8Arrays (structured clone keeps bytes, not the Buffer class). */
function withBuffers(entry: Parameters<ModelRegistry['register']>[0]): Parameters<ModelRegistry['register']>[0] {
  const files = Object.fromEntries(Object.entries(entry.files).map(([name, bytes]) => [name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)]));
  return { ...entry, files };
}

/** How to start the trial thread's module: through tsx when this code runs as TypeScript. */
function threadSource(): { code: string } {
  const entry = new URL(`./tuning-trial-thread${path.extname(new URL(import.meta.url).pathname) || '.js'}`, import.meta.url).href;
  if (!entry.endsWith('.ts')) return { code: `import(${JSON.stringify(entry)});` };
  const tsxDir = path.dirname(createRequire(import.meta.url).resolve('tsx/package.json'));
  const api = pathToFileURL(path.join(tsxDir, 'dist/esm/api/index.mjs')).href;
  return {
    code:
      `import(${JSON.stringify(api)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })` +
      `.catch((err) => { console.error(err); process.exit(70); });`,
  };
}

export function threadTrialRunner(setup: ThreadRunnerSetup): TrialRunner {
  const logger = setup.logger ?? silentLogger;
  const records = shareRecords(setup.records);
  const source = threadSource();
  const workers = new Set<Worker>();
  return {
    run(spec, hooks) {
      return new Promise<TrialResult>((resolve, reject) => {
        // [stop, last epoch answered]: the thread waits for the answer to each epoch, so a trial
        // stops at the same epoch as it would in this thread.
        const stop = new SharedArrayBuffer(8);
        const flag = new Int32Array(stop);
        const channel = new MessageChannel();
        serveRegistry(channel.port1, setup.registry, setup.store, logger);
        const data: TrialThreadData = { spec, records, feedback: setup.feedback, stop, registryPort: channel.port2, logLevel: logger.level };
        const worker = new Worker(source.code, { eval: true, workerData: data, transferList: [channel.port2] });
        workers.add(worker);
        let settled = false;
        const finish = (fn: () => void) => {
          if (settled) return;
          settled = true;
          workers.delete(worker);
          channel.port1.close();
          fn();
          void worker.terminate();
        };
        worker.on('message', (msg: TrialThreadMessage) => {
          if (msg.type === 'epoch') {
            hooks.onEpoch(msg.stats);
            if (hooks.shouldStop()) Atomics.store(flag, 0, 1);
            Atomics.store(flag, 1, msg.stats.epoch);
            Atomics.notify(flag, 1);
          } else if (msg.type === 'done') finish(() => resolve(msg.result));
          else if (msg.type === 'stopped') finish(() => reject(new TrialStoppedError(msg.epoch)));
          else {
            const err = new AppError(msg.error.message, { meta: { name: msg.error.name, code: msg.error.code } });
            err.name = msg.error.name;
            if (msg.error.stack) err.stack = msg.error.stack;
            finish(() => reject(err));
          }
        });
        worker.on('error', (err) => finish(() => reject(err)));
        worker.on('exit', (code) => finish(() => reject(new AppError(`tuning trial ${spec.trial} thread exited with code ${code} before finishing`))));
      });
    },
    async close() {
      await Promise.all([...workers].map((w) => w.terminate()));
    },
  };
}

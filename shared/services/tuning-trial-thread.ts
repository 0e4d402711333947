import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { createLogger } from '../logger.js';
import type { FeatureStore } from '../ports/feature-store.js';
import type { ModelRegistry } from '../ports/model-registry.js';
import { retrain } from './retrain.js';
import { TRIAL_REGISTRY_METHODS, TRIAL_STORE_METHODS, unshareRecords, type TrialThreadData, type TrialThreadMessage } from './tuning-threads.js';
import { SnapshotFeatureStore, TrialStoppedError } from './tuning.js';

/**
 * One tuning trial in a worker thread (started by tuning-threads.ts): `retrain()` with the trial's
 * options on the shared records, the registry reached over a MessagePort, no activation.
 */
const data = workerData as TrialThreadData;
const post = (msg: TrialThreadMessage) => parentPort!.postMessage(msg);
const flag = new Int32Array(data.stop);

function remote(port: MessagePort): { registry: ModelRegistry; writes: Pick<FeatureStore, 'put' | 'delete'> } {
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  port.on('message', (msg: { id: number; ok: boolean; value?: unknown; error?: { name: string; message: string } }) => {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.value);
    else {
      const err = new Error(msg.error!.message);
      err.name = msg.error!.name;
      p.reject(err);
    }
  });
  const call =
    (method: string, target?: 'features') =>
    (...args: unknown[]) =>
      new Promise((resolve, reject) => {
        const id = next++;
        pending.set(id, { resolve, reject });
        port.postMessage({ id, method, args, ...(target ? { target } : {}) });
      });
  const refused = (method: string) => () => Promise.reject(new Error(`a tuning trial may not call registry.${method}`));
  const registry = {
    ...Object.fromEntries(TRIAL_REGISTRY_METHODS.map((m) => [m, call(m)])),
    promote: refused('promote'),
    rollback: refused('rollback'),
    remove: refused('remove'),
  } as unknown as ModelRegistry;
  const writes = Object.fromEntries(TRIAL_STORE_METHODS.map((m) => [m, call(m, 'features')])) as unknown as Pick<FeatureStore, 'put' | 'delete'>;
  return { registry, writes };
}

async function main(): Promise<void> {
  const { registry, writes } = remote(data.registryPort);
  const logger = createLogger({ level: data.logLevel, destination: process.stderr, name: `tune-trial-${data.spec.trial}` });
  try {
    const {
      activation: _a,
      plot: _p,
      ...result
    } = await retrain(
      { features: new SnapshotFeatureStore(unshareRecords(data.records), writes), registry, feedback: async () => data.feedback, logger },
      data.spec.options,
      (p) => {
        if (p.stage !== 'train') return;
        post({ type: 'epoch', stats: p.epoch });
        // Wait (briefly) for the answer to this epoch, then obey it.
        for (let waited = 0; Atomics.load(flag, 1) < p.epoch.epoch && waited < 50; waited++) Atomics.wait(flag, 1, Atomics.load(flag, 1), 100);
        if (Atomics.load(flag, 0) === 1) throw new TrialStoppedError(p.epoch.epoch);
      },
    );
    post({ type: 'done', result });
  } catch (err) {
    if (err instanceof TrialStoppedError) post({ type: 'stopped', epoch: err.epoch });
    else {
      const e = err as Error & { code?: string };
      post({ type: 'failed', error: { name: e.name, message: e.message, code: e.code, stack: e.stack } });
    }
  } finally {
    data.registryPort.close();
  }
}

await main();

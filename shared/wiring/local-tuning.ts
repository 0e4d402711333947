import path from 'node:path';
import { FolderBlobStore } from '../adapters/local/folder-blob-store.js';
import type { LocalConfig } from '../config.js';
import { BlobExperimentRunStore, type ExperimentRunStore } from '../services/experiment-runs.js';
import { threadTrialRunner } from '../services/tuning-threads.js';
import { inProcessTrialRunner, type TuneDeps } from '../services/tuning.js';

/** Experiment runs of `imgsearch tune`, beside the model registry: `<IMGSEARCH_HOME>/runs/<id>.json`. */
export function localExperimentRuns(config: Pick<LocalConfig, 'home'>): ExperimentRunStore {
  return new BlobExperimentRunStore(new FolderBlobStore(path.join(config.home, 'runs')));
}

/** Trials in this thread for `--parallel 1`, else one worker thread per running trial. */
export const localTrialRunner: NonNullable<TuneDeps['runner']> = (setup) => (setup.parallel > 1 ? threadTrialRunner(setup) : inProcessTrialRunner(setup));

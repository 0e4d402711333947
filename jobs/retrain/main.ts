/**
 * Container entry point of the retraining job (Cloud Run job / local `imgsearch retrain`).
 * Local adapters for now; the cloud wiring (GCS-backed registry and features) replaces them here.
 * Prints the result as one JSON line; exit code 0 whether or not the candidate was promoted.
 */
import { loadConfig } from '../../shared/config.js';
import { createLogger } from '../../shared/logger.js';
import { LanceDbFeatureStore } from '../../shared/adapters/local/lancedb-feature-store.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { runRetraining } from './retrain-job.js';

const config = loadConfig();
const logger = createLogger({ level: config.logLevel, name: 'retrain' });
const features = await LanceDbFeatureStore.open(config.paths.features);
const registry = new LocalModelRegistry(config.paths.models);
const num = (name: string, fallback: number) => (process.env[name] ? Number(process.env[name]) : fallback);
const result = await runRetraining(
  { features, registry, logger },
  { seed: num('RETRAIN_SEED', 42), epochs: num('RETRAIN_EPOCHS', 30), margin: num('RETRAIN_MARGIN', 0.005), heldOutFraction: num('RETRAIN_HELD_OUT', 0.1) },
  (p) => logger.info({ progress: p }, `retrain ${p.stage}`),
);
process.stdout.write(`${JSON.stringify({ promoted: result.promoted, decision: result.decision, candidate: result.candidate.metrics, current: result.current.metrics })}\n`);

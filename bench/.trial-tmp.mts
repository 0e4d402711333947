import { LanceDbFeatureStore } from '../shared/adapters/local/lancedb-feature-store.js';
import { LocalModelRegistry } from '../shared/adapters/local/local-model-registry.js';
import { runRetraining } from '../jobs/retrain/retrain-job.js';
const home = process.argv[2]!;
const features = await LanceDbFeatureStore.open(`${home}/features`);
const registry = new LocalModelRegistry(`${home}/models`);
const configs: any[] = JSON.parse(process.argv[3]!);
for (const c of configs) {
  const r = await runRetraining({ features, registry }, { promote: false, ...c });
  console.log(JSON.stringify(c), r.candidate.metrics.imageToImage['recall@1'].toFixed(3), r.current.metrics.imageToImage['recall@1'].toFixed(3), r.candidate.metrics.textToImage?.['precision@10'].toFixed(3), 'best', r.candidate.training.bestEpoch, r.candidate.training.seconds.toFixed(1));
}

/**
 * Google Cloud adapters behind the project's ports. Each takes its settings (clients, project,
 * bucket, names) as constructor arguments; the cloud entry points read the environment and build
 * them. Nothing here reads environment variables.
 */
export { GcsBlobStore, type GcsWriteOptions } from './gcs-blob-store.js';
export { PubSubEventBus, type PubSubEventBusOptions } from './pubsub-event-bus.js';
export { CloudRunJobLauncher, type CloudRunJobLauncherOptions, type CloudRunOverrides } from './cloud-run-job-launcher.js';
export { VertexJobLauncher, type VertexJobLauncherOptions, type VertexJobSpec } from './vertex-job-launcher.js';
export { GcsModelRegistry, type GcsModelRegistryOptions } from './gcs-model-registry.js';
export { GcsFeatureStore, type GcsFeatureStoreOptions } from './gcs-feature-store.js';
export {
  EmbeddingShardReader,
  decodeEmbeddingShard,
  encodeEmbeddingShard,
  readEmbeddingShard,
  writeEmbeddingShard,
  type EmbeddingShardRef,
} from './embedding-shards.js';
export { withLeaseExtension } from '../lease-extension.js';

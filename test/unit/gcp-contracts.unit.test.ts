import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsModelRegistry } from '../../shared/adapters/gcp/gcs-model-registry.js';
import { describeBlobStoreContract } from '../contracts/blob-store.contract.js';
import { describeFeatureStoreContract } from '../contracts/feature-store.contract.js';
import { describeModelRegistryContract } from '../contracts/model-registry.contract.js';
import { FakeGcsServer } from './gcp-fake-gcs-server.js';

/**
 * The shared port contracts, run against the GCS adapters through the real Storage client and a
 * fake JSON API server. (The EventBus contract needs exact backlog counts, FIFO order and nack
 * reasons, which Pub/Sub does not offer; the Pub/Sub adapter has its own request-level tests.)
 */
const server = new FakeGcsServer();
beforeAll(async () => {
  await server.start();
});
afterAll(async () => {
  await server.stop();
});

let n = 0;
const freshBucket = () => `contract-bucket-${(n += 1)}`;

describeBlobStoreContract('GCS (fake JSON API)', async () => ({
  store: new GcsBlobStore(server.storage(), freshBucket()),
  cleanup: async () => {},
}));

describeModelRegistryContract('GCS (fake JSON API)', async () => {
  const cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-gcs-registry-'));
  return {
    registry: new GcsModelRegistry({ storage: server.storage(), bucket: freshBucket(), cacheDir }),
    cleanup: () => fs.rm(cacheDir, { recursive: true, force: true }),
  };
});

describeFeatureStoreContract('GCS shards (fake JSON API)', async () => ({
  store: new GcsFeatureStore(new GcsBlobStore(server.storage(), freshBucket())),
  cleanup: async () => {},
}));

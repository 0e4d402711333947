import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { FolderBlobStore } from '../../shared/adapters/local/folder-blob-store.js';
import { LanceDbFeatureStore } from '../../shared/adapters/local/lancedb-feature-store.js';
import { PerTowerFeatureStore } from '../../shared/adapters/local/per-tower-feature-store.js';
import { LanceDbIndexCatalog } from '../../shared/adapters/local/lancedb-index.js';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import { describeBlobStoreContract } from '../contracts/blob-store.contract.js';
import { CONTRACT_MAX_ATTEMPTS, describeEventBusContract } from '../contracts/event-bus.contract.js';
import { describeFeatureStoreContract } from '../contracts/feature-store.contract.js';
import { describeModelRegistryContract } from '../contracts/model-registry.contract.js';
import { describeVectorIndexContract } from '../contracts/vector-index.contract.js';

/** Every port contract, run against the embedded adapters. */
async function tempDir(prefix: string): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `iss-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

describeVectorIndexContract('LanceDB', async () => {
  const t = await tempDir('index');
  return { catalog: await LanceDbIndexCatalog.open(t.dir), cleanup: t.cleanup };
});

describeEventBusContract(
  'FileQueue',
  async () => {
    const t = await tempDir('queue');
    return { bus: new FileQueue(t.dir, { maxDeliveryAttempts: CONTRACT_MAX_ATTEMPTS }), topic: 'image-events', cleanup: t.cleanup };
  },
  { leaseSeconds: 0.3 },
);

describeBlobStoreContract('FolderBlobStore', async () => {
  const t = await tempDir('blobs');
  return { store: new FolderBlobStore(t.dir), cleanup: t.cleanup };
});

describeModelRegistryContract('LocalModelRegistry', async () => {
  const t = await tempDir('models');
  return { registry: new LocalModelRegistry(t.dir), cleanup: t.cleanup };
});

describeFeatureStoreContract('LanceDB, one table per image tower', async () => {
  const t = await tempDir('features-towers');
  const store = await PerTowerFeatureStore.open(t.dir);
  return {
    store,
    cleanup: async () => {
      await store.close();
      await t.cleanup();
    },
  };
});

describeFeatureStoreContract('LanceDB', async () => {
  const t = await tempDir('features');
  const store = await LanceDbFeatureStore.open(t.dir);
  return {
    store,
    cleanup: async () => {
      await store.close();
      await t.cleanup();
    },
  };
});

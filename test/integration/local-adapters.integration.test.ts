import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileQueue } from '../../shared/adapters/local/file-queue.js';
import { FolderBlobStore, readSmallFile } from '../../shared/adapters/local/folder-blob-store.js';
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

for (const [name, prefix, open] of [
  ['LanceDB, one table per image tower', 'features-towers', (dir: string) => PerTowerFeatureStore.open(dir)],
  ['LanceDB', 'features', (dir: string) => LanceDbFeatureStore.open(dir)],
] as const) {
  describeFeatureStoreContract(name, async () => {
    const t = await tempDir(prefix);
    const store = await open(t.dir);
    return {
      store,
      cleanup: async () => {
        await store.close();
        await t.cleanup();
      },
    };
  });
}

describe('FileQueue with several instances on one folder (another process, another command)', () => {
  it('delivers what another instance published, and what was nacked, on the next pulls; never twice', async () => {
    const t = await tempDir('queue-shared');
    try {
      const a = new FileQueue(t.dir, { maxDeliveryAttempts: 5 });
      const b = new FileQueue(t.dir, { maxDeliveryAttempts: 5 });
      await a.publishBatch(
        'q',
        [0, 1, 2].map((i) => ({ data: { i } })),
      );
      const first = await a.pull<{ i: number }>('q', { maxMessages: 1 });
      expect(first.map((d) => d.data.i)).toEqual([0]);
      // `a` has a listing of ready/ with 1 and 2 left; `b` publishes 3 and claims 1 behind its back.
      await b.publish('q', { i: 3 });
      const stolen = await b.pull<{ i: number }>('q', { maxMessages: 1 });
      expect(stolen.map((d) => d.data.i)).toEqual([1]);
      const next = await a.pull<{ i: number }>('q', { maxMessages: 10 });
      const rest = await a.pull<{ i: number }>('q', { maxMessages: 10 });
      expect([...next, ...rest].map((d) => d.data.i)).toEqual([2, 3]);
      // A nacked message is back in line at once, in its place, although `a` still holds a listing.
      await a.publishBatch(
        'q',
        [4, 5].map((i) => ({ data: { i } })),
      );
      await a.nack('q', [first[0]!.ackId], 'try again');
      const again = await a.pull<{ i: number }>('q', { maxMessages: 1 });
      expect(again.map((d) => [d.data.i, d.deliveryAttempt])).toEqual([[0, 2]]);
      expect(await a.stats('q')).toEqual({ ready: 2, inflight: 4, deadLettered: 0 });
    } finally {
      await t.cleanup();
    }
  });
});

describe('FolderBlobStore and special files', () => {
  it('a FIFO or a device named like an image is neither listed nor read, and nothing waits or reads without end', async () => {
    const t = await tempDir('fifo');
    try {
      const store = new FolderBlobStore(t.dir);
      await store.write('a.png', Buffer.from('not really a png'));
      execFileSync('mkfifo', [path.join(t.dir, 'b.png')]);
      const names: string[] = [];
      for await (const info of store.list()) names.push(info.name);
      expect(names).toEqual(['a.png']);
      expect(await store.stat('b.png')).toBeNull();
      await expect(store.read('b.png')).rejects.toThrow(/not found/);
      expect((await store.read('a.png')).toString()).toBe('not really a png');
      // A small file swapped, between its stat and its read, for a FIFO or a link to a device: the
      // read on the calling thread returns at once without reading (no wait for a writer, no
      // endless /dev/zero), and so does a file that has grown past the limit meanwhile.
      expect(readSmallFile(path.join(t.dir, 'b.png'))).toBeNull();
      await symlink('/dev/zero', path.join(t.dir, 'z.png'));
      expect(readSmallFile(path.join(t.dir, 'z.png'))).toBeNull();
      await expect(store.read('z.png')).rejects.toThrow(/not found/);
      await writeFile(path.join(t.dir, 'big.png'), Buffer.alloc(256 * 1024 + 1));
      expect(readSmallFile(path.join(t.dir, 'big.png'))).toBeNull();
      expect(readSmallFile(path.join(t.dir, 'a.png'))?.toString()).toBe('not really a png');
    } finally {
      await t.cleanup();
    }
  });
});

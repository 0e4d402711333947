import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GcsBlobStore } from '../../shared/adapters/gcp/gcs-blob-store.js';
import { GcsFeatureStore } from '../../shared/adapters/gcp/gcs-feature-store.js';
import { GcsModelRegistry } from '../../shared/adapters/gcp/gcs-model-registry.js';
import { EmbeddingShardReader, readEmbeddingShard, writeEmbeddingShard } from '../../shared/adapters/gcp/embedding-shards.js';
import { NotFoundError, ParseError } from '../../shared/errors.js';
import { testManifest } from '../contracts/model-registry.contract.js';
import { fakeGcsForSuite } from './gcp-fake-gcs-server.js';

const BUCKET = 'iss-artifacts';
const server = fakeGcsForSuite();
let cacheDir: string;

beforeEach(async () => {
  cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'iss-gcs-unit-'));
});
afterEach(async () => {
  await fs.rm(cacheDir, { recursive: true, force: true });
});

const registry = () => new GcsModelRegistry({ storage: server.storage(), bucket: BUCKET, cacheDir });
const register = (r: GcsModelRegistry, version: string) =>
  r.register({ version, parent: null, manifest: testManifest(version), files: { 'image.onnx': Buffer.from(`w-${version}`) } });

describe('GcsModelRegistry', () => {
  it('writes meta.json last with ifGenerationMatch=0 and guards active.json with the read generation', async () => {
    const r = registry();
    await register(r, 'v1');
    const uploads = server.requests.filter((q) => q.method === 'POST').map((q) => [q.query.name, q.query.ifGenerationMatch]);
    expect(uploads).toEqual([
      ['models/v1/image.onnx', undefined],
      ['models/v1/manifest.json', undefined],
      ['models/v1/meta.json', '0'],
    ]);
    await r.promote('v1');
    expect(server.requests.filter((q) => q.method === 'POST').at(-1)!.query).toMatchObject({ name: 'models/active.json', ifGenerationMatch: '0' });
    const firstGeneration = server.get(BUCKET, 'models/active.json')!.generation;
    await register(r, 'v2');
    await r.promote('v2');
    expect(server.requests.filter((q) => q.method === 'POST').at(-1)!.query).toMatchObject({ ifGenerationMatch: firstGeneration });
    expect(JSON.parse(server.get(BUCKET, 'models/active.json')!.data.toString())).toMatchObject({ active: 'v2' });
  });

  it('two registries promoting at once: both promotions land in the history (optimistic retry)', async () => {
    const a = registry();
    const b = registry();
    await register(a, 'v1');
    await register(a, 'v2');
    await Promise.all([a.promote('v1'), b.promote('v2')]);
    const state = JSON.parse(server.get(BUCKET, 'models/active.json')!.data.toString()) as { history: { version: string }[] };
    expect(state.history.map((h) => h.version).sort()).toEqual(['v1', 'v2']);
    // Both read generation 0 and raced: one write got 412 and was retried on the new generation.
    expect(server.requests.filter((q) => q.method === 'POST' && q.query.name === 'models/active.json').length).toBeGreaterThanOrEqual(3);
  });

  it('localPath downloads a version once into the cache dir', async () => {
    const r = registry();
    await register(r, 'v1');
    const [dir, again] = await Promise.all([r.localPath('v1'), r.localPath('v1')]);
    expect(dir).toBe(path.join(cacheDir, 'v1'));
    expect(again).toBe(dir);
    expect((await fs.readdir(dir)).sort()).toEqual(['image.onnx', 'manifest.json', 'meta.json']);
    const downloads = server.requests.filter((q) => q.query.alt === 'media').length;
    expect(await registry().localPath('v1')).toBe(dir);
    expect(server.requests.filter((q) => q.query.alt === 'media').length).toBe(downloads);
    await expect(r.localPath('v9')).rejects.toBeInstanceOf(NotFoundError);
  });

  it('rejects a corrupt meta.json with a ParseError and a manifest of another version', async () => {
    const r = registry();
    server.put(BUCKET, 'models/bad/meta.json', '{not json');
    await expect(r.get('bad')).rejects.toBeInstanceOf(ParseError);
    await expect(r.register({ version: 'v3', parent: null, manifest: testManifest('v2'), files: {} })).rejects.toThrow(/does not match/);
    await expect(r.register({ version: 'v3', parent: null, manifest: testManifest('v3'), files: { '../x': Buffer.from('') } })).rejects.toThrow(
      /relative path/,
    );
  });
});

describe('GcsFeatureStore shards', () => {
  const vec = (x: number) => new Float32Array([x, x + 1, x + 2]);
  const rec = (id: string, generation: string, x: number) => ({ id, uri: `gs://b/${id}`, generation, baseModel: 'b1', vector: vec(x), labels: [] });

  it('writes one gzip JSONL shard per put, readable by a second store instance (another writer)', async () => {
    const blobs = new GcsBlobStore(server.storage(), BUCKET);
    const writer = new GcsFeatureStore(blobs);
    const reader = new GcsFeatureStore(new GcsBlobStore(server.storage(), BUCKET));
    await writer.put([rec('a', '5', 1)]);
    const shards = [...server.buckets.get(BUCKET)!.keys()];
    expect(shards).toHaveLength(1);
    expect(shards[0]).toMatch(/^features\/shards\/\d{15}-[0-9a-f]{12}\.jsonl\.gz$/);
    const lines = gunzipSync(server.get(BUCKET, shards[0]!)!.data).toString().trim().split('\n');
    expect(JSON.parse(lines[0]!)).toEqual({ format: 'iss-features/1', dimension: 3, rows: 1 });
    expect(JSON.parse(lines[1]!)).toMatchObject({ op: 'put', id: 'a', generation: '5' });
    expect(await reader.count()).toBe(1);
    await writer.put([rec('a', '6', 10)]);
    await writer.delete([{ id: 'b', generation: '1' }]);
    expect(Array.from((await reader.get('a'))!.vector)).toEqual([10, 11, 12]);
    expect(await reader.count()).toBe(1);
  });

  it('skips stale rows, compacts into one shard and keeps tombstones', async () => {
    const store = new GcsFeatureStore(new GcsBlobStore(server.storage(), BUCKET));
    await store.put([rec('a', '5', 1), rec('b', '5', 2)]);
    await store.put([rec('a', '4', 9)]); // stale: no shard written
    expect(server.buckets.get(BUCKET)!.size).toBe(1);
    await store.delete([{ id: 'b', generation: '5' }]);
    await store.put([rec('c', '1', 3)]);
    expect(await store.compact()).toEqual({ shardsBefore: 3, rows: 3 });
    expect(server.buckets.get(BUCKET)!.size).toBe(1);
    const fresh = new GcsFeatureStore(new GcsBlobStore(server.storage(), BUCKET));
    expect(await fresh.count()).toBe(2);
    await fresh.put([rec('b', '5', 2)]);
    expect(await fresh.get('b')).toBeNull();
    const ids = [];
    for await (const page of fresh.scan(10)) ids.push(...page.map((r) => r.id));
    expect(ids.sort()).toEqual(['a', 'c']);
  });

  it('a reader whose shard was compacted away by another process rebuilds its view', async () => {
    const a = new GcsFeatureStore(new GcsBlobStore(server.storage(), BUCKET));
    const b = new GcsFeatureStore(new GcsBlobStore(server.storage(), BUCKET));
    await a.put([rec('x', '1', 5)]);
    expect(await b.count()).toBe(1);
    await a.put([rec('y', '1', 6)]);
    await a.compact();
    expect(Array.from((await b.get('x'))!.vector)).toEqual([5, 6, 7]);
    expect(await b.count()).toBe(2);
  });

  it('embedding shards: vectors by reference, each shard read once by a reader', async () => {
    const blobs = new GcsBlobStore(server.storage(), BUCKET);
    const vectors = [new Float32Array([0.5, -1]), new Float32Array([2, 3.25])];
    const written = await writeEmbeddingShard(blobs, vectors);
    expect(written.refs).toEqual([
      { shard: written.shard, row: 0 },
      { shard: written.shard, row: 1 },
    ]);
    expect(written.shard).toMatch(/^embeddings\/shards\/\d{15}-[0-9a-f]{12}\.f32$/);
    expect(Array.from(await readEmbeddingShard(blobs, { shard: written.shard, row: 1 }))).toEqual([2, 3.25]);
    const reader = new EmbeddingShardReader(blobs);
    const before = server.requests.filter((q) => q.query.alt === 'media').length;
    const got = await Promise.all(written.refs.map((ref) => reader.read(ref)));
    expect(got.map((v) => Array.from(v))).toEqual([
      [0.5, -1],
      [2, 3.25],
    ]);
    expect(server.requests.filter((q) => q.query.alt === 'media').length).toBe(before + 1);
    await expect(reader.read({ shard: written.shard, row: 2 })).rejects.toThrow(/past the end/);
    await expect(reader.read({ shard: 'embeddings/shards/none.f32', row: 0 })).rejects.toBeInstanceOf(NotFoundError);
    server.put(BUCKET, 'bad.f32', 'garbage without header');
    await expect(reader.read({ shard: 'bad.f32', row: 0 })).rejects.toBeInstanceOf(ParseError);
    await expect(writeEmbeddingShard(blobs, [new Float32Array(2), new Float32Array(3)])).rejects.toThrow(/dimension 3, expected 2/);
  });
});

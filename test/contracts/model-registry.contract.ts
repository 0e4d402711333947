import { promises as fs } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ModelManifest } from '../../shared/model/manifest.js';
import type { ModelRegistry } from '../../shared/ports/model-registry.js';

/** The behaviour every ModelRegistry adapter must have (local folder, GCS). */
export interface ModelRegistryFixture {
  registry: ModelRegistry;
  cleanup(): Promise<void>;
}

export function testManifest(version: string, dimension = 8): ModelManifest {
  return {
    name: 'test-model',
    version,
    image: {
      file: 'image.onnx',
      inputName: 'input',
      outputName: 'output',
      width: 4,
      height: 4,
      layout: 'NHWC',
      scale: 1 / 255,
      mean: [0, 0, 0],
      std: [1, 1, 1],
      resize: 'cover',
      dimension,
    },
    dimension,
    normalize: true,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function describeModelRegistryContract(label: string, makeRegistry: () => Promise<ModelRegistryFixture>): void {
  describe(`ModelRegistry contract: ${label}`, () => {
    let fx: ModelRegistryFixture;
    let registry: ModelRegistry;
    beforeEach(async () => {
      fx = await makeRegistry();
      registry = fx.registry;
    });
    afterEach(async () => fx.cleanup());

    const register = (version: string, parent: string | null = null) =>
      registry.register({
        version,
        parent,
        manifest: testManifest(version),
        files: { 'image.onnx': Buffer.from(`weights of ${version}`) },
        lineage: { dataSnapshot: 'snap-1' },
      });

    it('starts empty', async () => {
      expect(await registry.list()).toEqual([]);
      expect(await registry.active()).toBeNull();
      expect(await registry.get('v1')).toBeNull();
    });

    it('registers a version with manifest, files, lineage; localPath holds the files', async () => {
      const v = await register('v1');
      expect(v).toMatchObject({ version: 'v1', parent: null, metrics: null, lineage: { dataSnapshot: 'snap-1' }, active: false });
      expect(v.manifest.version).toBe('v1');
      const dir = await registry.localPath('v1');
      expect(await fs.readFile(path.join(dir, 'image.onnx'), 'utf8')).toBe('weights of v1');
      await registry.setMetrics('v1', { imageToImage: { recallAt1: 0.8 } });
      expect((await registry.get('v1'))!.metrics).toEqual({ imageToImage: { recallAt1: 0.8 } });
    });

    it('refuses to register the same version twice and unsafe version names', async () => {
      await register('v1');
      await expect(register('v1')).rejects.toThrow(/already/);
      await expect(register('../evil')).rejects.toThrow(/version/i);
      await expect(registry.promote('missing')).rejects.toThrow(/missing/);
    });

    it('lists oldest first; promote sets exactly one active; rollback walks back', async () => {
      await register('v1');
      await sleep(5);
      await register('v2', 'v1');
      await sleep(5);
      await register('v3', 'v2');
      expect((await registry.list()).map((v) => v.version)).toEqual(['v1', 'v2', 'v3']);
      await expect(registry.rollback()).rejects.toThrow(/roll back/i);
      await registry.promote('v1');
      await expect(registry.rollback()).rejects.toThrow(/roll back/i);
      await registry.promote('v2');
      await registry.promote('v3');
      expect((await registry.active())!.version).toBe('v3');
      expect((await registry.list()).filter((v) => v.active).map((v) => v.version)).toEqual(['v3']);
      expect(await registry.rollback()).toBe('v2');
      expect((await registry.active())!.version).toBe('v2');
      expect(await registry.rollback()).toBe('v1');
      expect((await registry.get('v2'))!.parent).toBe('v1');
    });

    it('remove deletes a version, refusing the active one and the rollback target; a rollback never reaches a removed version', async () => {
      for (const v of ['v1', 'v2', 'v3', 'v4']) {
        await register(v);
        await sleep(2);
      }
      await registry.promote('v1');
      await registry.promote('v2');
      await registry.promote('v3');
      expect((await registry.list()).map((v) => [v.version, v.everActive])).toEqual([
        ['v1', true],
        ['v2', true],
        ['v3', true],
        ['v4', false],
      ]);
      await expect(registry.remove('v3')).rejects.toThrow(/v3.*active/);
      await expect(registry.remove('v2')).rejects.toThrow(/v2.*rollback/);
      await expect(registry.remove('nope')).rejects.toThrow(/not registered/);
      await registry.remove('v4');
      await registry.remove('v1');
      expect((await registry.list()).map((v) => v.version)).toEqual(['v2', 'v3']);
      expect(await registry.get('v4')).toBeNull();
      await expect(registry.localPath('v4')).rejects.toThrow(/not registered/);
      expect(await registry.rollback()).toBe('v2');
      await expect(registry.rollback()).rejects.toThrow(/v1.*removed/);
      expect((await registry.active())!.version).toBe('v2');
    });
  });
}

import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { KerasModelArtifacts } from './keras-to-onnx.js';

/**
 * The Keras MobileNetV2 (ImageNet backbone + NSFW head) that the npm package `nsfwjs` ships as two
 * UMD modules. The package's `exports` map hides them, so the package folder is located from its
 * resolved entry point and the files are required by absolute path. Nothing is downloaded.
 */
const require = createRequire(import.meta.url);

export const NSFWJS_MODEL_SUBDIR = join('dist', 'models', 'mobilenet_v2');

export function nsfwjsPackageDir(): string {
  // Walk up from the entry point to the package.json naming nsfwjs (dist/cjs has a nested one).
  const entry = require.resolve('nsfwjs');
  for (let dir = dirname(entry); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (require(manifest) as { name?: string }).name === 'nsfwjs') return dir;
    if (dirname(dir) === dir) throw new Error(`cannot find the package folder of nsfwjs above ${entry}`);
  }
}

export function nsfwjsPackageVersion(): string {
  return (require(join(nsfwjsPackageDir(), 'package.json')) as { version: string }).version;
}

/** Topology, weight manifest and the weight bytes of nsfwjs' MobileNetV2. */
export function loadNsfwjsMobilenetV2(): KerasModelArtifacts {
  const folder = join(nsfwjsPackageDir(), NSFWJS_MODEL_SUBDIR);
  const model = require(join(folder, 'model.min.js')) as Pick<KerasModelArtifacts, 'modelTopology' | 'weightsManifest'>;
  const shard = require(join(folder, 'group1-shard1of1.min.js')) as unknown;
  if (typeof shard !== 'string') throw new Error('nsfwjs weight shard is not a base64 string');
  if (!model.modelTopology || !Array.isArray(model.weightsManifest)) {
    throw new Error('nsfwjs model.min.js does not export {modelTopology, weightsManifest}');
  }
  const bytes = Buffer.from(shard, 'base64');
  return {
    modelTopology: model.modelTopology,
    weightsManifest: model.weightsManifest,
    weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
  };
}

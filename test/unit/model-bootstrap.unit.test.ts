import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import onnxProto from 'onnx-proto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalModelRegistry } from '../../shared/adapters/local/local-model-registry.js';
import type { ModelRegistry, ModelVersion } from '../../shared/ports/model-registry.js';
import { bootstrapModel } from '../../shared/services/model-bootstrap.js';
import { ChecksumMismatchError, CLIP_VIT_B32 } from '../../shared/services/model-pull.js';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';
import { strict } from '../helpers/strict-fakes.js';
import { captureLogger } from './functions-fakes.js';

const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
const DIM = 6;
const SIDE = 4;
const CONTEXT = 8;
const merges = ['d o', 'do g</w>', 'c a', 'ca t</w>', 'p h', 'ph o', 'pho t', 'phot o</w>'];

const floats = (n: number, f: (i: number) => number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => f(i)).buffer);

/** A tiny CLIP-shaped image tower: pixel_values [N,3,4,4] → mean over H,W → MatMul [3,6] → image_embeds [N,6]. */
function tinyImageTower(): Uint8Array {
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'tiny_clip_image',
        node: [
          {
            opType: 'ReduceMean',
            input: ['pixel_values'],
            output: ['pooled'],
            attribute: [
              { name: 'axes', type: onnx.AttributeProto.AttributeType.INTS, ints: [2, 3] },
              { name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 },
            ],
          },
          { opType: 'MatMul', input: ['pooled', 'w'], output: ['image_embeds'] },
        ],
        initializer: [{ name: 'w', dims: [3, DIM], dataType: FLOAT, rawData: floats(3 * DIM, (i) => (i % 7) - 3) }],
        input: [
          {
            name: 'pixel_values',
            type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 3 }, { dimValue: SIDE }, { dimValue: SIDE }] } } },
          },
        ],
        output: [{ name: 'image_embeds', type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: DIM }] } } } }],
      },
    }),
  ).finish();
}

/** A tiny CLIP-shaped text tower: input_ids [N,8] (int64) → Gather → ReduceSum → text_embeds [N,6]. */
function tinyTextTower(vocab: number): Uint8Array {
  const axes = BigInt64Array.from([1n]);
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'tiny_clip_text',
        node: [
          { opType: 'Gather', input: ['token_embedding', 'input_ids'], output: ['tokens'] },
          {
            opType: 'ReduceSum',
            input: ['tokens', 'axes'],
            output: ['text_embeds'],
            attribute: [{ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 }],
          },
        ],
        initializer: [
          { name: 'token_embedding', dims: [vocab, DIM], dataType: FLOAT, rawData: floats(vocab * DIM, (i) => Math.sin(i)) },
          { name: 'axes', dims: [1], dataType: onnx.TensorProto.DataType.INT64, rawData: new Uint8Array(axes.buffer) },
        ],
        input: [
          {
            name: 'input_ids',
            type: { tensorType: { elemType: onnx.TensorProto.DataType.INT64, shape: { dim: [{ dimParam: 'batch' }, { dimValue: CONTEXT }] } } },
          },
        ],
        output: [{ name: 'text_embeds', type: { tensorType: { elemType: FLOAT, shape: { dim: [{ dimParam: 'batch' }, { dimValue: DIM }] } } } }],
      },
    }),
  ).finish();
}

/** The canonical file names served by an in-memory "internet"; records every URL asked for. */
function fakeInternet(files: Record<string, Buffer>) {
  const requested: string[] = [];
  const fetchFn = (async (input: string | URL | Request) => {
    const url = String(input);
    requested.push(url);
    const name = Object.entries(CLIP_VIT_B32.urls).find(([, u]) => u === url)?.[0];
    if (!name || !files[name]) return new Response('not found', { status: 404 });
    return new Response(new Uint8Array(files[name]), { status: 200 });
  }) as typeof fetch;
  return { fetch: fetchFn, requested };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let work: string;
let registry: LocalModelRegistry;
const tinyFiles = {
  'vision_model.onnx': Buffer.from(tinyImageTower()),
  'text_model.onnx': Buffer.from(tinyTextTower(new ClipTokenizer(merges).vocabSize)),
  'bpe_simple_vocab_16e6.txt.gz': gzipSync(`#version: 0.2\n${merges.join('\n')}\n`),
};
const tinySha = Object.fromEntries(Object.entries(tinyFiles).map(([name, bytes]) => [name, sha256(bytes)]));

beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), 'iss-bootstrap-'));
  registry = new LocalModelRegistry(join(work, 'registry'));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('bootstrapModel (the first model of a registry)', () => {
  it('changes nothing when a model is already active (idempotent: the job can run again)', async () => {
    const active = { version: 'm7', active: true } as ModelVersion;
    const readOnly = strict<ModelRegistry>('registry', { active: async () => active });
    const { logger } = captureLogger();
    const internet = fakeInternet({});
    expect(await bootstrapModel(readOnly, { initial: 'clip-vit-b32', cacheDir: work, logger, fetch: internet.fetch })).toEqual({
      status: 'present',
      version: 'm7',
    });
    expect(internet.requested).toEqual([]);
  });

  it('clip-vit-b32: downloads the pinned files, checks their SHA-256, registers and promotes; a second run finds it present', async () => {
    const internet = fakeInternet(tinyFiles);
    const { logger } = captureLogger();
    const result = await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: internet.fetch, sha256: tinySha });
    expect(result).toMatchObject({ status: 'promoted', initial: 'clip-vit-b32', registered: true });
    expect(result.version).toMatch(/^clip-vit-b32-[0-9a-f]{10}$/);
    expect(internet.requested.sort()).toEqual(Object.values(CLIP_VIT_B32.urls).sort());
    // Pinned URLs: a revision / commit, never a moving branch.
    for (const url of Object.values(CLIP_VIT_B32.urls)) expect(url).toMatch(/^https:\/\/[^/]+\/.*\/[0-9a-f]{40}\//);

    const active = await registry.active();
    expect(active).toMatchObject({
      version: result.version,
      manifest: {
        name: 'clip-vit-b32',
        dimension: DIM,
        image: { width: SIDE, height: SIDE, outputName: 'image_embeds' },
        text: { kind: 'clip', contextLength: CONTEXT },
      },
    });
    expect(await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: internet.fetch, sha256: tinySha })).toEqual({
      status: 'present',
      version: result.version,
    });
  });

  it('refuses a download whose SHA-256 is not the pinned one: deleted, nothing registered or promoted', async () => {
    // The tiny files are not the real CLIP files, so the built-in pinned table rejects them.
    const internet = fakeInternet(tinyFiles);
    const { logger } = captureLogger();
    const cache = join(work, 'cache');
    const attempt = bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: cache, logger, fetch: internet.fetch });
    await expect(attempt).rejects.toThrow(ChecksumMismatchError);
    await expect(attempt).rejects.toThrow(
      /has SHA-256 [0-9a-f]{64}, expected (fd6e1402|3f6571f5|924691ac)[0-9a-f]+: the download is corrupt or not the pinned file/,
    );
    expect(await registry.list()).toEqual([]);
    expect(await registry.active()).toBeNull();
    // The first file failed its check and was removed (no .part left either): nothing else was fetched.
    expect(await readdir(join(cache, 'clip-vit-b32'))).toEqual([]);
    expect(internet.requested).toEqual([CLIP_VIT_B32.urls['vision_model.onnx']]);
  });

  it('re-downloads a cached file that no longer matches its checksum', async () => {
    const { logger } = captureLogger();
    const cache = join(work, 'cache');
    const first = fakeInternet(tinyFiles);
    await bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: cache, logger, fetch: first.fetch, sha256: tinySha });
    // A second registry, same cache: nothing is downloaded again while the cache matches.
    const again = fakeInternet(tinyFiles);
    await bootstrapModel(new LocalModelRegistry(join(work, 'registry-2')), {
      initial: 'clip-vit-b32',
      cacheDir: cache,
      logger,
      fetch: again.fetch,
      sha256: tinySha,
    });
    expect(again.requested).toEqual([]);
    await writeFile(join(cache, 'clip-vit-b32', 'text_model.onnx'), 'truncated');
    const third = fakeInternet(tinyFiles);
    await bootstrapModel(new LocalModelRegistry(join(work, 'registry-3')), {
      initial: 'clip-vit-b32',
      cacheDir: cache,
      logger,
      fetch: third.fetch,
      sha256: tinySha,
    });
    expect(third.requested).toEqual([CLIP_VIT_B32.urls['text_model.onnx']]);
  });

  it('says how to proceed without internet when a download fails', async () => {
    const { logger } = captureLogger();
    await expect(bootstrapModel(registry, { initial: 'clip-vit-b32', cacheDir: join(work, 'cache'), logger, fetch: fakeInternet({}).fetch })).rejects.toThrow(
      /cannot download https:\/\/huggingface\.co\/.*HTTP 404.*imgsearch model pull clip-vit-b32 --from <folder>/,
    );
    expect(await registry.active()).toBeNull();
  });
});

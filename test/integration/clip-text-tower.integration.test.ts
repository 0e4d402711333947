import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelManifest } from '../../shared/model/manifest.js';
import { loadTextTower } from '../../shared/model/towers.js';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';
import { mulberry32 } from '../../shared/training/prng.js';

const { onnx } = onnxProto;
const merges = ['d o', 'do g</w>', 'c a', 'ca t</w>', 'p h', 'ph o', 'pho t', 'phot o</w>'];
const CONTEXT = 8;
const DIM = 6;

/** A tiny CLIP-shaped text encoder: ids [N,8] (int64) → Gather(embedding) → ReduceSum over tokens. */
function tinyTextEncoder(vocab: number, table: Float32Array): Uint8Array {
  const float = onnx.TensorProto.DataType.FLOAT;
  const axes = BigInt64Array.from([1n]);
  return onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 17 }],
      graph: {
        name: 'tiny_clip_text',
        node: [
          { opType: 'Gather', input: ['token_embedding', 'input_ids'], output: ['tokens'], name: 'gather' },
          {
            opType: 'ReduceSum',
            input: ['tokens', 'axes'],
            output: ['text_embeds'],
            name: 'pool',
            attribute: [{ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 }],
          },
        ],
        initializer: [
          { name: 'token_embedding', dims: [vocab, DIM], dataType: float, rawData: new Uint8Array(table.buffer) },
          { name: 'axes', dims: [1], dataType: onnx.TensorProto.DataType.INT64, rawData: new Uint8Array(axes.buffer) },
        ],
        input: [
          {
            name: 'input_ids',
            type: { tensorType: { elemType: onnx.TensorProto.DataType.INT64, shape: { dim: [{ dimParam: 'batch' }, { dimValue: CONTEXT }] } } },
          },
        ],
        output: [{ name: 'text_embeds', type: { tensorType: { elemType: float, shape: { dim: [{ dimParam: 'batch' }, { dimValue: DIM }] } } } }],
      },
    }),
  ).finish();
}

describe("text tower kind 'clip' (offline stand-in for `model pull clip-vit-b32`)", () => {
  let dir: string;
  const tokenizer = new ClipTokenizer(merges);
  const random = mulberry32(2);
  const table = Float32Array.from({ length: tokenizer.vocabSize * DIM }, () => random() - 0.5);
  const manifest: ModelManifest = {
    name: 'tiny-clip',
    version: 'tiny-clip-1',
    image: {
      file: 'image.onnx',
      inputName: 'pixel_values',
      outputName: 'image_embeds',
      width: 4,
      height: 4,
      layout: 'NCHW',
      scale: 1 / 255,
      mean: [0.48, 0.46, 0.41],
      std: [0.27, 0.26, 0.28],
      resize: 'cover',
      dimension: DIM,
    },
    text: {
      kind: 'clip',
      file: 'text.onnx',
      tokenizerFile: 'bpe_simple_vocab.txt.gz',
      inputName: 'input_ids',
      outputName: 'text_embeds',
      contextLength: CONTEXT,
      dimension: DIM,
    },
    dimension: DIM,
    normalize: true,
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'clip-'));
    await writeFile(join(dir, 'text.onnx'), tinyTextEncoder(tokenizer.vocabSize, table));
    await writeFile(join(dir, 'bpe_simple_vocab.txt.gz'), gzipSync(`#version: 0.2\n${merges.join('\n')}\n`));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('tokenizes with the gzipped merges file and embeds through onnxruntime, L2-normalised', async () => {
    const fromFile = await ClipTokenizer.fromFile(join(dir, 'bpe_simple_vocab.txt.gz'));
    expect(fromFile.encode('a photo of a dog')).toEqual(tokenizer.encode('a photo of a dog'));
    const tower = (await loadTextTower(manifest, dir))!;
    const texts = ['a photo of a dog', 'Cat'];
    const got = await tower.embed(texts);
    const ids = tokenizer.tokenize(texts, CONTEXT);
    texts.forEach((_, row) => {
      const ref = new Float32Array(DIM);
      for (let t = 0; t < CONTEXT; t++) for (let j = 0; j < DIM; j++) ref[j]! += table[Number(ids[row * CONTEXT + t]) * DIM + j]!;
      const norm = Math.hypot(...ref);
      ref.forEach((x, j) => expect(got[row]![j]).toBeCloseTo(x / norm, 5));
    });
    await tower.close();
  });

  it('names the missing input when the manifest does not match the model', async () => {
    const wrong = { ...manifest, text: { ...manifest.text!, inputName: 'ids' } } as ModelManifest;
    await expect(loadTextTower(wrong, dir)).rejects.toThrow(/no input named "ids"/);
  });
});

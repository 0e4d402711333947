import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import onnxProto from 'onnx-proto';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';

/**
 * A tiny CLIP-shaped model (image tower, text tower, BPE merges) under the canonical file names,
 * for tests of the CLIP pull and bootstrap: real ONNX files onnxruntime loads, a few KB each.
 */
const { onnx } = onnxProto;
const FLOAT = onnx.TensorProto.DataType.FLOAT;
export const DIM = 6;
export const SIDE = 4;
export const CONTEXT = 8;
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

export const tinyClipFiles: Record<string, Buffer> = {
  'vision_model.onnx': Buffer.from(tinyImageTower()),
  'text_model.onnx': Buffer.from(tinyTextTower(new ClipTokenizer(merges).vocabSize)),
  'bpe_simple_vocab_16e6.txt.gz': gzipSync(`#version: 0.2\n${merges.join('\n')}\n`),
};

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** SHA-256 of each tiny file, by canonical name. */
export const tinyClipSha: Record<string, string> = Object.fromEntries(Object.entries(tinyClipFiles).map(([name, bytes]) => [name, sha256(bytes)]));

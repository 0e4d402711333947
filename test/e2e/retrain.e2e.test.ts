import { promises as fs } from 'node:fs';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';
import { mulberry32 } from '../../shared/training/prng.js';
import { gzipSync } from 'node:zlib';
import { runCli, tempDir } from '../helpers/cli.js';
import {
  evalOutputSchema,
  ingestOutputSchema,
  modelListOutputSchema,
  modelPullOutputSchema,
  retrainOutputSchema,
  searchOutputSchema,
  statusOutputSchema,
} from '../../shared/output-schemas.js';

/**
 * What a user types: dataset → ingest → retrain → eval → model list → text search → the plot;
 * and `model pull clip-vit-b32` from a folder (offline) with a tiny CLIP-shaped model.
 */
const IMAGES = 240;

describe('imgsearch retrain / eval / model pull (CLI)', () => {
  let work: string;
  const cli = (...args: string[]) => runCli(args, { cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'home') } });

  beforeAll(async () => {
    work = await tempDir('retrain-e2e');
    expect((await cli('dataset', 'fashion-mnist', '--out', 'imgs', '--limit', String(IMAGES))).code).toBe(0);
    const ingest = await cli('ingest', 'imgs', '--json');
    expect(ingest.code, ingest.stderr).toBe(0);
    expect(JSON.parse(ingest.stdout).indexed).toBe(IMAGES);
  }, 90_000);

  afterAll(async () => {
    if (work) await fs.rm(work, { recursive: true, force: true });
  });

  it('explains that eval needs labelled images before any exist', async () => {
    const empty = await runCli(['eval', '--json'], { cwd: work, env: { IMGSEARCH_HOME: path.join(work, 'empty-home') } });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toMatch(/at least 20 labelled images/);
  }, 30_000);

  it('rejects bad retrain options with the allowed range', async () => {
    const bad = await cli('retrain', '--held-out', '1.5');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--held-out.*strictly between 0 and 1/);
    const narrow = await cli('retrain', '--hidden', '0');
    expect(narrow.code).not.toBe(0);
    expect(narrow.stderr).toMatch(/--hidden/);
    const grid = await cli('retrain', '--region-grid', '9');
    expect(grid.code).not.toBe(0);
    expect(grid.stderr).toMatch(/--region-grid/);
    expect(grid.stderr).toMatch(/0.*7/);
  });

  it('retrains, evaluates, lists, searches by text and plots', async () => {
    // --margin 1 cannot be met: the candidate is registered with its metrics but not promoted,
    // the refusal path; `model promote` then activates it the way a user overrides the gate.
    const retrain = await cli('retrain', '--epochs', '4', '--hidden', '96', '--margin', '1', '--json');
    expect(retrain.code, retrain.stderr).toBe(0);
    expect(retrain.stderr).toMatch(/epoch 1\/4 {2}loss \d+\.\d{4}/);
    const result = retrainOutputSchema.parse(JSON.parse(retrain.stdout));
    expect(result).toMatchObject({ promoted: false, index: null, decision: { promote: false } });
    const candidate: string = result.candidate.version;
    expect(result.candidate.training.history.length).toBeGreaterThan(0);
    expect(result.candidate.training.hidden).toBe(96);

    const list1 = modelListOutputSchema.parse(JSON.parse((await cli('model', 'list', '--json')).stdout)).versions;
    expect(list1.map((v) => [v.version, v.active, v.everActive])).toEqual([
      [result.current.version, true, true],
      [candidate, false, false],
    ]);

    const promote = await cli('model', 'promote', candidate);
    expect(promote.code, promote.stderr).toBe(0);
    expect(promote.stdout).toMatch(new RegExp(`active model ${candidate}; rebuilt the index .*\\(${IMAGES} documents\\)`));

    const evalRun = await cli('eval', '--json');
    expect(evalRun.code, evalRun.stderr).toBe(0);
    const report = evalOutputSchema.parse(JSON.parse(evalRun.stdout));
    expect(Object.keys(JSON.parse(evalRun.stdout))).toEqual(['schemaVersion', 'modelVersion', 'imageToImage', 'textToImage', 'counts']);
    expect(report.modelVersion).toBe(candidate);
    expect(Object.keys(report.imageToImage)).toEqual(['recall@1', 'recall@5', 'recall@10', 'mAP@10']);
    expect(Object.keys(report.textToImage!)).toEqual(['precision@10', 'recall@10']);

    const listed = JSON.parse((await cli('model', 'list', '--json')).stdout);
    const list = modelListOutputSchema.parse(listed).versions;
    expect(listed.versions.map((v: object) => Object.keys(v))).toEqual(list.map(() => ['version', 'active', 'everActive', 'parent', 'createdAt', 'metrics']));
    expect(list.map((v) => v.createdAt)).toEqual(list.map((v) => v.createdAt).sort());
    expect(list[1]).toMatchObject({ version: candidate, active: true, everActive: true, parent: list[0]!.version });
    expect(list[1]!.metrics!.imageToImage).toEqual(report.imageToImage);

    const search = await cli('search', '--text', 'Trouser', '--json');
    expect(search.code, search.stderr).toBe(0);
    const hits = searchOutputSchema.parse(JSON.parse(search.stdout)).results;
    expect(hits).toHaveLength(10);
    expect(hits.filter((h) => h.labels.includes('Trouser')).length).toBeGreaterThanOrEqual(5);

    const png = await fs.readFile(path.join(work, 'home', 'reports', 'metrics.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  }, 120_000);

  it('adapts the tower layout with --region-grid: a candidate whose base has the regional part, listed with it', async () => {
    const regional = await cli('retrain', '--region-grid', '3', '--epochs', '1', '--hidden', '64', '--margin', '1', '--json');
    expect(regional.code, regional.stderr).toBe(0);
    const out = retrainOutputSchema.parse(JSON.parse(regional.stdout));
    expect(out.candidate.training).toMatchObject({ regionGrid: 3, regionWeight: 2 });
    expect(out.promoted).toBe(false); // --margin 1: registered, not promoted
    const list = modelListOutputSchema.parse(JSON.parse((await cli('model', 'list', '--json')).stdout));
    expect(list.versions.map((v) => v.version)).toContain(out.candidate.version);
    // The text output says what the candidate's tower is.
    const text = await cli('retrain', '--region-grid', '2', '--epochs', '1', '--hidden', '64', '--margin', '1');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/image tower: block 13 pooled over 2×2 regions \(weight 2\)/);
  }, 120_000);

  it('pulls a CLIP-shaped model from a folder, registers it unpromoted, and says what to do offline', async () => {
    const dir = path.join(work, 'clip');
    await writeTinyClip(dir);
    const pulled = await cli('model', 'pull', 'clip-vit-b32', '--from', dir, '--json');
    expect(pulled.code, pulled.stderr).toBe(0);
    const { version, registered, manifest } = modelPullOutputSchema.parse(JSON.parse(pulled.stdout));
    expect(registered).toBe(true);
    expect(manifest).toMatchObject({
      name: 'clip-vit-b32',
      dimension: DIM,
      image: { width: SIDE, layout: 'NCHW', dimension: DIM },
      text: { kind: 'clip', contextLength: CONTEXT, dimension: DIM },
    });
    const again = JSON.parse((await cli('model', 'pull', 'clip-vit-b32', '--from', dir, '--json')).stdout);
    expect(again).toMatchObject({ version, registered: false });
    const list = modelListOutputSchema.parse(JSON.parse((await cli('model', 'list', '--json')).stdout)).versions;
    expect(list.find((v) => v.version === version)).toMatchObject({ active: false, everActive: false });

    const plain = await cli('model', 'pull', 'clip-vit-b32', '--from', 'http://127.0.0.1:9/clip');
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/only https:\/\/ mirrors are accepted/);
    const offline = await cli('model', 'pull', 'clip-vit-b32', '--from', 'https://127.0.0.1:9/clip');
    expect(offline.code).not.toBe(0);
    expect(offline.stderr).toMatch(/cannot download .*vision_model\.onnx.*--from <folder>/);
    const missing = await cli('model', 'pull', 'clip-vit-b32', '--from', path.join(work, 'imgs'));
    expect(missing.stderr).toMatch(/has none of vision_model\.onnx/);

    // A new image tower: the stored base embeddings cannot be re-projected, the user is told so.
    const promote = await cli('model', 'promote', version);
    expect(promote.code, promote.stderr).toBe(0);
    expect(promote.stdout).toMatch(new RegExp(`${IMAGES} images need re-embedding`));
    // Re-embedding with the new tower works: its base embeddings get a feature table of their own.
    const reingest = await cli('ingest', 'imgs', '--json');
    expect(reingest.code, reingest.stderr).toBe(0);
    expect(ingestOutputSchema.parse(JSON.parse(reingest.stdout))).toMatchObject({ indexed: IMAGES, rejected: 0 });
    const status = statusOutputSchema.parse(JSON.parse((await cli('status', '--json')).stdout));
    expect(status).toMatchObject({ indexed: IMAGES, model: { version } });
  }, 120_000);
});

// A tiny CLIP-shaped model (the generator of test/integration/clip-text-tower.integration.test.ts
// plus an image tower): ids [N,8] → Gather → ReduceSum; pixels [N,3,4,4] → Flatten → MatMul.
const { onnx } = onnxProto;
const merges = ['d o', 'do g</w>', 'c a', 'ca t</w>', 'p h', 'ph o', 'pho t', 'phot o</w>'];
const CONTEXT = 8;
const DIM = 6;
const SIDE = 4;

function model(graph: Parameters<typeof onnx.GraphProto.create>[0]): Uint8Array {
  return onnx.ModelProto.encode(onnx.ModelProto.create({ irVersion: 8, opsetImport: [{ domain: '', version: 17 }], graph })).finish();
}

async function writeTinyClip(dir: string): Promise<void> {
  const float = onnx.TensorProto.DataType.FLOAT;
  const random = mulberry32(5);
  const vocab = new ClipTokenizer(merges).vocabSize;
  const table = Float32Array.from({ length: vocab * DIM }, () => random() - 0.5);
  const weights = Float32Array.from({ length: 3 * SIDE * SIDE * DIM }, () => random() - 0.5);
  const axes = BigInt64Array.from([1n]);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(
    path.join(dir, 'text_model.onnx'),
    model({
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
    }),
  );
  await fs.writeFile(
    path.join(dir, 'vision_model.onnx'),
    model({
      name: 'tiny_clip_vision',
      node: [
        { opType: 'Flatten', input: ['pixel_values'], output: ['flat'], attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 }] },
        { opType: 'MatMul', input: ['flat', 'proj'], output: ['image_embeds'] },
      ],
      initializer: [{ name: 'proj', dims: [3 * SIDE * SIDE, DIM], dataType: float, rawData: new Uint8Array(weights.buffer) }],
      input: [
        {
          name: 'pixel_values',
          type: { tensorType: { elemType: float, shape: { dim: [{ dimParam: 'batch' }, { dimValue: 3 }, { dimValue: SIDE }, { dimValue: SIDE }] } } },
        },
      ],
      output: [{ name: 'image_embeds', type: { tensorType: { elemType: float, shape: { dim: [{ dimParam: 'batch' }, { dimValue: DIM }] } } } }],
    }),
  );
  await fs.writeFile(path.join(dir, 'bpe_simple_vocab_16e6.txt.gz'), gzipSync(`#version: 0.2\n${merges.join('\n')}\n`));
}

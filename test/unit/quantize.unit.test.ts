import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OnnxGraphBuilder } from '../../shared/model/onnx/graph-builder.js';
import { RangeHistogram, activationParams, opTypeCounts, planQuantization, quantizeModel, quantizeWeightsPerChannel } from '../../shared/model/quantize.js';
import { mulberry32 } from '../../shared/training/prng.js';

/**
 * The quantiser on a small MobileNet-shaped net built here: input → stem Conv+ReLU6 → 1×1
 * Conv+ReLU6 → depthwise Conv+ReLU6 → linear 1×1 Conv → residual Sum with the stem → Conv+ReLU6 →
 * last Conv+ReLU6 → pooled embedding, plus a float branch reading the input. The real tower's parity is in test/integration/int8-parity.integration.test.ts.
 */
const random = mulberry32(11);
const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());

function smallNet(): Uint8Array {
  const g = new OnnxGraphBuilder();
  g.input('x', ['batch', 4, 8, 8]);
  const w = (n: number, scale: number) => Array.from({ length: n }, () => gauss() * scale);
  const conv = (input: string, outC: number, inC: number, k: number, group: number, name: string) =>
    g.node(
      'Conv',
      [input, g.floats(w((outC * inC * k * k) / group, 0.4), [outC, inC / group, k, k]), g.floats(w(outC, 0.1), [outC])],
      { kernel_shape: [k, k], pads: [k >> 1, k >> 1, k >> 1, k >> 1], group },
      name,
    );
  const relu6 = (input: string, name: string) => g.node('Clip', [input, g.scalar(0), g.scalar(6)], {}, name);
  const stem = relu6(conv('x', 4, 4, 3, 1, 'stem'), 'stem_relu');
  const expand = relu6(conv(stem, 8, 4, 1, 1, 'expand'), 'expand_relu');
  const depthwise = relu6(conv(expand, 8, 8, 3, 8, 'depthwise'), 'depthwise_relu');
  const project = conv(depthwise, 4, 8, 1, 1, 'project');
  const sum = g.node('Sum', [stem, project], {}, 'add');
  const mix = relu6(conv(sum, 4, 4, 3, 1, 'mix'), 'mix_relu');
  const last = relu6(conv(mix, 16, 4, 1, 1, 'last'), 'last_relu');
  const pooled = g.globalAveragePool({ name: last, shape: [-1, 16, 8, 8] });
  const thumb = g.globalAveragePool({ name: 'x', shape: [-1, 4, 8, 8] });
  const out = g.tensor('Concat', [pooled.name, thumb.name], [-1, 20], { axis: 1 }, 'embedding');
  g.output(out.name, ['batch', 20]);
  return g.encode({ graphName: 'small', producerName: 'test', docString: '' });
}

function batch(n: number): { data: Float32Array; dims: number[] } {
  return { data: Float32Array.from({ length: n * 4 * 64 }, () => random()), dims: [n, 4, 8, 8] };
}

async function* batches(count: number) {
  for (let i = 0; i < count; i++) yield batch(4);
}

describe('activation ranges', () => {
  it("each side's percentile lands within one bin of the true one, across batches that widen the range", () => {
    const h = new RangeHistogram(2048);
    // −1..−400 then 401..1000 (a larger batch: the histogram widens once).
    h.add(Float32Array.from({ length: 400 }, (_, i) => -(i + 1)));
    h.add(Float32Array.from({ length: 600 }, (_, i) => i + 401));
    expect([h.min, h.max, h.total]).toEqual([-400, 1000, 1000]);
    const binWidth = h.range / 2048;
    expect(Math.abs(h.percentile(99, 'positive') - 994)).toBeLessThanOrEqual(binWidth + 1);
    expect(Math.abs(h.percentile(50, 'positive') - 700)).toBeLessThanOrEqual(binWidth + 1);
    expect(Math.abs(h.percentile(50, 'negative') - 200)).toBeLessThanOrEqual(binWidth + 1);
    expect(h.percentile(100, 'positive')).toBe(1000);
    expect(h.percentile(100, 'negative')).toBe(400);
    // |x| of all 1000 values: 1..1000 once each.
    expect(Math.abs(h.percentile(30, 'both') - 300)).toBeLessThanOrEqual(binWidth + 1);
  });

  it('uint8 with zero point 0 for a tensor never negative; symmetric around 128 for a signed one', () => {
    expect(activationParams({ lo: 0, hi: 6, min: 0, max: 6 })).toEqual({ scale: 6 / 255, zeroPoint: 0 });
    expect(activationParams({ lo: -2.54, hi: 2.54, min: -3, max: 1 })).toEqual({ scale: 0.02, zeroPoint: 128 });
  });

  it('weights: one symmetric scale per output channel, every weight within half a step', () => {
    const weights = Float32Array.from([0.5, -1, 0.25, 0.001, -0.002, 0.0005]);
    const q = quantizeWeightsPerChannel(weights, 2);
    expect(Array.from(q.scales)).toEqual([Math.fround(1 / 127), Math.fround(0.002 / 127)]);
    expect(Array.from(q.values.slice(0, 3))).toEqual([64, -127, 32]);
    expect(q.values[4]).toBe(-127);
    weights.forEach((v, i) => expect(Math.abs(q.values[i]! * q.scales[Math.floor(i / 3)]! - v)).toBeLessThanOrEqual(q.scales[Math.floor(i / 3)]! / 2 + 1e-9));
  });
});

describe('QDQ placement on a MobileNet-shaped block', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'iss-quantize-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('plans a pair on every Conv input and output (after its ReLU6), none on the float branch', () => {
    const plan = planQuantization(OnnxGraphBuilder.decode(smallNet()));
    expect(plan.convs.sort()).toEqual(['depthwise', 'expand', 'last', 'mix', 'project', 'stem']);
    expect(plan.tensors.sort()).toEqual(['add', 'depthwise_relu', 'expand_relu', 'last_relu', 'mix_relu', 'project', 'stem_relu', 'x']);
    // The input is also read by a float branch: only the Conv reads it quantised.
    expect(plan.allReaders.has('x')).toBe(false);
    expect(plan.allReaders.has('project')).toBe(true);
  });

  it('onnxruntime fuses every Conv into QLinearConv and the residual into QLinearAdd; outputs stay close', async () => {
    const fp32 = smallNet();
    const q = await quantizeModel(fp32, batches(8), { threads: 1 });
    expect(q.calibrationImages).toBe(32);
    // The saved QDQ model: int8 weights behind DequantizeLinear on every Conv.
    const saved = OnnxGraphBuilder.decode(q.bytes).graph!;
    for (const conv of saved.node!.filter((n) => n.opType === 'Conv')) {
      const producer = (name: string) => saved.node!.find((n) => n.output![0] === name);
      expect(conv.input!.map((i) => producer(i)?.opType)).toEqual(['DequantizeLinear', 'DequantizeLinear', 'DequantizeLinear']);
    }
    const optimised = join(dir, 'optimised.onnx');
    const session = await ort.InferenceSession.create(q.bytes, { graphOptimizationLevel: 'extended', optimizedModelFilePath: optimised, intraOpNumThreads: 1 });
    const ops = opTypeCounts(await readFile(optimised));
    expect(ops.get('QLinearConv')).toBe(6);
    expect((ops.get('Conv') ?? 0) + (ops.get('FusedConv') ?? 0)).toBe(0);
    expect(ops.get('QLinearAdd')).toBe(1);
    const reference = await ort.InferenceSession.create(fp32, { intraOpNumThreads: 1 });
    const input = batch(16);
    const a = (await reference.run({ x: new ort.Tensor('float32', input.data, input.dims) })).embedding!.data as Float32Array;
    const b = (await session.run({ x: new ort.Tensor('float32', input.data, input.dims) })).embedding!.data as Float32Array;
    for (let i = 0; i < 16; i++) {
      const x = a.slice(i * 20, (i + 1) * 20);
      const y = b.slice(i * 20, (i + 1) * 20);
      const cos = x.reduce((s, v, j) => s + v * y[j]!, 0) / Math.sqrt(x.reduce((s, v) => s + v * v, 0) * y.reduce((s, v) => s + v * v, 0));
      expect(cos).toBeGreaterThan(0.99);
    }
    // The float branch (pooled input) is exact: it reads the input, not its quantised copy.
    for (let i = 0; i < 16; i++) for (let j = 16; j < 20; j++) expect(b[i * 20 + j]).toBeCloseTo(a[i * 20 + j]!, 6);
    await Promise.all([session.release(), reference.release()]);
  });

  it('refuses a model it cannot quantise, and an empty calibration set', async () => {
    const g = new OnnxGraphBuilder();
    g.input('x', ['batch', 4]);
    g.output(g.node('Relu', ['x'], {}, 'y'), ['batch', 4]);
    await expect(quantizeModel(g.encode({ graphName: 'n', producerName: 't', docString: '' }), batches(1))).rejects.toThrow(/no Conv with constant weights/);
    await expect(quantizeModel(smallNet(), batches(0))).rejects.toThrow(/at least one image/);
  });
});

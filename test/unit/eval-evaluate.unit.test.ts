import { describe, expect, it } from 'vitest';
import { exactTopK } from '../../shared/evaluation/exact-search.js';
import { evaluateModel, metricsPlotSvg, renderMetricsPlot } from '../../shared/evaluation/evaluate.js';
import { mulberry32 } from '../../shared/training/prng.js';

const v = (...xs: number[]) => {
  const n = Math.hypot(...xs);
  return Float32Array.from(xs, (x) => x / n);
};

describe('exact cosine search', () => {
  it('chunked top-k equals brute force', async () => {
    const random = mulberry32(1);
    const vec = () => v(...Array.from({ length: 8 }, () => random() - 0.5));
    const corpus = Array.from({ length: 300 }, vec);
    const queries = Array.from({ length: 7 }, vec);
    const top = await exactTopK(queries, corpus, 5, { chunkSize: 64, queryBatch: 3 });
    queries.forEach((q, qi) => {
      const brute = corpus
        .map((c, i) => ({ i, s: c.reduce((acc, x, j) => acc + x * q[j]!, 0) }))
        .sort((a, b) => b.s - a.s)
        .slice(0, 5)
        .map((x) => x.i);
      expect(Array.from(top.indices[qi]!)).toEqual(brute);
    });
  });

  it('rejects a bad k and mismatched dimensions', async () => {
    await expect(exactTopK([v(1, 0)], [v(1, 0)], 0)).rejects.toThrow(/positive integer/);
    await expect(exactTopK([v(1, 0)], [v(1, 0, 0)], 1)).rejects.toThrow(/dimension 3/);
  });
});

describe('evaluateModel (hand-computed)', () => {
  it('scores image→image with the query excluded and text→image among held-out images', async () => {
    const rest = [
      { id: 'a', vector: v(1, 0), labels: ['cat'] },
      { id: 'b', vector: v(0, 1), labels: ['dog'] },
      { id: 'q2', vector: v(0.6, 0.4), labels: ['dog'] }, // the query itself is in the corpus: excluded
    ];
    const heldOut = [
      { id: 'q1', vector: v(1, 0.1), labels: ['cat'] }, // nearest a (cat): hit at rank 1
      { id: 'q2', vector: v(0.6, 0.4), labels: ['dog'] }, // nearest a (cat), then b (dog): hit at rank 2
      { id: 'u', vector: v(1, 1), labels: [] }, // unlabelled: not a query
    ];
    const report = await evaluateModel({
      modelVersion: 'm1',
      heldOut,
      rest,
      labelVectors: new Map([
        ['cat', v(1, 0)],
        ['dog', v(0, 1)],
        ['bird', v(1, 1)],
      ]),
    });
    expect(report.modelVersion).toBe('m1');
    expect(report.imageToImage['recall@1']).toBe(0.5);
    expect(report.imageToImage['recall@5']).toBe(1);
    // q1: R=1, AP = 1; q2: R=1 (b; itself excluded), AP = 1/2.
    expect(report.imageToImage['mAP@10']).toBeCloseTo(0.75);
    expect(report.counts).toEqual({ queries: 2, answerableQueries: 2, corpus: 3, textQueries: 2 });
    // Text queries search the 2 labelled held-out images; each label has 1 relevant of 2 results.
    expect(report.textToImage!['precision@10']).toBeCloseTo(0.1);
    expect(report.textToImage!['recall@10']).toBe(1);
  });

  it('textToImage is null without a text tower', async () => {
    const r = await evaluateModel({
      modelVersion: 'base',
      heldOut: [{ id: 'q', vector: v(1, 0), labels: ['x'] }],
      rest: [{ id: 'a', vector: v(1, 0), labels: ['x'] }],
    });
    expect(r.textToImage).toBeNull();
    expect(r.imageToImage['recall@1']).toBe(1);
  });
});

describe('metrics plot', () => {
  it('draws one series per metric and renders a PNG', async () => {
    const history = [
      { version: 'base-1', metrics: { imageToImage: { 'recall@1': 0.8 }, textToImage: null } },
      { version: 'lit-2', metrics: { imageToImage: { 'recall@1': 0.88 }, textToImage: { 'precision@10': 0.95 } } },
    ];
    const svg = metricsPlotSvg(history);
    expect(svg).toContain('image→image recall@1');
    expect(svg).toContain('text→image precision@10');
    const png = await renderMetricsPlot(history);
    expect(png.readUInt32BE(0)).toBe(0x89504e47);
    expect(png.readUInt32BE(16)).toBe(800); // IHDR width
  });
});

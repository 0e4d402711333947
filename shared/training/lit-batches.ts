import { ParseError } from '../errors.js';
import { shuffledIndices } from './prng.js';

/**
 * The data side of LiT training: examples and click feedback turned into index tables once
 * ({@link prepare}), shuffled mini-batches with feedback pairs riding along ({@link epochBatches}),
 * and each batch's positive masks ({@link batchTargets}). Plain TypeScript, no tensors.
 */
export interface TrainingExample {
  id: string;
  /** L2-normalised base embedding. */
  vector: Float32Array;
  labels: string[];
  caption?: string;
  /** The stored block activation (IEEE half bits), for tuning the tower's top blocks (tower-blocks.ts). */
  activation?: Uint16Array;
}

export type FeedbackPair = { kind: 'image'; queryId: string; openedId: string } | { kind: 'text'; query: string; openedId: string };

export interface PreparedData {
  examples: TrainingExample[];
  /** Per example: indices into `texts` of its positive texts. */
  textsOf: number[][];
  /** Per example: label ids (for image↔image positives). */
  labelIds: number[][];
  /** Label texts first (`labelTextCount` of them), then captions and feedback query texts. */
  texts: string[];
  labelTextCount: number;
  /** Image feedback as example index pairs (query image, opened image). */
  pairs: [number, number][];
}

/** Refuses what training cannot use: too few examples, mixed dimensions, non-finite values, nothing to learn. */
export function validateExamples(examples: TrainingExample[]): void {
  if (examples.length < 2) throw new ParseError(`LiT training needs at least 2 examples, got ${examples.length}`);
  const d = examples[0]!.vector.length;
  if (d === 0) throw new ParseError('training vectors are empty');
  examples.forEach((e, i) => {
    if (e.vector.length !== d) throw new ParseError(`example ${i} (${e.id}) has dimension ${e.vector.length}, expected ${d}`);
    if (!e.vector.every(Number.isFinite)) throw new ParseError(`example ${i} (${e.id}) has a non-finite value`);
  });
  if (!examples.some((e) => e.labels.length > 0 || e.caption)) {
    throw new ParseError('no training example has a label or caption: nothing to learn from');
  }
}

export function prepare(examples: TrainingExample[], feedback: FeedbackPair[]): PreparedData {
  const byId = new Map(examples.map((e, i) => [e.id, i]));
  const labelIndex = new Map<string, number>();
  for (const e of examples) for (const l of e.labels) if (!labelIndex.has(l)) labelIndex.set(l, labelIndex.size);
  // Label texts come first: they take part in every batch (the classifier over labels).
  const texts = [...labelIndex.keys()];
  const textIndex = new Map(texts.map((t, i) => [t, i]));
  const textId = (t: string) => {
    let i = textIndex.get(t);
    if (i === undefined) {
      i = texts.length;
      texts.push(t);
      textIndex.set(t, i);
    }
    return i;
  };
  const textsOf = examples.map((e) => {
    const ids = e.labels.map((l) => textIndex.get(l)!);
    if (e.caption && e.caption.trim()) ids.push(textId(e.caption.trim()));
    return ids;
  });
  const pairs: [number, number][] = [];
  for (const f of feedback) {
    const opened = byId.get(f.openedId);
    if (opened === undefined) continue;
    if (f.kind === 'text') {
      const t = f.query.trim();
      if (t && !textsOf[opened]!.includes(textId(t))) textsOf[opened]!.push(textId(t));
    } else {
      const q = byId.get(f.queryId);
      if (q !== undefined && q !== opened) pairs.push([q, opened]);
    }
  }
  return {
    examples,
    textsOf,
    labelIds: examples.map((e) => [...new Set(e.labels.map((l) => labelIndex.get(l)!))]),
    texts,
    labelTextCount: labelIndex.size,
    pairs,
  };
}

export interface Batch {
  /** Example indices; the last `2 × extraPairs.length` are the feedback pairs, in order. */
  rows: number[];
  extraPairs: [number, number][];
}

/**
 * One epoch's mini-batches: the examples in a fresh shuffled order, each batch followed by up to
 * `feedbackPerBatch` feedback pairs (cycled in their own shuffled order) as explicit positives.
 * Both shuffles draw from `random` when the first batch is taken.
 */
export function* epochBatches(data: PreparedData, random: () => number, options: { batchSize: number; feedbackPerBatch: number }): Generator<Batch> {
  const order = shuffledIndices(data.examples.length, random);
  const pairOrder = shuffledIndices(data.pairs.length, random);
  let pairCursor = 0;
  for (let start = 0; start < order.length; start += options.batchSize) {
    const rows = Array.from(order.subarray(start, Math.min(order.length, start + options.batchSize)));
    const extraPairs: [number, number][] = [];
    for (let f = 0; f < options.feedbackPerBatch && data.pairs.length > 0 && f < data.pairs.length; f++) {
      const pair = data.pairs[pairOrder[pairCursor++ % data.pairs.length]!]!;
      extraPairs.push(pair);
      rows.push(pair[0], pair[1]);
    }
    if (rows.length >= 2) yield { rows, extraPairs };
  }
}

export interface BatchTargets {
  /** Base vectors of the batch, row-major [n × d]. */
  x: Float32Array;
  /** Image↔image positives [n × n]: a shared label, the same example, or a feedback pair. */
  imagePositives: Float32Array;
  /** Image↔text positives [n × textCount]: every label text, then the batch's other texts. */
  textPositives: Float32Array;
  textCount: number;
  /** The batch's texts beyond the label texts (captions, feedback queries), in column order. */
  extraTexts: string[];
}

export function batchTargets(data: PreparedData, batch: Batch, d: number): BatchTargets {
  const { rows, extraPairs } = batch;
  const n = rows.length;
  const x = new Float32Array(n * d);
  rows.forEach((ei, r) => x.set(data.examples[ei]!.vector, r * d));

  // Image↔image positives: shared label, or a feedback pair (by batch position).
  const pos = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    const li = data.labelIds[rows[i]!]!;
    for (let j = 0; j < n; j++) {
      if (i === j) continue;
      const ei = rows[i]!;
      const ej = rows[j]!;
      if (ei === ej || (li.length > 0 && data.labelIds[ej]!.some((l) => li.includes(l)))) pos[i * n + j] = 1;
    }
  }
  const base = n - extraPairs.length * 2;
  extraPairs.forEach((_, p) => {
    const a = base + 2 * p;
    pos[a * n + a + 1] = 1;
    pos[(a + 1) * n + a] = 1;
  });

  // Texts of this batch: every label text, then captions/feedback texts of the batch's images.
  const extra = new Map<number, number>();
  for (const ei of rows) for (const t of data.textsOf[ei]!) if (t >= data.labelTextCount && !extra.has(t)) extra.set(t, data.labelTextCount + extra.size);
  const textCount = data.labelTextCount + extra.size;
  const textPos = new Float32Array(n * textCount);
  rows.forEach((ei, r) => {
    for (const t of data.textsOf[ei]!) textPos[r * textCount + (t < data.labelTextCount ? t : extra.get(t)!)] = 1;
  });
  return { x, imagePositives: pos, textPositives: textPos, textCount, extraTexts: [...extra.keys()].map((t) => data.texts[t]!) };
}

import { exactTopK } from './exact-search.js';
import { meanAveragePrecisionAtK, precisionAtK, recallAtK, retrievedShareAtK, type RankedRelevance } from './metrics.js';

export { renderMetricsPlot, metricsPlotSvg, type MetricsHistoryEntry } from './plot.js';
export { isHeldOut } from './split.js';

/** One image in the evaluation: id, vector in the space being evaluated (normalised), labels. */
export interface LabelledVector {
  id: string;
  vector: Float32Array;
  labels: string[];
}

export type ImageToImageMetrics = {
  'recall@1': number;
  'recall@5': number;
  'recall@10': number;
  'mAP@10': number;
};

export type TextToImageMetrics = {
  /** Share of the top 10 images carrying the queried label. */
  'precision@10': number;
  /** Relevant images in the top 10 over all images carrying the label (IR recall). */
  'recall@10': number;
};

export type EvaluationReport = {
  modelVersion: string;
  imageToImage: ImageToImageMetrics;
  textToImage: TextToImageMetrics | null;
  counts: { queries: number; answerableQueries: number; corpus: number; textQueries: number };
};

const K = 10;

/** Relevant-item totals per label-set, computed once per distinct set (corpora have few of them). */
function relevantCounter(corpus: LabelledVector[]): (labels: string[]) => number {
  const byKey = new Map<string, { labels: Set<string>; count: number }>();
  for (const item of corpus) {
    const key = [...new Set(item.labels)].sort().join('\u0000');
    const entry = byKey.get(key) ?? { labels: new Set(item.labels), count: 0 };
    entry.count += 1;
    byKey.set(key, entry);
  }
  const cache = new Map<string, number>();
  return (labels) => {
    const key = [...new Set(labels)].sort().join('\u0000');
    let total = cache.get(key);
    if (total === undefined) {
      total = 0;
      for (const entry of byKey.values()) if (labels.some((l) => entry.labels.has(l))) total += entry.count;
      cache.set(key, total);
    }
    return total;
  };
}

/**
 * Image→image: every query is searched in the corpus (excluding itself if present); relevant =
 * shares a label with the query.
 */
export async function evaluateImageToImage(queries: LabelledVector[], corpus: LabelledVector[]): Promise<{ metrics: ImageToImageMetrics; answerable: number }> {
  const top = await exactTopK(
    queries.map((q) => q.vector),
    corpus.map((c) => c.vector),
    K + 1,
  );
  const totalRelevant = relevantCounter(corpus);
  const corpusIds = new Set(corpus.map((c) => c.id));
  const lists: RankedRelevance[] = queries.map((q, qi) => {
    const labelSet = new Set(q.labels);
    const ranked = [...top.indices[qi]!].filter((ci) => corpus[ci]!.id !== q.id).slice(0, K);
    const selfInCorpus = corpusIds.has(q.id) && q.labels.length > 0;
    return {
      flags: ranked.map((ci) => corpus[ci]!.labels.some((l) => labelSet.has(l))),
      totalRelevant: totalRelevant(q.labels) - (selfInCorpus ? 1 : 0),
    };
  });
  return {
    metrics: {
      'recall@1': recallAtK(lists, 1),
      'recall@5': recallAtK(lists, 5),
      'recall@10': recallAtK(lists, 10),
      'mAP@10': meanAveragePrecisionAtK(lists, 10),
    },
    answerable: lists.filter((l) => l.totalRelevant > 0).length,
  };
}

/** Text→image: each query text is a label; relevant = corpus images carrying that label. */
export async function evaluateTextToImage(textQueries: { label: string; vector: Float32Array }[], corpus: LabelledVector[]): Promise<TextToImageMetrics> {
  const top = await exactTopK(
    textQueries.map((q) => q.vector),
    corpus.map((c) => c.vector),
    K,
  );
  const totalRelevant = relevantCounter(corpus);
  const lists: RankedRelevance[] = textQueries.map((q, qi) => ({
    flags: [...top.indices[qi]!].map((ci) => corpus[ci]!.labels.includes(q.label)),
    totalRelevant: totalRelevant([q.label]),
  }));
  return { 'precision@10': precisionAtK(lists, K), 'recall@10': retrievedShareAtK(lists, K) };
}

/**
 * The held-out evaluation of one model. `heldOut` are labelled images training never saw, queried
 * against `rest` (the remainder of the corpus). Text queries (one per label) are searched among the
 * held-out images, so text→image also measures images the model was not trained on.
 */
export async function evaluateModel(input: {
  modelVersion: string;
  heldOut: LabelledVector[];
  rest: LabelledVector[];
  /** Label → text-tower embedding of that label; omit for models without a text tower. */
  labelVectors?: Map<string, Float32Array> | null;
}): Promise<EvaluationReport> {
  const queries = input.heldOut.filter((q) => q.labels.length > 0);
  const i2i = await evaluateImageToImage(queries, input.rest);
  let textToImage: TextToImageMetrics | null = null;
  let textQueries = 0;
  if (input.labelVectors && input.labelVectors.size > 0) {
    const present = new Set(queries.flatMap((q) => q.labels));
    const tq = [...input.labelVectors.entries()].filter(([label]) => present.has(label)).map(([label, vector]) => ({ label, vector }));
    textQueries = tq.length;
    if (tq.length > 0) textToImage = await evaluateTextToImage(tq, queries);
  }
  return {
    modelVersion: input.modelVersion,
    imageToImage: i2i.metrics,
    textToImage,
    counts: { queries: queries.length, answerableQueries: i2i.answerable, corpus: input.rest.length, textQueries },
  };
}

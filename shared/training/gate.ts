import { z } from 'zod';
import { parseWith } from '../validation.js';

/**
 * Promotion gate: a retrained model replaces the active one only if it is measurably better on
 * the held-out split — image→image Recall@1 by at least `margin` — and its text→image precision@10
 * is not worse when both models answer text queries (`textMargin`, default 0: a tie passes; a
 * candidate that adds text where the current model had none is not held back by text).
 *
 * Text is a non-inferiority check, not a second superiority test: precision@10 over a handful of
 * label queries saturates (0.98 on Fashion-MNIST's 10 classes), and asking it to gain the margin
 * too refused candidates 0.022 better on Recall@1 at 60k for a tie (BENCHMARKS.md, "Adapting the
 * tower's layout").
 */
export const gateOptionsSchema = z.object({
  margin: z.number().min(0).max(1).default(0.005),
  /** Required text→image precision@10 change; default 0 (no loss). Positive asks a gain, negative tolerates a small loss. */
  textMargin: z.number().min(-1).max(1).optional(),
});
export type GateOptions = z.input<typeof gateOptionsSchema>;

const metricsSchema = z.object({
  imageToImage: z.object({ 'recall@1': z.number().min(0).max(1) }).loose(),
  textToImage: z
    .object({ 'precision@10': z.number().min(0).max(1) })
    .loose()
    .nullable()
    .optional(),
});
export type GateMetrics = z.input<typeof metricsSchema>;

export interface GateDecision {
  promote: boolean;
  reasons: string[];
  deltas: { 'recall@1': number; 'precision@10': number | null };
}

/**
 * Gains are compared with their margin on a grid of 1e-9. Metrics are shares of a held-out split
 * (k/n), so any real difference between two models is far coarser than that; but binary floating
 * point holds most decimal shares inexactly: 0.815 − 0.81 computes to 0.004999999999999893, so
 * without the grid one more hit out of 200 would meet the default margin of 0.005 for some hit
 * counts and miss it for others.
 */
const GAIN_RESOLUTION = 1e-9;

function meetsMargin(gain: number, margin: number): boolean {
  return Math.round(gain / GAIN_RESOLUTION) >= Math.round(margin / GAIN_RESOLUTION);
}

function parseMetrics(which: string, metrics: unknown): z.output<typeof metricsSchema> {
  return parseWith(metricsSchema, metrics, `${which} metrics are invalid`, { root: 'metrics' });
}

export function gateDecision(candidateInput: GateMetrics, currentInput: GateMetrics | null, optionsInput: GateOptions = {}): GateDecision {
  const parsedOptions = parseWith(gateOptionsSchema, optionsInput, 'Invalid gate options', { root: 'options' });
  const options = { margin: parsedOptions.margin, textMargin: parsedOptions.textMargin ?? 0 };
  const candidate = parseMetrics('candidate', candidateInput);
  if (!currentInput) {
    return { promote: true, reasons: ['no active model to compare with'], deltas: { 'recall@1': candidate.imageToImage['recall@1'], 'precision@10': null } };
  }
  const current = parseMetrics('current', currentInput);
  const reasons: string[] = [];
  let promote = true;
  const r1 = candidate.imageToImage['recall@1'] - current.imageToImage['recall@1'];
  const fmt = (x: number) => x.toFixed(4);
  if (meetsMargin(r1, options.margin)) {
    reasons.push(
      `image→image recall@1 ${fmt(candidate.imageToImage['recall@1'])} beats ${fmt(current.imageToImage['recall@1'])} by ${fmt(r1)} ≥ margin ${options.margin}`,
    );
  } else {
    promote = false;
    reasons.push(
      `image→image recall@1 ${fmt(candidate.imageToImage['recall@1'])} vs ${fmt(current.imageToImage['recall@1'])}: gain ${fmt(r1)} < margin ${options.margin}`,
    );
  }
  let p10: number | null = null;
  const ct = candidate.textToImage;
  const cu = current.textToImage;
  if (ct && cu) {
    p10 = ct['precision@10'] - cu['precision@10'];
    if (meetsMargin(p10, options.textMargin)) {
      reasons.push(`text→image precision@10 ${fmt(ct['precision@10'])} vs ${fmt(cu['precision@10'])}: change ${fmt(p10)} ≥ ${options.textMargin}`);
    } else {
      promote = false;
      reasons.push(`text→image precision@10 ${fmt(ct['precision@10'])} vs ${fmt(cu['precision@10'])}: change ${fmt(p10)} < ${options.textMargin}`);
    }
  } else if (cu && !ct) {
    promote = false;
    reasons.push('the candidate has no text tower but the current model answers text queries');
  } else if (ct && !cu) {
    reasons.push(`the candidate adds text search (precision@10 ${fmt(ct['precision@10'])})`);
  }
  return { promote, reasons, deltas: { 'recall@1': r1, 'precision@10': p10 } };
}

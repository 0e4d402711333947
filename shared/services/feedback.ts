import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import type { FeedbackPair } from '../training/lit-trainer.js';

/**
 * Click feedback → training pairs. The page appends one JSON event per line
 * ({query:{kind,value?}, resultId, action, at}); a click on a result of a 'similar' query pairs the
 * query image with the opened one, a click on a text result pairs the text with the image. Image
 * uploads have no stored id to pair, so they are skipped. Bad lines are counted, never fatal: one
 * torn write must not stop retraining.
 */
const feedbackEventSchema = z.object({
  query: z.object({ kind: z.enum(['image', 'similar', 'text']), value: z.string().optional() }),
  resultId: z.string().min(1),
  action: z.enum(['open', 'more-like-this']),
  at: z.string(),
});

export interface FeedbackParse {
  pairs: FeedbackPair[];
  /** Lines that are not a valid feedback event. */
  invalid: number;
  /** Valid events that cannot become a pair (uploads, self-clicks, empty text). */
  skipped: number;
}

export function feedbackPairsFromLines(text: string): FeedbackParse {
  const pairs: FeedbackPair[] = [];
  let invalid = 0;
  let skipped = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      invalid++;
      continue;
    }
    const parsed = feedbackEventSchema.safeParse(json);
    if (!parsed.success) {
      invalid++;
      continue;
    }
    const { query, resultId } = parsed.data;
    const value = query.value?.trim();
    if (query.kind === 'similar' && value && value !== resultId) pairs.push({ kind: 'image', queryId: value, openedId: resultId });
    else if (query.kind === 'text' && value) pairs.push({ kind: 'text', query: value, openedId: resultId });
    else skipped++;
  }
  return { pairs, invalid, skipped };
}

/** Reads a feedback.jsonl file; a missing file is no feedback. */
export async function readFeedbackFile(file: string): Promise<FeedbackParse> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { pairs: [], invalid: 0, skipped: 0 };
    throw err;
  }
  return feedbackPairsFromLines(text);
}

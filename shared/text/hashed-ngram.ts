import { z } from 'zod';
import { ParseError } from '../errors.js';
import { parseWith } from '../validation.js';
import { l2NormaliseInPlace } from '../vector-math.js';

/**
 * Text featuriser for models without a text tower: words and character n-grams hashed into a fixed
 * number of buckets. The trained text tower (an embedding-bag, i.e. a [buckets × E] matrix) turns
 * these sparse vectors into the joint space. Hashing is FNV-1a 32-bit so the bucket of an n-gram
 * never changes between runs, machines or Node versions — a trained tower stays valid forever.
 */
export const DEFAULT_BUCKETS = 1 << 14;

export const hashedNgramOptionsSchema = z.object({
  buckets: z
    .number()
    .int()
    .min(2)
    .max(1 << 22)
    .default(DEFAULT_BUCKETS),
  /** Character n-gram sizes taken inside each word padded with `<` `>`. */
  charNgrams: z.array(z.number().int().min(1).max(8)).default([3, 4]),
  wordBigrams: z.boolean().default(true),
});
export type HashedNgramOptions = z.input<typeof hashedNgramOptionsSchema>;

/** Sparse vector: sorted unique bucket ids and their weights (L2-normalised). */
export interface SparseFeatures {
  indices: Uint32Array;
  values: Float32Array;
}

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const encoder = new TextEncoder();

/** FNV-1a 32-bit over the UTF-8 bytes of `text`. */
export function fnv1a32(text: string): number {
  let hash = FNV_OFFSET;
  for (const byte of encoder.encode(text)) {
    hash ^= byte;
    hash = Math.imul(hash, FNV_PRIME) >>> 0;
  }
  return hash >>> 0;
}

/** Lowercase, split on anything that is not a letter or digit (Unicode-aware). */
export function tokenize(text: string): string[] {
  return text
    .normalize('NFKC')
    .toLowerCase()
    .split(/[^\p{L}\p{N}]+/u)
    .filter((w) => w.length > 0);
}

/** The n-grams of a text, each prefixed by its kind so a word and a char-gram never collide by design. */
export function ngrams(text: string, options: HashedNgramOptions = {}): string[] {
  const opts = hashedNgramOptionsSchema.parse(options);
  const words = tokenize(text);
  const grams: string[] = [];
  for (const w of words) grams.push(`w:${w}`);
  if (opts.wordBigrams) for (let i = 0; i + 1 < words.length; i++) grams.push(`b:${words[i]} ${words[i + 1]}`);
  for (const w of words) {
    const padded = `<${w}>`;
    const chars = Array.from(padded);
    for (const n of opts.charNgrams) {
      for (let i = 0; i + n <= chars.length; i++) grams.push(`c${n}:${chars.slice(i, i + n).join('')}`);
    }
  }
  return grams;
}

export class HashedNgramFeaturizer {
  readonly buckets: number;
  private readonly options: z.output<typeof hashedNgramOptionsSchema>;

  constructor(options: HashedNgramOptions = {}) {
    this.options = parseWith(hashedNgramOptionsSchema, options, 'Invalid hashed n-gram options', { root: 'options' });
    this.buckets = this.options.buckets;
  }

  /** Sparse, L2-normalised bag of hashed n-grams. Empty text gives an empty vector. */
  featurize(text: string): SparseFeatures {
    if (typeof text !== 'string') throw new ParseError(`text must be a string, got ${typeof text}`);
    const counts = new Map<number, number>();
    for (const g of ngrams(text, this.options)) {
      const b = fnv1a32(g) % this.buckets;
      counts.set(b, (counts.get(b) ?? 0) + 1);
    }
    const indices = Uint32Array.from([...counts.keys()].sort((a, b) => a - b));
    const values = l2NormaliseInPlace(Float32Array.from(indices, (b) => counts.get(b)!));
    return { indices, values };
  }

  /** Dense [texts.length × buckets] row-major matrix: the text tower's ONNX input. */
  dense(texts: string[]): Float32Array {
    const out = new Float32Array(texts.length * this.buckets);
    texts.forEach((t, row) => {
      const { indices, values } = this.featurize(t);
      for (let i = 0; i < indices.length; i++) out[row * this.buckets + indices[i]!] = values[i]!;
    });
    return out;
  }
}

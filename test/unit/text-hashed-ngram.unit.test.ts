import { describe, expect, it } from 'vitest';
import { HashedNgramFeaturizer, fnv1a32, ngrams, tokenize } from '../../shared/text/hashed-ngram.js';
import { ParseError } from '../../shared/errors.js';

describe('hashed n-gram featuriser', () => {
  it('hashes with FNV-1a 32-bit (published test vectors), so buckets never change', () => {
    expect(fnv1a32('')).toBe(0x811c9dc5);
    expect(fnv1a32('a')).toBe(0xe40c292c);
    expect(fnv1a32('foobar')).toBe(0xbf9cf968);
  });

  it('lowercases and splits words, then takes words, bigrams and char 3/4-grams', () => {
    expect(tokenize('Ankle BOOT, T-shirt/top')).toEqual(['ankle', 'boot', 't', 'shirt', 'top']);
    const grams = ngrams('Red Bag');
    expect(grams).toContain('w:red');
    expect(grams).toContain('b:red bag');
    expect(grams).toContain('c3:<ba');
    expect(grams).toContain('c4:bag>');
    expect(grams).not.toContain('w:Red');
  });

  it('gives the same sparse vector every time, L2-normalised, in the configured buckets', () => {
    const f = new HashedNgramFeaturizer({ buckets: 1024 });
    const a = f.featurize('Ankle boot');
    const b = new HashedNgramFeaturizer({ buckets: 1024 }).featurize('ankle   BOOT');
    expect(Array.from(a.indices)).toEqual(Array.from(b.indices));
    expect(Array.from(a.values)).toEqual(Array.from(b.values));
    expect(Math.max(...a.indices)).toBeLessThan(1024);
    expect(a.values.reduce((s, v) => s + v * v, 0)).toBeCloseTo(1, 6);
    // Pinned buckets: a change of hashing or n-gram rules would silently break trained towers.
    expect(Array.from(new HashedNgramFeaturizer({ buckets: 64 }).featurize('bag').indices)).toEqual([2, 10, 16, 27, 60, 63]);
  });

  it('makes related texts overlap more than unrelated ones (char n-grams)', () => {
    const f = new HashedNgramFeaturizer();
    const cos = (x: string, y: string) => {
      const a = f.dense([x]);
      const b = f.dense([y]);
      return a.reduce((s, v, i) => s + v * b[i]!, 0);
    };
    expect(cos('sneakers', 'sneaker')).toBeGreaterThan(0.5);
    expect(cos('sneaker', 'trouser')).toBeLessThan(0.2);
  });

  it('dense() lays rows out as [texts × buckets]; empty text is a zero row', () => {
    const f = new HashedNgramFeaturizer({ buckets: 16 });
    const dense = f.dense(['bag', '']);
    expect(dense.length).toBe(32);
    expect(dense.slice(16).every((v) => v === 0)).toBe(true);
    expect(dense.slice(0, 16).some((v) => v > 0)).toBe(true);
  });

  it('rejects bad options and non-string input with a clear error', () => {
    expect(() => new HashedNgramFeaturizer({ buckets: 1 })).toThrow(ParseError);
    expect(() => new HashedNgramFeaturizer().featurize(42 as unknown as string)).toThrow(/must be a string/);
  });
});

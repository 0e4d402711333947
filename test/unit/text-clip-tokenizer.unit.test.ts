import { describe, expect, it } from 'vitest';
import { ClipTokenizer } from '../../shared/text/clip-tokenizer.js';
import { ParseError } from '../../shared/errors.js';

// 256 byte symbols, 256 byte+</w> symbols, then one id per merge, then SOT/EOT (CLIP's layout).
const merges = ['h e', 'l l', 'he ll', 'hell o</w>'];

describe('CLIP BPE tokenizer', () => {
  const tok = new ClipTokenizer(merges);

  it('derives the vocabulary from the merges like CLIP', () => {
    expect(tok.vocabSize).toBe(512 + merges.length + 2);
    expect(tok.sotId).toBe(516);
    expect(tok.eotId).toBe(517);
  });

  it('applies merges by rank, lowercases, and marks word ends', () => {
    expect(tok.encode('Hello')).toEqual([515]);
    // ',' is byte 44, the 12th printable byte symbol: id 256 + 11 with </w>.
    expect(tok.encode('hello,')).toEqual([515, 267]);
    // 'hel' has no 'hell' merge: he + l</w>.
    expect(tok.encode('hel')).toEqual([512, 256 + ('l'.charCodeAt(0) - 33)]);
  });

  it('tokenize wraps in start/end, truncates and zero-pads to the context length', () => {
    expect(Array.from(tok.tokenize(['hello'], 5), Number)).toEqual([516, 515, 517, 0, 0]);
    expect(Array.from(tok.tokenize(['hello hello hello hello'], 4), Number)).toEqual([516, 515, 515, 517]);
    expect(tok.tokenize(['a', 'b'], 77).length).toBe(154);
  });

  it('handles non-ASCII text through byte symbols', () => {
    const ids = tok.encode('café');
    expect(ids.length).toBeGreaterThan(0);
    expect(ids.every((id) => id >= 0 && id < tok.vocabSize)).toBe(true);
  });

  it('rejects malformed merges and bad arguments', () => {
    expect(() => new ClipTokenizer([])).toThrow(ParseError);
    expect(() => new ClipTokenizer(['abc'])).toThrow(/two symbols/);
    expect(() => tok.tokenize(['x'], 1)).toThrow(RangeError);
  });
});

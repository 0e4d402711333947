import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { ParseError } from '../errors.js';

/**
 * CLIP's byte-level BPE tokenizer (the algorithm of openai/CLIP `simple_tokenizer.py`): text is
 * cleaned and lowercased, split by CLIP's pattern, each piece mapped to printable byte characters,
 * merged by BPE rank with `</w>` marking word ends, then wrapped in <|startoftext|> … <|endoftext|>
 * and zero-padded to the context length. The vocabulary is derived from the merges exactly as CLIP
 * does, so the original `bpe_simple_vocab_16e6.txt.gz` works unchanged.
 */
export const CLIP_MAX_MERGES = 49152 - 256 - 2;
const SOT = '<|startoftext|>';
const EOT = '<|endoftext|>';
const PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/**
 * GPT-2/CLIP map from bytes to printable unicode characters (no whitespace/control characters).
 * `table[byte]` is the character; `order` lists characters in CLIP's dict order (printable bytes
 * first), which is the order of the first 256 vocabulary ids.
 */
function bytesToUnicode(): { table: string[]; order: string[] } {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const table = new Array<string>(256);
  bs.forEach((b, i) => (table[b] = String.fromCodePoint(cs[i]!)));
  return { table, order: cs.map((c) => String.fromCodePoint(c)) };
}

export class ClipTokenizer {
  private readonly byteEncoder: string[];
  private readonly encoder = new Map<string, number>();
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();
  readonly sotId: number;
  readonly eotId: number;

  constructor(merges: string[]) {
    if (merges.length === 0) throw new ParseError('CLIP tokenizer needs at least one BPE merge');
    const { table, order } = bytesToUnicode();
    this.byteEncoder = table;
    const vocab = [...order];
    vocab.push(...order.map((c) => `${c}</w>`));
    merges.forEach((m, i) => {
      const parts = m.split(' ');
      if (parts.length !== 2 || !parts[0] || !parts[1])
        throw new ParseError(`BPE merge ${i + 1} must be two symbols separated by one space, got ${JSON.stringify(m)}`);
      this.ranks.set(m, i);
      vocab.push(parts.join(''));
    });
    vocab.push(SOT, EOT);
    vocab.forEach((token, id) => this.encoder.set(token, id));
    this.sotId = this.encoder.get(SOT)!;
    this.eotId = this.encoder.get(EOT)!;
  }

  get vocabSize(): number {
    return this.encoder.size;
  }

  /** Reads CLIP's merges file (`.txt` or `.txt.gz`, first line `#version…`). */
  static async fromFile(path: string, maxMerges = CLIP_MAX_MERGES): Promise<ClipTokenizer> {
    const bytes = await readFile(path);
    const text = (path.endsWith('.gz') ? gunzipSync(bytes) : bytes).toString('utf8');
    const lines = text.split('\n');
    const merges = (lines[0]?.startsWith('#version') ? lines.slice(1) : lines).filter((l) => l.length > 0).slice(0, maxMerges);
    return new ClipTokenizer(merges);
  }

  private bpe(token: string): string[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    const chars = Array.from(token);
    let word = [...chars.slice(0, -1), `${chars.at(-1)!}</w>`];
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < word.length; i++) {
        const rank = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = i;
        }
      }
      if (best < 0) break;
      const [a, b] = [word[best]!, word[best + 1]!];
      const merged: string[] = [];
      for (let i = 0; i < word.length; i++) {
        if (i + 1 < word.length && word[i] === a && word[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else merged.push(word[i]!);
      }
      word = merged;
    }
    this.cache.set(token, word);
    return word;
  }

  /** BPE token ids of a text, without start/end tokens. */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new ParseError(`text must be a string, got ${typeof text}`);
    const cleaned = text.normalize('NFC').replace(/\s+/g, ' ').trim().toLowerCase();
    const ids: number[] = [];
    for (const match of cleaned.matchAll(PATTERN)) {
      const piece = Array.from(Buffer.from(match[0], 'utf8'), (b) => this.byteEncoder[b]!).join('');
      for (const sym of this.bpe(piece)) ids.push(this.encoder.get(sym)!);
    }
    return ids;
  }

  /** [texts × contextLength] ids: SOT, tokens (truncated), EOT, zero padding — CLIP's `tokenize`. */
  tokenize(texts: string[], contextLength = 77): BigInt64Array {
    if (!Number.isInteger(contextLength) || contextLength < 2) throw new RangeError(`context length must be an integer ≥ 2, got ${contextLength}`);
    const out = new BigInt64Array(texts.length * contextLength);
    texts.forEach((text, row) => {
      const ids = [this.sotId, ...this.encode(text)].slice(0, contextLength - 1);
      ids.push(this.eotId);
      ids.forEach((id, i) => (out[row * contextLength + i] = BigInt(id)));
    });
    return out;
  }
}

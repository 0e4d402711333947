import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { feedbackPairsFromLines, readFeedbackFile } from '../../shared/services/feedback.js';

const at = '2026-01-01T00:00:00.000Z';
const line = (v: unknown) => JSON.stringify(v);

describe('feedback → training pairs', () => {
  it('pairs similar-image and text queries with the opened result; uploads are skipped', () => {
    const text = [
      line({ query: { kind: 'similar', value: 'img-1' }, resultId: 'img-2', action: 'open', at }),
      line({ query: { kind: 'text', value: ' red dress ' }, resultId: 'img-3', action: 'more-like-this', at }),
      line({ query: { kind: 'image' }, resultId: 'img-4', action: 'open', at }),
    ].join('\n');
    const out = feedbackPairsFromLines(text);
    expect(out.pairs).toEqual([
      { kind: 'image', queryId: 'img-1', openedId: 'img-2' },
      { kind: 'text', query: 'red dress', openedId: 'img-3' },
    ]);
    expect(out).toMatchObject({ invalid: 0, skipped: 1 });
  });

  it('counts torn, non-JSON and wrongly shaped lines instead of failing', () => {
    const text = [
      '{"query":{"kind":"text","value":"bag"},"resultId":"a"', // torn write
      'not json',
      line({ query: { kind: 'voice', value: 'x' }, resultId: 'a', action: 'open', at }),
      line({ query: { kind: 'text', value: 'bag' }, resultId: '', action: 'open', at }),
      line({ query: { kind: 'text', value: 'bag' }, resultId: 'img-9', action: 'open', at }),
      '',
    ].join('\n');
    const out = feedbackPairsFromLines(text);
    expect(out.pairs).toEqual([{ kind: 'text', query: 'bag', openedId: 'img-9' }]);
    expect(out.invalid).toBe(4);
  });

  it('skips a similar query that opened itself and text queries without a value', () => {
    const out = feedbackPairsFromLines(
      [
        line({ query: { kind: 'similar', value: 'a' }, resultId: 'a', action: 'open', at }),
        line({ query: { kind: 'text' }, resultId: 'b', action: 'open', at }),
      ].join('\n'),
    );
    expect(out).toEqual({ pairs: [], invalid: 0, skipped: 2, duplicates: 0 });
  });

  it('reads a feedback file; a missing file is no feedback', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'iss-feedback-'));
    expect(await readFeedbackFile(join(dir, 'none.jsonl'))).toEqual({ pairs: [], invalid: 0, skipped: 0, duplicates: 0 });
    await writeFile(join(dir, 'f.jsonl'), `${line({ query: { kind: 'similar', value: 'q' }, resultId: 'r', action: 'open', at })}\n`);
    expect((await readFeedbackFile(join(dir, 'f.jsonl'))).pairs).toEqual([{ kind: 'image', queryId: 'q', openedId: 'r' }]);
  });
});

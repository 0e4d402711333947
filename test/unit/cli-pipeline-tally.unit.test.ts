import { describe, expect, it } from 'vitest';
import { PipelineTally } from '../../cli/pipeline-tally.js';

describe('PipelineTally (the ingest summary)', () => {
  it('counts caption/label sidecars of listed images apart from files it ignores', () => {
    const tally = new PipelineTally();
    const skipped = (id: string) => ({ status: 'skipped' as const, id, reason: 'not-an-image-type' as const });
    // Listing order puts a sidecar before its image.
    tally.onObjectEvent('a/shirt-1.json', skipped('1'));
    tally.onObjectEvent('a/shirt-1.png', { status: 'published', id: '2', eventType: 'finalize' });
    tally.onObjectEvent('b/coat.txt', skipped('3'));
    tally.onObjectEvent('b/coat.jpg', { status: 'rejected', id: '4', reason: 'empty-file', detail: 'the object is 0 bytes' });
    tally.onObjectEvent('notes.txt', skipped('5'));
    tally.onObjectEvent('a/shirt-2.json', skipped('6'));
    tally.onObjectEvent('model.bin', skipped('7'));
    const summary = tally.summary();
    expect(summary.sidecars).toBe(2);
    expect(summary.ignored).toBe(3);
    expect(summary.rejected).toBe(1);
  });
});

describe('PipelineTally progress (the bar)', () => {
  it('never goes backwards while files are published faster than they are embedded, and ends at the total', () => {
    const tally = new PipelineTally();
    tally.listed = 6;
    const seen: number[] = [tally.processed];
    const published = (id: string) => ({ status: 'published' as const, id, eventType: 'finalize' as const });
    for (const [i, name] of ['a.png', 'a.json', 'b.png', 'b.json', 'c.png', 'notes.txt'].entries()) {
      tally.onObjectEvent(name, name.endsWith('.png') ? published(`id${i}`) : { status: 'skipped', id: `s${i}`, reason: 'not-an-image-type' });
      seen.push(tally.processed);
    }
    for (const id of ['id0', 'id2', 'id4']) {
      tally.onEmbedded([{ status: 'unchanged', id } as never], (x) => x);
      seen.push(tally.processed);
    }
    for (let i = 1; i < seen.length; i++) expect(seen[i]!, `step ${i}: ${seen.join(',')}`).toBeGreaterThanOrEqual(seen[i - 1]!);
    expect(seen[0]).toBe(0);
    expect(seen.at(-1)).toBe(6);
  });
});

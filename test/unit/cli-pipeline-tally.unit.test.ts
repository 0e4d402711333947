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

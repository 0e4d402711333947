import { describe, expect, it } from 'vitest';
import { ParseError } from '../../shared/errors.js';
import { monitorOutputSchema } from '../../shared/output-schemas.js';
import type { SearchEventSource } from '../../shared/ports/search-events.js';
import {
  monitorEventSchema,
  monitorFigures,
  objectWrittenAt,
  parseSince,
  searchEvent,
  type FeedbackMonitorEvent,
  type FreshnessMonitorEvent,
  type MonitorEvent,
  type SearchMonitorEvent,
} from '../../shared/services/monitoring.js';

/** Figures from hand-made events: every expected value below is worked out by hand from the events. */
const NOW = new Date('2026-11-27T12:30:00.000Z');

const source = (events: MonitorEvent[]): SearchEventSource => ({
  async *read() {
    yield* events;
  },
});

function search(at: string, fields: Partial<SearchMonitorEvent> & { queryId: string }): SearchMonitorEvent {
  return {
    monitor: 'search',
    v: 1,
    at,
    kind: 'image',
    modelVersion: 'm1',
    indexVersion: 'images-v1',
    k: 3,
    resultCount: 3,
    topScore: 0.9,
    kthScore: 0.7,
    zeroResult: false,
    latencyMs: { embed: 10, index: 2, total: 15 },
    ...fields,
  };
}
const click = (at: string, queryId: string): FeedbackMonitorEvent => ({ monitor: 'feedback', v: 1, at, queryId, kind: 'image', action: 'open' });
const fresh = (at: string, lagMs: number): FreshnessMonitorEvent => ({ monitor: 'freshness', v: 1, at, id: `doc-${lagMs}`, modelVersion: 'm1', lagMs });

describe('monitoring figures', () => {
  it('counts searches by kind and hour, zero-result and low-score rates, and joins clicks to their search by query id', async () => {
    const events: MonitorEvent[] = [
      search('2026-11-27T10:05:00.000Z', { queryId: 'a', kind: 'image', latencyMs: { embed: 5, index: 1, total: 10 } }),
      search('2026-11-27T10:10:00.000Z', { queryId: 'b', kind: 'text', topScore: 0.2, latencyMs: { embed: 6, index: 2, total: 20 } }),
      search('2026-11-27T10:59:59.999Z', {
        queryId: 'c',
        kind: 'similar',
        resultCount: 0,
        topScore: null,
        kthScore: null,
        zeroResult: true,
        latencyMs: { embed: 1, index: 1, total: 30 },
      }),
      search('2026-11-27T11:00:00.000Z', { queryId: 'd', kind: 'text', modelVersion: 'm2', latencyMs: { embed: 7, index: 3, total: 40 } }),
      // Two clicks on a, one on d; one on a search older than the window.
      click('2026-11-27T10:06:00.000Z', 'a'),
      click('2026-11-27T10:07:00.000Z', 'a'),
      click('2026-11-27T11:01:00.000Z', 'd'),
      click('2026-11-27T11:02:00.000Z', 'gone'),
      fresh('2026-11-27T11:30:00.000Z', 1000),
      fresh('2026-11-27T12:00:00.000Z', 3000),
      // Outside the window (3 h back from 12:30 is 09:30): ignored.
      search('2026-11-27T09:29:59.999Z', { queryId: 'old' }),
    ];
    const out = await monitorFigures(source(events), { sinceMs: 3 * 3_600_000, by: 'hour', now: NOW });
    expect(monitorOutputSchema.parse({ schemaVersion: 1, ...out })).toBeTruthy();
    expect(out.since).toBe('2026-11-27T09:30:00.000Z');
    expect(out.buckets.map((b) => b.start)).toEqual([
      '2026-11-27T09:00:00.000Z',
      '2026-11-27T10:00:00.000Z',
      '2026-11-27T11:00:00.000Z',
      '2026-11-27T12:00:00.000Z',
    ]);
    const [nine, ten, eleven, twelve] = out.buckets;
    expect(nine!.searches).toBe(0);
    expect(nine!.latencyMs.total).toBeNull();
    expect(ten).toMatchObject({
      searches: 3,
      byKind: { image: 1, text: 1, similar: 1 },
      zeroResults: 1,
      zeroResultRate: 1 / 3,
      lowScore: 1,
      clicks: 2,
      clickedSearches: 1,
      clickThroughRate: 2 / 3,
      // Nearest rank over [10, 20, 30]: p50 = 20, p95 = 30.
      latencyMs: { total: { p50: 20, p95: 30, max: 30 }, embed: { p50: 5, p95: 6, max: 6 }, index: { p50: 1, p95: 2, max: 2 } },
      topScore: { p50: 0.2, min: 0.2 },
      modelVersions: { m1: 3 },
    });
    expect(ten!.topScore!.mean).toBeCloseTo(0.55, 10);
    expect(eleven).toMatchObject({
      searches: 1,
      clicks: 1,
      clickThroughRate: 1,
      modelVersions: { m2: 1 },
      freshness: { count: 1, lagMs: { p50: 1000, p95: 1000, max: 1000 } },
    });
    expect(twelve).toMatchObject({ searches: 0, clickThroughRate: null, freshness: { count: 1, lagMs: { p50: 3000, p95: 3000, max: 3000 } } });
    expect(out.totals).toMatchObject({
      searches: 4,
      byKind: { image: 1, text: 2, similar: 1 },
      zeroResults: 1,
      zeroResultRate: 0.25,
      clicks: 3,
      clickedSearches: 2,
      clickThroughRate: 0.75,
      latencyMs: { total: { p50: 20, p95: 40, max: 40 } },
      freshness: { count: 2, lagMs: { p50: 1000, p95: 3000, max: 3000 } },
    });
    expect(out.unmatchedClicks).toBe(1);
  });

  it('by day: one row per UTC day, empty days included', async () => {
    const out = await monitorFigures(source([search('2026-11-25T23:59:00.000Z', { queryId: 'x' }), search('2026-11-27T00:00:00.000Z', { queryId: 'y' })]), {
      sinceMs: 3 * 86_400_000,
      by: 'day',
      now: NOW,
    });
    expect(out.buckets.map((b) => [b.start.slice(0, 10), b.searches])).toEqual([
      ['2026-11-24', 0],
      ['2026-11-25', 1],
      ['2026-11-26', 0],
      ['2026-11-27', 1],
    ]);
  });

  it('p95 by nearest rank over 20 values is the 19th smallest', async () => {
    const events = Array.from({ length: 20 }, (_, i) =>
      search('2026-11-27T12:00:00.000Z', { queryId: `q${i}`, latencyMs: { embed: 0, index: 0, total: (i + 1) * 10 } }),
    );
    const out = await monitorFigures(source(events), { sinceMs: 3_600_000, by: 'hour', now: NOW });
    expect(out.totals.latencyMs.total).toEqual({ p50: 100, p95: 190, max: 200 });
  });

  it('refuses a window that would need too many rows, naming the fix', async () => {
    await expect(monitorFigures(source([]), { sinceMs: 60 * 86_400_000, by: 'hour', now: NOW })).rejects.toThrow(/too many rows .*by day/);
  });

  it('a search event holds the top and k-th scores, the zero-result flag, and no vector or query text', () => {
    const base = {
      at: NOW,
      queryId: 'q',
      kind: 'text' as const,
      modelVersion: 'm',
      indexVersion: 'images-v2',
      latencyMs: { embed: 1.23456, index: 2, total: 3.5 },
    };
    const full = searchEvent({ ...base, k: 2, scores: [0.9, 0.8] });
    expect(full).toEqual({
      monitor: 'search',
      v: 1,
      at: NOW.toISOString(),
      queryId: 'q',
      kind: 'text',
      modelVersion: 'm',
      indexVersion: 'images-v2',
      k: 2,
      resultCount: 2,
      topScore: 0.9,
      kthScore: 0.8,
      zeroResult: false,
      latencyMs: { embed: 1.235, index: 2, total: 3.5 },
    });
    expect(searchEvent({ ...base, k: 3, scores: [0.9] })).toMatchObject({ resultCount: 1, topScore: 0.9, kthScore: null, zeroResult: false });
    expect(searchEvent({ ...base, k: 3, scores: [] })).toMatchObject({ resultCount: 0, topScore: null, kthScore: null, zeroResult: true });
    expect(monitorEventSchema.parse(full)).toEqual(full);
  });
});

describe('parseSince', () => {
  it('reads minutes, hours and days', () => {
    expect(parseSince('90m')).toBe(5_400_000);
    expect(parseSince('24h')).toBe(86_400_000);
    expect(parseSince('7d')).toBe(604_800_000);
  });
  it.each(['', '24', 'h', '0h', '-1h', '1.5h', '24 hours', '1w', '400d'])('refuses %j with the accepted forms', (bad) => {
    expect(() => parseSince(bad)).toThrow(ParseError);
    expect(() => parseSince(bad)).toThrow(/since: (expected a duration such as 90m, 24h or 7d|at most 366d)/);
  });
});

describe('objectWrittenAt (freshness start)', () => {
  const now = Date.parse('2026-11-27T12:00:00.000Z');
  it('reads a generation in microseconds (local mtime, GCS creation time)', () => {
    expect(objectWrittenAt('1795771200000000', undefined, now)).toBe(Date.parse('2026-11-27T09:20:00.000Z'));
  });
  it('falls back to the event time when the generation is not a plausible time', () => {
    expect(objectWrittenAt('7', '2026-11-27T11:00:00.000Z', now)).toBe(Date.parse('2026-11-27T11:00:00.000Z'));
    expect(objectWrittenAt('7', undefined, now)).toBeNull();
    expect(objectWrittenAt('7', 'not a time', now)).toBeNull();
  });
});

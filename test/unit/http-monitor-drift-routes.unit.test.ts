import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SearchAppDeps } from '../../shared/http/search-app.js';
import { driftOutputSchema, monitorOutputSchema } from '../../shared/output-schemas.js';
import type { FeatureStore } from '../../shared/ports/feature-store.js';
import type { ModelRegistry } from '../../shared/ports/model-registry.js';
import { driftOutput, type DriftState } from '../../shared/services/drift.js';
import type { MonitorEvent } from '../../shared/services/monitoring.js';
import { idleSearchApp } from '../helpers/search-app.js';

/**
 * The page's Monitoring tab reads two routes: `GET /api/monitor` (monitor-routes.ts, mounted only
 * where a search event log is given) and `GET /api/drift` (what `imgsearch drift --json` prints,
 * through the one `driftOutput` both use). Where neither is given (the cloud search service) both
 * answer 404 with a message the page shows.
 */
let work: string;
const apps: FastifyInstance[] = [];
beforeEach(async () => {
  work = await fs.mkdtemp(path.join(tmpdir(), 'iss-monitor-routes-'));
});
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
  await fs.rm(work, { recursive: true, force: true });
});

async function appWith(over: Partial<SearchAppDeps> = {}): Promise<FastifyInstance> {
  const app = await idleSearchApp({ webDir: work, ...over });
  apps.push(app);
  return app;
}

const NOW = new Date('2026-11-27T12:30:00.000Z');

describe('GET /api/drift', () => {
  // A base model (no drift-profile.json in its folder), with a previous check and one request recorded.
  const state: DriftState = {
    lastReport: {
      modelVersion: 'base-1',
      checkedAt: '2026-11-27T11:00:00.000Z',
      reference: null,
      settings: {
        recentUploads: 1000,
        minSample: 100,
        psiThreshold: 0.25,
        ksThreshold: 0.2,
        minNewLabelled: 200,
        recallDrop: 0.05,
        cooldownHours: 24,
        servedBaseline: 500,
      },
      signals: null,
      servedReference: null,
      recall: null,
      decision: { retrain: false, reasons: ['uploads drifted'], heldBack: 'cooldown' },
    },
    requests: [{ at: '2026-11-26T09:00:00.000Z', modelVersion: 'base-1', reasons: ['Recall@1 dropped by 0.08'], outcome: 'requested' }],
    servedReferences: [],
  };
  const deps = () => ({
    registry: { active: async () => ({ version: 'base-1' }), localPath: async () => work } as unknown as ModelRegistry,
    features: {} as FeatureStore,
    state: { read: async () => state, write: async () => undefined },
    now: () => NOW,
  });

  it('answers what `imgsearch drift --json` prints: the report now, the last check and the requests', async () => {
    const app = await appWith({ drift: () => driftOutput(deps(), { psiThreshold: 0.3 }) });
    const res = await app.inject({ method: 'GET', url: '/api/drift' });
    expect(res.statusCode).toBe(200);
    const body = driftOutputSchema.parse(res.json());
    expect(body).toEqual({
      schemaVersion: 1,
      modelVersion: 'base-1',
      checkedAt: '2026-11-27T12:30:00.000Z',
      reference: null,
      settings: {
        recentUploads: 1000,
        minSample: 200,
        psiThreshold: 0.3,
        ksThreshold: 0.2,
        minNewLabelled: 200,
        recallDrop: 0.05,
        cooldownHours: 24,
        servedBaseline: 500,
      },
      signals: null,
      servedReference: null,
      recall: null,
      decision: { retrain: false, reasons: [] },
      note: expect.stringMatching(/^model base-1 has no drift profile/),
      lastCheck: { checkedAt: '2026-11-27T11:00:00.000Z', decision: { retrain: false, reasons: ['uploads drifted'], heldBack: 'cooldown' } },
      requests: [{ at: '2026-11-26T09:00:00.000Z', modelVersion: 'base-1', reasons: ['Recall@1 dropped by 0.08'], outcome: 'requested' }],
    });
  });

  it('answers 404 naming where drift is reported when the service has no drift report (cloud)', async () => {
    const app = await appWith();
    const res = await app.inject({ method: 'GET', url: '/api/drift' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatch(/drift is not reported here: .*drift-check job/);
  });

  it('answers 404 with the reason when there is no active model yet', async () => {
    const app = await appWith({ drift: () => driftOutput({ ...deps(), registry: { active: async () => null } as unknown as ModelRegistry }) });
    const res = await app.inject({ method: 'GET', url: '/api/drift' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatch(/no active model/);
  });
});

describe('GET /api/monitor (mounted from SearchAppDeps.monitor)', () => {
  const search = (at: string, zeroResult: boolean): MonitorEvent => ({
    monitor: 'search',
    v: 1,
    at,
    queryId: at,
    kind: 'text',
    modelVersion: 'base-1',
    indexVersion: 'i',
    k: 5,
    resultCount: zeroResult ? 0 : 5,
    topScore: zeroResult ? null : 0.8,
    kthScore: zeroResult ? null : 0.6,
    zeroResult,
    latencyMs: { embed: 1, index: 1, total: 2 },
  });

  it("answers the event log's figures by hour, flushing first", async () => {
    let flushed = 0;
    const events = [search('2026-11-27T11:10:00.000Z', false), search('2026-11-27T12:05:00.000Z', true), search('2026-11-27T12:06:00.000Z', false)];
    const app = await appWith({
      monitor: {
        events: {
          read: async function* () {
            yield* events;
          },
          flush: async () => void flushed++,
        },
        now: () => NOW,
      },
    });
    const res = await app.inject({ method: 'GET', url: '/api/monitor?since=3h&by=hour' });
    expect(res.statusCode).toBe(200);
    const body = monitorOutputSchema.parse(res.json());
    expect(flushed).toBe(1);
    expect(body.totals).toMatchObject({ searches: 3, zeroResults: 1, byKind: { text: 3, image: 0, similar: 0 } });
    expect(body.buckets.map((b) => b.searches)).toEqual([0, 0, 1, 2]);
    const bad = await app.inject({ method: 'GET', url: '/api/monitor?by=week' });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatch(/by/);
  });

  it('answers 404 pointing at the Cloud Monitoring dashboard where no event log is given (cloud)', async () => {
    const app = await appWith();
    const res = await app.inject({ method: 'GET', url: '/api/monitor?since=24h' });
    expect(res.statusCode).toBe(404);
    expect(res.json().error).toMatch(/prediction monitoring is not served here: .*Cloud Monitoring dashboard/);
  });
});
